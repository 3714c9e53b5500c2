"""Every command line of the original READMEs parses here, unchanged: with --print_config it
prints its resolved configuration as one JSON object and exits 0, reading no data and writing
nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

SEEDS = Path(__file__).with_name("seed_commands.txt")


def seed_lines() -> list[tuple[str, str]]:
    rows = []
    for line in SEEDS.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            package, command = (part.strip() for part in line.split("|", 1))
            rows.append((package, command))
    return rows


@pytest.mark.parametrize("package, command", seed_lines(), ids=lambda v: v[:60])
def test_seed_command_parses_and_prints_config(package, command, run_script, split, tmp_path):
    scratch = tmp_path / "paths"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    script, args = split(command, scratch)
    code, out, err = run_script(package, script, [*args, "--print_config"], cwd)
    assert code == 0, f"exit {code}: {err.strip()[-500:]}"
    config = json.loads(out.strip().splitlines()[-1])
    assert isinstance(config, dict) and config
    assert not any(cwd.iterdir()), f"--print_config wrote {sorted(p.name for p in cwd.iterdir())}"
    assert not scratch.exists(), "--print_config created a path it was given"


def test_every_package_has_seed_lines():
    packages = {p for p, _ in seed_lines()}
    members = {p.name for p in (Path(__file__).resolve().parents[1] / "packages").iterdir()
               if (p / "pyproject.toml").is_file()} - {"common", "forgetting"}
    assert packages == members
