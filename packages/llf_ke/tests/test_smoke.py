"""The six seed command lines, unchanged apart from tiny sizes, through the real script (spec 11.2)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from forgetting_common.runlog import read_metrics
from llf_ke.outputs import CSV_HEADER, read_csv

PRE_LAYER4 = ("conv1.", "bn1.", "layer1.", "layer2.", "layer3.")


def _csv(exp):
    files = list(exp.glob("*.csv"))
    assert len(files) == 1
    text = files[0].read_text()
    assert text.splitlines()[0] == CSV_HEADER
    return read_csv(files[0])


def _common_layout(exp, generations):
    assert (exp / "train_log.txt").is_file() and (exp / "config.json").is_file()
    for g in range(generations):
        run_dirs = list((exp / f"gen_{g}").glob("*/0000_g0"))
        assert len(run_dirs) == 1
        assert (run_dirs[0] / "settings.txt").is_file()
    assert list((exp / "tensorboard").glob("events.out.tfevents.*"))  # one TensorBoard run for all generations
    rows = _csv(exp)
    assert len(rows) == generations
    return rows


def _is_reset(key):
    return key.endswith("weight") and (key == "fc.weight" or (key.startswith("layer4") and ("conv" in key or "downsample.0" in key)))


def test_llf_s1(runs, helpers):
    exp = runs.get("llf", "S1", epochs=2, generations=3, extra=("--save_model", "--init_seed", "0"))
    assert exp.name == ("SPLT_CLS_Flower102_Split_ResNet18_cskdFalse_smth0.1_k0.5_G3_e2_evrand_hResetFalse"
                        "_smwels_smoke_llf_seedNone")
    rows = _common_layout(exp, 3)
    assert rows[0]["Name"] == exp.name + "/"
    assert "resetting 75.236 percent of parameters" in (exp / "train_log.txt").read_text()
    for g in (1, 2):
        end_prev = helpers.gen_state(exp, g - 1, "epoch_1.state")
        start = helpers.gen_state(exp, g, "init_model.state")
        for key, old in end_prev.items():
            new = start[key]
            if key.endswith("mask"):
                assert (new == 0).all() == (key.startswith("layer4") or key == "fc.mask"), key
                continue
            if _is_reset(key):
                assert not torch.equal(old, new), key
                bound = 1 / math.sqrt(new[0].numel())
                assert new.abs().max() <= bound + 1e-7, key
            else:  # everything before layer4, layer4's BN (params and buffers) and fc.bias carry over
                assert torch.equal(old, new), key
    summary = json.loads((exp / "summary.json").read_text())
    assert summary["finished"] and len(summary["generations"]) == 3


def test_ke_s2(runs, helpers):
    exp = runs.get("ke", "S2", epochs=1, generations=2, extra=("--save_model", "--init_seed", "0"))
    assert "_k0.8_" in exp.name and "_smkels_" in exp.name
    _common_layout(exp, 2)
    end0 = helpers.gen_state(exp, 0, "epoch_0.state")
    start1 = helpers.gen_state(exp, 1, "init_model.state")
    zeros = total = 0
    for key in start1:
        if not key.endswith(".mask"):
            continue
        wkey = key[:-4] + "weight"
        mask = start1[key].bool()
        zeros += int((~mask).sum())
        total += mask.numel()
        assert torch.equal(start1[wkey][mask], end0[wkey][mask]), key
        bound = 1 / math.sqrt(start1[wkey][0].numel())
        assert start1[wkey][~mask].abs().max() <= bound + 1e-7
    assert start1["layer4.0.conv1.mask"][:410, :205].all() and start1["layer4.0.conv1.mask"].sum() == 410 * 205 * 9
    assert 100 * zeros / total == pytest.approx(35.72, abs=0.005)
    for key in ("bn1.weight", "layer2.0.bn1.running_mean", "fc.bias"):
        assert torch.equal(start1[key], end0[key])


def test_long_baseline_s3(runs):
    exp = runs.get("long", "S3", epochs=2, generations=1, extra=("--eval_intermediate_tst", "1", "--init_seed", "0"))
    assert "_G1_e2_" in exp.name
    rows = _common_layout(exp, 1)
    assert "re-initialised" not in (exp / "train_log.txt").read_text()
    tests = [r for r in read_metrics(exp) if "test/top1" in r]
    assert [t["epoch"] for t in tests] == [0, 1]
    assert [t["test/generation"] for t in tests] == [0.0, 1.0]  # equivalent generations
    # fixed: the CSV's test column holds the last intermediate test (the original wrote 0.00)
    assert float(rows[0]["Current Tst Top 1"]) == pytest.approx(tests[-1]["test/top1"], abs=0.006)
    assert float(rows[0]["Current Tst Top 5"]) > 0


def _requires_grad_at_end(exp):
    """The requires_grad flags the finished run's last checkpoint holds."""
    return torch.load(exp / "checkpoint_last.pth", weights_only=True)["requires_grad"]


