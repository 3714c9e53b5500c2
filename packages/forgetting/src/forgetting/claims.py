"""Claims as data: what a paper states, the grid of runs that measures it, and the verdict rule.

Paper packages declare their claims in ``src/<pkg>/claims.py`` and name a function returning
them under the entry-point group ``forgetting.claims``; this module finds them and turns them
into the typed records below. A paper package never imports this package: it declares plain
data (dicts, lists, tuples) and plain functions, in this shape::

    {"name": "upgd", "title": "...", "package_dir": Path(...),
     "commands": {"short_name": ["script.py", "--flag", "value", ...]},
     "sweeps": {"sweep_name": {"grids": {"smoke": fn, "cpu": fn, "paper": fn},  # fn() -> [run, ...]
                               "read": fn,              # (run dict, out folder) -> JSON-able dict
                               "resume_args": [...], "needs_data": bool}},
     "claims": [{"name": "...", "statement": "...", "source": "Fig. 1", "paper_value": "91.7 %",
                 "sweep": "sweep_name", "measure": fn, "summary": fn, "figure": fn,
                 "verdict": ("greater", "a", "b", 0.0) | ("within", "key", paper, tol) | ("all", rule, ...),
                 "data": {"cpu": "real MNIST, 4k"}, "not_run": "why (no sweep)"}],
     "benchmarks": [{"name": "search", "script": "benchmarks/bench.py", "args": [...],  # full size
                     "quick_args": [...],             # `forgetting bench --quick`: a few minutes on 2 cores
                     "json_flag": "--json",           # the script writes its rows to this path (None: stdout)
                     "rows": fn}]}                    # optional: JSON document (or stdout) -> rows

A benchmark row is ``{"case", "ours", "baseline", "unit", "peak_mib"[, "baseline_peak_mib"]}``:
``ours`` and ``baseline`` are throughputs in ``unit`` (higher is faster), so ``ours / baseline``
is the speed-up; without ``rows`` the script's JSON document must hold them as ``{"rows": [...]}``.

A run is ``{"name": ..., "script": ..., "args": [...], "labels": {...}, "stage": 0}``, with
``"resume": False`` for a run whose script has no resume flag (a sweep's short helper steps: a
sorting script, a data export) although the sweep's main script has one, and ``"gpus": N`` for a
run that needs N GPUs (N > 1 starts it through torchrun, one process per GPU).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from forgetting_common import UserError

SCALES = ("smoke", "cpu", "paper")
ENTRY_POINT_GROUP = "forgetting.claims"


@dataclass(frozen=True)
class Run:
    """One run of a sweep: an original script with its original flags.

    In ``args``, ``{out}`` stands for the run's own output folder (inside the sweep folder),
    ``{shared}`` for the sweep's shared folder (where runs of one stage leave what a later stage
    reads, e.g. statistics files and the sorting file they give) and ``{data}`` for the data root
    (``$FORGETTING_DATA``); nothing else is substituted. Runs of stage k start once every run of
    the stages before it has finished.
    """

    name: str
    script: str
    args: tuple[str, ...]
    labels: Mapping[str, Any] = field(default_factory=dict)  # grid coordinates, for aggregation
    stage: int = 0
    resume: bool = True  # False: the sweep's resume_args do not apply to this run's script
    gpus: int = 0  # GPUs one run uses; above 1 the run is started through torchrun, one process per GPU

    @classmethod
    def parse(cls, d: Mapping[str, Any]) -> Run:
        gpus = int(d.get("gpus", 0))
        if gpus < 0:
            raise ValueError(f"run {d.get('name')}: gpus must be >= 0")
        return cls(name=str(d["name"]), script=str(d["script"]), args=tuple(str(a) for a in d["args"]),
                   labels=dict(d.get("labels", {})), stage=int(d.get("stage", 0)), resume=bool(d.get("resume", True)),
                   gpus=gpus)

    def as_dict(self) -> dict:
        return {"name": self.name, "script": self.script, "args": list(self.args), "labels": dict(self.labels),
                "stage": self.stage, "resume": self.resume, "gpus": self.gpus}

    def argv(self, out: Path, data: str, shared: Path) -> list[str]:
        return [self.script, *(a.replace("{out}", str(out)).replace("{shared}", str(shared)).replace("{data}", data)
                               for a in self.args)]


@dataclass(frozen=True)
class Sweep:
    """The grid of runs behind one or more claims, and how one run's outputs become numbers.

    ``read(run, out_dir)`` returns a JSON-able dict (numbers, curves) from the folder a finished
    run wrote; ``resume_args`` (the script's resume flag) are appended when an interrupted run
    is started again in its own folder. Without them, or for a run marked ``resume: False``,
    the partial output is set aside and the run starts over.
    """

    id: str
    package_dir: Path
    grids: Mapping[str, Callable[[], Sequence[Run]]]
    read: Callable[[dict, Path], dict]  # (run as a dict, out folder) -> numbers
    resume_args: tuple[str, ...] = ()
    needs_data: bool = False  # True: the runs read $FORGETTING_DATA

    def runs(self, scale: str) -> list[Run]:
        if scale not in self.grids:
            raise UserError(f"sweep {self.id} has no scale {scale!r}; it has: {', '.join(self.grids)}")
        runs = [Run.parse(r) for r in self.grids[scale]()]
        names = [r.name for r in runs]
        if len(set(names)) != len(names):
            raise ValueError(f"sweep {self.id}: duplicate run names at scale {scale}")
        return runs


# --- verdict rules: measured numbers -> "reproduced" / "not reproduced" ---------------------

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"


@dataclass(frozen=True)
class Within:
    """Reproduced when ``measured[key]`` is within ``tolerance`` of the paper's number."""

    key: str
    paper: float
    tolerance: float

    def __call__(self, m: Mapping[str, float]) -> str:
        return REPRODUCED if abs(m[self.key] - self.paper) <= self.tolerance else NOT_REPRODUCED

    def describe(self) -> str:
        return f"|{self.key} - {self.paper:g}| <= {self.tolerance:g}"


@dataclass(frozen=True)
class Greater:
    """Reproduced when ``measured[high] - measured[low] > margin`` (the paper's direction)."""

    high: str
    low: str
    margin: float = 0.0

    def __call__(self, m: Mapping[str, float]) -> str:
        return REPRODUCED if m[self.high] - m[self.low] > self.margin else NOT_REPRODUCED

    def describe(self) -> str:
        return f"{self.high} - {self.low} > {self.margin:g}"


@dataclass(frozen=True)
class AllOf:
    """Reproduced when every rule is."""

    rules: tuple[Any, ...]

    def __call__(self, m: Mapping[str, float]) -> str:
        return REPRODUCED if all(r(m) == REPRODUCED for r in self.rules) else NOT_REPRODUCED

    def describe(self) -> str:
        return " and ".join(r.describe() for r in self.rules)


@dataclass(frozen=True)
class Claim:
    """One row of the ledger: a paper's statement, its source and value, and how we measure it.

    ``measure(values)`` maps ``{run name: read(run)}`` of the sweep to named numbers;
    ``summary(measured)`` writes them as the ledger's "our figure" text; ``figure(values,
    measured, path)`` draws the PNG. ``sweep`` is None for a claim we cannot run at all (its
    ledger row then says so in ``not_run``).
    """

    id: str
    paper: str
    statement: str
    source: str
    paper_value: str
    verdict: Any
    sweep: Sweep | None
    measure: Callable[[Mapping[str, dict]], dict[str, float]] | None = None
    summary: Callable[[Mapping[str, float]], str] | None = None
    figure: Callable[[Mapping[str, dict], Mapping[str, float], Path], None] | None = None
    data: Mapping[str, str] = field(default_factory=dict)  # scale -> what data the runs read
    not_run: str = ""  # why there is no runnable grid (then sweep is None)

    @property
    def package(self) -> str:
        return self.id.split(".", 1)[0]

    @property
    def is_analysis(self) -> bool:
        """A question between the papers (``forgetting analyse``): no paper value, no verdict, not in the ledger."""
        return self.verdict is None


def finite(m: Mapping[str, float]) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in m.values())


