"""forgetting_common.trackers: each tracker against a hand-computed case, forgetting against
example_forgetting's counting, checkpoints, the compact file, and training left unchanged."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from forgetting_common.errors import UserError
from forgetting_common.trackers import (
    COMPACT_FILE,
    TRACKER_NAMES,
    build_trackers,
    effective_rank,
    load_forgetting_counts,
    parse_track,
    read_npz,
)
from torch import nn

RIGHT, WRONG = torch.tensor([2.0, 0.0]), torch.tensor([0.0, 2.0])  # target 0: correct / wrong


def _logits(correct: torch.Tensor) -> torch.Tensor:
    """Two-class logits that are right (target 0) where ``correct``."""
    return torch.where(correct.view(-1, 1).bool(), RIGHT, WRONG)


def _present(trackers, history: np.ndarray, batch: int, seed: int = 0) -> None:
    """Feed an ``[N, E]`` 0/1 history, each epoch in a shuffled order and in batches."""
    n, epochs = history.shape
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        order = torch.randperm(n, generator=gen)
        for idx in order.split(batch):
            acc = torch.from_numpy(history[idx.numpy(), epoch])
            trackers.on_batch(idx, _logits(acc), torch.zeros(len(idx), dtype=torch.int64))
        trackers.end_epoch(epoch)


# --------------------------------------------------------------------------- names
def test_track_names_parse_in_canonical_order_and_unknown_names_list_them():
    assert parse_track("plasticity,forgetting,forgetting") == ("forgetting", "plasticity")
    with pytest.raises(UserError) as err:
        parse_track("forgetting,dead_unit")
    message = str(err.value)
    assert "'dead_unit'" in message and ",".join(TRACKER_NAMES) in message and "\n" not in message
    assert not build_trackers(None) and not build_trackers("")


# --------------------------------------------------------------------------- forgetting
def test_forgetting_hand_computed():
    # example 0: 1 0 1 (one event, learned at 0); 1: 0 1 1 (learned at 1); 2: never learned
    history = np.array([[1, 0, 1], [0, 1, 1], [0, 0, 0]])
    tracker = build_trackers("forgetting", n_examples=3)
    n, epochs = history.shape
    scalars = []
    for epoch in range(epochs):
        for i in (2, 0, 1):  # one example per batch, in a different order than the ids
            idx = torch.tensor([i])
            tracker.on_batch(idx, _logits(torch.tensor([history[i, epoch]])), torch.zeros(1, dtype=torch.int64))
        scalars.append(tracker.end_epoch(epoch))
    assert [s["forgetting_events"] for s in scalars] == [0, 1, 0]
    assert [s["learned_fraction"] for s in scalars] == pytest.approx([1 / 3, 2 / 3, 2 / 3])
    assert [s["unforgettable_fraction"] for s in scalars] == pytest.approx([1 / 3, 1 / 3, 1 / 3])
    arrays = tracker.get("forgetting").arrays()
    assert arrays["events"].tolist() == [1, 0, 0]
    assert arrays["first_learned"].tolist() == [0, 1, -1]
    assert arrays["learned"].tolist() == [True, True, False]
    assert arrays["presentations"].tolist() == [3, 3, 3] and int(arrays["epochs"]) == 3


def test_forgetting_reproduces_example_forgetting_counting(tmp_path):
    counting = pytest.importorskip("example_forgetting.counting")
    rng = np.random.default_rng(3)
    n, epochs = 57, 11
    history = (rng.random((n, epochs)) < 0.6).astype(np.int64)
    history[:4] = 0  # a few never learned
    history[4, :-1], history[4, -1] = 0, 1  # learned at the very last presentation: unforgettable
    ids = rng.permutation(1000)[:n]
    trackers = build_trackers("forgetting", n_examples=n, ids=ids)
    _present(trackers, history, batch=8)
    trackers.save_compact(tmp_path / COMPACT_FILE)
    got = load_forgetting_counts(tmp_path / COMPACT_FILE, epochs=epochs)

    stats = {int(i): [[0.0] * epochs, history[k].tolist(), [0.0] * epochs] for k, i in enumerate(ids)}
    stats["train"], stats["test"] = [[], []], [[], []]
    want = counting.run_forgetting(stats, epochs)
    assert np.array_equal(got.ids, want.ids)
    assert np.array_equal(got.events, want.events)
    assert np.array_equal(got.learned, want.learned)
    assert np.array_equal(got.first_learned, want.first_learned, equal_nan=True)
    run = counting.RunForgetting(got.ids, got.events, got.learned, got.first_learned, source="tracked")
    assert run.as_mapping(epochs) == want.as_mapping(epochs)  # never learned -> the --epochs penalty
    assert counting.order_examples([run], epochs).unforgettable == counting.order_examples([want], epochs).unforgettable
    assert int(got.learned.sum()) == n - 4


def test_forgetting_counts_refuse_a_cut_they_cannot_make(tmp_path):
    trackers = build_trackers("forgetting", n_examples=4)
    _present(trackers, np.ones((4, 5), dtype=np.int64), batch=2)
    trackers.save_compact(tmp_path / "t.npz")
    with pytest.raises(UserError, match=r"counted up to 5 presentations.*pass --epochs 5 or more"):
        load_forgetting_counts(tmp_path / "t.npz", epochs=4)
    margin_only = build_trackers("margin", n_examples=4)
    margin_only.save_compact(tmp_path / "m.npz")
    with pytest.raises(UserError, match="--track forgetting"):
        load_forgetting_counts(tmp_path / "m.npz")


def test_compact_file_refuses_pickles(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, **{"forgetting.ids": np.array([object()], dtype=object)})
    with pytest.raises(UserError, match="not a readable .npz file of plain arrays"):
        read_npz(path)
    with pytest.raises(UserError, match="does not exist"):
        read_npz(tmp_path / "absent.npz")


# --------------------------------------------------------------------------- margin
def test_margin_hand_computed():
    tracker = build_trackers("margin", n_examples=3)
    tracker.on_batch(torch.tensor([0, 1]), torch.tensor([[2.0, 1.0, 0.5], [0.0, 3.0, 1.0]]), torch.tensor([0, 0]))
    tracker.on_batch(torch.tensor([0]), torch.tensor([[0.0, 0.25, 0.0]]), torch.tensor([0]))  # replaces 1.0
    tracker.on_eval(torch.tensor([[1.0, 0.0], [0.0, 0.5]]), torch.tensor([0, 0]))
    values = tracker.end_epoch(0)
    assert values["margin_mean"] == pytest.approx((-0.25 - 3.0) / 2)
    assert values["margin_median"] == pytest.approx(-3.0)  # the lower middle of two
    assert values["misclassified_fraction"] == 1.0
    assert values["eval_margin_mean"] == pytest.approx((1.0 - 0.5) / 2)
    assert values["eval_misclassified_fraction"] == 0.5
    last = tracker.get("margin").arrays()["last"]
    assert last[:2].tolist() == [-0.25, -3.0] and math.isnan(last[2])
    tracker.on_batch(torch.tensor([2]), torch.tensor([[1.0, 0.0]]), torch.tensor([0]))
    assert tracker.end_epoch(1) == {"margin_mean": 1.0, "margin_median": 1.0, "misclassified_fraction": 0.0}


# --------------------------------------------------------------------------- dead units
def _two_layer() -> nn.Sequential:
    net = nn.Sequential(nn.Linear(2, 3, bias=False), nn.ReLU(), nn.Linear(3, 2))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]))
    return net


def test_dead_units_hand_computed_fc():
    net = _two_layer()
    tracker = build_trackers("dead_units", model=net)
    x = torch.tensor([[1.0, 2.0], [2.0, 0.0]])  # hidden: [1, 2, 0] and [2, 0, 0]; the input's 0 is no unit
    tracker.on_batch(torch.tensor([0, 1]), net(x), torch.tensor([0, 1]))
    net(torch.tensor([[-1.0, -1.0]]))  # an evaluation pass: not counted
    tracker.on_eval(torch.zeros(1, 2), torch.tensor([0]))
    assert tracker.end_epoch(0) == pytest.approx({"dead_units": (1 / 3 + 2 / 3) / 2, "dead_units_epoch": 1 / 3})
    tracker.on_batch(torch.tensor([0]), net(torch.tensor([[-1.0, -1.0]])), torch.tensor([0]))  # hidden [0, 0, 2]
    assert tracker.end_epoch(1) == pytest.approx({"dead_units": 2 / 3, "dead_units_epoch": 2 / 3})


def test_dead_units_count_channels_of_conv_maps():
    net = nn.Sequential(nn.Conv2d(1, 2, 1, bias=False), nn.ReLU(), nn.Conv2d(2, 1, 1))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
    tracker = build_trackers("dead_units", model=net)
    x = torch.ones(2, 1, 2, 2)
    x[1, 0, 1, 1] = -1.0  # example 1 turns the second channel on at one position
    tracker.on_batch(torch.tensor([0, 1]), net(x).flatten(1), torch.tensor([0, 0]))
    assert tracker.end_epoch(0) == pytest.approx({"dead_units": (1 / 2 + 0) / 2, "dead_units_epoch": 0.0})


def test_dead_units_without_a_forward_pass_is_an_error():
    tracker = build_trackers("dead_units", model=_two_layer())
    with pytest.raises(RuntimeError, match="without a forward pass"):
        tracker.on_batch(torch.tensor([0]), torch.zeros(1, 2), torch.tensor([0]))
    with pytest.raises(UserError, match="Linear or Conv"):
        build_trackers("dead_units", model=nn.Sequential(nn.ReLU()))


# --------------------------------------------------------------------------- weights
def test_weight_rank_and_effective_rank_hand_computed():
    net = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 3, bias=False), nn.BatchNorm1d(3))
    conv = nn.Conv2d(1, 1, 2, bias=False)
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 0.0]]))  # rank 1 of 2
        net[1].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))  # rank 2 of 2
        conv.weight.copy_(torch.eye(2).view(1, 1, 2, 2))  # one 2x2 slice of rank 2
    model = nn.ModuleDict({"net": net, "conv": conv})
    trackers = build_trackers("weight_rank,effective_rank", model=model)
    values = trackers.end_epoch(0)
    assert values["weight_rank"] == pytest.approx((1 + 2 + 2) / (2 + 2 + 2))  # the BN scale is no matrix
    # effective ranks: [[1,0],[0,0]] -> 1; [[1,0],[0,1],[1,1]] has σ = √3, 1 -> exp(H(p)); conv [1, 4] -> 1
    s = np.array([math.sqrt(3), 1.0])
    p = s / s.sum()
    middle = math.exp(-(p * np.log(p)).sum())
    assert values["effective_rank"] == pytest.approx((1 + middle + 1) / (2 + 2 + 1))
    assert effective_rank(torch.diag(torch.tensor([1.0, 1.0, 2.0]))) == pytest.approx(2 * math.sqrt(2))
    assert effective_rank(torch.zeros(2, 3)) == 0.0


def test_init_distance_hand_computed_and_carried_by_the_checkpoint():
    net = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[3.0, 4.0]]))
    tracker = build_trackers("init_distance", model=net)
    with torch.no_grad():
        net.weight.zero_()
    assert tracker.end_epoch(0) == pytest.approx({"init_distance": 5.0, "init_distance_relative": 1.0})
    state = _through_torch_save(tracker.state_dict())
    other = nn.Linear(2, 1, bias=False)  # a resumed run rebuilds the network from other weights
    with torch.no_grad():
        other.weight.copy_(torch.tensor([[3.0, 0.0]]))
    resumed = build_trackers("init_distance", model=other)
    resumed.load_state_dict(state)
    assert resumed.end_epoch(1)["init_distance"] == pytest.approx(4.0)
    assert resumed.get("init_distance").history["init_distance"] == pytest.approx([5.0, 4.0])


# --------------------------------------------------------------------------- plasticity
def test_plasticity_hand_computed():
    net = nn.Linear(1, 2, bias=False)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[math.log(3.0)], [0.0]]))  # after the step: CE = ln(4/3)
    tracker = build_trackers("plasticity", model=net)
    x, y = torch.ones(1, 1), torch.tensor([0])
    tracker.on_batch(torch.tensor([0]), torch.zeros(1, 2), y, model=net, inputs=x)  # before: CE = ln 2
    tracker.on_batch(torch.tensor([0]), torch.tensor([[5.0, 0.0]]), y, model=net, inputs=x)  # worse after: 0
    expected = 1 - math.log(4 / 3) / math.log(2)
    assert tracker.end_epoch(0)["plasticity"] == pytest.approx((expected + 0.0) / 2)
    with pytest.raises(ValueError, match="inputs"):
        tracker.on_batch(torch.tensor([0]), torch.zeros(1, 2), y, model=net)


def test_plasticity_pass_leaves_rng_buffers_and_dead_unit_hooks_alone():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Dropout(0.5), nn.Linear(4, 2))
    trackers = build_trackers("dead_units,plasticity", model=net)
    seen = []
    net[4].register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
    x, y = torch.randn(5, 3), torch.randint(0, 2, (5,))
    logits = net(x)
    buffers = [b.clone() for b in net.buffers()]
    rng = torch.get_rng_state()
    trackers.on_batch(torch.arange(5), logits, y, model=net, inputs=x)
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(a, b) for a, b in zip(buffers, net.buffers(), strict=True))
    assert len(seen) == 2  # the training pass and plasticity's: the units are the training pass's
    zeros = (seen[0] == 0).float().mean(dim=1).mean()  # ReLU and dropout zeros alike
    assert not torch.equal(seen[0] == 0, seen[1] == 0)  # (the second pass drew other dropout masks)
    assert trackers.end_epoch(0)["dead_units"] == pytest.approx(float(zeros))


# --------------------------------------------------------------------------- ece
def test_ece_hand_computed_and_as_lure_computes_it():
    ln9, ln15 = math.log(9.0), math.log(1.5)
    logits = torch.tensor([[ln9, 0.0], [ln15, 0.0], [0.0, ln9]])  # confidences 0.9, 0.6, 0.9
    targets = torch.tensor([0, 1, 1])  # right, wrong, right
    tracker = build_trackers("ece")
    tracker.on_eval(logits[:2], targets[:2])
    tracker.on_eval(logits[2:], targets[2:])  # an evaluation in two batches: the ECE of all three
    tracker.on_batch(torch.tensor([0]), logits[1:2], targets[1:2])
    values = tracker.end_epoch(0)
    assert values["ece"] == pytest.approx(2 / 3 * (1 - 0.9) + 1 / 3 * 0.6)
    assert values["train_ece"] == pytest.approx(0.6)
    assert tracker.end_epoch(1) == {}  # nothing seen, nothing reported
    lure_metrics = pytest.importorskip("lure.metrics")
    gen = torch.Generator().manual_seed(1)
    logits, targets = torch.randn(500, 10, generator=gen) * 3, torch.randint(0, 10, (500,), generator=gen)
    tracker.on_eval(logits, targets)
    want = lure_metrics.expected_calibration_error(torch.softmax(logits, 1), targets)
    assert tracker.end_epoch(2)["ece"] == pytest.approx(want, rel=1e-12)


# --------------------------------------------------------------------------- checkpoints, compact file, training
def _through_torch_save(state):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def _tiny_training(track: str | None, steps: int = 12, stop_at: int | None = None, state=None):
    """A tiny MLP trained on fixed data; returns (model, trackers, per-epoch values)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.3), nn.Linear(8, 3))
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(24, 4, generator=gen), torch.randint(0, 3, (24,), generator=gen)
    trackers = build_trackers(track, n_examples=24, model=net)
    start, values = 0, []
    if state is not None:
        net.load_state_dict(state["net"])
        opt.load_state_dict(state["opt"])
        torch.set_rng_state(state["rng"])
        trackers.load_state_dict(state["trackers"])
        start, values = state["step"], list(state["values"])
    for step in range(start, steps):
        if step == stop_at:
            return net, trackers, {"net": net.state_dict(), "opt": opt.state_dict(), "rng": torch.get_rng_state(),
                                   "trackers": trackers.state_dict(), "step": step, "values": values}
        idx = torch.arange(24).view(3, 8)[step % 3]
        out = net(x[idx])
        loss = torch.nn.functional.cross_entropy(out, y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        trackers.on_batch(idx, out.detach(), y[idx], model=net, inputs=x[idx])
        if step % 3 == 2:
            net.eval()
            with torch.no_grad():
                trackers.on_eval(net(x), y, model=net)
            net.train()
            values.append(trackers.end_epoch(step // 3))
    return net, trackers, values


ALL = ",".join(TRACKER_NAMES)


def test_tracking_never_changes_what_is_trained():
    plain, _, _ = _tiny_training(None)
    tracked, _, values = _tiny_training(ALL)
    for a, b in zip(plain.state_dict().values(), tracked.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert len(values) == 4 and {"forgetting_events", "dead_units", "plasticity", "ece", "weight_rank",
                                 "effective_rank", "init_distance", "margin_mean"} <= set(values[0])


def test_checkpoint_resume_equals_uninterrupted_and_compact_file_is_reproducible(tmp_path):
    _, whole, values = _tiny_training(ALL)
    _, _, state = _tiny_training(ALL, stop_at=7)  # mid-epoch
    _, resumed, resumed_values = _tiny_training(ALL, state=_through_torch_save(state))
    assert resumed_values == values
    whole.save_compact(tmp_path / "a.npz")
    resumed.save_compact(tmp_path / "b.npz")
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    arrays = read_npz(tmp_path / "a.npz")
    assert arrays["dead_units.history.dead_units"].shape == (4,)
    assert arrays["forgetting.presentations"].tolist() == [4] * 24
    reread = build_trackers(ALL, n_examples=24, model=nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)))
    reread.load_compact(tmp_path / "a.npz")
    assert reread.get("plasticity").history == whole.get("plasticity").history
    assert np.array_equal(reread.get("forgetting").arrays()["events"], whole.get("forgetting").arrays()["events"])


def test_dead_units_equal_upgds_on_its_network_at_batch_size_one():
    upgd_models = pytest.importorskip("upgd.models")
    torch.manual_seed(0)
    net = upgd_models.build_network("fully_connected_relu_with_hooks", 784, 10)
    tracker = build_trackers("dead_units", model=net)
    theirs = []
    for i in range(6):
        x = torch.randn(1, 784) * (1 + i)
        out = net(x)
        theirs.append(float(net.dead_fraction()))  # zero ReLU outputs / n_units of this pass
        tracker.on_batch(torch.tensor([i]), out, torch.tensor([0]))
    assert net.n_units == 450 and 0 < min(theirs)
    assert tracker.end_epoch(0)["dead_units"] == pytest.approx(sum(theirs) / len(theirs), rel=1e-6)  # upgd divides in float32
