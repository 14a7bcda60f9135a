#!/usr/bin/env bash
# Optional extras the test suite exercises (zero-download pose backend). Filled in as they land.
set -euo pipefail
true
