"""`python -m xdyna_core.tiny --out DIR` = `xdyna tiny --out DIR` (see loading/tiny.py)."""
import sys

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main(["tiny", *sys.argv[1:]]))
