"""Short checks on the real data under $FORGETTING_DATA (skipped when it is unset).

* two-model example on real MNIST (a 3,000/1,000 slice, 3 seeds): asserts the finding that
  plain training of B raises A's test loss while WPL keeps it;
* ENAS-RNN on a Penn Treebank slice, with and without WPL: reports the forgetting measure
  (``diff = err2 - err1``); too short to assert a direction (see the README's reproduction).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

pytestmark = pytest.mark.real_data


def test_two_models_mnist_wpl_keeps_model_a(forgetting_data, tmp_path, monkeypatch, capsys):
    from wpl_enas.two_models import main

    real_data_root = forgetting_data("MNIST/raw")
    monkeypatch.chdir(tmp_path)
    res = main([f"--data_dir={real_data_root}", "--dataset=mnist", "--train_limit=3000", "--test_limit=1000",
                "--epochs_a=5", "--epochs_b=5", "--seeds=1,2,3", "--arms=plain,wpl:1000", "--quiet",
                "--output_dir=tm"])
    plain, wpl = res["summary"]["plain"], res["summary"]["wpl a=1000"]
    with capsys.disabled():
        print(f"\n[two models, MNIST slice, 3 seeds] A loss rise: plain {plain['A_loss_rise_mean']:+.4f} "
              f"(per seed {np.round(plain['A_loss_rise_per_seed'], 4).tolist()}), WPL a=1000 "
              f"{wpl['A_loss_rise_mean']:+.4f}; B acc plain {plain['B_acc_mean']:.3f}, WPL {wpl['B_acc_mean']:.3f}")
    assert plain["A_loss_rise_mean"] >= 0.03
    assert wpl["A_loss_rise_mean"] <= 0.3 * plain["A_loss_rise_mean"]
    assert all(w < p for w, p in zip(wpl["A_loss_rise_per_seed"], plain["A_loss_rise_per_seed"]))
    assert wpl["B_acc_mean"] >= plain["B_acc_mean"] - 0.03


def test_enas_rnn_ptb_slice_reports_forgetting(forgetting_data, tmp_path, monkeypatch, capsys):
    from wpl_enas.run import main

    real_data_root = forgetting_data("ptb/train.txt")
    monkeypatch.chdir(tmp_path)
    workdir = tmp_path
    common = [f"--data_dir={real_data_root}", "--dataset=ptb", "--num_gpu=0", "--num_blocks=3", "--shared_embed=32",
              "--shared_hid=32", "--controller_hid=16", "--batch_size=8", "--test_batch_size=8",
              "--shared_rnn_max_length=10", "--shared_max_step=4", "--num_batch_per_iter=3",
              "--controller_max_step=5", "--train_controller=True", "--start_training_controller=1", "--max_epoch=4",
              "--save_epoch=10", "--derive_num_sample=2", "--shared_dropout=0", "--shared_dropouti=0",
              "--shared_dropoute=0", "--shared_wdrop=0", "--fisher_clip_by_norm=10.0", "--alpha_fisher=60.0",
              "--set_fisher_zero_per_iter=2", "--policy_batch_size=1", "--train_limit=20000", "--test_limit=1000",
              "--use_tensorboard=False", "--quiet"]
    means = {}
    for arm, start in (("plain", 100000), ("wpl", 1)):
        out = main(common + [f"--start_using_fisher={start}", f"--comment={arm}"])
        recs = [json.loads(line) for line in (workdir / "logs" / f"ptb_{arm}" / "forgetting.jsonl").read_text().splitlines()]
        assert [r["epoch"] for r in recs] == [1, 2, 3]
        assert all(math.isfinite(d) for r in recs for d in r["diff"])
        assert out["trainer"].data.num_tokens == 10000
        means[arm] = float(np.mean([r["mean_diff"] for r in recs]))
        if arm == "wpl":
            assert any(t["wpl"] > 0 for t in out["trainer"].wpl_trace)
    with capsys.disabled():
        print(f"\n[ENAS-RNN, PTB slice, 1 seed, epochs 1-3] mean diff (valid ppl after - before): "
              f"plain {means['plain']:+.2f}, WPL {means['wpl']:+.2f} (report only)")
