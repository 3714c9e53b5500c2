"""Shared helpers: run the real command line in-process (one torch import for the whole suite)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture
def run_cli(tmp_path, monkeypatch):
    """``run_cli(argv, mode="stats")`` → the result JSON (dict) written under ``tmp_path/logs``."""
    from upgd.cli import main

    monkeypatch.chdir(tmp_path)  # the original's finished_/failed_ side files land here

    def _run(argv, mode="stats", save_path=None):
        save = str(save_path or tmp_path / "logs")
        args = [*argv, "--save_path", save, "--quiet"]
        assert main(args, mode=mode) == 0
        files = [p for p in Path(save).rglob("*.json") if "_runs" not in p.parts]
        assert files, "no result written"
        newest = max(files, key=lambda p: p.stat().st_mtime_ns)
        return newest, json.loads(newest.read_text())

    return _run

