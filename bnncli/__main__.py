"""`python -m bnncli` runs the `bnn` command."""

from bnncli.cli.app import run

if __name__ == "__main__":
    run()
