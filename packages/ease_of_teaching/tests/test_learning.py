"""Learning sanity on short runs of the real game (this package needs no dataset: the game
itself is the data). Thresholds are below the values seen in the reproduction (README)."""

import numpy as np
import torch
from ease_of_teaching.game import GameSampler, Team
from ease_of_teaching.metrics import topographic_similarity
from ease_of_teaching.seeds import C7
from forgetting_common.runlog import read_metrics
from forgetting_common.seeding import make_numpy_rng, seed_everything


def test_game_is_learnt_and_a_receiver_reset_drops_accuracy():
    seed_everything(0)
    team = Team(device=torch.device("cpu"))
    # the original RNG order reproduces Li & Bowling's initial language for seed 0 (topo 0.188)
    assert abs(topographic_similarity(team.greedy_language().message) - 0.188) < 0.01
    sampler = GameSampler(make_numpy_rng(0, "data"))
    acc = []

    def step():
        c, t = (torch.from_numpy(x) for x in sampler.sample(100))
        res = team.play(c, t)
        team.update(res)
        acc.append(float(res.rewards.mean()) * 100)

    for _ in range(1200):
        step()
    before = np.mean(acc[-100:])
    assert before > 45, before  # chance is 20 %; ~60 % at 1 200 iterations in the reproduction
    team.reset_receiver()
    for _ in range(20):
        step()
    after = np.mean(acc[-20:])
    assert after < before - 15, (before, after)


def test_forgetting_hits_the_permuted_half_harder(run_mixed):
    _, folder = run_mixed(C7, "--trainIters", "400")
    recs = read_metrics(folder)[200:]
    assert np.mean([r["Exact Match Perfect"] for r in recs]) == 100.0
    gap = np.mean([r["Copy Exact Match Perfect"] - r["Copy Exact Match Permuted"] for r in recs])
    assert gap > 5, gap
