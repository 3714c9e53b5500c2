"""The `forgetting` command: list, run, reproduce, status, ledger, bench."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from forgetting_common import UserError
from forgetting_common.atomic import atomic_write_json, atomic_write_text
from forgetting_common.cli import OneLineErrorParser

from forgetting import ledger as ledger_mod
from forgetting import records
from forgetting.claims import SCALES, find, papers
from forgetting.records import RECORDS_DIR
from forgetting.sweep import FAILED, FINISHED, INTERRUPTED, ORDER, SweepDir


def _time_minutes(text: str) -> int:
    """Slurm's time spellings that matter here: minutes, or [D-]HH:MM[:SS]."""
    try:
        if ":" not in text:
            return int(text)
        days, _, clock = text.rpartition("-")
        parts = [int(p) for p in clock.split(":")]
        h, m = parts[0], parts[1]
        return (int(days) if days else 0) * 1440 + h * 60 + m + (1 if len(parts) > 2 and parts[2] else 0)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"--time {text!r} is neither minutes nor HH:MM:SS") from err


def _sweep_options(p: argparse.ArgumentParser) -> None:
    """What `reproduce` and `analyse` share: the scale, the launcher, the sweep folder, the run records."""
    p.add_argument("--scale", choices=SCALES, default="smoke")
    p.add_argument("--launcher", choices=("local", "slurm"), default="local")
    p.add_argument("--out", required=True, help="sweep folder; finished runs in it are skipped, interrupted ones resumed")
    p.add_argument("--data", default=None, help="data root for runs that read data (default: $FORGETTING_DATA)")
    p.add_argument("--jobs", type=int, default=None, help="local: runs at a time (default: GPUs, else CPU cores)")
    p.add_argument("--retries", type=int, default=2, help="times an interrupted run is started again")
    p.add_argument("--partition", default=None, help="slurm: partition (default: the cluster's default)")
    p.add_argument("--gpus_per_run", type=int, default=0,
                   help="GPUs per run (local and slurm); above 1 each run starts through torchrun, one process "
                         "per GPU (default: what the claim's runs ask for)")
    p.add_argument("--procs_per_run", type=int, default=None,
                   help="processes per run under torchrun where there is no GPU (CPU, gloo backend)")
    p.add_argument("--cpus_per_run", type=int, default=1, help="slurm: CPU cores per run")
    p.add_argument("--time", type=_time_minutes, default=60, help="slurm: time limit per run (minutes or HH:MM:SS)")
    p.add_argument("--records", default=str(RECORDS_DIR),
                   help="folder of run records: matching runs in it are taken as finished (default: %(default)s)")
    p.add_argument("--ignore_records", action="store_true", help="run every run, whatever records exist")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    p = OneLineErrorParser(prog="forgetting", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True, parser_class=OneLineErrorParser)

    sub.add_parser("list", help="papers, their original command lines by name, and their claims")

    r = sub.add_parser("run", help="run an original command line by name in its package folder")
    r.add_argument("name", help="<paper>.<command name>, as `forgetting list` shows")
    r.add_argument("extra", nargs=argparse.REMAINDER, help="flags appended to the command line (after --)")

    rp = sub.add_parser("reproduce", help="run a claim's grid as a sweep and draw its figure")
    rp.add_argument("claim")
    _sweep_options(rp)
    rp.add_argument("--record", action="store_true",
                    help="also record the result in packages/forgetting/results/ for `forgetting ledger`, and "
                         "each finished run's compact record in results/runs/ as it finishes")
    rp.add_argument("--commit", action="store_true",
                    help="with --record: git-commit each run record as it is written, and the result with the "
                         "regenerated REPRODUCIBILITY.md at the end (only those files)")
    rp.add_argument("--results", default=str(ledger_mod.RESULTS_DIR), help=argparse.SUPPRESS)
    rp.add_argument("--ledger_file", default=str(ledger_mod.LEDGER), help=argparse.SUPPRESS)

    an = sub.add_parser("analyse", help="run a cross-paper analysis (a sweep with trackers) and draw its figure")
    an.add_argument("claim", metavar="analysis", help="<package>.<analysis>, as `forgetting list` shows")
    _sweep_options(an)

    st = sub.add_parser("status", help="finished / running / failed / pending runs of a sweep folder")
    st.add_argument("dir")

    rc = sub.add_parser("records", help="the run records kept in git: where and how long each run took, its numbers")
    rc.add_argument("--sweep", default=None, help="only this sweep's records (<package>.<sweep>)")
    rc.add_argument("--records", default=str(RECORDS_DIR), help="records folder (default: %(default)s)")
    rc.add_argument("--json", action="store_true", help="one JSON document instead of the table")

    lg = sub.add_parser("ledger", help="write REPRODUCIBILITY.md from the claims and recorded results")
    lg.add_argument("--check", action="store_true", help="fail when the file, the claims or the results disagree")
    lg.add_argument("--results", default=str(ledger_mod.RESULTS_DIR), help=argparse.SUPPRESS)
    lg.add_argument("--file", default=str(ledger_mod.LEDGER), help=argparse.SUPPRESS)

    b = sub.add_parser("bench", help="run every package's benchmark; one table of ours vs baseline, written as JSON")
    b.add_argument("--quick", action="store_true", help="the benchmarks' small sizes (a few minutes on 2 cores)")
    b.add_argument("--package", action="append", default=None,
                   help="only this package's benchmarks (repeat for several)")
    b.add_argument("--out", default="bench.json", help="the JSON file written (default: bench.json)")
    b.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    b.add_argument("--data", default=None, help="data root for benchmarks that read data (default: $FORGETTING_DATA)")
    b.add_argument("--timeout", type=float, default=1800.0, help="seconds per benchmark before it is stopped")
    return p


