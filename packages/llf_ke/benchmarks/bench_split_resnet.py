"""Training throughput and peak memory of Split_ResNet18 beside a plain torchvision ResNet-18.

    uv run python benchmarks/bench_split_resnet.py [--image_size 16 32 224] [--batch_size 32]
        [--steps 10] [--device auto] [--threads N]

Both networks have the same shape (102 classes) and are trained with the same SGD step
(momentum 0.9, weight decay 1e-4, label smoothing 0.1) on random batches. The split layers
keep their masks out of ``forward``, so the two should run at the same speed; the masks only
add their own memory (one float per weight).
"""

from __future__ import annotations

import argparse
import gc
import json
import time

import torch
import torchvision
from forgetting_common.device import (
    peak_memory_bytes,
    reset_peak_memory,
    resolve_device,
    synchronize,
)
from llf_ke.models import Builder, build_model


def bench(model: torch.nn.Module, device: torch.device, image_size: int, batch: int, steps: int, warmup: int = 2) -> float:
    model.to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    crit = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    x = torch.randn(batch, 3, image_size, image_size, device=device)
    y = torch.randint(0, 102, (batch,), device=device)
    for i in range(warmup + steps):
        if i == warmup:
            synchronize(device)
            start = time.perf_counter()
        loss = crit(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    synchronize(device)
    return batch * steps / (time.perf_counter() - start)


MAKERS = {
    "Split_ResNet18 (masks)": lambda: build_model("Split_ResNet18", 102, Builder()),
    "torchvision resnet18": lambda: torchvision.models.resnet18(num_classes=102),
}


def _child(label: str, device_spec: str, size: int, batch: int, steps: int, conn) -> None:
    device = resolve_device(device_spec)
    reset_peak_memory(device)
    ips = bench(MAKERS[label](), device, size, batch, steps)
    conn.send((ips, peak_memory_bytes(device)))
    conn.close()


def measure(label: str, device_spec: str, size: int, batch: int, steps: int) -> tuple[float, int]:
    """On CPU each measurement runs in a forked child, so its max RSS is that model's own peak."""
    import multiprocessing as mp

    if resolve_device(device_spec).type != "cpu":
        device = resolve_device(device_spec)
        gc.collect()
        torch.cuda.empty_cache() if device.type == "cuda" else None
        reset_peak_memory(device)
        ips = bench(MAKERS[label](), device, size, batch, steps)
        return ips, peak_memory_bytes(device)
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_child, args=(label, device_spec, size, batch, steps, child))
    proc.start()
    result = parent.recv()
    proc.join()
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--image_size", type=int, nargs="+", default=[16, 32])
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=None, help="also write the rows for `forgetting bench` to this file")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    device = resolve_device(a.device)
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, batch {a.batch_size}")
    print(f"{'model':<28}{'size':>6}{'img/s':>10}{'peak MiB':>11}")
    rows = []
    for size in a.image_size:
        measured = {}
        for label in MAKERS:
            ips, peak = measure(label, str(device), size, a.batch_size, a.steps)
            measured[label] = (ips, peak / 2**20)
            print(f"{label:<28}{size:>6}{ips:>10.1f}{peak / 2**20:>11.0f}", flush=True)
        (ours, ours_peak), (base, base_peak) = measured.values()
        rows.append({"case": f"Split_ResNet18 training, {size}px (vs torchvision resnet18)", "ours": ours,
                     "baseline": base, "unit": "img/s", "peak_mib": ours_peak, "baseline_peak_mib": base_peak})
    if a.json:
        with open(a.json, "w", encoding="utf-8") as f:
            json.dump({"rows": rows, "device": str(device), "batch_size": a.batch_size}, f, indent=2)
    if device.type == "cpu":
        print("peak on CPU: max RSS of a forked child per row (includes the ~torch runtime it shares)")


if __name__ == "__main__":
    from forgetting_common.errors import run_main

    run_main(main, prog="bench_split_resnet.py")
