"""The `tunevision` command: parse, call the API, print."""
