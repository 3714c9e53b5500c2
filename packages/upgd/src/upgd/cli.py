"""The original ``run_stats.py`` / ``run.py`` command line: ``--key value`` pairs.

Reserved keys (task, learner, network, seed, n_samples, save_path) configure the run; runner
extensions (below) are removed next; every other key becomes an optimizer keyword argument,
converted with ``float()`` and kept in command-line order (which names the log folder).
"""

from __future__ import annotations

import json
import signal
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from forgetting_common.cli import config_dict
from forgetting_common.data import resolve_root
from forgetting_common.device import resolve_device
from forgetting_common.errors import UserError, run_main
from forgetting_common.trackers import parse_track

from upgd.checkpoint import DEFAULT_EVERY
from upgd.cli_help import help_text
from upgd.data import task_spec
from upgd.learners import learner_spec, validate_hps
from upgd.models import NETWORKS
from upgd.train import run_plain, run_stats, run_utility


@dataclass(frozen=True)
class Config:
    """One run, parsed once from the ``--key value`` pairs (``--print_config`` and config.json show
    it under the original names, with the optimizer keys flattened in: see :func:`parse`)."""

    task: str
    learner: str
    network: str
    seed: int = 0
    n_samples: int = 10000
    save_path: str = "logs"
    hps: dict[str, float] = field(default_factory=dict)
    # extensions (defaults keep the original behaviour)
    change_freq: int | None = None
    data_dir: str = "dataset"
    dataset_limit: int | None = None
    fake_data: bool = False
    save_model_dir: str | None = None
    stats_every: int = 1
    overlap: bool = True  # noise ahead and statistics on helpers (same values; CPU only)
    stats_worker: str = "auto"  # with overlap: statistics and noise on threads, in forked processes, or auto
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    quiet: bool = False
    overwrite: bool = False
    utility_max: str = "raw"
    utility_guard: bool = False
    tensorboard: bool = True
    resume: bool = False
    checkpoint_every: int = DEFAULT_EVERY
    track: str | None = None  # --track: the shared trackers' names, comma-joined in their canonical order
    prog: str = "run_stats.py"  # the script's name, for messages

    def hp_string(self) -> str:
        return "_".join(f"{k}_{v}" for k, v in self.hps.items())


RESERVED = ("task", "learner", "network", "seed", "n_samples", "save_path")
#: Runner-only extension keys and their defaults (never optimizer arguments, never in the log path).
EXTENSIONS = {
    "change_freq": None,
    "data_dir": None,
    "dataset_limit": None,
    "fake_data": "0",
    "save_model_dir": None,
    "stats_every": "1",
    "overlap": "1",
    "stats_worker": "auto",
    "device": "auto",
    "checkpoint_every": str(DEFAULT_EVERY),
    "utility_max": "raw",
    "utility_guard": "0",
    "tensorboard": "1",
    "data_source": "real",
    "train_limit": None,
    "track": None,
}
#: Flags that may stand alone (``--resume``) or take 0/1 (``--resume 1``, ``--overwrite 1``).
BOOL_FLAGS = ("print_config", "quiet", "resume", "overwrite")
TRUE_WORDS = {"1", "true", "yes", "on", "t", "y"}
FALSE_WORDS = {"0", "false", "no", "off", "f", "n"}


def _bool(key: str, text: str) -> bool:
    low = str(text).strip().lower()
    if low in TRUE_WORDS:
        return True
    if low in FALSE_WORDS:
        return False
    raise UserError(f"--{key} {text!r}: expected 0/1 (or true/false)")


