"""The order script reads accuracies straight from the statistics files' bytes
(:mod:`example_forgetting.stats_scan`); its output must equal the per-example algorithm's on
files in the original's format, in ours, and in layouts the scan leaves to the unpickler."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from example_forgetting.baseline import loop_forgetting_totals
from example_forgetting.cli import order_main
from example_forgetting.stats import StatsRecorder, acc_matrix, sort_by_forgetting
from example_forgetting.stats_scan import scan_accuracies


def make_stats(seed: int, n: int = 1500, epochs: int = 7, key_type=int, short_row: bool = False) -> dict:
    """A statistics dict laid out as the original scripts wrote it: ids in presentation order,
    'train' after the first minibatch of 64, 'test' last; some examples never learned, some never
    forgotten. Ids are spread over 0..99,999 so that keys of 1, 2 and 4 bytes occur."""
    rng = np.random.RandomState(seed)
    ids = np.random.RandomState(0).choice(100_000, n, replace=False)
    ids = ids[rng.permutation(n)]
    acc = (rng.rand(n, epochs) < rng.rand(n, 1)).astype(int)
    acc[:50] = 0
    acc[50:100] = 1
    stats: dict = {}
    for k, i in enumerate(ids.tolist()):
        if k == 64:
            stats["train"] = [[], (100 * rng.rand(30)).tolist()]
        row = acc[k].tolist()[: epochs - 1 if short_row and k == 7 else epochs]
        stats[key_type(i)] = [rng.rand(len(row)).astype(np.float32).astype(float).tolist(), row,
                              rng.randn(len(row)).tolist()]
    stats["test"] = [[], [90.0] * epochs]
    return stats


FORMATS = {
    "original (numpy ids, protocol 4)": (np.int64, 4),
    "original (numpy ids, protocol 5)": (np.int64, 5),
    "ours (int ids, protocol 5)": (int, 5),
    "int ids, protocol 4": (int, 4),
}


@pytest.mark.parametrize("key_type,protocol", FORMATS.values(), ids=FORMATS.keys())
@pytest.mark.parametrize("epochs", [5, 7, 9])
def test_scan_equals_unpickling(tmp_path, key_type, protocol, epochs):
    stats = make_stats(1, key_type=key_type)
    path = tmp_path / "x__stats_dict.pkl"
    path.write_bytes(pickle.dumps(stats, protocol=protocol))
    scanned = scan_accuracies(path, epochs)
    assert scanned is not None  # the fast path was taken
    ids, acc, valid = acc_matrix(stats, epochs)
    assert valid.all()
    assert np.array_equal(scanned[0], ids) and scanned[0].dtype == np.int64
    assert np.array_equal(scanned[1], acc) and scanned[1].shape == (1500, min(7, epochs))


IRREGULAR = {
    "protocol 2": (dict(key_type=np.int64), 2),
    "protocol 3": (dict(key_type=int), 3),
    "one example with a presentation less": (dict(short_row=True), 5),
    "one presentation": (dict(epochs=1), 5),
}


@pytest.mark.parametrize("kwargs,protocol", IRREGULAR.values(), ids=IRREGULAR.keys())
def test_layouts_the_scan_does_not_know_are_unpickled(tmp_path, kwargs, protocol):
    path = tmp_path / "x__stats_dict.pkl"
    path.write_bytes(pickle.dumps(make_stats(1, **kwargs), protocol=protocol))
    assert scan_accuracies(path, 7) is None


def test_garbage_and_missing_files_are_left_to_the_unpickler(tmp_path):
    (tmp_path / "g").write_bytes(b"\x80\x05not a pickle at all")
    assert scan_accuracies(tmp_path / "g", 3) is None
    assert scan_accuracies(tmp_path / "absent", 3) is None
    evil = pickle.dumps(make_stats(1), protocol=5).replace(b"\x8c\x05train", b"\x8c\x05posix")
    (tmp_path / "e").write_bytes(evil)  # a string key is data, never a global: still only read
    assert scan_accuracies(tmp_path / "e", 3) is not None


@pytest.mark.parametrize("fmt", ["original", "ours", "irregular"])
def test_sorted_pickle_equals_the_per_example_algorithm(tmp_path, run, fmt):
    """Three runs; the order script's pickle equals the straightforward algorithm's output
    sorted with the same tie-break, and so does the unforgettable count."""
    key_type, protocol, kwargs = {
        "original": (np.int64, 4, {}), "ours": (int, 5, {}), "irregular": (np.int64, 2, {}),
    }[fmt]
    paths = []
    for seed in (1, 2, 3):
        path = tmp_path / "runs" / f"dataset_mnist__seed_{seed}__stats_dict.pkl"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(pickle.dumps(make_stats(seed, key_type=key_type, **kwargs), protocol=protocol))
        paths.append(path)
    run(order_main, ["--input_dir", tmp_path / "runs", "--output_dir", tmp_path, "--output_name", "sorted",
                     "--epochs", 6, "--no_plot"])
    out = pickle.loads((tmp_path / "sorted.pkl").read_bytes())
    ids, totals, unforgettable = loop_forgetting_totals(paths, 6)
    want_ids, want_counts = sort_by_forgetting(ids, totals, tie_seed=0)
    assert sorted(out) == ["forgetting counts", "indices"]
    assert np.array_equal(out["indices"], want_ids) and np.array_equal(out["forgetting counts"], want_counts)
    assert out["indices"].dtype == want_ids.dtype and out["forgetting counts"].dtype == want_counts.dtype
    assert f"Number of unforgettable examples: {unforgettable}\n" in run.stdout
    assert 0 < unforgettable < 1500 and want_counts[-1] == 3 * 6  # never learned in every run: 3 x --epochs


def test_files_this_package_writes_are_scanned(tmp_path):
    rec = StatsRecorder(np.array([300, 7, 70000, 12]), epochs=3)
    import torch

    for epoch in range(3):
        rec.set_first_order(np.array([2, 0, 3, 1]), 2)
        for b in (0, 2):
            pos = torch.tensor([2, 0, 3, 1][b:b + 2])
            out = torch.randn(2, 10, generator=torch.Generator().manual_seed(epoch * 10 + b))
            y = torch.tensor([1, 2])
            rec.record(epoch, pos, out, y, torch.zeros(2))
        rec.end_epoch(10.0)
    path = tmp_path / "s"
    from forgetting_common.atomic import atomic_pickle_dict

    atomic_pickle_dict(rec.items(), path)  # as train.py writes it: pair by pair, the opcodes of pickle.dumps
    assert _unframed(path.read_bytes()) == _unframed(pickle.dumps(rec.to_dict(), protocol=5))
    scanned = scan_accuracies(path, 3)
    assert scanned is not None
    assert scanned[0].tolist() == [70000, 300, 12, 7]
    assert np.array_equal(scanned[1], rec.arrays()["acc"][[2, 0, 3, 1]])


def _unframed(data: bytes) -> bytes:
    import pickletools

    ops = [(op.name, pos) for op, _, pos in pickletools.genops(data)]
    ends = [pos for _, pos in ops[1:]] + [len(data)]
    return b"".join(data[pos:end] for (name, pos), end in zip(ops, ends) if name != "FRAME")


def test_streamed_statistics_pickle_has_the_opcodes_of_pickle_dumps(tmp_path):
    """The statistics pickle is written example by example (the dict of a 200-epoch MNIST run, about
    1 GB of Python objects, is never built); over many 64 KB frames its opcodes are those of
    ``pickle.dumps`` of the whole dict, it loads as that dict, and the scan reads it."""
    import torch
    from forgetting_common.atomic import atomic_pickle_dict
    from forgetting_common.safeload import load_pickle

    n, epochs = 3000, 20
    rec = StatsRecorder(np.random.RandomState(0).permutation(70000)[:n], epochs=epochs)
    g = torch.Generator().manual_seed(0)
    for epoch in range(epochs):
        perm = np.random.RandomState(epoch).permutation(n)
        rec.set_first_order(perm, 500)
        for b in range(0, n, 500):
            out = torch.randn(500, 10, generator=g)
            y = torch.randint(0, 10, (500,), generator=g)
            rec.record(epoch, torch.from_numpy(perm[b:b + 500]), out, y, torch.nn.functional.cross_entropy(out, y, reduction="none"))
        rec.end_epoch(50.0)
    stats = rec.to_dict()
    path = atomic_pickle_dict(rec.items(), tmp_path / "x__stats_dict.pkl")
    data = path.read_bytes()
    assert len(data) > 10 * 65536 and _unframed(data) == _unframed(pickle.dumps(stats, protocol=5))
    loaded = load_pickle(path, what="statistics file")
    assert loaded == stats and list(loaded) == list(stats)
    assert not list(tmp_path.glob("*.tmp"))
    ids, acc, _ = acc_matrix(stats, epochs)
    scanned = scan_accuracies(path, epochs)
    assert scanned is not None and np.array_equal(scanned[0], ids) and np.array_equal(scanned[1], acc)


def test_pickle_write_benchmark_runs_and_feeds_forgetting_bench():
    """benchmarks/bench_pickle_write.py at a small size: both writers give the same dict, the streamed
    one adds no peak memory beyond the recorder, and `forgetting bench` reads its rows."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    from example_forgetting.claims import example_forgetting_pickle_rows

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_pickle_write.py"
    done = subprocess.run([sys.executable, str(script), "--examples", "6000", "--epochs", "50"],
                          capture_output=True, text=True, timeout=300, check=True)
    summary = json.loads(done.stdout.splitlines()[-1])
    assert summary["same_dict"] is True and summary["examples"] == 6000
    assert summary["added_mib_ours"] < summary["added_mib_baseline"]
    (row,) = example_forgetting_pickle_rows(done.stdout)
    assert row["case"] == "statistics pickle write, 6,000 x 50 epochs" and row["ours"] > 0 and row["baseline"] > 0
