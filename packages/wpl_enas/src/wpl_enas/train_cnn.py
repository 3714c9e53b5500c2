"""The ENAS search of micro-CNN cells (spec §2.3–§2.5, §2.11): image batches, accuracy rewards on
the first ``nb_batch_reward_controller`` validation batches, and the CNN quirks of the original
(no epoch passed to the Fisher update, the second validation batch behind the Fisher)."""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F

from wpl_enas.models.controller import CNNMicroController
from wpl_enas.models.shared_cnn import SharedMicroCNN
from wpl_enas.train import SearchTrainer, eval_label

logger = logging.getLogger("wpl_enas")


class CNNTrainer(SearchTrainer):
    """ENAS search of micro-CNN cells on images (accuracy rewards, spec §2.3–§2.5, §2.11)."""

    kind = "micro_cnn"
    fixed_metric_name = "valid_acc"

    warned_nb = False  # the nb_batch_reward_controller clamp is reported once per run

    def build_shared(self):
        a = self.config
        return SharedMicroCNN(num_blocks=a.num_blocks, normal_ops=a.shared_cnn_normal_types,
                              reduce_ops=a.shared_cnn_reduce_types, num_modules=a.cnn_num_modules,
                              num_repeat_normal=a.cnn_num_repeat_normal, final_filter_size=a.cnn_final_filter_size,
                              input_channels=a.cnn_input_channels, height=a.cnn_height, width=a.cnn_width,
                              output_classes=a.output_classes)

    def build_controller(self):
        a = self.config
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
        return {"train/shared/accuracy": acc["correct"] / n}

    def fisher_step(self, dags) -> None:
        # The original re-created the validation iterator during the diff measurement, so the
        # Fisher batch was always the second validation batch: kept (spec B16).
        x, y = self.data.valid_batch(1)
        self.shared_optim.zero_grad(set_to_none=False)
        ce = sum(F.cross_entropy(self.shared(x, d), y) for d in dags) / len(dags)
        if not self.config.shared_ce_fisher:
            ce = ce + sum(self.wpl.penalty(d) for d in dags)
        ce.backward()
        self.wpl.update_fisher(dags[0], self.fisher_epoch())

    @torch.no_grad()
    def evaluate_fixed(self, arch) -> float:
        x, y = self.data.valid_batch(0)
        return (self.shared(x, arch).argmax(1) == y).float().mean().item()

    def begin_controller_phase(self) -> None:
        n = self.config.nb_batch_reward_controller
        avail = self.data.valid.num_batches(self.config.batch_size)
        if n > avail and not self.warned_nb:
            logger.warning("--nb_batch_reward_controller=%d but the validation split has %d batches: using %d",
                           n, avail, avail)
            self.warned_nb = True

    def end_controller_step(self) -> None:
        pass

    @torch.no_grad()
    def get_reward(self, dags, fresh: bool = False) -> np.ndarray:
        """R = c·acc (or c·acc²) on the first ``nb_batch_reward_controller`` validation batches."""
        self.shared.train()
        n = min(self.config.nb_batch_reward_controller, self.data.valid.num_batches(self.config.batch_size))
        batches = [self.data.valid_batch(i) for i in range(n)]
        out = []
        for dag in dags:
            correct = sum((self.shared(x, dag).argmax(1) == y).sum().item() for x, y in batches)
            acc = correct / sum(len(y) for _, y in batches)
            out.append(self.config.reward_c * (acc ** 2 if self.config.ppl_square else acc))
        return np.array(out)

    @torch.no_grad()
    def evaluate(self, split, arch, name: str) -> dict:
        self.shared.eval()
        bs = self.config.test_batch_size
        total_loss, correct = 0.0, 0
        for i in range(split.num_batches(bs)):
            x, y = split.batch(i, bs)
            logits = self.shared(x, arch)
            total_loss += F.cross_entropy(logits, y, reduction="sum").item()
            correct += (logits.argmax(1) == y).sum().item()
        n = max(len(split), 1)
        out = {f"{name}_loss": total_loss / n, f"{name}_top_1_acc": correct / n}
        logger.info("eval %s | loss: %8.4f | top-1 acc: %.4f", eval_label(name), total_loss / n, correct / n)
        self.log(out, step=self.epoch)
        self.shared.train()
        return out
