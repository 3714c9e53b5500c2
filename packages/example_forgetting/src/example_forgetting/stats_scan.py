"""Accuracy histories read straight from the bytes of a statistics pickle, without unpickling it.

A 200-epoch MNIST statistics file holds 36 million numbers; ``pickle.load`` makes a Python
object of each (about 7 s and 900 MB per file), while the order script needs only the 0/1
accuracies. Statistics files are regular: a dict whose example entries are all
``id: [[E floats], [E ints], [E floats]]``, with two string-keyed entries (``'train'``,
``'test'``) somewhere among them. :func:`scan_accuracies` walks the entries (one small step per
example), then checks every opcode of every entry against that layout at once with NumPy and
gathers the accuracy bytes. Nothing is executed: it only reads bytes it has checked.

It reads protocol 4 and 5 pickles (Python 3.8 and later write these by default; this package
writes protocol 5) whose ids are Python ints (this package) or NumPy int64 scalars (the
original scripts). Anything else (another protocol, lists of unequal length, more than 1000
epochs, accuracies other than 0/1, repeated ids, bytes out of place) returns ``None``, and the
caller unpickles the file as before; the result is the same either way.
"""

from __future__ import annotations

import os

import numpy as np

_FRAME = 0x95
_EMPTY_DICT, _MEMOIZE, _MARK, _SETITEMS, _STOP = b"}"[0], 0x94, b"("[0], b"u"[0], b"."[0]
_BININT1, _BININT2, _BININT = b"K"[0], b"M"[0], b"J"[0]
_SHORT_BINUNICODE = 0x8C
_BINFLOAT = b"G"[0]
_LIST_HEAD = b"]\x94("  # EMPTY_LIST MEMOIZE MARK: a list of two or more items follows
_MAX_BATCH = 1000  # the pickler splits longer lists into batches of 1000

# How NumPy (1.x: numpy.core, 2.x: numpy._core) pickles an int64 scalar as the first key of a
# dict: the reconstructor and the dtype are memoised (as 3 and 9), later keys refer to them.
_NUMPY_FIRST_KEY = [
    (b"\x8c" + bytes([len(module)]) + module + b"\x94\x8c\x06scalar\x94\x93\x94\x8c\x05numpy\x94\x8c\x05dtype"
     b"\x94\x93\x94\x8c\x02i8\x94\x89\x88\x87\x94R\x94(K\x03\x8c\x01<\x94NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK"
     b"\x00t\x94bC\x08")
    for module in (b"numpy._core.multiarray", b"numpy.core.multiarray")
]
_NUMPY_KEY = b"h\x03h\tC\x08"  # BINGET 3, BINGET 9, SHORT_BINBYTES 8
_NUMPY_KEY_END = b"\x94\x86\x94R\x94"  # MEMOIZE TUPLE2 MEMOIZE REDUCE MEMOIZE


class _Unrecognised(Exception):
    """The file is not in the layout this reader knows; unpickle it instead."""


def scan_accuracies(path: str | os.PathLike[str], epochs: int) -> tuple[np.ndarray, np.ndarray] | None:
    """``(ids, acc)`` of a statistics file: example ids in the dict's order (int64) and their
    accuracy histories cut to the first ``epochs`` presentations (int8 ``[N, min(E, epochs)]``);
    ``None`` if the file is not in the regular layout (see the module docstring)."""
    return AccuracyScanner()(path, epochs)


