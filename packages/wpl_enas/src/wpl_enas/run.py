"""``main.py``: resolve the configuration, the run folder and the data, then train/derive/test."""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import torch
from forgetting_common.atomic import atomic_write_json
from forgetting_common.cli import config_dict
from forgetting_common.device import resolve_device
from forgetting_common.errors import UserError
from forgetting_common.runlog import EMPTY_STATE, RunLog
from forgetting_common.seeding import seed_everything

from wpl_enas import checkpoint
from wpl_enas.checkpoint import find_checkpoint
from wpl_enas.config import parse_args
from wpl_enas.data import TextData, dataset_kind, load_image_data, resolve_data_dir
from wpl_enas.trainer import CNNTrainer, RNNTrainer

logger = logging.getLogger("wpl_enas")
LOG_FORMAT = "%(asctime)s:%(levelname)s::%(message)s"
RUN_MARKERS = ("params.json", "forgetting.jsonl", "metrics.jsonl", "config.json", checkpoint.RESUME_FILE)


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


def resolve_names(args) -> None:
    """``model_name``, ``model_dir`` and ``data_path`` (spec §5.4)."""
    if args.load_path:
        lp = args.load_path.rstrip("/")
        if lp.startswith(args.log_dir):
            args.model_dir = lp
            args.model_name = Path(lp).name
        else:
            args.model_name = lp if lp.startswith(args.dataset) else f"{args.dataset}_{lp}"
            args.model_dir = str(Path(args.log_dir) / args.model_name)
    else:
        suffix = args.comment if args.comment else time.strftime("%Y-%m-%d_%H-%M-%S")
        args.model_name = f"{args.dataset}_{suffix}"
        args.model_dir = str(Path(args.log_dir) / args.model_name)
    args.data_path = str(Path(args.data_dir) / args.dataset)


def pick_device(args) -> torch.device:
    if args.device and args.device != "auto":
        return resolve_device(args.device)
    if args.num_gpu > 0 and torch.cuda.is_available():
        return torch.device("cuda")
    if args.num_gpu > 0:
        logger.warning("--num_gpu=%d but CUDA is not available: running on the CPU", args.num_gpu)
    return torch.device("cpu")


def has_run(model_dir: Path) -> bool:
    return model_dir.is_dir() and (any((model_dir / m).exists() for m in RUN_MARKERS) or any(model_dir.glob("*.pth")))


def plan_start(args, model_dir: Path) -> tuple[bool, dict | None, bool]:
    """How the run starts: (load the original's pair, resume checkpoint state, restart a folder)."""
    if args.mode in ("derive", "test"):
        if args.load_path and not model_dir.is_dir():
            raise UserError(f"--load_path={args.load_path}: run folder {model_dir} does not exist")
        if (args.load_path or args.resume) and find_checkpoint(model_dir) is not None:
            return True, None, False
        raise UserError(f"--mode={args.mode} needs --load_path=<run folder> holding a checkpoint pair "
                        "shared_epochE_stepS.pth / controller_epochE_stepC.pth")
    if args.load_path:  # the original's way to continue a run
        if not model_dir.is_dir():
            raise UserError(f"--load_path={args.load_path}: run folder {model_dir} does not exist")
        state = checkpoint.read_resume(model_dir)
        if state is not None:
            return False, state, False
        if find_checkpoint(model_dir) is None:
            raise UserError(f"--load_path={args.load_path}: {model_dir} holds neither {checkpoint.RESUME_FILE} "
                            "nor a checkpoint pair shared_epochE_stepS.pth / controller_epochE_stepC.pth")
        logger.warning("%s holds no %s: continuing from the newest weight pair (optimiser, RNG and Fisher "
                       "state start afresh, logs are appended)", model_dir, checkpoint.RESUME_FILE)
        return True, None, False
    if not has_run(model_dir):
        if args.resume:
            logger.info("--resume=True and no earlier run in %s: starting a new run", model_dir)
        return False, None, False
    if not args.resume:
        raise UserError(f"run folder {model_dir} already holds a run; pass --resume=True to continue it, "
                        "or choose another --comment")
    state = checkpoint.read_resume(model_dir)
    if state is None:
        logger.warning("--resume=True but %s holds no %s (stopped before its first epoch ended): starting it "
                       "again from epoch 0", model_dir, checkpoint.RESUME_FILE)
        return False, None, True
    return False, state, False


def main(argv: list[str] | None = None) -> dict:
    args, unparsed = parse_args(argv)
    resolve_names(args)
    if not args.print_config:
        setup_logging(args.log_level)
    device = pick_device(args)
    args.cuda = device.type == "cuda"
    if args.print_config:
        print(json.dumps(config_dict(args), sort_keys=True))
        return {}
    if unparsed:
        logger.warning("Unparsed args: %s", unparsed)
    if args.alpha_small_scale:
        logger.warning("--alpha_small_scale=%s is accepted for the README's command line but, as in the "
                       "released code, has no effect", args.alpha_small_scale)

    model_dir = Path(args.model_dir)
    logger.info("run folder: %s", model_dir)
    load_pair, resume_state, restart = plan_start(args, model_dir)

    root = resolve_data_dir(args.data_dir, args.dataset)
    kind = dataset_kind(root, args.dataset)
    if kind == "text" and args.network_type != "rnn":
        raise UserError(f"dataset {args.dataset!r} is text: use --network_type=rnn (got {args.network_type})")
    if kind != "text" and args.network_type != "micro_cnn":
        raise UserError(f"dataset {args.dataset!r} holds images: use --network_type=micro_cnn (got {args.network_type})")
    args.data_path = str(root / args.dataset) if kind != "cifar10" else str(root)

    seed_everything(args.random_seed)
    torch.backends.cudnn.deterministic = True
    if kind == "text":
        data = TextData(root / args.dataset, args.batch_size, args.test_batch_size, device,
                        args.train_limit, args.test_limit)
        logger.info("text corpus %s: %d types, %d/%d/%d tokens", args.data_path, data.num_tokens,
                    data.corpus.train.numel(), data.corpus.valid.numel(), data.corpus.test.numel())
    else:
        data = load_image_data(args, root, kind, device)
        if data.num_classes != args.output_classes:
            logger.warning("--output_classes=%d but the data has %d classes: using %d", args.output_classes,
                           data.num_classes, data.num_classes)
            args.output_classes = data.num_classes
        logger.info("images %s: %d train / %d valid / %d test", args.data_path, len(data.train), len(data.valid),
                    len(data.test))

    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "networks").mkdir(exist_ok=True)
    file_handler = add_file_log(model_dir)
    runlog = None
    try:
        config = config_dict(args)
        if args.mode == "train":
            atomic_write_json(model_dir / "params.json", dict(sorted(config.items())), indent=4)
            if resume_state is not None or restart:
                checkpoint.rewind_outputs(model_dir, resume_state)
        log_state = resume_state["runlog"] if resume_state is not None else (EMPTY_STATE if restart else None)
        runlog = RunLog.create(model_dir, config, resume=True, resume_state=log_state,
                               tensorboard=args.use_tensorboard, quiet=args.quiet)
        trainer_cls = RNNTrainer if kind == "text" else CNNTrainer
        trainer = trainer_cls(args, data, device, runlog, model_dir)
        load_shared = not (args.resume_with_new_params and args.mode == "train")
        if resume_state is not None:
            checkpoint.restore(trainer, resume_state, load_shared=load_shared)
        elif load_pair:
            trainer.load_model(load_shared=load_shared)
        if args.mode == "train":
            trainer.train()
            result = {"trainer": trainer}
        elif args.mode == "derive":
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
