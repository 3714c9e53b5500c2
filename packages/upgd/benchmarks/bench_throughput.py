"""Samples per second of SGD and UPGD per task: ours beside a straightforward baseline.

The baseline is what the original code does per step: a torch ``DataLoader`` (batch size 1,
shuffled) over a dataset that converts and normalises each sample on access (and permutes the
pixels for MNIST), a plain per-tensor UPGD/SGD step written with temporaries, and the
statistics block with a host sync per value. Ours: tensors on the device indexed per step,
in-place optimizer steps, statistics without host syncs (every step, or every k steps).

    uv run python benchmarks/bench_throughput.py [--steps 300] [--tasks cifar10 mnist] [--device cpu]

Uses the real data under FORGETTING_DATA (or --data_dir) when present, else fake data of the
same shapes (the numbers are the same to within noise: the work per sample does not depend on it).
"""

from __future__ import annotations

import json
import time

import numpy as np
import torch
import torch.nn.functional as F
from forgetting_common.cli import (
    OneLineErrorParser,
    add_device_flag,
    add_print_config_flag,
    config_dict,
)
from forgetting_common.data import resolve_root
from forgetting_common.device import peak_memory_bytes, resolve_device, synchronize
from forgetting_common.errors import run_main
from upgd.runner import Experiment, RunConfig
from upgd.stats import weight_and_grad_stats
from upgd.tasks import load_source

TASKS = {
    "cifar10": ("label_permuted_cifar10_stats", "convolutional_network_relu_with_hooks"),
    "mnist": ("input_permuted_mnist_stats", "fully_connected_relu_with_hooks"),
}
HPS = {
    "sgd": {"lr": 0.01, "weight_decay": 0.0},
    "upgd_fo_global": {"lr": 0.01, "beta_utility": 0.999, "sigma": 0.001, "weight_decay": 0.0},
}


class PerSampleDataset(torch.utils.data.Dataset):
    """uint8-like storage converted and normalised on every access, as torchvision transforms do."""

    def __init__(self, raw: np.ndarray, labels: np.ndarray, perm: np.ndarray | None, shape):
        self.raw, self.labels, self.perm, self.shape = raw, labels, perm, shape

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        x = torch.from_numpy(np.asarray(self.raw[i], dtype=np.float32) / 255.0)
        x = (x - 0.5) / 0.5
        x = x.reshape(-1)
        if self.perm is not None:
            x = x[self.perm]
        return x.reshape(self.shape), int(self.labels[i])


def naive_upgd_step(params, state, t, lr, beta, sigma, wd):
    maxima = None
    for name, p in params:
        u = -p.grad * p
        state[name] = beta * state.get(name, torch.zeros_like(p)) + (1 - beta) * u
        m = state[name].max()
        maxima = m if maxima is None or m > maxima else maxima  # host sync, as the original's comparison
    for name, p in params:
        s = torch.sigmoid((state[name] / (1 - beta**t)) / maxima)
        noise = torch.randn_like(p) * sigma
        p.data = (1 - lr * wd) * p.data - lr * (p.grad + noise) * (1 - s)


def naive_stats(net, loss, out, y, x):
    """The per-step statistics with ``.item()`` on every value and the plain SVD rank."""
    values = [loss.item(), float(out.argmax(1).item() == y.item())]
    with torch.no_grad():
        after = F.cross_entropy(net(x), y).item()
    values.append(min(max(1 - after / max(values[0], 1e-8), 0.0), 1.0))
    values.append(float(net.dead_fraction().item()))
    rank, max_rank = 0.0, 0
    w_sq = w_abs = g_sq = g_abs = g_nz = count = 0.0
    for name, p in net.named_parameters():
        if "weight" not in name:
            continue
        w = p.detach()
        if "conv" in name:
            rank += torch.linalg.matrix_rank(w).float().mean().item()
            max_rank += min(w.shape[-2:])
        else:
            rank += torch.linalg.matrix_rank(w).item()
            max_rank += min(w.shape)
        w_sq += (w * w).sum().item()
        w_abs += w.abs().sum().item()
        g_sq += (p.grad * p.grad).sum().item()
        g_abs += p.grad.abs().sum().item()
        g_nz += (p.grad != 0).sum().item()
        count += w.numel()
    values += [rank / max_rank, w_sq**0.5, w_abs, g_sq**0.5, g_nz / count, g_abs]
    return values


