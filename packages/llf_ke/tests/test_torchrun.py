"""train_KE_cls.py under ``torchrun --nproc_per_node 2`` on the CPU (gloo), tiny sizes.

* one epoch of 2 ranks x their share of each batch equals one process with the whole batch
  (parameters, BatchNorm statistics, the sharded evaluation) with ``--sync_bn``; without it
  the BatchNorm statistics, and so the parameters, differ;
* the real script: a rank that fails stops the run with one line; ``--resume`` continues the
  run under torchrun; the outputs are written once (rank 0); the weights and masks right after
  a reset are the same on both ranks, though neither was seeded.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from forgetting_common.runlog import read_metrics
from forgetting_common.testing import load_module, torchrun
from llf_ke.cli import parse_args
from llf_ke.fake import write_fake_folder_set
from llf_ke.outputs import read_csv

TESTS = Path(__file__).resolve().parent
SCRIPT = TESTS.parent / "train_KE_cls.py"

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="torch.distributed with gloo is needed")


def _assert_same_state(got: dict, ref: dict, what: str, exact: bool = False) -> None:
    assert got.keys() == ref.keys()
    for key, value in ref.items():
        if value.is_floating_point() and not exact:
            torch.testing.assert_close(got[key], value, rtol=1e-6, atol=1e-9, msg=f"{what} {key}")
        else:
            assert torch.equal(got[key], value), (what, key)


def test_one_epoch_on_two_ranks_equals_one_process(tmp_path):
    done = torchrun([TESTS / "ddp_step.py", tmp_path], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    step = load_module(TESTS / "ddp_step.py", "llf_ke_ddp_step")
    got = {(case, r): torch.load(tmp_path / f"{case}_rank{r}.pt", weights_only=True)
           for case in step.CASES for r in (0, 1)}

    # --sync_bn: shares 3 + 2, then 1 + 1; and a batch of one, 1 + 0 (rank 1's share is empty):
    # parameters, BatchNorm statistics and the sharded evaluation as one process computes them
    for case in ("sync", "sync_empty_share"):
        ref_state, ref_eval = step.reference(case)
        for r in (0, 1):
            _assert_same_state(got[case, r]["state"], ref_state, f"{case} rank {r}")
            for name in ("top1", "top5", "loss"):
                assert got[case, r]["eval"][name] == pytest.approx(ref_eval[name], rel=1e-6, abs=1e-9), (case, name)
    # without it each rank normalises over its own share: not the same update
    ref_state, _ = step.reference("sync")
    assert not torch.allclose(got["plain", 0]["state"]["conv1.weight"], ref_state["conv1.weight"],
                              rtol=1e-4, atol=1e-5)
    # ... except where rank 1 has no example: it joins the step and adds nothing (exactly)
    ref_state, ref_eval = step.reference("empty_share")
    for r in (0, 1):
        _assert_same_state(got["empty_share", r]["state"], ref_state, f"empty share rank {r}", exact=True)
    assert got["empty_share", 0]["eval"] == ref_eval


SNAPSHOT = '''
import os, sys, runpy
from pathlib import Path
import torch
from forgetting_common.errors import UserError
import llf_ke.train as train

out = Path(os.environ["SNAPSHOT_DIR"])
begin = train.Training._begin_generation

def begin_and_record(self, g, gen):
    if g == 1 and self.dist.rank == 1 and os.environ.get("FAIL_RANK1"):
        raise UserError("injected: rank 1 cannot go on")
    after = begin(self, g, gen)
    torch.save(self.model.state_dict(), out / f"rank{self.dist.rank}_gen{g}.pt")
    return after

train.Training._begin_generation = begin_and_record
sys.argv = [sys.argv[1], *sys.argv[2:]]
runpy.run_path(sys.argv[0], run_name="__main__")
'''


def _argv(data: Path, ckpt: Path, *extra: str) -> list[str]:
    # the S1 seed line (LLF of layer4) with tiny sizes; no seed: the ranks start unalike
    return ["--epochs", "2", "--num_generations", "2", "--name", "ddp", "--weight_decay", "0.0001",
            "--arch", "Split_ResNet18", "--reset_layer_name", "layer4", "--set", "Folder", "--data", str(data),
            "--no_wandb", "--device", "cpu", "--image_size", "16", "-t", "0", "--test_interval", "1",
            "--warmup_length", "1", "-b", "4", "--checkpoints_dir", str(ckpt), "--quiet", "--save_model", "--sync_bn",
            *extra]


def test_script_fails_together_resumes_and_writes_once(tmp_path):
    data = tmp_path / "data"
    write_fake_folder_set(data, "Folder", 4, {"train": 3, "val": 2, "test": 2}, size=12)
    ckpt, snaps = tmp_path / "ckpt", tmp_path / "snaps"
    snaps.mkdir()
    wrapper = tmp_path / "wrapper.py"
    wrapper.write_text(SNAPSHOT)
    run = [wrapper, SCRIPT, *_argv(data, ckpt)]

    # rank 1 fails at the start of generation 1: the run stops, with one line of ours
    os.environ["SNAPSHOT_DIR"] = str(snaps)
    try:
        os.environ["FAIL_RANK1"] = "1"
        failed = torchrun(run, tmp_path)
    finally:
        os.environ.pop("FAIL_RANK1")
    assert failed.returncode != 0
    ours = [ln for ln in failed.stderr.splitlines() if "train_KE_cls.py: " in ln]
    assert "train_KE_cls.py: error: injected: rank 1 cannot go on" in ours, failed.stderr[-3000:]
    # the other rank stops quietly (SIGTERM from torchrun) or with the one line of a broken collective
    assert all(ln == "train_KE_cls.py: error: injected: rank 1 cannot go on"
               or ln.startswith("train_KE_cls.py: error: rank 0: stopped: another rank failed")
               or ln == "train_KE_cls.py: terminated (SIGTERM)" for ln in ours), ours
    assert len(ours) <= 2, ours
    frames = [ln for ln in failed.stderr.splitlines() if ln.strip().startswith("File ")]
    assert not [ln for ln in frames if "llf_ke" in ln or "wrapper.py" in ln], failed.stderr[-3000:]

    # --resume under torchrun finishes the run from generation 0's checkpoint
    try:
        resumed = torchrun([*run, "--resume"], tmp_path)
    finally:
        os.environ.pop("SNAPSHOT_DIR")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    exp = ckpt / tmp_path.name / parse_args(_argv(data, ckpt)).exp_name  # the script ran in tmp_path
    summary = json.loads((exp / "summary.json").read_text())
    assert summary["finished"] and [r["generation"] for r in summary["generations"]] == [0, 1]
    assert len(read_csv(next(exp.glob("*.csv")))) == 2
    rows = read_metrics(exp / "metrics.jsonl")
    assert [(r["generation"], r["epoch"]) for r in rows] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    log = (exp / "train_log.txt").read_text()
    assert log.count("output folder") == 2 and "resuming from checkpoint_last.pth at generation 1" in log
    assert "2 processes (torchrun)" in log
    for g in (0, 1):  # one run folder per generation: rank 1 made none
        assert len(list((exp / f"gen_{g}").glob("*/*_g0"))) == 1

    # the reset of generation 1 drew the same values (and masks) on both ranks
    first, second = (torch.load(snaps / f"rank{r}_gen1.pt", weights_only=True) for r in (0, 1))
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key
    saved = torch.load(next((exp / "gen_1").glob("*/*_g0/checkpoints/init_model.state")), weights_only=True)
    for key in first:
        assert torch.equal(saved["state_dict"][key], first[key]), key
