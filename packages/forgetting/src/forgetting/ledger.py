"""REPRODUCIBILITY.md, written from the claims and their recorded results, and checked against them.

Recorded results are the JSON files ``forgetting reproduce --record`` writes, one per claim, in
``packages/forgetting/results/``. The check fails when the ledger file is not what the claims and
results give, when a result names an unknown claim, or when a result no longer agrees with its
claim (statement, paper value, verdict rule or summary re-derived from its measured numbers).
"""

from __future__ import annotations

import json
from pathlib import Path

from forgetting_common import UserError

from forgetting.aggregate import ledger_row
from forgetting.claims import Paper

REPO_ROOT = Path(__file__).resolve().parents[4]
RESULTS_DIR = Path(__file__).resolve().parents[2] / "results"
LEDGER = REPO_ROOT / "REPRODUCIBILITY.md"

HEADER = """# Reproducibility ledger

Written by `forgetting ledger` from the claims the paper packages declare (`src/<pkg>/claims.py`)
and the results recorded in `packages/forgetting/results/`; CI runs `forgetting ledger --check`,
so this file, the claims and the results cannot disagree. Edit the claims or record a result
(`forgetting reproduce <claim> --scale cpu --out DIR --record`), then run `forgetting ledger`.

One row per claim: the paper's statement, its value and source, the command that measures it,
the data, what we measured, and a verdict from the claim's rule. The verdict names the scale it
was measured at: **smoke** (a minute on a CPU), **cpu** (a reduced reproduction on a 2-core
CPU), **paper** (the paper's grid and sizes). **not run** means no result is recorded. Figures
were measured on a 2-core x86-64 CPU without a GPU unless the result says otherwise; the
package README holds the details, the seeds and the plots.

| paper | claim | paper figure | our command | data | our figure | verdict |
|---|---|---|---|---|---|---|
"""


def load_results(results_dir: Path) -> dict[str, dict]:
    found = {}
    if not results_dir.is_dir():
        return found
    for path in sorted(results_dir.glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise UserError(f"recorded result {path} is unreadable: {err}") from err
        if path.stem != record.get("claim"):
            raise UserError(f"recorded result {path} names claim {record.get('claim')!r}, not {path.stem!r}")
        found[path.stem] = record
    return found


def render(papers: dict[str, Paper], results: dict[str, dict]) -> str:
    rows = [ledger_row(c, results.get(c.id), p.title) for p in papers.values() for c in p.claims]
    return HEADER + "\n".join(rows) + "\n"


def problems(papers: dict[str, Paper], results: dict[str, dict], ledger_text: str | None) -> list[str]:
    """Every disagreement between the ledger file, the claims and the recorded results."""
    out = []
    claims = {c.id: c for p in papers.values() for c in p.claims}
    for cid, record in results.items():
        claim = claims.get(cid)
        if claim is None:
            out.append(f"recorded result {cid}.json names no declared claim")
            continue
        for key, want in (("statement", claim.statement), ("paper_value", claim.paper_value),
                          ("source", claim.source), ("rule", claim.verdict.describe())):
            if record.get(key) != want:
                out.append(f"{cid}: recorded {key} {record.get(key)!r} != the claim's {want!r}")
        measured = record.get("measured", {})
        try:
            verdict = claim.verdict(measured)
            summary = claim.summary(measured) if claim.summary else record.get("summary")
        except (KeyError, TypeError, ValueError) as err:
            out.append(f"{cid}: its measured values do not fit the claim ({type(err).__name__}: {err})")
            continue
        if record.get("verdict") != verdict:
            out.append(f"{cid}: recorded verdict {record.get('verdict')!r}, the rule gives {verdict!r}")
        if record.get("summary") != summary:
            out.append(f"{cid}: recorded summary differs from the claim's summary of its numbers")
        if claim.sweep is not None and record.get("scale") not in claim.sweep.grids:
            out.append(f"{cid}: recorded at scale {record.get('scale')!r}, which the claim does not declare")
    want = render(papers, results)
    if ledger_text is None:
        out.append("REPRODUCIBILITY.md is missing; run `forgetting ledger`")
    elif ledger_text != want:
        out.append("REPRODUCIBILITY.md is not what the claims and results give; run `forgetting ledger`")
    return out
