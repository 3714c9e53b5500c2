"""The seed command lines with tiny overrides appended (spec §7.2), run in-process on generated data."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from forgetting_common.errors import UserError
from forgetting_common.runlog import read_metrics
from forgetting_common.testing import tensorboard_scalars
from wpl_enas.fixtures import CNN_SEED, RNN_SEED

NAMESPACES = ("train/", "test/", "stats/", "eval/")


def main(argv):
    from wpl_enas.run import main as run

    return run(argv)


def forgetting(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "forgetting.jsonl").read_text().splitlines() if line.strip()]


def epoch_records(run: Path) -> dict[int, dict]:
    return {r["step"]: r for r in read_metrics(run) if "stats/alpha" in r}


def assert_tensorboard_clean(run: Path) -> set[str]:
    """Every scalar tag namespaced, no counter drawn, steps strictly increasing per tag; the tags."""
    points = tensorboard_scalars(run / "tensorboard")
    assert points
    steps: dict[str, list[int]] = {}
    for tag, step, _ in points:
        steps.setdefault(tag, []).append(step)
    for tag, seq in steps.items():
        assert tag.startswith(NAMESPACES), tag
        assert not tag.lower().endswith(("/epoch", "/step", "/iter")), tag
        assert all(a < b for a, b in zip(seq, seq[1:])), (tag, seq)
    return set(steps)


def assert_png(path: Path, min_side: int = 200) -> None:
    import numpy as np
    from PIL import Image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as img:
        assert min(img.size) >= min_side
        assert len(np.unique(np.asarray(img.convert("L")))) > 10  # drawn on, not a blank canvas


def test_rnn_seed_wpl_gif_resume_derive_test(workdir, rnn_tiny):
    out = main(RNN_SEED + rnn_tiny)
    run = workdir / "logs" / "ptb_2018-02-15_11-20-02"
    trainer = out["trainer"]
    # run folder contents
    assert (run / "params.json").is_file() and (run / "config.json").is_file() and (run / "train.log").is_file()
    assert sorted(p.name for p in run.glob("*.pth")) == [
        "checkpoint.pth", "controller_epoch0_step0.pth", "controller_epoch3_step9.pth", "shared_epoch0_step3.pth", "shared_epoch3_step12.pth"]
    assert list(run.glob("networks/*-best.png")) and list(run.glob("networks/*.dot"))
    assert list(run.glob("tensorboard/events.out.tfevents.*"))
    params = json.loads((run / "params.json").read_text())
    assert params["alpha_small_scale"] == pytest.approx(1e-4) and params["model_name"] == "ptb_2018-02-15_11-20-02"
    # forgetting measured in epochs 1..3 with finite diffs
    recs = forgetting(run)
    assert [r["epoch"] for r in recs] == [1, 2, 3]
    assert all(len(r["diff"]) == 3 and all(abs(d) < 1e9 for d in r["diff"]) for r in recs)
    # WPL: exactly 0 on the first WPL step, > 0 later; never before epoch 1
    trace = trainer.wpl_trace
    assert all(t["wpl"] == 0.0 for t in trace if t["epoch"] == 0)
    first_on = [t for t in trace if t["wpl_on"]][0]
    assert first_on["epoch"] == 1 and first_on["step"] == 0 and first_on["wpl"] == 0.0
    assert any(t["wpl"] > 0 for t in trace if t["epoch"] >= 1)
    # alpha schedule: 60, 60, 59 (after=2), 58
    epochs = epoch_records(run)
    assert [epochs[e]["stats/alpha"] for e in range(4)] == [60.0, 60.0, 59.0, 58.0]
    assert [epochs[e]["stats/controller_trained"] for e in range(4)] == [0, 1, 1, 1]
    assert epochs[1]["stats/fisher_norm_max"] > 0
    assert epochs[3]["stats/fisher_norm_max"] <= 10.0 * 60.0 * 1.0001
    best = json.loads((run / "best_dag.json").read_text())
    assert best["dag"]["type"] == "rnn" and len(best["genotype"]["recurrent"]) == 3
    assert_png(run / "forgetting.png")  # the per-run forgetting curve (enas_rnn.png's measure)

    # generate_gif.py
    from wpl_enas.gif import main as gif_main

    gif = gif_main(["--model_name=ptb_2018-02-15_11-20-02", "--output=sample.gif", "--quiet"])
    import imageio.v3 as iio

    frames = iio.imread(gif, index=None)
    assert frames.ndim == 4 and frames.shape[0] >= 1

    # resume via --load_path: continues at epoch 4 (after the saved epoch 3)
    out = main(RNN_SEED + rnn_tiny + ["--load_path=ptb_2018-02-15_11-20-02", "--max_epoch=5"])
    assert out["trainer"].start_epoch == 4
    assert {t["epoch"] for t in out["trainer"].wpl_trace} == {4}
    assert (run / "shared_epoch4_step15.pth").is_file()
    assert "continuing at epoch 4" in (run / "train.log").read_text()
    # TensorBoard over both sessions: namespaced tags, each step once and in order
    tags = assert_tensorboard_clean(run)
    assert {"train/shared/loss", "train/shared/wpl", "train/controller/reward", "stats/alpha", "stats/fisher_norm_max",
            "eval/forgetting/mean_diff", "eval/derive/max_R", "eval/val_best_ppl"} <= tags
    alpha = [(step, value) for tag, step, value in tensorboard_scalars(run / "tensorboard") if tag == "stats/alpha"]
    assert alpha == [(0, 60.0), (1, 60.0), (2, 59.0), (3, 58.0), (4, 57.0)]

    # derive and test modes on the saved run
    out = main(RNN_SEED + rnn_tiny + ["--mode=derive", "--load_path=ptb_2018-02-15_11-20-02"])
    assert isinstance(out["best"], dict)
    out = main(RNN_SEED + rnn_tiny + ["--mode=test", "--load_path=ptb_2018-02-15_11-20-02", "--test_batch_size=2"])
    assert out["test"]["test/best_ppl"] > 1.0

    # retrain the derived cell from scratch
    from wpl_enas.retrain import main as retrain

    res = retrain(RNN_SEED + rnn_tiny + ["--load_path=ptb_2018-02-15_11-20-02", "--retrain_epochs=1",
                                         "--use_tensorboard=False"])
    assert res["test_ppl"] > 1.0 and (workdir / "logs" / "ptb_2018-02-15_11-20-02_retrain" / "results.json").is_file()
    with pytest.raises(UserError, match="exists"):
        retrain(RNN_SEED + rnn_tiny + ["--load_path=ptb_2018-02-15_11-20-02", "--retrain_epochs=1"])


def test_cnn_seed_then_resume_with_wpl(workdir, cnn_tiny, caplog):
    out = main(CNN_SEED + cnn_tiny)
    run = workdir / "logs" / "cifar10_cnn-train"
    assert all(t["wpl"] == 0.0 for t in out["trainer"].wpl_trace)  # start_using_fisher=50000: WPL never on
    assert sorted(p.name for p in run.glob("shared_*.pth")) == [
        "shared_epoch0_step3.pth", "shared_epoch2_step9.pth", "shared_epoch3_step12.pth"]
    recs = forgetting(run)
    assert [r["epoch"] for r in recs] == [1, 2, 3] and recs[0]["metric"] == "valid_acc"
    epochs = epoch_records(run)
    assert [epochs[e]["stats/controller_trained"] for e in range(4)] == [0, 0, 1, 1]
    params = json.loads((run / "params.json").read_text())
    assert params["controller_max_step"] == 3 and params["reward_c"] == 1.0 and params["momentum"] is False

    # the seed's --resume=True continues the newest checkpoint; WPL from epoch 4
    out = main(CNN_SEED + cnn_tiny + ["--max_epoch=6", "--start_using_fisher=4"])
    trainer = out["trainer"]
    assert trainer.start_epoch == 4
    assert "continuing at epoch 4" in (run / "train.log").read_text()
    assert any(t["wpl"] > 0 for t in trainer.wpl_trace)
    epochs = epoch_records(run)
    # the CNN path passes no epoch (the original's default 0 < --alpha_decay_after=15): no decay
    assert epochs[4]["stats/alpha"] == 60.0 and epochs[5]["stats/alpha"] == 60.0
    for name, _ in trainer.shared.protected_named_params():
        assert trainer.wpl.fisher(name).norm().item() <= 10.0 * 60.0 * 1.0001
    best = json.loads((run / "best_dag.json").read_text())
    assert best["dag"]["type"] == "micro_cnn"
    assert "train/shared/accuracy" in assert_tensorboard_clean(run)
    assert_png(run / "forgetting.png")

    out = main(CNN_SEED + cnn_tiny + ["--mode=test", "--load_path=cifar10_cnn-train", "--use_tensorboard=False"])
    assert 0.0 <= out["test"]["test/best_top_1_acc"] <= 1.0

    from wpl_enas.retrain import main as retrain

    res = retrain(CNN_SEED + cnn_tiny + ["--retrain_epochs=1", "--use_tensorboard=False"])
    assert res["kind"] == "micro_cnn" and 0.0 <= res["test_error_pct"] <= 100.0


def test_custom_text_dataset(workdir, rnn_tiny):
    out = main(["--dataset=tiny_text"] + rnn_tiny + ["--comment=ct", "--max_epoch=2", "--use_tensorboard=False"])
    run = workdir / "logs" / "tiny_text_ct"
    assert out["trainer"].data.num_tokens <= 41
    assert (run / "shared_epoch1_step6.pth").is_file()  # the final checkpoint is always saved
    assert not list(run.glob("networks/*.png"))  # no drawings without TensorBoard


def test_custom_image_dataset(workdir, cnn_tiny):
    out = main(["--dataset=tiny_images", "--network_type=micro_cnn"] + cnn_tiny + ["--comment=ci", "--max_epoch=1",
                                                                               "--train_limit=20", "--test_limit=8"])
    trainer = out["trainer"]
    assert trainer.config.output_classes == 3
    assert trainer.shared.classifier.out_features == 3
    assert len(trainer.data.train) == 20 and len(trainer.data.valid) == 8
    params = json.loads((workdir / "logs" / "tiny_images_ci" / "params.json").read_text())
    assert params["output_classes"] == 3


def test_image_layouts_labels_csv_and_flat(workdir):
    from PIL import Image
    from wpl_enas.data import read_image_split

    folder = workdir / "flat"
    folder.mkdir()
    for i in range(4):
        Image.new("RGB", (20, 24), (i * 40, 0, 0)).save(folder / f"im{i}.png")
    _, labels, names = read_image_split(folder, 32, 32)
    assert labels.tolist() == [0, 0, 0, 0] and names == ["0"]
    (folder / "labels.csv").write_text("filename,label\n" + "".join(f"im{i}.png,{i % 2}\n" for i in range(4)))
    images, labels, names = read_image_split(folder, 32, 32)
    assert labels.tolist() == [0, 1, 0, 1] and images.shape == (4, 3, 32, 32)


def test_two_models_smoke(workdir):
    from wpl_enas.two_models import main as two

    res = two(["--dataset=clusters", "--epochs_a=2", "--epochs_b=2", "--arms=plain,wpl:100", "--quiet",
               "--output_dir=tm"])
    assert (workdir / "tm" / "results.json").is_file()
    assert_png(workdir / "tm" / "forgetting.png")
    for value in res["summary"].values():
        if isinstance(value, dict):
            assert abs(value["A_loss_rise_mean"]) < 10 and 0.0 <= value["B_acc_mean"] <= 1.0
    assert set(res["summary"]) >= {"plain", "wpl a=100"}
    with pytest.raises(UserError, match="exists"):
        two(["--dataset=clusters", "--epochs_a=1", "--epochs_b=1", "--output_dir=tm", "--quiet"])


def test_gif_errors(workdir):
    from wpl_enas.gif import main as gif_main

    with pytest.raises(UserError, match="not found"):
        gif_main(["--model_name=nothing_here"])
    (workdir / "logs" / "empty_run" / "networks").mkdir(parents=True)
    with pytest.raises(UserError, match="no PNG"):
        gif_main(["--model_name=empty_run"])


def test_cell_drawing_is_graphviz_layout(workdir):
    """With graphviz installed (CI installs it) the PNG is ``dot``'s own rendering of the .dot file."""
    import shutil
    import subprocess

    from wpl_enas.dags import build_rnn_dag
    from wpl_enas.plots import draw_network

    exe = shutil.which("dot")
    assert exe, "graphviz's `dot` is required for this test (apt-get install graphviz)"
    path = draw_network(build_rnn_dag(["tanh", "ReLU", "sigmoid"], [0, 1], 3), workdir / "g.png")
    dot = path.with_suffix(".dot").read_text()
    assert "strict digraph" in dot and re.search(r"avg", dot)
    for label in ("x[t]", "h[t-1]", "h[t]", "ReLU\n(1)", "sigmoid\n(2)"):
        assert f'label="{label}"' in dot, label
    expected = subprocess.run([exe, "-Tpng"], input=dot.encode(), capture_output=True, check=True).stdout
    assert path.read_bytes() == expected  # not the Pillow fallback


