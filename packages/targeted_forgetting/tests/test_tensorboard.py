"""TensorBoard: one writer per run, tags under train/ and stats/, no counters, steps increasing;
metrics.jsonl keeps the original W&B key names. Read back from the event files."""

from __future__ import annotations

import math

from forgetting_common import testing
from forgetting_common.runlog import read_metrics

ARGV = ["--data_source", "synthetic", "--train_limit", "300", "--train_iters", "12", "--print_every", "4",
        "--no_wandb", "--no_plot", "--keep_perc", "0.5", "--random_perc", "0.2", "--fname", "tb"]


def test_tags_steps_and_values(run_cli):
    run_dir = run_cli(ARGV)
    events = list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1
    by_tag: dict[str, list[tuple[int, float]]] = {}
    for tag, step, value in testing.tensorboard_scalars(run_dir / "tensorboard"):
        by_tag.setdefault(tag, []).append((step, value))
    assert "train/True_Label_Accuracy" in by_tag and "train/Copy_Random_Label_Accuracy" in by_tag
    assert by_tag["stats/Random_Group_Size"]
    assert all(tag.split("/", 1)[0] in ("train", "stats") for tag in by_tag), sorted(by_tag)
    assert not any(tag.endswith(("/Iter", "/Epoch")) for tag in by_tag)
    for tag, series in by_tag.items():
        assert [s for s, _ in series] == [4, 8, 12], tag
    rows = [r for r in read_metrics(run_dir) if "Iter" in r]
    assert "True Label Accuracy" in rows[0] and not any("/" in k for k in rows[0])  # original keys kept
    for key in ("Train loss", "Copy True Label Accuracy", "Random Group Size"):
        tag = ("stats/" if key == "Random Group Size" else "train/") + key.replace(" ", "_")
        logged = [v for _, v in by_tag[tag]]
        written = [math.nan if r[key] is None else r[key] for r in rows]
        assert all(math.isclose(a, b, rel_tol=1e-6) or (math.isnan(a) and math.isnan(b))
                   for a, b in zip(logged, written, strict=True)), key
