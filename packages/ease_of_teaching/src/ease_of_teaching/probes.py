"""The per-object probe games of ``forget_train.py --track_examples`` (spec B.6)."""

from __future__ import annotations

import numpy as np

from ease_of_teaching.game import NUM_COLORS, NUM_OBJECTS, NUM_SHAPES


def probe_sets(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The four per-object probe games of ``--track_examples``, as (32, 5, 2) colour/shape ids,
    target first: hard-colour, hard-shape, easy, random (spec B.6)."""
    sets = {k: np.zeros((NUM_OBJECTS, 5, 2), dtype=np.int64) for k in
            ("all_color_hard_examples", "all_shape_hard_examples", "all_easy_examples", "all_random_examples")}
    for obj in range(NUM_OBJECTS):
        c, s = obj // NUM_SHAPES, obj % NUM_SHAPES
        others_c = [k for k in range(NUM_COLORS) if k != c]
        others_s = [k for k in range(NUM_SHAPES) if k != s]
        sets["all_color_hard_examples"][obj] = [[c, s]] + [[c, k] for k in others_s] + [[others_c[0], s]]
        picks = rng.choice(len(others_c), 4, replace=False)
        sets["all_shape_hard_examples"][obj] = [[c, s]] + [[others_c[k], s] for k in picks]
        easy = [(a, b) for a in others_c for b in others_s]
        chosen = rng.choice(len(easy), 4, replace=False)
        sets["all_easy_examples"][obj] = [[c, s]] + [list(easy[k]) for k in chosen]
        rest = [k for k in range(NUM_OBJECTS) if k != obj]
        chosen = rng.choice(len(rest), 4, replace=False)
        sets["all_random_examples"][obj] = [[c, s]] + [[rest[k] // NUM_SHAPES, rest[k] % NUM_SHAPES] for k in chosen]
    return sets


def object_ids(pairs: np.ndarray) -> np.ndarray:
    return pairs[..., 0] * NUM_SHAPES + pairs[..., 1]
