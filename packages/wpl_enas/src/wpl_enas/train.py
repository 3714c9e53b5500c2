"""The loop of the ENAS search with WPL (spec §2.6–§2.11, §3, §3.9, §5.6), shared by the RNN search
(:mod:`wpl_enas.train_rnn`) and the micro-CNN search (:mod:`wpl_enas.train_cnn`).

One epoch: (WPL switch and Fisher reset) → shared phase (``shared_max_step + 1`` sampled
architectures, ``num_batch_per_iter`` batches each, forgetting measured before/after) →
controller phase (REINFORCE with an EMA baseline) → every ``save_epoch`` epochs (and after the
last epoch) derive + evaluate + checkpoint → shared learning-rate decay. The WPL itself (penalty,
Fisher, anchors, α schedule) is :mod:`wpl_enas.wpl`.

Logged (``metrics.jsonl`` and TensorBoard): ``train/shared/*`` per shared step,
``train/controller/*`` per controller step, ``stats/*`` (α, Fisher norms, learning rate, the WPL
and controller switches) per epoch, ``eval/forgetting/*`` (err2 − err1 of spec §3.9),
``eval/derive/max_R`` and ``eval/val_best_*`` per epoch, ``test/best_*`` in ``--mode=test``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import scipy.signal
import torch
from forgetting_common.atomic import atomic_write_json
from forgetting_common.runlog import progress

from wpl_enas import checkpoint
from wpl_enas.cli import Config
from wpl_enas.dags import MicroArchi, dag_to_genotype, dag_to_json, describe
from wpl_enas.plots import draw_network, plot_forgetting
from wpl_enas.wpl import WPL

logger = logging.getLogger("wpl_enas")


def discount(rewards: np.ndarray, gamma: float) -> np.ndarray:
    """Reverse discounted cumulative sum r'_t = Σ_{k ≥ t} γ^{k−t} r_k (the original's lfilter)."""
    return scipy.signal.lfilter([1.0], [1.0, -gamma], np.asarray(rewards, dtype=np.float64)[::-1])[::-1].copy()


def eval_label(tag: str) -> str:
    """The name an evaluation had in the log lines: ``eval/val_best`` → ``val_best``, ``test/best`` → ``test_best``."""
    space, _, name = tag.partition("/")
    return name if space == "eval" else f"{space}_{name}"


class SearchTrainer:
    """One ENAS(+WPL) search; subclasses provide the models, the data stream and the measures."""

    kind = "base"
    fixed_metric_name = ""

    def __init__(self, config: Config, data, device: torch.device, runlog=None, model_dir: Path | None = None) -> None:
        self.config = config
        self.data = data
        self.device = device
        self.runlog = runlog
        self.model_dir = Path(model_dir if model_dir is not None else config.model_dir)
        self.quiet = config.quiet
        self.epoch = 0
        self.start_epoch = 0
        self.shared_step = 0
        self.controller_step = 0
        self.wpl_on = False
        self.shared = self.build_shared().to(device)
        self.controller = self.build_controller().to(device)
        self.wpl = WPL(self.shared, lambda_fisher=config.lambda_fisher, clip_by_norm=config.fisher_clip_by_norm,
                       momentum=config.momentum, alpha=config.alpha_fisher, alpha_decay=config.alpha_decay,
                       alpha_decay_after=config.alpha_decay_after, alpha_decay_mode=config.alpha_decay_mode)
        self.shared_optim = torch.optim.SGD(self.shared.parameters(), lr=config.shared_lr,
                                            weight_decay=config.shared_l2_reg)
        optim_cls = torch.optim.Adam if config.controller_optim == "adam" else torch.optim.SGD
        self.controller_optim = optim_cls(self.controller.parameters(), lr=config.controller_lr)
        self.wpl_trace: list[dict] = []  # per shared step: epoch, step, wpl (tests and reports)

    # -- provided by the subclasses: build_shared, build_controller, begin_shared_phase,
    # next_train_batch, get_loss, shared_metrics, fisher_step, evaluate_fixed,
    # begin_controller_phase, end_controller_step, get_reward, evaluate, eval_source, test_source

    # -- helpers ------------------------------------------------------------------------------
    def log(self, metrics: dict, step: int) -> None:
        if self.runlog is not None:
            self.runlog.log(metrics, step=step)

    def _tb_image(self, tag: str, path: Path, step: int) -> None:
        tb = self.runlog.tensorboard if self.runlog is not None else None
        if tb is None:
            return
        from PIL import Image

        img = np.asarray(Image.open(path).convert("RGB"))
        tb.add_image(tag, img, global_step=step, dataformats="HWC")

    def draw(self, dag, name: str) -> Path | None:
        if not self.config.use_tensorboard:
            return None
        return draw_network(dag, self.model_dir / "networks" / name)

    def shared_lr_at(self, epoch: int) -> float:
        degree = max(epoch - self.config.shared_decay_after + 1, 0)
        return self.config.shared_lr * self.config.shared_decay ** degree

    def set_shared_lr(self, lr: float) -> None:
        for group in self.shared_optim.param_groups:
            group["lr"] = lr

    def fisher_epoch(self) -> int:
        """Epoch passed to the Fisher update of the validation batch (the α schedule's argument)."""
        return self.epoch

    def wpl_keys(self, dag):
        return dag

    # -- the loop -----------------------------------------------------------------------------
    def train(self) -> None:
        cfg = self.config
        if cfg.shared_initial_step > 0 and self.start_epoch == 0:
            self.train_shared(min(cfg.shared_max_step, cfg.shared_initial_step))
            self.train_controller()
        if self.start_epoch >= cfg.max_epoch:
            logger.info("the run already went through epoch %d of --max_epoch=%d: nothing left to train",
                        self.start_epoch - 1, cfg.max_epoch)
        epochs = range(self.start_epoch, cfg.max_epoch)
        for epoch in progress(epochs, quiet=self.quiet, desc="epochs"):
            self.epoch = epoch
            try:
                self.train_epoch(epoch)
            except KeyboardInterrupt:
                done = (f"{checkpoint.RESUME_FILE} holds the run after epoch {epoch - 1}"
                        if (self.model_dir / checkpoint.RESUME_FILE).exists() else "no epoch was completed")
                logger.warning("interrupted in epoch %d; %s in %s: continue it with --resume=True",
                               epoch, done, self.model_dir)
                raise
            checkpoint.save_resume(self)
        self.plot_forgetting()

    def plot_forgetting(self) -> None:
        """``forgetting.png``: err2 − err1 per epoch (the curves of the README's enas_rnn.png)."""
        path = self.model_dir / "forgetting.jsonl"
        if path.exists():
            records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            if records:
                plot_forgetting(records, self.model_dir / "forgetting.png", self.model_dir.name)

    def train_epoch(self, epoch: int) -> None:
        cfg = self.config
        if epoch >= cfg.start_using_fisher and not self.wpl_on:
            self.wpl_on = True
            logger.info("epoch %d: weight plasticity loss switched on", epoch)
        if cfg.set_fisher_zero_per_iter > 0 and epoch % cfg.set_fisher_zero_per_iter == 0:
            self.wpl.reset_fisher()
        t0 = time.time()
        self.train_shared()
        trained_controller = bool(cfg.train_controller and
                                  cfg.start_training_controller <= epoch < cfg.stop_training_controller)
        if trained_controller:
            self.train_controller()
        summary = {"stats/wpl_on": int(self.wpl_on), "stats/alpha": self.alpha_in_effect(),
                   "stats/shared_lr": self.shared_optim.param_groups[0]["lr"],
                   "stats/controller_trained": int(trained_controller)}
        stats = self.wpl.fisher_norm_stats()
        summary.update({"stats/fisher_norm_mean": stats["mean"], "stats/fisher_norm_max": stats["max"]})
        evals = {}
        if epoch % cfg.save_epoch == 0 or epoch == cfg.max_epoch - 1:
            with torch.no_grad():
                best = self.derive()
                evals = self.evaluate(self.eval_source(), best, "eval/val_best")  # logged there, once
            self.save_model()
        self.log(summary, step=epoch)  # wall-clock time only in the `time` column: resumed logs stay equal
        logger.info("epoch %d done in %.1f s: %s", epoch, time.time() - t0,
                    json.dumps({k.split("/")[1]: v for k, v in {**summary, **evals}.items()}))
        if epoch >= cfg.shared_decay_after:
            self.set_shared_lr(self.shared_lr_at(epoch))

    def alpha_in_effect(self) -> float:
        """α of the validation-batch update, the last Fisher update of every step."""
        return self.wpl.alpha_at(self.fisher_epoch())

    def train_shared(self, max_step: int | None = None) -> None:
        cfg = self.config
        max_step = cfg.shared_max_step if max_step is None else max_step
        self.shared.train()
        self.controller.eval()
        self.begin_shared_phase()
        measure = self.epoch > cfg.start_evaluate_diff
        dags_eval, before = [], []
        acc = {"loss": 0.0, "ce": 0.0, "wpl": 0.0, "correct": 0.0, "n": 0}
        nb = cfg.num_batch_per_iter
        for step in progress(range(max_step + 1), quiet=self.quiet, desc=f"epoch {self.epoch} shared", leave=False):
            with torch.no_grad():
                dags = self.controller.sample(cfg.shared_num_sample)
            dags_eval.append(dags[0])
            step_wpl = 0.0
            for b in range(nb):
                inputs, targets = self.next_train_batch()
                ce, wpl_term, rest, extra = self.get_loss(inputs, targets, dags, training=True)
                loss = ce + wpl_term + rest
                self.shared_optim.zero_grad(set_to_none=False)
                if self.wpl_on and not cfg.shared_valid_fisher and b == nb - 1:
                    # The last training batch of the step also updates the Fisher. The original
                    # passes no epoch here, so its default 0 goes into the α schedule. With shared_ce_fisher the gradient of the CE alone is
                    # used; it is snapshotted so that the rest of the loss can still go backward
                    # through the (saved) Fisher before the Fisher changes.
                    other = wpl_term + rest
                    keys = self.wpl_keys(dags[0])
                    if cfg.shared_ce_fisher:
                        ce.backward(retain_graph=other.requires_grad)
                        snapshot = self.wpl.grad_snapshot(keys)
                        if other.requires_grad:
                            other.backward()
                        self.wpl.update_fisher(keys, 0, grads=snapshot)
                    else:
                        loss.backward()
                        self.wpl.update_fisher(keys, 0)
                else:
                    loss.backward()
                torch.nn.utils.clip_grad_norm_(self.shared.parameters(), cfg.shared_grad_clip)
                self.shared_optim.step()
                acc["loss"] += loss.item() / nb
                acc["ce"] += ce.item() / nb
                acc["wpl"] += (wpl_term + rest).item() / nb
                step_wpl += wpl_term.item() / nb
                if "correct" in extra:
                    acc["correct"] += extra["correct"] / nb
                acc["n"] += 1 if b == 0 else 0
            if measure:
                before.append(self.evaluate_fixed(dags[0]))
            self.wpl_trace.append({"epoch": self.epoch, "step": step, "wpl": step_wpl, "wpl_on": self.wpl_on})
            logger.debug("step %d | loss %.5f = ce %.5f + wpl %.5f", step, acc["loss"] / acc["n"],
                         acc["ce"] / acc["n"], acc["wpl"] / acc["n"])
            if self.wpl_on:
                self.fisher_step(dags)
                self.wpl.update_optimal()
            self.shared_step += 1
            if self.shared_step % cfg.log_step == 0 or step == max_step:
                n = max(acc["n"], 1)
                metrics = {"train/shared/loss": acc["loss"] / n, "train/shared/ce": acc["ce"] / n,
                           "train/shared/wpl": acc["wpl"] / n, "stats/shared/lr": self.shared_optim.param_groups[0]["lr"],
                           "train/shared/epoch": self.epoch}
                metrics.update(self.shared_metrics(acc, n))
                self.log(metrics, step=self.shared_step)
                acc = {"loss": 0.0, "ce": 0.0, "wpl": 0.0, "correct": 0.0, "n": 0}
        if measure and dags_eval:
            after = [self.evaluate_fixed(d) for d in dags_eval]
            diff = np.array(after) - np.array(before)
            name = self.fixed_metric_name
            record = {"epoch": self.epoch, "wpl_on": self.wpl_on, "metric": name,
                      "before": [float(v) for v in before], "after": [float(v) for v in after],
                      "diff": [float(v) for v in diff], "mean_diff": float(diff.mean()),
                      "max_diff": float(diff.max()), "std_diff": float(diff.std())}
            self.append_forgetting(record)
            logger.info("epoch %d forgetting: Mean_diff %.5f Max_diff %.5f", self.epoch, diff.mean(), diff.max())
            # the original's tags "Mean difference", "Max difference", "std_diff", "Mean <m> after/before training"
            self.log({"eval/forgetting/mean_diff": float(diff.mean()), "eval/forgetting/max_diff": float(diff.max()),
                      "eval/forgetting/std_diff": float(diff.std()),
                      f"eval/forgetting/mean_{name}_after": float(np.mean(after)),
                      f"eval/forgetting/mean_{name}_before": float(np.mean(before))}, step=self.epoch)

    def append_forgetting(self, record: dict) -> None:
        path = self.model_dir / "forgetting.jsonl"
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def train_controller(self) -> None:
        cfg = self.config
        self.controller.train()
        self.begin_controller_phase()
        baseline = None
        hist = {"reward": [], "entropy": [], "adv": []}
        total_loss = 0.0
        for step in progress(range(cfg.controller_max_step), quiet=self.quiet, desc=f"epoch {self.epoch} controller",
                             leave=False):
            dags, log_probs, entropies = self.controller.sample(cfg.policy_batch_size, with_details=True)
            np_ent = entropies.detach().cpu().numpy()
            with torch.no_grad():
                R = self.get_reward(dags)  # one reward per DAG
            k = len(np_ent) // len(dags)
            r_dec = np.tile(R, k)  # decision-major layout of log_probs
            rewards = r_dec + cfg.entropy_coeff * np_ent if cfg.entropy_mode == "reward" else r_dec.copy()
            if 0 < cfg.discount < 1:
                rewards = discount(rewards, cfg.discount)
            if baseline is None:
                baseline = rewards
            else:
                baseline = cfg.ema_baseline_decay * baseline + (1 - cfg.ema_baseline_decay) * rewards
            adv = rewards - baseline
            hist["reward"].extend(rewards.tolist())
            hist["entropy"].extend(np_ent.tolist())
            hist["adv"].extend(adv.tolist())
            adv_t = torch.as_tensor(adv, dtype=log_probs.dtype, device=log_probs.device)
            loss = (-log_probs * adv_t).sum()
            if cfg.entropy_mode == "regularizer":
                loss = loss - cfg.entropy_coeff * entropies.sum()
            self.controller_optim.zero_grad()
            loss.backward()
            if cfg.controller_grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.controller.parameters(), cfg.controller_grad_clip)
            self.controller_optim.step()
            total_loss += loss.item()
            if step > 0 and step % cfg.log_step == 0:
                avg_reward = float(np.mean(hist["reward"]))
                self.log({"train/controller/loss": total_loss / cfg.log_step, "train/controller/reward": avg_reward,
                          "train/controller/std/reward": float(np.std(hist["reward"])),
                          "train/controller/entropy": float(np.mean(hist["entropy"])),
                          "train/controller/adv": float(np.mean(hist["adv"]))}, step=self.controller_step)
                for i, dag in enumerate(dags):
                    path = self.draw(dag, f"{self.epoch:03d}-{self.controller_step:06d}-{avg_reward:6.4f}.png")
                    if path is not None:
                        self._tb_image(f"train/controller/sample/{i}", path, self.controller_step)
                hist = {"reward": [], "entropy": [], "adv": []}
                total_loss = 0.0
            self.controller_step += 1
            self.end_controller_step()

    def derive(self, sample_num: int | None = None):
        n = sample_num or self.config.derive_num_sample
        self.controller.eval()
        dags = self.controller.sample(n)
        best, max_r = None, -math.inf
        for dag in dags:
            r = float(self.get_reward([dag], fresh=True)[0])
            if r > max_r:
                best, max_r = dag, r
        logger.info("derive | max_R: %8.6f | %s", max_r, describe(best))
        path = self.draw(best, f"{self.epoch:03d}-{self.controller_step:06d}-{max_r:6.4f}-best.png")
        if path is not None:
            self._tb_image("eval/derive/best/0", path, self.epoch)
        record = {"epoch": self.epoch, "controller_step": self.controller_step, "max_R": max_r,
                  "dag": dag_to_json(best)}
        if not isinstance(best, MicroArchi):
            record["genotype"] = dag_to_genotype(best, self.config.num_blocks)
        atomic_write_json(self.model_dir / "best_dag.json", record)
        self.log({"eval/derive/max_R": max_r}, step=self.epoch)
        return best

    def test(self) -> dict:
        with torch.no_grad():
            best = self.derive()
            return self.evaluate(self.test_source(), best, "test/best")

    # -- checkpoints --------------------------------------------------------------------------
    def save_model(self) -> None:
        checkpoint.save_pair(self)

    def load_model(self, load_shared: bool = True) -> int:
        return checkpoint.load_pair(self, load_shared)
