"""`python -m tunevision` (and `torchrun -m tunevision`) is the `tunevision` command."""
from tunevision.cli.main import entry

entry()
