"""Numerical and formatting unit tests against hand-computed cases (no training)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from llf_ke import forgetting
from llf_ke.cli import DERIVED, build_parser, parse_args
from llf_ke.epoch import make_criterion, topk_correct
from llf_ke.layers import SplitConv, SplitLinear, kels_mask, split_modules
from llf_ke.models import Builder, build_model
from llf_ke.optim import ValDependentLR, build_optimizer, lr_at
from llf_ke.outputs import CSV_HEADER, csv_row


@pytest.fixture(scope="module")
def resnet18():
    torch.manual_seed(0)
    return build_model("Split_ResNet18", 102, Builder())


# ----------------------------------------------------------------- learning rate
@pytest.mark.parametrize("epoch,expected", [(0, 0.0512), (1, 0.1024), (2, 0.1536), (3, 0.2048), (4, 0.256),
                                            (5, 0.256), (50, 0.2238), (100, 0.1331), (150, 0.0393), (199, 1.7e-5)])
def test_cosine_lr_200(epoch, expected):
    got = lr_at("cosine_lr", epoch, base=0.256, warmup=5, epochs=200)
    assert got == pytest.approx(expected, abs=1e-4 if expected > 1e-3 else 1e-6)


@pytest.mark.parametrize("epoch,expected", [(199, 0.2511), (399, 0.2362), (1099, 0.1286), (2199, 0.0)])
def test_cosine_lr_2200(epoch, expected):
    assert lr_at("cosine_lr", epoch, base=0.256, warmup=5, epochs=2200) == pytest.approx(expected, abs=1e-4)


def test_other_policies():
    assert lr_at("constant_lr", 2, base=1.0, warmup=5, epochs=10) == pytest.approx(0.6)
    assert lr_at("constant_lr", 7, base=1.0, warmup=5, epochs=10) == 1.0
    # fixed step_lr: /10 on [80,120), /100 from 120, with several generations
    assert lr_at("step_lr", 100, base=1.0, warmup=0, epochs=160, num_generations=3) == pytest.approx(0.1)
    assert lr_at("step_lr", 130, base=1.0, warmup=0, epochs=160, num_generations=3) == pytest.approx(0.01)
    assert lr_at("multistep_lr", 65, base=1.0, warmup=0, epochs=100, multistep_adjust=30,
                 multistep_gamma=0.1) == pytest.approx(0.01)
    # long cosine: one cosine over all generations, warm-up repeated
    assert lr_at("long_cosine_lr", 0, base=1.0, warmup=5, epochs=10, generation=1, num_generations=2) == 0.2
    assert lr_at("long_cosine_lr", 9, base=1.0, warmup=5, epochs=10, generation=1,
                 num_generations=2) == pytest.approx(0.5 * (1 + math.cos(math.pi * 14 / 15)))
    sched = ValDependentLR(1.0)
    sched.update(50.0)
    for _ in range(19):
        assert sched.update(40.0) == 1.0
    assert sched.update(40.0) == 0.5


# ----------------------------------------------------------------- loss and accuracy
def _original_smoothing_loss(logits, target, eps):
    """The original's LabelSmoothing, written out: (1-eps)·NLL + eps·mean_k(-log p_k), batch mean."""
    logp = F.log_softmax(logits, dim=-1)
    nll = -logp.gather(1, target[:, None]).squeeze(1)
    return ((1 - eps) * nll - eps * logp.mean(dim=-1)).mean()


def test_label_smoothing_is_the_originals():
    """PyTorch's label-smoothing cross-entropy (the training criterion) equals the original's loss."""
    logits = torch.tensor([[math.log(2.0), 0.0, 0.0]])  # p = (1/2, 1/4, 1/4)
    target = torch.tensor([0])
    eps = 0.1
    expected = (1 - eps) * math.log(2) + eps * (math.log(2) + 2 * math.log(4)) / 3
    assert make_criterion(eps)(logits, target).item() == pytest.approx(expected, rel=1e-6)
    assert make_criterion(0.0)(logits, target).item() == pytest.approx(math.log(2), rel=1e-6)
    x = torch.randn(7, 11, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 11, (7,), generator=torch.Generator().manual_seed(2))
    assert make_criterion(0.1)(x, y).item() == pytest.approx(_original_smoothing_loss(x, y, 0.1).item(), rel=1e-6)


def test_topk_caps_at_class_count():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1]])
    c1, c5 = topk_correct(logits, torch.tensor([1, 2]))
    assert (int(c1), int(c5)) == (1, 2)


