"""forgetting_common.distributed on the CPU: gloo, two real processes.

The two-rank cases run once per session: this file started twice as a process (``python
test_distributed.py worker OUT``) with the environment torchrun sets, each rank saving what it
computed; the tests compare that with hand-computed values and with one process on the whole
batch. The failure case goes through torchrun itself.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from forgetting_common import distributed
from forgetting_common.distributed import Dist
from forgetting_common.errors import UserError
from torch import nn

THIS = Path(__file__).resolve()
BATCHES = (8, 7, 1)  # equal shares, unequal shares, one rank with nothing


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def small_net() -> nn.Module:
    """Conv, BatchNorm (so the batch statistics matter), ReLU, pooling, a linear head."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))


def batch(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, 6, 6, generator=g) * 2 + 0.5, torch.randint(0, 3, (n,), generator=g)


def one_step(dist: Dist, global_batch: int, sync_bn: bool) -> dict[str, torch.Tensor]:
    """One SGD step (momentum) on this rank's share of the global batch; the state after it."""
    model = small_net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    net = distributed.wrap_model(model, dist, sync_bn=sync_bn)
    x, y = batch(global_batch)
    share = distributed.rank_share(global_batch, dist)
    losses = F.cross_entropy(net(x[share]), y[share], reduction="none")
    local = losses.shape[0]
    loss = losses.sum() * (dist.world_size / global_batch) if dist.enabled else losses.mean()
    assert dist.enabled or local == global_batch
    loss.backward()
    optimizer.step()
    return {k: v.detach().clone() for k, v in distributed.unwrap(net).state_dict().items()}