def split_tokens(argv: Sequence[str]) -> tuple[list[tuple[str, str]], dict[str, bool]]:
    """Pull out the flags that may stand alone (``--quiet``, ``--resume`` …), then pair the rest."""
    tokens = list(argv)
    flags = {name: False for name in BOOL_FLAGS}
    rest: list[str] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        name = tok[2:] if tok.startswith("--") else None
        if name in BOOL_FLAGS:
            nxt = tokens[i + 1] if i + 1 < len(tokens) else None
            if nxt is not None and nxt.lower() in TRUE_WORDS | FALSE_WORDS:
                flags[name] = _bool(name, nxt)
                i += 2
            else:
                flags[name] = True
                i += 1
            continue
        rest.append(tok)
        i += 1
    if len(rest) % 2:
        raise UserError(
            f"arguments come as --key value pairs; got an odd number of tokens (last: {rest[-1]!r})"
        )
    pairs = []
    for j in range(0, len(rest), 2):
        key, value = rest[j], rest[j + 1]
        if not key.startswith("--") or len(key) < 3:
            raise UserError(f"expected a --key before {value!r}, got {key!r}")
        pairs.append((key[2:], value))
    return pairs, flags


def _int(key: str, text: str, minimum: int | None = None) -> int:
    try:
        value = int(text)
    except ValueError:
        try:  # extension: 1e6 is accepted when it is an integer
            f = float(text)
        except ValueError as err:
            raise UserError(f"--{key} {text!r}: expected an integer") from err
        if not f.is_integer():
            raise UserError(f"--{key} {text!r}: expected an integer") from None
        value = int(f)
    if minimum is not None and value < minimum:
        raise UserError(f"--{key} {value}: must be at least {minimum}")
    return value


def parse(argv: Sequence[str]) -> tuple[Config, dict, dict[str, bool]]:
    """``argv`` → (run configuration, the JSON-able resolved config, the boolean flags)."""
    pairs, flags = split_tokens(argv)
    if flags["resume"] and flags["overwrite"]:
        raise UserError("--resume 1 continues a run and --overwrite 1 starts it again; pass one of them")
    values: dict[str, str] = {}
    hps_raw: dict[str, str] = {}
    for key, value in pairs:
        if key in RESERVED or key in EXTENSIONS:
            values[key] = value  # repeated: the last wins
        else:
            hps_raw[key] = value  # a repeated key keeps its first position and its last value (dict)
    for key in ("task", "learner", "network"):
        if key not in values:
            raise UserError(f"--{key} is required (e.g. the seed command: --task label_permuted_cifar10_stats "
                            "--learner baseline --network convolutional_network_relu_with_hooks)")
    task_spec(values["task"])
    learner_spec(values["learner"])
    if values["network"] not in NETWORKS:
        raise UserError(f"unknown network {values['network']!r}; valid networks: {', '.join(sorted(NETWORKS))}")
    hps = validate_hps(values["learner"], hps_raw)
    ext = {k: values.get(k, default) for k, default in EXTENSIONS.items()}
    utility_max = ext["utility_max"]
    if utility_max not in ("raw", "corrected"):
        raise UserError(f"--utility_max {utility_max!r}: use raw (the original) or corrected")
    if ext["stats_worker"] not in ("auto", "thread", "process"):
        raise UserError(f"--stats_worker {ext['stats_worker']!r}: use auto, thread or process")
    if ext["data_source"] not in ("real", "synthetic"):
        raise UserError(f"--data_source {ext['data_source']!r}: use real or synthetic")
    limit = ext["dataset_limit"] if ext["dataset_limit"] is not None else ext["train_limit"]
    cfg_kwargs = dict(
        task=values["task"], learner=values["learner"], network=values["network"],
        seed=_int("seed", values.get("seed", "0")),
        n_samples=_int("n_samples", values.get("n_samples", "10000"), 1),
        save_path=values.get("save_path", "logs"),
        hps=hps,
        change_freq=_int("change_freq", ext["change_freq"], 1) if ext["change_freq"] is not None else None,
        data_dir=str(resolve_root(ext["data_dir"], "dataset")),
        dataset_limit=_int("dataset_limit", limit, 1) if limit is not None else None,
        fake_data=_bool("fake_data", ext["fake_data"]) or ext["data_source"] == "synthetic",
        save_model_dir=ext["save_model_dir"],
        stats_every=_int("stats_every", ext["stats_every"], 1),
        overlap=_bool("overlap", ext["overlap"]),
        stats_worker=ext["stats_worker"],
        quiet=flags["quiet"],
        overwrite=flags["overwrite"],
        utility_max=utility_max,
        utility_guard=_bool("utility_guard", ext["utility_guard"]),
        tensorboard=_bool("tensorboard", ext["tensorboard"]),
        checkpoint_every=_int("checkpoint_every", ext["checkpoint_every"], 0),
        track=",".join(parse_track(ext["track"])) if ext["track"] is not None else None,
    )
    # config.json names the trackers only when there are some: an untracked run's file is as before
    resolved = {k: v for k, v in cfg_kwargs.items() if k != "hps" and not (k == "track" and v is None)}
    cfg_kwargs["resume"] = flags["resume"]  # how this invocation starts, not part of the run's configuration
    resolved.update(hps)
    resolved["device"] = ext["device"]
    resolved["learner_hps"] = learner_spec(values["learner"]).defaults() | hps
    return Config(**cfg_kwargs), config_dict(resolved), flags | {"_device": ext["device"]}


