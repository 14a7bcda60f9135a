"""`python -m xdyna_core.preprocess pose|face|render ...` (see cli.py)."""
from .cli import main

raise SystemExit(main())
