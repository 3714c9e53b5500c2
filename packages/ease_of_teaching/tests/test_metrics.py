"""Numerical checks of the language measurements against hand-computed cases."""

import math

import numpy as np
import pytest
import torch
from ease_of_teaching import metrics as M
from ease_of_teaching.game import attribute_table
from scipy.stats import spearmanr


def test_levenshtein_hand_cases():
    assert M.levenshtein("ab", "ab") == 0
    assert M.levenshtein("ab", "ac") == 1
    assert M.levenshtein("ab", "ba") == 2  # two substitutions (no transposition)
    assert M.levenshtein("kitten", "sitting") == 3
    table = M.levenshtein_table()
    assert table.shape == (64, 64)
    assert table[0 * 8 + 1, 1 * 8 + 0] == 2 and table[3 * 8 + 4, 3 * 8 + 5] == 1


def test_cosine_table_values():
    cos = M.cosine_table()
    assert cos[0, 0] == pytest.approx(1.0)
    assert cos[0, 1] == pytest.approx(0.5)  # same colour, other shape
    assert cos[0, 4] == pytest.approx(0.5)  # same shape, other colour
    assert cos[0, 5] == pytest.approx(0.0)


def test_perfect_language_scores_exactly_one():
    assert M.topographic_similarity(M.perfect_language()) == pytest.approx(1.0, abs=1e-12)


def test_topographic_similarity_hand_computed():
    """Objects 0 (colour 0, shape 0), 1 (colour 0, shape 1), 5 (colour 1, shape 1) saying aa, bb, ab.

    The 9 ordered pairs (diagonal included): Levenshtein 0,2,1 / 2,0,1 / 1,1,0 and cosine
    1,.5,0 / .5,1,.5 / 0,.5,1. Average ranks: distances 2,8.5,5.5,8.5,2,5.5,5.5,5.5,2 and
    cosines 8,4.5,1.5,4.5,8,4.5,1.5,4.5,8 (both mean 5); centred cross sum -34.5, squared sums
    52.5 and 52.5, so rho = -34.5 / 52.5 = -23/35 and the score is 23/35.
    """
    msgs = np.array([[0, 0], [1, 1], [0, 1]])
    assert M.topographic_similarity(msgs, objects=[0, 1, 5]) == pytest.approx(23 / 35, abs=1e-12)
    assert M.spearman(np.array([0, 2, 1, 2, 0, 1, 1, 1, 0.0]),
                      np.array([1, .5, 0, .5, 1, .5, 0, .5, 1])) == pytest.approx(-23 / 35, abs=1e-12)


def test_constant_language_is_nan_not_a_crash():
    assert math.isnan(M.topographic_similarity(np.zeros((32, 2), dtype=np.int64)))


def test_topographic_similarity_matches_scipy_on_random_languages():
    rng = np.random.default_rng(0)
    attrs = attribute_table().numpy()
    for _ in range(3):
        msgs = rng.integers(0, 8, size=(32, 2))
        lev = [M.levenshtein(a, b) for a in msgs for b in msgs]
        cos = [float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) for a in attrs for b in attrs]
        expected = -spearmanr(lev, cos).statistic
        assert M.topographic_similarity(torch.from_numpy(msgs)) == pytest.approx(expected, abs=1e-12)


def test_permuted_language_is_far_below_compositional():
    rng = np.random.default_rng(1)
    perfect = M.perfect_language()
    scores = [M.topographic_similarity(perfect[rng.permutation(32)]) for _ in range(20)]
    # spec calibration: 0.136 +- 0.043 (positive because the diagonal pairs are included)
    assert 0.05 < np.mean(scores) < 0.25


def test_language_table_layout():
    msgs = M.perfect_language()
    table = M.language_table(msgs, np.full(32, 0.5), topk=3)
    assert set(table) == {"circle", "square", "star", "triangle"}
    assert table["circle"]["black"] == [["aa", "0.5000"]]
    assert table["triangle"]["yellow"] == [["hd", "0.5000"]]
    assert "black" in M.format_language_table(table)
