"""The workspace's shape: every member installs and imports, and has what the house asks for."""

from __future__ import annotations

import importlib
import shlex
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MEMBERS = sorted(p for p in (ROOT / "packages").iterdir() if (p / "pyproject.toml").is_file())


def import_name(member: Path) -> str:
    return "forgetting_common" if member.name == "common" else member.name


#: The members that are not a paper's package: the shared library and the sweep command.
NOT_PAPERS = {"common", "forgetting"}


def test_members_are_the_seven_papers_the_library_and_the_command():
    assert [m.name for m in MEMBERS] == [
        "common", "ease_of_teaching", "example_forgetting", "forgetting", "llf_ke", "lure",
        "targeted_forgetting", "upgd", "wpl_enas",
    ]


@pytest.mark.parametrize("member", MEMBERS, ids=lambda m: m.name)
def test_member_imports_and_has_readme_and_tests(member):
    module = importlib.import_module(import_name(member))
    assert Path(module.__file__).is_relative_to(member / "src")
    assert (member / "README.md").is_file()
    assert list((member / "tests").glob("test_*.py")), f"{member.name} has no tests"
    meta = tomllib.loads((member / "pyproject.toml").read_text())["project"]
    assert meta["requires-python"] == ">=3.11"
    if member.name != "common":
        assert "forgetting-common" in meta["dependencies"]
    if member.name not in NOT_PAPERS:
        assert "Deviations from the original" in (member / "README.md").read_text()
        assert list((member / "benchmarks").glob("*.py")), f"{member.name} has no benchmark script"


def readme_commands() -> list[str]:
    """The shell commands in the root README's ```bash blocks (continuation lines joined)."""
    text = (ROOT / "README.md").read_text()
    commands, inside, current = [], False, ""
    for line in text.splitlines():
        if line.startswith("```"):
            inside = line.strip() == "```bash" if not inside else False
            continue
        if inside and line.strip() and not line.lstrip().startswith("#"):
            current += line.rstrip("\\").strip() + " "
            if not line.rstrip().endswith("\\"):
                commands.append(current.strip())
                current = ""
    return commands


def test_readme_names_the_test_command():
    assert "uv run pytest" in readme_commands()


def readme_inline_commands() -> list[str]:
    """Every `cd packages/... && uv run python ...` written inline in the root README."""
    import re

    return re.findall(r"`(cd packages/[^`]+ && uv run python [^`]+)`", (ROOT / "README.md").read_text())


@pytest.mark.parametrize("command", [c for c in readme_commands() if "uv run python" in c] + readme_inline_commands(),
                         ids=lambda c: c[:50])
def test_readme_job_commands_are_valid(command, run_script, tmp_path):
    parts = [p.strip() for p in command.split("&&")]
    assert parts[0].startswith("cd packages/"), command
    package = parts[0].split("/", 1)[1]
    tokens = shlex.split(parts[1])
    assert tokens[:3] == ["uv", "run", "python"], command
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    code, out, err = run_script(package, tokens[3], [*tokens[4:], "--print_config"], cwd)
    assert code == 0, err[-500:]
    assert not any(cwd.iterdir())


@pytest.mark.parametrize("command", [c for c in readme_commands() if c.startswith("uv run forgetting reproduce")],
                         ids=lambda c: c[:60])
def test_readme_forgetting_commands_name_a_claim_and_its_scale(command):
    from forgetting.claims import discover

    tokens = shlex.split(command)
    claim = discover()[tokens[4]]
    scale = tokens[tokens.index("--scale") + 1]
    assert claim.sweep is not None and scale in claim.sweep.grids


#: The rooms every paper package has (CONTRIBUTING.md): the same role under the same name.
ROOMS = ("cli", "data", "models", "train", "checkpoint", "plots", "claims")


@pytest.mark.parametrize("member", [m for m in MEMBERS if m.name not in NOT_PAPERS], ids=lambda m: m.name)
def test_paper_package_has_the_house_rooms_and_small_modules(member):
    src = member / "src" / member.name
    missing = [room for room in ROOMS if not (src / f"{room}.py").is_file() and not (src / room).is_dir()]
    assert not missing, f"{member.name} lacks {missing} (see CONTRIBUTING.md)"
    large = {p.name: n for p in src.rglob("*.py") if (n := len(p.read_text().splitlines())) > 420}
    assert not large, f"modules past ~400 lines do two jobs: {large}"
