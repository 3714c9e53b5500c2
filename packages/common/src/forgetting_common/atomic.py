"""Atomic file writes: write to a temporary file beside the target, then rename over it.

An interrupted run therefore leaves either the old file or the new one, never half of one.
The result gets the permissions of any newly created file (``0666`` less the umask), not
``mkstemp``'s private ``0600``: a colleague must be able to read a shared run folder.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO


def current_umask() -> int:
    """The process umask, read without changing it where Linux allows (else set and restore)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """A binary handle on a temporary file beside ``path``, renamed over it when the block ends.

    Flushed and fsynced first; on any error the temporary file is removed and ``path`` is left
    as it was. An ``OSError`` names ``path`` (a failed write names no file of its own, and the
    temporary name means nothing to the user).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as err:
        raise OSError(err.errno, err.strerror, str(target)) from err
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        if err.filename is None or err.filename == tmp:
            raise OSError(err.errno, err.strerror, str(target)) from err
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_open(path) as handle:
        handle.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def json_clean(obj: Any) -> Any:
    """``obj`` with every non-finite float (NaN, ±inf) replaced by ``None``, recursively.

    ``json.dumps`` would write them as the bare tokens ``NaN``/``Infinity``, which are not JSON
    and which most readers refuse. Tuples become lists, as JSON has only lists.
    """
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {key: json_clean(value) for key, value in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_clean(value) for value in obj]
    if hasattr(obj, "item") and getattr(obj, "ndim", None) == 0:  # NumPy / torch scalars
        return json_clean(obj.item())
    return obj


def atomic_write_json(path: str | os.PathLike[str], obj: Any, indent: int | None = 2) -> Path:
    """Valid JSON only: non-finite numbers are written as ``null`` (see :func:`json_clean`)."""
    text = json.dumps(json_clean(obj), indent=indent, sort_keys=False, default=str, allow_nan=False)
    return atomic_write_text(path, text + "\n")


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save`` through a temporary file and a rename.

    Serialised in memory first, so that a full or read-only disk surfaces as the ``OSError``
    it is (torch's own writer turns it into an opaque ``RuntimeError``).
    """
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def atomic_pickle_dump(obj: Any, path: str | os.PathLike[str]) -> Path:
    """Pickle ``obj`` straight into the temporary file (the bytes ``pickle.dumps`` would give),
    so a large pickle is never held in memory whole."""
    import pickle

    with atomic_open(path) as handle:
        pickle.dump(obj, handle, protocol=pickle.HIGHEST_PROTOCOL)
    return Path(path)