def test_freeze_reset_layers_s4(runs, helpers):
    exp = runs.get("frz", "S4", epochs=1, generations=3, extra=("--save_model", "--init_seed", "0"))
    _common_layout(exp, 3)
    flags = _requires_grad_at_end(exp)
    for name, trainable in flags.items():
        if name.endswith("mask"):
            assert not trainable
        else:
            assert trainable == (not name.startswith("layer4")), name
    for g in (1, 2):
        start = helpers.gen_state(exp, g, "init_model.state")
        end = helpers.gen_state(exp, g, "epoch_0.state")
        for key in start:
            if key.startswith("layer4") and not key.endswith(("running_mean", "running_var", "num_batches_tracked")):
                assert torch.equal(start[key], end[key]), key  # frozen: bit-identical after training
        assert not torch.equal(start["layer4.0.bn1.running_mean"], end["layer4.0.bn1.running_mean"])
        assert not torch.equal(start["layer3.0.conv1.weight"], end["layer3.0.conv1.weight"])
        assert not torch.equal(start["fc.weight"], end["fc.weight"])
    opt = torch.load(next((exp / "gen_2").glob("*/*/checkpoints/epoch_0.state")), weights_only=True)["optimizer"]
    n_opt = sum(len(g["params"]) for g in opt["param_groups"])
    assert n_opt == sum(1 for n, t in flags.items() if t)  # sgd_TEMP: trainable tensors only


def test_freeze_early_layers_s5(runs, helpers):
    exp = runs.get("frz_early", "S5", epochs=1, generations=2,
                   extra=("--save_model", "--init_seed", "0", "--eval_after_reset"))
    _common_layout(exp, 2)
    after_reset = [r for r in read_metrics(exp) if "test/after_reset_top1" in r]
    assert [(r["generation"], r["epoch"]) for r in after_reset] == [(1, 0)]
    flags = _requires_grad_at_end(exp)
    for name, trainable in flags.items():
        if not name.endswith("mask"):
            assert trainable == name.startswith(("layer4", "fc")), name
    start = helpers.gen_state(exp, 1, "init_model.state")
    end = helpers.gen_state(exp, 1, "epoch_0.state")
    assert torch.equal(start["layer2.1.conv2.weight"], end["layer2.1.conv2.weight"])
    assert torch.equal(start["bn1.weight"], end["bn1.weight"])
    assert not torch.equal(start["bn1.running_var"], end["bn1.running_var"])  # BN statistics still update
    assert not torch.equal(start["layer4.1.conv2.weight"], end["layer4.1.conv2.weight"])


