"""Shared fixtures: run the real entry points in-process (fast) or as subprocesses (exit codes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from forgetting_common.safeload import load_checkpoint

PACKAGE = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)


class Runner:
    def __init__(self, capsys, tmp_path: Path) -> None:
        self.capsys = capsys
        self.tmp = tmp_path

    def main(self, argv: list[str], alma: bool = False):
        """Call the script's main in-process; returns (results, stdout, warnings)."""
        from lure.cli import main

        self.capsys.readouterr()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            results = main([str(a) for a in argv], alma=alma)
        out = self.capsys.readouterr().out
        return results, out, [str(w.message) for w in caught]

    def error(self, argv: list[str], alma: bool = False) -> tuple[int, str]:
        """Call through run_main, as the scripts do; returns (exit status, stderr)."""
        from forgetting_common import run_main
        from lure.cli import main

        self.capsys.readouterr()
        with pytest.raises(SystemExit) as info:
            run_main(lambda: main([str(a) for a in argv], alma=alma), prog="ALMA.py" if alma else "LURE_main.py")
        return info.value.code, self.capsys.readouterr().err

    @staticmethod
    def subprocess(script: str, argv: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
        full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
        return subprocess.run([sys.executable, str(PACKAGE / script), *map(str, argv)], cwd=PACKAGE,
                              capture_output=True, text=True, env=full_env, timeout=300)


@pytest.fixture
def runner(capsys, tmp_path) -> Runner:
    return Runner(capsys, tmp_path)


@pytest.fixture
def load():
    def _load(path: Path):
        if str(path).endswith(".json"):
            return json.loads(Path(path).read_text())
        return load_checkpoint(path)  # our outputs must load without unpickling code

    return _load
