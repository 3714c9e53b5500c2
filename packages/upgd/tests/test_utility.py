"""The utility-approximation experiment: oracle by hand, the two rank coefficients, the CLI."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from upgd.utility import argsort_spearman, layerwise, oracle_utilities, true_spearman


def test_oracle_matches_loop():
    torch.manual_seed(0)
    net = torch.nn.Sequential(OrderedDict([("linear_1", torch.nn.Linear(3, 4)), ("act_1", torch.nn.ReLU()),
                                           ("linear_2", torch.nn.Linear(4, 1))]))
    x, y = torch.randn(1, 3), torch.randn(1, 1)
    base = torch.tensor(0.7)
    got = oracle_utilities(net, x, y, base, F.mse_loss)
    for p, u in zip(net.parameters(), got):
        flat = p.data.view(-1)
        for i in range(flat.numel()):
            saved = flat[i].item()
            flat[i] = 0.0
            with torch.no_grad():
                want = F.mse_loss(net(x), y) - base
            flat[i] = saved
            assert u.view(-1)[i].item() == pytest.approx(want.item(), abs=1e-6)


def test_rank_coefficients_hand_cases():
    a = [torch.tensor([0.1, 0.5, 0.3, 0.9])]
    assert argsort_spearman(a, a) == 1.0 and true_spearman(a, a) == pytest.approx(1.0)
    rev = [torch.tensor([0.9, 0.3, 0.5, 0.1])]
    assert true_spearman(a, rev) == pytest.approx(-1.0)
    # argsort(a) = [0,2,1,3], argsort(rev) = [3,1,2,0]: Σd² = 9+1+1+9 = 20 → 1 − 120/60 = −1
    assert argsort_spearman(a, rev) == pytest.approx(-1.0)
    # where ranks and argsort differ: a permutation that is not an involution
    b = [torch.tensor([2.0, 0.0, 1.0])]  # ranks [2,0,1], argsort [1,2,0]
    c = [torch.tensor([0.0, 1.0, 2.0])]
    assert argsort_spearman(b, c) == pytest.approx(1 - 6 * (1 + 1 + 4) / 24)
    assert true_spearman(b, c) == pytest.approx(-0.5)
    assert layerwise(true_spearman, a + [torch.tensor([1.0])], a + [torch.tensor([2.0])]) == pytest.approx(1.0)


def test_run_utility_cli(run_cli):
    path, data = run_cli(["--task", "weight_utils", "--learner", "sgd_with_hesscale", "--network",
                          "small_fully_connected_relu", "--lr", "0.01", "--n_samples", "15", "--tensorboard", "0"],
                         mode="utility")
    assert set(data["global_correlations"]) == {"first_order", "second_order", "weight", "g2", "random"}
    assert all(len(v) == 15 for v in data["layerwise_correlations_true"].values())


def test_run_utility_feature_cli(run_cli):
    path, data = run_cli(["--task", "feature_utils", "--learner", "sgd_with_hesscale", "--network",
                          "small_fully_connected_relu_gates", "--lr", "0.01", "--n_samples", "10",
                          "--tensorboard", "0"], mode="utility_feature")
    assert set(data["global_correlations"]) == {"first_order", "second_order", "g2", "random"}
    assert all(len(v) == 10 for v in data["global_correlations"].values())
