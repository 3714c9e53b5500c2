"""Numerical unit tests against hand-computed cases (no training)."""

from __future__ import annotations

import math

import pytest
import torch
from lure import unlearn
from lure.metrics import calibration_metrics, expected_calibration_error
from lure.models import CIFAR100_MEAN, build_model
from lure.replay import ReplayPlan, chunk_ids, split_sizes
from lure.synthetic import SyntheticSource
from lure.train import epoch_lr
from lure.unlearn import snip_batches_used
from torch import nn


def test_chunk_indices_readme_config():
    mt, mv = split_sizes(6250)
    assert (mt, mv) == (5625, 625)
    train_all, val_all = [], []
    for k in range(1, 9):
        t, v = chunk_ids(k, 6250, 45000)
        assert len(t) == 5625 and len(v) == 625
        train_all += t
        val_all += v
    assert train_all == list(range(45000)) and val_all == list(range(45000, 50000))
    assert split_sizes(5000) == (4500, 500)


def test_replay_plans_exact_lists():
    full = ReplayPlan("full", 40, 45000)
    assert [full.state(k) for k in (1, 2, 3)][2] == (list(range(108)), list(range(45000, 45012)))
    no = ReplayPlan("no", 40, 45000)
    no.state(1)
    assert no.state(2) == (list(range(36, 72)), list(range(45004, 45008)))
    one = ReplayPlan("one", 40, 45000)
    assert one.state(1) == (list(range(36)), list(range(45000, 45004)))
    one.state(2)
    assert one.state(3) == (list(range(36, 108)), list(range(45004, 45012)))
    buf = ReplayPlan("buffer", 40, 45000, buffer_size_train=8, buffer_size_val=2, seed=3)
    t1, v1 = buf.state(1)
    assert (len(t1), len(v1), len(buf.buffer_train), len(buf.buffer_val)) == (36, 4, 8, 2)
    assert set(buf.buffer_train) <= set(t1)
    t2, v2 = buf.state(2)
    assert t2[:36] == list(range(36, 72)) and t2[36:] == buf.buffer_train[:8]
    assert (len(t2), len(v2), len(buf.buffer_train)) == (44, 6, 16)
    t3, _ = buf.state(3)
    assert len(t3) == 52


def test_lr_schedule_multistep_and_reset():
    # README LURE setting: 50 epochs, milestones 20,40, gamma 0.1.
    lrs = [epoch_lr(0.1, e, [20, 40], 0.1) for e in range(50)]
    assert lrs[0] == lrs[19] == 0.1
    assert math.isclose(lrs[20], 0.01) and math.isclose(lrs[39], 0.01)
    assert math.isclose(lrs[40], 0.001) and math.isclose(lrs[49], 0.001)
    assert epoch_lr(0.1, 30, [20, 40], 1.0) == 0.1  # ALMA: never decays
    assert math.isclose(epoch_lr(1.0, 5, [3, 3], 0.5), 0.25)  # a repeated milestone counts twice


def test_snip_batches_as_original():
    assert snip_batches_used(128, None) == 1
    assert snip_batches_used(1250, None) == 1
    assert snip_batches_used(3300, None) == 2  # 33 batches -> ceil(33/32)
    assert snip_batches_used(128, 5) == 2  # clamped to what exists


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(2, 2)
        self.fc2 = nn.Linear(2, 1)


