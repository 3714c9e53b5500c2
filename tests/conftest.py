"""Helpers for the workspace-level tests: run a package script in-process with given argv."""

from __future__ import annotations

import contextlib
import io
import os
import runpy
import shlex
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ROOT / "packages"


def substitute_placeholders(tokens: list[str], scratch: Path) -> list[str]:
    """Replace README placeholders ($DATA_DIR, <data_dir>, …) with paths under ``scratch``."""
    out = []
    for token in tokens:
        if token.startswith("$") or (token.startswith("<") and token.endswith(">")):
            name = token.strip("$<>").replace(" ", "_") or "path"
            token = str(scratch / name)
        out.append(token)
    return out


def split_command(command: str, scratch: Path) -> tuple[str, list[str]]:
    """``python script.py args…`` → (script, args) with placeholders filled in."""
    # Multi-word placeholders such as "<imagenet data path>" become one token first.
    joined = []
    depth = 0
    for ch in command:
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        joined.append("_" if ch == " " and depth > 0 else ch)
    tokens = shlex.split("".join(joined))
    assert tokens[0] in ("python", "python3"), command
    return tokens[1], substitute_placeholders(tokens[2:], scratch)


def run_script_inprocess(package: str, script: str, args: list[str], cwd: Path) -> tuple[int, str, str]:
    """Run ``packages/<package>/<script>`` as ``__main__`` with ``args``; return (code, out, err)."""
    path = PACKAGES / package / script
    assert path.is_file(), f"{path} does not exist"
    out, err = io.StringIO(), io.StringIO()
    old_argv, old_cwd, old_path = sys.argv, os.getcwd(), list(sys.path)
    code = 0
    try:
        sys.argv = [str(path), *args]
        sys.path.insert(0, str(path.parent))
        os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                runpy.run_path(str(path), run_name="__main__")
            except SystemExit as stop:
                code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    finally:
        sys.argv = old_argv
        sys.path[:] = old_path
        os.chdir(old_cwd)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def run_script():
    return run_script_inprocess


@pytest.fixture
def split():
    return split_command
