"""Progress bar on stderr for the command-line fronts (preprocess, animate, demo), drawn by tqdm.

tqdm gives the real rate whatever its size (`3.2 frame/s`, or `12.5 s/window` for slow steps, never
"0.0 fps") and a smoothed ETA. On a terminal the line is redrawn; in a log (not a terminal) it is
written at most every LOG_INTERVAL seconds, plus the final state.
"""
from __future__ import annotations

import sys
from typing import Optional

LOG_INTERVAL = 5.0  # seconds between progress lines when stderr is a file or a pipe


class Progress:
    """`bar = Progress(total, "decode", unit="frame"); bar.update(k); bar.close()`."""

    def __init__(self, total: Optional[int], desc: str, stream=None, enabled: bool = True, unit: str = "frame"):
        from tqdm import tqdm

        stream = stream if stream is not None else sys.stderr
        tty = bool(getattr(stream, "isatty", lambda: False)())
        self._bar = tqdm(total=total if total and total > 0 else None, desc=desc, unit=unit, file=stream,
                         disable=not enabled, dynamic_ncols=tty, mininterval=0.1 if tty else LOG_INTERVAL,
                         leave=True, ascii=not tty)

    @property
    def n(self) -> int:
        return self._bar.n

    def update(self, k: int = 1) -> None:
        self._bar.update(k)

    def status(self, text: str) -> None:
        """Text after the counts (e.g. a batch's running and failed jobs)."""
        self._bar.set_postfix_str(text, refresh=False)

    def close(self) -> None:
        self._bar.close()
