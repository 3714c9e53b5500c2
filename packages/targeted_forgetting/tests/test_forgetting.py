"""The forgetting operation on a copy: counts, values and the original's per-layer rules."""

from __future__ import annotations

import pytest
import torch
from forgetting_common.errors import UserError
from forgetting_common.masks import snapshot
from targeted_forgetting.forgetting import (
    ForgetConfig,
    check_keep_leaves_entries,
    eligible_names,
    forget_copy,
    initial_masks,
    keep_rate_for,
    reinit_modules,
)
from targeted_forgetting.models import build_model


def trained_pair(arch="lenet", data="mnist", seed=0):
    torch.manual_seed(seed)
    live, clone = build_model(arch, data), build_model(arch, data)
    init = snapshot(live)
    with torch.no_grad():  # "training": move every weight away from its initial value
        for p in live.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return live, clone, init


def test_keep_rates_follow_the_per_layer_rules():
    assert keep_rate_for("lenet", "fc1.weight", 0.5) == 0.5
    assert keep_rate_for("lenet", "fc2.weight", 0.5) == 0.5
    assert keep_rate_for("lenet", "fc3.weight", 0.5) == 0.75
    assert keep_rate_for("resnet18", "blocks.3.shortcut.0.weight", 0.3) == 0.3
    assert keep_rate_for("resnet18", "fc.weight", 0.3) == pytest.approx(0.65)
    assert keep_rate_for("conv4", "fc2.weight", 0.5) == 0.5  # conv4 is the other way round
    assert keep_rate_for("conv4", "trunk.0.conv.weight", 0.5) == 0.75


def test_eligible_tensors_exclude_bias_bn_and_shortcut_bn():
    assert eligible_names(build_model("lenet")) == ["fc1.weight", "fc2.weight", "fc3.weight"]
    names = eligible_names(build_model("resnet18", "cifar10"))
    assert "conv.weight" in names and "fc.weight" in names and "blocks.3.shortcut.0.weight" in names
    assert not any("bn" in n or "bias" in n or "shortcut.1" in n for n in names)
    conv4 = eligible_names(build_model("conv4", "cifar10"))
    assert conv4[:3] == ["fc1.weight", "fc2.weight", "fc3.weight"] and "trunk.0.conv.weight" in conv4


def test_imp_style_copy_is_rewound_init_times_magnitude_mask_of_trained_weights():
    """C2 on LeNet: exactly 164 640 / 21 000 / 350 entries zeroed; the rest are initial values."""
    live, clone, init = trained_pair()
    before = snapshot(live)
    cfg = ForgetConfig("lenet", 0.3, weight_mask=True, reset_to_zero=True, rewind_to_init=True)
    masks = forget_copy(live, clone, cfg, init_weights=init, generator=torch.Generator().manual_seed(0))
    expected_forgotten = {"fc1.weight": 164640, "fc2.weight": 21000, "fc3.weight": 350}
    params = dict(clone.named_parameters())
    for name, count in expected_forgotten.items():
        assert int((~masks[name]).sum()) == count
        # the mask keeps the largest |trained| weights
        trained = before[name].abs()
        assert trained[masks[name]].min() >= trained[~masks[name]].max()
        assert torch.equal(params[name], torch.where(masks[name], init[name], torch.zeros_like(init[name])))
    for bias in ("fc1.bias", "fc2.bias", "fc3.bias"):
        assert torch.equal(params[bias], init[bias])
    for name, value in before.items():  # the live model is untouched
        assert torch.equal(dict(live.named_parameters())[name], value)


def test_ke_style_copy_keeps_trained_entries_and_redraws_the_rest_and_all_biases():
    live, clone, _ = trained_pair()
    before = snapshot(live)
    cfg = ForgetConfig("lenet", 0.5)
    masks = forget_copy(live, clone, cfg, generator=torch.Generator().manual_seed(1))
    params = dict(clone.named_parameters())
    assert 0.47 < masks["fc1.weight"].float().mean() < 0.53
    assert 0.70 < masks["fc3.weight"].float().mean() < 0.80
    for name in ("fc1.weight", "fc2.weight", "fc3.weight"):
        m = masks[name]
        assert torch.equal(params[name][m], before[name][m])
        assert (params[name][~m] != before[name][~m]).float().mean() > 0.99
        # fresh values come from the default (Kaiming-uniform, a=sqrt(5)) range 1/sqrt(fan_in)
        bound = 1 / params[name].shape[1] ** 0.5
        assert params[name][~m].abs().max() <= bound + 1e-6
    for bias in ("fc1.bias", "fc2.bias", "fc3.bias"):
        assert (params[bias] != before[bias]).all()
    for name, value in before.items():
        assert torch.equal(dict(live.named_parameters())[name], value)


def test_same_mask_masks_come_from_initial_weights_and_repeat():
    torch.manual_seed(0)
    model = build_model("lenet")
    cfg = ForgetConfig("lenet", 0.5, weight_mask=True, same_mask=True)
    masks = initial_masks(model, cfg, None)
    assert set(masks) == {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "fc3.weight", "fc3.bias"}
    assert int((~masks["fc3.weight"]).sum()) == 500  # uniform rate, no half-rate rule
    cfg.fixed_masks = masks
    live, clone, _ = trained_pair()
    used1 = forget_copy(live, clone, cfg, generator=torch.Generator().manual_seed(0))
    used2 = forget_copy(live, clone, cfg, generator=torch.Generator().manual_seed(5))
    for name in used1:
        assert torch.equal(used1[name], masks[name]) and torch.equal(used2[name], masks[name])


