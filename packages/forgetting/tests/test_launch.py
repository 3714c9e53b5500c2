"""The local launcher's slots: GPUs grouped per run (torchrun inside), cores shared on a CPU."""

from __future__ import annotations

import pytest
from forgetting.launch import LocalLauncher
from forgetting_common import UserError


def test_gpus_are_grouped_per_run(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    assert [s["CUDA_VISIBLE_DEVICES"] for s in LocalLauncher(gpus_per_run=2).slots()] == ["0,1", "2,3"]
    assert [s["CUDA_VISIBLE_DEVICES"] for s in LocalLauncher(gpus_per_run=3).slots()] == ["0,1,2"]
    assert [s["CUDA_VISIBLE_DEVICES"] for s in LocalLauncher().slots()] == ["0", "1", "2", "3"]
    assert LocalLauncher(gpus_per_run=2).procs() == 2 and LocalLauncher().procs() is None


def test_more_gpus_than_visible_is_refused(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    with pytest.raises(UserError, match="only 2 GPUs are visible"):
        LocalLauncher(gpus_per_run=4).slots()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(UserError, match="shows no GPU"):
        LocalLauncher(gpus_per_run=2).slots()


def test_cpu_processes_share_the_cores(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    slots = LocalLauncher(procs_per_run=2).slots()
    assert len(slots) == 4 and slots[0]["OMP_NUM_THREADS"] == "1"
    slots = LocalLauncher(jobs=1, procs_per_run=2).slots()
    assert len(slots) == 1 and slots[0]["OMP_NUM_THREADS"] == "4"
