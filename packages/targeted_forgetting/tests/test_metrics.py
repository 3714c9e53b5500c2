"""Per-group metrics and margin groups against hand-computed cases."""

from __future__ import annotations

import math

import torch
from targeted_forgetting.metrics import KEYS, group_stats, margin_groups, probe_record, stdout_line


def test_group_stats_hand_computed():
    # rows: predicted 0, 1, 1, 0 ; labels 0, 1, 0, 1 → correct 1, 1, 0, 0
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.0, 3.0], [1.0, 1.0 - math.log(3.0)]])
    labels = torch.tensor([0, 1, 0, 1])
    groups = torch.tensor([0, 0, 1, 1])
    s = group_stats(logits, labels, groups)
    assert s["overall_acc"] == 50.0
    assert s["true_acc"] == 100.0 and s["rand_acc"] == 0.0
    # row 3: p = (3/4, 1/4), label 1 → CE = ln 4 ; row 2: CE = ln(1 + e^3)
    ce = [math.log(1 + math.exp(-2)), math.log(1 + math.exp(-1)), math.log(1 + math.exp(3)), math.log(4)]
    assert math.isclose(s["true_loss"], (ce[0] + ce[1]) / 2, rel_tol=1e-5)
    assert math.isclose(s["rand_loss"], (ce[2] + ce[3]) / 2, rel_tol=1e-5)
    assert math.isclose(s["loss"], sum(ce) / 4, rel_tol=1e-5)
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    p = 1 / (1 + math.exp(-3))
    h2 = -(p * math.log(p) + (1 - p) * math.log(1 - p))
    assert math.isclose(s["rand_entropy"], (h + h2) / 2, rel_tol=1e-5)


def test_empty_group_is_nan_and_underflow_nan_stays_in_its_group():
    logits = torch.tensor([[0.0, 1.0], [0.0, 200.0]])  # row 1: p0 underflows to 0 → entropy NaN
    labels = torch.tensor([1, 1])
    s = group_stats(logits, labels, torch.tensor([0, 0]))
    assert math.isnan(s["rand_acc"]) and math.isnan(s["rand_loss"]) and math.isnan(s["rand_entropy"])
    assert s["true_acc"] == 100.0 and math.isnan(s["true_entropy"])
    s = group_stats(logits, labels, torch.tensor([0, 1]))
    assert math.isfinite(s["true_entropy"]) and math.isnan(s["rand_entropy"])


def test_margin_groups_pick_the_smallest_top1_minus_top2():
    logits = torch.zeros(20, 3)
    logits[:, 0] = torch.arange(20, dtype=torch.float32) / 2  # margin grows with the row index
    logits[7, 0] = -5.0  # top-2 are then the two zeros: margin 0
    groups = margin_groups(logits)
    assert groups.tolist().count(1) == 2  # int(20 * 0.1)
    assert groups[7] == 1 and groups[0] == 1


def test_record_has_the_original_17_keys_and_line():
    stats = {"overall_acc": 50.0, "loss": 1.23456, "true_acc": 100.0, "rand_acc": float("nan"),
             "true_loss": 0.1, "rand_loss": 0.2, "true_entropy": 0.3, "rand_entropy": 0.4}
    record = probe_record(100, 0.5, stats, stats)
    assert tuple(record) == KEYS and len(KEYS) == 17
    line = stdout_line(record)
    assert line.startswith("Iteration 100 Train loss 0.5 True Label Accuracy 100.0 Random Label Accuracy nan")
    assert "Copy Train loss 1.2346" in line and line.endswith("Copy Overall Accuracy 50.0%")