# ----------------------------------------------------------------- names and csv
def test_run_names():
    s1 = parse_args("--epochs 200 --num_generations 11 --name resetlayer4_flower_resnet18 --weight_decay 0.0001 "
                    "--arch Split_ResNet18 --reset_layer_name layer4 --set Flower102 --data x --no_wandb".split())
    assert s1.name == ("SPLT_CLS_Flower102_Split_ResNet18_cskdFalse_smth0.1_k0.5_G11_e200_evrand_hResetFalse"
                       "_smwels_resetlayer4_flower_resnet18_seedNone/")
    s2 = parse_args("--epochs 200 --num_generations 11 --name ke --split_rate 0.8 --split_mode kels".split())
    assert "_k0.8_" in s2.name and "_smkels_" in s2.name
    s6 = parse_args("--name n --seed 0 --fix_seed --num_generations 1 --epochs 2200".split())
    assert s6.name.endswith("_n_seed0/") and "_G1_e2200_" in s6.name
    assert s6.bias_split_rate == s6.split_rate and s6.num_cls == 102 and s6.eval_tst


def test_config_is_frozen_and_holds_every_flag():
    """One frozen Config: every parser destination plus the derived fields, under the original names."""
    import dataclasses

    cfg = parse_args("--name n --cs_kd --bias_split_rate 0.3".split())
    dests = {a.dest for a in build_parser()._actions if a.dest != "help"}
    assert set(cfg.as_dict()) == dests | set(DERIVED)
    assert (cfg.user_name, cfg.group_name, cfg.trainer) == ("n", "n", "default_cls")
    assert cfg.label_smoothing == 0.0 and cfg.samples_per_class == 2 and cfg.bias_split_rate == 0.5  # as the original
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.epochs = 3
    assert cfg.with_classes(4).num_cls == 4 and cfg.num_cls == 102


def test_csv_row_format():
    row = csv_row("run/", 0.5, 0.5, {"curr_val_top1": 12.345, "best_trn_top5": 100}, when=0)
    fields = row.split(", ")
    assert len(fields) == 14 == len(CSV_HEADER.split(", "))
    assert fields[1:5] == ["run/", "0.5", "0.5", "12.35"] and fields[-1] == "100.00" and fields[6] == "0.00"
    assert len(fields[0]) == len("01-01-70_00:00:00")


# ----------------------------------------------------------------- masks, LLF walk, reinit, freezing
def test_parameter_counts(resnet18):
    weights = sum(m.weight.numel() for _, m in split_modules(resnet18))
    trainable = sum(p.numel() for p in resnet18.parameters() if p.requires_grad)
    assert weights == 11_219_136 and trainable == 11_228_838
    names = [n for n, _ in resnet18.named_parameters()]
    assert names[:4] == ["conv1.weight", "conv1.mask", "bn1.weight", "bn1.bias"]
    assert names[-3:] == ["fc.weight", "fc.bias", "fc.mask"]


def test_llf_masks_and_walk():
    model = build_model("Split_ResNet18", 102, Builder())
    percent = forgetting.apply_llf_masks(model, "layer4")
    assert percent == pytest.approx(75.236, abs=5e-4)
    for name, module in split_modules(model):
        assert bool((module.mask == 0).all()) == (name.startswith("layer4") or name == "fc"), name
        assert bool((module.mask == 1).all()) != (name.startswith("layer4") or name == "fc"), name
    flags = forgetting.reset_flags(model, "layer4", reverse=True)
    assert flags["conv1.weight"] and flags["layer3.1.bn2.bias"] and not flags["layer4.0.conv1.weight"]
    assert not flags["fc.weight"]
    assert forgetting.reset_flags(model, "layer3.1")["layer3.1.conv1.weight"]
    assert not forgetting.reset_flags(model, "layer3.1")["layer3.0.conv2.weight"]


def test_kels_masks():
    model = build_model("Split_ResNet18", 102, Builder(split_mode="kels", split_rate=0.8))
    mods = dict(split_modules(model))
    assert mods["conv1"].mask[:52].all() and not mods["conv1"].mask[52:].any()
    m = mods["layer1.0.conv1"].mask
    assert m[:52, :52].all() and m.sum() == 52 * 52 * 9
    m = mods["layer4.0.conv1"].mask
    assert m[:410, :205].all() and m.sum() == 410 * 205 * 9
    assert mods["layer3.0.conv2"].mask.sum() == 205 * 205 * 9
    assert mods["layer2.1.conv1"].mask.sum() == 103 * 103 * 9
    fc = mods["fc"].mask
    assert fc[:, :410].all() and not fc[:, 410:].any()
    zeros = sum(int((mm.mask == 0).sum()) for mm in mods.values())
    total = sum(mm.mask.numel() for mm in mods.values())
    assert total - zeros == 7_211_836
    assert 100 * zeros / total == pytest.approx(35.72, abs=0.005)
    assert kels_mask((4, 8), 0.5).sum() == 2 * 4  # other linear: top-left block


