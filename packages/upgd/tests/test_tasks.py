"""Streams, networks and the original's per-task bucketing."""

from __future__ import annotations

import torch
from upgd.data import PermutedStream, Source
from upgd.models import NETWORKS, build_network
from upgd.stats import aligned_task_means, bucket_means, n_buckets


def _stream(kind, cf=5, n=12, classes=4, dim=6):
    x = torch.arange(n * dim, dtype=torch.float32).reshape(n, dim)
    y = torch.arange(n) % classes
    return PermutedStream("t", Source(x, y, classes, "toy"), kind, cf, seed=3, device=torch.device("cpu")), x, y


def test_label_permutation_constant_within_task_and_changes_across():
    stream, x, y = _stream("label")
    mappings = []
    for _task in range(6):
        seen = {}
        for _ in range(5):
            xs, ys, _ = stream.next()
            i = int((xs[0, 0] / 6).item())  # which sample
            seen.setdefault(int(y[i]), set()).add(int(ys))
        assert all(len(v) == 1 for v in seen.values())  # constant mapping within a task
        mappings.append(stream.mapping.clone())
        assert sorted(stream.mapping.tolist()) == [0, 1, 2, 3]
    assert any(not torch.equal(mappings[0], m) for m in mappings[1:])


def test_pixel_permutation_changes_at_multiples_of_change_freq_and_pass_is_without_replacement():
    stream, x, _ = _stream("input", cf=12, n=12)
    perms, rows = [], []
    for step in range(36):
        xs, _, done = stream.next()
        assert done == (step > 0 and step % 12 == 0)
        if step % 12 == 0:
            perms.append(stream.pixel_perm.clone())
        rows.append(sorted(xs[0].tolist()))
    assert not torch.equal(perms[0], perms[1])
    firsts = sorted(r[0] for r in rows[:12])
    assert firsts == [i * 6.0 for i in range(12)]  # every sample once within the task


def test_bucketing_matches_original():
    v = torch.arange(10, dtype=torch.float32)  # steps 0..9, cf = 4
    assert n_buckets(10, 4) == 3
    out = bucket_means(v, 4).tolist()
    assert out == [0.0, (1 + 2 + 3 + 4) / 4, (5 + 6 + 7 + 8) / 4]  # step 9 dropped
    assert aligned_task_means(v, 4).tolist() == [1.5, 5.5]
    w = torch.tensor([1.0, float("nan"), 3.0, float("nan"), 5.0])
    assert bucket_means(w, 2).tolist() == [1.0, 3.0, 5.0]


def test_network_registry_and_parameter_counts():
    assert len([n for n in NETWORKS if n != "conv_mnist"]) == 20
    count = lambda net: sum(p.numel() for p in net.parameters())  # noqa: E731
    assert count(build_network("convolutional_network_relu_with_hooks", 3072, 10)) == 62006
    assert count(build_network("conv_mnist", 784, 10)) == 44426
    assert count(build_network("fully_connected_relu_with_hooks", 784, 10)) == 282160
    net = build_network("fully_connected_relu_with_hooks", 784, 10)
    assert net.n_units == 450 and build_network("conv_mnist", 784, 10).n_units == 204
    gates = build_network("small_fully_connected_relu_gates", 5, 1)
    assert [n for n, _ in gates.named_children()] == ["linear_1", "act_1", "gate_1", "linear_2", "act_2", "gate_2", "linear_3"]
    assert (gates.gate_1.weight == 1).all()


def test_fast_matrix_rank_equals_torch():
    from upgd.stats import matrix_rank

    gen = torch.Generator().manual_seed(0)
    cases = [torch.randn(120, 400, generator=gen), torch.randn(84, 120, generator=gen), torch.zeros(5, 7),
             torch.randn(30, 4, generator=gen) @ torch.randn(4, 20, generator=gen)]  # rank 4
    dead = torch.randn(50, 30, generator=gen)
    dead[10:] = 0  # dead units: zero rows
    cases.append(dead)
    u, _, v = torch.linalg.svd(torch.randn(20, 20, generator=gen, dtype=torch.float64))
    s = torch.ones(20, dtype=torch.float64)
    s[-1] = 20 * 1.1920929e-07  # a singular value right at the tolerance: the exact routine decides
    cases.append((u @ torch.diag(s) @ v).float())
    for w in cases:
        assert int(matrix_rank(w)) == int(torch.linalg.matrix_rank(w))
