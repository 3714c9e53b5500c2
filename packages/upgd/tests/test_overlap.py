"""The overlapped loop (noise drawn ahead, statistics on a second thread, certified ranks) computes
exactly what the straightforward inline loop computes."""

from __future__ import annotations

import json
import time

import pytest
import torch
import upgd.train
from upgd.cli import Config
from upgd.optim.noise import NoisePrefetcher
from upgd.optim.noise_process import NoiseProcess
from upgd.stats import RankCache, weight_and_grad_stats
from upgd.train import run_plain, run_stats

SEED_HPS = {"lr": 0.01, "beta_utility": 0.999, "sigma": 0.001, "weight_decay": 0.0}


def _run(tmp_path, overlap: bool, monkeypatch, *, previous: bool = False, learner: str = "baseline",
         task: str = "label_permuted_cifar10_stats", network: str = "convolutional_network_relu_with_hooks",
         n: int = 300, stats_every: int = 1, worker: str = "thread"):
    """Run run_stats and return (result JSON text without run_info, per-step series it bucketed)."""
    captured = []
    real = upgd.train.bucket_means

    def capture(values, cf):
        captured.append(values.clone())
        return real(values, cf)

    monkeypatch.setattr(upgd.train, "bucket_means", capture)
    if previous:  # the loop as it was: no rank cache (eigvalsh / matrix_rank at every step)
        monkeypatch.setattr(upgd.train, "weight_and_grad_stats", lambda net, cache=None: weight_and_grad_stats(net))
    cfg = Config(task=task, learner=learner, network=network, seed=19, n_samples=n,
                 save_path=str(tmp_path / (worker if overlap else "prev" if previous else "off")),
                 hps=dict(SEED_HPS) if learner != "sgd" else {"lr": 0.01, "weight_decay": 0.0},
                 change_freq=50, fake_data=True, quiet=True, tensorboard=False, overlap=overlap,
                 stats_every=stats_every, stats_worker=worker)
    _, content = run_stats(cfg)
    monkeypatch.undo()
    content.pop("run_info")
    return json.dumps(content), captured


def test_seed_line_overlapped_equals_inline_bit_for_bit(tmp_path, monkeypatch):
    """300 samples of the seed line (fake CIFAR-shaped data, seed 19): the result file and every
    per-step value (loss, accuracy, plasticity, dead units, the six weight/gradient statistics)
    are identical, bit for bit, with the statistics thread (the default), with the statistics
    process, inline, and in the previous loop."""
    fast, fast_steps = _run(tmp_path, True, monkeypatch)
    process, process_steps = _run(tmp_path, True, monkeypatch, worker="process")
    inline, inline_steps = _run(tmp_path, False, monkeypatch)
    previous, previous_steps = _run(tmp_path, False, monkeypatch, previous=True)
    assert fast == process == inline == previous
    assert len(fast_steps) == 5  # losses, accuracies, plasticity, dead units, the (n, 6) statistics
    for a, b, c, d in zip(fast_steps, inline_steps, previous_steps, process_steps):
        assert a.shape[0] == 300
        assert torch.equal(a, b) and torch.equal(a, c) and torch.equal(a, d)
    stats = fast_steps[4]
    assert not stats.isnan().any() and stats[:, 0].min() > 0.5  # every step sampled, ranks present


@pytest.mark.parametrize("learner,network,task,worker", [
    ("ratio_norm", "convolutional_network_relu_with_hooks", "label_permuted_cifar10_stats", "process"),
    ("sgd", "fully_connected_relu_with_hooks", "input_permuted_mnist_stats", "process"),
    ("sgd", "fully_connected_relu_with_hooks", "input_permuted_mnist_stats", "thread"),
])
def test_other_learners_overlapped_equal_inline(tmp_path, monkeypatch, learner, network, task, worker):
    fast, fast_steps = _run(tmp_path, True, monkeypatch, learner=learner, network=network, task=task, n=120,
                            stats_every=5, worker=worker)
    inline, inline_steps = _run(tmp_path, False, monkeypatch, learner=learner, network=network, task=task, n=120,
                                stats_every=5)
    assert fast == inline
    for a, b in zip(fast_steps, inline_steps):  # unsampled steps are NaN in both
        assert torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(), b.nan_to_num())


def test_run_plain_with_noise_ahead_equals_without(tmp_path):
    def run(overlap):
        cfg = Config(task="label_permuted_digits", learner="upgd_fo_global", network="fully_connected_relu",
                     seed=3, n_samples=200, save_path=str(tmp_path / str(overlap)), hps=dict(SEED_HPS),
                     fake_data=True, quiet=True, tensorboard=False, overlap=overlap)
        _, content = run_plain(cfg)
        content.pop("run_info")
        return content

    assert run(True) == run(False)