def test_wels_mask_rate():
    torch.manual_seed(0)
    layer = SplitConv(64, 64, 3, split_mode="wels", split_rate=0.8)
    assert float(layer.mask.mean()) == pytest.approx(0.8, abs=0.01)
    with pytest.raises(ValueError):
        SplitLinear(3, 3, split_mode="kels", split_rate=0.5).redraw_mask()


def test_reinit_llf_bounds_and_untouched(resnet18):
    model = build_model("Split_ResNet18", 102, Builder())
    forgetting.apply_llf_masks(model, "layer4")
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.weight.uniform_(0.5, 1.5)
                mod.running_mean.normal_()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(3)
    forgetting.split_reinitialize(model)
    after = model.state_dict()
    for key, old in before.items():
        changed = not torch.equal(old, after[key])
        reset = (key.startswith("layer4") and "conv" in key or "downsample.0" in key and key.startswith("layer4")
                 or key == "fc.weight") and key.endswith("weight")
        assert changed == reset, key
        if reset:
            fan_in = after[key][0].numel()
            bound = 1 / math.sqrt(fan_in)
            assert after[key].abs().max() <= bound + 1e-7
            assert after[key].abs().max() > 0.9 * bound  # a uniform draw fills its range
            assert after[key].std() == pytest.approx(bound / math.sqrt(3), rel=0.05)


def test_reinit_zero_mode_and_kels_keeps():
    model = build_model("Split_ResNet18", 10, Builder(split_mode="kels", split_rate=0.8))
    before = {n: m.weight.detach().clone() for n, m in split_modules(model)}
    forgetting.split_reinitialize(model, evolve_mode="zero", split_rate=0.8)
    for n, m in split_modules(model):
        keep = m.mask.bool()
        assert torch.equal(m.weight[keep], before[n][keep]) and (m.weight[~keep] == 0).all()
    with pytest.raises(Exception, match="split rate"):
        forgetting.split_reinitialize(model, split_rate=1.0)


def test_fixed_generator_gives_same_reset_values():
    a = build_model("Split_ResNet18", 10, Builder())
    forgetting.apply_llf_masks(a, "layer4")
    forgetting.split_reinitialize(a, generator=torch.Generator().manual_seed(0))
    first = a.layer4[1].conv2.weight.detach().clone()
    forgetting.split_reinitialize(a, generator=torch.Generator().manual_seed(0))
    assert torch.equal(first, a.layer4[1].conv2.weight)
    forgetting.split_reinitialize(a, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(first, a.layer4[1].conv2.weight)


def test_freeze_sets_and_sgd_temp():
    model = build_model("Split_ResNet18", 102, Builder())
    forgetting.freeze(model, "layer4", reverse_freeze=False)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert all(n.startswith(("layer4", "fc")) for n in trainable)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 8_446_054
    opt = build_optimizer("sgd_TEMP", model, lr=0.1, momentum=0.9, weight_decay=1e-4)
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == 8_446_054
    model = build_model("Split_ResNet18", 102, Builder())
    forgetting.freeze(model, "layer4", reverse_freeze=True)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad and "mask" not in n}
    assert frozen == {n for n, _ in model.named_parameters() if n.startswith("layer4") and "mask" not in n}
    with pytest.raises(Exception, match="matches no parameter"):
        forgetting.freeze(model, "layer9")


def test_reset_bn():
    model = build_model("Split_ResNet18", 10, Builder())
    with torch.no_grad():
        model.layer1[0].bn1.running_var.fill_(3.0)
        model.layer2[0].downsample[1].weight.fill_(2.0)
    forgetting.reset_batchnorm(model)
    assert (model.layer1[0].bn1.running_var == 0).all() and (model.layer2[0].downsample[1].weight == 1).all()


@pytest.mark.parametrize("arch", ["Split_ResNet18Norm", "Split_ResNet34", "Split_ResNet50"])
def test_other_architectures_forward(arch):
    model = build_model(arch, 7, Builder(split_mode="kels", split_rate=0.8))
    model.eval()
    size = 32
    with torch.no_grad():
        out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, 7)
    forgetting.split_reinitialize(model, split_rate=0.8)


def test_split_layers_compute_the_dense_function():
    conv = SplitConv(3, 4, 3, padding=1, bias=False, split_mode="kels", split_rate=0.5)
    x = torch.randn(1, 3, 5, 5)
    assert torch.allclose(conv(x), F.conv2d(x, conv.weight, padding=1))


