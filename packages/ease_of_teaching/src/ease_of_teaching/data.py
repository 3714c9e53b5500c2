"""The objects and game batches of Li & Bowling's (2019) referential game.

32 objects = 8 colours x 4 shapes, each a 12-dim two-hot vector (colour one-hot in dims 0-7,
shape one-hot in dims 8-11). Object ``o`` has colour ``o // 4`` and shape ``o % 4`` (the
original enumeration order). A game shows the sender one target; the receiver gets the
2-symbol message (vocabulary of 8) and 5 distinct candidates and must point at the target.
"""

from __future__ import annotations

import numpy as np
import torch

NUM_COLORS = 8
NUM_SHAPES = 4
NUM_OBJECTS = NUM_COLORS * NUM_SHAPES
ATTR_SIZE = NUM_COLORS + NUM_SHAPES
VOCAB_SIZE = 8
MESSAGE_LEN = 2
DISTRACT_NUM = 5  # candidates per game, target included
HIDDEN_SIZE = 100
COLOR_NAMES = ("black", "blue", "green", "grey", "pink", "purple", "red", "yellow")
SHAPE_NAMES = ("circle", "square", "star", "triangle")


# --------------------------------------------------------------------------- objects
def object_colors() -> np.ndarray:
    return np.arange(NUM_OBJECTS) // NUM_SHAPES


def object_shapes() -> np.ndarray:
    return np.arange(NUM_OBJECTS) % NUM_SHAPES


def attribute_table(device: torch.device | str = "cpu") -> torch.Tensor:
    """``(32, 12)`` float two-hot vectors, row ``o`` = object ``o``."""
    table = torch.zeros(NUM_OBJECTS, ATTR_SIZE)
    idx = torch.arange(NUM_OBJECTS)
    table[idx, idx // NUM_SHAPES] = 1.0
    table[idx, NUM_COLORS + idx % NUM_SHAPES] = 1.0
    return table.to(device)


def easy_hard_tables() -> tuple[np.ndarray, np.ndarray]:
    """Boolean ``(32, 32)`` tables: ``easy[t, o]`` = o differs from t in colour and shape;
    ``hard[t, o]`` = o != t shares colour or shape with t."""
    c, s = object_colors(), object_shapes()
    same_c = c[:, None] == c[None, :]
    same_s = s[:, None] == s[None, :]
    easy = ~same_c & ~same_s
    hard = (same_c | same_s) & ~np.eye(NUM_OBJECTS, dtype=bool)
    return easy, hard


class GameSampler:
    """Draws game batches: object ids ``(B, 5)`` of distinct candidates and the target position.

    Distribution as the original's ``getBatchData``: 5 distinct objects uniformly without
    replacement, the target uniformly among them. With ``easy_limit`` < 4 (hard-distractor
    mode) the first draw is the target and every "easy" distractor beyond the first
    ``easy_limit`` is replaced by a random "hard" object not yet among the candidates; the 5
    are then shuffled. Draws come from one NumPy generator (the ``data`` stream).
    """

    def __init__(self, rng: np.random.Generator, easy_limit: int = 5) -> None:
        self.rng = rng
        self.easy_limit = easy_limit
        self.easy, self.hard = easy_hard_tables()

    def sample(self, batch: int) -> tuple[np.ndarray, np.ndarray]:
        cands = np.argsort(self.rng.random((batch, NUM_OBJECTS)), axis=1)[:, :DISTRACT_NUM]
        if self.easy_limit >= DISTRACT_NUM - 1:
            target_pos = self.rng.integers(0, DISTRACT_NUM, size=batch)
            return cands, target_pos
        target_pos = np.empty(batch, dtype=np.int64)
        for b in range(batch):
            row = cands[b].tolist()
            target, others = row[0], row[1:]
            n_easy = 0
            for k, obj in enumerate(others):
                if self.easy[target, obj]:
                    n_easy += 1
                    if n_easy > self.easy_limit:
                        pool = [o for o in np.flatnonzero(self.hard[target]) if o not in others]
                        others[k] = int(self.rng.choice(pool))
            others.append(target)
            order = self.rng.permutation(DISTRACT_NUM)
            shuffled = [others[j] for j in order]
            cands[b] = shuffled
            target_pos[b] = shuffled.index(target)
        return cands, target_pos