@pytest.mark.parametrize("prefetcher", [NoisePrefetcher, NoiseProcess])
def test_noise_prefetcher_gives_the_straightforward_sequence(prefetcher):
    """Changing shapes, extra and missing draws, whole-step and single draws, and the states a
    checkpoint stores, all match drawing directly from the generator (the thread, and the process
    that hands over to the thread when a step asks for something else)."""
    sigma = 0.001
    plan = [[(3, 4), (5,)]] * 4 + [[(3, 4)], [(3, 4), (5,), (2,)], [(7,)], [], [(3, 4), (5,)], [(3, 4), (5,)]]
    direct = torch.Generator().manual_seed(11)
    expected, states = [], []
    for shapes in plan:
        states.append(direct.get_state())
        expected.append([torch.randn(s, generator=direct).mul_(sigma) for s in shapes])
    gen = torch.Generator().manual_seed(11)
    ahead = prefetcher(gen, depth=2)
    try:
        for k, shapes in enumerate(plan):
            assert torch.equal(ahead.generator_state(), states[k])  # what a checkpoint stores
            likes = [torch.empty(s) for s in shapes]
            got = ahead.randn_all(likes, sigma) if k % 2 else [ahead.randn(like, sigma) for like in likes]
            assert len(got) == len(expected[k]) and all(torch.equal(a, b) for a, b in zip(got, expected[k]))
            ahead.step_done()
        assert torch.equal(ahead.generator_state(), direct.get_state())
    finally:
        ahead.close()


def _direct_noise(seed, plan, sigma):
    direct = torch.Generator().manual_seed(seed)
    expected, states = [], []
    for shapes in plan:
        states.append(direct.get_state())
        expected.append([torch.randn(s, generator=direct).mul_(sigma) for s in shapes])
    return expected, states, direct


def test_noise_process_draws_the_straightforward_sequence_and_survives_a_reset():
    """The process draws ahead (conv-net shapes: the vectorised sampler and the scalar tail), the
    caller may change the tensors it got, a checkpoint's state between steps is the straightforward
    one, a reset and a restored state continue the sequence, and a step asking for more hands over
    to the thread at the right place."""
    import os

    sigma = 0.01
    shapes = [(6, 3, 5, 5), (6,), (16, 6, 5, 5), (16,), (120, 400), (120,), (10, 84), (10,)]
    plan = [shapes] * 14 + [shapes + [(3,)]] + [shapes] * 3
    expected, states, direct = _direct_noise(5, plan, sigma)
    gen = torch.Generator().manual_seed(5)
    ahead = NoiseProcess(gen, depth=3)
    pids = set()
    try:
        k = 0
        while k < len(plan):
            assert torch.equal(ahead.generator_state(), states[k])
            likes = [torch.empty(s) for s in plan[k]]
            got = ahead.randn_all(likes, sigma) if k % 3 else [ahead.randn(like, sigma) for like in likes]
            assert all(torch.equal(a, b) for a, b in zip(got, expected[k], strict=True)), k
            for t in got:  # the optimizer scales and adds into what it gets
                t.mul_(3.0)
            ahead.step_done()
            pids.add(ahead.pid)
            if k == 8:  # a resume: drop what was drawn, load a checkpoint's state, go on
                ahead.reset()
                gen.set_state(states[k + 1])
            k += 1
        assert torch.equal(ahead.generator_state(), direct.get_state())
        assert len(pids - {None}) == 2 and ahead.fallback is not None  # two children, then the thread
    finally:
        ahead.close()
    for pid in pids - {None}:
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reaped


def test_noise_process_that_dies_is_one_clear_error():
    import os
    import signal

    gen = torch.Generator().manual_seed(0)
    ahead = NoiseProcess(gen, depth=2)
    try:
        like = [torch.empty(40)]
        ahead.randn_all(like, 1.0)
        ahead.step_done()
        for _ in range(3):  # the child has filled both slots and waits
            ahead.randn_all(like, 1.0)
            ahead.step_done()
        os.kill(ahead.pid, signal.SIGKILL)
        with pytest.raises(RuntimeError, match="the noise process ended unexpectedly"):
            for _ in range(4):
                ahead.randn_all(like, 1.0)
                ahead.step_done()
        assert ahead.pid is None
    finally:
        ahead.close()


