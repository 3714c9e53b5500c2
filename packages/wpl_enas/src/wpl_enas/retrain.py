"""``retrain.py``: train a derived cell from scratch and report its final validation/test figures.

The released code has no such script (spec §0, §6.1); the paper's final perplexity / error are
those of a derived architecture trained alone. The cell comes from ``best_dag.json`` (written by
every derive of ``main.py``) of the run named by ``--load_path``/``--comment``, or from ``--dag``.
The model sizes, dropouts and optimiser flags are ``main.py``'s; the loop is a plain language-model
(or image-classifier) training over full passes of the training data, keeping the best validation
checkpoint and evaluating it on the test split.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from forgetting_common.atomic import atomic_torch_save, atomic_write_json
from forgetting_common.cli import positive_int
from forgetting_common.errors import UserError
from forgetting_common.runlog import EMPTY_STATE, RunLog, progress
from forgetting_common.safeload import load_checkpoint
from forgetting_common.seeding import get_rng_state, seed_everything, set_rng_state

from wpl_enas.cli import Config, build_parser, parse_namespace, resolve_names
from wpl_enas.dags import MicroArchi, dag_from_json, describe
from wpl_enas.data import (
    TextData,
    dataset_kind,
    get_batch,
    load_image_data,
    resolve_data_dir,
)
from wpl_enas.run import pick_device, setup_logging

logger = logging.getLogger("wpl_enas")
RESUME_FILE = "checkpoint.pth"


@dataclass(frozen=True)
class RetrainConfig(Config):
    """``main.py``'s configuration and the retrain flags (``retrain_epochs`` resolved)."""

    dag: str
    retrain_epochs: int
    output_dir: str
    overwrite: bool


def parse(argv: list[str] | None) -> tuple[RetrainConfig, list[str]]:
    parser = build_parser("retrain.py")
    group = parser.add_argument_group("retrain")
    group.add_argument("--dag", type=str, default="", help="best_dag.json to train (default: the run's own)")
    group.add_argument("--retrain_epochs", type=positive_int, default=None,
                       help="epochs of training (default --max_epoch)")
    group.add_argument("--output_dir", type=str, default="", help="default {log_dir}/{model_name}_retrain")
    group.add_argument("--overwrite", action="store_true", help="replace an existing results.json")
    args, unparsed = parse_namespace(parser, argv)
    if args.retrain_epochs is None:
        args.retrain_epochs = args.max_epoch
    return RetrainConfig.from_namespace(args, **resolve_names(args), cuda=False), unparsed


def main(argv: list[str] | None = None) -> dict:
    cfg, unparsed = parse(argv)
    device = pick_device(cfg)
    cfg = replace(cfg, cuda=device.type == "cuda")
    dag_path = Path(cfg.dag) if cfg.dag else Path(cfg.model_dir) / "best_dag.json"
    out_dir = Path(cfg.output_dir or f"{cfg.model_dir}_retrain")
    if cfg.print_config:
        print(json.dumps(cfg.to_dict(), sort_keys=True))
        return {}
    setup_logging(cfg.log_level)
    if unparsed:
        logger.warning("Unparsed cfg: %s", unparsed)
    if not dag_path.is_file():
        raise UserError(f"{dag_path} not found: pass --dag=<best_dag.json> or --load_path=<run folder of main.py>")
    try:
        record = json.loads(dag_path.read_text())
        dag = dag_from_json(record["dag"] if "dag" in record and "type" in record["dag"] else record)
    except (ValueError, KeyError, TypeError) as err:
        raise UserError(f"{dag_path} is not a best_dag.json written by main.py ({err})") from err
    if (out_dir / "results.json").exists() and not cfg.overwrite:
        raise UserError(f"{out_dir}/results.json exists; pass --overwrite or choose another --output_dir")
    root = resolve_data_dir(cfg.data_dir, cfg.dataset)
    kind = dataset_kind(root, cfg.dataset)
    if (kind == "text") == isinstance(dag, MicroArchi):
        raise UserError(f"{dag_path} holds a {'micro-CNN' if isinstance(dag, MicroArchi) else 'RNN'} cell but "
                        f"--dataset={cfg.dataset} is {'text' if kind == 'text' else 'images'}")
    if cfg.retrain_epochs <= 0:
        raise UserError(f"--retrain_epochs (default --max_epoch) must be positive, got {cfg.retrain_epochs}")
    logger.info("output folder: %s", out_dir)
    state, log_state = None, None
    started = (out_dir / "config.json").exists()
    if cfg.resume:
        state = read_state(out_dir)
        if state is not None:
            log_state = state["runlog"]
        elif started:
            logger.warning("--resume=True but %s holds no %s: retraining again from epoch 0", out_dir, RESUME_FILE)
            log_state = EMPTY_STATE
    elif started and not cfg.overwrite:
        raise UserError(f"{out_dir} holds an unfinished retrain; pass --resume=True to continue it "
                        "or --overwrite to start again")
    seed_everything(cfg.random_seed)
    runlog = RunLog.create(out_dir, cfg.to_dict(), resume=bool(cfg.resume), overwrite=not cfg.resume,
                           resume_state=log_state, tensorboard=cfg.use_tensorboard, quiet=cfg.quiet)
    if state is None:
        (out_dir / RESUME_FILE).unlink(missing_ok=True)  # an earlier attempt's, not this run's
    logger.info("retraining %s", describe(dag))
    try:
        if kind == "text":
            result = _retrain_rnn(cfg, dag, root, device=device, runlog=runlog, out_dir=out_dir, state=state)
        else:
            result = _retrain_cnn(cfg, dag, root, kind, device=device, runlog=runlog, out_dir=out_dir, state=state)
        result["dag"] = record
        atomic_write_json(out_dir / "results.json", result)
    except KeyboardInterrupt:
        logger.warning("interrupted; %s holds the last finished epoch: continue with --resume=True",
                       out_dir / RESUME_FILE)
        raise
    finally:
        runlog.close()
    return result


