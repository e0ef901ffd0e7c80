"""`python -m tunevision` (and `torchrun -m tunevision`) is the `tunevision` command."""
from .cli import main

main()
