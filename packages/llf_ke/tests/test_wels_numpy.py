"""WELS masks come from NumPy's global stream, as in the original (issue 12, item 2).

The original's split layers draw ``np.random.rand(*weight.shape)`` inside their constructor
(after nn.Conv2d/nn.Linear drew their default init from torch, before the builder's
kaiming-normal draw) and keep the entries with ``u >= 1 - split_rate``. NumPy is seeded once
(``--fix_seed``: ``np.random.seed(seed)`` at start) and never re-seeded per generation, so
``--reset_hypothesis`` re-draws continue that stream.
"""

from __future__ import annotations

import numpy as np
import torch
from llf_ke import forgetting
from llf_ke.models import Builder, build_model

# Split_ResNet18's split layers in the order the original *constructs* them: in each
# _make_layer the downsample conv is built before the first block's convs.
CONSTRUCTION_ORDER = [("conv1", (64, 3, 7, 7))]
for _layer, (_planes, _inp) in enumerate([(64, 64), (128, 64), (256, 128), (512, 256)], start=1):
    if _layer > 1:
        CONSTRUCTION_ORDER.append((f"layer{_layer}.0.downsample.0", (_planes, _inp, 1, 1)))
    CONSTRUCTION_ORDER += [(f"layer{_layer}.0.conv1", (_planes, _inp, 3, 3)),
                           (f"layer{_layer}.0.conv2", (_planes, _planes, 3, 3)),
                           (f"layer{_layer}.1.conv1", (_planes, _planes, 3, 3)),
                           (f"layer{_layer}.1.conv2", (_planes, _planes, 3, 3))]
CONSTRUCTION_ORDER.append(("fc", (10, 512)))


def _hand_masks(seed: int, rate: float, order) -> dict[str, np.ndarray]:
    np.random.seed(seed)
    return {name: np.random.uniform(size=shape) >= 1 - rate for name, shape in order}


def _masks(model) -> dict[str, np.ndarray]:
    return {name: m.mask.numpy().astype(bool) for name, m in model.named_modules() if hasattr(m, "mask")}


def test_kels_and_wels_give_identical_initial_weights():
    torch.manual_seed(0)
    np.random.seed(11)
    kels = build_model("Split_ResNet18", 10, Builder(split_mode="kels", split_rate=0.8))
    torch.manual_seed(0)
    np.random.seed(12)  # the NumPy state must not matter to the weights either
    wels = build_model("Split_ResNet18", 10, Builder(split_mode="wels", split_rate=0.8))
    a, b = kels.state_dict(), wels.state_dict()
    weights = [k for k in a if not k.endswith("mask")]
    assert len(weights) == 122
    for key in weights:
        assert torch.equal(a[key], b[key]), key
    assert not torch.equal(a["layer4.1.conv2.mask"], b["layer4.1.conv2.mask"])


def test_wels_masks_equal_a_hand_built_numpy_draw():
    np.random.seed(7)
    torch.manual_seed(123)
    model = build_model("Split_ResNet18", 10, Builder(split_mode="wels", split_rate=0.8))
    expected = _hand_masks(7, 0.8, CONSTRUCTION_ORDER)
    got = _masks(model)
    assert list(got) != [n for n, _ in CONSTRUCTION_ORDER]  # registration order differs from the draw order
    assert set(got) == set(expected)
    for name, mask in expected.items():
        assert np.array_equal(got[name], mask), name
    # the threshold is 1 - rate in float64, kept where u >= threshold (0.8 keeps ~80 %)
    assert 0.79 < float(np.mean(got["layer3.0.conv2"])) < 0.81


def test_reset_hypothesis_redraws_continue_the_numpy_stream():
    """--fix_seed --reset_hypothesis: NumPy seeded once; generation g's masks are the next draws
    in *registration* order (split_reinitialize walks named_modules), never re-seeded."""
    np.random.seed(3)
    model = build_model("Split_ResNet18", 10, Builder(split_mode="wels", split_rate=0.5))
    forgetting.split_reinitialize(model, split_rate=0.5, reset_hypothesis=True,
                                  generator=torch.Generator().manual_seed(3))
    gen1 = _masks(model)
    forgetting.split_reinitialize(model, split_rate=0.5, reset_hypothesis=True,
                                  generator=torch.Generator().manual_seed(3))
    gen2 = _masks(model)

    np.random.seed(3)
    shapes = dict(CONSTRUCTION_ORDER)
    for _name, shape in CONSTRUCTION_ORDER:  # the construction draws
        np.random.uniform(size=shape)
    registration = list(gen1)
    for gen in (gen1, gen2):
        for name in registration:
            assert np.array_equal(gen[name], np.random.uniform(size=shapes[name]) >= 0.5), name
    assert not np.array_equal(gen1["fc"], gen2["fc"])


def test_fix_seed_run_draws_masks_as_the_original(script, tmp_path):
    """A real run: --seed 3 --fix_seed seeds NumPy once; generation 0's WELS masks are the
    construction draws and generation 1's --reset_hypothesis masks the next ones."""
    from llf_ke.fake import write_fake_folder_set

    write_fake_folder_set(tmp_path / "data", "Folder", 4, {"train": 3, "val": 2, "test": 2}, size=12)
    script.main(["--epochs", "1", "--num_generations", "2", "--name", "wels", "--set", "Folder",
                 "--data", str(tmp_path / "data"), "--no_wandb", "--device", "cpu", "--image_size", "16", "-t", "0",
                 "--checkpoints_dir", str(tmp_path / "ckpt"), "--quiet", "--save_model", "--seed", "3", "--fix_seed",
                 "--reset_hypothesis", "--split_rate", "0.5"])
    order = [*CONSTRUCTION_ORDER[:-1], ("fc", (4, 512))]
    shapes = dict(order)
    np.random.seed(3)
    gen0 = {name: np.random.uniform(size=shape) >= 0.5 for name, shape in order}
    states = {g: torch.load(next(tmp_path.glob(f"ckpt/*/*/gen_{g}/*/*/checkpoints/init_model.state")),
                            weights_only=True)["state_dict"] for g in (0, 1)}
    registration = [k[:-5] for k in states[1] if k.endswith(".mask")]
    gen1 = {name: np.random.uniform(size=shapes[name]) >= 0.5 for name in registration}
    for g, expected in ((0, gen0), (1, gen1)):
        for name, mask in expected.items():
            assert np.array_equal(states[g][f"{name}.mask"].numpy().astype(bool), mask), (g, name)