def test_cell_drawing_fallback_without_graphviz(workdir, monkeypatch):
    import shutil

    from PIL import Image
    from wpl_enas.dags import build_rnn_dag
    from wpl_enas.plots import draw_network

    monkeypatch.setattr(shutil, "which", lambda name: None)
    path = draw_network(build_rnn_dag(["tanh", "ReLU", "sigmoid"], [0, 1], 3), workdir / "g.png")
    # the text rendering: a title row, a node row and one row per edge, 16 px each + 20; the edges are
    # x[t]->0, h[t-1]->0, 0->1, 1->2, 2->avg, avg->h[t]
    assert Image.open(path).size[1] == 16 * (2 + 6) + 20


@pytest.mark.parametrize("module", ["run", "gif", "two_models", "retrain"])
def test_print_config_reads_and_writes_nothing(workdir, module, capsys):
    import importlib

    mod = importlib.import_module(f"wpl_enas.{module}")
    argv = {"run": RNN_SEED, "gif": ["--model_name=x"], "two_models": ["--dataset=mnist"],
            "retrain": RNN_SEED + ["--load_path=missing"]}[module]
    before = sorted(p.name for p in workdir.iterdir())
    mod.main(argv + ["--print_config"])
    config = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert isinstance(config, dict) and "print_config" not in config
    assert sorted(p.name for p in workdir.iterdir()) == before


