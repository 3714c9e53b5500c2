"""One run's pieces, built from a :class:`~upgd.cli.Config`: the task stream, the network and the
optimizer (seeded as the original), the result path scheme, the run folder and the result file.
The loops that step them are in :mod:`upgd.train`.
"""

from __future__ import annotations

import json
import weakref
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from forgetting_common.atomic import atomic_torch_save, atomic_write_text, json_clean
from forgetting_common.errors import UserError
from forgetting_common.seeding import make_generator, seed_everything

from upgd import stats_process
from upgd.checkpoint import Checkpointer, note, open_run
from upgd.data import build_task
from upgd.hesscale import backward_with_hesscale
from upgd.learners import learner_spec, make_optimizer
from upgd.models import build_network

if TYPE_CHECKING:
    from upgd.cli import Config

#: TensorBoard namespaces of the loops' metric keys (metrics.jsonl keeps the keys as they are).
TENSORBOARD_TAGS = {
    "task_accuracy": "train/task_accuracy",
    "task_loss": "train/task_loss",
    "task_plasticity": "stats/task_plasticity",
    "task_dead_units": "stats/task_dead_units",
    "loss": "train/loss",
    "accuracy": "train/accuracy",
}


#: The prefix of the ``--track`` values in metrics.jsonl (``track/forgetting_events`` …).
TRACK_PREFIX = "track/"


def tensorboard_tag(key: str) -> str:
    """``train/`` for the online loss and accuracy, ``stats/`` for everything measured beside them
    (plasticity, dead units, the utility-approximation correlations, the ``--track`` values)."""
    if key.startswith(TRACK_PREFIX):
        return "stats/" + key[len(TRACK_PREFIX):]
    return TENSORBOARD_TAGS.get(key, f"stats/{key}")


def result_path(cfg: Config, network_name: str) -> Path:
    """``<save_path>/<task>/<learner key>/<network.name>/<hp>/<seed>.json``."""
    return Path(cfg.save_path) / cfg.task / cfg.learner / network_name / cfg.hp_string() / f"{cfg.seed}.json"


def runlog_dir(cfg: Config, network_name: str) -> Path:
    """The run folder (config.json, metrics.jsonl, TensorBoard), outside the JSON tree."""
    return Path(cfg.save_path) / "_runs" / cfg.task / cfg.learner / network_name / cfg.hp_string() / str(cfg.seed)


def criterion(kind: str):
    return F.cross_entropy if kind == "cross_entropy" else F.mse_loss


class Experiment:
    """Builds task, network and optimizer from a :class:`~upgd.cli.Config` (seeded) and steps them."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        spec = learner_spec(cfg.learner)
        self.spec = spec
        seed_everything(cfg.seed)
        self.task = build_task(cfg.task, seed=cfg.seed, device=cfg.device, data_dir=cfg.data_dir,
                               change_freq=cfg.change_freq, fake_data=cfg.fake_data,
                               dataset_limit=cfg.dataset_limit)
        torch.manual_seed(cfg.seed)  # network initialisation as the original: after seeding
        self.net = build_network(cfg.network, self.task.n_inputs, self.task.n_outputs).to(cfg.device)
        expected = int(torch.tensor(self.net.input_shape).prod())
        if expected != self.task.n_inputs:
            raise UserError(
                f"network {cfg.network!r} takes inputs of shape {tuple(self.net.input_shape)} but task "
                f"{cfg.task!r} gives {self.task.n_inputs} values per sample"
            )
        extensions = {}
        if cfg.utility_max != "raw" or cfg.utility_guard:
            extensions = {"utility_max": cfg.utility_max, "guard": cfg.utility_guard}
        self.optimizer = make_optimizer(
            cfg.learner, self.net.named_parameters(), cfg.hps,
            generator=make_generator(cfg.seed, "noise", cfg.device), **extensions)
        self.criterion_kind = self.task.criterion
        self.criterion = criterion(self.criterion_kind)
        self.input_shape = (1, *self.net.input_shape)
        #: where the helpers run: "thread" or "process" (--stats_worker auto decided here, once)
        overlap = cfg.overlap and cfg.device.type == "cpu"
        self.worker = stats_process.choose(cfg.stats_worker, cfg.n_samples) if overlap else "thread"
        if overlap:
            self.optimizer.prefetch_noise(process=self.worker == "process")
            weakref.finalize(self, self.optimizer.close)  # the helper thread ends with the experiment

    def close(self) -> None:
        """End the noise thread (the loop is over; also done when the experiment is collected)."""
        self.optimizer.close()

    def step(self):
        """One online step; returns ``(x, y, output, loss)`` (the pre-update output and loss)."""
        x, y, done = self.task.next()
        x = x.reshape(self.input_shape)
        self.optimizer.zero_grad()
        if self.spec.second_order:
            loss, out = backward_with_hesscale(self.net, x, y, self.criterion_kind)
        else:
            out = self.net(x)
            loss = self.criterion(out, y)
            loss.backward()
        self.optimizer.step()
        self.optimizer.step_done()
        return x, y, out.detach(), loss.detach(), done


def open_outputs(cfg: Config, exp: Experiment, config: dict | None, kind: str, generators=None):
    """Result path, log and checkpointer of a run (fresh, resumed, or refused with one line)."""
    path = result_path(cfg, exp.net.name)
    run_dir = runlog_dir(cfg, exp.net.name)
    log, saved = open_run(cfg, run_dir, path, config or {}, kind, tensorboard_tag=tensorboard_tag)
    if not cfg.quiet:
        note(f"{cfg.prog}: writing {path} (logs and checkpoint in {run_dir})")
    return path, log, Checkpointer(cfg, exp, log, run_dir, saved, kind, config or {}, generators)


def write_result(path: Path, content: dict) -> None:
    """The original's result JSON (indent 4, keys in its order); NaN/inf written as null."""
    content.update(json_clean(content))  # the caller's copy holds what the file holds
    atomic_write_text(path, json.dumps(content, indent=4, allow_nan=False) + "\n")


def save_model(cfg: Config, net, tag: str) -> None:
    target = Path(cfg.save_model_dir) / f"model_{cfg.learner}_{cfg.task}_{tag}.pth"
    try:
        atomic_torch_save(net.state_dict(), target)
    except OSError as err:
        print(f"could not save the model to {target}: {err}")
