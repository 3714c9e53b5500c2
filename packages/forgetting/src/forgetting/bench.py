"""`forgetting bench`: every package's benchmark script, one table, one JSON file.

Each benchmark runs as its own process in its package folder, so that its peak memory on a CPU
(the max RSS the kernel reports for the process and its children through ``wait4``) is its own.
The rows come from the script (its JSON document or its stdout, read by the declaration's
``rows``); ``ratio`` is ours / baseline of two throughputs, so above 1 is faster than the baseline.
"""

from __future__ import annotations

import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from forgetting_common import UserError

from forgetting.claims import Benchmark, Paper

ROW_FIELDS = ("case", "ours", "baseline", "unit", "peak_mib")


def declared(known: Mapping[str, Paper]) -> dict[str, list[Benchmark]]:
    """Each package's benchmarks, as its own declaration gives them."""
    found: dict[str, list[Benchmark]] = {}
    for name, paper in known.items():
        benches = list(paper.benchmarks)
        if benches:
            found[name] = benches
    return found


def select(known: Mapping[str, Paper], packages: Sequence[str] | None) -> list[Benchmark]:
    benches = declared(known)
    for name in packages or ():
        if name not in benches:
            raise UserError(f"--package {name!r} declares no benchmark; packages with benchmarks: {', '.join(benches)}")
    return [b for name, bs in benches.items() if not packages or name in packages for b in bs]


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    try:
        torch_version = version("torch")
    except PackageNotFoundError:
        torch_version = "not installed"
    return {"host": platform.node(), "cpu": cpu_model(), "cores": os.cpu_count(), "torch": torch_version,
            "python": platform.python_version(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")}


def load_average() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


@dataclass
class Outcome:
    id: str
    argv: list[str]
    rows: list[dict]
    wall_s: float
    max_rss_mib: float | None
    error: str = ""  # why it gave no rows: failed, timed out, malformed output, skipped

    def as_dict(self) -> dict:
        return {"benchmark": self.id, "argv": self.argv, "wall_s": round(self.wall_s, 2),
                "max_rss_mib": self.max_rss_mib, "error": self.error, "rows": self.rows}


def check_rows(rows: Any) -> list[dict]:
    """The rows a declaration's reader returned, with the ratio added; a malformed row raises ValueError."""
    if not isinstance(rows, list) or not rows:
        raise ValueError("no rows")
    out = []
    for r in rows:
        missing = [k for k in ROW_FIELDS if k not in r]
        if missing:
            raise ValueError(f"a row lacks {', '.join(missing)}")
        ours, base = float(r["ours"]), (None if r["baseline"] is None else float(r["baseline"]))
        ratio = ours / base if base and math.isfinite(base) and base > 0 else None
        out.append({**r, "ours": ours, "baseline": base, "ratio": ratio})
    return out


def last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "no output"


def run_benchmark(bench: Benchmark, quick: bool, data: str, timeout: float) -> Outcome:
    with tempfile.TemporaryDirectory(prefix="forgetting_bench_") as tmp:
        json_path = Path(tmp) / "rows.json"
        argv = bench.argv(quick, data, json_path)
        shown = [a if a != str(json_path) else "<rows.json>" for a in argv]
        if bench.needs_data(quick) and not data:
            return Outcome(bench.id, shown, [], 0.0, None, "skipped: needs real data (--data or $FORGETTING_DATA)")
        script = bench.package_dir / bench.script
        if not script.is_file():
            return Outcome(bench.id, shown, [], 0.0, None, f"failed: no script {script}")
        start = time.perf_counter()
        with open(Path(tmp) / "stdout", "w+") as out, open(Path(tmp) / "stderr", "w+") as err:
            # its own session, so a timeout ends the benchmark's children too
            proc = subprocess.Popen([sys.executable, *argv], cwd=bench.package_dir, stdout=out, stderr=err,
                                    start_new_session=True)
            timed_out = False
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                if time.perf_counter() - start > timeout:
                    os.killpg(proc.pid, signal.SIGKILL)
                    timed_out = True
                    _, status, usage = os.wait4(proc.pid, 0)
                    break
                time.sleep(0.2)
            proc.returncode = os.waitstatus_to_exitcode(status)
            wall = time.perf_counter() - start
            rss = round(usage.ru_maxrss / 1024, 1)  # KiB on Linux
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read(), err.read()
        if timed_out:
            return Outcome(bench.id, shown, [], wall, rss, f"timed out after {timeout:g} s")
        if proc.returncode:
            return Outcome(bench.id, shown, [], wall, rss, f"failed (exit {proc.returncode}): {last_line(stderr)}")
        try:
            if bench.json_flag:
                if not json_path.is_file():
                    raise ValueError(f"it wrote no {bench.json_flag} file")
                doc: Any = json.loads(json_path.read_text())
            else:
                doc = stdout
            rows = check_rows(bench.rows(doc))
        except (ValueError, KeyError, TypeError, ZeroDivisionError) as e:
            return Outcome(bench.id, shown, [], wall, rss, f"malformed output: {type(e).__name__}: {e}")
        return Outcome(bench.id, shown, rows, wall, rss)


def fmt(v: float | None, digits: int = 3) -> str:
    if v is None:
        return "-"
    return f"{v:.{digits}g}" if abs(v) < 10 ** digits else f"{v:.0f}"


def table(outcomes: Sequence[Outcome]) -> str:
    head = ("case", "ours", "baseline", "unit", "ratio", "peak MiB (ours/baseline)")
    body = []
    for o in outcomes:
        if o.error:
            body.append((o.id, "-", "-", "", "-", o.error))
        for r in o.rows:
            peak = f"{r['peak_mib']:.0f}"
            if r.get("baseline_peak_mib") is not None:
                peak += f" / {r['baseline_peak_mib']:.0f}"
            body.append((f"{o.id}: {r['case']}", fmt(r["ours"]), fmt(r["baseline"]), str(r["unit"]),
                         fmt(r["ratio"]), peak))
    widths = [max(len(row[i]) for row in (head, *body)) for i in range(len(head) - 1)]
    lines = []
    for row in (head, *body):
        lines.append("  ".join(c.ljust(w) if i in (0, 3) else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
                     + "  " + row[-1])
    return "\n".join(lines)
