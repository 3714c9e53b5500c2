"""``main.py``: the configuration, logging, device and data of a run, then train/derive/test."""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import replace
from pathlib import Path

import torch
from forgetting_common.atomic import atomic_write_json
from forgetting_common.device import resolve_device
from forgetting_common.errors import UserError
from forgetting_common.runlog import EMPTY_STATE, RunLog
from forgetting_common.seeding import seed_everything

from wpl_enas import checkpoint
from wpl_enas.cli import Config, parse_args
from wpl_enas.data import TextData, dataset_kind, load_image_data, resolve_data_dir
from wpl_enas.train_cnn import CNNTrainer
from wpl_enas.train_rnn import RNNTrainer

logger = logging.getLogger("wpl_enas")
LOG_FORMAT = "%(asctime)s:%(levelname)s::%(message)s"


class CurrentStderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (the handler outlives one run in-process)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def setup_logging(level: str = "INFO") -> None:
    logger.setLevel({"WARN": logging.WARNING}.get(level, getattr(logging, level, logging.INFO)))
    if not any(isinstance(h, CurrentStderr) for h in logger.handlers):
        handler = CurrentStderr()
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        logger.addHandler(handler)
    logger.propagate = False


def add_file_log(model_dir: Path) -> logging.Handler:
    handler = logging.FileHandler(model_dir / "train.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logger.addHandler(handler)
    return handler


def pick_device(cfg: Config) -> torch.device:
    if cfg.device and cfg.device != "auto":
        return resolve_device(cfg.device)
    if cfg.num_gpu > 0 and torch.cuda.is_available():
        return torch.device("cuda")
    if cfg.num_gpu > 0:
        logger.warning("--num_gpu=%d but CUDA is not available: running on the CPU", cfg.num_gpu)
    return torch.device("cpu")


def main(argv: list[str] | None = None) -> dict:
    cfg, unparsed = parse_args(argv)
    if not cfg.print_config:
        setup_logging(cfg.log_level)
    device = pick_device(cfg)
    cfg = replace(cfg, cuda=device.type == "cuda")
    if cfg.print_config:
        print(json.dumps(cfg.to_dict(), sort_keys=True))
        return {}
    if unparsed:
        logger.warning("Unparsed cfg: %s", unparsed)
    if cfg.alpha_small_scale:
        logger.warning("--alpha_small_scale=%s is accepted for the README's command line but, as in the "
                       "released code, has no effect", cfg.alpha_small_scale)

    model_dir = Path(cfg.model_dir)
    logger.info("run folder: %s", model_dir)
    load_pair, resume_state, restart = checkpoint.plan_start(cfg, model_dir)

    root = resolve_data_dir(cfg.data_dir, cfg.dataset)
    kind = dataset_kind(root, cfg.dataset)
    if kind == "text" and cfg.network_type != "rnn":
        raise UserError(f"dataset {cfg.dataset!r} is text: use --network_type=rnn (got {cfg.network_type})")
    if kind != "text" and cfg.network_type != "micro_cnn":
        raise UserError(f"dataset {cfg.dataset!r} holds images: use --network_type=micro_cnn (got {cfg.network_type})")
    data_path = str(root / cfg.dataset) if kind != "cifar10" else str(root)

    seed_everything(cfg.random_seed)
    torch.backends.cudnn.deterministic = True
    if kind == "text":
        data = TextData(root / cfg.dataset, cfg.batch_size, cfg.test_batch_size, device,
                        cfg.train_limit, cfg.test_limit)
        cfg = cfg.with_data(data_path, cfg.output_classes)
        logger.info("text corpus %s: %d types, %d/%d/%d tokens", cfg.data_path, data.num_tokens,
                    data.corpus.train.numel(), data.corpus.valid.numel(), data.corpus.test.numel())
    else:
        data = load_image_data(cfg, root, kind, device)
        if data.num_classes != cfg.output_classes:
            logger.warning("--output_classes=%d but the data has %d classes: using %d", cfg.output_classes,
                           data.num_classes, data.num_classes)
        cfg = cfg.with_data(data_path, data.num_classes)
        logger.info("images %s: %d train / %d valid / %d test", cfg.data_path, len(data.train), len(data.valid),
                    len(data.test))

    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "networks").mkdir(exist_ok=True)
    file_handler = add_file_log(model_dir)
    runlog = None
    try:
        config = cfg.to_dict()
        if cfg.mode == "train":
            atomic_write_json(model_dir / "params.json", dict(sorted(config.items())), indent=4)
            if resume_state is not None or restart:
                checkpoint.rewind_outputs(model_dir, resume_state)
        log_state = resume_state["runlog"] if resume_state is not None else (EMPTY_STATE if restart else None)
        runlog = RunLog.create(model_dir, config, resume=True, resume_state=log_state,
                               tensorboard=cfg.use_tensorboard, quiet=cfg.quiet)
        trainer_cls = RNNTrainer if kind == "text" else CNNTrainer
        trainer = trainer_cls(cfg, data, device, runlog, model_dir)
        load_shared = not (cfg.resume_with_new_params and cfg.mode == "train")
        if resume_state is not None:
            checkpoint.restore(trainer, resume_state, load_shared=load_shared)
        elif load_pair:
            trainer.load_model(load_shared=load_shared)
        if cfg.mode == "train":
            trainer.train()
            result = {"trainer": trainer}
        elif cfg.mode == "derive":
            with torch.no_grad():
                best = trainer.derive()
            result = {"trainer": trainer, "best": best}
        else:
            result = {"trainer": trainer, "test": trainer.test()}
        return result
    finally:
        if runlog is not None:
            runlog.close()
        logger.removeHandler(file_handler)
        file_handler.close()
