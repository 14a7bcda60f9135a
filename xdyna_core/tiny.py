"""`python -m xdyna_core.tiny --out DIR`: write the tiny random model set (see loading/tiny.py)."""
from .loading.tiny import main

if __name__ == "__main__":
    raise SystemExit(main())
