"""The ENAS search with WPL: RNN cells on text (:class:`RNNTrainer`) and micro-CNN cells on images
(:class:`CNNTrainer`), sharing one loop (spec §2.6–§2.11, §3, §3.9, §5.6).

One epoch: (WPL switch and Fisher reset) → shared phase (``shared_max_step + 1`` sampled
architectures, ``num_batch_per_iter`` batches each, forgetting measured before/after) →
controller phase (REINFORCE with an EMA baseline) → every ``save_epoch`` epochs (and after the
last epoch) derive + evaluate + checkpoint → shared learning-rate decay.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from forgetting_common.atomic import atomic_write_json
from forgetting_common.runlog import progress

from wpl_enas import checkpoint
from wpl_enas.dags import MicroArchi, dag_to_genotype, dag_to_json, dag_to_keys, describe
from wpl_enas.data import get_batch
from wpl_enas.models.controller import CNNMicroController, RNNController
from wpl_enas.models.shared_cnn import SharedMicroCNN
from wpl_enas.models.shared_rnn import SharedRNN
from wpl_enas.viz import draw_network
from wpl_enas.wpl import WPL

logger = logging.getLogger("wpl_enas")


def discount(rewards: np.ndarray, gamma: float) -> np.ndarray:
    """Reverse discounted cumulative sum: r'_t = Σ_{k ≥ t} γ^{k−t} r_k."""
    out = np.zeros_like(rewards, dtype=np.float64)
    running = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        running = rewards[t] + gamma * running
        out[t] = running
    return out