def cmd_list() -> None:
    recorded = ledger_mod.load_results(ledger_mod.RESULTS_DIR)
    for paper in papers().values():
        print(f"{paper.name}: {paper.title}  ({paper.package_dir})")
        print("  command lines (`forgetting run <paper>.<name>`):")
        for name, argv in paper.commands.items():
            print(f"    {paper.name}.{name}: python {' '.join(argv)}")
        print("  claims (`forgetting reproduce <id>`):")
        for c in paper.claims:
            rec = recorded.get(c.id)
            ours = f"{rec['summary']} -> {rec['verdict']} ({rec['scale']})" if rec else "not run"
            scales = ",".join(c.sweep.grids) if c.sweep else "-"
            print(f"    {c.id} [{scales}] {c.source}: paper {c.paper_value}; ours {ours}")
        if paper.analyses:
            print("  analyses (`forgetting analyse <id>`):")
            for c in paper.analyses:
                print(f"    {c.id} [{','.join(c.sweep.grids)}]: {c.statement}")
        print()


def cmd_run(name: str, extra: list[str]) -> int:
    paper_name, _, command = name.partition(".")
    known = papers()
    if paper_name not in known or command not in known[paper_name].commands:
        raise UserError(f"unknown command line {name!r}; `forgetting list` shows them as <paper>.<name>")
    paper = known[paper_name]
    if extra and extra[0] == "--":
        extra = extra[1:]
    argv = [sys.executable, *paper.commands[command], *extra]
    print(f"forgetting: in {paper.package_dir}: python {' '.join(argv[1:])}", file=sys.stderr)
    return subprocess.call(argv, cwd=paper.package_dir)


