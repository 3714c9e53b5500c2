"""Throughput of the ENAS+WPL search: shared-model steps/s and controller steps/s for the RNN and the
micro-CNN search, beside the plain ENAS step (WPL off) as the baseline, the cost of the WPL penalty
and of the Fisher/anchor update as a fraction of a training step, and peak memory.

    cd packages/wpl_enas && OMP_NUM_THREADS=1 uv run python benchmarks/bench_search.py [--device cpu]

Data are random tokens / images of the real shapes (PTB vocabulary 10,000; 32×32×3), so the
figures need no dataset. One "shared step" is one sampled architecture trained on
``num_batch_per_iter`` batches.
"""

from __future__ import annotations

import argparse
import json
import time
import types
from dataclasses import replace

import torch
from forgetting_common.device import peak_memory_bytes, resolve_device, synchronize
from wpl_enas.cli import parse_args
from wpl_enas.data import ImageData, ImageSplit
from wpl_enas.train_cnn import CNNTrainer
from wpl_enas.train_rnn import RNNTrainer

RNN_FLAGS = ("--num_blocks=4 --shared_embed=64 --shared_hid=64 --controller_hid=32 --batch_size=32 "
             "--shared_rnn_max_length=20 --num_batch_per_iter=5 --shared_dropout=0 --shared_dropouti=0 "
             "--shared_dropoute=0 --shared_wdrop=0 --fisher_clip_by_norm=10 --alpha_fisher=60 --policy_batch_size=1 "
             "--use_tensorboard=False --num_gpu=0")
CNN_FLAGS = ("--dataset=cifar10 --network_type=micro_cnn --num_blocks=3 --cnn_num_repeat_normal=1 "
             "--cnn_final_filter_size=48 --batch_size=32 --num_batch_per_iter=5 --controller_hid=32 "
             "--fisher_clip_by_norm=10 --alpha_fisher=60 --momentum=False --policy_batch_size=1 "
             "--use_tensorboard=False --num_gpu=0 --reward_c=1.")


def timed(fn, device, repeat):
    fn()  # warm-up
    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    synchronize(device)
    return (time.perf_counter() - t0) / repeat


def text_data(vocab, args, device):
    g = torch.Generator().manual_seed(0)
    def cols(n, b):
        return torch.randint(vocab, (n, b), generator=g).to(device)
    return types.SimpleNamespace(num_tokens=vocab, train=cols(4000, args.batch_size), valid=cols(400, args.batch_size),
                                 eval=cols(400, args.batch_size), test=cols(400, args.batch_size))


def image_data(args, device):
    g = torch.Generator().manual_seed(0)
    def split(n):
        return ImageSplit(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g).to(device),
                          torch.randint(0, 10, (n,), generator=g).to(device), (0.5,) * 3, (0.25,) * 3)
    return ImageData(split(2048), split(512), split(512), 10, args.batch_size, args.batch_size, 0)


def bench(kind, flags, device, steps, ctrl_steps):
    args, _ = parse_args(flags.split() + [f"--controller_max_step={ctrl_steps}", "--log_step=100000"])
    # time the training alone (the forgetting measure is extra)
    args = replace(args, model_dir="/nonexistent-unused", start_evaluate_diff=10**9)
    data = text_data(10000, args, device) if kind == "rnn" else image_data(args, device)
    trainer = (RNNTrainer if kind == "rnn" else CNNTrainer)(args, data, device)
    trainer.epoch = 0
    out = {"kind": kind}
    for label, on in (("plain_enas", False), ("enas_wpl", True)):
        trainer.wpl_on = on
        if on:  # a non-zero Fisher so the penalty does real work
            trainer.train_shared(0)
        sec = timed(lambda: trainer.train_shared(steps - 1), device, 1) / steps
        out[f"{label}_shared_steps_per_s"] = 1.0 / sec
        out[f"{label}_sec_per_step"] = sec
    # components, per shared step: the WPL penalty (forward+backward) on every batch, then one Fisher
    # estimate (extra validation forward/backward) and the Fisher + anchor update.
    dag = trainer.controller.sample(1)[0]
    keys = trainer.wpl_keys(dag)
    def penalty():
        trainer.shared_optim.zero_grad(set_to_none=False)
        trainer.wpl.penalty(keys).backward()
    pen = timed(penalty, device, 20) * args.num_batch_per_iter
    fisher_total = timed(lambda: (trainer.fisher_step([dag]), trainer.wpl.update_optimal()), device, 10)
    def update_only():
        trainer.wpl.update_fisher(keys, 0)
        trainer.wpl.update_optimal()
    upd = timed(update_only, device, 20)
    base = out["plain_enas_sec_per_step"]
    out.update({"wpl_penalty_fraction": pen / base, "fisher_estimate_and_update_fraction": fisher_total / base,
                "fisher_and_anchor_update_only_fraction": upd / base})
    sec = timed(trainer.train_controller, device, 1) / ctrl_steps
    out["controller_steps_per_s"] = 1.0 / sec
    out["shared_params"] = sum(p.numel() for p in trainer.shared.parameters())
    out["protected_params"] = sum(p.numel() for _, p in trainer.shared.protected_named_params())
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=6, help="shared steps timed per configuration")
    p.add_argument("--controller_steps", type=int, default=20)
    p.add_argument("--only", choices=["rnn", "cnn"], default=None)
    p.add_argument("--json", default=None, help="also write the rows for `forgetting bench` to this file")
    a = p.parse_args()
    device = resolve_device(a.device)
    torch.manual_seed(0)
    results = []
    for kind, flags in (("rnn", RNN_FLAGS), ("cnn", CNN_FLAGS)):
        if a.only and a.only != kind:
            continue
        r = bench(kind, flags, device, a.steps, a.controller_steps)
        results.append(r)
        print(f"[{kind}] shared steps/s: plain ENAS {r['plain_enas_shared_steps_per_s']:.2f}, "
              f"ENAS+WPL {r['enas_wpl_shared_steps_per_s']:.2f}; controller steps/s {r['controller_steps_per_s']:.2f}; "
              f"WPL penalty {100 * r['wpl_penalty_fraction']:.1f}% of a step, Fisher estimate+update "
              f"{100 * r['fisher_estimate_and_update_fraction']:.1f}% (update alone "
              f"{100 * r['fisher_and_anchor_update_only_fraction']:.1f}%)")
    peak_mib = peak_memory_bytes(device) / 2**20
    print(f"peak memory: {peak_mib:.0f} MiB ({'CUDA allocator' if device.type == 'cuda' else 'process max RSS'})")
    print(json.dumps(results))
    if a.json:
        rows = [{"case": f"{r['kind']} search, shared steps (WPL on vs plain ENAS)",
                 "ours": r["enas_wpl_shared_steps_per_s"], "baseline": r["plain_enas_shared_steps_per_s"],
                 "unit": "steps/s", "peak_mib": peak_mib} for r in results]
        with open(a.json, "w", encoding="utf-8") as f:
            json.dump({"rows": rows, "results": results, "device": str(device)}, f, indent=2)


if __name__ == "__main__":
    main()
