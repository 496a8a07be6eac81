"""The command line's error boundary: a user's mistake is one message and exit code 2, a bug
keeps its traceback.

Everything the project checks about its input (a config field, a file, an argument) is raised
as a ``ValueError`` or an ``OSError`` (``FileNotFoundError``, ...) by a ``raise`` in the
project's own code, with a message that names the field or file and says what to do. Those
reach the user as ``error: <message>`` on stderr with exit code 2 (what argparse and
jsonargparse use for a bad command line), without the traceback that buried them before.
Anything else (an exception raised inside torch, trimesh or PIL, or a project ``IndexError``) is
a bug or an unchecked input: its traceback is kept (exit code 1), so it can be reported and
turned into a check.

LightningCLI and jsonargparse wrap an exception raised while a configured class is built
("does not validate against any of the Union subtypes", then the whole config): the boundary
follows the chain of causes to the project's own exception.

``DREAMREWARD_DEBUG=1`` (or ``--debug`` anywhere on the command line) shows the traceback of
user errors too.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

PACKAGE_DIR = Path(__file__).resolve().parent
USER_ERROR_EXIT_CODE = 2
INTERRUPTED_EXIT_CODE = 130  # what a shell reports for a job stopped by Ctrl-C (128 + SIGINT)
DEBUG_ENV = "DREAMREWARD_DEBUG"
DEBUG_FLAG = "--debug"

T = TypeVar("T")


class InputError(ValueError):
    """Bad input named by the project (a field, file or argument and what to do about it).

    A ``ValueError`` subclass, so callers that catch ``ValueError`` keep working; any
    ``ValueError`` or ``OSError`` the project raises itself is treated the same way by
    :func:`user_error`.
    """


def _raised_by_project(error: BaseException) -> bool:
    """Whether ``error`` was raised by a frame in this package (not inside a library)."""
    tb = error.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    try:
        Path(tb.tb_frame.f_code.co_filename).resolve().relative_to(PACKAGE_DIR)
    except ValueError:
        return False
    return True


def user_error(error: BaseException) -> BaseException | None:
    """The project-checked input error behind ``error``, or ``None`` when it is a bug.

    Follows explicit causes and implicit contexts (each exception once) and returns the first
    :class:`InputError`, or ``ValueError`` / ``OSError`` raised by the project's own code.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, InputError):
            return current
        if isinstance(current, (ValueError, OSError)) and _raised_by_project(current):
            return current
        current = current.__cause__ or current.__context__
    return None


def debug_requested(argv: list[str]) -> bool:
    return DEBUG_FLAG in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def run_with_error_boundary(run: Callable[[list[str]], T], argv: list[str]) -> T:
    """``run(argv)`` (``--debug`` removed) behind the boundary.

    Exits with 2 and ``error: <message>`` for a user error, 130 on Ctrl-C; re-raises bugs.
    """
    debug = debug_requested(argv)
    argv = [a for a in argv if a != DEBUG_FLAG]
    try:
        return run(argv)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(INTERRUPTED_EXIT_CODE) from None
    except Exception as error:  # noqa: BLE001 - sorted into user errors and bugs below
        cause = user_error(error)
        if cause is None:
            raise
        if debug:
            traceback.print_exception(error)
        message = str(cause) or type(cause).__name__
        if isinstance(cause, OSError) and cause.filename and str(cause.filename) not in message:
            message = f"{message}: {cause.filename}"
        hint = "" if debug else f"  (traceback: set {DEBUG_ENV}=1 or add {DEBUG_FLAG})"
        print(f"error: {message}{hint}", file=sys.stderr)
        raise SystemExit(USER_ERROR_EXIT_CODE) from None