def cmd_reproduce(a: argparse.Namespace) -> int:
    from forgetting.aggregate import aggregate
    from forgetting.launch import LocalLauncher, SlurmLauncher, pending_names, stages

    claim = find(a.claim)
    analysing = a.command == "analyse"
    if claim.is_analysis != analysing:
        raise UserError(f"{claim.id} is {'an analysis' if claim.is_analysis else 'a claim'}: run it with `forgetting "
                        f"{'analyse' if claim.is_analysis else 'reproduce'} {claim.id}`")
    a.record, a.commit = getattr(a, "record", False), getattr(a, "commit", False)
    if claim.sweep is None:
        raise UserError(f"claim {claim.id} has no runnable grid: {claim.not_run}")
    runs = claim.sweep.runs(a.scale)
    data = a.data or os.environ.get("FORGETTING_DATA", "")
    if claim.sweep.needs_data and not data:
        raise UserError(f"claim {claim.id} reads real data: pass --data DIR or set FORGETTING_DATA")
    if a.jobs is not None and a.jobs < 1:
        raise UserError("--jobs must be at least 1")
    if a.gpus_per_run < 0 or (a.procs_per_run is not None and a.procs_per_run < 1):
        raise UserError("--gpus_per_run must be >= 0 and --procs_per_run >= 1")
    if a.launcher == "slurm":
        launcher = SlurmLauncher(partition=a.partition, gpus_per_run=a.gpus_per_run or max(r.gpus for r in runs),
                                 cpus_per_run=a.cpus_per_run, time_min=a.time, retries=a.retries,
                                 procs_per_run=a.procs_per_run)
        launcher.check()  # before anything is written
    else:
        launcher = LocalLauncher(jobs=a.jobs, retries=a.retries, gpus_per_run=a.gpus_per_run,
                                 procs_per_run=a.procs_per_run)
        launcher.slots()  # a GPU request this machine cannot meet is refused before anything is written
    sweep_dir = SweepDir(Path(a.out).resolve())
    if a.commit and not a.record:
        raise UserError("--commit commits what --record writes: pass --record too")
    sweep_dir.create_or_check(claim, a.scale, runs, str(Path(data).resolve()) if data else "")
    records_root = Path(a.records).resolve()
    if not a.ignore_records:
        imported = records.import_records(records_root, sweep_dir, runs)
        if imported:
            print(f"forgetting: {len(imported)} runs taken as finished from their records in {records_root}",
                  file=sys.stderr)
    keep_records = a.record and records.recordable(sweep_dir)
    todo, done = pending_names(sweep_dir)
    title = papers()[claim.package].title
    counts: Counter[str] = Counter()
    from tqdm import tqdm

    bar = tqdm(total=len(runs), initial=len(done), unit="run", desc=claim.id, disable=a.quiet or None,
               dynamic_ncols=True)
    if done:
        print(f"forgetting: {len(done)} of {len(runs)} runs already finished in {sweep_dir.root}; skipping them",
              file=sys.stderr)

    by_name = {r.name: r for r in runs}

    def progress(name: str, state: str) -> None:
        counts[state] += 1
        if state == FINISHED and keep_records:
            path = records.write_record(records_root, sweep_dir, by_name[name])
            why = records.commit([path], f"results: {claim.sweep.id} {name} at scale {a.scale}") if a.commit else ""
            bar.write(f"forgetting: run {name} recorded in {path}" + (f" (not committed: {why})" if why else ""))
        bar.update(1)
        bar.set_postfix(failed=counts[FAILED] + counts[INTERRUPTED], refresh=False)
        if state != FINISHED:
            bar.write(f"forgetting: run {name} {state}: {sweep_dir.status(name).detail}")

    try:
        for stage in stages(sweep_dir, todo):
            launcher.launch(sweep_dir, stage, progress)
            # a later stage reads what this one leaves: it starts only when all of this one finished
            if any(sweep_dir.status(n).state != FINISHED for n in stage):
                break
    finally:
        bar.close()
    bad = [s for s in sweep_dir.statuses() if s.state != FINISHED]
    if bad:
        print(f"forgetting: {len(bad)} of {len(runs)} runs did not finish (first: {bad[0].name}: {bad[0].state}"
              f"{': ' + bad[0].detail if bad[0].detail else ''}); fix and run the same command again "
              f"(finished runs are kept); `forgetting status {sweep_dir.root}` lists them", file=sys.stderr)
        return 1
    record = aggregate(claim, sweep_dir, title)
    print(f"{claim.id} ({a.scale}): {record['summary']}")
    if analysing:
        print(f"question: {claim.statement}" + (f" ({claim.source})" if claim.source else ""))
    else:
        print(f"paper: {claim.paper_value} ({claim.source}); verdict: {record['verdict']} [{record['rule']}]")
    print(f"wrote {sweep_dir.root / claim.id}.json, .png, .md")
    if a.record:
        result = Path(a.results) / f"{claim.id}.json"
        atomic_write_json(result, {k: v for k, v in record.items() if k != "figure"})
        if not a.commit:
            print(f"recorded in {a.results}; run `forgetting ledger` to update REPRODUCIBILITY.md")
            return 0
        cmd_ledger(False, a.results, a.ledger_file)
        why = records.commit([result, Path(a.ledger_file)],
                             f"results: {claim.id} at scale {a.scale}: {record['verdict']} ({record['summary']})")
        print(f"recorded in {result}" + (f"; not committed: {why}" if why else " and committed with REPRODUCIBILITY.md"))
    return 0