class BaseTrainer:
    kind = "base"

    def __init__(self, args, data, device: torch.device, runlog=None, model_dir: Path | None = None) -> None:
        self.args = args
        self.data = data
        self.device = device
        self.runlog = runlog
        self.model_dir = Path(model_dir if model_dir is not None else args.model_dir)
        self.quiet = getattr(args, "quiet", False)
        self.epoch = 0
        self.start_epoch = 0
        self.shared_step = 0
        self.controller_step = 0
        self.wpl_on = False
        self.shared = self.build_shared().to(device)
        self.controller = self.build_controller().to(device)
        self.wpl = WPL(self.shared, lambda_fisher=args.lambda_fisher, clip_by_norm=args.fisher_clip_by_norm,
                       momentum=args.momentum, alpha=args.alpha_fisher, alpha_decay=args.alpha_decay,
                       alpha_decay_after=args.alpha_decay_after, alpha_decay_mode=args.alpha_decay_mode)
        self.shared_optim = torch.optim.SGD(self.shared.parameters(), lr=args.shared_lr,
                                            weight_decay=args.shared_l2_reg)
        optim_cls = torch.optim.Adam if args.controller_optim == "adam" else torch.optim.SGD
        self.controller_optim = optim_cls(self.controller.parameters(), lr=args.controller_lr)
        self.wpl_trace: list[dict] = []  # per shared step: epoch, step, wpl (tests and reports)

    # -- to be provided by subclasses ---------------------------------------------------------
    def build_shared(self):
        raise NotImplementedError

    def build_controller(self):
        raise NotImplementedError

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
        if not self.args.use_tensorboard:
            return None
        return draw_network(dag, self.model_dir / "networks" / name)

    def shared_lr_at(self, epoch: int) -> float:
        degree = max(epoch - self.args.shared_decay_after + 1, 0)
        return self.args.shared_lr * self.args.shared_decay ** degree

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
        args = self.args
        if args.shared_initial_step > 0 and self.start_epoch == 0:
            self.train_shared(min(args.shared_max_step, args.shared_initial_step))
            self.train_controller()
        if self.start_epoch >= args.max_epoch:
            logger.info("the run already went through epoch %d of --max_epoch=%d: nothing left to train",
                        self.start_epoch - 1, args.max_epoch)
        epochs = range(self.start_epoch, args.max_epoch)
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

    def train_epoch(self, epoch: int) -> None:
        args = self.args
        if epoch >= args.start_using_fisher and not self.wpl_on:
            self.wpl_on = True
            logger.info("epoch %d: weight plasticity loss switched on", epoch)
        if args.set_fisher_zero_per_iter > 0 and epoch % args.set_fisher_zero_per_iter == 0:
            self.wpl.reset_fisher()
        t0 = time.time()
        self.train_shared()
        trained_controller = bool(args.train_controller and
                                  args.start_training_controller <= epoch < args.stop_training_controller)
        if trained_controller:
            self.train_controller()
        summary = {"epoch/wpl_on": int(self.wpl_on), "epoch/alpha": self.alpha_in_effect(),
                   "epoch/shared_lr": self.shared_optim.param_groups[0]["lr"],
                   "epoch/controller_trained": int(trained_controller)}
        stats = self.wpl.fisher_norm_stats()
        summary.update({"epoch/fisher_norm_mean": stats["mean"], "epoch/fisher_norm_max": stats["max"]})
        evals = {}
        if epoch % args.save_epoch == 0 or epoch == args.max_epoch - 1:
            with torch.no_grad():
                best = self.derive()
                evals = self.evaluate(self.eval_source(), best, "val_best")  # logged there, once
            self.save_model()
        self.log(summary, step=epoch)  # wall-clock time only in the `time` column: resumed logs stay equal
        logger.info("epoch %d done in %.1f s: %s", epoch, time.time() - t0,
                    json.dumps({k.split("/")[1]: v for k, v in {**summary, **evals}.items()}))
        if epoch >= args.shared_decay_after:
            self.set_shared_lr(self.shared_lr_at(epoch))

    def alpha_in_effect(self) -> float:
        """α of the validation-batch update, the last Fisher update of every step."""
        return self.wpl.alpha_at(self.fisher_epoch())

    def train_shared(self, max_step: int | None = None) -> None:
        args = self.args
        max_step = args.shared_max_step if max_step is None else max_step
        self.shared.train()
        self.controller.eval()
        self.begin_shared_phase()
        measure = self.epoch > args.start_evaluate_diff
        dags_eval, before = [], []
        acc = {"loss": 0.0, "ce": 0.0, "wpl": 0.0, "correct": 0.0, "n": 0}
        nb = args.num_batch_per_iter
        for step in progress(range(max_step + 1), quiet=self.quiet, desc=f"epoch {self.epoch} shared", leave=False):
            with torch.no_grad():
                dags = self.controller.sample(args.shared_num_sample)
            dags_eval.append(dags[0])
            step_wpl = 0.0
            for b in range(nb):
                inputs, targets = self.next_train_batch()
                ce, wpl_term, rest, extra = self.get_loss(inputs, targets, dags, training=True)
                loss = ce + wpl_term + rest
                self.shared_optim.zero_grad(set_to_none=False)
                if self.wpl_on and not args.shared_valid_fisher and b == nb - 1:
                    # The last training batch of the step also updates the Fisher. The original
                    # passes no epoch here, so its default 0 goes into the α schedule. With shared_ce_fisher the gradient of the CE alone is
                    # used; it is snapshotted so that the rest of the loss can still go backward
                    # through the (saved) Fisher before the Fisher changes.
                    other = wpl_term + rest
                    keys = self.wpl_keys(dags[0])
                    if args.shared_ce_fisher:
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
                torch.nn.utils.clip_grad_norm_(self.shared.parameters(), args.shared_grad_clip)
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
            if self.shared_step % args.log_step == 0 or step == max_step:
                n = max(acc["n"], 1)
                metrics = {"shared/loss": acc["loss"] / n, "shared/ce": acc["ce"] / n, "shared/wpl": acc["wpl"] / n,
                           "shared/lr": self.shared_optim.param_groups[0]["lr"], "shared/epoch": self.epoch}
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
            self.log({"Mean difference": float(diff.mean()), "Max difference": float(diff.max()),
                      "std_diff": float(diff.std()),
                      f"Mean {name} after training": float(np.mean(after)),
                      f"Mean {name} before training": float(np.mean(before))}, step=self.epoch)

    def append_forgetting(self, record: dict) -> None:
        path = self.model_dir / "forgetting.jsonl"
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def train_controller(self) -> None:
        args = self.args
        self.controller.train()
        self.begin_controller_phase()
        baseline = None
        hist = {"reward": [], "entropy": [], "adv": []}
        total_loss = 0.0
        for step in progress(range(args.controller_max_step), quiet=self.quiet, desc=f"epoch {self.epoch} controller",
                             leave=False):
            dags, log_probs, entropies = self.controller.sample(args.policy_batch_size, with_details=True)
            np_ent = entropies.detach().cpu().numpy()
            with torch.no_grad():
                R = self.get_reward(dags)  # one reward per DAG
            k = len(np_ent) // len(dags)
            r_dec = np.tile(R, k)  # decision-major layout of log_probs
            rewards = r_dec + args.entropy_coeff * np_ent if args.entropy_mode == "reward" else r_dec.copy()
            if 0 < args.discount < 1:
                rewards = discount(rewards, args.discount)
            if baseline is None:
                baseline = rewards
            else:
                baseline = args.ema_baseline_decay * baseline + (1 - args.ema_baseline_decay) * rewards
            adv = rewards - baseline
            hist["reward"].extend(rewards.tolist())
            hist["entropy"].extend(np_ent.tolist())
            hist["adv"].extend(adv.tolist())
            adv_t = torch.as_tensor(adv, dtype=log_probs.dtype, device=log_probs.device)
            loss = (-log_probs * adv_t).sum()
            if args.entropy_mode == "regularizer":
                loss = loss - args.entropy_coeff * entropies.sum()
            self.controller_optim.zero_grad()
            loss.backward()
            if args.controller_grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.controller.parameters(), args.controller_grad_clip)
            self.controller_optim.step()
            total_loss += loss.item()
            if step > 0 and step % args.log_step == 0:
                avg_reward = float(np.mean(hist["reward"]))
                self.log({"controller/loss": total_loss / args.log_step, "controller/reward": avg_reward,
                          "controller/std/reward": float(np.std(hist["reward"])),
                          "controller/entropy": float(np.mean(hist["entropy"])),
                          "controller/adv": float(np.mean(hist["adv"]))}, step=self.controller_step)
                for i, dag in enumerate(dags):
                    path = self.draw(dag, f"{self.epoch:03d}-{self.controller_step:06d}-{avg_reward:6.4f}.png")
                    if path is not None:
                        self._tb_image(f"controller/sample/{i}", path, self.controller_step)
                hist = {"reward": [], "entropy": [], "adv": []}
                total_loss = 0.0
            self.controller_step += 1
            self.end_controller_step()

    def derive(self, sample_num: int | None = None):
        n = sample_num or self.args.derive_num_sample
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
            self._tb_image("derive/best/0", path, self.epoch)
        record = {"epoch": self.epoch, "controller_step": self.controller_step, "max_R": max_r,
                  "dag": dag_to_json(best)}
        if not isinstance(best, MicroArchi):
            record["genotype"] = dag_to_genotype(best, self.args.num_blocks)
        atomic_write_json(self.model_dir / "best_dag.json", record)
        self.log({"derive/max_R": max_r}, step=self.epoch)
        return best

    def test(self) -> dict:
        with torch.no_grad():
            best = self.derive()
            return self.evaluate(self.test_source(), best, "test_best")

    # -- checkpoints --------------------------------------------------------------------------
    def save_model(self) -> None:
        checkpoint.save_pair(self)

    def load_model(self, load_shared: bool = True) -> int:
        return checkpoint.load_pair(self, load_shared)