def test_fix_seed_s6(runs, helpers):
    exp = runs.get("fixseed", "S6", epochs=1, generations=3, extra=("--save_model",))
    assert exp.name.endswith("_seed0")
    _common_layout(exp, 3)
    g1 = helpers.gen_state(exp, 1, "init_model.state")
    g2 = helpers.gen_state(exp, 2, "init_model.state")
    for key in ("layer4.0.conv1.weight", "layer4.1.conv2.weight", "layer4.0.downsample.0.weight", "fc.weight"):
        assert torch.equal(g1[key], g2[key]), key
    assert not torch.equal(g1["layer3.0.conv1.weight"], g2["layer3.0.conv1.weight"])  # training went on
    # another --seed draws other reset values (the run itself is too costly to repeat here)
    from llf_ke import forgetting
    from llf_ke.models import Builder, build_model

    model = build_model("Split_ResNet18", 102, Builder())
    model.load_state_dict(g1)
    forgetting.split_reinitialize(model, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(model.layer4[0].conv1.weight, g1["layer4.0.conv1.weight"])
    assert torch.equal(model.layer3[0].conv1.weight, g1["layer3.0.conv1.weight"])


@pytest.mark.parametrize("key", ["S1", "S2", "S3", "S4", "S5", "S6"])
def test_print_config_of_each_seed_line(key, helpers, script, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = helpers.seed_lines[key].replace("$DATA_DIR", str(tmp_path / "nowhere")).split()
    script.main([*argv, "--print_config"])
    config = json.loads(capsys.readouterr().out)
    assert config["set"] == "Flower102" and config["arch"] == "Split_ResNet18" and config["weight_decay"] == 0.0001
    assert config["no_wandb"] is True and config["device"] == "auto" and config["image_size"] == 224
    assert config["name"].startswith("SPLT_CLS_Flower102_Split_ResNet18_")
    assert list(tmp_path.iterdir()) == []  # nothing written, no data read


def test_log_dir_and_run_folder_numbering(tmp_path):
    import random

    from llf_ke.checkpoint import generation_root
    from llf_ke.outputs import new_run_dir

    root = generation_root(tmp_path / "unused", str(tmp_path / "logs"), "exp")
    random.seed(5)
    first = new_run_dir(root, 2, gpu=3)
    assert first.parent.parent == tmp_path / "logs" / "exp" / "gen_2" and first.name == "0000_g3"
    assert not (tmp_path / "unused").exists()
    random.seed(5)  # the same random folder: the next free number
    assert new_run_dir(root, 2, gpu=3) == first.parent / "0001_g3"
    assert generation_root(tmp_path / "exp_dir", None, "exp") == tmp_path / "exp_dir"


def test_tensorboard_tags_are_namespaced_and_steps_monotonic(runs):
    """The one TensorBoard writer of a 3-generation LLF run, read back from its event files."""
    from forgetting_common.testing import tensorboard_scalars

    exp = runs.get("llf", "S1", epochs=2, generations=3, extra=("--save_model", "--init_seed", "0"))
    points = tensorboard_scalars(exp / "tensorboard")
    tags = {tag for tag, _, _ in points}
    assert tags == {"train/loss", "train/top1", "train/top5", "train/lr", "eval/val_loss", "eval/val_top1",
                    "eval/val_top5", "test/loss", "test/top1", "test/top5"}
    by_tag: dict[str, list[int]] = {}
    for tag, step, _ in points:
        by_tag.setdefault(tag, []).append(step)
    for tag, steps in by_tag.items():
        assert steps == sorted(steps) and len(set(steps)) == len(steps), (tag, steps)
    assert by_tag["train/loss"] == [0, 1, 2, 3, 4, 5]  # global epoch = generation * epochs + epoch
    assert by_tag["test/top1"] == [1, 3, 5]  # the test at the end of every generation
    rows = read_metrics(exp)
    assert [(r["generation"], r["epoch"]) for r in rows] == [(g, e) for g in range(3) for e in range(2)]
    assert [r["test/generation"] for r in rows if "test/top1" in r] == [0, 1, 2]  # counters: jsonl only


def test_every_run_draws_its_figure(runs, tmp_path):
    """test_acc_per_generation.png in the run folder, and the comparison figure of several runs."""
    import numpy as np
    from llf_ke import plots
    from PIL import Image

    llf = runs.get("llf", "S1", epochs=2, generations=3, extra=("--save_model", "--init_seed", "0"))
    long = runs.get("long", "S3", epochs=2, generations=1, extra=("--eval_intermediate_tst", "1", "--init_seed", "0"))
    for exp in (llf, long):
        png = exp / plots.RUN_FIGURE
        assert png.stat().st_size > 10_000
        with Image.open(png) as img:
            assert img.size == (720, 480) and len(np.unique(np.asarray(img.convert("L")))) > 20  # drawn, not blank
    assert [x for x, _ in plots.test_curve(llf)] == [0.0, 1.0, 2.0]
    out = tmp_path / "cmp.png"
    plots.main(["--run", f"LLF={llf}", "--run", f"LLF={llf}", "--run", f"long={long}", "--out", str(out)])
    assert out.stat().st_size > 10_000 and not list(tmp_path.glob(".*"))


def test_eval_after_reset_changes_nothing_else(runs):
    """The extra evaluation runs on a forked RNG: the CSV numbers equal a run without it."""
    with_eval = runs.get("frz_early", "S5", epochs=1, generations=2,
                         extra=("--save_model", "--init_seed", "0", "--eval_after_reset"))
    plain = runs.get("frz_early_plain", "S5", epochs=1, generations=2, extra=("--init_seed", "0"))
    strip = [list(r.values())[2:] for r in _csv(plain)]
    assert [list(r.values())[2:] for r in _csv(with_eval)] == strip
