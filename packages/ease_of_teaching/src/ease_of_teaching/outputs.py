"""Small helpers shared by the scripts: atomic array files, W&B settings, thread settings, and the
files of a finished ``forget_train.py`` run."""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from forgetting_common.atomic import atomic_write_bytes, atomic_write_text
from forgetting_common.errors import UserError
from forgetting_common.runlog import EMPTY_STATE, RunLog, wandb_available

from ease_of_teaching import metrics as MET
from ease_of_teaching import plots
from ease_of_teaching.checkpoint import FORMAT, remove_checkpoint, resume_point
from ease_of_teaching.cli import Flags
from ease_of_teaching.tensorboard_tags import tensorboard_tag


def save_npy(path: Path, array: Any, allow_pickle: bool = False) -> Path:
    """``np.save`` through a temporary file and a rename."""
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=allow_pickle)
    return atomic_write_bytes(path, buf.getvalue())


def save_h5(path: Path, attrs: dict[str, Any] | None = None, **datasets: Any) -> Path:
    """An HDF5 file with the given datasets and attributes, built in memory and written atomically
    (so a full or read-only disk is the plain ``OSError`` it is, and no half file is left)."""
    import h5py

    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        for key, value in (attrs or {}).items():
            f.attrs[key] = value
        for key, value in datasets.items():
            f.create_dataset(key, data=np.asarray(value))
    return atomic_write_bytes(path, buf.getvalue())


def wandb_settings(cfg: Flags, project: str) -> dict | None:
    """W&B as the original: only without ``--no_wandb`` and with ``--group_vars``; skipped
    with a note when wandb is not installed (the run still writes its local outputs)."""
    if cfg.no_wandb or not cfg.group_vars:
        return None
    if not wandb_available():
        print("note: wandb is not installed; logging locally only (pass --no_wandb to silence this)",
              file=sys.stderr)
        return None
    return {"project": project, "group": cfg.fname, "name": cfg.run_name()}


def clear_old_tensorboard(folder: Path, overwrite: bool) -> None:
    """With ``--overwrite``, drop the replaced run's TensorBoard events (RunLog.create only
    removes its ``metrics.jsonl``, so old and new curves would otherwise mix)."""
    tb = Path(folder) / "tensorboard"
    if overwrite and (Path(folder) / "config.json").exists() and tb.is_dir():
        for event in tb.glob("events.out.tfevents.*"):
            event.unlink()


def set_threads(device: torch.device, num_threads: int | None) -> None:
    """On the CPU the game's tiny models run fastest on one thread (kernel overhead dominates)."""
    if device.type == "cpu" and num_threads:
        torch.set_num_threads(num_threads)


def write_run_outputs(tr, speech, traces: dict[str, torch.Tensor]) -> tuple[dict, list]:
    """Every file of a finished ``forget_train.py`` run; returns the summary and the language table."""
    a, out, log = tr.config, tr.log.dir, tr.log
    table = MET.language_table(speech.message, speech.prob, a.topk)
    save_npy(out / "langDict.npy", np.array(table, dtype=object), allow_pickle=True)
    log.write_json("langDict.json", table)
    atomic_write_text(out / "language.txt", MET.format_language_table(table) + "\n")
    if log.tensorboard is not None:
        text = MET.format_language_table(table).replace("\n", "  \n")
        log.tensorboard.add_text("language table", text, a.trainIters)
    arrays = {k: v.cpu().numpy() for k, v in traces.items()}
    for name, arr in arrays.items():
        save_npy(out / f"{name}.npy", arr)
    save_npy(out / "dTopo.npy", tr.dTopo)
    save_npy(out / "dTopoNew.npy", tr.dTopoNew)
    save_npy(out / "dEntropy.npy", tr.dEntropy)
    iters = [k * tr.reset_iter for k in range(a.resetNum)] + [a.trainIters]
    topo = {"Iter": iters, "Topographic Similarity": tr.dTopo.tolist(),
            "New Topographic Similarity": tr.dTopoNew.tolist(),
            "Deterministic Entropy": tr.dEntropy.tolist()}
    log.write_json("topo.json", topo)
    if tr.eval_acc:
        save_npy(out / "evalAcc.npy", np.stack(tr.eval_acc))
        log.write_json("eot.json", {"evaluations": tr.eval_meta,
                                    "mean_curves": [c.mean(0).round(3).tolist() for c in tr.eval_acc]})
    if tr.trackers:
        trackers = {k: np.asarray(v) for k, v in tr.trackers.items()}
        save_h5(out / f"seed{a.seed}_example_tracker.h5",
                attrs={"resetIter": tr.reset_iter, "trainIters": a.trainIters, "resetNum": a.resetNum},
                **trackers, **tr.probe_np)
    if tr.weights:
        save_h5(out / f"seed{a.seed}_weight_trajectory.h5", **{k: np.asarray(v) for k, v in tr.weights.items()})
    acc_np = arrays["trainAcc"]
    n_last = min(1000, len(acc_np))
    summary = {
        "fname": a.fname, "seed": a.seed, "trainIters": a.trainIters, "resetIter": tr.reset_iter,
        "final_train_acc_last1000": float(acc_np[-n_last:].mean()),
        "initial_topo": float(tr.dTopo[0]), "final_topo": float(tr.dTopo[-1]),
        "mean_topo_last3_boundaries": float(np.nanmean(tr.dTopo[-4:-1])) if a.resetNum > 1 else None,
        "ease_of_teaching": tr.eval_meta[-1] if tr.eval_meta else None,
    }
    log.write_json("summary.json", summary)
    plots.plot_run(out, arrays["trainAcc"], iters, tr.dTopo, tr.dTopoNew, tr.reset_iter,
                   tr.eval_acc, tr.eval_meta, title=a.fname)
    return summary, table


def open_run(cfg: Flags, folder: Path, resolved: dict, prog: str, project: str,
             fmt: str = FORMAT) -> tuple[RunLog, dict | None]:
    """The run's log and, with ``--resume``, the checkpoint to continue from (None: from the start).

    ``--overwrite`` of a folder that holds a run first drops what would make the replaced run
    look resumable or finished (its checkpoint, its summary, its TensorBoard events).
    """
    state = saved_config = None
    if cfg.resume:
        if cfg.overwrite:
            raise UserError("--resume continues a run and --overwrite replaces it; pass one of them")
        state, saved_config = resume_point(cfg, folder, prog, fmt)
    elif cfg.overwrite and (folder / "config.json").exists():
        clear_old_tensorboard(folder, cfg.overwrite)
        remove_checkpoint(folder)
        (folder / "summary.json").unlink(missing_ok=True)
    log = RunLog.create(folder, saved_config or resolved, overwrite=cfg.overwrite, quiet=cfg.quiet,
                        wandb=wandb_settings(cfg, project), resume=cfg.resume,
                        resume_state=state["runlog"] if state is not None else EMPTY_STATE,
                        exists_hint="continue it with --resume, or replace it with --overwrite",
                        tensorboard_tag=tensorboard_tag)
    resuming = f" (resuming after iteration {state['next_iter'] - 1})" if state is not None else ""
    print(f"{prog}: writing to {folder}{resuming}", file=sys.stderr)
    return log, state
