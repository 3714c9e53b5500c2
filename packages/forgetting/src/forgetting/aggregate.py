"""From a finished sweep to the claim's numbers, figure and ledger row."""

from __future__ import annotations

from pathlib import Path

from forgetting_common import UserError
from forgetting_common.atomic import atomic_write_json, atomic_write_text

from forgetting.claims import Claim
from forgetting.sweep import FINISHED, SweepDir


def result_record(claim: Claim, scale: str, measured: dict[str, float], runs: int) -> dict:
    """The JSON of one measurement: what the ledger shows, and what ``ledger --check`` re-derives."""
    return {
        "claim": claim.id,
        "statement": claim.statement,
        "source": claim.source,
        "paper_value": claim.paper_value,
        "scale": scale,
        "runs": runs,
        "command": f"forgetting {'analyse' if claim.is_analysis else 'reproduce'} {claim.id} --scale {scale}",
        "data": claim.data.get(scale, ""),
        "measured": measured,
        "summary": claim.summary(measured) if claim.summary else "",
        "rule": "" if claim.is_analysis else claim.verdict.describe(),
        "verdict": "analysis: no paper value to compare" if claim.is_analysis else claim.verdict(measured),
    }


def ledger_row(claim: Claim, record: dict | None, paper_title: str) -> str:
    cells = [paper_title, claim.statement, f"{claim.paper_value} ({claim.source})"]
    if record is None:
        default = "cpu" if claim.sweep and "cpu" in claim.sweep.grids else "paper"
        command = f"`forgetting reproduce {claim.id} --scale {default}`" if claim.sweep else "-"
        cells += [command, "-", "-", "not run" + (f": {claim.not_run}" if claim.not_run else "")]
    else:
        cells += [f"`{record['command']}`", record["data"] or "-", record["summary"],
                  f"{record['verdict']} ({record['scale']} scale)"]
    return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"


def aggregate(claim: Claim, sweep_dir: SweepDir, paper_title: str) -> dict:
    """Read every run's values, measure, draw, and write ``<claim>.json/.png/.md`` into the sweep folder."""
    assert claim.measure is not None
    manifest = sweep_dir.manifest()
    statuses = sweep_dir.statuses()
    unfinished = [s for s in statuses if s.state != FINISHED]
    if unfinished:
        first = unfinished[0]
        raise UserError(f"{len(unfinished)} of {len(statuses)} runs did not finish (run {first.name}: {first.state}"
                        f"{': ' + first.detail if first.detail else ''}); `forgetting status {sweep_dir.root}` lists them")
    values = {s.name: {**sweep_dir.values(s.name), "_labels": r["labels"]}
              for s, r in zip(statuses, manifest["runs"])}
    measured = claim.measure(values)
    record = result_record(claim, manifest["scale"], measured, len(statuses))
    base = sweep_dir.root / claim.id
    if claim.figure is not None:
        import matplotlib

        matplotlib.use("Agg")
        claim.figure(values, measured, Path(str(base) + ".png"))
        record["figure"] = str(Path(str(base) + ".png"))
    atomic_write_json(Path(str(base) + ".json"), record)
    atomic_write_text(Path(str(base) + ".md"), ledger_row(claim, record, paper_title) + "\n")
    return record
