"""What every zcproxy command line does with a mistake: one line on stderr, a non-zero exit.

A user who mistypes a proxy name or points ``--out`` at a file needs the reason, not forty
lines of traceback that end in it.  :func:`run_command` runs a command's body and turns any
exception into ``<prog>: error: <message>`` and exit status 2; ``--debug`` (or
``ZCPROXY_DEBUG=1``) lets the traceback through for a bug report.  Ctrl-C is left to the
command, which knows how to say where to continue.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

# Exceptions whose message is meant for the user as it is; any other type is named too.
_PLAIN = (ValueError, OSError, LookupError, ImportError)


class UsageError(ValueError):
    """A command-line value that cannot work, found before any work starts."""


def one_line(err: BaseException) -> str:
    """The exception's message on one line (multi-line messages joined with ' | ')."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if any(line.startswith("Original Traceback") for line in lines):
        lines = lines[-1:]  # re-raised from a DataLoader worker: its last line is the error
        if ": " in lines[0]:
            lines = [lines[0].split(": ", 1)[1]]
    text = " | ".join(lines) or type(err).__name__
    if isinstance(err, KeyError) and len(err.args) == 1 and text == repr(err.args[0]):
        text = str(err.args[0])
    return text if isinstance(err, _PLAIN) else f"{type(err).__name__}: {text}"


def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true",
                        help="on an error, show the full traceback instead of one line")


def wants_traceback(debug: bool) -> bool:
    """Whether an error should come with its traceback: ``--debug`` or ``ZCPROXY_DEBUG=1``.
    The one rule for every command, including those that catch only their own error types."""
    return debug or bool(os.environ.get("ZCPROXY_DEBUG"))


def run_command(body: Callable[[], int], *, prog: str, debug: bool = False) -> int:
    """``body()``'s exit status, or 2 after printing any exception as one line."""
    try:
        return body()
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as err:  # noqa: BLE001 - the point: no traceback for the user
        if wants_traceback(debug):
            raise
        print(f"{prog}: error: {one_line(err)}", file=sys.stderr)
        return 2


def positive(name: str, value: float | None, *, zero: bool = False) -> None:
    """UsageError unless ``value`` is None or finite and > 0 (>= 0 with ``zero``)."""
    if value is None:
        return
    if value != value or value in (float("inf"), float("-inf")) or value < 0 or (
            value == 0 and not zero):
        bound = "at least 0" if zero else "positive"
        raise UsageError(f"{name} {value:g} must be {bound}" + (
            "" if value == value and abs(value) != float("inf") else " and finite"))
