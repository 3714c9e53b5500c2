"""Throughput and peak memory: one epoch of run_mnist.py / run_cifar.py, and the statistics
bookkeeping alone, each beside a straightforward per-example baseline (the original's way:
one dataset item at a time through torchvision transforms, a per-example Python loop with a
full sort for the margin, ``.item()`` per value, lists in a dict).

Each case runs in its own process so that its peak memory (max RSS on CPU, the CUDA allocator's
peak on GPU) is its own. Usage::

    cd packages/example_forgetting
    OMP_NUM_THREADS=1 uv run python benchmarks/bench_epoch.py --data_root ../../../shared/data

Without a data root (or ``$FORGETTING_DATA``) it uses synthetic data of the same shapes.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASES = ("mnist_ours", "mnist_baseline", "cifar_ours", "cifar_baseline", "stats_ours", "stats_baseline")


def _source(args) -> list[str]:
    root = args.data_root or os.environ.get("FORGETTING_DATA")
    return ["--data_root", root] if root else ["--data_source", "synthetic"]


def case_ours(kind: str, args) -> dict:
    from example_forgetting.cli import cifar_main, mnist_main
    from forgetting_common.device import peak_memory_bytes

    n = args.mnist_n if kind == "mnist" else args.cifar_n
    with tempfile.TemporaryDirectory() as out:
        argv = ["--output_dir", out, "--epochs", "1", "--train_limit", str(n), "--test_limit", str(args.test_n),
                "--quiet", "--no_tensorboard", "--device", args.device, "--no_download", *_source(args)]
        if kind == "mnist":
            res = mnist_main(["--dataset", "mnist", "--no_dropout", *argv])
        else:
            res = cifar_main(["--dataset", "cifar10", "--data_augmentation", "--cutout", *argv])
    import torch

    return {"examples": n, "seconds": res.timings["train_s"],
            "peak_bytes": peak_memory_bytes(torch.device(res.recorder.device))}


def case_baseline(kind: str, args) -> dict:
    """The straightforward path: per-example transforms, per-example stats loop, same model."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    import torchvision.transforms as T
    from example_forgetting import data as D
    from example_forgetting.baseline import loop_batch_inputs, loop_record
    from example_forgetting.models import MnistNet, ResNet18
    from forgetting_common.data.tensors import cutout
    from forgetting_common.device import peak_memory_bytes, resolve_device

    device = resolve_device(args.device)
    n = args.mnist_n if kind == "mnist" else args.cifar_n
    dataset = "mnist" if kind == "mnist" else "cifar10"
    src = _source(args)
    if src[0] == "--data_root":
        train, test = D.load_splits(dataset, "real", Path(src[1]), n, args.test_n, download=False)
    else:
        train, test = D.synthetic(dataset, n, args.test_n)
    torch.manual_seed(1)
    rng = np.random.RandomState(1)
    if kind == "mnist":
        model = MnistNet(dropout=False).to(device)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.5)
        tr = T.Compose([T.ToTensor(), T.Normalize(D.MNIST_MEAN, D.MNIST_STD)])
        te, bs = tr, 64
    else:
        model = ResNet18(10).to(device)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
        norm = T.Normalize(D.CIFAR_MEAN, D.CIFAR_STD)

        def cut(x):
            return cutout(x.unsqueeze(0), 16)[0]

        tr = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), norm, cut])
        te, bs = T.Compose([T.ToTensor(), norm]), 128
    x_tr, y_tr = train.images.numpy(), train.labels.numpy()
    x_te, y_te = test.images.numpy(), test.labels.numpy()
    stats: dict = {}
    start = time.time()
    model.train()
    perm = rng.permutation(np.arange(len(y_tr)))
    for b in range(0, len(perm), bs):
        pos = perm[b:b + bs]
        x = loop_batch_inputs(x_tr, pos, tr).to(device)
        y = torch.as_tensor(y_tr[pos]).to(device)
        opt.zero_grad()
        out = model(x)
        loss = F.cross_entropy(out, y, reduction="none")
        loop_record(stats, pos, out, y, loss)
        loss.mean().backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        for b in range(0, len(y_te), 32):
            pos = np.arange(b, min(b + 32, len(y_te)))
            model(loop_batch_inputs(x_te, pos, te).to(device))
    pickle.dumps(stats)
    return {"examples": n, "seconds": time.time() - start, "peak_bytes": peak_memory_bytes(device)}


def case_stats(mode: str, args) -> dict:
    import numpy as np
    import torch
    import torch.nn.functional as F
    from example_forgetting.baseline import loop_record
    from example_forgetting.stats import StatsRecorder
    from forgetting_common.device import peak_memory_bytes, resolve_device, synchronize

    device = resolve_device(args.device)
    n, bs, classes = args.stats_n, 128, 10
    g = torch.Generator().manual_seed(0)
    outputs = torch.randn(n, classes, generator=g).to(device)
    targets = torch.randint(0, classes, (n,), generator=g).to(device)
    losses = F.cross_entropy(outputs, targets, reduction="none")
    perm = torch.from_numpy(np.random.RandomState(0).permutation(n)).to(device)
    rec = StatsRecorder(np.arange(n), epochs=1, device=device) if mode == "ours" else None
    stats: dict = {}
    synchronize(device)
    start = time.time()
    for b in range(0, n, bs):
        pos = perm[b:b + bs]
        if rec is not None:
            rec.record(0, pos, outputs[pos], targets[pos], losses[pos])
        else:
            loop_record(stats, pos.cpu().numpy(), outputs[pos], targets[pos], losses[pos])
    if rec is not None:
        rec.end_epoch(0.0)
        rec.to_dict()
    synchronize(device)
    return {"examples": n, "seconds": time.time() - start, "peak_bytes": peak_memory_bytes(device)}


def run_case(name: str, args) -> dict:
    if name.startswith("stats"):
        return case_stats(name.split("_")[1], args)
    kind, which = name.split("_")
    return case_ours(kind, args) if which == "ours" else case_baseline(kind, args)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data_root", default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--mnist_n", type=int, default=10000)
    p.add_argument("--cifar_n", type=int, default=512)
    p.add_argument("--test_n", type=int, default=1000)
    p.add_argument("--stats_n", type=int, default=50000)
    p.add_argument("--case", choices=CASES, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.case:
        import torch

        if "OMP_NUM_THREADS" in os.environ:
            torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
        print(json.dumps(run_case(args.case, args)))
        return
    print(f"device {args.device}, torch threads {os.environ.get('OMP_NUM_THREADS', 'default')}; "
          f"MNIST {args.mnist_n} train ex., CIFAR-10 {args.cifar_n} train ex. (ResNet18, crop+flip+cutout), "
          f"{args.test_n} test ex.; stats bookkeeping over {args.stats_n} examples, batch 128")
    print(f"{'case':<18}{'examples/s':>14}{'seconds':>10}{'peak MiB':>10}")
    results = {}
    for case in CASES:
        cmd = [sys.executable, __file__, "--case", case, *sys.argv[1:]]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            print(f"{case:<18} failed: {proc.stderr.strip().splitlines()[-1:]}")
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        results[case] = r
        print(f"{case:<18}{r['examples'] / r['seconds']:>14.0f}{r['seconds']:>10.2f}{r['peak_bytes'] / 2**20:>10.0f}")
    for kind in ("mnist", "cifar", "stats"):
        a, b = results.get(f"{kind}_ours"), results.get(f"{kind}_baseline")
        if a and b:
            print(f"speed-up {kind}: {b['seconds'] / a['seconds']:.1f}x")


if __name__ == "__main__":
    main()