class AccuracyScanner:
    """:func:`scan_accuracies` over several files with one read buffer: the memory is faulted
    in once, not once per file (a quarter of a second per 240 MB file on a busy machine)."""

    def __init__(self) -> None:
        self._buffer = np.empty(0, dtype=np.uint8)

    def __call__(self, path: str | os.PathLike[str], epochs: int) -> tuple[np.ndarray, np.ndarray] | None:
        try:
            return _scan(_unframed(self._read(path)), epochs)
        except (_Unrecognised, IndexError, ValueError, OverflowError, TypeError, KeyError, OSError):
            return None  # the caller unpickles the file (and reports what is wrong with it)

    def _read(self, path: str | os.PathLike[str]) -> np.ndarray:
        """The file's bytes (``readinto``: several times faster than ``np.fromfile``)."""
        with open(path, "rb", buffering=0) as handle:
            size = os.fstat(handle.fileno()).st_size
            if len(self._buffer) < size:
                self._buffer = np.empty(0, dtype=np.uint8)  # free the old one first
                self._buffer = np.empty(size, dtype=np.uint8)
            buf = self._buffer[:size]
            if handle.readinto(memoryview(buf)) != size:
                raise _Unrecognised  # the file changed while it was read
        return buf


def _unframed(buf: np.ndarray) -> np.ndarray:
    """The opcode stream of a protocol 4/5 pickle with its FRAME headers removed (in place)."""
    if len(buf) < 3 or buf[0] != 0x80 or buf[1] not in (4, 5):
        raise _Unrecognised
    size = len(buf)
    pos, out = 2, 0
    while pos < size and buf[pos] == _FRAME:
        length = int.from_bytes(buf[pos + 1 : pos + 9].tobytes(), "little")
        if pos + 9 + length > size:
            raise _Unrecognised
        buf[out : out + length] = buf[pos + 9 : pos + 9 + length]  # NumPy copies overlaps safely
        out += length
        pos += 9 + length
    rest = size - pos  # a last frame under 4 bytes is written without a header
    buf[out : out + rest] = buf[pos:size]
    return buf[: out + rest]


def _scan(buf: np.ndarray, epochs: int) -> tuple[np.ndarray, np.ndarray]:
    mv = memoryview(buf)
    if bytes(mv[:3]) != bytes([_EMPTY_DICT, _MEMOIZE, _MARK]):
        raise _Unrecognised
    p = 3
    numpy_keys = False
    for first in _NUMPY_FIRST_KEY:
        if bytes(mv[p : p + len(first)]) == first:
            numpy_keys = True
            p_first = p + len(first)
            break
    ids: list[int] = []
    starts: list[int] = []
    size = 0  # bytes of one example's value, known after the first example
    end = len(buf)
    while True:
        op = mv[p]
        if op == _SETITEMS:
            if mv[p + 1] == _STOP and p + 2 == end:
                break
            if mv[p + 1] != _MARK:
                raise _Unrecognised
            p += 2
            continue
        if op == _SHORT_BINUNICODE and not (numpy_keys and p_first):  # 'train' / 'test': not an example
            p += 2 + mv[p + 1]
            if mv[p] == _MEMOIZE:
                p += 1
            p = _skip_value(buf, mv, p)
            continue
        if numpy_keys:
            if p_first:
                key_at, p_first = p_first, 0
            elif bytes(mv[p : p + 6]) == _NUMPY_KEY:
                key_at = p + 6
            else:
                raise _Unrecognised
            if bytes(mv[key_at + 8 : key_at + 13]) != _NUMPY_KEY_END:
                raise _Unrecognised
            ids.append(int.from_bytes(mv[key_at : key_at + 8], "little", signed=True))
            p = key_at + 13
        elif op == _BININT1:
            ids.append(mv[p + 1])
            p += 2
        elif op == _BININT2:
            ids.append(int.from_bytes(mv[p + 1 : p + 3], "little"))
            p += 3
        elif op == _BININT:
            ids.append(int.from_bytes(mv[p + 1 : p + 5], "little", signed=True))
            p += 5
        else:
            raise _Unrecognised
        if not size:
            presentations = _first_value_length(buf, p)
            size = 20 * presentations + 16
        starts.append(p)
        p += size
    if not ids:
        raise _Unrecognised
    ids_arr = np.asarray(ids, dtype=np.int64)
    if len(np.unique(ids_arr)) != len(ids_arr):
        raise _Unrecognised  # a repeated key keeps its first place in a dict: leave that to pickle
    return ids_arr, _checked_accuracies(buf, np.asarray(starts, dtype=np.int64), presentations, epochs)