def rule(spec: Sequence[Any]) -> Within | Greater | AllOf:
    """A verdict rule from its data spelling: ("within", key, paper, tol), ("greater", hi, lo[, margin]), ("all", ...)."""
    kind, *rest = spec
    if kind == "within":
        return Within(str(rest[0]), float(rest[1]), float(rest[2]))
    if kind == "greater":
        return Greater(str(rest[0]), str(rest[1]), float(rest[2]) if len(rest) > 2 else 0.0)
    if kind == "all":
        return AllOf(tuple(rule(r) for r in rest))
    raise ValueError(f"unknown verdict rule {kind!r}")


@dataclass(frozen=True)
class Paper:
    """What a paper package declares: its original command lines by short name, and its claims."""

    name: str  # the package (import) name, also the prefix of its claim ids
    title: str
    package_dir: Path
    commands: Mapping[str, tuple[str, ...]]  # short name -> (script, *original flags)
    claims: tuple[Claim, ...]
    benchmarks: tuple[Benchmark, ...] = ()
    analyses: tuple[Claim, ...] = ()  # questions between the papers: a sweep and a figure, no paper value, no verdict


def standard_rows(doc: Any) -> list[dict]:
    """The benchmark contract's own JSON document: ``{"rows": [row, ...], ...}``."""
    return list(doc["rows"])


@dataclass(frozen=True)
class Benchmark:
    """A package's benchmark script, run by `forgetting bench` in the package folder, one process each.

    ``{data}`` in its args stands for the data root (a benchmark needing it is skipped without
    one). With ``json_flag`` the script is called with ``<json_flag> PATH`` and ``rows`` reads
    the JSON document it writes there; with ``json_flag`` None, ``rows`` reads its stdout.
    """

    id: str
    package_dir: Path
    script: str
    args: tuple[str, ...]
    quick_args: tuple[str, ...]
    rows: Callable[[Any], list[dict]] = standard_rows
    json_flag: str | None = "--json"

    def argv(self, quick: bool, data: str, json_path: Path) -> list[str]:
        args = [a.replace("{data}", data) for a in (self.quick_args if quick else self.args)]
        return [self.script, *args, *((self.json_flag, str(json_path)) if self.json_flag else ())]

    def needs_data(self, quick: bool) -> bool:
        return any("{data}" in a for a in (self.quick_args if quick else self.args))


