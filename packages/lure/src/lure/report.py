"""The end of a run of ``LURE_main.py`` / ``ALMA.py``: the summary numbers (final accuracy, the
cumulative error, the anytime relative errors, ECE), ``results.json``, the closing report and
the paper's figure. Rank 0 alone writes and prints under torchrun.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from forgetting_common.atomic import atomic_write_json

from lure import plots, robustness
from lure.metrics import anytime_relative_errors

if TYPE_CHECKING:
    from lure.train import RunContext


def _say(*parts: object) -> None:
    print(*parts, flush=True)


def summarise(results: dict) -> dict:
    states = results["states"]
    cer = [s["cer"] for s in states]
    n_test = states[-1]["n_test"] if states else 1
    return {
        "final_test_acc": states[-1]["test_acc"] if states else None,
        "final_ece": states[-1]["ece"] if states else None,
        "cer_counts": cer,
        "cer_sum": sum(cer),
        "cumulative_error_rate": sum(cer) / max(1, n_test),
        "anytime_relative_error": anytime_relative_errors(cer, n_test),
        "test_acc_per_state": [s["test_acc"] for s in states],
        "ece_per_state": [s["ece"] for s in states],
        "time_per_state": [s["time"] for s in states],
    }


def write_results(ctx: RunContext, results: dict) -> None:
    results.update(summarise(results))
    if ctx.writes:
        atomic_write_json(ctx.save_dir / "results.json", results)


def finish(ctx: RunContext, results: dict) -> None:
    summary = summarise(results)
    cfg = ctx.cfg
    if cfg.corruption_eval and "corruption_acc" not in results:
        table = robustness.corruption_accuracy(ctx.model, ctx.data.test, cfg.batch_size, seed=ctx.seed, dist=ctx.dist)
        results["corruption_acc"] = table
        results["mean_corruption_acc"] = robustness.mean_corruption_accuracy(table)
        _say(f"Mean corruption accuracy: {results['mean_corruption_acc']:.2f} "
             + " ".join(f"{k}={sum(v) / len(v):.1f}" for k, v in table.items()))
    results["finished"] = True
    write_results(ctx, results)
    if not ctx.writes:
        return
    ctx.log.write_json("results.json", results)
    ctx.log.log({"test/final_acc": summary["final_test_acc"], "test/cer": summary["cer_sum"],
                 "test/final_ece": summary["final_ece"], "test/cumulative_error_rate": summary["cumulative_error_rate"]},
                step=cfg.meta_batch_number * cfg.epochs)
    _say(f"Test Acc = {summary['final_test_acc']:.2f}")
    _say(f"CER = {summary['cer_sum']}")
    _say("Final Test Accuracy: ")
    _say(f"{summary['final_test_acc']:.2f}")
    _say(f"CER list: {summary['cer_counts']}")
    _say(f"Anytime Relative Error: {[round(v, 4) for v in summary['anytime_relative_error']]}")
    _say(f"ECE: {summary['final_ece']:.4f}")
    _say(f"Total time: {sum(summary['time_per_state']):.1f} s, per state {[round(t, 1) for t in summary['time_per_state']]}")
    _draw_figures(ctx, results)


def _draw_figures(ctx: RunContext, results: dict) -> None:
    """The paper's figure: this run's curve in its log folder; with --log-dir, every run under it together."""
    _say(f"Figure: {plots.accuracy_per_state([results], ctx.log.path(plots.FIGURE_NAME))}")
    if ctx.cfg.log_dir:
        runs = plots.load_runs([ctx.cfg.log_dir])
        _say(f"Figure: {plots.accuracy_per_state(runs, Path(ctx.cfg.log_dir) / plots.FIGURE_NAME)} ({len(runs)} runs)")
