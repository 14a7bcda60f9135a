"""Ctrl-C in the command-line fronts: exit 130 at once, leaving no partial output.

A KeyboardInterrupt unwinding through MediaPipe / onnxruntime / PyAV work, followed by the normal
interpreter shutdown, can abort the process (`Fatal Python error: PyThreadState_Get ... GIL is
released`: a native worker thread calls into Python while it is being torn down). So the handler does
not raise: it removes the temporary files still being written (xdyna_core.outputs), flushes the
standard streams and leaves with ``os._exit`` — no unwinding, no finalisation, no native thread
teardown. SIGTERM gets the same treatment (exit 143).

The command line also ends a finished run with `leave` (flush, then ``os._exit``): the interpreter's
teardown first puts SIGINT back to its default action, so a Ctrl-C landing in those last moments
would kill the process with the signal instead of exit 130, and the teardown with native threads
is where the crash above happens.

Only the command line installs it (``install``); inside ComfyUI the host handles its own signals.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
from typing import NoReturn

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}  # 128 + signal number, as shells report


def leave(code: int) -> NoReturn:
    """End the process now with `code`: logging and the standard streams flushed, no teardown."""
    try:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:  # a closed or broken stream must not stop the exit
        pass
    os._exit(code)


def _exit_now(signum, frame) -> None:
    for s in EXIT_CODES:  # a second Ctrl-C during the cleanup must not re-enter
        signal.signal(s, signal.SIG_IGN)
    from .outputs import discard_partials

    discard_partials()
    try:
        sys.stderr.write("\ninterrupted\n")
    except Exception:
        pass
    leave(EXIT_CODES.get(signum, 128 + int(signum)))


def install() -> None:
    """Exit at once with 130 (SIGINT) / 143 (SIGTERM), removing partial outputs (main thread only)."""
    for s in EXIT_CODES:
        signal.signal(s, _exit_now)
