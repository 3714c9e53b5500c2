"""Bad input ends a run with one clear line and a non-zero exit, never a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable

#: Exit status for a run stopped by bad input (argparse uses 2 for usage errors too).
USER_ERROR_EXIT = 2


class UserError(Exception):
    """An error caused by the user's input (flags, paths, files); reported as one line."""


def run_main(main: Callable[[], object], prog: str | None = None) -> None:
    """Call ``main()``; turn a :class:`UserError` into ``prog: error: message`` and exit 2.

    Other exceptions are bugs and keep their traceback. ``KeyboardInterrupt`` exits 130
    quietly, after whatever ``main`` already wrote atomically.
    """
    name = prog or (sys.argv[0].rsplit("/", 1)[-1] if sys.argv else "forgetting")
    try:
        main()
    except UserError as err:
        message = " ".join(str(err).split())  # always one line
        print(f"{name}: error: {message}", file=sys.stderr)
        sys.exit(USER_ERROR_EXIT)
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        sys.exit(130)
