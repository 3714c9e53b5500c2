"""Compact records of finished runs, kept in git, so that another checkout skips those runs.

    packages/forgetting/results/runs/<sweep id>/<scale>/<run name>.json

A record holds what the claim read from the run (its ``values.json``: counts, accuracies,
curves; never the run's full outputs), the run's flags as the claim declares them (with the
``{out}``/``{data}``/``{shared}`` placeholders, so the record is the same on every machine), the
machine, and the wall and CPU time. Long lists of numbers are stored as zlib-compressed NumPy
arrays in base64, so 60,000 per-example counts take kilobytes, not a megabyte of JSON text.

``forgetting reproduce --record`` writes one as each run finishes (``--commit`` also commits it);
every ``forgetting reproduce`` imports the records whose flags match into its sweep folder as
finished runs, so an interrupted paper-scale sweep goes on where any machine left it. Records are
kept only for sweeps of one stage: a later stage reads the files an earlier stage left in the
sweep folder, which a record does not hold.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from forgetting_common import UserError
from forgetting_common.atomic import atomic_write_json

from forgetting.claims import Run
from forgetting.sweep import FINISHED, SweepDir

RECORDS_DIR = Path(__file__).resolve().parents[2] / "results" / "runs"
FORMAT = 1
ARRAY_MIN = 64  # shorter lists stay readable JSON
ARRAY_KEY = "__array__"


def fingerprint(run: Run) -> str:
    """What makes two runs the same computation: the script and its flags (placeholders unexpanded)."""
    text = json.dumps([run.script, list(run.args)], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _pack(arr: np.ndarray) -> str:
    return base64.b64encode(zlib.compress(arr.tobytes(), 9)).decode("ascii")


def _smallest_int(arr: np.ndarray) -> np.ndarray:
    for dtype in (np.uint8, np.int8, np.int16, np.int32):
        info = np.iinfo(dtype)
        if len(arr) == 0 or (arr.min() >= info.min and arr.max() <= info.max):
            return arr.astype(dtype)
    return arr.astype(np.int64)


def _plain_list(values: list) -> np.ndarray | None:
    """A long list of numbers or booleans as the smallest exact NumPy array, else None."""
    if len(values) < ARRAY_MIN or not all(isinstance(v, (bool, int, float)) for v in values):
        return None
    if all(isinstance(v, bool) for v in values):
        return np.asarray(values, dtype=np.bool_)
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        if any(abs(v) >= 2**63 for v in values):
            return None
        return _smallest_int(np.asarray(values, dtype=np.int64))
    return np.asarray(values, dtype=np.float64)  # JSON floats are float64: exact round trip


def encode(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: encode(v) for k, v in value.items()}
    if isinstance(value, list):
        arr = _plain_list(value)
        if arr is None:
            return [encode(v) for v in value]
        spec = {"dtype": arr.dtype.str, "n": len(arr), "zlib_base64": _pack(arr)}
        if arr.dtype.kind in "iu":  # example ids and other sorted columns shrink to almost nothing as steps
            steps = np.diff(arr.astype(np.int64), prepend=0)
            packed = _pack(_smallest_int(steps))
            if len(packed) < len(spec["zlib_base64"]):
                spec.update(zlib_base64=packed, steps=_smallest_int(steps).dtype.str)
        return {ARRAY_KEY: spec}
    return value


def decode(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {ARRAY_KEY}:
            spec = value[ARRAY_KEY]
            dtype = np.dtype(spec["dtype"])
            if dtype.kind not in "biuf":  # only plain numbers: nothing in a record can name an object
                raise ValueError(f"array of dtype {dtype} in a run record")
            stored = np.dtype(spec.get("steps", spec["dtype"]))
            if stored.kind not in "biuf":
                raise ValueError(f"array of dtype {stored} in a run record")
            arr = np.frombuffer(zlib.decompress(base64.b64decode(spec["zlib_base64"])), dtype=stored)
            if "steps" in spec:
                arr = np.cumsum(arr, dtype=np.int64).astype(dtype)
            if len(arr) != int(spec["n"]):
                raise ValueError(f"array holds {len(arr)} values, its record says {spec['n']}")
            return arr.tolist()
        return {k: decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode(v) for v in value]
    return value


def record_path(root: Path, sweep_id: str, scale: str, name: str) -> Path:
    return Path(root) / sweep_id / scale / f"{name}.json"


def recordable(sweep_dir: SweepDir) -> bool:
    return len({int(r.get("stage", 0)) for r in sweep_dir.manifest()["runs"]}) == 1


def machine() -> dict:
    from forgetting.bench import machine as bench_machine

    return bench_machine()


def write_record(root: Path, sweep_dir: SweepDir, run: Run) -> Path:
    """The compact record of a finished run, written atomically; returns its path."""
    manifest = sweep_dir.manifest()
    state = sweep_dir.state(run.name) or {}
    started, ended = state.get("started"), state.get("ended")
    record = {
        "format": FORMAT,
        "sweep": manifest["sweep"],
        "scale": manifest["scale"],
        "run": run.name,
        "fingerprint": fingerprint(run),
        "script": run.script,
        "args": list(run.args),
        "labels": dict(run.labels),
        "command": f"cd {Path(manifest['package_dir']).name} && python {run.script} {' '.join(run.args)}",
        "wall_s": round(ended - started, 1) if started and ended else None,
        "cpu_s": state.get("cpu_s"),
        "max_rss_mib": state.get("max_rss_mib"),
        "attempts": state.get("attempts"),
        "resumed": state.get("resumed"),
        "env": {k: v for k, v in (state.get("env") or {}).items() if k.endswith("_THREADS")},
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ended)) if ended else None,
        "host": state.get("host"),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "machine": machine(),
        "values": encode(sweep_dir.values(run.name)),
    }
    path = record_path(root, manifest["sweep"], manifest["scale"], run.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, record)
    return path


def read_record(path: Path) -> dict:
    try:
        record = json.loads(path.read_text())
        if record.get("format") != FORMAT:
            raise ValueError(f"format {record.get('format')!r}, expected {FORMAT}")
        record["values"] = decode(record["values"])
    except (OSError, ValueError, KeyError, TypeError, zlib.error) as err:
        raise UserError(f"run record {path} is unreadable ({err}); move it away to run that run again") from err
    return record


def import_records(root: Path, sweep_dir: SweepDir, runs: list[Run]) -> list[str]:
    """Mark as finished every unfinished run of the sweep folder that a matching record holds.

    Returns the names imported. A record whose flags differ from the run's (the claim's grid
    changed since) is left alone and the run starts; a run already finished here is kept.
    """
    if not recordable(sweep_dir):
        return []
    manifest = sweep_dir.manifest()
    imported = []
    for run in runs:
        path = record_path(root, manifest["sweep"], manifest["scale"], run.name)
        if not path.exists() or sweep_dir.status(run.name).state == FINISHED:
            continue
        record = read_record(path)
        if record["fingerprint"] != fingerprint(run):
            print(f"forgetting: record {path} was made with other flags than run {run.name} has now; "
                  "running it again", file=sys.stderr)
            continue
        if sweep_dir.run_out(run.name).exists():
            sweep_dir.set_aside_partial_output(run.name)
        sweep_dir.run_dir(run.name).mkdir(parents=True, exist_ok=True)
        atomic_write_json(sweep_dir.run_dir(run.name) / "values.json", record["values"])
        sweep_dir.write_state(run.name, state=FINISHED, from_record=str(path), host=record.get("host"),
                              attempts=record.get("attempts", 1), wall_s=record.get("wall_s"))
        imported.append(run.name)
    return imported


def commit(paths: list[Path], message: str, tries: int = 30) -> str:
    """Commit exactly ``paths`` in their git repository (other staged work is left as it is).

    Returns "" on success, else the reason in one line; a busy index (another git command) is
    waited for. A failed commit loses nothing: the record stays on disk for the next attempt.
    """
    where = paths[0].parent
    top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=where, capture_output=True, text=True)
    if top.returncode != 0:
        return f"{where} is not inside a git repository"
    rel = [str(p.resolve().relative_to(Path(top.stdout.strip()).resolve())) for p in paths]
    last = ""
    for _ in range(tries):
        steps = (["git", "add", "--", *rel], ["git", "commit", "-q", "-m", message, "--only", "--", *rel])
        for argv in steps:
            out = subprocess.run(argv, cwd=top.stdout.strip(), capture_output=True, text=True)
            if out.returncode != 0:
                last = (out.stderr.strip().splitlines() or [f"exit {out.returncode}"])[-1]
                break
        else:
            return ""
        if "index.lock" not in last:
            return last
        time.sleep(1.0)
    return last


def scalar_values(values: dict) -> dict[str, float]:
    """The single numbers of a run's values (its columns and curves left out), for a listing."""
    return {k: v for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def listing(root: Path, sweep: str | None = None) -> list[dict]:
    """Every record under ``root`` (of one sweep, if given): where it ran, how long, its single numbers."""
    rows = []
    for path in sorted(Path(root).glob("*/*/*.json")):
        if sweep and path.parent.parent.name != sweep:
            continue
        record = read_record(path)
        rows.append({"sweep": record["sweep"], "scale": record["scale"], "run": record["run"],
                     "finished_at": record.get("finished_at"), "wall_s": record.get("wall_s"),
                     "cpu_s": record.get("cpu_s"), "max_rss_mib": record.get("max_rss_mib"),
                     "host": record.get("host"), "cpu": (record.get("machine") or {}).get("cpu"),
                     "load": record.get("load_average_at_end"), "command": record["command"],
                     "values": scalar_values(record["values"])})
    return rows