def parse_benchmark(paper: str, package_dir: Path, b: Mapping[str, Any]) -> Benchmark:
    unknown = set(b) - {"name", "script", "args", "quick_args", "json_flag", "rows"}
    if unknown:
        raise ValueError(f"benchmark {paper}.{b.get('name')}: unknown fields {sorted(unknown)}")
    return Benchmark(id=f"{paper}.{b['name']}", package_dir=package_dir, script=str(b["script"]),
                     args=tuple(str(a) for a in b.get("args", ())),
                     quick_args=tuple(str(a) for a in b.get("quick_args", b.get("args", ()))),
                     rows=b.get("rows") or standard_rows, json_flag=b.get("json_flag", "--json"))


def papers() -> dict[str, Paper]:
    """Every paper package installed, by name, found through the ``forgetting.claims`` entry points."""
    found: dict[str, Paper] = {}
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        paper = parse_paper(ep.load()())
        if paper.name != ep.name:
            raise ValueError(f"entry point {ep.name} returned paper {paper.name}")
        for claim in paper.claims:
            if not claim.id.startswith(paper.name + "."):  # analyses are named the same way by parse_paper
                raise ValueError(f"claim {claim.id} of {paper.name} must be named {paper.name}.<name>")
        found[paper.name] = paper
    return found


def parse_paper(d: Mapping[str, Any]) -> Paper:
    """A paper package's declaration (plain data) -> typed records; a malformed one raises ValueError."""
    name, package_dir = str(d["name"]), Path(d["package_dir"])
    sweeps = {
        key: Sweep(id=f"{name}.{key}", package_dir=package_dir, grids=dict(s["grids"]), read=s["read"],
                   resume_args=tuple(s.get("resume_args", ())), needs_data=bool(s.get("needs_data", False)))
        for key, s in d.get("sweeps", {}).items()
    }
    claims = []
    for c in d.get("claims", []):
        unknown = set(c) - {"name", "statement", "source", "paper_value", "sweep", "measure", "summary", "figure",
                            "verdict", "data", "not_run"}
        if unknown:
            raise ValueError(f"claim {name}.{c.get('name')}: unknown fields {sorted(unknown)}")
        sweep = sweeps[c["sweep"]] if c.get("sweep") else None
        if sweep is None and not c.get("not_run"):
            raise ValueError(f"claim {name}.{c['name']} has neither a sweep nor a not_run reason")
        claims.append(Claim(id=f"{name}.{c['name']}", paper=str(d["title"]), statement=c["statement"],
                            source=c["source"], paper_value=c["paper_value"], verdict=rule(c["verdict"]),
                            sweep=sweep, measure=c.get("measure"), summary=c.get("summary"),
                            figure=c.get("figure"), data=dict(c.get("data", {})), not_run=c.get("not_run", "")))
    analyses = []
    for c in d.get("analyses", []):
        unknown = set(c) - {"name", "question", "source", "sweep", "measure", "summary", "figure", "data"}
        if unknown:
            raise ValueError(f"analysis {name}.{c.get('name')}: unknown fields {sorted(unknown)}")
        if c.get("sweep") not in sweeps or not c.get("measure"):
            raise ValueError(f"analysis {name}.{c.get('name')} needs a sweep of its package and a measure")
        analyses.append(Claim(id=f"{name}.{c['name']}", paper=str(d["title"]), statement=c["question"],
                              source=c.get("source", ""), paper_value="", verdict=None, sweep=sweeps[c["sweep"]],
                              measure=c["measure"], summary=c.get("summary"), figure=c.get("figure"),
                              data=dict(c.get("data", {}))))
    commands = {k: tuple(str(a) for a in v) for k, v in d.get("commands", {}).items()}
    benchmarks = tuple(parse_benchmark(name, package_dir, b) for b in d.get("benchmarks", ()))
    if len({b.id for b in benchmarks}) != len(benchmarks):
        raise ValueError(f"paper {name}: duplicate benchmark names")
    return Paper(name=name, title=str(d["title"]), package_dir=package_dir, commands=commands, claims=tuple(claims),
                 benchmarks=benchmarks, analyses=tuple(analyses))


def discover() -> dict[str, Claim]:
    """Every claim of every installed package, by id (``<package>.<name>``)."""
    found: dict[str, Claim] = {}
    for paper in papers().values():
        for claim in (*paper.claims, *paper.analyses):
            if claim.id in found:
                raise ValueError(f"claim {claim.id} declared twice")
            found[claim.id] = claim
    return found


def find(claim_id: str) -> Claim:
    claims = discover()
    if claim_id not in claims:
        raise UserError(f"unknown claim {claim_id!r}; `forgetting list` shows the {len(claims)} claims")
    return claims[claim_id]
