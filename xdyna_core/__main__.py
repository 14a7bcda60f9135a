"""`python -m xdyna_core COMMAND ...` (see xdyna_core/cli)."""
from .cli import run

if __name__ == "__main__":
    run()
