"""The command line: ``xdyna`` = ``python -m xdyna_core`` ``animate | demo | preprocess | convert | tiny |
batch | report``.

One parser tree (each sub-command module registers its own parser with ``register(commands)``), one
policy from errors to exit codes (:func:`main`): 0 done, 2 a usage error or an error the user can act
on (any :class:`~xdyna_core.errors.XDynaError`, and the standard errors that name a file or value),
130 Ctrl-C, 1 anything unexpected. Every error is ONE line on stderr; ``--debug`` shows the traceback.
"""
from __future__ import annotations

import argparse
import importlib
import os
import shutil
import sys
import textwrap
from pathlib import Path

# The sub-command modules, in the order `xdyna --help` lists them.
COMMAND_MODULES = ("animate", "preprocess", "convert", "tiny", "batch", "report")


class Parser(argparse.ArgumentParser):
    """Usage errors as one line, like every other error of the command line."""

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


class _RootParser(Parser):
    """`xdyna --help` lists every sub-command with its options (argparse alone shows only their names)."""

    commands: "argparse._SubParsersAction"

    def parse_args(self, args=None, namespace=None):
        """Unknown options are reported by the sub-command they were given to (its name, its --help)."""
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            parser, action = self, self.commands
            while action is not None:
                parser = action.choices[getattr(parsed, action.dest)]
                action = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
            parser.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed

    def format_help(self):
        lines = [super().format_help(), "every command and its options (COMMAND --help explains each):"]
        width = max(60, shutil.get_terminal_size().columns - 2)
        for parser in _leaf_parsers(self.commands):
            usage = " ".join(parser.format_usage().split()[1:])  # drop "usage:", re-flow
            lines.append(textwrap.fill(usage, width, initial_indent="  ", subsequent_indent="      ",
                                       break_on_hyphens=False) + "\n")
        return "\n".join(lines)


def _leaf_parsers(action):
    for parser in dict.fromkeys(action.choices.values()):    # aliases would repeat a parser
        nested = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if nested:
            yield from _leaf_parsers(nested[0])
        else:
            yield parser


def common_options() -> Parser:
    """Options every sub-command takes (argparse ``parents=``)."""
    p = Parser(add_help=False)
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    return p


def prog_name() -> str:
    return "xdyna" if Path(sys.argv[0]).stem == "xdyna" else "python -m xdyna_core"   # as the user typed it


def build_parser() -> Parser:
    root = _RootParser(prog=prog_name(),
                       description="X-Dyna human image animation (the `xdyna` command = python -m xdyna_core).")
    root.commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(root.commands)
    return root


def is_user_error(e: BaseException) -> bool:
    from ..errors import XDynaError

    # OSError: a missing/unwritable file or a full disk; ValueError/ImportError: a value or an optional
    # package, named in the message by the code that raised it.
    return isinstance(e, (XDynaError, ValueError, OSError, ImportError))


def main(argv=None) -> int:
    """Parse, run the sub-command, map what it raised to an exit code (see the module docstring)."""
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if not getattr(args, "own_interrupt", False):  # batch stops its ComfyUI jobs on Ctrl-C itself
        import threading

        from ..interrupt import install

        if threading.current_thread() is threading.main_thread():  # signal handlers live there only
            install()
    if not os.environ.get("XDYNA_NATIVE_LOGS"):   # MediaPipe's C++ log lines (set it to see them)
        from ..preprocess import mediapipe_common

        mediapipe_common.QUIET_NATIVE_LOGS = True
    try:
        result = args.func(args)
        return result if isinstance(result, int) else 0   # a command returns its exit code or its result
    except KeyboardInterrupt:  # only if the handler was not installed (e.g. main() called off the main thread)
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if getattr(args, "debug", False):
            raise
        if is_user_error(e):
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"error: unexpected {type(e).__name__}: {e} (rerun with --debug for the traceback)", file=sys.stderr)
        return 1


def run() -> None:
    """Entry of `xdyna` and `python -m xdyna_core`: main(), then (except for batch, which exits
    normally) leave without interpreter teardown, so Ctrl-C is exit 130 up to the last moment
    (see interrupt.py)."""
    if sys.argv[1:2] == ["batch"]:
        sys.exit(main())
    from ..interrupt import leave

    try:
        code = main()
    except SystemExit as e:  # argparse: --help (0) and usage errors (2)
        if e.code is not None and not isinstance(e.code, int):
            print(e.code, file=sys.stderr)
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # --debug: the traceback, as the interpreter would print it
        import traceback

        traceback.print_exc()
        code = 1
    leave(code)
