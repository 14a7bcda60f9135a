"""`python -m xdyna_core.convert IN OUT.safetensors [--dtype ...]` (see loading/convert.py)."""
from .loading.convert import main

if __name__ == "__main__":
    raise SystemExit(main())