def test_snip_threshold_semantics_with_ties_at_zero():
    sal = {
        "fc1.weight": torch.tensor([[0.0, 0.0], [3.0, 1.0]]),
        "fc1.bias": torch.tensor([0.0, 5.0]),
        "fc2.weight": torch.tensor([[2.0, 4.0]]),
        "fc2.bias": torch.tensor([6.0]),
    }  # N = 9; three exact zeros
    t, k = unlearn.snip_threshold(sal, 0.2)
    assert k == 1 and t == 0.0  # int(0.2 * 9) = 1: the 1st smallest is 0
    masks, t = unlearn.snip_mask(sal, 0.2)
    assert unlearn.forgotten_fraction(masks) == pytest.approx(3 / 9)  # all ties at 0 go
    masks, t = unlearn.snip_mask(sal, 0.5)  # k = 4 -> t = 1.0
    assert t == 1.0
    assert masks["fc1.weight"].tolist() == [[False, False], [True, False]]
    assert masks["fc1.bias"].tolist() == [False, True]
    assert unlearn.forgotten_fraction(masks) == pytest.approx(4 / 9)
    masks, _ = unlearn.snip_mask(sal, 0.0)
    assert unlearn.forgotten_fraction(masks) == 0.0


def test_snip_saliency_is_abs_grad_times_weight():
    torch.manual_seed(0)
    model = Toy()
    x, y = torch.randn(4, 2), torch.tensor([0, 1, 0, 1])

    class Wrap(nn.Module):
        def __init__(self, toy):
            super().__init__()
            self.toy = toy

        def forward(self, z):
            h = torch.relu(self.toy.fc1(z))
            return torch.cat([self.toy.fc2(h), -self.toy.fc2(h)], 1)

    wrapped = Wrap(model)
    sal = unlearn.snip_saliency(wrapped, [(x, y), (x, y)])
    loss = nn.functional.cross_entropy(wrapped(x), y)
    grads = torch.autograd.grad(loss, list(wrapped.parameters()))
    for (name, p), g in zip(wrapped.named_parameters(), grads):
        assert torch.allclose(sal[name], (2 * g.abs() * p.detach()).abs(), atol=1e-7), name


def test_reinit_only_masked_weights_biases_untouched():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    masks = {n: torch.rand(p.shape) > 0.5 for n, p in model.named_parameters()}
    touched = unlearn.reinit_masked(model, masks, generator=torch.Generator().manual_seed(0))
    assert sorted(touched) == ["0.weight", "1.weight", "3.weight"]
    for name, p in model.named_parameters():
        changed = p.detach() != before[name]
        if "bias" in name:
            assert not changed.any(), name
        else:
            assert torch.equal(changed, ~masks[name]), name
    # BN gamma fresh values are U(-1, 1)
    gamma = model[1].weight.detach()[~masks["1.weight"]]
    assert (gamma.abs() <= 1).all()


def test_fresh_init_bounds():
    t = unlearn.fresh_(torch.empty(10000), torch.Generator().manual_seed(0))
    assert t.min() >= -1 and t.max() <= 1 and t.min() < -0.99 and t.max() > 0.99
    w = unlearn.fresh_(torch.empty(8, 16, 3, 3), torch.Generator().manual_seed(0))
    bound = 1 / math.sqrt(16 * 9)
    assert w.abs().max() <= bound + 1e-7 and w.abs().max() > 0.9 * bound


# The original's LLF (LURE_main.py, ll_reinitialize): every parameter whose name contains "weight"
# but neither "bn" nor "downsample", except nine exact ResNet-18 names. Written out by hand here.
LLF_RESNET18 = [
    "layer3.0.conv1.weight", "layer3.0.conv2.weight", "layer3.1.conv1.weight", "layer3.1.conv2.weight",
    "layer4.0.conv1.weight", "layer4.0.conv2.weight", "layer4.1.conv1.weight", "layer4.1.conv2.weight",
    "fc.weight",
]
# resnet20s has three blocks per stage: the original's list does not name layer1.2 / layer2.2, so they reset.
LLF_RESNET20S = [
    "layer1.2.conv1.weight", "layer1.2.conv2.weight",
    "layer2.2.conv1.weight", "layer2.2.conv2.weight",
    "layer3.0.conv1.weight", "layer3.0.conv2.weight", "layer3.1.conv1.weight", "layer3.1.conv2.weight",
    "layer3.2.conv1.weight", "layer3.2.conv2.weight",
    "fc.weight",
]


