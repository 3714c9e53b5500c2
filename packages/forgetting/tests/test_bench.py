"""`forgetting bench`: discovery of the packages' benchmarks, the table and JSON from fake benchmark
scripts declared here (the real benchmarks are never run in tests), and bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from forgetting import cli
from forgetting.bench import declared
from forgetting.claims import papers, parse_paper

FAKE = '''
import argparse, json, sys
p = argparse.ArgumentParser()
p.add_argument("--size", type=int, required=True)
p.add_argument("--json", default=None)
p.add_argument("--mode", default="ok")
a = p.parse_args()
block = b"x" * (a.size * 2**20)  # written, so it counts in the max RSS
if a.mode == "fail":
    sys.exit("boom: the benchmark broke")
if a.mode == "sleep":
    import time; time.sleep(60)
if a.mode == "stdout":
    print("ignored line")
    print(f"training {3 * a.size} {a.size}")
    sys.exit(0)
rows = [{"case": f"size {a.size}", "ours": 3.0 * a.size, "baseline": 2.0 * a.size, "unit": "it/s",
         "peak_mib": 7.6, "baseline_peak_mib": 9.0},
        {"case": "no baseline", "ours": 1.0, "baseline": None, "unit": "it/s", "peak_mib": 1.0}]
if a.mode == "malformed":
    rows = [{"case": "x", "ours": 1.0}]
with open(a.json, "w") as f:
    json.dump({"rows": rows}, f)
'''


def stdout_rows(text: str) -> list[dict]:
    name, ours, base = text.strip().splitlines()[-1].split()
    return [{"case": name, "ours": float(ours), "baseline": float(base), "unit": "it/s", "peak_mib": 1.0}]


def fake_paper(folder: Path, benchmarks: list[dict]):
    (folder / "bench_fake.py").write_text(FAKE)
    return parse_paper({"name": "fake", "title": "A fake paper", "package_dir": folder, "benchmarks": benchmarks})


def bench(monkeypatch, capsys, paper, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(cli, "papers", lambda: {paper.name: paper})
    code = cli.main(["bench", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_every_package_with_a_benchmarks_folder_declares_its_scripts():
    found = declared(papers())
    root = Path(__file__).resolve().parents[2]
    # every paper package's benchmarks are declared; this package's own (the sweep machinery's
    # cost) is not a paper's and is run directly
    with_folder = {p.parent.parent.name for p in root.glob("*/benchmarks/*.py")} - {"forgetting"}
    assert with_folder <= set(found), with_folder - set(found)
    for name, benches in found.items():
        for b in benches:
            script = b.package_dir / b.script
            assert b.id.startswith(name + ".") and script.is_file(), b
            assert b.quick_args, f"{b.id} has no quick size"
            if b.json_flag:  # the script must accept the flag it is called with
                assert f'"{b.json_flag}"' in script.read_text(), b.id


def test_declaration_fields_are_checked(tmp_path):
    paper = parse_paper({"name": "fake", "title": "t", "package_dir": tmp_path,
                         "benchmarks": [{"name": "a", "script": "b.py", "args": ["--n", "9"]}]})
    (b,) = paper.benchmarks
    assert b.id == "fake.a" and b.quick_args == ("--n", "9")  # no quick size declared: the full one
    assert b.argv(True, "", tmp_path / "r.json") == ["b.py", "--n", "9", "--json", str(tmp_path / "r.json")]
    with pytest.raises(ValueError, match="unknown fields"):
        parse_paper({"name": "fake", "title": "t", "package_dir": tmp_path,
                     "benchmarks": [{"name": "a", "script": "b.py", "quick": []}]})
    with pytest.raises(ValueError, match="duplicate"):
        parse_paper({"name": "fake", "title": "t", "package_dir": tmp_path,
                     "benchmarks": [{"name": "a", "script": "b.py"}, {"name": "a", "script": "c.py"}]})


def test_table_and_json_from_fake_benchmarks(tmp_path, monkeypatch, capsys):
    paper = fake_paper(tmp_path, [
        {"name": "json", "script": "bench_fake.py", "args": ["--size", "300"], "quick_args": ["--size", "64"]},
        {"name": "stdout", "script": "bench_fake.py", "args": ["--size", "1", "--mode", "stdout"],
         "json_flag": None, "rows": stdout_rows},
        {"name": "data", "script": "bench_fake.py", "args": ["--size", "1", "--data", "{data}"]},
    ])
    out = tmp_path / "bench.json"
    monkeypatch.delenv("FORGETTING_DATA", raising=False)
    code, text, _ = bench(monkeypatch, capsys, paper, "--quick", "--out", str(out))
    assert code == 0, text
    lines = text.splitlines()
    assert lines[0].startswith("machine: ") and f"{os.cpu_count()} cores" in lines[0] and "load average" in lines[0]
    row = next(ln for ln in lines if ln.startswith("fake.json: size 64")).split()
    assert row[3:8] == ["192", "128", "it/s", "1.5", "8"] and row[-1] == "9"  # ours, baseline, unit, 192/128, peaks
    assert next(ln for ln in lines if ln.startswith("fake.json: no baseline")).split()[5:7] == ["it/s", "-"]
    assert next(ln for ln in lines if ln.startswith("fake.stdout: training")).split()[2:6] == ["3", "1", "it/s", "3"]
    assert "skipped: needs real data" in next(ln for ln in lines if ln.startswith("fake.data"))
    doc = json.loads(out.read_text())
    assert doc["quick"] is True and doc["machine"]["cores"] == os.cpu_count() and len(doc["load_average_after"]) == 3
    first = doc["benchmarks"][0]
    assert first["argv"] == ["bench_fake.py", "--size", "64", "--json", "<rows.json>"]
    assert first["rows"][0]["ratio"] == pytest.approx(1.5) and first["rows"][1]["ratio"] is None
    assert first["max_rss_mib"] >= 64  # the process's own peak, as the kernel measured it
    assert doc["benchmarks"][2]["error"].startswith("skipped")


def test_full_size_and_data_root(tmp_path, monkeypatch, capsys):
    paper = fake_paper(tmp_path, [
        {"name": "data", "script": "bench_fake.py", "args": ["--size", "2", "--mode", "{data}"],
         "quick_args": ["--size", "1"]}])
    # the "data root" names the fake's mode here, so the substitution shows in what it did
    (tmp_path / "ok").mkdir()
    monkeypatch.chdir(tmp_path)
    code, text, _ = bench(monkeypatch, capsys, paper, "--data", "ok", "--out", "b.json")
    assert code == 0
    doc = json.loads((tmp_path / "b.json").read_text())
    assert doc["quick"] is False and doc["benchmarks"][0]["argv"][:4] == ["bench_fake.py", "--size", "2", "--mode"]
    assert doc["benchmarks"][0]["argv"][4] == str(tmp_path / "ok")


def test_failed_timed_out_and_malformed_benchmarks_are_rows_and_exit_1(tmp_path, monkeypatch, capsys):
    paper = fake_paper(tmp_path, [
        {"name": "fails", "script": "bench_fake.py", "args": ["--size", "1", "--mode", "fail"]},
        {"name": "sleeps", "script": "bench_fake.py", "args": ["--size", "1", "--mode", "sleep"]},
        {"name": "malformed", "script": "bench_fake.py", "args": ["--size", "1", "--mode", "malformed"]},
        {"name": "fine", "script": "bench_fake.py", "args": ["--size", "1"]},
    ])
    code, text, _ = bench(monkeypatch, capsys, paper, "--out", str(tmp_path / "b.json"), "--timeout", "3")
    assert code == 1
    rows = {ln.split()[0]: ln for ln in text.splitlines()}
    assert "failed (exit 1): boom: the benchmark broke" in rows["fake.fails"]
    assert "timed out after 3 s" in rows["fake.sleeps"]
    assert "malformed output" in rows["fake.malformed"] and "lacks baseline, unit, peak_mib" in rows["fake.malformed"]
    assert "fake.fine:" in rows
    assert len(json.loads((tmp_path / "b.json").read_text())["benchmarks"]) == 4


def forgetting(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "forgetting", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args, message", [
    (["--package", "no_such_package"], "declares no benchmark"),
    (["--out", "{tmp}/exists.json"], "exists; pass --overwrite"),
    (["--out", "{tmp}/no/such/folder/b.json"], "no folder"),
    (["--timeout", "0"], "--timeout must be positive"),
    (["--data", "{tmp}/missing"], "is not a folder"),
    (["--quick", "yes"], "unrecognized arguments"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    (tmp_path / "exists.json").write_text("{}")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "b.json")]
    r = forgetting("bench", "--package", "wpl_enas", *args)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert (tmp_path / "exists.json").read_text() == "{}" and not (tmp_path / "b.json").exists()