def _first_value_length(buf: np.ndarray, v: int) -> int:
    """E of the first example's value ``[[E floats], [E ints], [E floats]]`` (2 <= E <= 1000)."""
    if bytes(buf[v : v + 6]) != _LIST_HEAD * 2:
        raise _Unrecognised
    ops = buf[v + 6 : v + 6 + 9 * (_MAX_BATCH + 1) : 9]
    not_float = np.flatnonzero(ops != _BINFLOAT)
    presentations = int(not_float[0]) if len(not_float) else len(ops)
    if not 2 <= presentations <= _MAX_BATCH:
        raise _Unrecognised
    return presentations


def _layout(presentations: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Opcode offsets and bytes of one example's value, and the offsets of its accuracy bytes."""
    e = presentations
    offsets: list[int] = []
    values: list[int] = []

    def put(at: int, data: bytes) -> None:
        offsets.extend(range(at, at + len(data)))
        values.extend(data)

    put(0, _LIST_HEAD * 2)
    at = 6
    for item, width in ((_BINFLOAT, 9), (_BININT1, 2), (_BINFLOAT, 9)):
        if item != _BINFLOAT or at != 6:
            put(at, _LIST_HEAD)
            at += 3
        if item == _BININT1:
            acc_at = at + 1
        offsets.extend(range(at, at + width * e, width))
        values.extend([item] * e)
        at += width * e
        put(at, b"e")  # APPENDS
        at += 1
    put(at, b"e")
    assert at + 1 == 20 * e + 16
    acc_offsets = np.arange(acc_at, acc_at + 2 * e, 2, dtype=np.int64)
    return np.asarray(offsets, dtype=np.int64), np.asarray(values, dtype=np.uint8), acc_offsets


def _checked_accuracies(buf: np.ndarray, starts: np.ndarray, presentations: int, epochs: int) -> np.ndarray:
    offsets, values, acc_offsets = _layout(presentations)
    if starts[-1] + 20 * presentations + 16 > len(buf):
        raise _Unrecognised
    width = min(presentations, epochs)
    acc = np.empty((len(starts), width), dtype=np.int8)
    chunk = 1024  # index arrays of a few MB: fastest on the machines tried
    for begin in range(0, len(starts), chunk):
        rows = starts[begin : begin + chunk, None]
        if not (buf[rows + offsets] == values).all():
            raise _Unrecognised
        got = buf[rows + acc_offsets]
        if got.max(initial=0) > 1:
            raise _Unrecognised
        acc[begin : begin + chunk] = got[:, :width]
    return acc


def _skip_value(buf: np.ndarray, mv: memoryview, p: int) -> int:
    """Position after one value made of lists, floats and small ints (a ``'train'`` entry)."""
    stack = 0  # objects pushed since the value began
    marks: list[int] = []
    while True:
        op = mv[p]
        if stack == 1 and not marks and op not in (_MARK, b"a"[0], _MEMOIZE):
            return p  # the value is complete: the next key (or SETITEMS) follows
        if op == b"]"[0]:
            stack += 1
            p += 1
        elif op == _MEMOIZE:
            p += 1
        elif op == _MARK:
            marks.append(stack)
            p += 1
        elif op == b"e"[0]:
            stack = marks.pop()
            p += 1
        elif op == b"a"[0]:
            stack -= 1
            p += 1
        elif op == _BINFLOAT:
            ops = buf[p : p + 9 * (_MAX_BATCH + 1) : 9]
            not_float = np.flatnonzero(ops != _BINFLOAT)
            run = int(not_float[0]) if len(not_float) else len(ops)
            stack += run
            p += 9 * run
        elif op == _BININT1:
            stack += 1
            p += 2
        elif op == _BININT2:
            stack += 1
            p += 3
        elif op == _BININT:
            stack += 1
            p += 5
        else:
            raise _Unrecognised
        if stack < 1 and not marks:
            raise _Unrecognised