class RNNTrainer(BaseTrainer):
    kind = "rnn"
    fixed_metric_name = "valid_ppl"

    def build_shared(self):
        a = self.args
        return SharedRNN(self.data.num_tokens, a.shared_embed, a.shared_hid, a.num_blocks, tie_weights=a.tie_weights,
                         dropout=a.shared_dropout, dropoute=a.shared_dropoute, dropouti=a.shared_dropouti,
                         wdrop=a.shared_wdrop, mode=a.mode,
                         ar=a.activation_regularization_amount if a.activation_regularization else 0.0,
                         tar=a.temporal_activation_regularization_amount if a.temporal_activation_regularization else 0.0,
                         norm_stab=a.norm_stabilizer_regularization_amount if a.norm_stabilizer_regularization else 0.0,
                         norm_fixed_point=a.norm_stabilizer_fixed_point)

    def build_controller(self):
        a = self.args
        return RNNController(a.num_blocks, a.shared_rnn_activations, a.controller_hid, a.softmax_temperature,
                             a.tanh_c, a.mode)

    def wpl_keys(self, dag):
        return dag_to_keys(dag, self.args.num_blocks)

    @property
    def max_length(self) -> int:
        return self.args.shared_rnn_max_length

    def eval_source(self):
        return self.data.eval

    def test_source(self):
        return self.data.test

    def begin_shared_phase(self) -> None:
        b = self.args.batch_size
        self.hidden = self.shared.init_hidden(b)
        self.v_hidden = self.shared.init_hidden(b)
        self.train_idx = 0
        self.fisher_valid_idx = 0

    def next_train_batch(self):
        inputs, targets = get_batch(self.data.train, self.train_idx, self.max_length)
        self.train_idx = (self.train_idx + self.max_length) % (self.data.train.size(0) - 1)
        return inputs, targets

    def _forward_dags(self, inputs, targets, dags, hidden):
        ce_total, rest, new_hidden = 0.0, 0.0, hidden
        for dag in dags:
            output, new_hidden, extra = self.shared(inputs, dag, hidden=hidden)
            ce_total = ce_total + F.cross_entropy(output.reshape(-1, output.size(-1)), targets) / len(dags)
            rest = rest + self.shared.penalties(extra)
        return ce_total, rest, new_hidden

    def get_loss(self, inputs, targets, dags, training=True):
        ce, rest, hidden = self._forward_dags(inputs, targets, dags, self.hidden)
        self.hidden = hidden.detach()
        wpl_term = ce.new_zeros(())
        if self.wpl_on:
            for dag in dags:
                wpl_term = wpl_term + self.wpl.penalty(self.wpl_keys(dag))
        if not torch.is_tensor(rest):
            rest = ce.new_zeros(())
        return ce, wpl_term, rest, {}

    def shared_metrics(self, acc, n):
        return {"shared/perplexity": math.exp(min(acc["ce"] / n, 50.0))}

    def fisher_step(self, dags) -> None:
        inputs, targets = get_batch(self.data.valid, self.fisher_valid_idx, self.max_length)
        ce, rest, self.v_hidden = self._forward_dags(inputs, targets, dags, self.v_hidden)
        self.v_hidden = self.v_hidden.detach()
        self.shared_optim.zero_grad(set_to_none=False)
        if self.args.shared_ce_fisher:
            ce.backward()
        else:
            loss = ce + (rest if torch.is_tensor(rest) else 0.0)
            for dag in dags:
                loss = loss + self.wpl.penalty(self.wpl_keys(dag))
            loss.backward()
        self.wpl.update_fisher(self.wpl_keys(dags[0]), self.fisher_epoch())
        self.fisher_valid_idx = (self.fisher_valid_idx + self.max_length) % (self.data.valid.size(0) - 1)
        if self.fisher_valid_idx == 0:
            self.v_hidden = self.shared.init_hidden(self.args.batch_size)

    @torch.no_grad()
    def evaluate_fixed(self, dag) -> float:
        """Perplexity of ``dag`` on validation window 0, fresh hidden state, train mode (spec §3.9)."""
        inputs, targets = get_batch(self.data.valid, 0, self.max_length)
        output, _, _ = self.shared(inputs, dag, hidden=self.shared.init_hidden(self.args.batch_size))
        return math.exp(F.cross_entropy(output.reshape(-1, output.size(-1)), targets).item())

    def begin_controller_phase(self) -> None:
        self.reward_hidden = self.shared.init_hidden(self.args.batch_size)
        self.valid_idx = 0

    def end_controller_step(self) -> None:
        prev = self.valid_idx
        self.valid_idx = (self.valid_idx + self.max_length) % (self.data.valid.size(0) - 1)
        if prev > self.valid_idx:
            self.reward_hidden = self.shared.init_hidden(self.args.batch_size)

    @torch.no_grad()
    def get_reward(self, dags, fresh: bool = False) -> np.ndarray:
        """R = c/ppl (or c/ppl²) per DAG on one validation window; the model stays in train mode."""
        self.shared.train()
        if fresh:
            idx, hidden = 0, self.shared.init_hidden(self.args.batch_size)
        else:
            idx, hidden = self.valid_idx, self.reward_hidden
        inputs, targets = get_batch(self.data.valid, idx, self.max_length)
        rewards, new_hidden = [], hidden
        for dag in dags:
            output, new_hidden, _ = self.shared(inputs, dag, hidden=hidden)
            ppl = math.exp(F.cross_entropy(output.reshape(-1, output.size(-1)), targets).item())
            rewards.append(self.args.reward_c / (ppl ** 2 if self.args.ppl_square else ppl))
        if not fresh:
            self.reward_hidden = new_hidden
        return np.array(rewards)

    @torch.no_grad()
    def evaluate(self, source, dag, name: str) -> dict:
        """Per-token loss and perplexity over all of ``source`` (batch ``test_batch_size``), eval mode."""
        self.shared.eval()
        hidden = self.shared.init_hidden(source.size(1))
        total, rows = 0.0, 0
        for idx in range(0, source.size(0) - 1, self.max_length):
            inputs, targets = get_batch(source, idx, self.max_length)
            output, hidden, _ = self.shared(inputs, dag, hidden=hidden, is_train=False)
            total += len(inputs) * F.cross_entropy(output.reshape(-1, output.size(-1)), targets).item()
            rows += len(inputs)
        loss = total / max(rows, 1)
        ppl = math.exp(min(loss, 50.0))
        logger.info("eval %s | loss: %8.4f | ppl: %8.2f", name, loss, ppl)
        out = {f"eval/{name}_loss": loss, f"eval/{name}_ppl": ppl}
        self.log(out, step=self.epoch)
        self.shared.train()
        return out


