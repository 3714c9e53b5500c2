"""Throughput and peak memory: game training iterations and ease-of-teaching receiver iterations.

    uv run python benchmarks/bench_game.py --device cpu --iters 300 --eot_receivers 30 --eot_iters 50

Training: our ``Team`` (one-hot inputs as weight lookups, zero states skipped, one backward,
multi-tensor Adam) beside a straightforward version (``nn.LSTM`` called per step on one-hot
tensors, ``torch.distributions.Categorical``, two backward passes, default Adam), the way the
original is written. Ease of teaching: all receivers stacked and trained at once beside the
loop over separate receivers. Figures are game iterations per second (one iteration = one batch
of 100 games; for ease of teaching, one iteration of every receiver).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F
from ease_of_teaching.game import GameSampler, Team, attribute_table
from ease_of_teaching.metrics import perfect_language
from ease_of_teaching.teaching import teach_batched, teach_sequential
from forgetting_common.device import (
    peak_memory_bytes,
    reset_peak_memory,
    resolve_device,
    synchronize,
)
from torch import nn


class PlainSender(nn.Module):
    def __init__(self):
        super().__init__()
        self.attr2hidden, self.speaklstm, self.hidden2vocab = nn.Linear(12, 100), nn.LSTM(8, 100), nn.Linear(100, 8)

    def forward(self, attrs):
        b = attrs.shape[0]
        h = self.attr2hidden(attrs).unsqueeze(0)
        c = torch.zeros_like(h)
        out, (h, c) = self.speaklstm(torch.zeros(1, b, 8, device=attrs.device), (h, c))
        toks, logp, plogp = [], 0, 0
        for step in range(2):
            probs = F.softmax(self.hidden2vocab(out).squeeze(0), 1)
            plogp = plogp + (probs * torch.log(probs)).sum(-1)
            dist = torch.distributions.Categorical(probs)
            tok = dist.sample()
            logp = logp + dist.log_prob(tok)
            toks.append(tok)
            if step == 0:
                x = torch.zeros(b, 8, device=attrs.device).scatter_(1, tok.unsqueeze(1), 1)
                out, (h, c) = self.speaklstm(x.unsqueeze(0), (h, c))
        return torch.stack(toks, 1), logp, plogp


class PlainReceiver(nn.Module):
    def __init__(self):
        super().__init__()
        self.attr2embed, self.listenlstm, self.hidden2embed = nn.Linear(12, 100), nn.LSTM(8, 100), nn.Linear(100, 100)

    def forward(self, msg, cand_attrs):
        b = msg.shape[0]
        x = torch.zeros(b * 2, 8, device=msg.device).scatter_(1, msg.reshape(-1, 1), 1).view(b, 2, 8)
        _, (h, _) = self.listenlstm(x.transpose(0, 1))
        u = self.hidden2embed(h.squeeze(0))
        scores = torch.matmul(u.unsqueeze(1).unsqueeze(2), self.attr2embed(cand_attrs).unsqueeze(3)).squeeze()
        probs = F.softmax(scores, 1)
        dist = torch.distributions.Categorical(probs)
        a = dist.sample()
        return a, dist.log_prob(a), (probs * F.log_softmax(scores, 1)).sum(-1)


def bench_train(device, iters, plain: bool) -> float:
    torch.manual_seed(0)
    sampler = GameSampler(np.random.default_rng(0))
    attrs = attribute_table(device)
    if plain:
        s, r = PlainSender().to(device), PlainReceiver().to(device)
        so, ro = torch.optim.Adam(s.parameters(), 1e-3), torch.optim.Adam(r.parameters(), 1e-3)
    else:
        team = Team(device=device)

    def one():
        c, t = (torch.from_numpy(x).to(device) for x in sampler.sample(100))
        if not plain:
            team.update(team.play(c, t))
            return
        rows = torch.arange(100, device=device)
        tgt = c[rows, t]
        msg, slp, splp = s(attrs[tgt])
        a, rlp, rplp = r(msg, attrs[c])
        rew = (c[rows, a] == tgt).float()
        sl = (-rew * slp + 0.1 * splp).mean()
        rl = (-rew * rlp + 0.1 * rplp).mean()
        so.zero_grad()
        sl.backward()
        so.step()
        ro.zero_grad()
        rl.backward()
        ro.step()

    for _ in range(10):
        one()
    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        one()
    synchronize(device)
    return iters / (time.perf_counter() - t0)


def bench_eot(device, receivers, iters, batched: bool) -> float:
    lang = torch.from_numpy(perfect_language())
    fn = teach_batched if batched else teach_sequential
    fn(lang, n_receivers=receivers, iters=2, rng=np.random.default_rng(0), device=device)  # warm-up
    synchronize(device)
    t0 = time.perf_counter()
    fn(lang, n_receivers=receivers, iters=iters, rng=np.random.default_rng(0), device=device)
    synchronize(device)
    return iters / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--iters", type=int, default=300, help="timed training iterations")
    p.add_argument("--eot_receivers", type=int, default=30)
    p.add_argument("--eot_iters", type=int, default=50, help="timed ease-of-teaching iterations")
    p.add_argument("--num_threads", type=int, default=1)
    p.add_argument("--json", default=None, help="also write the rows for `forgetting bench` to this file")
    args = p.parse_args()
    device = resolve_device(args.device)
    if device.type == "cpu" and args.num_threads:
        torch.set_num_threads(args.num_threads)
    print(f"device {device}, torch threads {torch.get_num_threads()}")
    reset_peak_memory(device)
    base = bench_train(device, args.iters, plain=True)
    ours = bench_train(device, args.iters, plain=False)
    print(f"training: {ours:8.1f} it/s (ours)   {base:8.1f} it/s (straightforward)   x{ours / base:.2f}")
    seq = bench_eot(device, args.eot_receivers, args.eot_iters, batched=False)
    bat = bench_eot(device, args.eot_receivers, args.eot_iters, batched=True)
    print(f"ease of teaching, {args.eot_receivers} receivers: {bat:8.2f} it/s (batched)   "
          f"{seq:8.2f} it/s (one receiver at a time)   x{bat / seq:.2f}   "
          f"= {bat * args.eot_receivers:.0f} vs {seq * args.eot_receivers:.0f} receiver-iterations/s")
    peak_mib = peak_memory_bytes(device) / 2**20
    print(f"peak memory: {peak_mib:.0f} MiB ({'CUDA allocator' if device.type == 'cuda' else 'process RSS'})")
    if args.json:  # one process for all cases: the peak is the process's
        rows = [{"case": "game training (Team vs straightforward)", "ours": ours, "baseline": base, "unit": "it/s",
                 "peak_mib": peak_mib},
                {"case": f"ease of teaching, {args.eot_receivers} receivers (batched vs one at a time)", "ours": bat,
                 "baseline": seq, "unit": "it/s", "peak_mib": peak_mib}]
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"rows": rows, "device": str(device)}, f, indent=2)


if __name__ == "__main__":
    main()
