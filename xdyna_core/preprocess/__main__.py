"""`python -m xdyna_core.preprocess pose|face|render ...` = `xdyna preprocess ...` (see xdyna_core/cli/preprocess.py)."""
import sys

from ..cli import main

raise SystemExit(main(["preprocess", *sys.argv[1:]]))
