"""LURE_main.py and ALMA.py under ``torchrun --nproc_per_node 2`` on the CPU (gloo), tiny sizes.

* one epoch of 2 ranks x their share of each batch equals one process with the whole batch with
  ``--sync_bn``, for LURE's ResNet-18 and ResNet-20 and ALMA's ResNet-50 (without it, not);
* the real scripts: a rank that fails stops the run with one line; ``--resume`` continues it
  under torchrun; rank 0 alone prints and writes; SNIP unlearning leaves the same weights on
  both ranks.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from forgetting_common.runlog import read_metrics
from forgetting_common.testing import load_module, torchrun

TESTS = Path(__file__).resolve().parent
PACKAGE = TESTS.parent

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="torch.distributed with gloo is needed")


def test_one_epoch_on_two_ranks_equals_one_process(tmp_path):
    done = torchrun([TESTS / "ddp_step.py", tmp_path], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    step = load_module(TESTS / "ddp_step.py", "lure_ddp_step")
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    for name in step.MODELS:
        ref = step.reference(name)
        for r in (0, 1):
            got = ranks[r][name]
            assert got.keys() == ref.keys()
            for key, value in ref.items():
                if value.is_floating_point():
                    torch.testing.assert_close(got[key], value, rtol=1e-6, atol=1e-9, msg=f"{name} rank {r} {key}")
                else:
                    assert torch.equal(got[key], value), (name, r, key)
    # without --sync_bn each rank normalises over its own share: not the same update
    ref = step.reference("resnet20s")
    assert not all(torch.allclose(ranks[0]["resnet20s_plain"][k], v, rtol=1e-4, atol=1e-5)
                   for k, v in ref.items() if v.is_floating_point())


WRAPPER = '''
import os, sys, runpy
from pathlib import Path
import torch
from forgetting_common.errors import UserError
import lure.train as train

out = Path(os.environ["SNAPSHOT_DIR"])
begin = train._begin_state

def begin_and_record(ctx, k, results):
    if k == 2 and ctx.dist.rank == 1 and os.environ.get("FAIL_RANK1"):
        raise UserError("injected: rank 1 cannot go on")
    progress = begin(ctx, k, results)
    torch.save(ctx.model.state_dict(), out / f"rank{ctx.dist.rank}_state{k}.pt")
    return progress

train._begin_state = begin_and_record
sys.argv = [sys.argv[1], *sys.argv[2:]]
runpy.run_path(sys.argv[0], run_name="__main__")
'''

TINY = ["--data", "D", "--run", "ddp", "--dataset", "cifar10", "--arch", "resnet20s", "--seed", "10", "--epochs", "2",
        "--decreasing_lr", "1", "--batch_size", "16", "--weight_decay", "1e-4", "--meta_batch_size", "40",
        "--meta_batch_number", "3", "--snip_size", "0.20", "--sparsity_level", "1", "--gamma", "0.1",
        "--data_source", "synthetic", "--test_limit", "32", "--device", "cpu", "--quiet", "--image_size", "8",
        "--sync_bn"]


def _our_lines(stderr: str, prog: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith(f"{prog}: ")]


def test_lure_fails_together_resumes_and_writes_once(tmp_path):
    snaps, save, logs = tmp_path / "snaps", tmp_path / "S", tmp_path / "L"
    snaps.mkdir()
    wrapper = tmp_path / "wrapper.py"
    wrapper.write_text(WRAPPER)
    run = [wrapper, PACKAGE / "LURE_main.py", *TINY, "--use_snip", "--save_dir", save, "--log-dir", logs]
    env = {"SNAPSHOT_DIR": str(snaps)}

    failed = torchrun(run, tmp_path, env={**env, "FAIL_RANK1": "1"})
    assert failed.returncode != 0
    ours = _our_lines(failed.stderr, "LURE_main.py")
    assert "LURE_main.py: error: injected: rank 1 cannot go on" in ours, failed.stderr[-3000:]
    assert len(ours) <= 3 and all("injected" in ln or "another rank failed" in ln or "stopped" in ln
                                  or "terminated" in ln for ln in ours), ours
    frames = [ln for ln in failed.stderr.splitlines() if ln.strip().startswith("File ")]
    assert not [ln for ln in frames if "lure" in ln or "wrapper.py" in ln], failed.stderr[-3000:]
    assert (save / "anytime_state.pth.tar").is_file()

    resumed = torchrun([*run, "--resume"], tmp_path, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stdout.count("Final Test Accuracy:") == 1  # rank 0 alone prints
    assert resumed.stdout.count("resuming after state 1") == 1
    results = json.loads((save / "results.json").read_text())
    assert results["finished"] and [s["state"] for s in results["states"]] == [1, 2, 3]
    for name in ["randinit.pth.tar", "snip_mask_1.pth", "snip_mask_2.pth", *(f"{k}checkpoint.pth.tar" for k in (1, 2, 3))]:
        assert (save / name).is_file(), name
    rows = [r for r in read_metrics(logs / "ddp" / "metrics.jsonl") if "epoch" in r]
    assert [(r["state"], r["epoch"]) for r in rows] == [(k, e) for k in (1, 2, 3) for e in (0, 1)]
    # SNIP unlearning at states 2 and 3 left the same weights on both ranks
    for k in (2, 3):
        first, second = (torch.load(snaps / f"rank{r}_state{k}.pt", weights_only=True) for r in (0, 1))
        for key in first:
            assert torch.equal(first[key], second[key]), (k, key)


def test_alma_under_torchrun(tmp_path):
    save = tmp_path / "S"
    # ALMA.py has no --gamma; unseeded: every rank takes rank 0's seed
    argv = [a for a in TINY if a not in ("--seed", "10", "--gamma", "0.1")]
    done = torchrun([PACKAGE / "ALMA.py", *argv, "--save_dir", save, "--corruption_eval"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("Final Test Accuracy:") == 1
    assert "2 processes (torchrun)" in done.stdout
    results = json.loads((save / "results.json").read_text())
    assert results["finished"] and len(results["states"]) == 3
    assert all(len(v) == 5 for v in results["corruption_acc"].values())  # evaluated on both ranks' shares
    rows = [r for r in read_metrics(save / "wb_offline" / "metrics.jsonl") if "epoch" in r]
    assert len(rows) == 6  # 3 states x 2 epochs, once