def test_run_stats_with_the_noise_process_equals_inline(tmp_path, monkeypatch):
    """--stats_worker process: the statistics and the noise each in a forked process; the result
    and every per-step value as the inline loop's, and the noise really came from a child."""
    import upgd.optim.noise_process as noise_process

    starts = []
    real_start = noise_process.NoiseProcess._start

    def start(self, keys):
        real_start(self, keys)
        starts.append(self.pid)

    monkeypatch.setattr(noise_process, "usable", lambda generator: True)
    monkeypatch.setattr(noise_process.NoiseProcess, "_start", start)
    fast, fast_steps = _run(tmp_path, True, monkeypatch, learner="usgd", n=150, worker="process")
    assert len(starts) == 1 and starts[0] is not None
    inline, inline_steps = _run(tmp_path, False, monkeypatch, learner="usgd", n=150)
    assert fast == inline
    assert all(torch.equal(a, b) for a, b in zip(fast_steps, inline_steps, strict=True))


def test_rank_cache_renews_only_the_slices_that_drifted():
    """Conv slices drifting at very different speeds, some pushed next to the tolerance: every rank
    is torch.linalg.matrix_rank's, and most steps renew a few slices, not the whole kernel."""
    gen = torch.Generator().manual_seed(1)
    cache = RankCache()
    w = torch.randn(16, 6, 5, 5, generator=gen) * 0.1
    w[0, 0] = torch.outer(torch.randn(5, generator=gen), torch.randn(5, generator=gen))
    w[1, 1] = 0
    whole = 0
    for step in range(400):
        w += torch.randn(w.shape, generator=gen) * torch.rand(16, 6, 1, 1, generator=gen) ** 4 * 0.05
        if step % 50 == 0:
            u, s, vh = torch.linalg.svd(w[2, 3].double())
            s[-1] = s[0] * 5 * 1.1920929e-07 * (1 + (step % 3 - 1) * 0.3)  # at, below, above the tolerance
            w[2, 3] = (u @ torch.diag(s) @ vh).float()
        before = cache.refs.get("c", (None,))[0]
        assert torch.equal(cache.rank("c", w), torch.linalg.matrix_rank(w)), step
        whole += cache.refs.get("c", (None,))[0] is not before
    assert whole < 40


def test_rank_cache_equals_matrix_rank_along_a_drifting_run():
    """Certified ranks equal torch.linalg.matrix_rank at every step, for full-rank, rank-deficient,
    dead-row and borderline matrices and conv kernels, while the weights drift and jump."""
    gen = torch.Generator().manual_seed(0)
    u, _, v = torch.linalg.svd(torch.randn(20, 20, generator=gen, dtype=torch.float64))
    s = torch.ones(20, dtype=torch.float64)
    s[-1] = 20 * 1.1920929e-07  # a singular value right at the tolerance
    dead = torch.randn(50, 30, generator=gen)
    dead[10:] = 0
    weights = {
        "linear_1": torch.randn(120, 400, generator=gen) * 0.03,
        "low": torch.randn(30, 4, generator=gen) @ torch.randn(4, 20, generator=gen),  # rank 4
        "dead": dead,
        "border": (u @ torch.diag(s) @ v).float(),
        "zero": torch.zeros(5, 7),
        "conv_2": torch.randn(16, 6, 5, 5, generator=gen) * 0.1,
    }
    cache = RankCache()
    for step in range(60):
        for name, w in weights.items():
            if name in ("linear_1", "conv_2"):
                w += torch.randn(w.shape, generator=gen) * (1e-3 if step != 30 else 1.0)  # drift, one jump
            if name == "conv_2" and step == 40:
                w[3, 2] = torch.outer(torch.randn(5, generator=gen), torch.randn(5, generator=gen))  # rank 1
            ranks = cache.rank(name, w)
            assert torch.equal(ranks, torch.linalg.matrix_rank(w)), (name, step)
            if name == "conv_2" and step == 40:
                assert ranks[3, 2] == 1 and ranks.sum() == 95 * 5 + 1
    assert int(cache.rank("low", weights["low"])) == 4


@pytest.mark.parametrize("worker", ["process", "thread"])
def test_worker_failure_reaches_the_main_thread(tmp_path, monkeypatch, worker):
    def boom(net, *args):
        raise RuntimeError("statistics failed")

    monkeypatch.setattr(upgd.train, "weight_and_grad_stats", boom)
    cfg = Config(task="label_permuted_digits_stats", learner="sgd", network="fully_connected_relu_with_hooks",
                 seed=0, n_samples=30, save_path=str(tmp_path), hps={"lr": 0.1, "weight_decay": 0.0},
                 change_freq=10, fake_data=True, quiet=True, tensorboard=False, overlap=True, stats_worker=worker)
    with pytest.raises(RuntimeError, match="statistics failed"):
        run_stats(cfg)


