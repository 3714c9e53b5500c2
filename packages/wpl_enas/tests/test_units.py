"""Numerical unit tests against hand-computed cases (spec §7.3)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from wpl_enas.dags import (
    Node,
    build_rnn_dag,
    cell_keys,
    dag_to_genotype,
    dag_to_keys,
    rnn_edges_bfs,
)
from wpl_enas.models.controller import CNNMicroController, RNNController
from wpl_enas.models.shared_cnn import MicroCell
from wpl_enas.models.shared_rnn import SharedRNN
from wpl_enas.plots import frame_paths
from wpl_enas.train import discount
from wpl_enas.wpl import WPL, alpha_schedule


class Toy(nn.Module):
    """Two protected tensors ``a`` and ``b``; the 'architecture' is the list of names used."""

    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.tensor([1.0, 2.0]))
        self.b = nn.Parameter(torch.tensor([[0.5, -1.0], [3.0, 0.0]]))

    def protected_named_params(self):
        return [("a", self.a), ("b", self.b)]

    def wpl_named_params(self, keys):
        return [(k, getattr(self, k)) for k in keys]


def make(momentum=True, clip=0.0, alpha=2.0, lam=0.9):
    model = Toy()
    return model, WPL(model, lambda_fisher=lam, clip_by_norm=clip, momentum=momentum, alpha=alpha,
                      alpha_decay=1.0, alpha_decay_after=15)


def test_fisher_update_with_momentum():
    model, wpl = make(momentum=True)
    wpl.fisher("a").copy_(torch.tensor([0.5, 0.5]))
    model.a.grad = torch.tensor([1.0, 2.0])
    wpl.update_fisher(["a"])
    # M = 0.1 * 0.5 + 0.9 * g² = [0.95, 3.65]; F = α M
    assert torch.allclose(wpl.fisher("a"), torch.tensor([1.9, 7.3]))
    # α compounds: a second update with a zero gradient gives α (1 - λ) F
    model.a.grad = torch.zeros(2)
    wpl.update_fisher(["a"])
    assert torch.allclose(wpl.fisher("a"), torch.tensor([0.38, 1.46]))


def test_fisher_update_without_momentum_and_clip():
    model, wpl = make(momentum=False)
    wpl.fisher("a").copy_(torch.tensor([0.5, 0.5]))
    model.a.grad = torch.tensor([1.0, 2.0])
    wpl.update_fisher(["a"])
    assert torch.allclose(wpl.fisher("a"), torch.tensor([2.8, 8.2]))
    model, wpl = make(momentum=True, clip=1.0)
    wpl.fisher("a").copy_(torch.tensor([0.5, 0.5]))
    model.a.grad = torch.tensor([1.0, 2.0])
    wpl.update_fisher(["a"])
    m = torch.tensor([0.95, 3.65])
    assert torch.allclose(wpl.fisher("a"), 2.0 * m / m.norm())
    assert math.isclose(wpl.fisher("a").norm().item(), 2.0, rel_tol=1e-6)  # ‖F‖ = α·c once the cap binds


def test_missing_gradient_resets_and_only_used_keys_change():
    model, wpl = make()
    wpl.fisher("a").fill_(3.0)
    wpl.fisher("b").fill_(4.0)
    model.a.grad = None
    wpl.update_fisher(["a"])
    assert torch.count_nonzero(wpl.fisher("a")) == 0
    assert torch.all(wpl.fisher("b") == 4.0)


def test_alpha_schedule_values():
    values = [alpha_schedule(e, 60.0, 1.0, 15) for e in (14, 15, 16, 73, 74, 100)]
    assert values == [60.0, 59.0, 58.0, 1.0, 0.0, 0.0]
    # the original's default epoch 0 (CNN path, train-batch update): decays only when after <= 0
    assert [alpha_schedule(0, 60.0, 1.0, a) for a in (15, 1, 0.5, 0, -0.5, -2)] == [60.0, 60.0, 60.0, 59.0, 58.5, 57.0]
    assert alpha_schedule(20, 60.0, 0.5, 15, mode=2) == pytest.approx(60.0 * 0.5 ** 6)
    assert alpha_schedule(99, 60.0, 1.0, 15, mode=0) == 60.0


def test_penalty_brute_force_and_duplicates():
    model, wpl = make()
    wpl.fisher("a").copy_(torch.tensor([1.0, 2.0]))
    wpl.fisher("b").copy_(torch.tensor([[1.0, 0.0], [0.5, 2.0]]))
    wpl.optimal("a").copy_(torch.tensor([0.0, 1.0]))
    wpl.optimal("b").copy_(torch.zeros(2, 2))
    expected_a = 0.5 * (1.0 * 1.0 ** 2 + 2.0 * 1.0 ** 2)
    expected_b = 0.5 * (1.0 * 0.25 + 0.0 + 0.5 * 9.0 + 0.0)
    assert wpl.penalty(["a"]).item() == pytest.approx(expected_a)
    assert wpl.penalty(["a", "b"]).item() == pytest.approx(expected_a + expected_b)
    assert wpl.penalty(["b", "b"]).item() == pytest.approx(2 * expected_b)


def test_optimal_weights_copy_all_and_do_not_alias():
    model, wpl = make()
    with torch.no_grad():
        model.a.add_(1.0)
        model.b.mul_(2.0)
    wpl.update_optimal()
    assert torch.equal(wpl.optimal("a"), model.a) and torch.equal(wpl.optimal("b"), model.b)
    with torch.no_grad():
        model.a.add_(5.0)
    assert not torch.equal(wpl.optimal("a"), model.a)
    wpl.fisher("a").fill_(1.0)
    wpl.reset_fisher()
    assert torch.count_nonzero(wpl.fisher("a")) == 0
    assert "_wpl_fisher__a" not in model.state_dict()  # non-persistent, as in the original


def test_rnn_controller_structure():
    torch.manual_seed(0)
    n = 6
    ctrl = RNNController(n, ["tanh", "ReLU", "identity", "sigmoid"], hid=8)
    assert ctrl.num_decisions == 2 * n - 1 and len(ctrl.decoders) == 2 * n + 1
    assert ctrl.encoder.num_embeddings == 4 + sum(range(1, n + 1)) + 4 * n
    dags, log_probs, entropies = ctrl.sample(5, with_details=True)
    assert log_probs.shape == (5 * (2 * n - 1),) and entropies.shape == log_probs.shape
    assert torch.all(log_probs <= 0) and torch.all(entropies >= 0)
    for dag in dags:
        assert dag[-1] == dag[-2] and dag[-1][0].id == 0
        assert dag[n - 1] == [Node(n, "avg")]  # the last node is always a leaf
        assert dag[n] == [Node(n + 1, "h[t]")]
        for parent, children in dag.items():
            for child in children:
                if 0 <= parent and child.id < n:
                    assert parent < child.id
        edges = rnn_edges_bfs(dag, n)
        assert len(edges) == n - 1
        keys = dag_to_keys(dag, n)
        assert keys == [k for p, c in edges for k in (f"{p}-{c}-h", f"{p}-{c}-c")]
        geno = dag_to_genotype(dag, n)
        assert len(geno["recurrent"]) == n and n in geno["concat"]


def test_cnn_controller_structure():
    torch.manual_seed(1)
    b = 5
    ops = ["identity", "avg3x3", "max3x3", "depthwise_3x3", "depthwise_5x5"]
    ctrl = CNNMicroController(b, ops, ops, hid=8)
    assert ctrl.num_decisions == 8 * b and ctrl.encoder.num_embeddings == 180
    archs, log_probs, _ = ctrl.sample(3, with_details=True)
    assert log_probs.shape == (3 * 8 * b,)
    for arch in archs:
        for cell in (arch.normal_cell, arch.reduced_cell):
            assert cell == sorted(cell) and len(cell) == 2 * b
            assert sorted({t for _, t, _ in cell}) == list(range(2, b + 2))
            assert all(s < t for s, t, _ in cell)
            assert cell_keys(cell) == [f"{s}-{t}-{o}" for s, t, o in cell]


def test_rnn_dag_keys_hand_case():
    dag = build_rnn_dag(["tanh", "relu", "tanh", "sigmoid"], [0, 0, 1], 4)
    assert dag_to_keys(dag, 4) == ["0-1-h", "0-1-c", "0-2-h", "0-2-c", "1-3-h", "1-3-c"]
    assert dag[2] == [Node(4, "avg")] and dag[3] == [Node(4, "avg")]


def test_rnn_cell_equations_by_hand():
    torch.manual_seed(0)
    model = SharedRNN(5, 2, 2, 2, tie_weights=True, dropout=0, dropoute=0, dropouti=0, wdrop=0)
    model.eval()
    dag = build_rnn_dag(["tanh", "relu"], [0], 2)
    x = torch.tensor([[1, 3]])  # T=1, B=2
    h_prev = torch.tensor([[0.2, -0.1], [0.0, 0.3]])
    logits, hidden, extra = model(x, dag, hidden=h_prev, is_train=False)
    e = model.encoder.weight[x[0]]
    c0 = torch.sigmoid(e @ model.w_xc.weight.T + model.w_xc.bias + h_prev @ model.w_hc_raw.T)
    h0 = c0 * torch.tanh(e @ model.w_xh.weight.T + model.w_xh.bias + h_prev @ model.w_hh_raw.T) + (1 - c0) * h_prev
    c1 = torch.sigmoid(h0 @ model.edges["0-1-c"].weight.T)
    h1 = c1 * torch.relu(h0 @ model.edges["0-1-h"].weight.T) + (1 - c1) * h0
    bn = model.batch_norm
    out = (h1 - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
    assert torch.allclose(hidden, h1, atol=1e-6)
    assert torch.allclose(extra["raw"][0], out, atol=1e-6)
    assert torch.allclose(logits[0], out @ model.encoder.weight.T + model.decoder.bias, atol=1e-5)


def test_cnn_cell_output_is_mean_of_last_node_inputs():
    cell = MicroCell(1, ["identity", "avg3x3"], (4, 4), (1, 1), 4, reduction=False)
    s0, s1 = torch.randn(2, 4, 6, 6), torch.randn(2, 4, 6, 6)
    out = cell(s0, s1, [(0, 2, "identity"), (1, 2, "identity")])
    assert torch.allclose(out, (s0 + s1) / 2)
    out = cell(s0, s1, [(1, 2, "identity"), (1, 2, "identity")])
    assert torch.allclose(out, s1)


def test_gif_frame_stride():
    assert frame_paths(["c.png", "a.png", "b.png"], 50) == ["a.png", "b.png", "c.png"]
    many = [f"{i:03d}.png" for i in range(120)]
    assert len(frame_paths(many, 50)) == 60


def test_discount_reverse_cumsum():
    assert np.allclose(discount(np.array([1.0, 2.0, 3.0]), 0.5), [1 + 0.5 * 2 + 0.25 * 3, 2 + 1.5, 3.0])


def test_evaluate_normalisation(workdir, rnn_tiny, cnn_tiny):
    """Per-token perplexity (legacy reported ≈1) and per-sample accuracy (legacy divided by batches-1)."""
    from dataclasses import replace

    from wpl_enas.cli import parse_args
    from wpl_enas.data import TextData, load_cifar10
    from wpl_enas.train_cnn import CNNTrainer
    from wpl_enas.train_rnn import RNNTrainer

    args, _ = parse_args(rnn_tiny + ["--test_batch_size=3", "--use_tensorboard=False"])
    args = replace(args, model_dir=str(workdir))
    data = TextData(workdir / "data" / "ptb", args.batch_size, args.test_batch_size, torch.device("cpu"))
    tr = RNNTrainer(args, data, torch.device("cpu"))

    class Uniform(nn.Module):
        def forward(self, inputs, dag, hidden=None, is_train=True):
            return torch.zeros(*inputs.shape, data.num_tokens), hidden, {}

        def init_hidden(self, b):
            return torch.zeros(b, 1)

    tr.shared = Uniform()
    out = tr.evaluate(data.eval, None, "eval/val")
    assert out["eval/val_ppl"] == pytest.approx(data.num_tokens, rel=1e-5)

    args, _ = parse_args(["--dataset=cifar10", "--network_type=micro_cnn", "--use_tensorboard=False"] + cnn_tiny
                         + ["--test_batch_size=6"])
    args = replace(args, model_dir=str(workdir))
    images = load_cifar10(workdir / "data", 4, 6, torch.device("cpu"), 0)
    tr = CNNTrainer(args, images, torch.device("cpu"))
    labels = images.test.labels

    class FirstHalfRight(nn.Module):
        def forward(self, x, arch):
            start = FirstHalfRight.seen
            FirstHalfRight.seen += len(x)
            y = labels[start:start + len(x)]
            right = torch.arange(start, start + len(x)) < len(labels) // 2
            pred = torch.where(right, y, (y + 1) % 10)
            return nn.functional.one_hot(pred, 10).float() * 10

    FirstHalfRight.seen = 0
    tr.shared = FirstHalfRight()
    out = tr.evaluate(images.test, None, "eval/val")
    assert out["eval/val_top_1_acc"] == pytest.approx(0.5)
