"""The student notebook's metrics: synthetic check and their 14 committed result files."""

from __future__ import annotations

import json

import pytest
from upgd.metrics import format_table, notebook_metrics, results_table
from upgd.plot_cli import main as plot_main


def test_notebook_formulas_on_synthetic_json(tmp_path):
    data = {"losses": [2.0, 1.5, 1.9, 1.0], "accuracies": [0.0, 0.5, 0.25, 0.75],
            "plasticity_per_task": [0.01, 0.4, 0.2, 0.3], "task": "t", "learner": "x"}
    m = notebook_metrics(data)
    assert m["average_accuracy"] == pytest.approx(0.375)
    assert m["average_plasticity"] == pytest.approx(0.2275)
    assert m["lipschitz_const"] == pytest.approx(0.9)
    assert m["forgetting"] == pytest.approx(-0.75)
    assert m["diff_plasticity"] == pytest.approx(-0.29)
    folder = tmp_path / "logs" / "t" / "baseline" / "net" / "lr_0.1"
    folder.mkdir(parents=True)
    (folder / "1.json").write_text(json.dumps(data))
    rows = results_table([tmp_path / "logs"])
    assert rows[0]["approach"] == "baseline" and "| t | baseline | None | 0.3750" in format_table(rows)


# Student report Table 1 (CIFAR-10: accuracy, CF, Lipschitz) and Table 2 (MNIST: plasticity, LoP, Lipschitz),
# plus the notebook's MNIST accuracies and CIFAR plasticities.
CIFAR = {"baseline": (0.5529, -0.6204, 0.4732, 0.4542), "weight_norm": (0.5462, -0.5920, 0.1991, 0.4554),
         "grad_norm": (0.5427, -0.6160, 0.2006, 0.4439), "ratio_norm": (0.5530, -0.6400, 0.2515, 0.4548),
         "usgd": (0.5538, -0.6076, 0.2820, 0.4594), "entire_kernel": (0.1529, -0.0996, 0.2700, 0.0859),
         "column_kernel": (0.1614, -0.1000, 0.2717, 0.0995)}
MNIST = {"baseline": (0.4186, 0.0045, 1.2917, 0.6466), "weight_norm": (0.3277, -0.4570, 1.4502, 0.5216),
         "grad_norm": (0.4608, -0.4393, 0.9892, 0.6939), "ratio_norm": (0.3654, 0.0047, 1.3320, 0.5778),
         "usgd": (0.4552, -0.4374, 1.2344, 0.6945), "entire_kernel": (0.0488, 0.0036, 1.1360, 0.1516),
         "column_kernel": (0.0451, 0.0083, 1.2494, 0.1481)}


@pytest.mark.real_data
def test_student_table_recomputed_to_four_decimals(forgetting_data, tmp_path):
    logs = forgetting_data("upgd-student-logs") / "upgd-student-logs"
    rows = {(r["task"], r["approach"]): r for r in results_table([logs])}
    assert len(rows) == 14
    for name, (acc, cf, lip, plast) in CIFAR.items():
        r = rows[("label_permuted_cifar10_stats", name)]
        assert (round(r["average_accuracy"], 4), round(r["forgetting"], 4), round(r["lipschitz_const"], 4),
                round(r["average_plasticity"], 4)) == (acc, cf, lip, plast), name
    for name, (plast, lop, lip, acc) in MNIST.items():
        r = rows[("input_permuted_mnist_stats", name)]
        assert (round(r["average_plasticity"], 4), round(r["diff_plasticity"], 4), round(r["lipschitz_const"], 4),
                round(r["average_accuracy"], 4)) == (plast, lop, lip, acc), name
    # the plotting command draws the paper-style figures from the same files
    assert plot_main([str(logs), "--out", str(tmp_path / "fig"), "--quiet", "--smooth", "5"]) == 0
    assert sorted(p.name for p in (tmp_path / "fig").iterdir()) == [
        "input_permuted_mnist_stats.png", "label_permuted_cifar10_stats.png"]
