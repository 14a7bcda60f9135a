"""`python -m xdyna_core.convert IN OUT.safetensors [--dtype ...]` = `xdyna convert ...` (see loading/convert.py)."""
import sys

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main(["convert", *sys.argv[1:]]))