def _small_process(compute, depth=None, n_inputs=784, n_classes=10):
    from upgd.models import build_network
    from upgd.stats_process import StatsProcess

    torch.manual_seed(0)
    net = build_network("fully_connected_relu_with_hooks", n_inputs, n_classes)
    example = (torch.zeros(1, n_inputs), torch.zeros(1, dtype=torch.int64), torch.zeros(1, n_classes), torch.zeros(()))
    return net, StatsProcess(net, lambda: build_network("fully_connected_relu_with_hooks", n_inputs, n_classes),
                             compute, example, depth=depth)


def test_stats_process_sees_each_steps_copy_and_bounds_its_memory():
    """The child reads step i's weights, gradients and tensors as they were at submit, although the
    parent changes them right after (8 steps ahead through 4 slots); the slots stay within 32 MiB."""
    seen = torch.zeros(8, 5).share_memory_()

    def compute(model, x, y, out, loss, i, with_weight_stats, cache):
        w = model.linear_1.weight
        missing = model.linear_2.weight.grad is None
        seen[i] = torch.stack([w[0, 0], w.grad[0, 0], x[0, 0] + y[0], out[0, 1] + loss, torch.tensor(float(missing))])

    net, worker = _small_process(compute, depth=4)
    w = net.linear_1.weight
    try:
        for i in range(8):
            with torch.no_grad():
                w[0, 0] = i
            w.grad = torch.full_like(w, 10.0 * i)
            net.linear_2.weight.grad = None if i in (2, 3, 6) else torch.ones_like(net.linear_2.weight)
            worker.submit(i, torch.full((1, 784), 100.0 * i), torch.tensor([i]), torch.full((1, 10), 1000.0 * i),
                          torch.tensor(0.5), True)
            with torch.no_grad():
                w[0, 0] = -1.0  # written after the hand-over: the child must not see it
        worker.drain()
    finally:
        worker.close()
    i = torch.arange(8.0)
    missing = torch.tensor([0.0, 0, 1, 1, 0, 0, 1, 0])  # a gradient that was None is None in the child
    assert torch.equal(seen, torch.stack([i, 10 * i, 101 * i, 1000 * i + 0.5, missing], dim=1))
    for n_inputs, n_classes, depth in ((784, 10, 8), (2048, 100, 6)):  # MNIST MLP: 8 slots; mini-ImageNet: 6
        _, sized = _small_process(compute, n_inputs=n_inputs, n_classes=n_classes)
        try:
            n_params = sum(p.numel() for p in sized.params)  # 282,160 and 674,950
            assert len(sized.slots) == depth == min(8, (32 << 20) // (2 * 4 * n_params))
        finally:
            sized.close()


def test_stats_process_ends_when_its_parent_is_gone():
    """A parent killed without closing: the child sees the pipe close and exits by itself."""
    import os

    _, worker = _small_process(lambda *args: None)
    pid = worker.pid
    os.close(worker.todo)  # what the kernel does to a dead parent's end of the pipe
    os.close(worker.done)
    worker.todo = worker.done = None
    _exits_by_itself(pid, "statistics")


def _straightforward_stats(net):
    """The statistics as the original writes them: per tensor, torch.linalg.matrix_rank for the rank."""
    w_sq = w_abs = g_sq = g_abs = g_nz = 0.0
    rank_sum, max_sum, count = 0.0, 0, 0
    for name, p in net.named_parameters():
        if "weight" not in name:
            continue
        w = p.detach()
        w_sq = w_sq + (w * w).sum()
        w_abs = w_abs + w.abs().sum()
        count += w.numel()
        g = p.grad
        g_sq = g_sq + (g * g).sum()
        g_abs = g_abs + g.abs().sum()
        g_nz = g_nz + (g != 0).sum()
        ranks = torch.linalg.matrix_rank(w)
        rank_sum = rank_sum + (ranks.float().mean() if "conv" in name else ranks.float())
        max_sum += min(w.shape[-2], w.shape[-1])
    values = [rank_sum / max_sum, torch.as_tensor(w_sq).sqrt(), w_abs, torch.as_tensor(g_sq).sqrt(),
              torch.as_tensor(g_nz) / count, g_abs]
    return torch.stack([torch.as_tensor(v, dtype=torch.float32) for v in values])


@pytest.mark.parametrize("network,n_inputs", [("convolutional_network_relu_with_hooks", 3072),
                                               ("fully_connected_relu_with_hooks", 784)])
def test_weight_and_grad_stats_equal_the_straightforward_formulas(network, n_inputs):
    from upgd.models import build_network

    torch.manual_seed(0)
    net = build_network(network, n_inputs, 10)
    cache = RankCache()
    for _ in range(5):
        x = torch.randn(1, *net.input_shape)
        net.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(net(x), torch.tensor([3])).backward()
        with torch.no_grad():
            for p in net.parameters():
                p.add_(p.grad, alpha=-0.1)
        assert torch.equal(weight_and_grad_stats(net, cache), _straightforward_stats(net))
        assert torch.equal(weight_and_grad_stats(net), _straightforward_stats(net))


def test_stats_process_without_room_in_shared_memory_runs_on_the_thread(tmp_path, monkeypatch, capsys):
    """A /dev/shm too small for the slots and results (a container's 64 MiB): one line, the thread,
    the same result (a full /dev/shm would have killed the run with SIGBUS)."""
    import upgd.stats_process

    monkeypatch.setattr(upgd.stats_process, "shared_memory_free", lambda path="/dev/shm": 1 << 20)
    monkeypatch.setattr(upgd.stats_process, "StatsProcess", None)  # would fail if it were used
    cfg = Config(task="label_permuted_digits_stats", learner="sgd", network="fully_connected_relu_with_hooks",
                 seed=0, n_samples=40, save_path=str(tmp_path / "p"), hps={"lr": 0.1, "weight_decay": 0.0},
                 change_freq=10, fake_data=True, tensorboard=False, overlap=True, stats_worker="process")
    _, content = run_stats(cfg)
    # 8 slots x 2 x 66,160 float32 (64-300-150-10 MLP) = 4.04 MiB, plus 40 steps of results
    assert "--stats_worker process needs 4 MiB of shared memory and /dev/shm has 1 MiB free; the statistics " \
           "run on a thread (same values)" in capsys.readouterr().err
    thread = Config(**{**cfg.__dict__, "stats_worker": "thread", "save_path": str(tmp_path / "t"), "quiet": True})
    _, expected = run_stats(thread)
    assert {k: v for k, v in content.items() if k != "run_info"} == {k: v for k, v in expected.items() if k != "run_info"}


def test_stats_worker_auto_takes_the_processes_only_with_two_idle_cores(monkeypatch):
    import upgd.stats_process as sp

    monkeypatch.delenv("FORGETTING_CPUS", raising=False)
    monkeypatch.setattr(sp.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    loads = {"idle": [3.0, 5.0, 100.0, 100.0], "busy": [90.0, 60.0, 100.0, 100.0]}  # cores 0-1 idle / not
    for state, expected in (("idle", "process"), ("busy", "thread")):
        monkeypatch.setattr(sp.psutil, "cpu_percent", lambda interval, percpu, s=state: loads[s])
        assert sp.choose("auto", 1_000_000) == expected
    assert sp.choose("auto", sp.AUTO_MIN_SAMPLES - 1) == "thread"  # short runs: no fork, no look at the cores
    assert sp.choose("thread", 10**6) == "thread" and sp.choose("process", 10) == "process"
    monkeypatch.setattr(sp.psutil, "cpu_percent", lambda interval, percpu: loads["idle"])
    monkeypatch.setenv("FORGETTING_CPUS", "1")  # one run of a local sweep running two at once on two cores
    assert sp.choose("auto", 1_000_000) == "thread"
    monkeypatch.setenv("FORGETTING_CPUS", "2")
    assert sp.choose("auto", 1_000_000) == "process"
    monkeypatch.setattr(sp.os, "sched_getaffinity", lambda pid: {0})
    assert sp.choose("auto", 1_000_000) == "thread"


def test_noise_process_ends_when_its_parent_is_gone():
    """The parent's end of the pipe closed without a word (what the kernel does when it dies): the
    child, waiting to refill slots, exits by itself."""
    import os

    ahead = NoiseProcess(torch.Generator().manual_seed(0), depth=2)
    like = [torch.empty(30)]
    ahead.randn_all(like, 1.0)
    ahead.step_done()
    pid = ahead.pid
    os.close(ahead.free_w)
    os.close(ahead.ready_r)
    ahead.pid = ahead.free_w = ahead.ready_r = None
    _exits_by_itself(pid, "noise")


def _exits_by_itself(pid: int, what: str) -> None:
    """The child ``pid`` ends, with status 0, within 10 s of its parent's pipe closing."""
    import os

    for _ in range(200):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail(f"the {what} process outlived its parent's pipe by 10 s")
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
