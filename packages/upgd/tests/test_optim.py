"""Optimizer steps against hand-computed values (numpy formulas written from the paper/spec)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from upgd.learners import LEARNERS, make_optimizer


def sig(x):
    from scipy.special import expit

    return expit(x)


def toy(weights, grads):
    params = []
    for i, (w, g) in enumerate(zip(weights, grads)):
        p = torch.nn.Parameter(torch.tensor(w, dtype=torch.float64))
        p.grad = torch.tensor(g, dtype=torch.float64)
        params.append((f"layer_{i}.weight", p))
    return params


def draws(seed, shapes, sigma):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen, dtype=torch.float64).numpy() * sigma for s in shapes]


W = [[1.0, -2.0, 0.5], [[0.3, -0.7], [1.5, 0.2]]]
G1 = [[0.2, 0.1, -0.4], [[0.5, 0.3], [-0.1, 0.6]]]
G2 = [[-0.3, 0.2, 0.1], [[0.1, -0.2], [0.4, 0.3]]]


def run_steps(key, hps, grads_seq, seed=7, weights=W, **ext):
    params = toy(weights, grads_seq[0])
    opt = make_optimizer(key, params, hps, generator=torch.Generator().manual_seed(seed), **ext)
    for grads in grads_seq:
        for (_, p), g in zip(params, grads):
            p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
    return [p.detach().numpy() for _, p in params]


def upgd_reference(grads_seq, lr, beta, sigma, wd, seed=7, protect=True, local=False, noise_scale=None,
                   ungated=False, factor=1.0):
    w = [np.array(x, dtype=float) for x in W]
    avg = [np.zeros_like(x) for x in w]
    gen = torch.Generator().manual_seed(seed)
    for t, grads in enumerate(grads_seq, start=1):
        g = [np.array(x, dtype=float) for x in grads]
        for k in range(len(w)):
            avg[k] = beta * avg[k] + (1 - beta) * (-g[k] * w[k])
        eta = max(a.max() for a in avg)  # raw traces
        bc = 1 - beta**t
        new = []
        for k in range(len(w)):
            if local:
                corr = avg[k] / bc
                norm = np.maximum(np.linalg.norm(corr, axis=-1, keepdims=True), 1e-12)
                s = sig(corr / norm)
            else:
                s = sig(avg[k] / bc / eta)
            xi = torch.randn(w[k].shape, generator=gen, dtype=torch.float64).numpy() * sigma
            if noise_scale == "weight":
                xi = xi * (np.linalg.norm(w[k]) + 1e-8)
            elif noise_scale == "grad":
                xi = xi * (np.linalg.norm(g[k]) + 1e-8)
            elif noise_scale == "ratio":
                xi = xi * (np.linalg.norm(g[k]) + 1e-8) / (np.linalg.norm(w[k]) + 1e-8)
            base = (1 - lr * wd) * w[k]
            if ungated:
                new.append(base - factor * lr * g[k] * (1 - s) + factor * lr * xi)
            elif protect:
                new.append(base - factor * lr * (g[k] + xi) * (1 - s))
            else:
                new.append(base - factor * lr * (g[k] + xi * (1 - s)))
        w = new
    return w


HP = {"lr": 0.1, "beta_utility": 0.9, "sigma": 0.01, "weight_decay": 0.05}


@pytest.mark.parametrize("key,kw", [
    ("baseline", {}),
    ("upgd_fo_global", {}),
    ("upgd_fo_local", {"local": True}),
    ("upgd_nonprotecting_fo_global", {"protect": False}),
    ("upgd_nonprotecting_fo_local", {"protect": False, "local": True}),
    ("weight_norm", {"noise_scale": "weight"}),
    ("grad_norm", {"noise_scale": "grad"}),
    ("ratio_norm", {"noise_scale": "ratio"}),
    ("usgd", {"noise_scale": "ratio", "ungated": True}),
    # no 4-D tensors here: the kernel variants reduce to a doubled step
    ("entire_kernel", {"factor": 2.0}),
    ("column_kernel", {"factor": 2.0}),
    ("KernelConvexCombi", {"factor": 2.0}),
])
def test_upgd_two_steps_match_formula(key, kw):
    got = run_steps(key, HP, [G1, G2])
    want = upgd_reference([G1, G2], 0.1, 0.9, 0.01, 0.05, **kw)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_first_step_raw_max_quirk_is_nearly_binary():
    # t = 1, β = 0.999: ũ/η = u/((1−β)·max u) is amplified 1000×: s ≈ 1 for positive utility.
    params = toy([[1.0, 1.0]], [[-1.0, 1.0]])  # utilities +1 and −1
    opt = make_optimizer("baseline", params, {"lr": 1.0, "beta_utility": 0.999, "sigma": 0.0})
    opt.keep_scaled = True
    opt.step()
    s = opt.last_scaled["layer_0.weight"].numpy()
    assert s[0] == pytest.approx(sig(1000.0)) and s[1] == pytest.approx(sig(-1000.0), abs=1e-300)
    # the opt-in "corrected" maximum gives sigmoid(±1)
    params = toy([[1.0, 1.0]], [[-1.0, 1.0]])
    opt = make_optimizer("baseline", params, {"lr": 1.0, "beta_utility": 0.999, "sigma": 0.0}, utility_max="corrected")
    opt.keep_scaled = True
    opt.step()
    np.testing.assert_allclose(opt.last_scaled["layer_0.weight"].numpy(), sig(np.array([1.0, -1.0])))


def test_zero_utility_half_step_and_eta_zero_edge():
    # local scaling with zero utilities: s = ½, so the step is lr/2·g (σ = 0)
    got = run_steps("upgd_fo_local", {"lr": 0.2, "beta_utility": 0.9, "sigma": 0.0}, [G1],
                    weights=[[0.0, 0.0, 0.0], [[0.0, 0.0], [0.0, 0.0]]])
    np.testing.assert_allclose(got[0], -0.1 * np.array(G1[0]))
    # global: η = 0 with ū = 0 gives 0/0 = NaN, as the original (documented) ...
    zeros = [[0.0, 0.0, 0.0], [[0.0, 0.0], [0.0, 0.0]]]
    got = run_steps("upgd_fo_global", {"lr": 0.2, "beta_utility": 0.9, "sigma": 0.0}, [G1], weights=zeros)
    assert np.isnan(got[0]).all()
    # ... and the opt-in guard keeps it finite (s = ½)
    got = run_steps("upgd_fo_global", {"lr": 0.2, "beta_utility": 0.9, "sigma": 0.0}, [G1], weights=zeros,
                    guard=True)
    np.testing.assert_allclose(got[0], -0.1 * np.array(G1[0]))


def test_local_normalises_last_dim_of_4d():
    w = torch.randn(2, 3, 2, 2, dtype=torch.float64)
    g = torch.randn(2, 3, 2, 2, dtype=torch.float64)
    p = torch.nn.Parameter(w.clone())
    p.grad = g.clone()
    opt = make_optimizer("upgd_fo_local", [("conv.weight", p)], {"lr": 0.1, "beta_utility": 0.5, "sigma": 0.0})
    opt.keep_scaled = True
    opt.step()
    u = -g * w  # bias correction cancels under normalisation
    want = torch.sigmoid(u / u.norm(dim=-1, keepdim=True))
    torch.testing.assert_close(opt.last_scaled["conv.weight"], want)


@pytest.mark.parametrize("key", ["entire_kernel", "column_kernel", "KernelConvexCombi"])
def test_kernel_variants_on_conv_weights(key):
    torch.manual_seed(0)
    w = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    g = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    p = torch.nn.Parameter(w.clone())
    p.grad = g.clone()
    opt = make_optimizer(key, [("conv_1.weight", p)], {"lr": 0.1, "beta_utility": 0.9, "sigma": 0.0})
    opt.keep_scaled = True
    opt.step()
    u = 0.1 * (-g * w)
    s = torch.sigmoid(u / 0.1 / u.max())
    if key == "entire_kernel":
        want = s.mean(dim=(2, 3), keepdim=True).expand_as(s)
    elif key == "column_kernel":
        want = s.mean(dim=2, keepdim=True).expand_as(s)
    else:
        want = 0.8 * s + 0.2 * s.mean(dim=(2, 3), keepdim=True)
    torch.testing.assert_close(opt.last_scaled["conv_1.weight"], want)
    torch.testing.assert_close(p.detach(), w - 2 * 0.1 * g * (1 - want))


def test_dynamic_clipped_gradient_bug_reproduced():
    got = run_steps("upgd_dynamicclippedgradient", {"lr": 0.1, "beta_utility": 0.9, "sigma": 0.0}, [G1])
    w, g = np.array(W[0]), np.array(G1[0])
    u = 0.1 * (-g * w)
    eta = max(u.max(), (0.1 * (-np.array(G1[1]) * np.array(W[1]))).max())
    s = sig(u / 0.1 / eta)
    np.testing.assert_allclose(got[0], w - 0.1 * np.linalg.norm(g) * (1 - s))


def _scalar_run(key, hps, grads, w0=0.5):
    p = torch.nn.Parameter(torch.tensor([w0], dtype=torch.float64))
    opt = make_optimizer(key, [("w", p)], hps)
    out = []
    for g in grads:
        p.grad = torch.tensor([g], dtype=torch.float64)
        opt.step()
        out.append(float(p.detach()))
    return out


GRADS = [0.4, -0.2, 0.3]


def test_ewc_mas_scalar():
    lr, lam, bw, bf = 0.1, 2.0, 0.9, 0.8
    for key, imp in (("ewc", lambda g: g * g), ("mas", abs)):
        w, wbar, F = 0.5, 0.0, 0.0
        want = []
        for t, g in enumerate(GRADS, start=1):
            wbar = bw * wbar + (1 - bw) * w
            F = bf * F + (1 - bf) * imp(g)
            w = w - lr * (g + lam * F / (1 - bf**t) * (w - wbar / (1 - bw**t)))
            want.append(w)
        got = _scalar_run(key, {"lr": lr, "lamda": lam, "beta_weight": bw, "beta_fisher": bf}, GRADS)
        np.testing.assert_allclose(got, want)


def test_si_and_rwalk_scalar_quirks():
    lr, lam, bw, bi, eps = 0.1, 2.0, 0.9, 0.8, 1e-3
    w, wbar, prev, A, D = 0.5, 0.0, 0.0, 0.0, 0.0  # previous weights start at 0 (original)
    want = []
    for t, g in enumerate(GRADS, start=1):
        wbar = bw * wbar + (1 - bw) * w
        d = prev - w
        A = bi * A + (1 - bi) * g * d
        D = bi * D + (1 - bi) * d
        omega = (A / (1 - bi**t)) / ((D / (1 - bi**t)) ** 2 + eps)
        prev = w
        w = w - lr * (g + lam * omega * (w - wbar / (1 - bw**t)))
        want.append(w)
    hps = {"lr": lr, "lamda": lam, "beta_weight": bw, "beta_importance": bi, "eps": eps}
    np.testing.assert_allclose(_scalar_run("si", hps, GRADS), want)
    w, wbar, prev, F = 0.5, 0.0, 0.0, 0.0
    want = []
    for t, g in enumerate(GRADS, start=1):
        wbar = bw * wbar + (1 - bw) * w
        d = prev - w
        s = max(0.0, g * d / (0.5 * F * d * d + eps))  # old, raw F
        F = bi * F + (1 - bi) * w * w  # squared weights (original's oddity)
        prev = w
        w = w - lr * (g + lam * (F / (1 - bi**t) + 0.5 * s) * (w - wbar / (1 - bw**t)))
        want.append(w)
    np.testing.assert_allclose(_scalar_run("rwalk", hps, GRADS), want)


def test_adam_sgd_pgd_snp_scalar():
    lr, b1, b2, eps, wd = 0.1, 0.9, 0.99, 1e-8, 0.01
    w, m, v = 0.5, 0.0, 0.0
    want = []
    for t, g in enumerate(GRADS, start=1):
        w = w - lr * wd * w
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        w = w - lr / (1 - b1**t) * m / (math.sqrt(v) / math.sqrt(1 - b2**t) + eps)
        want.append(w)
    got = _scalar_run("adam", {"lr": lr, "beta1": b1, "beta2": b2, "eps": eps, "weight_decay": wd}, GRADS)
    np.testing.assert_allclose(got, want)
    np.testing.assert_allclose(_scalar_run("sgd", {"lr": 0.1, "weight_decay": 0.5}, [0.4]), [0.5 - 0.1 * (0.4 + 0.25)])
    np.testing.assert_allclose(_scalar_run("pgd", {"lr": 0.1, "sigma": 0.0}, [0.4]), [0.46])
    np.testing.assert_allclose(_scalar_run("shrink_and_perturb", {"lr": 0.1, "sigma": 0.0, "decay": 0.5}, [0.4]),
                               [(1 - 0.05) * 0.5 - 0.04])


def test_gates_skipped_except_by_regularisers():
    for key, moves in (("sgd", False), ("upgd_fo_global", False), ("ewc", True), ("si", True)):
        gate = torch.nn.Parameter(torch.ones(1, 3, dtype=torch.float64))
        gate.grad = torch.full((1, 3), 0.5, dtype=torch.float64)
        w = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
        w.grad = torch.full((3,), 0.5, dtype=torch.float64)
        hps = {"lr": 0.1}
        if key == "upgd_fo_global":
            hps.update(beta_utility=0.9, sigma=0.0)
        make_optimizer(key, [("gate_1.weight", gate), ("linear_1.weight", w)], hps).step()
        assert bool((gate != 1).any()) == moves, key
        assert bool((w != 1).all()), key


def test_registry_is_complete():
    original = {"sgd", "sgd_with_hesscale", "pgd", "adam", "shrink_and_perturb", "ewc", "rwalk", "mas", "si"}
    for o in ("fo", "so"):
        for s in ("local", "global"):
            original |= {f"upgd_{o}_{s}", f"upgd_nonprotecting_{o}_{s}", f"feature_upgd_{o}_{s}",
                         f"feature_upgd_nonprotecting_{o}_{s}"}
    assert len(original) == 25 and original <= set(LEARNERS)
    assert LEARNERS["baseline"].name == "upgd_fo_global" and LEARNERS["column_kernel"].name == "upgd_kernel"
