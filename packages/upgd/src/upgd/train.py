"""The training loops of ``run_stats.py`` (per-task statistics), ``run.py`` / ``run_restarts.py`` /
``run_offline.py`` (per-step log) and ``run_utility*.py`` (utility-approximation quality).

One sample per step, online (accuracy and loss of the output computed before the update).
Per-step values are written into preallocated tensors on the run's device; nothing syncs with
the host inside the loop except at task boundaries (for the progress log).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from forgetting_common.errors import UserError
from forgetting_common.seeding import make_generator
from forgetting_common.trackers import COMPACT_FILE, TrackerSet, build_trackers

from upgd import stats_process
from upgd.checkpoint import Checkpointer, note
from upgd.experiment import (
    TRACK_PREFIX,
    Experiment,
    open_outputs,
    runlog_dir,
    save_model,
    write_result,
)
from upgd.models import HookedNet, build_network
from upgd.stats import STAT_KEYS, RankCache, aligned_task_means, bucket_means, weight_and_grad_stats
from upgd.stats_worker import StatsWorker

if TYPE_CHECKING:
    from upgd.cli import Config


def run_stats(cfg: Config, config_for_log: dict | None = None) -> tuple[Path, dict]:
    """The ``run_stats`` loop; writes the JSON and returns ``(path, content)``."""
    exp = Experiment(cfg)
    net, task = exp.net, exp.task
    if not isinstance(net, HookedNet):
        raise UserError(f"run_stats needs a network with hooks (fully_connected_relu_with_hooks, "
                        f"convolutional_network_relu_with_hooks or conv_mnist), not {cfg.network!r}")
    if task.change_freq is None:
        raise UserError(f"task {cfg.task!r} has no task changes; run it with core/run/run.py")
    cf = task.change_freq
    if cfg.stats_every > cf:
        raise UserError(f"--stats_every {cfg.stats_every} exceeds the task length {cf}")
    trackers = _build_trackers(cfg, exp)  # on the starting weights, before a checkpoint replaces them
    path, log, ck = open_outputs(cfg, exp, config_for_log, "stats")
    if trackers and ck.saved:
        trackers.load_state_dict(ck.extra("trackers", {}))
    n, dev = cfg.n_samples, cfg.device
    losses = torch.zeros(n, device=dev)
    accs = torch.zeros(n, device=dev)
    plast = torch.zeros(n, device=dev)
    dead = torch.zeros(n, device=dev)
    sampled = torch.full((n, len(STAT_KEYS)), float("nan"), device=dev)
    series = {"losses": losses, "accuracies": accs, "plasticity": plast, "dead": dead, "sampled": sampled}
    ck.restore_series(**series)
    start = time.time() - ck.elapsed_before
    with ck:
        _stats_loop(cfg, exp, log, ck, series, start, trackers)
    exp.close()
    elapsed = time.time() - start
    per_task = {
        "losses": bucket_means(losses, cf),
        "accuracies": bucket_means(accs, cf),
        "plasticity_per_task": bucket_means(plast, cf),
        "n_dead_units_per_task": bucket_means(dead, cf),
    }
    stat_means = bucket_means(sampled, cf)
    for j, key in enumerate(STAT_KEYS):
        per_task[key] = stat_means[:, j]
    lists = {k: [float(v) for v in t.cpu().tolist()] for k, t in per_task.items()}
    content = {
        "losses": lists["losses"],
        "accuracies": lists["accuracies"],
        "plasticity_per_task": lists["plasticity_per_task"],
        "task": cfg.task,
        "learner": cfg.learner,
        "network": net.name,
        "optimizer_hps": dict(cfg.hps),
        "n_samples": n,
        "seed": cfg.seed,
        "n_dead_units_per_task": lists["n_dead_units_per_task"],
    }
    for key in STAT_KEYS:
        content[key] = lists[key]
    content["learner_class_name"] = exp.spec.name
    content["accuracies_aligned"] = [float(v) for v in aligned_task_means(accs, cf).cpu().tolist()]
    content["run_info"] = {
        "data": task.source_description, "change_freq": cf, "stats_every": cfg.stats_every,
        "device": str(dev), "time_elapsed": round(elapsed, 3), "steps_per_second": round(n / max(elapsed, 1e-9), 2),
    }
    if cfg.save_model_dir:
        save_model(cfg, net, "final")
    if trackers:  # before the result: a finished result always has its tracked values beside it
        trackers.save_compact(runlog_dir(cfg, net.name) / COMPACT_FILE)
    write_result(path, content)
    log.write_json("summary.json", {"result": str(path), **content["run_info"], "stats_worker": exp.worker})
    log.close()
    ck.finish()
    return path, content


def _build_trackers(cfg: Config, exp: Experiment) -> TrackerSet | None:
    """``--track``'s trackers over the stream's examples (ids: their positions in the dataset), or None."""
    if not cfg.track:
        return None
    if exp.spec.second_order and "dead_units" in cfg.track.split(","):
        # HesScale runs the layers one by one, never the network's own forward, so the tracker
        # cannot tell the input layer from the hidden ones (it would count the pixels as units)
        raise UserError(f"--track dead_units needs a first-order learner: {cfg.learner} runs the layers one by one "
                        "(HesScale), which the dead-unit tracker cannot follow; upgd's own n_dead_units_per_task "
                        "is in the result")
    return build_trackers(cfg.track, n_examples=exp.task.n_examples, model=exp.net, device=cfg.device)


def _stats_loop(cfg: Config, exp: Experiment, log, ck: Checkpointer, series: dict, start: float,
                trackers: TrackerSet | None = None) -> None:
    net, cf, n = exp.net, exp.task.change_freq, cfg.n_samples
    losses, accs, plast, dead, sampled = (series[k] for k in ("losses", "accuracies", "plasticity", "dead", "sampled"))

    def post_update(model, x, y, out, loss, i: int, with_weight_stats: bool, cache: RankCache) -> None:
        """Step i's values; those after the update on ``model`` (the network, or its copy on the worker)."""
        losses[i] = loss
        accs[i] = (out.argmax(dim=1) == y).float().squeeze()
        with torch.no_grad():
            loss_after = exp.criterion(model(x), y)
        plast[i] = torch.clamp(1 - loss_after / torch.clamp(loss, min=1e-8), 0.0, 1.0)
        dead[i] = model.dead_fraction()
        if with_weight_stats:
            sampled[i] = weight_and_grad_stats(model, cache)

    worker = None
    if cfg.overlap and cfg.device.type == "cpu":
        factory = lambda: build_network(cfg.network, exp.task.n_inputs, exp.task.n_outputs)  # noqa: E731
        with torch.random.fork_rng(devices=[]):  # building the copies must not move the global RNG
            if exp.worker == "process" and _process_fits(cfg, net, series):
                for tensor in series.values():  # the child writes the values where the loop reads them
                    tensor.share_memory_()
                example = (torch.zeros(exp.input_shape), torch.zeros(1, dtype=torch.int64),
                           torch.zeros(1, exp.task.n_outputs), torch.zeros(()))
                worker = stats_process.StatsProcess(net, factory, post_update, example)
            else:
                worker = StatsWorker(net, factory, post_update)
    cache = RankCache()
    drain = worker.drain if worker is not None else None
    extra = (lambda: {"trackers": trackers.state_dict()}) if trackers else dict
    bar = log.progress(range(ck.start, n), initial=ck.start, total=n, desc=f"{cfg.learner} {cfg.task}",
                       mininterval=1.0)
    try:
        for i in bar:
            x, y, out, loss, _ = exp.step()
            if trackers:  # before post_update's own pass; plasticity reads the updated network on x
                index = torch.tensor([exp.task.last_index], device=cfg.device)
                trackers.on_batch(index, out, y, model=net, inputs=x)
            due = i % cfg.stats_every == 0
            if worker is not None:
                worker.submit(i, x, y, out, loss, due)
            else:
                post_update(net, x, y, out, loss, i, due, cache)
            if cfg.save_model_dir and i > 0 and i % 100_000 == 0:
                save_model(cfg, net, str(i))
            if i % cf == 0:
                if worker is not None:
                    worker.drain()
                lo = 0 if i == 0 else i - cf + 1
                log.log({"task_accuracy": accs[lo : i + 1].mean(), "task_loss": losses[lo : i + 1].mean(),
                         "task_plasticity": plast[lo : i + 1].mean(), "task_dead_units": dead[lo : i + 1].mean(),
                         "task": i // cf}, step=i)
            if trackers and ((i + 1) % cf == 0 or i + 1 == n):  # a task ends (the last may be partial)
                values = trackers.end_epoch(i // cf)
                log.log({"task": i // cf, **{TRACK_PREFIX + k: v for k, v in values.items()}}, step=i)
            ck.after_step(i + 1, series, extra, time.time() - start, before_save=drain)
        if worker is not None:
            worker.drain()
    finally:
        if worker is not None:
            worker.close()


def _process_fits(cfg: Config, net, series: dict) -> bool:
    """``--stats_worker process`` where it can run: fork, and room in shared memory (a full /dev/shm
    would kill the run with SIGBUS); otherwise the thread, with one line saying why."""
    if not stats_process.available():
        reason = "needs fork on Linux"
    else:
        need = stats_process.shared_bytes(list(net.parameters()), list(series.values()))
        free = stats_process.shared_memory_free()
        if free is None or free >= need + need // 4:
            return True
        reason = f"needs {need >> 20} MiB of shared memory and /dev/shm has {free >> 20} MiB free"
    if not cfg.quiet:
        note(f"{cfg.prog}: --stats_worker process {reason}; the statistics run on a thread (same values)")
    return False


def run_plain(cfg: Config, config_for_log: dict | None = None, restarts: bool = False,
              offline: bool = False) -> tuple[Path, dict]:
    """The ``run.py`` loop (per-step ``losses``/``accuracies``); ``restarts`` re-initialises every
    Linear layer after the update on the first step of each task but the first (run_restarts);
    ``offline`` evaluates, after that update, the held-out set relabelled with the permutation of
    the task that just ended (run_offline: ``held_out_averages``/``held_out_accuracies``)."""
    exp = Experiment(cfg)
    net = exp.net
    if offline and getattr(exp.task, "held_out", None) is None:
        raise UserError(f"run_offline needs a task with a held-out set (label_permuted_emnist_offline), not {cfg.task!r}")
    path, log, ck = open_outputs(cfg, exp, config_for_log, "restarts" if restarts else "offline" if offline else "plain")
    n, dev = cfg.n_samples, cfg.device
    losses = torch.zeros(n, device=dev)
    accs = torch.zeros(n, device=dev)
    series = {"losses": losses, "accuracies": accs}
    ck.restore_series(**series)
    held_losses = list(ck.extra("held_losses", torch.zeros(0)).to(dev).unbind())
    held_accs = list(ck.extra("held_accs", torch.zeros(0)).to(dev).unbind())

    def held() -> dict:
        return {"held_losses": _stack(held_losses), "held_accs": _stack(held_accs)}

    cf = exp.task.change_freq or 1000
    start = time.time() - ck.elapsed_before
    with ck:
        for i in log.progress(range(ck.start, n), initial=ck.start, total=n, desc=f"{cfg.learner} {cfg.task}",
                              mininterval=1.0):
            _plain_step(exp, log, i, cf, losses, accs, restarts, held_losses if offline else None, held_accs)
            ck.after_step(i + 1, series, held, time.time() - start)
    exp.close()
    content = {"losses": [float(v) for v in losses.cpu().tolist()]}
    if exp.criterion_kind == "cross_entropy":
        content["accuracies"] = [float(v) for v in accs.cpu().tolist()]
    content.update({"task": cfg.task, "learner": cfg.learner, "network": net.name,
                    "optimizer_hps": dict(cfg.hps), "n_samples": n, "seed": cfg.seed})
    if offline:
        content["held_out_averages"] = [float(v) for v in held_losses]
        content["held_out_accuracies"] = [float(v) for v in held_accs]
    content.update({"learner_class_name": exp.spec.name,
                    "run_info": {"data": exp.task.source_description, "device": str(dev),
                                 "time_elapsed": round(time.time() - start, 3)}})
    write_result(path, content)
    log.close()
    ck.finish()
    return path, content


def _stack(values: list) -> torch.Tensor:
    return torch.stack(values).cpu() if values else torch.zeros(0)


def _plain_step(exp: Experiment, log, i: int, cf: int, losses, accs, restarts: bool, held_losses, held_accs) -> None:
    """One step of the run.py loop; ``held_losses`` is None unless run_offline."""
    net = exp.net
    _, y, out, loss, done = exp.step()
    losses[i] = loss
    if exp.criterion_kind == "cross_entropy":
        accs[i] = (out.argmax(dim=1) == y).float().squeeze()
    if restarts and done:
        for module in net.modules():
            if isinstance(module, torch.nn.Linear):
                module.reset_parameters()
    if held_losses is not None and done:
        hx, hy = exp.task.held_out
        target = exp.task.previous_mapping[hy]
        with torch.no_grad():
            hout = net(hx.reshape(len(hy), *net.input_shape))
            held_losses.append(exp.criterion(hout, target))
            held_accs.append((hout.argmax(dim=1) == target).float().mean())
    if (i + 1) % cf == 0:
        entry = {"loss": losses[i + 1 - cf : i + 1].mean()}
        if exp.criterion_kind == "cross_entropy":
            entry["accuracy"] = accs[i + 1 - cf : i + 1].mean()
        log.log(entry, step=i)


def run_utility(cfg: Config, config_for_log: dict | None = None, features: bool = False) -> tuple[Path, dict]:
    """The ``run_utility.py`` loop: losses plus, per step, rank correlations between approximate
    and oracle weight utilities (see :mod:`upgd.utility`); ``features``: unit (gate) utilities
    of a ``*_gates`` network (``run_utility_feature.py``)."""
    from upgd.utility import (
        approximate_utilities,
        argsort_spearman,
        layerwise,
        oracle_utilities,
        true_spearman,
    )

    exp = Experiment(cfg)
    net = exp.net
    if features and not any("gate" in n for n, _ in net.named_parameters()):
        raise UserError(f"run_utility_feature needs a network with gates (a *_gates network), not {cfg.network!r}")
    gen = make_generator(cfg.seed, "random_utility", cfg.device)
    path, log, ck = open_outputs(cfg, exp, config_for_log, "utility_feature" if features else "utility", {"random_utility": gen})
    # Plain lists of floats: a checkpoint stores them as they are.
    kept = ck.extra("lists", {"losses": [], "glob": {}, "layer": {}, "glob_true": {}, "layer_true": {}})
    losses: list[float] = kept["losses"]
    glob: dict[str, list[float]] = kept["glob"]
    layer: dict[str, list[float]] = kept["layer"]
    glob_true: dict[str, list[float]] = kept["glob_true"]
    layer_true: dict[str, list[float]] = kept["layer_true"]
    start = time.time() - ck.elapsed_before
    with ck:
        for i in log.progress(range(ck.start, cfg.n_samples), initial=ck.start, total=cfg.n_samples,
                              desc=f"{cfg.learner} {cfg.task}", mininterval=1.0):
            x, y, _, loss, _ = exp.step()
            losses.append(float(loss))
            oracle = oracle_utilities(net, x, y, loss, exp.criterion, features)
            for name, approx in approximate_utilities(net, gen, features).items():
                glob.setdefault(name, []).append(argsort_spearman(approx, oracle))
                layer.setdefault(name, []).append(layerwise(argsort_spearman, approx, oracle))
                glob_true.setdefault(name, []).append(true_spearman(approx, oracle))
                layer_true.setdefault(name, []).append(layerwise(true_spearman, approx, oracle))
            if (i + 1) % 100 == 0:
                log.log({f"global_{k}": float(np.mean(v[-100:])) for k, v in glob.items()}
                        | {"loss": float(np.mean(losses[-100:]))}, step=i)
            ck.after_step(i + 1, {}, lambda: {"lists": kept}, time.time() - start)
    exp.close()
    content = {"losses": losses, "task": cfg.task, "learner": cfg.learner, "network": net.name,
               "optimizer_hps": dict(cfg.hps), "n_samples": cfg.n_samples, "seed": cfg.seed,
               "global_correlations": glob, "layerwise_correlations": layer,
               "global_correlations_true": glob_true, "layerwise_correlations_true": layer_true,
               "learner_class_name": exp.spec.name,
               "run_info": {"data": exp.task.source_description, "device": str(cfg.device),
                            "time_elapsed": round(time.time() - start, 3)}}
    write_result(path, content)
    log.close()
    ck.finish()
    return path, content