def _llf_changed(arch: str, **kw) -> list[str]:
    torch.manual_seed(0)
    model = build_model(arch, 10)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    names = unlearn.llf_reset(model, generator=torch.Generator().manual_seed(0), **kw)
    changed = [n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])]
    assert changed == names
    return changed


def test_llf_resets_the_originals_tensors_resnet18():
    assert _llf_changed("resnet18") == LLF_RESNET18


def test_llf_resets_the_originals_tensors_resnet20s():
    changed = _llf_changed("resnet20s")
    assert changed == LLF_RESNET20S and len(changed) == 11


@pytest.mark.parametrize("arch,total,by_stage", [
    # 2*(3+4+6+3) block convs + stem + fc = 34 for resnet34, minus the 9 kept names; by stage: layer3/4 + fc.
    ("resnet34", 34 - 9, 2 * (6 + 3) + 1),
    # resnet50: 3 convs per bottleneck, 16 blocks, + stem + fc = 50; the kept names cover only conv1/conv2
    # of layer1.0/1.1 and layer2.0/2.1 (8) and the stem; by stage: 3 * (6 + 3) + fc.
    ("resnet50", 50 - 9, 3 * (6 + 3) + 1),
    # resnet56s: 9 blocks per stage, 2 convs each: 54 + stem + fc = 56, minus 9; by stage: layer3 + fc.
    ("resnet56s", 56 - 9, 2 * 9 + 1),
    ("resnet20s", 20 - 9, 2 * 3 + 1),
])
def test_llf_counts_and_the_by_stage_extension(arch, total, by_stage):
    assert len(_llf_changed(arch)) == total
    assert len(_llf_changed(arch, by_stage=True)) == by_stage


def test_llf_by_stage_matches_the_original_on_resnet18_only():
    assert _llf_changed("resnet18", by_stage=True) == LLF_RESNET18
    assert _llf_changed("resnet20s", by_stage=True) == [n for n in LLF_RESNET20S if not n.startswith(("layer1", "layer2"))]


def test_fc_reset_original_name_is_noop_with_warning():
    model = build_model("resnet20s", 10)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with pytest.warns(UserWarning, match="matched no parameter"):
        assert unlearn.fc_reset(model, "linear") == []
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert unlearn.fc_reset(model, "fc") == ["fc.weight", "fc.bias"]
    assert not torch.equal(model.fc.weight, before["fc.weight"])


def test_shrink_perturb():
    model = build_model("resnet20s", 10)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    unlearn.shrink_perturb(model, 0.3, 0.001, generator=torch.Generator().manual_seed(0))
    for n, p in model.named_parameters():
        fan_in = 1 if p.dim() == 1 else p[0].numel()
        bound = math.sqrt(1.0 / fan_in)
        assert (p.detach() - 0.3 * before[n]).abs().max() <= 0.001 * bound + 1e-7, n


def test_ece_hand_computed():
    probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    labels = torch.tensor([0, 1, 1, 0])
    # 15 bins: 0.9 -> bin 13, 0.8 -> bin 11, 0.7 -> bin 10, 0.6 -> bin 8; each bin one example.
    expected = (abs(1 - 0.9) + abs(0 - 0.8) + abs(1 - 0.7) + abs(1 - 0.6)) / 4
    assert expected_calibration_error(probs, labels) == pytest.approx(expected)
    m = calibration_metrics(torch.log(probs), labels)
    assert m["errors"] == 1 and m["acc"] == 75.0
    assert m["nll"] == pytest.approx(-(math.log(0.9) + math.log(0.2) + math.log(0.7) + math.log(0.6)) / 4)


