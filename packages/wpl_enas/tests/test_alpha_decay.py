"""Issue 12, item 4: α after one Fisher update, on every path of the original, hand-computed.

The original's ``update_fisher(keys, epoch=0)`` is called with the epoch only for the RNN
validation batch; the CNN path and the train-batch update (``--shared_valid_fisher=False``)
pass none, so epoch 0 goes into ``α = max(α₀ − (e − after + 1)·decay, 0) if e >= after``.
With α₀ = 60, decay = 2.5, λ = 0.5, no momentum, no clipping and F̃ = 0 before the update, one
update leaves F̃ = α·λ·g² for every tensor the architecture uses once.
"""

from __future__ import annotations

import pytest
import torch

ALPHA0, DECAY, LAM, EPOCH = 60.0, 2.5, 0.5, 3
WPL_FLAGS = [f"--alpha_fisher={ALPHA0}", f"--alpha_decay={DECAY}", f"--lambda_fisher={LAM}", "--momentum=False",
             "--fisher_clip_by_norm=0", "--shared_grad_clip=1e9", "--shared_l2_reg=0", "--use_tensorboard=False",
             "--shared_max_step=0", "--num_batch_per_iter=1"]


def spy_updates(trainer) -> list[tuple[int, float]]:
    """Record (epoch passed, α measured from F̃/(λ·g²)) for every Fisher update."""
    calls = []
    original = trainer.wpl.update_fisher

    def spy(arch, epoch=0, grads=None):
        named = trainer.shared.wpl_named_params(arch)
        if grads is None:
            grads = [None if p.grad is None else p.grad.detach().clone() for _, p in named]
        trainer.wpl.reset_fisher()
        used = original(arch, epoch, grads)
        counts = {}
        for name, _ in named:
            counts[name] = counts.get(name, 0) + 1
        num = den = 0.0
        for (name, _), g in zip(named, grads, strict=True):
            if g is not None and counts[name] == 1 and g.abs().sum() > 0:
                num += trainer.wpl.fisher(name).double().sum().item()
                den += (LAM * g.double() ** 2).sum().item()
        assert den > 0, "no gradient reached the architecture's tensors"
        calls.append((epoch, num / den))
        return used

    trainer.wpl.update_fisher = spy
    return calls


def make_trainer(kind, workdir, argv):
    from dataclasses import replace

    from wpl_enas.cli import parse_args
    from wpl_enas.data import TextData, load_cifar10
    from wpl_enas.train_cnn import CNNTrainer
    from wpl_enas.train_rnn import RNNTrainer

    torch.manual_seed(0)
    args, _ = parse_args(argv)
    args = replace(args, model_dir=str(workdir))
    cpu = torch.device("cpu")
    if kind == "rnn":
        data = TextData(workdir / "data" / "ptb", args.batch_size, args.test_batch_size, cpu)
        tr = RNNTrainer(args, data, cpu)
    else:
        data = load_cifar10(workdir / "data", args.batch_size, args.test_batch_size, cpu, 0)
        tr = CNNTrainer(args, data, cpu)
    tr.epoch = EPOCH
    tr.wpl_on = True
    return tr


# (path, --alpha_decay_after, hand-computed α). Validation-batch epoch: 3 on the RNN, 0 on the CNN.
CASES = [
    ("rnn", "valid", 5, 60.0),                    # 3 < 5: no decay
    ("rnn", "valid", 2, 60.0 - 2 * 2.5),          # degree 3 - 2 + 1 = 2
    ("rnn", "valid", 0, 60.0 - 4 * 2.5),          # degree 4
    ("rnn", "valid", -2, 60.0 - 6 * 2.5),         # degree 6
    ("rnn", "train", 2, 60.0),                    # train batch: epoch 0 < 2
    ("rnn", "train", 0, 60.0 - 1 * 2.5),          # epoch 0 >= 0: degree 1
    ("rnn", "train", -2, 60.0 - 3 * 2.5),         # degree 3
    ("micro_cnn", "valid", 2, 60.0),
    ("micro_cnn", "valid", 0, 60.0 - 1 * 2.5),
    ("micro_cnn", "valid", -2, 60.0 - 3 * 2.5),
    ("micro_cnn", "valid", -30, 0.0),             # max(60 - 31 * 2.5, 0)
    ("micro_cnn", "train", 2, 60.0),
    ("micro_cnn", "train", -0.5, 60.0 - 1.5 * 2.5),  # fractional after: degree 1.5
]


@pytest.mark.parametrize(("kind", "path", "after", "expected"), CASES)
def test_alpha_after_one_update(workdir, rnn_tiny, cnn_tiny, kind, path, after, expected):
    # CNN: only depthwise ops, so that every sampled edge has weights to take a gradient
    base = rnn_tiny if kind == "rnn" else ["--dataset=cifar10", "--network_type=micro_cnn"] + cnn_tiny + [
        "--shared_cnn_normal_types=['depthwise_3x3']", "--shared_cnn_reduce_types=['depthwise_5x5']"]
    argv = base + WPL_FLAGS + [f"--alpha_decay_after={after}",
                               f"--shared_valid_fisher={'True' if path == 'valid' else 'False'}"]
    tr = make_trainer(kind, workdir, argv)
    calls = spy_updates(tr)
    if path == "valid":
        tr.begin_shared_phase()
        with torch.no_grad():
            dags = tr.controller.sample(1)
        tr.shared.train()
        tr.fisher_step(dags)
    else:
        tr.fisher_step = lambda dags: None  # only the train-batch update
        tr.train_shared(max_step=0)
    assert len(calls) == 1
    epoch_passed, alpha = calls[0]
    assert epoch_passed == (EPOCH if (kind, path) == ("rnn", "valid") else 0)
    assert alpha == pytest.approx(expected, rel=1e-6, abs=1e-9)