def _append(path: str, line: str) -> None:
    try:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
    except OSError:
        pass


def main(argv: Sequence[str] | None = None, mode: str = "stats", prog: str = "run_stats.py") -> int:
    """Parse, run, write the result JSON and the original's side files; return 0.

    ``mode``: ``stats`` (run_stats.py), ``plain`` (run.py), ``restarts`` (run_restarts.py) or
    ``offline`` (run_offline.py) or ``utility`` / ``utility_feature`` (run_utility.py / run_utility_feature.py).
    Bad input raises :class:`UserError`; a failure inside the run is appended to
    ``failed_<learner>.txt`` / ``failed_<learner>_msgs.txt`` and re-raised (non-zero exit).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--help" in argv or "-h" in argv:
        print(help_text(prog, mode))
        return 0
    cfg, resolved, flags = parse(argv)
    if cfg.track and mode != "stats":
        raise UserError(f"--track is an extension of run_stats.py; {prog} does not take it")
    if flags["print_config"]:
        print(json.dumps(resolved, sort_keys=True))
        return 0
    cfg = replace(cfg, device=resolve_device(flags["_device"]), prog=prog)
    if cfg.device.type == "cpu":
        torch.set_num_threads(1)  # batch size 1: one thread is fastest and leaves cores free
    command = " ".join([prog, *argv])
    key = cfg.learner

    def on_timeout(signum, frame):  # SLURM's pre-timeout signal, as the original
        _append(f"timeout_{key}.txt", command)
        sys.exit(0)

    if hasattr(signal, "SIGUSR1"):
        try:
            signal.signal(signal.SIGUSR1, on_timeout)
        except ValueError:  # not the main thread (in-process tests)
            pass
    start = time.time()
    try:
        if mode == "stats":
            path, _ = run_stats(cfg, resolved)
        elif mode in ("utility", "utility_feature"):
            path, _ = run_utility(cfg, resolved, features=(mode == "utility_feature"))
        else:
            path, _ = run_plain(cfg, resolved, restarts=(mode == "restarts"), offline=(mode == "offline"))
    except UserError:
        raise
    except Exception:
        _append(f"failed_{key}.txt", command)
        _append(f"failed_{key}_msgs.txt", command + "\n" + traceback.format_exc())
        raise
    _append(f"finished_{key}.txt", f"{command} time_elapsed: {time.time() - start}")
    if not cfg.quiet:
        print(f"wrote {path}", file=sys.stderr)
    return 0


def entry(mode: str = "stats", prog: str | None = None) -> None:
    """Script entry: one-line errors and exit 2 for bad input."""
    name = prog or Path(sys.argv[0]).name
    run_main(lambda: main(sys.argv[1:], mode=mode, prog=name), prog=name)
