"""Where data lives: the user's flag, else ``FORGETTING_DATA``, else the original's default."""

from __future__ import annotations

import os
from pathlib import Path

from forgetting_common.errors import UserError

DATA_ENV = "FORGETTING_DATA"


class DatasetError(UserError):
    """A dataset is missing or malformed; the message names the path, layout and fix."""


def resolve_root(flag_value: str | os.PathLike[str] | None, default: str | os.PathLike[str]) -> Path:
    """The data root: ``flag_value`` if given, else ``$FORGETTING_DATA``, else ``default``."""
    if flag_value not in (None, ""):
        return Path(flag_value).expanduser()
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    return Path(default).expanduser()


def missing(what: str, path: Path, layout: str, flag: str) -> DatasetError:
    """The standard error for a dataset that is not where it should be."""
    return DatasetError(
        f"{what} not found at {path}: expected {layout}; "
        f"set the data root with {flag} or the {DATA_ENV} environment variable"
    )
