"""Progress bar on stderr for the command-line fronts (preprocess, animate, demo)."""
from __future__ import annotations

import sys
import time
from typing import Optional


class Progress:
    """Minimal stderr progress bar (no dependency): a redrawn line on a terminal, a line every
    10 % otherwise (logs, CI)."""

    def __init__(self, total: Optional[int], desc: str, stream=None, enabled: bool = True, width: int = 24):
        self.total = total if total and total > 0 else None
        self.desc = desc
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.width = width
        self.n = 0
        self.start = time.perf_counter()
        self._last_draw = 0.0
        self._last_decile = -1
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def _line(self) -> str:
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        rate = self.n / elapsed
        if self.total:
            done = min(self.n / self.total, 1.0)
            bar = "#" * int(done * self.width) + "-" * (self.width - int(done * self.width))
            eta = (self.total - self.n) / rate if rate > 0 else 0.0
            return f"{self.desc} [{bar}] {self.n}/{self.total} {rate:.1f} fps ETA {eta:.0f}s"
        return f"{self.desc} {self.n} frames {rate:.1f} fps"

    def update(self, k: int = 1) -> None:
        self.n += k
        if not self.enabled:
            return
        now = time.perf_counter()
        if self._tty:
            if now - self._last_draw >= 0.1 or (self.total and self.n >= self.total):
                self.stream.write("\r" + self._line())
                self.stream.flush()
                self._last_draw = now
        elif self.total:
            decile = int(10 * self.n / self.total)
            if decile > self._last_decile:
                self._last_decile = decile
                self.stream.write(self._line() + "\n")
                self.stream.flush()

    def close(self) -> None:
        if not self.enabled:
            return
        if self._tty:
            self.stream.write("\r" + self._line() + "\n")
        elif not self.total or self._last_decile < 10:
            self.stream.write(self._line() + "\n")
        self.stream.flush()


