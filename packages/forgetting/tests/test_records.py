"""Run records: compact, exact, imported by any checkout as finished runs, committed one by one.

The sweep is real: `upgd.label_permuted` at smoke scale (2 runs of the original run_stats.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from forgetting import records

CLAIM = "upgd.label_permuted"
SWEEP = "upgd.label_permuted_digits"
RUNS = ["sgd_seed0", "upgd_fo_global_seed0"]
ENV = {**os.environ, "MPLBACKEND": "Agg"}


def forgetting(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "forgetting", *args], capture_output=True, text=True, env=ENV,
                          timeout=300, cwd=cwd)


def git(repo: Path, *args: str) -> str:
    out = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True)
    return out.stdout


def test_encoding_is_exact_and_compact():
    rng = [(i * 7919) % 13 for i in range(60000)]
    values = {"ids": list(range(60000)), "counts": rng, "never": [i % 97 == 0 for i in range(60000)],
              "first": [-1 if i % 50 == 0 else i % 200 for i in range(60000)],
              "curve": [0.1 * i for i in range(400)], "short": [1, 2, 3], "acc": 98.25, "mixed": [1, "a"] * 40}
    encoded = records.encode(values)
    assert records.decode(json.loads(json.dumps(encoded))) == values
    assert encoded["short"] == [1, 2, 3] and encoded["mixed"] == [1, "a"] * 40  # readable where it can be
    assert encoded["counts"]["__array__"]["dtype"] == "|u1" and encoded["first"]["__array__"]["dtype"] == "<i2"
    assert encoded["ids"]["__array__"]["steps"] == "|u1"
    assert len(json.dumps(encoded)) < 60_000  # 240k numbers in under 60 kB, against about 1 MB of plain JSON


def test_a_record_cannot_name_an_object_dtype():
    bad = {"__array__": {"dtype": "|O", "n": 1, "zlib_base64": ""}}
    with pytest.raises(ValueError, match="dtype object"):
        records.decode(bad)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> tuple[Path, Path]:
    """A git repository holding the records, results and ledger of one real smoke sweep run with --commit."""
    repo = tmp_path_factory.mktemp("repo")
    git(repo, "init", "-q")
    git(repo, "config", "user.email", "t@example.org")
    git(repo, "config", "user.name", "t")
    (repo / "other.txt").write_text("staged work of someone else\n")
    git(repo, "add", "other.txt")  # staged, never committed by the sweep
    out = tmp_path_factory.mktemp("sweep") / "sweep"
    r = forgetting("reproduce", CLAIM, "--scale", "smoke", "--jobs", "2", "--out", str(out), "--quiet", "--record",
                   "--commit", "--records", str(repo / "runs"), "--results", str(repo / "results"),
                   "--ledger_file", str(repo / "LEDGER.md"))
    assert r.returncode == 0, r.stderr[-2000:]
    return repo, out


def test_each_run_is_recorded_and_committed_alone(recorded):
    repo, out = recorded
    for name in RUNS:
        path = repo / "runs" / SWEEP / "smoke" / f"{name}.json"
        record = records.read_record(path)
        assert record["values"] == json.loads((out / "runs" / name / "values.json").read_text())
        assert record["wall_s"] > 0 and record["cpu_s"] > 0 and record["max_rss_mib"] > 50
        assert "{out}" in record["args"] and str(out) not in json.dumps(record["args"])  # machine-independent
        assert record["machine"]["cores"] >= 1
    log = git(repo, "log", "--format=%s", "--name-only")
    for name in RUNS:
        assert f"results: {SWEEP} {name} at scale smoke" in log
    assert "results: upgd.label_permuted at scale smoke: reproduced" in log
    assert "LEDGER.md" in log and "results/upgd.label_permuted.json" in log
    assert "other.txt" not in log  # the staged file of someone else stayed out of every commit
    assert "A  other.txt" in git(repo, "status", "--short")


def test_a_fresh_sweep_takes_recorded_runs_as_finished(recorded, tmp_path):
    repo, first = recorded
    out = tmp_path / "elsewhere"
    r = forgetting("reproduce", CLAIM, "--scale", "smoke", "--out", str(out), "--quiet", "--records", str(repo / "runs"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "2 runs taken as finished from their records" in r.stderr
    for name in RUNS:
        state = json.loads((out / "runs" / name / "state.json").read_text())
        assert state["from_record"].endswith(f"{name}.json") and not (out / "runs" / name / "out").exists()
    ours = json.loads((out / f"{CLAIM}.json").read_text())["measured"]
    theirs = json.loads((first / f"{CLAIM}.json").read_text())["measured"]
    assert ours == theirs
    status = forgetting("status", str(out))
    assert "from record" in status.stdout


def test_a_record_of_other_flags_is_not_used(recorded, tmp_path):
    repo, _ = recorded
    runs = tmp_path / "runs"
    subprocess.run(["cp", "-r", str(repo / "runs"), str(runs)], check=True)
    path = runs / SWEEP / "smoke" / "sgd_seed0.json"
    doc = json.loads(path.read_text())
    doc["fingerprint"] = "0" * 16
    path.write_text(json.dumps(doc))
    out = tmp_path / "sweep"
    r = forgetting("reproduce", CLAIM, "--scale", "smoke", "--out", str(out), "--quiet", "--records", str(runs))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "made with other flags" in r.stderr and "1 runs taken as finished" in r.stderr
    assert "from_record" not in json.loads((out / "runs" / "sgd_seed0" / "state.json").read_text())


def test_a_corrupt_record_is_one_line(recorded, tmp_path):
    repo, _ = recorded
    runs = tmp_path / "runs"
    (runs / SWEEP / "smoke").mkdir(parents=True)
    (runs / SWEEP / "smoke" / "sgd_seed0.json").write_text("{not json")
    r = forgetting("reproduce", CLAIM, "--scale", "smoke", "--out", str(tmp_path / "s"), "--quiet", "--records", str(runs))
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("forgetting: error: run record") and "Traceback" not in r.stderr


def test_commit_without_record_is_refused(tmp_path):
    r = forgetting("reproduce", CLAIM, "--scale", "smoke", "--out", str(tmp_path / "s"), "--commit")
    assert r.returncode == 2 and "pass --record too" in r.stderr


def test_records_lists_each_run_with_its_time_and_numbers(recorded):
    repo, _ = recorded
    r = forgetting("records", "--records", str(repo / "runs"))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith(f"{SWEEP} smoke ") for line in lines)
    assert "CPU-min" in lines[0] and "acc_first20" in lines[0]
    doc = json.loads(forgetting("records", "--records", str(repo / "runs"), "--json").stdout)
    assert {d["run"] for d in doc} == set(RUNS) and all(d["wall_s"] > 0 for d in doc)
    assert "no run records" in forgetting("records", "--records", str(repo / "runs"), "--sweep", "x.y").stdout
