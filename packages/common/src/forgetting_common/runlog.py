"""One output folder per run: ``config.json``, ``metrics.jsonl``, TensorBoard scalars, progress.

``RunLog`` is the one place a training loop reports to::

    log = RunLog.create("runs/exp1", config=vars(args), tensorboard=True)
    for step in log.progress(range(n), desc="train"):
        ...
        log.log({"loss": loss}, step=step)
    log.close()

Finished results are never overwritten silently: creating a run in a folder that already holds
a ``config.json`` raises :class:`UserError` unless ``resume=True`` (append) or
``overwrite=True`` is given.

Resuming equals never having stopped: a checkpoint stores :meth:`RunLog.checkpoint_state`
(how many bytes of ``metrics.jsonl`` and of the TensorBoard events file were written, all
flushed), and ``RunLog.create(..., resume=True, resume_state=state)`` cuts both back to that
point before the resumed run appends, so rows logged after the checkpoint by the killed
process are not repeated. TensorBoard events are written synchronously for that reason
(tensorboardX's writer queues them in a background process, so no byte count is exact).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from forgetting_common.atomic import atomic_write_json
from forgetting_common.cli import config_dict
from forgetting_common.errors import UserError


def progress_enabled(quiet: bool = False) -> bool:
    """Bars show only on a terminal and without ``--quiet``."""
    return not quiet and sys.stderr.isatty()


def progress(iterable: Iterable | None = None, *, quiet: bool = False, **kwargs: Any) -> tqdm:
    """A tqdm bar that is silent off a terminal or with ``quiet``.

    Some pseudo-terminals report a size of 0x0; tqdm then takes the screen to have no rows and
    draws nothing, so an unknown size falls back to a fixed 80 columns.
    """
    enabled = progress_enabled(quiet)
    sized = True
    if enabled:
        try:
            columns, rows = os.get_terminal_size(sys.stderr.fileno())
            sized = columns > 0 and rows > 0
        except OSError:
            sized = False
    if not sized:
        kwargs.setdefault("ncols", 80)
        kwargs.setdefault("nrows", 24)
    return tqdm(iterable, disable=not enabled, dynamic_ncols=sized, **kwargs)


class TensorBoardEvents:
    """A synchronous TensorBoard events file: scalars, text, images and histograms.

    The subset of tensorboardX's ``SummaryWriter`` the packages use, written in the caller's
    thread through tensorboardX's own ``EventsWriter`` and summary builders, so that after
    :meth:`flush` the file's size is exactly what has been logged.
    """

    _count = 0

    def __init__(self, logdir: Path) -> None:
        from tensorboardX.event_file_writer import EventsWriter

        logdir.mkdir(parents=True, exist_ok=True)
        TensorBoardEvents._count += 1
        # The writer names files by the second; the suffix keeps two writers of one second apart.
        self._writer = EventsWriter(str(logdir / "events"), f".{os.getpid()}.{TensorBoardEvents._count}")
        self.path = Path(self._writer._file_name)

    def _write(self, summary: Any, step: int | None) -> None:
        from tensorboardX.proto import event_pb2

        event = event_pb2.Event(summary=summary, wall_time=time.time())
        if step is not None:
            event.step = int(step)
        self._writer.write_event(event)

    def add_scalar(self, tag: str, value: float, global_step: int | None = None) -> None:
        from tensorboardX import summary

        self._write(summary.scalar(tag, float(value)), global_step)

    def add_text(self, tag: str, text: str, global_step: int | None = None) -> None:
        from tensorboardX import summary

        self._write(summary.text(tag, text), global_step)

    def add_image(self, tag: str, img: Any, global_step: int | None = None, dataformats: str = "CHW") -> None:
        from tensorboardX import summary

        self._write(summary.image(tag, img, dataformats=dataformats), global_step)

    def add_histogram(self, tag: str, values: Any, global_step: int | None = None, bins: str = "tensorflow") -> None:
        from tensorboardX import summary

        self._write(summary.histogram(tag, values, bins), global_step)

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


def _truncate(path: Path, size: int) -> None:
    if path.exists() and path.stat().st_size > size:
        with open(path, "r+b") as handle:
            handle.truncate(size)


#: Keys that count where a row is (iteration, epoch, task …): kept in ``metrics.jsonl``, where
#: they locate the row, but not drawn in TensorBoard, where the step already is the x axis.
COUNTER_NAMES = frozenset({
    "step", "time", "iter", "iters", "iteration", "epoch", "task", "state", "generation", "gen",
    "sample", "samples", "round", "seed",
})


def is_counter(key: str) -> bool:
    """Whether a metric key names a counter (its last ``/`` segment, any case)."""
    return key.rsplit("/", 1)[-1].strip().lower() in COUNTER_NAMES


def _raw(value: Any) -> Any:
    if hasattr(value, "item") and getattr(value, "numel", lambda: 1)() == 1:
        value = value.item()
    return value


def _scalar(value: Any) -> Any:
    if hasattr(value, "item") and getattr(value, "numel", lambda: 1)() == 1:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else (1e308 if value > 0 else -1e308)
    return value


class SilentRunLog:
    """What a process that must not write reports to (a torchrun rank other than 0): nothing.

    It takes RunLog's calls (``log``, ``progress``, ``close``) so a training loop needs no branch;
    rank 0's RunLog writes the run's metrics."""

    quiet = True

    def log(self, metrics: Any, step: int | None = None, *, prefix: str = "") -> None:
        pass

    def progress(self, iterable: Iterable | None = None, **kwargs: Any) -> tqdm:
        return progress(iterable, quiet=True, **kwargs)

    def close(self) -> None:
        pass


class RunLog:
    """An output folder with configuration, metrics, TensorBoard and optional W&B."""

    def __init__(
        self,
        directory: Path,
        *,
        tensorboard: bool = True,
        quiet: bool = False,
        wandb_run: Any = None,
        elapsed: float = 0.0,
        tensorboard_tag: Callable[[str], str | None] | None = None,
    ) -> None:
        self.dir = directory
        self.quiet = quiet
        self._metrics = open(directory / "metrics.jsonl", "a", encoding="utf-8")  # noqa: SIM115
        tb_dir = directory / "tensorboard"
        # Event files already there (earlier resumes' complete ones) stay part of this run.
        self._tb_earlier = sorted(p.name for p in tb_dir.glob("events.out.tfevents.*")) if tensorboard else []
        self._tb = TensorBoardEvents(tb_dir) if tensorboard else None
        self._wandb = wandb_run
        self._start = time.time() - elapsed
        self._tag = tensorboard_tag

    @classmethod
    def create(
        cls,
        directory: str | os.PathLike[str],
        config: Mapping[str, Any] | Any | None = None,
        *,
        resume: bool = False,
        overwrite: bool = False,
        tensorboard: bool = True,
        quiet: bool = False,
        wandb: Mapping[str, Any] | None = None,
        exists_hint: str = "choose another output folder, or resume it",
        resume_state: Mapping[str, Any] | None = None,
        tensorboard_tag: Callable[[str], str | None] | None = None,
    ) -> RunLog:
        """Make (or, with ``resume``, reopen) a run folder and write ``config.json`` atomically.

        ``resume_state``: what :meth:`checkpoint_state` returned when the checkpoint being
        resumed was written; the logs are cut back to that point (``{}``, or
        :data:`EMPTY_STATE`, when the run restarts from nothing). Without it a resumed run
        appends to whatever is there.
        ``tensorboard_tag``: maps a metric key to its TensorBoard tag (None: not drawn), for
        packages whose ``metrics.jsonl`` and W&B keys must stay the original's while
        TensorBoard gets the house namespaces (``train/`` ``test/`` ``eval/`` ``stats/``).

        ``wandb``: keyword arguments for ``wandb.init`` (project, group, name …); W&B is
        imported only then, and its absence is a :class:`UserError` with the fix.
        ``exists_hint``: what the error for an occupied folder tells the user to do (name
        the script's own flag, e.g. "pass --overwrite to replace it").
        """
        path = Path(directory)
        if path.exists() and not path.is_dir():
            raise UserError(f"output folder {path} exists and is not a folder")
        if (path / "config.json").exists() and not (resume or overwrite):
            raise UserError(
                f"{path} already holds a finished or running run (config.json); {exists_hint}"
            )
        path.mkdir(parents=True, exist_ok=True)
        if overwrite and not resume:
            (path / "metrics.jsonl").unlink(missing_ok=True)
            shutil.rmtree(path / "tensorboard", ignore_errors=True)
        if resume and resume_state is not None:
            _rewind_logs(path, resume_state)
        resolved = config_dict(dict(config) if isinstance(config, Mapping) else (config or {}))
        # W&B first: if it fails, the folder must not already look like a run.
        wandb_run = init_wandb(config=resolved, **wandb) if wandb is not None else None
        atomic_write_json(path / "config.json", resolved)
        elapsed = float(resume_state.get("elapsed", 0.0)) if resume and resume_state else 0.0
        log = cls(path, tensorboard=tensorboard, quiet=quiet, wandb_run=wandb_run, elapsed=elapsed,
                  tensorboard_tag=tensorboard_tag)
        # The run's configuration travels with its TensorBoard events (once: a resumed run's
        # events continue the first writer's, which already holds it).
        if log._tb is not None and not (resume and resume_state):
            log._tb.add_text("config", "```json\n" + json.dumps(resolved, indent=2, default=str) + "\n```", 0)
        return log

    def checkpoint_state(self) -> dict[str, Any]:
        """Flush the logs and say how far they go, for a checkpoint written right after."""
        self._metrics.flush()
        os.fsync(self._metrics.fileno())
        state: dict[str, Any] = {
            "metrics_bytes": self._metrics.tell(),
            "elapsed": time.time() - self._start,
        }
        if self._tb is not None:
            self._tb.flush()
            state["tensorboard_file"] = self._tb.path.name
            state["tensorboard_bytes"] = self._tb.path.stat().st_size
            state["tensorboard_earlier"] = list(self._tb_earlier)
        return state

    def log(self, metrics: Mapping[str, Any], step: int | None = None, *, prefix: str = "") -> None:
        """Append one JSON line (``step``, ``time`` and the metrics) and write TensorBoard scalars."""
        record: dict[str, Any] = {}
        if step is not None:
            record["step"] = int(step)
        record["time"] = round(time.time() - self._start, 3)
        for key, value in metrics.items():
            record[prefix + key] = _scalar(value)
        self._metrics.write(json.dumps(record) + "\n")
        self._metrics.flush()
        if self._tb is not None:
            for key, value in metrics.items():
                name = prefix + key
                if is_counter(name):
                    continue  # the x axis of a row, not a measurement
                if self._tag is not None:
                    name = self._tag(name)
                    if name is None:
                        continue
                value = _raw(value)
                if value is None or not isinstance(value, int | float) or isinstance(value, bool):
                    continue
                # NaN and inf go to TensorBoard as they are (it draws them), not dropped.
                self._tb.add_scalar(name, value, global_step=step if step is not None else 0)
        if self._wandb is not None:
            self._wandb.log({k: v for k, v in record.items() if k != "step"}, step=step)

    def progress(self, iterable: Iterable | None = None, **kwargs: Any) -> tqdm:
        return progress(iterable, quiet=self.quiet, **kwargs)

    def write_json(self, name: str, obj: Any) -> Path:
        """Write ``obj`` as ``<run>/<name>`` atomically."""
        return atomic_write_json(self.dir / name, obj)

    def path(self, name: str) -> Path:
        return self.dir / name

    @property
    def tensorboard(self):
        """The tensorboardX ``SummaryWriter`` (or None), for images, histograms and text."""
        return self._tb

    def close(self) -> None:
        self._metrics.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()

    def __enter__(self) -> RunLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: The ``resume_state`` of a run resumed before its first checkpoint: nothing kept.
EMPTY_STATE: dict[str, Any] = {"metrics_bytes": 0}


def _rewind_logs(path: Path, state: Mapping[str, Any]) -> None:
    """Cut ``metrics.jsonl`` and TensorBoard back to what ``state`` recorded."""
    _truncate(path / "metrics.jsonl", int(state.get("metrics_bytes", 0)))
    tb_dir = path / "tensorboard"
    kept = state.get("tensorboard_file")
    earlier = set(state.get("tensorboard_earlier", ()))
    if tb_dir.is_dir():
        for events in tb_dir.glob("events.out.tfevents.*"):
            # Earlier resumes' files are complete; the checkpointed file is cut back; any other
            # file was started after the checkpoint and holds only what will be redone.
            if events.name == kept:
                _truncate(events, int(state["tensorboard_bytes"]))
            elif events.name not in earlier:
                events.unlink()


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file (or of the run folder holding one)."""
    target = Path(path)
    if target.is_dir():
        target = target / "metrics.jsonl"
    with open(target, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def init_wandb(**kwargs: Any) -> Any:
    """Import W&B only now, and start a run; a missing W&B is a clear :class:`UserError`."""
    try:
        import wandb
    except ImportError as err:
        raise UserError(
            "W&B logging was asked for but wandb is not installed; "
            "install it (uv pip install wandb) or pass --no_wandb"
        ) from err
    return wandb.init(**kwargs)


def wandb_available() -> bool:
    """Whether wandb imports (without importing it twice or failing)."""
    import importlib.util

    return importlib.util.find_spec("wandb") is not None