class CNNTrainer(BaseTrainer):
    kind = "micro_cnn"
    fixed_metric_name = "valid_acc"

    def build_shared(self):
        a = self.args
        return SharedMicroCNN(num_blocks=a.num_blocks, normal_ops=a.shared_cnn_normal_types,
                              reduce_ops=a.shared_cnn_reduce_types, num_modules=a.cnn_num_modules,
                              num_repeat_normal=a.cnn_num_repeat_normal, final_filter_size=a.cnn_final_filter_size,
                              input_channels=a.cnn_input_channels, height=a.cnn_height, width=a.cnn_width,
                              output_classes=a.output_classes)

    def build_controller(self):
        a = self.args
        return CNNMicroController(a.num_blocks, a.shared_cnn_normal_types, a.shared_cnn_reduce_types,
                                  a.controller_hid, a.softmax_temperature, a.tanh_c, a.mode)

    def fisher_epoch(self) -> int:
        # The original never passes the epoch on the CNN path: its default 0 goes into the α
        # schedule, so α is constant unless --alpha_decay_after <= 0 (then decayed from the start).
        return 0

    def eval_source(self):
        return self.data.test

    def test_source(self):
        return self.data.test

    def begin_shared_phase(self) -> None:
        pass

    def next_train_batch(self):
        return self.data.next_train()

    def get_loss(self, inputs, targets, dags, training=True):
        ce = inputs.new_zeros(())
        correct = 0.0
        for dag in dags:
            logits = self.shared(inputs, dag)
            ce = ce + F.cross_entropy(logits, targets) / len(dags)
            correct += (logits.argmax(1) == targets).float().mean().item() / len(dags)
        wpl_term = ce.new_zeros(())
        if self.wpl_on:
            for dag in dags:
                wpl_term = wpl_term + self.wpl.penalty(dag)
        return ce, wpl_term, ce.new_zeros(()), {"correct": correct}

    def shared_metrics(self, acc, n):
        return {"shared/accuracy": acc["correct"] / n}

    def fisher_step(self, dags) -> None:
        # The original re-created the validation iterator during the diff measurement, so the
        # Fisher batch was always the second validation batch: kept (spec B16).
        x, y = self.data.valid_batch(1)
        self.shared_optim.zero_grad(set_to_none=False)
        ce = sum(F.cross_entropy(self.shared(x, d), y) for d in dags) / len(dags)
        if not self.args.shared_ce_fisher:
            ce = ce + sum(self.wpl.penalty(d) for d in dags)
        ce.backward()
        self.wpl.update_fisher(dags[0], self.fisher_epoch())

    @torch.no_grad()
    def evaluate_fixed(self, arch) -> float:
        x, y = self.data.valid_batch(0)
        return (self.shared(x, arch).argmax(1) == y).float().mean().item()

    def begin_controller_phase(self) -> None:
        n = self.args.nb_batch_reward_controller
        avail = self.data.valid.num_batches(self.args.batch_size)
        if n > avail and not getattr(self, "_warned_nb", False):
            logger.warning("--nb_batch_reward_controller=%d but the validation split has %d batches: using %d",
                           n, avail, avail)
            self._warned_nb = True

    def end_controller_step(self) -> None:
        pass

    @torch.no_grad()
    def get_reward(self, dags, fresh: bool = False) -> np.ndarray:
        """R = c·acc (or c·acc²) on the first ``nb_batch_reward_controller`` validation batches."""
        self.shared.train()
        n = min(self.args.nb_batch_reward_controller, self.data.valid.num_batches(self.args.batch_size))
        batches = [self.data.valid_batch(i) for i in range(n)]
        out = []
        for dag in dags:
            correct = sum((self.shared(x, dag).argmax(1) == y).sum().item() for x, y in batches)
            acc = correct / sum(len(y) for _, y in batches)
            out.append(self.args.reward_c * (acc ** 2 if self.args.ppl_square else acc))
        return np.array(out)

    @torch.no_grad()
    def evaluate(self, split, arch, name: str) -> dict:
        self.shared.eval()
        bs = self.args.test_batch_size
        total_loss, correct = 0.0, 0
        for i in range(split.num_batches(bs)):
            x, y = split.batch(i, bs)
            logits = self.shared(x, arch)
            total_loss += F.cross_entropy(logits, y, reduction="sum").item()
            correct += (logits.argmax(1) == y).sum().item()
        n = max(len(split), 1)
        out = {f"eval/{name}_loss": total_loss / n, f"eval/{name}_top_1_acc": correct / n}
        logger.info("eval %s | loss: %8.4f | top-1 acc: %.4f", name, total_loss / n, correct / n)
        self.log(out, step=self.epoch)
        self.shared.train()
        return out
