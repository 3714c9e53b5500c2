"""The per-run analysis of the game regimes (spec R3-R5) that the claims measure.

Regimes (the seed command lines, shortened; forgetting periods kept as in the paper):

* no reset: ``forget_train.py`` with a topographic-similarity evaluation every 3 000 iterations;
* reset receiver: full receiver reset every 6 000 iterations (Li & Bowling);
* PBF: sender and receiver keep the 10 % of entries with the largest initial magnitude, the rest
  re-initialised, every 3 000 iterations.

``game_run_record`` reads a finished ``forget_train.py`` run folder; ``analyse_game`` turns it
into the quantities the README's table and the claims in ``ease_of_teaching.claims`` report.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np


def regimes(T: int) -> dict[str, list[str]]:
    """Each regime's ``forget_train.py`` flags for a run of ``T`` iterations."""
    return {
        "no reset": ["--resetNum", str(T // 3000)],
        "reset receiver": ["--resetNum", str(T // 6000), "--reset_receiver"],
        "PBF": ["--resetNum", str(T // 3000), "--forget_sender", "--sender_keep_perc", "0.1", "--forget_receiver",
                "--receiver_keep_perc", "0.1", "--weight_mask", "--same_mask"],
    }


def _mean(x) -> float:
    x = np.asarray(x, dtype=float)
    return float(np.nanmean(x)) if x.size and np.isfinite(x).any() else math.nan


def game_run_record(folder: Path) -> dict:
    topo = json.loads((folder / "topo.json").read_text())
    rec = {
        "trainAcc": np.load(folder / "trainAcc.npy"),
        "topo_iters": topo["Iter"],
        "topo": [math.nan if v is None else v for v in topo["Topographic Similarity"]],
        "topo_new": [math.nan if v is None else v for v in topo["New Topographic Similarity"]],
        "summary": json.loads((folder / "summary.json").read_text()),
        "config": json.loads((folder / "config.json").read_text()),
    }
    if (folder / "evalAcc.npy").exists():
        rec["eot_curve"] = np.load(folder / "evalAcc.npy")[-1].mean(0)
    return rec


def analyse_game(label: str, rec: dict) -> dict:
    """The R3-R5 quantities for one run."""
    acc, cfg = rec["trainAcc"], rec["config"]
    period = cfg["resetIter"]
    T = len(acc)
    out = {
        "acc 4000-6000": _mean(acc[4000:6000]),
        "acc last 1000": _mean(acc[-1000:]),
        "topo initial": rec["topo"][0],
        "topo final": rec["topo"][-1],
        "topo mean second half": _mean([v for it, v in zip(rec["topo_iters"], rec["topo"]) if it >= T // 2]),
    }
    if rec.get("eot_curve") is not None:
        c = rec["eot_curve"]
        out["eot mean first 100"] = _mean(c[:100])
        out["eot mean first 200"] = _mean(c[:200])
        out["eot mean all"] = _mean(c)
    if label != "no reset":
        events = list(range(period, T, period))
        drops, before, after, recovered, topo_changed = [], [], [], [], []
        for k, b in enumerate(events, start=1):
            pre, post = _mean(acc[b - 100:b]), _mean(acc[b + 1:b + 101])
            before.append(pre)
            after.append(post)
            drops.append(pre - post)
            nxt = min(b + period, T)
            recovered.append(_mean(acc[min(b + 900, nxt - 100):min(b + 1000, nxt)]))
            topo_changed.append(rec["topo"][k] != rec["topo_new"][k])
        out.update({
            "events": len(events),
            "acc 100 before event (mean)": _mean(before),
            "acc 100 after event (mean)": _mean(after),
            "min drop": float(min(drops)) if drops else math.nan,
            "acc 900-1000 after event (min)": float(min(recovered)) if recovered else math.nan,
            "acc before next event (min)": float(min(before[1:] + [_mean(acc[-100:])])) if events else math.nan,
            "topo changed by every event": bool(all(topo_changed)),
        })
    return out