def test_pretrained_checkpoint_loads_matching_tensors(tmp_path):
    from llf_ke.checkpoint import load_matching, pretrained_state

    source = build_model("Split_ResNet18", 10, Builder())
    torch.save({"state_dict": source.state_dict()}, tmp_path / "ckpt.pth")
    target = build_model("Split_ResNet18", 102, Builder())  # other class count: fc is skipped
    # 122 weights/buffers + 21 masks; all but fc.weight, fc.bias and fc.mask fit
    assert load_matching(target, pretrained_state(str(tmp_path / "ckpt.pth"), "Split_ResNet18")) == (140, 143)
    assert torch.equal(target.layer3[1].conv2.weight, source.layer3[1].conv2.weight)
    assert target.fc.weight.shape == (102, 512)
    with pytest.raises(Exception, match="no such checkpoint"):
        pretrained_state(str(tmp_path / "missing.pth"), "Split_ResNet18")
    with pytest.raises(Exception, match="only the ResNets"):
        pretrained_state("imagenet", "vgg11")


def test_kd_loss_and_pair_sampler(tmp_path):
    from llf_ke.data import PairBatchSampler, load_splits
    from llf_ke.epoch import kd_loss
    from llf_ke.fake import write_fake_folder_set

    s = torch.tensor([[0.0, 0.0]])
    t = torch.tensor([[4.0 * math.log(3.0), 0.0]])  # softmax(t/4) = (3/4, 1/4)
    expected = 16 * (0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5))
    assert kd_loss(s, t, 4.0).item() == pytest.approx(expected, rel=1e-6)
    assert kd_loss(t, t, 4.0).item() == pytest.approx(0.0, abs=1e-6)
    write_fake_folder_set(tmp_path, "Folder", 3, {"train": 3, "val": 1, "test": 1}, size=8)
    train = load_splits(tmp_path, "Folder", 0, image_size=8).train
    batches = list(PairBatchSampler(train, 4))
    assert sorted(i for b in batches for i in b[: len(b) // 2]) == list(range(9))
    for b in batches:
        half = len(b) // 2
        for a, p in zip(b[:half], b[half:]):
            assert train.targets[a] == train.targets[p] and a != p


def test_cs_kd_run(tmp_path, script):
    from llf_ke.fake import write_fake_folder_set

    write_fake_folder_set(tmp_path / "data", "Folder", 3, {"train": 4, "val": 1, "test": 1}, size=16)
    script.main(["--epochs", "1", "--num_generations", "2", "--name", "cskd", "--cs_kd", "--split_rate", "0.8",
                 "--split_mode", "kels", "--set", "Folder", "--data", str(tmp_path / "data"), "--no_wandb",
                 "--device", "cpu", "--image_size", "16", "-t", "0", "-b", "8", "--checkpoints_dir",
                 str(tmp_path / "ckpt"), "--quiet", "--init_seed", "0"])
    exp = next((tmp_path / "ckpt").glob("*/*"))
    assert "_cskdTrue_smth0.0_" in exp.name
    assert len(next(exp.glob("*.csv")).read_text().splitlines()) == 3


def test_pretrained_reinit_uses_the_built_masks_before_llf(script, tmp_path):
    """As the original: --pretrained loads (masks included), split-reinitialises with those masks
    (here KELS 0.5), and only then --reset_layer_name rewrites the masks."""
    from llf_ke.fake import write_fake_folder_set

    write_fake_folder_set(tmp_path / "data", "Folder", 4, {"train": 3, "val": 2, "test": 2}, size=12)
    source = build_model("Split_ResNet18", 4, Builder(split_mode="kels", split_rate=0.5))
    torch.save({"state_dict": source.state_dict()}, tmp_path / "pre.pth")
    script.main(["--epochs", "1", "--num_generations", "1", "--name", "pre", "--set", "Folder",
                 "--data", str(tmp_path / "data"), "--no_wandb", "--device", "cpu", "--image_size", "16", "-t", "0",
                 "--checkpoints_dir", str(tmp_path / "ckpt"), "--quiet", "--save_model", "--split_mode", "kels",
                 "--split_rate", "0.5", "--reset_layer_name", "layer4", "--pretrained", str(tmp_path / "pre.pth")])
    init = torch.load(next(tmp_path.glob("ckpt/*/*/gen_0/*/*/checkpoints/init_model.state")),
                      weights_only=True)["state_dict"]
    w, old = init["layer1.0.conv1.weight"], source.layer1[0].conv1.weight.detach()
    assert torch.equal(w[:32, :32], old[:32, :32])  # the KELS fit hypothesis kept
    assert not torch.equal(w[32:], old[32:]) and w[32:].abs().max() <= 1 / math.sqrt(64 * 9) + 1e-7
    assert init["layer1.0.conv1.mask"].all() and not init["layer4.0.conv1.mask"].any()  # then the LLF masks
