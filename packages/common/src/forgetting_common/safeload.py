"""Loading files a user points at without letting them run code.

Two kinds of file reach the scripts from the user: checkpoints (``--resume`` and friends) and
the original scripts' pickles (example forgetting's statistics and sorting files, CIFAR's
pickled batches). ``pickle.load`` and ``torch.load(weights_only=False)`` execute whatever a
pickle asks for, so neither is ever called on such a file:

- :func:`load_checkpoint` is ``torch.load(weights_only=True)``: tensors and plain Python values
  only. Our own checkpoints hold nothing else (RNG states included, see
  :func:`forgetting_common.seeding.get_rng_state`). There is no fallback to full unpickling.
- :func:`load_pickle` admits only the types the originals' data pickles hold: Python's
  containers and scalars, NumPy arrays, dtypes and scalars, ``OrderedDict``. Anything else is
  refused with one line naming the file and the type it asked for.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

from forgetting_common.errors import UserError

# (module, name) pairs a data pickle may construct. Each only builds data: none calls a
# function chosen by the file or reaches the file system, the shell or the importer.
_SAFE_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    [("builtins", name) for name in (
        "dict", "list", "tuple", "set", "frozenset", "int", "float", "complex", "str",
        "bytes", "bytearray", "bool", "slice", "range",
    )]
    + [("collections", "OrderedDict"), ("collections", "defaultdict")]
    # NumPy arrays and scalars, under the module names NumPy 1.x and 2.x pickle them with.
    + [(module, name)
       for module in ("numpy.core.multiarray", "numpy._core.multiarray")
       for name in ("_reconstruct", "scalar")]
    + [(module, "_frombuffer") for module in ("numpy.core.numeric", "numpy._core.numeric")]
    + [("numpy", "ndarray"), ("numpy", "dtype")]
    # Protocol-2 pickles (Python 2 era) store bytes as _codecs.encode(text, "latin1").
    + [("_codecs", "encode")]
)
# Python 2 pickles name the builtins module differently.
_RENAMED = {"__builtin__": "builtins", "copy_reg": "copyreg"}


class _DataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        module = _RENAMED.get(module, module)
        if (module, name) in _SAFE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it asks for {module}.{name}")


def load_pickle(path: str | os.PathLike[str], *, encoding: str = "ASCII", what: str = "file") -> Any:
    """Unpickle ``path`` admitting only plain data (containers, scalars, NumPy arrays).

    ``encoding`` is passed to the unpickler (``"latin1"`` for Python 2 pickles such as CIFAR's).
    A file that needs any other type is refused: :class:`UserError` naming the file.
    """
    target = Path(path)
    try:
        data = target.read_bytes()
    except FileNotFoundError as err:
        raise UserError(f"{what} {target} not found") from err
    except IsADirectoryError as err:
        raise UserError(f"{what} {target} is a folder, not a file") from err
    except PermissionError as err:
        raise UserError(f"{what} {target} cannot be read: permission denied") from err
    try:
        return _DataUnpickler(io.BytesIO(data), encoding=encoding).load()
    except pickle.UnpicklingError as err:
        text = str(err)
        if text.startswith("it asks for"):
            raise UserError(
                f"{what} {target} is refused: {text}, which a data file never needs "
                "(loading it could run code)"
            ) from err
        raise UserError(f"{what} {target} is not a readable pickle ({text})") from err
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            ImportError, UnicodeDecodeError, MemoryError, OverflowError) as err:
        raise UserError(
            f"{what} {target} is not a readable pickle ({type(err).__name__}: {err})"
        ) from err


def load_checkpoint(
    path: str | os.PathLike[str], map_location: Any = "cpu", *, what: str = "checkpoint"
) -> Any:
    """``torch.load(path, weights_only=True)``, with one-line errors naming the file.

    Only tensors and plain Python values load; a checkpoint holding anything else (a pickled
    optimizer object, a class, a function) is refused rather than unpickled.
    """
    import torch

    target = Path(path)
    if not target.exists():
        raise UserError(f"{what} {target} not found")
    if target.is_dir():
        raise UserError(f"{what} {target} is a folder, not a file")
    with open(target, "rb") as handle:
        head = handle.read(4)
    # torch.save writes a zip; very old torch wrote a pickle (protocol opcode 0x80 first).
    if not (head.startswith(b"PK") or head[:1] == b"\x80"):
        raise UserError(f"{what} {target} is not a checkpoint (neither torch's zip format nor a pickle)")
    try:
        return torch.load(target, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's message is long and suggests weights_only=False; keep only what it refused.
        found = re.search(r"(?:unsupported|Unsupported) (?:GLOBAL|global|operand) [\w.]+", str(err))
        detail = found.group(0).replace("unsupported", "asks for").replace("Unsupported", "asks for") if found else "an object that is not a tensor or plain value"
        raise UserError(
            f"{what} {target} is refused: it holds more than tensors and plain values "
            f"({detail[:200]}); loading it could run code"
        ) from err
    except PermissionError as err:
        raise UserError(f"{what} {target} cannot be read: permission denied") from err
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile, KeyError,
            TypeError, AttributeError, IndexError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"{what} {target} is not a readable checkpoint ({first[:200]})") from err
