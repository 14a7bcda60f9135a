"""The one base class of the errors a user can act on (a file, an option, an input).

The command line prints any of them as one ``error: ...`` line and exits with status 2
(``xdyna_core.cli``); the ComfyUI nodes let them reach ComfyUI's own error report. Each error keeps a
standard base as well (ValueError, FileNotFoundError, ...) so that callers catching those still do.
"""


class XDynaError(Exception):
    """Something the user can fix; the message names what was expected and where."""


# Here rather than in loading/files.py: loading/validate.py raises it too, and files imports validate.
class CheckpointError(XDynaError, ValueError):
    """A checkpoint that cannot be used; the message names the file and the problem."""
