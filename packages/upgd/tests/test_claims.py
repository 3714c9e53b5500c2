"""The `upgd.student_cifar10` claim's read/measure/figure on a tiny hand-made run and student log."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from upgd.claims import STUDENT, figure_student_runs, measure_student_runs, read_student_run

REL = Path("label_permuted_cifar10_stats/{learner}/convolutional_network_relu_with_hooks/"
           "lr_0.01_beta_utility_0.999_sigma_0.001_weight_decay_0.0/19.json")


def _result(accuracies, n_samples, change_freq=None):
    result = {"losses": [0.0] * len(accuracies), "accuracies": accuracies, "n_samples": n_samples}
    if change_freq:
        result["run_info"] = {"change_freq": change_freq}
    return result


def _fake_run(tmp_path: Path, learner: str, ours: list, theirs: list | None) -> tuple[Path, Path]:
    out, data = tmp_path / "out" / learner, tmp_path / "data"
    rel = Path(str(REL).format(learner=learner))
    (out / rel).parent.mkdir(parents=True)
    (out / rel).write_text(json.dumps(_result(ours, 400, change_freq=100)))
    run_folder = out / "_runs" / rel.parent / rel.stem
    run_folder.mkdir(parents=True)
    (run_folder / "config.json").write_text(json.dumps({"data_dir": str(data)}))
    if theirs is not None:
        (data / "upgd-student-logs" / rel).parent.mkdir(parents=True, exist_ok=True)
        (data / "upgd-student-logs" / rel).write_text(json.dumps(_result(theirs, 1000)))
    return out, data


def test_read_and_measure_ours_beside_the_students_log(tmp_path):
    # ours: 4 entries (entry 0 included, as the notebook does): (0 + .5 + .6 + .7) / 4 = 0.45
    out_b, _ = _fake_run(tmp_path, "baseline", [0.0, 0.5, 0.6, 0.7], [0.0, 0.4, 0.8, 0.8, 0.5])  # theirs 0.5
    out_u, _ = _fake_run(tmp_path, "usgd", [0.0, 0.6, 0.6, 0.6], [0.0, 0.5, 0.6, 0.7, 0.7])  # ours 0.45, theirs 0.5
    vb, vu = read_student_run({}, out_b), read_student_run({}, out_u)
    assert vb["accuracies"] == [0.0, 0.5, 0.6, 0.7] and vb["change_freq"] == 100 and vb["n_samples"] == 400
    assert vb["average_accuracy"] == pytest.approx(0.45) and vb["student_average_accuracy"] == pytest.approx(0.5)
    assert vb["student_log"] == str(REL).format(learner="baseline")
    json.dumps(vb)  # the compact record is JSON as it is
    m = measure_student_runs({"a": {**vb, "_labels": {"learner": "baseline"}},
                              "b": {**vu, "_labels": {"learner": "usgd"}}})
    assert m["baseline_avg_acc"] == pytest.approx(0.45) and m["usgd_avg_acc"] == pytest.approx(0.45)
    assert m["student_baseline_avg_acc"] == pytest.approx(0.5) and m["student_usgd_avg_acc"] == pytest.approx(0.5)
    assert m["baseline_minus_student"] == pytest.approx(-0.05) and m["usgd_minus_baseline"] == pytest.approx(0.0)
    assert m["n_samples"] == 400.0
    path = tmp_path / "fig.png"
    figure_student_runs({"a": {**vb, "_labels": {"learner": "baseline"}}, "b": {**vu, "_labels": {"learner": "usgd"}}},
                        m, path)
    assert path.stat().st_size > 10_000


def test_measure_falls_back_to_the_report_without_their_log(tmp_path):
    values = {}
    for learner in ("baseline", "usgd"):
        out, _ = _fake_run(tmp_path, learner, [0.0, 0.6], None)
        values[learner] = {**read_student_run({}, out), "_labels": {"learner": learner}}
        assert values[learner]["student_average_accuracy"] is None
    m = measure_student_runs(values)
    assert m["student_baseline_avg_acc"] == STUDENT["baseline"][0] == 0.5529
    assert m["student_usgd_avg_acc"] == STUDENT["usgd"][0] == 0.5538
    assert m["student_usgd_minus_baseline"] == pytest.approx(0.0009)
    figure_student_runs(values, m, tmp_path / "fig.png")  # ours only, no error
