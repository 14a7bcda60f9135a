"""What a batch run tells: its result by job class, and a log that stays short however many jobs.

Engine-independent (any engine that runs a job list fills a :class:`BatchResult` and logs through a
:class:`BatchLog`). A job's class is ``done``, ``skipped`` (done by an earlier run) or
``failed (<reason>)`` where the reason is the failure's short class ("refused", "timed out",
"HTTP 500", "not JSON", "node error", ...). The log lists the first LISTED jobs of each class one
line each, then counts the rest; the summary gives each class its count, a few names and, for a
failure class, one full example message.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

#: jobs of one class named one line each (log) or by name (summary) before the rest are only counted
LISTED = 5
#: seconds between two "progress:" lines (the last job's end always shows in the summary)
PROGRESS_EVERY = 5.0


def _names(names: List[str], listed: int = LISTED) -> str:
    shown = ", ".join(names[:listed])
    return shown + (f" and {len(names) - listed} more" if len(names) > listed else "")


@dataclass
class BatchResult:
    done: List[str] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)
    failed: Dict[str, str] = field(default_factory=dict)   # job -> full message
    reasons: Dict[str, str] = field(default_factory=dict)  # job -> class of its failure
    servers: Dict[str, str] = field(default_factory=dict)  # job -> server (worker) that finished it
    attempts: Dict[str, int] = field(default_factory=dict)  # job -> times it was handed out

    @property
    def ok(self) -> bool:
        return not self.failed

    def fail(self, name: str, message: str, reason: str) -> None:
        self.failed[name] = message
        self.reasons[name] = reason

    def classes(self) -> List[Tuple[str, List[str]]]:
        """(class, job names) for every class that has jobs: done, skipped, then each failure reason."""
        out = [("done", self.done), ("skipped (done before)", self.skipped)]
        by_reason: Dict[str, List[str]] = {}
        for name in self.failed:
            by_reason.setdefault(self.reasons.get(name, "error"), []).append(name)
        out += [(f"failed ({reason})", names) for reason, names in by_reason.items()]
        return [(cls, names) for cls, names in out if names]

    def counts(self) -> str:
        return f"{len(self.done)} done, {len(self.skipped)} skipped, {len(self.failed)} failed"

    def summary(self) -> List[str]:
        """A line per class (count and names, the rest counted) and one example per failure class."""
        lines = []
        for cls, names in self.classes():
            lines.append(f"{cls}: {len(names)} ({_names(names)})")
            if cls.startswith("failed"):
                lines.append(f"    e.g. {self.failed[names[0]]}")
        return lines


class BatchLog:
    """Lines of a batch run through ``log``: per-job lines capped per class, each distinct event
    line once, progress lines at most every ``progress_every`` seconds."""

    def __init__(self, log: Callable[[str], None], listed: int = LISTED, progress_every: float = PROGRESS_EVERY):
        self.log, self.listed, self.progress_every = log, listed, progress_every
        self.count: Counter = Counter()
        self.last: Dict[str, str] = {}
        self.last_progress_at: Optional[float] = None
        self.held: Optional[Callable[[], str]] = None   # makes the progress line waiting for its turn

    def __call__(self, line: str) -> None:
        self.log(line)

    def job(self, cls: str, line: str) -> None:
        """A line about one job of class ``cls``: the first ``listed`` of a class are shown."""
        self.count[cls] += 1
        if self.count[cls] <= self.listed:
            self.log(line)
        elif self.count[cls] == self.listed + 1:
            self.log(f"(further '{cls}' lines left out: the progress lines and the summary count those jobs)")

    def event(self, key: str, line: str) -> None:
        """A line about ``key`` (a job, a server), shown unless it repeats the last one for that key
        (ComfyUI sends a progress value again with each latent preview)."""
        if self.last.get(key) != line:
            self.last[key] = line
            self.log(line)

    def progress(self, make_line: Callable[[], str]) -> None:
        """A progress line now, or when ``progress_every`` has passed since the last one (:meth:`flush`
        makes it then, so it tells the state of that moment)."""
        self.held = make_line
        self.flush()

    def flush(self, force: bool = False) -> None:
        """Show the held progress line if its turn has come (``force``: now)."""
        now = time.monotonic()
        if self.held is None or (not force and self.last_progress_at is not None
                                 and now - self.last_progress_at < self.progress_every):
            return
        line, self.held = self.held(), None
        if self.last.get("progress") != line:
            self.last_progress_at = now
            self.event("progress", line)
