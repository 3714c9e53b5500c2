"""The game analysis the claims measure, on a hand-made accuracy trace."""

import numpy as np
import pytest
from ease_of_teaching.analysis import analyse_game, regimes


def test_regimes_keep_the_paper_periods():
    r = regimes(12000)
    assert r["no reset"] == ["--resetNum", "4"]
    assert r["reset receiver"][:2] == ["--resetNum", "2"] and "--reset_receiver" in r["reset receiver"]
    assert r["PBF"][:2] == ["--resetNum", "4"] and "--same_mask" in r["PBF"]


def test_analysis_of_a_reset_trace():
    acc = np.full(12000, 90.0)
    acc[6001:6101] = 25.0  # the reset at 6000 drops accuracy for 100 iterations
    rec = {"trainAcc": acc, "config": {"resetIter": 6000}, "topo_iters": [0, 6000, 12000],
           "topo": [0.2, 0.5, 0.6], "topo_new": [np.nan, 0.5, np.nan]}
    out = analyse_game("reset receiver", rec)
    assert out["events"] == 1
    assert out["min drop"] == pytest.approx(65.0)
    assert out["acc 900-1000 after event (min)"] == pytest.approx(90.0)
    assert out["topo mean second half"] == pytest.approx(0.55)
    assert out["topo changed by every event"] is False  # a receiver reset leaves the sender's language

