"""Throughput and peak memory: training steps and one forgetting probe, ours vs a plain baseline.

Ours: the training split held as a uint8 tensor on the device, batches drawn by index, the probe
from :func:`targeted_forgetting.forgetting.forget_copy`. Baseline: what the original did, written
plainly: a Dataset of PIL images with ``ToTensor`` per example behind a DataLoader, and a probe
that deep-copies the model, draws per-layer masks and resets the layers in Python.

    uv run python benchmarks/bench_probe.py                 # both, each in its own process
    uv run python benchmarks/bench_probe.py --mode ours --iters 500

Data: real MNIST from --data_dir / $FORGETTING_DATA if present, else synthetic MNIST-shaped data.
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from forgetting_common.device import peak_memory_bytes, resolve_device, synchronize
from forgetting_common.errors import UserError, run_main
from targeted_forgetting.data import load_train_data
from targeted_forgetting.forgetting import ForgetConfig, forget_copy
from targeted_forgetting.models import build_model


def get_data(args):
    source = "real"
    try:
        data = load_train_data(train_data="mnist", data_source="real", data_dir=args.data_dir, train_limit=None,
                               train_perc=0.1, random_perc=0.1, seed=0, download=False)
    except UserError:
        source = "synthetic"
        data = load_train_data(train_data="mnist", data_source="synthetic", data_dir=None, train_limit=6000,
                               train_perc=1.0, random_perc=0.1, seed=0)
    return data, source


def time_training(model, batches, device, iters):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    done = 0
    start = None
    while done < iters + 10:
        for x, y in batches():
            x, y = x.to(device), y.to(device)
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()
            done += 1
            if done == 10:  # warm-up excluded
                synchronize(device)
                start = time.perf_counter()
            if done >= iters + 10:
                break
    synchronize(device)
    return iters / (time.perf_counter() - start)


def ours(args, device):
    data, source = get_data(args)
    data = data.to(device)
    torch.manual_seed(0)
    model = build_model("lenet").to(device)
    clone = build_model("lenet").to(device)
    gen = torch.Generator().manual_seed(0)

    def batches():
        order = torch.randperm(len(data), generator=gen).to(device)
        for i in range(0, len(data) - 127, 128):
            idx = order[i:i + 128]
            yield data.images[idx].float().div_(255), data.labels[idx]

    train_ips = time_training(model, batches, device, args.iters)
    init = {n: p.detach().clone() for n, p in model.named_parameters()}
    rates = {}
    for name, cfg in (("KE-style", ForgetConfig("lenet", 0.5)),
                      ("IMP-style", ForgetConfig("lenet", 0.3, weight_mask=True, reset_to_zero=True,
                                                 rewind_to_init=True))):
        synchronize(device)
        start = time.perf_counter()
        for _ in range(args.probes):
            forget_copy(model, clone, cfg, init_weights=init, generator=gen)
        synchronize(device)
        rates[name] = args.probes / (time.perf_counter() - start)
    return source, train_ips, rates


class PILDataset(torch.utils.data.Dataset):
    def __init__(self, images, labels):
        self.images, self.labels = images.squeeze(1).numpy(), labels.tolist()

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        from PIL import Image
        from torchvision.transforms.functional import to_tensor

        return to_tensor(Image.fromarray(self.images[i], mode="L")), self.labels[i]


def baseline_probe(model, keep, magnitude, zero, init):
    clone = copy.deepcopy(model)
    if init is not None:
        for name, p in clone.named_parameters():
            p.data = copy.deepcopy(init[name])
    masks = {}
    for name, p in model.named_parameters():
        if "bias" in name:
            continue
        k = keep + (1 - keep) / 2 if "fc3" in name else keep
        if magnitude:
            drop = torch.topk(p.detach().abs().flatten(), int(p.numel() * (1 - k)), largest=False).indices
            m = torch.ones(p.numel())
            m[drop] = 0
            masks[name] = m.bool().view(p.shape)
        else:
            masks[name] = torch.rand(p.shape) < k
    if zero:
        for name, p in clone.named_parameters():
            if name in masks:
                p.data *= masks[name].float().to(p.device)
    else:
        saved = {n: p.detach().clone() for n, p in clone.named_parameters() if n in masks}
        for _, child in clone.named_children():
            child.reset_parameters()
        for name, p in clone.named_parameters():
            if name in masks:
                p.data[masks[name]] = saved[name][masks[name]]
    return clone


def baseline(args, device):
    data, source = get_data(args)
    loader = torch.utils.data.DataLoader(PILDataset(data.images, data.labels), batch_size=128, shuffle=True,
                                         num_workers=0, drop_last=True)
    torch.manual_seed(0)
    model = build_model("lenet").to(device)
    train_ips = time_training(model, lambda: iter(loader), device, args.iters)
    init = {n: p.detach().clone() for n, p in model.named_parameters()}
    rates = {}
    for name, kw in (("KE-style", dict(keep=0.5, magnitude=False, zero=False, init=None)),
                     ("IMP-style", dict(keep=0.3, magnitude=True, zero=True, init=init))):
        start = time.perf_counter()
        for _ in range(args.probes):
            baseline_probe(model, **kw)
        synchronize(device)
        rates[name] = args.probes / (time.perf_counter() - start)
    return source, train_ips, rates


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=("both", "ours", "baseline"), default="both")
    p.add_argument("--iters", type=int, default=300, help="timed training iterations (after 10 warm-up)")
    p.add_argument("--probes", type=int, default=20, help="timed forgetting probes of each kind")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data_dir", default=None)
    p.add_argument("--json", default=None, help="with --mode both: also write the rows for `forgetting bench` here")
    args = p.parse_args(argv)
    if args.json and args.mode != "both":
        p.error("--json needs --mode both (the rows compare ours with the baseline)")
    if args.mode == "both":  # separate processes, so each peak memory is its own
        rows = []
        for mode in ("baseline", "ours"):
            cmd = [sys.executable, __file__, "--mode", mode, "--iters", str(args.iters), "--probes",
                   str(args.probes), "--device", args.device, "--threads", str(args.threads)]
            if args.data_dir:
                cmd += ["--data_dir", args.data_dir]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
        print(f"LeNet-300-100, batch 128, MNIST 10 % split ({rows[0]['data']} data), device {args.device}, "
              f"{args.threads} thread(s)")
        print(f"{'':10s} {'train it/s':>11s} {'KE probe/s':>11s} {'IMP probe/s':>12s} {'peak MiB':>9s}")
        for r in rows:
            print(f"{r['mode']:10s} {r['train_ips']:11.1f} {r['KE-style']:11.1f} {r['IMP-style']:12.1f} "
                  f"{r['peak_mib']:9.0f}")
        if args.json:
            base, ours_ = rows
            table = [{"case": f"{what} ({ours_['data']} MNIST)", "ours": ours_[key], "baseline": base[key],
                      "unit": unit, "peak_mib": ours_["peak_mib"], "baseline_peak_mib": base["peak_mib"]}
                     for what, key, unit in (("LeNet training, batch 128", "train_ips", "it/s"),
                                             ("KE-style forgetting probe", "KE-style", "probes/s"),
                                             ("IMP-style forgetting probe", "IMP-style", "probes/s"))]
            with open(args.json, "w", encoding="utf-8") as f:
                json.dump({"rows": table, "processes": rows}, f, indent=2)
        return
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    source, train_ips, rates = (ours if args.mode == "ours" else baseline)(args, device)
    print(json.dumps({"mode": args.mode, "data": source, "train_ips": train_ips, **rates,
                      "peak_mib": peak_memory_bytes(device) / 2**20}))


if __name__ == "__main__":
    run_main(main, prog="bench_probe.py")
