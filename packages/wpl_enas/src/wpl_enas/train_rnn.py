"""The ENAS search of recurrent cells (spec §2.1–§2.2, §2.6–§2.10): text batches, perplexity rewards,
the forgetting measure on validation window 0, and the WPL keys of an RNN DAG."""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
import torch.nn.functional as F

from wpl_enas.dags import dag_to_keys
from wpl_enas.data import get_batch
from wpl_enas.models.controller import RNNController
from wpl_enas.models.shared_rnn import SharedRNN
from wpl_enas.train import SearchTrainer, eval_label

logger = logging.getLogger("wpl_enas")


class RNNTrainer(SearchTrainer):
    """ENAS search of recurrent cells on a text corpus (perplexity rewards, spec §2.1–§2.2, §2.6–§2.10)."""

    kind = "rnn"
    fixed_metric_name = "valid_ppl"

    def build_shared(self):
        a = self.config
        return SharedRNN(self.data.num_tokens, a.shared_embed, a.shared_hid, a.num_blocks, tie_weights=a.tie_weights,
                         dropout=a.shared_dropout, dropoute=a.shared_dropoute, dropouti=a.shared_dropouti,
                         wdrop=a.shared_wdrop, mode=a.mode,
                         ar=a.activation_regularization_amount if a.activation_regularization else 0.0,
                         tar=a.temporal_activation_regularization_amount if a.temporal_activation_regularization else 0.0,
                         norm_stab=a.norm_stabilizer_regularization_amount if a.norm_stabilizer_regularization else 0.0,
                         norm_fixed_point=a.norm_stabilizer_fixed_point)

    def build_controller(self):
        a = self.config
        return RNNController(a.num_blocks, a.shared_rnn_activations, a.controller_hid, a.softmax_temperature,
                             a.tanh_c, a.mode)

    def wpl_keys(self, dag):
        return dag_to_keys(dag, self.config.num_blocks)

    @property
    def max_length(self) -> int:
        return self.config.shared_rnn_max_length

    def eval_source(self):
        return self.data.eval

    def test_source(self):
        return self.data.test

    def begin_shared_phase(self) -> None:
        b = self.config.batch_size
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
        return {"train/shared/perplexity": math.exp(min(acc["ce"] / n, 50.0))}

    def fisher_step(self, dags) -> None:
        inputs, targets = get_batch(self.data.valid, self.fisher_valid_idx, self.max_length)
        ce, rest, self.v_hidden = self._forward_dags(inputs, targets, dags, self.v_hidden)
        self.v_hidden = self.v_hidden.detach()
        self.shared_optim.zero_grad(set_to_none=False)
        if self.config.shared_ce_fisher:
            ce.backward()
        else:
            loss = ce + (rest if torch.is_tensor(rest) else 0.0)
            for dag in dags:
                loss = loss + self.wpl.penalty(self.wpl_keys(dag))
            loss.backward()
        self.wpl.update_fisher(self.wpl_keys(dags[0]), self.fisher_epoch())
        self.fisher_valid_idx = (self.fisher_valid_idx + self.max_length) % (self.data.valid.size(0) - 1)
        if self.fisher_valid_idx == 0:
            self.v_hidden = self.shared.init_hidden(self.config.batch_size)

    @torch.no_grad()
    def evaluate_fixed(self, dag) -> float:
        """Perplexity of ``dag`` on validation window 0, fresh hidden state, train mode (spec §3.9)."""
        inputs, targets = get_batch(self.data.valid, 0, self.max_length)
        output, _, _ = self.shared(inputs, dag, hidden=self.shared.init_hidden(self.config.batch_size))
        return math.exp(F.cross_entropy(output.reshape(-1, output.size(-1)), targets).item())

    def begin_controller_phase(self) -> None:
        self.reward_hidden = self.shared.init_hidden(self.config.batch_size)
        self.valid_idx = 0

    def end_controller_step(self) -> None:
        prev = self.valid_idx
        self.valid_idx = (self.valid_idx + self.max_length) % (self.data.valid.size(0) - 1)
        if prev > self.valid_idx:
            self.reward_hidden = self.shared.init_hidden(self.config.batch_size)

    @torch.no_grad()
    def get_reward(self, dags, fresh: bool = False) -> np.ndarray:
        """R = c/ppl (or c/ppl²) per DAG on one validation window; the model stays in train mode."""
        self.shared.train()
        if fresh:
            idx, hidden = 0, self.shared.init_hidden(self.config.batch_size)
        else:
            idx, hidden = self.valid_idx, self.reward_hidden
        inputs, targets = get_batch(self.data.valid, idx, self.max_length)
        rewards, new_hidden = [], hidden
        for dag in dags:
            output, new_hidden, _ = self.shared(inputs, dag, hidden=hidden)
            ppl = math.exp(F.cross_entropy(output.reshape(-1, output.size(-1)), targets).item())
            rewards.append(self.config.reward_c / (ppl ** 2 if self.config.ppl_square else ppl))
        if not fresh:
            self.reward_hidden = new_hidden
        return np.array(rewards)

    @torch.no_grad()
    def evaluate(self, source, dag, name: str) -> dict:
        """Per-token loss and perplexity over all of ``source`` (batch ``test_batch_size``), eval mode;
        logged as ``{name}_loss`` and ``{name}_ppl`` (``name`` holds the namespace)."""
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
        logger.info("eval %s | loss: %8.4f | ppl: %8.2f", eval_label(name), loss, ppl)
        out = {f"{name}_loss": loss, f"{name}_ppl": ppl}
        self.log(out, step=self.epoch)
        self.shared.train()
        return out