def read_state(out_dir: Path) -> dict | None:
    path = out_dir / RESUME_FILE
    if not path.exists():
        return None
    state = load_checkpoint(path, "cpu", what="resume checkpoint")
    if not isinstance(state, dict) or "epoch" not in state or "model" not in state:
        raise UserError(f"resume checkpoint {path} was not written by retrain.py")
    return state


def save_state(out_dir: Path, runlog, model, opt, data, *, epoch: int, best: float, best_epoch: int) -> None:
    """Everything the next epoch needs, written atomically after every epoch."""
    atomic_torch_save({"epoch": epoch, "model": model.state_dict(), "optim": opt.state_dict(), "best": best,
                       "best_epoch": best_epoch, "data": data.state_dict(), "rng": get_rng_state(),
                       "runlog": runlog.checkpoint_state()}, out_dir / RESUME_FILE)


def restore_state(state: dict | None, model, opt, data, best: float) -> tuple[int, float, int]:
    """(first epoch to run, best figure, best epoch); a fresh start without a state."""
    if state is None:
        return 0, best, -1
    try:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optim"])
    except (RuntimeError, KeyError, ValueError) as err:
        raise UserError(f"resume checkpoint does not fit this configuration: {str(err).splitlines()[0]}") from err
    data.load_state_dict(state["data"])
    set_rng_state(state["rng"])
    logger.info("resumed after retrain epoch %d", state["epoch"])
    return int(state["epoch"]) + 1, float(state["best"]), int(state["best_epoch"])


