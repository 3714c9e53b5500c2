"""Language measurements: topographic similarity, message strings, the language table, entropies.

Topographic similarity (Brighton & Kirby) as the original computes it: over all ``n x n``
ordered pairs of objects *including* ``i == j``, the Levenshtein distance between the two
messages and the cosine similarity between the two attribute vectors; the score is minus
the Spearman correlation (average ranks for ties). A perfectly compositional language scores
exactly 1.0. A language with a single message for every object has constant distances and
an undefined correlation: the score is NaN (reported, never a crash).
"""

from __future__ import annotations

import itertools
import math
from functools import lru_cache

import numpy as np
import torch
from scipy.stats import spearmanr

from ease_of_teaching.game import (
    COLOR_NAMES,
    MESSAGE_LEN,
    NUM_OBJECTS,
    SHAPE_NAMES,
    VOCAB_SIZE,
    attribute_table,
    object_colors,
    object_shapes,
)


def message_string(tokens) -> str:
    """Symbols 0..7 written as letters a..h, as in the original tables."""
    return "".join(chr(97 + int(t)) for t in tokens)


def levenshtein(s, t) -> int:
    rows, cols = len(s) + 1, len(t) + 1
    prev = list(range(cols))
    for r in range(1, rows):
        cur = [r] + [0] * (cols - 1)
        for c in range(1, cols):
            cost = 0 if s[r - 1] == t[c - 1] else 1
            cur[c] = min(prev[c] + 1, cur[c - 1] + 1, prev[c - 1] + cost)
        prev = cur
    return prev[-1]


@lru_cache(maxsize=8)
def levenshtein_table(vocab: int = VOCAB_SIZE, length: int = MESSAGE_LEN) -> np.ndarray:
    """``(V^L, V^L)`` distances between all messages; message id = base-V number of its tokens."""
    msgs = list(itertools.product(range(vocab), repeat=length))
    table = np.zeros((len(msgs), len(msgs)), dtype=np.float64)
    for a, s in enumerate(msgs):
        for b, t in enumerate(msgs):
            table[a, b] = levenshtein(s, t)
    return table


@lru_cache(maxsize=2)
def cosine_table() -> np.ndarray:
    """Cosine similarity between the 32 objects' attribute vectors (1, 0.5 or 0)."""
    a = attribute_table().numpy().astype(np.float64)
    norm = np.linalg.norm(a, axis=1)
    return (a @ a.T) / np.outer(norm, norm)


def message_ids(messages: np.ndarray, vocab: int = VOCAB_SIZE) -> np.ndarray:
    ids = np.zeros(messages.shape[0], dtype=np.int64)
    for k in range(messages.shape[1]):
        ids = ids * vocab + messages[:, k].astype(np.int64)
    return ids


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho (``scipy.stats.spearmanr``, average ranks for ties, as the original called
    it); NaN when either side is constant, without scipy's warning."""
    if np.all(x == x[0]) or np.all(y == y[0]):
        return math.nan
    return float(spearmanr(x, y).statistic)


def topographic_similarity(messages, objects=None) -> float:
    """``-spearman(levenshtein(m_i, m_j), cos(o_i, o_j))`` over all ordered pairs incl. i == j.

    ``messages``: ``(n, L)`` token ids of the messages for ``objects`` (default: the 32 objects
    in order). Returns NaN for a constant language.
    """
    msgs = messages.detach().cpu().numpy() if isinstance(messages, torch.Tensor) else np.asarray(messages)
    objs = np.arange(NUM_OBJECTS) if objects is None else np.asarray(objects)
    if msgs.shape[1] == MESSAGE_LEN and msgs.max(initial=0) < VOCAB_SIZE:
        ids = message_ids(msgs)
        lev = levenshtein_table()[np.ix_(ids, ids)]
    else:
        lev = np.array([[levenshtein(a, b) for b in msgs] for a in msgs], dtype=np.float64)
    cos = cosine_table()[np.ix_(objs, objs)]
    rho = spearman(lev.ravel(), cos.ravel())
    return -rho if not math.isnan(rho) else math.nan


def perfect_language() -> np.ndarray:
    """The compositional language: object (colour c, shape s) says (c, s)."""
    return np.stack([object_colors(), object_shapes()], axis=1)


def language_table(messages, probs, topk: int = 3) -> dict[str, dict[str, list[list[str]]]]:
    """``{shape: {colour: [(message, speak-probability string)]}}`` of a greedy language.

    In greedy mode each object has one message, so at most one entry per cell (``topk`` caps
    the list as in the original).
    """
    msgs = messages.detach().cpu().numpy() if isinstance(messages, torch.Tensor) else np.asarray(messages)
    p = probs.detach().cpu().numpy() if isinstance(probs, torch.Tensor) else np.asarray(probs)
    table: dict[str, dict[str, list[list[str]]]] = {}
    for obj in range(msgs.shape[0]):
        colour, shape = COLOR_NAMES[obj // 4], SHAPE_NAMES[obj % 4]
        cell = table.setdefault(shape, {}).setdefault(colour, [])
        if len(cell) < topk:
            cell.append([message_string(msgs[obj]), f"{float(p[obj]):.4f}"])
    return table


def format_language_table(table: dict) -> str:
    """A plain-text grid: rows = colours, columns = shapes."""
    shapes = [s for s in SHAPE_NAMES if s in table]
    lines = ["colour  " + "  ".join(f"{s:>9}" for s in shapes)]
    for colour in COLOR_NAMES:
        cells = []
        for s in shapes:
            entry = table[s].get(colour, [])
            cells.append(f"{entry[0][0] if entry else '-':>9}")
        lines.append(f"{colour:<7} " + "  ".join(cells))
    return "\n".join(lines)


def step_entropies(step_log_probs: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of each step's token distribution: ``(L, B, V)`` -> ``(L, B)``."""
    return -(step_log_probs.exp() * step_log_probs).sum(-1)
