"""``run_cifar.py`` under ``torchrun --nproc_per_node 2`` on the CPU (gloo), unchanged flags.

- one training step of 2 ranks x B/2 with ``--sync_bn`` equals one process with batch B, for
  both of the script's networks (ResNet18 narrowed, WRN-10-1; two real processes);
- the statistics pickle of a torchrun run holds every example once per epoch, in the layout
  and order of a single-process run of the same seed, with the same values up to float
  rounding (``--sync_bn``: the BatchNorm statistics are the global minibatch's);
- a rank that fails stops the run with one line and a non-zero exit; a rank killed part-way
  leaves the last epoch's checkpoint, and ``--resume`` under torchrun finishes the run with the
  outputs of an uninterrupted torchrun run;
- ``--track`` (every tracker that works under torchrun, on in all these runs): the trackers see
  every example once per step across the ranks (tracked.npz counts what the gathered statistics
  pickle holds), their state survives the kill and resume, and the two that read each process's
  own pass are refused in one line.
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from example_forgetting import models, train
from example_forgetting.checkpoint import CHECKPOINT_NAME
from example_forgetting.cli import cifar_main
from example_forgetting.counting import run_forgetting
from forgetting_common import distributed
from forgetting_common.distributed import Dist
from forgetting_common.safeload import load_pickle
from forgetting_common.trackers import load_forgetting_counts

THIS = Path(__file__).resolve()
PACKAGE = THIS.parents[1]
NARROW = PACKAGE / "tests" / "narrow_cifar.py"
# 64 examples less 3 removed by a sorting file = 61 in minibatches of 16: the last one (13) splits
# 7 / 6; 31 test images shard 16 / 15; label and pixel noise drawn as in one process.
# Learning rate 0: float32 training of this tiny net is chaotic (one process on 1 and on 4 threads
# differs by 0.05 in the weights after 4 steps), so the statistics of different processes can
# only be compared value by value while the weights stay put; every example's values then still
# depend on its augmentation draws and on its global minibatch (BatchNorm with --sync_bn). The
# update itself is compared in float64 above.
FLAGS = ["--dataset", "cifar10", "--data_augmentation", "--cutout", "--length", "8", "--seed", "5",
         "--epochs", "4", "--batch_size", "16", "--learning_rate", "0", "--data_source", "synthetic",
         "--train_limit", "64", "--test_limit", "31", "--sorting_file", "s", "--input_dir", "in", "--remove_n", "3",
         "--keep_lowest_n", "2", "--noise_percent_labels", "20", "--noise_percent_pixels", "10",
         "--noise_std_pixels", "30", "--quiet", "--device", "cpu", "--no_tensorboard", "--sync_bn",
         "--track", "forgetting,margin,weight_rank,effective_rank,ece,init_distance"]
NAME = ("dataset_cifar10__data_augmentation_True__cutout_True__seed_5__sorting_file_s__remove_n_3__"
        "keep_lowest_n_2__remove_subsample_0__noise_percent_labels_20__noise_percent_pixels_10__noise_std_pixels_30.0")
KEPT = 61


def workdir(path: Path) -> Path:
    """A working folder holding the sorting file ``in/s.pkl`` (the runs write elsewhere in it)."""
    (path / "in").mkdir(parents=True)
    order = np.random.RandomState(0).permutation(64)
    (path / "in" / "s.pkl").write_bytes(pickle.dumps({"indices": order, "forgetting counts": np.zeros(64)}))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(PACKAGE / "tests"))


def torchrun(*argv, cwd: Path, popen: bool = False, **kw):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(free_port()), str(NARROW), *map(str, argv)]
    if popen:
        return subprocess.Popen(cmd, cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=240, **kw)


# ---- one step, two ranks, both networks -----------------------------------------------------------


def networks() -> dict[str, torch.nn.Module]:
    """The script's two architectures, narrowed; WRN without dropout (its masks are random draws
    that no two processes share, so only the deterministic part can be compared)."""
    torch.manual_seed(0)
    resnet = models.ResNet18(num_classes=10, width=4)
    torch.manual_seed(0)
    wrn = models.WideResNet(depth=10, num_classes=10, widen_factor=1, drop_rate=0.0)
    return {"resnet18": resnet, "wideresnet": wrn}


def one_step(name: str, dist: Dist, global_batch: int) -> dict[str, torch.Tensor]:
    """The training loop's step: SGD as the script builds it, this rank's share of the batch,
    the share-weighted sum of the losses (the single process: the mean)."""
    model = networks()[name].double()  # float64: no ReLU flips at a pre-activation within rounding of 0
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    net = distributed.wrap_model(model, dist, sync_bn=True)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(global_batch, 3, 32, 32, generator=g, dtype=torch.float64)
    y = torch.randint(0, 10, (global_batch,), generator=g)
    share = distributed.rank_share(global_batch, dist)
    losses = F.cross_entropy(net(x[share]), y[share], reduction="none")
    loss = losses.sum() * (dist.world_size / global_batch) if dist.enabled else losses.mean()
    loss.backward()
    optimizer.step()
    return {k: v.detach().clone() for k, v in distributed.unwrap(net).state_dict().items()}


def worker(out: Path) -> None:
    torch.set_num_threads(1)
    dist = distributed.init("cpu", timeout=120)
    res = {(name, b): one_step(name, dist, b) for name in ("resnet18", "wideresnet") for b in (6, 5)}
    torch.save(res, out / f"rank{dist.rank}.pt")
    distributed.shutdown()


@pytest.fixture(scope="module")
def step_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("step")
    port, procs = free_port(), []
    for rank in (0, 1):
        env = dict(_env(), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(port))
        procs.append(subprocess.Popen([sys.executable, str(THIS), "worker", str(out)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    for p in procs:
        text, _ = p.communicate(timeout=240)
        assert p.returncode == 0, text
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1)]


@pytest.mark.parametrize("global_batch", [6, 5])
@pytest.mark.parametrize("name", ["resnet18", "wideresnet"])
def test_sync_bn_step_equals_one_process(step_ranks, name, global_batch):
    single = one_step(name, Dist(0, 1, 0, torch.device("cpu")), global_batch)
    before = networks()[name].double().state_dict()
    moved = [k for k in single if single[k].is_floating_point() and not torch.equal(single[k], before[k])]
    assert len(moved) > 10  # weights and BatchNorm running statistics changed
    for rank in step_ranks:
        state = rank[(name, global_batch)]
        assert state.keys() == single.keys()
        for key in single:
            torch.testing.assert_close(state[key], single[key], rtol=1e-9, atol=1e-11, msg=key)


# ---- the script under torchrun ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same command line in one process (in-process) and under torchrun."""
    root = workdir(tmp_path_factory.mktemp("torchrun"))
    with pytest.MonkeyPatch.context() as mp:  # the network of tests/narrow_cifar.py
        mp.setattr(train, "build_cifar_model", lambda name, classes: models.ResNet18(num_classes=classes, width=4))
        mp.chdir(root)
        result = cifar_main([*map(str, FLAGS), "--output_dir", str(root / "single")])
    assert result.save_fname == NAME and len(result.labels) == KEPT
    done = torchrun(*FLAGS, "--output_dir", root / "multi", cwd=root)
    assert done.returncode == 0, done.stderr
    return root, done