def bench_baseline(exp: Experiment, learner: str, steps: int, device) -> float:
    src = exp.task
    if src.maximum is not None:  # real data: the raw uint8 pixels
        raw = src.x.cpu().numpy()
    else:
        raw = ((src.x.cpu().numpy() * 0.5 + 0.5) * 255.0).astype(np.uint8)
    perm = np.random.default_rng(0).permutation(src.n_inputs) if src.kind == "input" else None
    ds = PerSampleDataset(raw, src.targets.cpu().numpy(), perm, exp.net.input_shape)
    loader = iter(torch.utils.data.DataLoader(ds, batch_size=1, shuffle=True))
    params = [(n, p) for n, p in exp.net.named_parameters()]
    state: dict = {}
    hp = HPS[learner]
    synchronize(device)
    start = time.perf_counter()
    for t in range(1, steps + 1):
        x, y = next(loader)
        x, y = x.to(device), y.to(device)
        for _, p in params:
            p.grad = None
        out = exp.net(x)
        loss = F.cross_entropy(out, y)
        loss.backward()
        if learner == "sgd":
            for _, p in params:
                p.data = p.data - hp["lr"] * (p.grad + hp["weight_decay"] * p.data)
        else:
            naive_upgd_step(params, state, t, hp["lr"], hp["beta_utility"], hp["sigma"], hp["weight_decay"])
        naive_stats(exp.net, loss, out, y, x)
    synchronize(device)
    return steps / (time.perf_counter() - start)


def bench_ours(exp: Experiment, steps: int, device, stats_every: int | None) -> float:
    n = steps
    losses = torch.zeros(n, device=device)
    accs = torch.zeros(n, device=device)
    plast = torch.zeros(n, device=device)
    dead = torch.zeros(n, device=device)
    sampled = torch.zeros(n, 6, device=device)
    synchronize(device)
    start = time.perf_counter()
    for i in range(n):
        x, y, out, loss, _ = exp.step()
        losses[i] = loss
        accs[i] = (out.argmax(1) == y).float().squeeze()
        if stats_every is not None:
            with torch.no_grad():
                after = F.cross_entropy(exp.net(x), y)
            plast[i] = torch.clamp(1 - after / torch.clamp(loss, min=1e-8), 0, 1)
            dead[i] = exp.net.dead_fraction()
            if i % stats_every == 0:
                sampled[i] = weight_and_grad_stats(exp.net)
    synchronize(device)
    return n / (time.perf_counter() - start)


def main(argv=None) -> None:
    parser = OneLineErrorParser(prog="bench_throughput.py", description=__doc__)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--learners", nargs="+", default=list(HPS), choices=list(HPS))
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--fake_data", action="store_true", help="random data of the tasks' shapes")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    add_device_flag(parser)
    add_print_config_flag(parser)
    args = parser.parse_args(argv)
    if args.print_config:
        print(json.dumps(config_dict(args), sort_keys=True))
        return
    device = resolve_device(args.device)
    torch.set_num_threads(args.threads)
    root = resolve_root(args.data_dir, "dataset")
    rows = []
    for key in args.tasks:
        task, network = TASKS[key]
        dataset = "cifar10" if key == "cifar10" else "mnist"
        use_fake = args.fake_data
        if not use_fake:
            try:
                load_source(dataset, root, limit=10)
            except Exception:
                use_fake = True
        for learner in args.learners:
            results = {}
            for variant in ("baseline", "ours_stats_every_1", "ours_stats_every_100", "ours_no_stats"):
                cfg = RunConfig(task=task, learner=learner, network=network, seed=0, n_samples=args.steps,
                                hps=dict(HPS[learner]), data_dir=str(root), fake_data=use_fake,
                                dataset_limit=5000, device=device, quiet=True, tensorboard=False)
                exp = Experiment(cfg)
                warm = min(20, args.steps)
                bench_ours(exp, warm, device, 1)  # warm-up
                if variant == "baseline":
                    results[variant] = bench_baseline(exp, learner, args.steps, device)
                elif variant == "ours_stats_every_1":
                    results[variant] = bench_ours(exp, args.steps, device, 1)
                elif variant == "ours_stats_every_100":
                    results[variant] = bench_ours(exp, args.steps, device, 100)
                else:
                    results[variant] = bench_ours(exp, args.steps, device, None)
            row = {"task": task, "learner": learner, "data": "fake" if use_fake else "real",
                   **{k: round(v, 1) for k, v in results.items()},
                   "speedup_faithful": round(results["ours_stats_every_1"] / results["baseline"], 2),
                   "hours_1M_faithful": round(1e6 / results["ours_stats_every_1"] / 3600, 2),
                   "hours_1M_stats_every_100": round(1e6 / results["ours_stats_every_100"] / 3600, 2),
                   "hours_1M_baseline": round(1e6 / results["baseline"] / 3600, 2)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"device={device} threads={args.threads} steps={args.steps} "
          f"peak_memory_MiB={peak_memory_bytes(device) / 2**20:.0f}")
    header = ["task", "learner", "baseline", "ours_stats_every_1", "ours_stats_every_100", "ours_no_stats",
              "hours_1M_faithful", "hours_1M_baseline"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(str(row[h]) for h in header) + " |")


if __name__ == "__main__":
    run_main(main, prog="bench_throughput.py")