def worker(out: Path) -> None:
    torch.set_num_threads(1)
    dist = distributed.init("cpu", timeout=60)
    assert distributed.init("cpu") is dist  # idempotent
    r = dist.rank
    res: dict = {"rank": r, "world": dist.world_size, "device": str(dist.device)}
    idx = torch.arange(r + 1) + 10 * r  # rank 0: [0], rank 1: [10, 11]
    rows = torch.stack([idx.double() * 0.5, -idx.double()], 1)
    res["gather"] = distributed.gather_rows(idx, rows, dist)
    res["gather_empty"] = distributed.gather_rows(torch.arange(0) if r == 0 else torch.tensor([7]),
                                                  torch.zeros(0, 2) if r == 0 else torch.ones(1, 2), dist)
    res["sum"] = distributed.all_reduce_sum(torch.tensor([r + 1.0, 10.0]), dist)
    res["bcast"] = distributed.broadcast_object({"from": r, "perm": [3, 1, 2]}, dist)
    res["any"] = (distributed.any_rank(r == 1, dist), distributed.any_rank(False, dist))
    res["shard"] = distributed.shard_indices(5, dist)
    distributed.barrier(dist)
    for sync in (True, False):
        for b in BATCHES:
            res[("step", sync, b)] = one_step(dist, b, sync)
    torch.save(res, out / f"rank{r}.pt")
    distributed.shutdown()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("ranks")
    port = free_port()
    procs = []
    for rank in (0, 1):
        env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(port), OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
        procs.append(subprocess.Popen([sys.executable, str(THIS), "worker", str(out)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    for p in procs:
        text, _ = p.communicate(timeout=180)
        assert p.returncode == 0, text
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in (0, 1)]


# ---- without torchrun: one process, nothing initialised -----------------------------------------


def test_single_process_is_identity(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    dist = distributed.init("cpu")
    assert (dist.rank, dist.world_size, dist.enabled, dist.is_main) == (0, 1, False, True)
    assert not torch.distributed.is_initialized()
    t = torch.tensor([1.0, 2.0])
    assert distributed.all_reduce_sum(t, dist) is t and t.tolist() == [1.0, 2.0]
    idx, rows = torch.arange(3), torch.ones(3, 2)
    assert distributed.gather_rows(idx, rows, dist) == (idx, rows)
    model = nn.Linear(2, 2)
    assert distributed.wrap_model(model, dist, sync_bn=True) is model
    assert distributed.rank_share(10, dist) == slice(0, 10)
    assert distributed.broadcast_object("x", dist) == "x" and distributed.any_rank(True, dist)
    distributed.barrier(dist)
    # one process: a RuntimeError stays what it was (a bug keeps its traceback)
    with pytest.raises(RuntimeError, match="gloo socket"), distributed.collective_failures(dist):
        raise RuntimeError("gloo socket")
    with pytest.raises(distributed.PeerFailure, match=r"^rank 1: stopped: another rank failed \(Connection closed"), \
            distributed.collective_failures(Dist(1, 2, 1, torch.device("cpu"))):
        raise RuntimeError("[/x/gloo/transport/tcp/pair.cc:561] Connection closed by peer [127.0.0.1]:53653. More")


@pytest.mark.parametrize("env, message", [
    ({"WORLD_SIZE": "two", "RANK": "0", "LOCAL_RANK": "0"}, "WORLD_SIZE='two' is not an integer"),
    ({"WORLD_SIZE": "2", "LOCAL_RANK": "0"}, "RANK is not set"),
    ({"WORLD_SIZE": "2", "RANK": "2", "LOCAL_RANK": "0"}, "do not fit WORLD_SIZE=2"),
    ({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", "MASTER_PORT": "1"}, "MASTER_ADDR is not set"),
])
def test_bad_environment_is_one_line(monkeypatch, env, message):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace("[", r"\[")):
        distributed.init("cpu")
    assert not torch.distributed.is_initialized()


@pytest.mark.parametrize("batch_size, world, sizes", [
    (10, 4, [3, 3, 2, 2]), (8, 2, [4, 4]), (7, 2, [4, 3]), (1, 2, [1, 0]), (5, 1, [5]),
])
def test_rank_share_sizes_and_cover(batch_size, world, sizes):
    shares = [distributed.rank_share(batch_size, Dist(r, world, r, torch.device("cpu"))) for r in range(world)]
    assert [s.stop - s.start for s in shares] == sizes
    assert [i for s in shares for i in range(s.start, s.stop)] == list(range(batch_size))
    assert distributed.share_weight(sizes[0], batch_size, Dist(0, world, 0, torch.device("cpu"))) == \
        sizes[0] * world / batch_size


# ---- two ranks (gloo) ------------------------------------------------------------------------------


def test_two_ranks_world(two_ranks):
    assert [(r["rank"], r["world"], r["device"]) for r in two_ranks] == [(0, 2, "cpu"), (1, 2, "cpu")]
    assert [r["shard"] for r in two_ranks] == [range(0, 3), range(3, 5)]


def test_gather_rows_rank_order_and_variable_lengths(two_ranks):
    for r in two_ranks:  # on every rank
        idx, rows = r["gather"]
        assert idx.tolist() == [0, 10, 11]
        assert rows.tolist() == [[0.0, 0.0], [5.0, -10.0], [5.5, -11.0]]
        assert rows.dtype == torch.float64
        idx, rows = r["gather_empty"]
        assert idx.tolist() == [7] and rows.tolist() == [[1.0, 1.0]]


def test_all_reduce_broadcast_any(two_ranks):
    for r in two_ranks:
        assert r["sum"].tolist() == [3.0, 20.0]
        assert r["bcast"] == {"from": 0, "perm": [3, 1, 2]}
        assert r["any"] == (True, False)


def _single_process_step(global_batch: int) -> dict[str, torch.Tensor]:
    return one_step(Dist(0, 1, 0, torch.device("cpu")), global_batch, sync_bn=False)


@pytest.mark.parametrize("global_batch", BATCHES)
def test_sync_bn_step_equals_one_process_with_the_whole_batch(two_ranks, global_batch):
    reference = _single_process_step(global_batch)
    for r in two_ranks:
        state = r[("step", True, global_batch)]
        assert state.keys() == reference.keys()
        for key, value in reference.items():
            torch.testing.assert_close(state[key], value, rtol=1e-5, atol=1e-6, msg=key)
    start = small_net().state_dict()
    assert not torch.allclose(reference["0.weight"], start["0.weight"])  # the step did move the weights


def test_without_sync_bn_the_batch_statistics_are_per_rank(two_ranks):
    """The control: with equal shares but BatchNorm over each half, the update differs from the
    whole batch's (so the test above would notice a sync that did nothing); rank 0's running
    statistics are those of its half."""
    reference = _single_process_step(8)
    state = two_ranks[0][("step", False, 8)]
    assert not torch.allclose(state["0.weight"], reference["0.weight"], rtol=1e-5, atol=1e-6)
    half = one_step(Dist(0, 1, 0, torch.device("cpu")), 4, sync_bn=False)  # rank 0's half alone
    torch.testing.assert_close(state["1.running_mean"], half["1.running_mean"])
    # ...but the parameters are still the same on both ranks (DDP averaged the gradients).
    torch.testing.assert_close(two_ranks[1][("step", False, 8)]["0.weight"], state["0.weight"])


FAILING = """
import sys
from forgetting_common import distributed, run_main
from forgetting_common.errors import UserError

def main():
    dist = distributed.init("cpu", timeout=60)
    if dist.rank == 1:
        raise UserError("bad input that only rank 1 reads")
    distributed.barrier(dist)  # rank 0 waits for a peer that is gone
    print("rank 0 went on")

run_main(main, prog="demo")
"""


def test_a_failing_rank_stops_all_with_one_line(tmp_path):
    script = tmp_path / "demo.py"
    script.write_text(FAILING)
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
         str(script)], capture_output=True, text=True, timeout=120,
        env=dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES=""))
    assert proc.returncode != 0
    ours = [line for line in proc.stderr.splitlines() if line.startswith("demo:")]
    assert "demo: error: bad input that only rank 1 reads" in ours
    # rank 0 stops with its own line (a backend error turned into one line), or is terminated
    # by torchrun first; never a traceback of the worker, never "went on"
    assert len(ours) <= 2
    assert all(line == "demo: error: bad input that only rank 1 reads"
               or line.startswith("demo: error: rank 0: stopped: another rank failed")
               or line == "demo: terminated (SIGTERM)" for line in ours), ours
    assert "rank 0 went on" not in proc.stdout
    assert 'File "' + str(script) not in proc.stderr


if __name__ == "__main__" and sys.argv[1:2] == ["worker"]:
    worker(Path(sys.argv[2]))