def test_torchrun_statistics_match_one_process(runs):
    root, done = runs
    single = load_pickle(root / "single" / (NAME + "__stats_dict.pkl"))
    multi = load_pickle(root / "multi" / (NAME + "__stats_dict.pkl"))
    # the same keys in the same order: ids in first-presentation order, 'train' after the
    # first minibatch's 16 examples, 'test' at the end
    assert list(multi) == list(single)
    ids = [k for k in multi if isinstance(k, int)]
    kept = sorted(ids)
    removed = set(np.random.RandomState(0).permutation(64)[2:5].tolist())  # --keep_lowest_n 2 --remove_n 3
    assert kept == sorted(set(range(64)) - removed) and list(multi).index("train") == 16
    assert len(multi["train"][1]) == len(single["train"][1]) == 4 * 4  # running acc per global minibatch
    assert len(multi["test"][1]) == 4
    loss_s, acc_s, margin_s = (np.array([single[i][j] for i in ids]) for j in range(3))
    loss_m, acc_m, margin_m = (np.array([multi[i][j] for i in ids]) for j in range(3))
    assert loss_m.shape == (KEPT, 4) and set(np.unique(acc_m)) <= {0, 1}
    # every example recorded once per epoch, by its own id: its values are its single-process
    # values (a missing one would read 0, a swapped one another example's loss)
    assert (loss_m > 0).all()
    np.testing.assert_allclose(loss_m, loss_s, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(margin_m, margin_s, rtol=1e-4, atol=1e-5)
    assert np.abs(loss_s[:, 1:] - loss_s[:, :1]).max() > 1e-2  # epochs differ (augmentation, minibatches)
    clear = np.abs(margin_s) > 1e-3
    assert (acc_m[clear] == acc_s[clear]).all()
    np.testing.assert_allclose(multi["train"][1], single["train"][1])  # counts of the global minibatches
    np.testing.assert_allclose(multi["test"][1], single["test"][1])  # sharded evaluation, reduced


def test_torchrun_rank0_alone_writes_and_speaks(runs):
    root, done = runs
    assert done.stdout.count("output folder:") == 1 and done.stdout.count("| Epoch 3/4") == 1
    single_files = sorted(str(p.relative_to(root / "single")) for p in (root / "single").rglob("*") if p.is_file())
    multi_files = sorted(str(p.relative_to(root / "multi")) for p in (root / "multi").rglob("*") if p.is_file())
    assert multi_files == single_files  # no checkpoint left, nothing written twice or per rank
    changed = NAME + "_changed_labels.txt"  # label noise: the same draws
    assert (root / "multi" / changed).read_bytes() == (root / "single" / changed).read_bytes()
    assert len((root / "multi" / changed).read_text().splitlines()) == 12  # int(20 * 61 / 100)
    cfg = (root / "multi" / "runs" / NAME / "config.json").read_text()
    assert '"world_size": 2' in cfg and '"sync_bn": true' in cfg


def test_trackers_see_every_example_once_per_step_across_ranks(runs):
    """Each rank computed the logits of its share; the trackers were given the gathered minibatch:
    per example, 4 presentations in 4 epochs and the events and first-learned presentations that
    the original's rules give on the (gathered) statistics pickle of the same run."""
    root, _ = runs
    stats = load_pickle(root / "multi" / (NAME + "__stats_dict.pkl"))
    expected = run_forgetting(stats, 4)
    for folder in ("single", "multi"):
        counts = load_forgetting_counts(root / folder / "runs" / NAME / "tracked.npz", epochs=4)
        assert sorted(counts.ids.tolist()) == sorted(expected.ids.tolist()) and (counts.presentations == 4).all()
    at = {int(i): k for k, i in enumerate(expected.ids)}
    rows = np.array([at[int(i)] for i in counts.ids])  # the multi run's tracker order: training positions
    assert np.array_equal(counts.events, expected.events[rows])
    assert np.array_equal(counts.learned, expected.learned[rows])
    np.testing.assert_array_equal(counts.first_learned, expected.first_learned[rows])
    assert expected.learned.any()
    margins = np.load(root / "multi" / "runs" / NAME / "tracked.npz")["margin.last"]
    np.testing.assert_allclose(margins, [stats[int(i)][2][-1] for i in counts.ids], rtol=1e-12)


def test_per_process_trackers_are_refused_under_torchrun(tmp_path):
    workdir(tmp_path)
    done = torchrun(*FLAGS, "--track", "forgetting,dead_units", "--output_dir", tmp_path / "out", cwd=tmp_path)
    assert done.returncode != 0
    ours = [line for line in done.stderr.splitlines() if line.startswith("run_cifar.py:")]
    refused = [line for line in ours if "not available under torchrun" in line]
    assert refused == ["run_cifar.py: error: --track dead_units is not available under torchrun: it reads the "
                       "network's pass over each process's share of a minibatch, not the whole minibatch; run it "
                       "in one process (the other trackers work under torchrun)"], done.stderr
    assert not (tmp_path / "out").exists()  # refused before anything is written


def test_a_rank_that_fails_stops_the_run_with_one_line(tmp_path):
    """Rank 0 alone decides about the output folder; it refuses one that holds a finished run,
    and rank 1, waiting for that decision, stops too."""
    workdir(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / (NAME + "__stats_dict.pkl")).write_bytes(b"earlier results")
    t0 = time.monotonic()
    done = torchrun(*FLAGS, "--output_dir", out, cwd=tmp_path)
    assert done.returncode != 0
    assert time.monotonic() - t0 < 120
    ours = [line for line in done.stderr.splitlines() if line.startswith("run_cifar.py:")]
    refused = [line for line in ours if "already exists" in line]
    assert len(refused) == 1 and refused[0].startswith("run_cifar.py: error: ")
    others = [line for line in ours if line not in refused]
    assert all(line.startswith("run_cifar.py: error: rank 1: stopped: another rank failed")
               or line == "run_cifar.py: terminated (SIGTERM)" for line in others), ours
    assert len(others) <= 1
    assert (out / (NAME + "__stats_dict.pkl")).read_bytes() == b"earlier results"  # nothing lost


def _worker_pid(parent: int, rank: int) -> int | None:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            env = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and f"RANK={rank}".encode() in env:
            return int(entry.name)
    return None


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the worker through /proc")
def test_killed_rank_stops_the_run_then_resume_under_torchrun(runs, tmp_path):
    root, _ = runs
    workdir(tmp_path)
    ckpt = tmp_path / "out" / "runs" / NAME / CHECKPOINT_NAME
    proc = torchrun(*FLAGS, "--output_dir", tmp_path / "out", cwd=tmp_path, popen=True)
    try:
        deadline = time.monotonic() + 180
        while not ckpt.exists():
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline
            time.sleep(0.02)
        victim = _worker_pid(proc.pid, 1)
        assert victim is not None
        os.kill(victim, signal.SIGKILL)  # rank 1 dies part-way (an OOM kill, a lost GPU)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    ours = [line for line in err.splitlines() if line.startswith("run_cifar.py:")]
    assert len(ours) <= 1 and all(line.startswith("run_cifar.py: error: rank 0: stopped: another rank failed")
                                  or line == "run_cifar.py: terminated (SIGTERM)" for line in ours), err
    state = torch.load(ckpt, weights_only=True)
    assert 1 <= state["epoch"] < 4 and state["batch"] == 0
    done = torchrun(*FLAGS, "--output_dir", tmp_path / "out", "--resume", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("resuming from") == 1
    assert not ckpt.exists()
    for suffix in ("__stats_dict.pkl", "__best_acc.txt", "_changed_labels.txt"):
        assert (tmp_path / "out" / (NAME + suffix)).read_bytes() == (root / "multi" / (NAME + suffix)).read_bytes()
    tracked = Path("runs") / NAME / "tracked.npz"  # the trackers' state came through the checkpoint
    assert (tmp_path / "out" / tracked).read_bytes() == (root / "multi" / tracked).read_bytes()


if __name__ == "__main__" and sys.argv[1:2] == ["worker"]:
    worker(Path(sys.argv[2]))
