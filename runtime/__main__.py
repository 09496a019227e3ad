"""`python -m runtime`: the same as the `ripple` command."""

from runtime.cli import app

if __name__ == "__main__":
    app()
