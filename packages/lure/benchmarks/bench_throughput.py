"""Training throughput per chunk, the cost of one unlearn step, and peak memory, beside a
DataLoader-over-PIL baseline.

    uv run python benchmarks/bench_throughput.py --chunk 1024 --epochs 1 --arch resnet20s --threads 1

* ours: the chunk's images held as a uint8 tensor on the device, batched by index, cropped and
  flipped per batch on the device (what the training loop does);
* baseline: a ``Dataset`` of PIL images with torchvision's RandomCrop(32, 4), RandomHorizontalFlip
  and ToTensor, through a ``DataLoader`` (what the original did);
* unlearn: SNIP scoring on one batch of 100 plus the global ranking and re-initialisation,
  as a fraction of one epoch over the chunk and of a whole state of ``--state_epochs`` epochs.

Data: ``--data ROOT`` reads real CIFAR-10 (torchvision layout or the JPEG zip); otherwise
random CIFAR-sized images. Peak memory is the CUDA allocator's peak on a GPU, else the
process's max RSS (which only grows, so phases are run baseline first).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from forgetting_common.data import load_cifar  # noqa: E402
from forgetting_common.data.tensors import augment_batch  # noqa: E402
from forgetting_common.device import (  # noqa: E402
    peak_memory_bytes,
    reset_peak_memory,
    resolve_device,
    synchronize,
)
from lure import unlearn  # noqa: E402
from lure.data import TensorSource  # noqa: E402
from lure.models import build_model  # noqa: E402


def train_ours(model, opt, source, n, batch_size, epochs, device, gen):
    model.train()
    seen = 0
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, batch_size):
            x, y = source.fetch(order[start:start + batch_size])
            x = augment_batch(x, crop_padding=4, flip=True, generator=gen)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seen += len(y)
    synchronize(device)
    return seen


def train_baseline(model, opt, images, labels, batch_size, epochs, device):
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset
    from torchvision import transforms

    class PilSet(Dataset):
        def __init__(self):
            self.items = [Image.fromarray(img.permute(1, 2, 0).numpy()) for img in images]
            self.tf = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                                          transforms.ToTensor()])

        def __len__(self):
            return len(self.items)

        def __getitem__(self, i):
            return self.tf(self.items[i]), int(labels[i])

    loader = DataLoader(PilSet(), batch_size=batch_size, shuffle=True, num_workers=0)
    model.train()
    seen = 0
    for _ in range(epochs):
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seen += len(y)
    synchronize(device)
    return seen


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help="CIFAR-10 root (torchvision layout or JPEG zip); default random images")
    p.add_argument("--chunk", type=int, default=1024, help="images in the chunk")
    p.add_argument("--epochs", type=int, default=1, help="epochs timed per method")
    p.add_argument("--state_epochs", type=int, default=50, help="epochs of one state (the README's 50)")
    p.add_argument("--arch", default="resnet20s")
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--json", default=None, help="also write the rows for `forgetting bench` to this file")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if args.data:
        images, labels, _ = load_cifar(args.data, "cifar10", train=True, flag="--data")
        images, labels, what = images[: args.chunk], labels[: args.chunk], f"CIFAR-10 from {args.data}"
    else:
        gen = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (args.chunk, 3, 32, 32), generator=gen, dtype=torch.uint8)
        labels = torch.randint(0, 10, (args.chunk,), generator=gen)
        what = "random CIFAR-sized images"
    print(f"device {device}, threads {torch.get_num_threads()}, {args.arch}, chunk {args.chunk} ({what}), "
          f"batch {args.batch_size}, {args.epochs} epoch(s) per method")

    def fresh():
        torch.manual_seed(0)
        model = build_model(args.arch, 10).to(device)
        return model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)

    rows = []
    reset_peak_memory(device)
    model, opt = fresh()
    t0, c0 = time.perf_counter(), time.process_time()
    seen = train_baseline(model, opt, images, labels, args.batch_size, args.epochs, device)
    base_t, base_c = time.perf_counter() - t0, time.process_time() - c0
    rows.append(("baseline: DataLoader over PIL", seen / base_t, seen / base_c, peak_memory_bytes(device)))

    reset_peak_memory(device)
    model, opt = fresh()
    source = TensorSource(images, labels, device)
    t0, c0 = time.perf_counter(), time.process_time()
    seen = train_ours(model, opt, source, args.chunk, args.batch_size, args.epochs, device, torch.Generator().manual_seed(0))
    ours_t, ours_c = time.perf_counter() - t0, time.process_time() - c0
    rows.append(("ours: tensors on device, batch augmentation", seen / ours_t, seen / ours_c, peak_memory_bytes(device)))

    # data preparation alone (no model)
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(0)
    for start in range(0, args.chunk, args.batch_size):
        x, _ = source.fetch(torch.arange(start, min(args.chunk, start + args.batch_size)))
        augment_batch(x, crop_padding=4, flip=True, generator=gen)
    synchronize(device)
    prep_ours = args.chunk / (time.perf_counter() - t0)

    model.eval()
    t0, c0 = time.perf_counter(), time.process_time()
    x, y = source.fetch(torch.arange(min(100, args.chunk)))
    sal = unlearn.snip_saliency(model, [(augment_batch(x, crop_padding=4, flip=True, generator=gen), y)])
    masks, _ = unlearn.snip_mask(sal, 0.2)
    unlearn.reinit_masked(model, masks, generator=torch.Generator().manual_seed(1))
    synchronize(device)
    unlearn_t, unlearn_c = time.perf_counter() - t0, time.process_time() - c0
    epoch_c = ours_c / args.epochs

    for name, ips, ipc, peak in rows:
        print(f"{name:45s} {ips:8.1f} train images/s (wall)  {ipc:8.1f} per CPU-second  "
              f"peak memory {peak / 2**20:7.1f} MiB")
    print(f"speed-up of ours over the baseline: {rows[1][1] / rows[0][1]:.2f}x wall, {rows[1][2] / rows[0][2]:.2f}x CPU")
    print(f"batch preparation alone (ours): {prep_ours:.0f} images/s (wall)")
    print(f"unlearn step (SNIP on 100 images + ranking + re-init): {unlearn_t * 1000:.1f} ms wall, "
          f"{unlearn_c * 1000:.1f} ms CPU = {100 * unlearn_c / epoch_c:.2f}% of one epoch over the chunk (CPU time), "
          f"{100 * unlearn_c / (epoch_c * args.state_epochs):.3f}% of a {args.state_epochs}-epoch state")
    if args.json:  # max RSS only grows: the baseline ran first, so its peak is its own
        rows = [{"case": f"{args.arch} training, chunk {args.chunk} (tensors vs DataLoader over PIL)",
                 "ours": rows[1][1], "baseline": rows[0][1], "unit": "img/s", "peak_mib": rows[1][3] / 2**20,
                 "baseline_peak_mib": rows[0][3] / 2**20}]
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"rows": rows, "data": what, "unlearn_step_ms_cpu": unlearn_c * 1000,
                       "unlearn_fraction_of_epoch": unlearn_c / epoch_c}, f, indent=2)


if __name__ == "__main__":
    main()
