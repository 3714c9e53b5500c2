"""TensorBoard of both scripts, read back from the event files: one writer, tags under train/
stats/ eval/ only, no counters, steps increasing per tag; metrics.jsonl keeps the original keys."""

from __future__ import annotations

import math

from forgetting_common import testing
from forgetting_common.runlog import read_metrics


def _by_tag(run_dir):
    assert len(list((run_dir / "tensorboard").glob("events.out.tfevents.*"))) == 1  # one writer
    by_tag: dict[str, list[tuple[int, float]]] = {}
    for tag, step, value in testing.tensorboard_scalars(run_dir / "tensorboard"):
        by_tag.setdefault(tag, []).append((step, value))
    for tag, series in by_tag.items():
        steps = [s for s, _ in series]
        assert steps == sorted(steps) and len(steps) == len(set(steps)), tag  # monotonic, once per step
    return by_tag


def _same(a, b):
    return (a is None and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)


def test_forget_train_tags(run_forget):
    _, run_dir = run_forget("--fname tb --seed 0 --no_wandb --trainIters 200 --resetNum 2 --forget_sender "
                            "--sender_keep_perc 0.5", "--eot_every", "1")
    by_tag = _by_tag(run_dir)
    assert set(by_tag) == {
        "train/Sender_Loss", "train/Recever_loss", "train/Training_accuracy",
        "train/Training_accuracy_mean_of_last_100", "stats/Topographic_Similarity",
        "stats/New_Topographic_Similarity", "stats/Deterministic_Entropy", "eval/Speed_mean_acc_all",
        "eval/Speed_final_acc", "eval/teaching_curve_gen1/Training_accuracy",
        "eval/teaching_curve_gen2/Training_accuracy",
    }
    assert {tag.split("/", 1)[0] for tag in by_tag} == {"train", "stats", "eval"}, sorted(by_tag)
    assert not any(tag.rsplit("/", 1)[-1] in ("Iter", "Eval_generation") for tag in by_tag)
    rows = read_metrics(run_dir)
    topo = [(r["step"], r["Topographic Similarity"]) for r in rows if "Topographic Similarity" in r]
    assert [s for s, _ in by_tag["stats/Topographic_Similarity"]] == [s for s, _ in topo] == [0, 100, 200]
    assert all(_same(w, v) for (_, w), (_, v) in zip(topo, by_tag["stats/Topographic_Similarity"], strict=True))
    acc = [(r["step"], r["Training accuracy"]) for r in rows if "Training accuracy" in r]
    assert [s for s, _ in by_tag["train/Training_accuracy"]] == [s for s, _ in acc] == [0, 100]
    assert all(_same(w, v) for (_, w), (_, v) in zip(acc, by_tag["train/Training_accuracy"], strict=True))
    assert [s for s, _ in by_tag["eval/teaching_curve_gen1/Training_accuracy"]] == list(range(1, 21))
    assert [s for s, _ in by_tag["stats/New_Topographic_Similarity"]] == [100]  # after the one forgetting event


def test_mixed_language_tags(run_mixed):
    _, run_dir = run_mixed("--fname tbm --seed 0 --trainIters 4 --keep_perc 0.5")
    by_tag = _by_tag(run_dir)
    assert {tag.split("/", 1)[0] for tag in by_tag} == {"train"}
    assert "train/Exact_Match_Perfect" in by_tag and "train/Copy_Exact_Match_Permuted" in by_tag
    rows = read_metrics(run_dir)
    assert [s for s, _ in by_tag["train/Copy_Exact_Match_Permuted"]] == [0, 1, 2, 3]
    assert all(_same(r["Sender loss"], v) for r, (_, v) in zip(rows, by_tag["train/Sender_loss"], strict=True))