def cmd_status(directory: str) -> int:
    sweep_dir = SweepDir(Path(directory))
    manifest = sweep_dir.manifest()
    statuses = sweep_dir.statuses()
    counts = Counter(s.state for s in statuses)
    print(f"{manifest['sweep']} ({', '.join(manifest.get('claims', []))}) at scale {manifest['scale']}: "
          + ", ".join(f"{counts[k]} {k}" for k in ORDER))
    width = max((len(s.name) for s in statuses), default=4)
    for s in statuses:
        extra = f"  {s.detail}" if s.detail else ""
        print(f"  {s.name:<{width}}  {s.state:<11} attempts {s.attempts}{extra}")
    return 0


def cmd_records(a: argparse.Namespace) -> int:
    import json

    rows = records.listing(Path(a.records), a.sweep)
    if a.json:
        print(json.dumps(rows, indent=1))
        return 0
    if not rows:
        print(f"no run records under {a.records}" + (f" for sweep {a.sweep}" if a.sweep else ""))
        return 0
    for r in rows:
        wall = f"{r['wall_s'] / 60:.1f} min" if r["wall_s"] else "-"
        cpu = f"{r['cpu_s'] / 60:.1f} CPU-min" if r["cpu_s"] else "-"
        numbers = ", ".join(f"{k} {v:.4g}" for k, v in r["values"].items())
        print(f"{r['sweep']} {r['scale']} {r['run']}: finished {r['finished_at']} on {r['host']} ({r['cpu']}); "
              f"{wall}, {cpu}, peak {r['max_rss_mib'] or '-'} MiB; {numbers}")
    return 0


def cmd_ledger(check: bool, results: str, file: str) -> int:
    known = papers()
    recorded = ledger_mod.load_results(Path(results))
    path = Path(file)
    if check:
        text = path.read_text() if path.exists() else None
        found = ledger_mod.problems(known, recorded, text)
        for line in found:
            print(f"forgetting ledger: {line}", file=sys.stderr)
        if not found:
            print(f"{path}: agrees with {sum(len(p.claims) for p in known.values())} claims and {len(recorded)} results")
        return 1 if found else 0
    found = [p for p in ledger_mod.problems(known, recorded, None) if "REPRODUCIBILITY.md" not in p]
    if found:
        raise UserError(found[0] + (f" (and {len(found) - 1} more)" if len(found) > 1 else ""))
    atomic_write_text(path, ledger_mod.render(known, recorded))
    print(f"wrote {path}")
    return 0


def cmd_bench(a: argparse.Namespace) -> int:
    from forgetting import bench

    out = Path(a.out)
    if out.exists() and not a.overwrite:
        raise UserError(f"--out {out} exists; pass --overwrite to replace it or name another file")
    if not out.parent.is_dir():
        raise UserError(f"--out {out}: no folder {out.parent}")
    if a.timeout <= 0:
        raise UserError("--timeout must be positive")
    selected = bench.select(papers(), a.package)
    data = a.data or os.environ.get("FORGETTING_DATA", "")
    if data and not Path(data).is_dir():
        raise UserError(f"data root {data} is not a folder")
    data = str(Path(data).resolve()) if data else ""
    machine = bench.machine()
    load_before = bench.load_average()
    outcomes = []
    for b in selected:
        print(f"forgetting bench: {b.id}: python {' '.join(b.argv(a.quick, data, Path('<rows.json>')))}",
              file=sys.stderr, flush=True)
        outcomes.append(bench.run_benchmark(b, a.quick, data, a.timeout))
    load_after = bench.load_average()
    print(f"machine: {machine['cpu']}, {machine['cores']} cores, torch {machine['torch']}; "
          f"load average {' '.join(map(str, load_before))} before, {' '.join(map(str, load_after))} after")
    print(bench.table(outcomes))
    atomic_write_json(out, {"quick": a.quick, "machine": machine, "load_average_before": load_before,
                            "load_average_after": load_after, "benchmarks": [o.as_dict() for o in outcomes]})
    print(f"wrote {out}")
    failed = [o for o in outcomes if o.error and not o.error.startswith("skipped")]
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    if a.command == "list":
        cmd_list()
        return 0
    if a.command == "run":
        return cmd_run(a.name, a.extra)
    if a.command in ("reproduce", "analyse"):
        return cmd_reproduce(a)
    if a.command == "status":
        return cmd_status(a.dir)
    if a.command == "bench":
        return cmd_bench(a)
    if a.command == "records":
        return cmd_records(a)
    return cmd_ledger(a.check, a.results, a.file)


def entry() -> None:
    from forgetting_common import run_main

    code = 0

    def go() -> None:
        nonlocal code
        code = main(sys.argv[1:])

    run_main(go, prog="forgetting")
    sys.exit(code)