@pytest.mark.parametrize("arch", ["conv4", "resnet18"])
def test_top_level_reinit_leaves_inner_convs_untouched_but_all_scope_does_not(arch):
    live, clone, _ = trained_pair(arch, "cifar10")
    inner = "trunk.0.conv.weight" if arch == "conv4" else "blocks.0.conv1.weight"
    top = "fc1.weight" if arch == "conv4" else "fc.weight"
    live_p = dict(live.named_parameters())
    cfg = ForgetConfig(arch, 0.5)
    forget_copy(live, clone, cfg, generator=torch.Generator().manual_seed(0))
    clone_p = dict(clone.named_parameters())
    assert torch.equal(clone_p[inner], live_p[inner])  # the original's bug, reproduced by default
    assert not torch.equal(clone_p[top], live_p[top])
    cfg.reinit_scope = "all"
    forget_copy(live, clone, cfg, generator=torch.Generator().manual_seed(0))
    clone_p = dict(clone.named_parameters())
    changed = (clone_p[inner] != live_p[inner]).float().mean()
    expected = 0.25 if arch == "conv4" else 0.5  # conv4 convs keep 75 %, resnet convs 50 %
    assert abs(changed - expected) < 0.05
    names = [n for n, _ in reinit_modules(clone, "all")]
    assert not any("bn" in n or "shortcut.1" in n for n in names)


def test_keep_fraction_that_empties_a_tensor_is_refused():
    model = build_model("lenet")
    with pytest.raises(UserError, match="keeps no entry of fc1.weight"):
        check_keep_leaves_entries(model, "lenet", 0.0, same_mask=False)
    with pytest.raises(UserError, match="keeps no entry"):
        check_keep_leaves_entries(model, "lenet", 0.0, same_mask=True)
    check_keep_leaves_entries(model, "lenet", 1e-5, same_mask=False)  # one entry is enough


# Issue 12: the original forgot int(n * prune_rate) entries, with prune_rate written as 1 - k
# (full-rate layers) or (1 - k) / 2 (half-rate layers), in floating point. Hand-computed:
#   keep 0.9:  1 - 0.9 = 0.09999999999999998 -> fc1 235200 * it = 23519.99... -> 23519;
#              (1 - 0.9) / 2 = 0.04999999999999999 -> fc3 1000 * it = 49.99... -> 49
#              (1 - (0.9 + 0.05)) would give 0.050000000000000044 -> 50, one too many);
#   keep 0.55: 0.44999999999999996 -> 105839 / 13499; half 0.22499999999999998 -> 224 of 1000;
#   keep 0.8:  0.19999999999999996 -> 47039 / 5999; half 0.09999999999999998 -> 99 of 1000;
#   keep 0.2:  half 0.4 -> 400 of 1000 (1 - (0.2 + 0.4) = 0.3999999999999999 would give 399);
#   keep 0.6:  half 0.2 -> 200 of 1000 (the other way gives 199).
@pytest.mark.parametrize("keep,counts", [
    (0.9, {"fc1.weight": 23519, "fc2.weight": 2999, "fc3.weight": 49}),
    (0.55, {"fc1.weight": 105839, "fc2.weight": 13499, "fc3.weight": 224}),
    (0.8, {"fc1.weight": 47039, "fc2.weight": 5999, "fc3.weight": 99}),
    (0.2, {"fc1.weight": 188160, "fc2.weight": 24000, "fc3.weight": 400}),
    (0.6, {"fc1.weight": 94080, "fc2.weight": 12000, "fc3.weight": 200}),
])
def test_imp_style_counts_follow_the_originals_float_arithmetic(keep, counts):
    live, clone, init = trained_pair()
    cfg = ForgetConfig("lenet", keep, weight_mask=True, reset_to_zero=True, rewind_to_init=True)
    masks = forget_copy(live, clone, cfg, init_weights=init)
    assert {name: int((~m).sum()) for name, m in masks.items()} == counts
    params = dict(clone.named_parameters())
    assert {name: int((params[name] == 0).sum()) for name in counts} == counts


@pytest.mark.parametrize("arch,name,numel,forgotten", [
    ("resnet18", "fc.weight", 640, 31),            # half rate: int(640 * 0.04999999999999999)
    ("resnet18", "conv.weight", 432, 43),          # full rate: int(432 * 0.09999999999999998) = int(43.19...)
    ("conv4", "trunk.0.conv.weight", 1728, 86),    # conv4's convs are the half-rate layers
    ("conv4", "fc3.weight", 2560, 255),            # int(255.99...)
])
def test_half_and_full_rate_counts_on_the_cifar_architectures(arch, name, numel, forgotten):
    live, clone, init = trained_pair(arch, "cifar10")
    cfg = ForgetConfig(arch, 0.9, weight_mask=True, reset_to_zero=True)
    masks = forget_copy(live, clone, cfg)
    assert masks[name].numel() == numel and int((~masks[name]).sum()) == forgotten


def test_same_mask_magnitude_counts_use_one_minus_keep_for_every_tensor():
    """--same_mask --weight_mask: int(n * (1 - k)) everywhere, biases included, no half rate."""
    live = build_model("lenet")
    cfg = ForgetConfig("lenet", 0.9, weight_mask=True, same_mask=True)
    masks = initial_masks(live, cfg, None)
    forgotten = {name: int((~m).sum()) for name, m in masks.items()}
    assert forgotten == {"fc1.weight": 23519, "fc1.bias": 29, "fc2.weight": 2999, "fc2.bias": 9,
                         "fc3.weight": 99, "fc3.bias": 0}