@pytest.mark.parametrize("variant", [
    ["--shared_valid_fisher=False", "--activation_regularization=True", "--temporal_activation_regularization=True"],
    ["--shared_valid_fisher=False", "--shared_ce_fisher=False", "--norm_stabilizer_regularization=True"],
    ["--shared_ce_fisher=False", "--momentum=False", "--alpha_decay_mode=2", "--shared_num_sample=2",
     "--policy_batch_size=2", "--entropy_mode=regularizer", "--discount=0.9", "--shared_initial_step=1"],
])
def test_rnn_wpl_variants(workdir, rnn_tiny, variant):
    out = main(rnn_tiny + ["--max_epoch=2", "--start_using_fisher=0", "--use_tensorboard=False",
                           "--train_controller=True", "--comment=v"] + variant)
    trace = out["trainer"].wpl_trace
    assert trace[0]["wpl"] == 0.0 and any(t["wpl"] > 0 for t in trace)
    assert out["trainer"].wpl.fisher_norm_stats()["max"] > 0


def test_cnn_wpl_train_batch_fisher(workdir, cnn_tiny):
    out = main(["--dataset=cifar10", "--network_type=micro_cnn"] + cnn_tiny +
               ["--max_epoch=2", "--start_using_fisher=0", "--shared_valid_fisher=False", "--shared_ce_fisher=False",
                "--nb_batch_reward_controller=2", "--train_controller=True", "--use_tensorboard=False", "--comment=v"])
    assert out["trainer"].wpl.fisher_norm_stats()["max"] > 0
