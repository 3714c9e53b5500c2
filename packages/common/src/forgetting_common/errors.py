"""Bad input ends a run with one clear line and a non-zero exit, never a traceback."""

from __future__ import annotations

import errno
import os
import signal
import sys
import threading
from collections.abc import Callable

#: Exit status for a run stopped by bad input (argparse uses 2 for usage errors too).
USER_ERROR_EXIT = 2


class UserError(Exception):
    """An error caused by the user's input (flags, paths, files); reported as one line."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's preemption, ``kill``), raised where Ctrl-C would be.

    A subclass of ``KeyboardInterrupt`` so that every loop that checkpoints on Ctrl-C does the
    same on SIGTERM; :func:`run_main` then exits 143 as a process killed by SIGTERM would.
    """


#: OS errors that are the machine's or the user's doing (a read-only or full disk, a path
#: that is not writable), reported in one line instead of a traceback.
ENVIRONMENT_ERRNOS = frozenset(
    getattr(errno, name) for name in (
        "EROFS", "ENOSPC", "EDQUOT", "EACCES", "EPERM", "EISDIR", "ENOTDIR", "ENAMETOOLONG",
        "EEXIST", "ENOENT", "EFBIG", "EMFILE",
    ) if hasattr(errno, name)
)


def describe_os_error(err: OSError) -> str:
    """``cannot write PATH: No space left on device`` and the like, in one line."""
    where = err.filename if err.filename is not None else "a file"
    reason = err.strerror or type(err).__name__
    if err.filename2 is not None:
        where = f"{where} -> {err.filename2}"
    return f"{where}: {reason}"


def _raise_terminated(signum, frame) -> None:  # noqa: ARG001 (signal handler signature)
    raise Terminated()


def install_sigterm_handler() -> None:
    """Make SIGTERM raise :class:`Terminated` (only possible from the main thread)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)


def run_main(main: Callable[[], object], prog: str | None = None) -> None:
    """Call ``main()``; turn a :class:`UserError` into ``prog: error: message`` and exit 2.

    An ``OSError`` of the environment (read-only or full disk, no permission: see
    :data:`ENVIRONMENT_ERRNOS`) is one line and exit 2 too. Other exceptions are bugs and keep
    their traceback. ``KeyboardInterrupt`` exits 130 and SIGTERM (:class:`Terminated`) 143,
    quietly, after whatever ``main`` already wrote atomically (its checkpoint on interrupt).
    """
    name = prog or (sys.argv[0].rsplit("/", 1)[-1] if sys.argv else "forgetting")
    install_sigterm_handler()
    try:
        main()
    except UserError as err:
        _fail(name, str(err))
    except BrokenPipeError:
        # The reader of our output went away (`| head`): stop quietly, as a shell tool does.
        # Python would otherwise report the pipe again while flushing stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(141)
    except OSError as err:
        if err.errno not in ENVIRONMENT_ERRNOS:
            raise
        _fail(name, describe_os_error(err))
    except Terminated:
        say(f"{name}: terminated (SIGTERM)")
        sys.exit(143)
    except KeyboardInterrupt:
        say(f"{name}: interrupted")
        sys.exit(130)


def say(line: str) -> None:
    """``line`` on stderr in one write: Python's stderr passes each write straight through, so
    ``print`` writes the text and its newline apart, and another process writing to the same pipe
    (a torchrun peer's warning) could land between them and glue two messages into one line. One
    write of under 4 KiB to a pipe is atomic."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _fail(name: str, message: str) -> None:
    message = " ".join(message.split())  # always one line
    say(f"{name}: error: {message}")
    sys.exit(USER_ERROR_EXIT)
