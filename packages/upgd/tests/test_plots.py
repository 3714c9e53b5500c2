"""core/plot/plot_stats.py on runs of the seed command (tiny, fake data): one paper-style figure
per task, written through forgetting_common.figures.save_figure, with real content."""

from __future__ import annotations

import numpy as np
from upgd.plot_cli import main as plot_main
from upgd.seed_commands import SEED_HPS

TINY = ["--network", "convolutional_network_relu_with_hooks", "--n_samples", "41", "--change_freq", "10",
        "--fake_data", "1", "--stats_every", "10", "--tensorboard", "0"]


def test_plot_stats_draws_a_nontrivial_figure_per_task(run_cli, tmp_path):
    import matplotlib.image

    hps = SEED_HPS[2:]  # without --seed 19: each run names its own seed
    for learner in ("baseline", "usgd"):
        for seed in ("1", "2"):
            run_cli(["--task", "label_permuted_cifar10_stats", "--learner", learner, "--seed", seed, *hps, *TINY])
    out = tmp_path / "figures"
    assert plot_main([str(tmp_path / "logs"), "--out", str(out), "--quiet"]) == 0
    assert plot_main([str(tmp_path / "logs"), "--out", str(out), "--quiet", "--format", "pdf"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["label_permuted_cifar10_stats.pdf",
                                                     "label_permuted_cifar10_stats.png"]
    png = out / "label_permuted_cifar10_stats.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    image = matplotlib.image.imread(png)
    assert image.shape[1] == 15 * 120 and image.shape[0] == int(3.6 * 120)  # three panels at dpi 120
    rgb = image[..., :3].reshape(-1, 3)
    # two learners' curves and their standard-error bands: more than black text on white
    colours = {tuple(c) for c in np.round(rgb, 1) if not (c.min() > 0.9 or c.max() < 0.3 or np.ptp(c) < 0.1)}
    assert len(colours) >= 10
    assert (out / "label_permuted_cifar10_stats.pdf").read_bytes()[:5] == b"%PDF-"
    assert not list(out.glob("*.tmp*"))  # no temporary file left behind
