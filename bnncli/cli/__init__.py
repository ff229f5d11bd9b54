"""The `bnn` command-line interface."""
