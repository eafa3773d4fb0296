"""The command-line edge: each module here defines one command group and calls into the library."""
