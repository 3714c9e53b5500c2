"""Atomic file writes: write to a temporary file beside the target, then rename over it.

An interrupted run therefore leaves either the old file or the new one, never half of one.
The result gets the permissions of any newly created file (``0666`` less the umask), not
``mkstemp``'s private ``0600``: a colleague must be able to read a shared run folder.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import tempfile
from collections.abc import Iterable, Iterator
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


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes | memoryview) -> Path:
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
    with buffer.getbuffer() as view:  # no second copy of a checkpoint that may hold hundreds of MB
        return atomic_write_bytes(path, view)


def atomic_pickle_dump(obj: Any, path: str | os.PathLike[str]) -> Path:
    """Pickle ``obj`` straight into the temporary file (the bytes ``pickle.dumps`` would give),
    so a large pickle is never held in memory whole."""
    import pickle

    with atomic_open(path) as handle:
        pickle.dump(obj, handle, protocol=pickle.HIGHEST_PROTOCOL)
    return Path(path)


#: pickle's own sizes: frames of at least 64 KiB, dict items in batches of 1000 (CPython's C pickler)
_FRAME_TARGET, _BATCH = 64 * 1024, 1000


def atomic_pickle_dict(items: Iterable[tuple[Any, Any]], path: str | os.PathLike[str]) -> Path:
    """Pickle the dict of ``items`` (its pairs, in order) into ``path`` without ever holding the dict.

    Each pair is pickled on its own and the pieces are joined into the opcode stream that
    ``pickle.dump(dict(items), f, protocol=5)`` writes for a plain dict (the same opcodes; the 64 KiB
    frames may be cut elsewhere), so it loads as that dict with any unpickler. Keys and values must
    not share objects with one another (plain numbers, strings and lists of them): shared objects
    would be written twice instead of referenced. A 200-epoch statistics dict of 60,000 examples is
    36 M Python floats (about 1 GB) when built whole; written this way it never exists.
    """
    import pickle

    with atomic_open(path) as handle:
        handle.write(pickle.PROTO + bytes([5]))
        out = _Framer(handle)
        out.write(pickle.EMPTY_DICT + pickle.MEMOIZE)
        pairs = (_opcodes(key) + _opcodes(value) for key, value in items)
        batch = list(itertools.islice(pairs, _BATCH))
        if len(batch) == 1:  # the C pickler's special case for a one-item dict
            out.write(batch[0] + pickle.SETITEM)
        elif batch:
            while True:  # its batching loop: after a full batch it writes one more, possibly empty
                out.write(pickle.MARK)
                for piece in batch:
                    out.write(piece)
                out.write(pickle.SETITEMS)
                if len(batch) < _BATCH:
                    break
                batch = list(itertools.islice(pairs, _BATCH))
        out.write(pickle.STOP)
        out.commit()
    return Path(path)


def _opcodes(obj: Any) -> bytes:
    """``obj``'s protocol-5 pickle without its PROTO header, frames and STOP: the opcodes a pickle
    of a container holding it would contain."""
    import pickle

    data = pickle.dumps(obj, protocol=5)
    pos, parts = 2, []
    while pos < len(data) and data[pos] == pickle.FRAME[0]:  # frames follow one another from the start
        size = int.from_bytes(data[pos + 1 : pos + 9], "little")
        parts.append(data[pos + 9 : pos + 9 + size])
        pos += 9 + size
    parts.append(data[pos:])
    body = b"".join(parts)
    if not body.endswith(pickle.STOP):
        raise ValueError("unexpected pickle layout")
    return body[:-1]


class _Framer:
    """Groups opcodes into FRAMEs of about 64 KiB, as the pickler does (a last piece under 4 bytes
    goes without a header)."""

    def __init__(self, handle: BinaryIO) -> None:
        self.handle, self.parts, self.size = handle, [], 0

    def write(self, data: bytes) -> None:
        self.parts.append(data)
        self.size += len(data)
        if self.size >= _FRAME_TARGET:
            self.commit()

    def commit(self) -> None:
        import pickle

        data = b"".join(self.parts)
        if len(data) >= 4:
            self.handle.write(pickle.FRAME + len(data).to_bytes(8, "little"))
        self.handle.write(data)
        self.parts, self.size = [], 0