def _retrain_rnn(cfg: RetrainConfig, dag, root: Path, *, device, runlog, out_dir: Path, state) -> dict:
    from wpl_enas.models.shared_rnn import SharedRNN

    data = TextData(root / cfg.dataset, cfg.batch_size, cfg.test_batch_size, device,
                    cfg.train_limit, cfg.test_limit)
    model = SharedRNN(data.num_tokens, cfg.shared_embed, cfg.shared_hid, cfg.num_blocks,
                      tie_weights=cfg.tie_weights, dropout=cfg.shared_dropout, dropoute=cfg.shared_dropoute,
                      dropouti=cfg.shared_dropouti, wdrop=cfg.shared_wdrop, mode="train").to(device)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.shared_lr, weight_decay=cfg.shared_l2_reg)
    length = cfg.shared_rnn_max_length

    @torch.no_grad()
    def evaluate(source):
        model.eval()
        hidden, total, rows = model.init_hidden(source.size(1)), 0.0, 0
        for idx in range(0, source.size(0) - 1, length):
            x, y = get_batch(source, idx, length)
            out, hidden, _ = model(x, dag, hidden=hidden, is_train=False)
            total += len(x) * F.cross_entropy(out.reshape(-1, out.size(-1)), y).item()
            rows += len(x)
        model.train()
        return math.exp(min(total / rows, 50.0))

    start, best, best_epoch = restore_state(state, model, opt, data, math.inf)
    for epoch in progress(range(start, cfg.retrain_epochs), quiet=cfg.quiet, desc="retrain"):
        t0 = time.time()
        lr = cfg.shared_lr * cfg.shared_decay ** max(epoch - cfg.shared_decay_after + 1, 0)
        for g in opt.param_groups:
            g["lr"] = lr
        model.train()
        hidden, total = model.init_hidden(cfg.batch_size), 0.0
        batches = 0
        for idx in range(0, data.train.size(0) - 1, length):
            x, y = get_batch(data.train, idx, length)
            out, hidden, extra = model(x, dag, hidden=hidden)
            hidden = hidden.detach()
            loss = F.cross_entropy(out.reshape(-1, out.size(-1)), y) + model.penalties(extra)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.shared_grad_clip)
            opt.step()
            total += loss.item()
            batches += 1
        valid_ppl = evaluate(data.eval)
        runlog.log({"train/ppl": math.exp(min(total / batches, 50)), "eval/valid_ppl": valid_ppl,
                    "stats/lr": lr}, step=epoch)
        logger.info("retrain epoch %d | valid ppl %.2f | %.1f s", epoch, valid_ppl, time.time() - t0)
        if valid_ppl < best:
            best, best_epoch = valid_ppl, epoch
            atomic_torch_save(model.state_dict(), out_dir / "best_model.pth")
        save_state(out_dir, runlog, model, opt, data, epoch=epoch, best=best, best_epoch=best_epoch)
    model.load_state_dict(load_checkpoint(out_dir / "best_model.pth", device))
    test_ppl = evaluate(data.test)
    logger.info("retrain best epoch %d | valid ppl %.2f | test ppl %.2f", best_epoch, best, test_ppl)
    return {"kind": "rnn", "best_epoch": best_epoch, "valid_ppl": best, "test_ppl": test_ppl}


def _retrain_cnn(cfg: RetrainConfig, arch, root: Path, kind: str, *, device, runlog, out_dir: Path, state) -> dict:
    from wpl_enas.models.shared_cnn import SharedMicroCNN

    data = load_image_data(cfg, root, kind, device)
    model = SharedMicroCNN(num_blocks=cfg.num_blocks, normal_ops=cfg.shared_cnn_normal_types,
                           reduce_ops=cfg.shared_cnn_reduce_types, num_modules=cfg.cnn_num_modules,
                           num_repeat_normal=cfg.cnn_num_repeat_normal, final_filter_size=cfg.cnn_final_filter_size,
                           input_channels=cfg.cnn_input_channels, height=cfg.cnn_height, width=cfg.cnn_width,
                           output_classes=data.num_classes).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.shared_lr, weight_decay=cfg.shared_l2_reg)

    @torch.no_grad()
    def evaluate(split):
        model.eval()
        correct = sum((model(x, arch).argmax(1) == y).sum().item()
                      for x, y in (split.batch(i, cfg.test_batch_size) for i in range(split.num_batches(cfg.test_batch_size))))
        model.train()
        return correct / len(split)

    start, best, best_epoch = restore_state(state, model, opt, data, -1.0)
    per_epoch = max(1, len(data.train) // cfg.batch_size)
    for epoch in progress(range(start, cfg.retrain_epochs), quiet=cfg.quiet, desc="retrain"):
        lr = cfg.shared_lr * cfg.shared_decay ** max(epoch - cfg.shared_decay_after + 1, 0)
        for g in opt.param_groups:
            g["lr"] = lr
        for _ in range(per_epoch):
            x, y = data.next_train()
            loss = F.cross_entropy(model(x, arch), y)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.shared_grad_clip)
            opt.step()
        acc = evaluate(data.valid)
        runlog.log({"eval/valid_acc": acc, "stats/lr": lr}, step=epoch)
        if acc > best:
            best, best_epoch = acc, epoch
            atomic_torch_save(model.state_dict(), out_dir / "best_model.pth")
        save_state(out_dir, runlog, model, opt, data, epoch=epoch, best=best, best_epoch=best_epoch)
    model.load_state_dict(load_checkpoint(out_dir / "best_model.pth", device))
    test_acc = evaluate(data.test)
    return {"kind": "micro_cnn", "best_epoch": best_epoch, "valid_acc": best, "test_acc": test_acc,
            "test_error_pct": 100 * (1 - test_acc)}
