"""Where data lives: the user's flag, else ``FORGETTING_DATA``, else the original's default."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
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


@contextlib.contextmanager
def download_guard(folder: str | os.PathLike[str]) -> Iterator[None]:
    """Undo what a failed download created under ``folder``: new files and new empty folders.

    torchvision makes ``ROOT/<set>/raw`` and starts writing before it knows the host is
    unreachable; a failed download must leave the user's tree as it was. Files and folders
    that existed before are never touched.
    """
    base = Path(folder)
    existed_base = base.exists()
    before = {p for p in base.rglob("*")} if existed_base else set()
    ancestors = [p for p in [base, *base.parents] if not p.exists()]
    try:
        yield
    except BaseException:
        if base.exists():
            created = sorted((p for p in base.rglob("*") if p not in before), key=lambda p: len(p.parts), reverse=True)
            for path in created:
                if path.is_file() or path.is_symlink():
                    path.unlink(missing_ok=True)
                elif path.is_dir() and not any(path.iterdir()):
                    path.rmdir()
        for path in ancestors:  # deepest first: base, then the parents it created
            if path.is_dir() and not any(path.iterdir()):
                path.rmdir()
        raise