def test_synthetic_source_is_a_pure_function_of_the_index():
    src = SyntheticSource(50000, 10, (3, 8, 8))
    a, la = src.fetch(torch.tensor([3, 45000, 49999]))
    b, lb = src.fetch(torch.tensor([49999, 3]))
    assert torch.equal(a[0], b[1]) and torch.equal(a[2], b[0]) and la[0] == lb[1]
    assert a.min() >= 0 and a.max() <= 1
    with pytest.raises(IndexError):
        src.fetch(torch.tensor([50000]))


def test_cifar100_statistics_inside_model():
    model = build_model("resnet20s", 100, mean=CIFAR100_MEAN)
    assert model.fc.out_features == 100
    assert torch.allclose(model.normalize.mean.flatten(), torch.tensor(CIFAR100_MEAN))


def test_corruptions_hand_checked():
    from lure.robustness import SEVERITIES, corrupt

    x = torch.tensor([[[[0.2, 0.6]], [[0.1, 0.3]], [[0.0, 0.0]]]])  # [1, 3, 1, 2]
    c = corrupt(x, "contrast", 2)  # c = 0.5 around the per-channel mean
    assert torch.allclose(c[0, 0, 0], torch.tensor([0.3, 0.5])) and torch.allclose(c[0, 2], x[0, 2])
    b = corrupt(x, "brightness", 1)  # V = max over channels: 0.2 -> 0.25, 0.6 -> 0.65, hue/saturation kept
    assert torch.allclose(b[0, :, 0, 0], x[0, :, 0, 0] * 0.25 / 0.2)
    assert torch.allclose(b[0, :, 0, 1], x[0, :, 0, 1] * 0.65 / 0.6)
    black = corrupt(torch.zeros(1, 3, 2, 2), "brightness", 5)
    assert torch.allclose(black, torch.full((1, 3, 2, 2), 0.3))
    big = torch.full((1, 1, 100, 100), 0.5)
    imp = corrupt(big, "impulse_noise", 5, torch.Generator().manual_seed(0))
    frac = float(((imp == 0) | (imp == 1)).float().mean())
    assert abs(frac - 0.07) < 0.015
    g = corrupt(big, "gaussian_noise", 1, torch.Generator().manual_seed(0))
    assert abs(float((g - 0.5).std()) - 0.04) < 0.004
    s = corrupt(big, "shot_noise", 1, torch.Generator().manual_seed(0))
    assert abs(float(s.mean()) - 0.5) < 0.01 and float(s.std()) > 0
    assert set(SEVERITIES) == {"gaussian_noise", "shot_noise", "impulse_noise", "contrast", "brightness"}


def test_config_is_parsed_once_frozen_and_keeps_each_scripts_original_names():
    import dataclasses

    from lure.cli import parse_args

    lure_cfg = parse_args(["--save_dir", "S", "--decreasing_lr", "20,40"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        lure_cfg.lr = 1.0
    assert lure_cfg.milestones == [20, 40] and lure_cfg.prog == "LURE_main.py"
    names = list(lure_cfg.original())
    # LURE_main.py's own flags only, in its parser's order (weight_pruning sits between use_randinit and use_llf)
    assert "tickets_mask" not in names and "alma_gamma" not in names and "alma" not in names
    assert names.index("use_randinit") + 1 == names.index("weight_pruning") == names.index("use_llf") - 1
    alma = parse_args(["--save_dir", "S", "--alma_gamma", "0.5", "--workers", "3"], alma=True)
    names = list(alma.original())
    assert "weight_pruning" not in names and names.index("sparsity_level") + 1 == names.index("tickets_mask")
    # what ALMA.py fixes comes last, as the original's configuration listed it
    assert names[-16:] == ["gamma", "use_snip", "use_randinit", "use_llf", "use_fc", "use_shrink_perturb",
                           "snip_on_new_chunk", "snip_train_mode", "snip_skip_norm", "no_epoch_test", "llf_by_stage",
                           "shrink", "perturb", "fc_layer_name", "snip_examples", "snip_batches"]
    assert (alma.gamma, alma.no_epoch_test, alma.use_snip, alma.workers) == (0.5, True, False, 3)
