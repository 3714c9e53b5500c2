"""Numerical unit tests against hand-computed cases (spec sections 6-8 and 13.3, 13.11)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from example_forgetting import data as D
from example_forgetting.baseline import loop_record
from example_forgetting.cli import cifar_parser, mnist_parser, order_main
from example_forgetting.models import MnistNet, ResNet18, WideResNet
from example_forgetting.naming import CIFAR_NAME_ARGS, MNIST_NAME_ARGS, matches, save_fname
from example_forgetting.order import load_sorting
from example_forgetting.stats import (
    StatsRecorder,
    forgetting_from_acc,
    margins_and_correct,
    order_examples,
    run_forgetting,
    sort_by_forgetting,
)
from example_forgetting.train import cifar_lr
from forgetting_common.data.tensors import cutout


def _hand_stats(rows: dict, key_type=int) -> dict:
    stats = {}
    for k, acc in rows.items():
        stats[key_type(k)] = [[0.5] * len(acc), list(acc), [0.1] * len(acc)]
    stats["train"] = [[], [50.0]]
    stats["test"] = [[], [40.0]]
    return stats


def test_never_learned_counts_as_epochs(tmp_path, run):
    """Spec 13.3: [0,0,0,0] -> 4 (never learned), [1,0,1,0] -> 2, [0,1,1,1] -> 0 (unforgettable)."""
    stats = _hand_stats({1: [0, 0, 0, 0], 2: [1, 0, 1, 0], 3: [0, 1, 1, 1]})
    path = tmp_path / "dataset_x__seed_1__stats_dict.pkl"
    path.write_bytes(pickle.dumps(stats))
    ordering = run(order_main, ["--input_dir", tmp_path, "--output_dir", tmp_path, "--output_name", "s",
                                "--epochs", 4])
    assert "Number of unforgettable examples: 1" in run.stdout
    out = pickle.loads((tmp_path / "s.pkl").read_bytes())
    assert out["indices"].tolist() == [3, 2, 1]
    assert out["forgetting counts"].tolist() == [0, 2, 4]
    assert ordering.unforgettable == 1


def test_only_first_epochs_presentations_count():
    stats = _hand_stats({0: [1, 0, 1, 0, 1, 0], 1: [0, 0, 0, 1, 1, 1]})
    r = run_forgetting(stats, 3)
    # first 3 presentations: ex0 [1,0,1] -> 1 event; ex1 [0,0,0] -> never learned -> penalty 3
    assert r.counts(3).tolist() == [1, 3]
    assert np.isnan(r.first_learned[1]) and r.first_learned[0] == 0


def test_forgetting_from_acc_vectorised():
    acc = np.array([[1, 0, 1, 0, 0], [0, 1, 1, 1, 1], [0, 0, 0, 0, 0], [1, 1, 1, 1, 0]])
    events, learned, first = forgetting_from_acc(acc)
    assert events.tolist() == [2, 0, 0, 1]
    assert learned.tolist() == [True, True, False, True]
    assert first[:2].tolist() == [0, 1] and np.isnan(first[2])


def test_reads_original_pickles_with_numpy_ids(tmp_path, run):
    """Statistics files of the original scripts: numpy int64 keys, ids in presentation order."""
    rows = {5: [1, 1], 0: [1, 0], 3: [0, 0]}
    stats = _hand_stats(rows, key_type=np.int64)
    for seed in (1, 2):
        (tmp_path / f"dataset_cifar10__seed_{seed}__noise_std_pixels_0__stats_dict.pkl").write_bytes(pickle.dumps(stats))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "dataset_cifar10__seed_3__noise_std_pixels_0.0__stats_dict.pkl").write_bytes(pickle.dumps(stats))
    run(order_main, ["--input_dir", tmp_path, "--output_dir", tmp_path, "--output_fname", "o.pkl",
                     "--input_fname_args", "noise_std_pixels", "0", "--epochs", 2])
    assert run.stdout.count("including file:") == 2 and "skipping file:" in run.stdout
    out = pickle.loads((tmp_path / "o.pkl").read_bytes())
    assert out["indices"].tolist() == [5, 0, 3]
    assert out["forgetting counts"].tolist() == [0, 2, 4]
    assert "Number of unforgettable examples: 1" in run.stdout


def test_tie_break_is_seeded_and_stable():
    ids = np.arange(10)
    totals = np.array([1, 0, 0, 2, 0, 1, 0, 0, 3, 0])
    a, ca = sort_by_forgetting(ids, totals, 0)
    b, cb = sort_by_forgetting(ids[::-1].copy(), totals[::-1].copy(), 0)  # input order does not matter
    assert a.tolist() == b.tolist() and ca.tolist() == cb.tolist() == sorted(totals.tolist())
    c, _ = sort_by_forgetting(ids, totals, 1)
    assert set(a[:6].tolist()) == set(c[:6].tolist()) == {1, 2, 4, 6, 7, 9}
    assert a.tolist() != c.tolist()


def test_runs_with_different_examples_are_rejected():
    from forgetting_common.errors import UserError

    r1 = run_forgetting(_hand_stats({0: [1], 1: [0]}), 1, "a")
    r2 = run_forgetting(_hand_stats({0: [1], 2: [0]}), 1, "b")
    with pytest.raises(UserError, match="different set of examples"):
        order_examples([r1, r2], 1)


def test_filename_matching():
    name = "dataset_mnist__no_dropout_True__seed_1__sorting_file_none__remove_n_0__keep_lowest_n_0__stats_dict.pkl"
    assert matches(name, ["dataset", "mnist", "remove_n", "0"])
    assert not matches(name.replace("dataset_mnist", "dataset_permuted_mnist"), ["dataset", "mnist"])
    assert not matches(name.replace("remove_n_0", "remove_n_05"), ["remove_n", "0"])
    assert matches(name, None) and matches(name, [])


def test_file_name_builder_matches_the_original_strings():
    m = vars(mnist_parser().parse_args(["--dataset", "mnist", "--no_dropout", "--seed", "1", "--output_dir", "x"]))
    assert save_fname(m, MNIST_NAME_ARGS) + "__stats_dict.pkl" == (
        "dataset_mnist__no_dropout_True__seed_1__sorting_file_none__remove_n_0__keep_lowest_n_0__stats_dict.pkl")
    c = vars(cifar_parser().parse_args(["--dataset", "cifar10", "--data_augmentation", "--seed", "3", "--output_dir", "x"]))
    assert save_fname(c, CIFAR_NAME_ARGS) + "__stats_dict.pkl" == (
        "dataset_cifar10__data_augmentation_True__cutout_False__seed_3__sorting_file_none__remove_n_0__"
        "keep_lowest_n_0__remove_subsample_0__noise_percent_labels_0__noise_percent_pixels_0__"
        "noise_std_pixels_0__stats_dict.pkl")
    c2 = vars(cifar_parser().parse_args(["--noise_std_pixels", "1", "--keep_lowest_n", "-1", "--output_dir", "x"]))
    name = save_fname(c2, CIFAR_NAME_ARGS)
    assert name.endswith("noise_std_pixels_1.0") and "keep_lowest_n_-1__" in name


def test_margins_hand_computed():
    out = torch.tensor([[2.0, 1.0, -1.0], [0.5, 3.0, 1.0], [1.0, 1.0, 0.0]])
    y = torch.tensor([0, 2, 1])
    margin, correct = margins_and_correct(out, y)
    assert margin.tolist() == [1.0, -2.0, 0.0]
    assert correct.tolist() == [True, False, torch.max(out[2:], 1)[1].item() == 1]
    # log-softmax outputs give the same margins as logits
    lm, _ = margins_and_correct(torch.log_softmax(out, 1), y)
    assert torch.allclose(lm, margin, atol=1e-6)


def test_recorder_matches_per_example_loop():
    """The vectorised recorder equals the original's per-example loop (sort-based margins)."""
    g = torch.Generator().manual_seed(0)
    ids = np.array([7, 3, 9, 1, 4, 8], dtype=np.int64)
    rec = StatsRecorder(ids, epochs=2)
    loop_stats: dict = {}
    for epoch in range(2):
        perm = np.random.RandomState(epoch).permutation(6)
        rec.set_first_order(perm, 4)
        for b in range(0, 6, 4):
            pos = torch.from_numpy(perm[b:b + 4])
            out = torch.randn(len(pos), 5, generator=g)
            y = torch.randint(0, 5, (len(pos),), generator=g)
            loss = torch.nn.functional.cross_entropy(out, y, reduction="none")
            rec.record(epoch, pos, out, y, loss)
            loop_record(loop_stats, ids[pos.numpy()], out, y, loss)
        rec.end_epoch(50.0)
    d = rec.to_dict()
    for i in ids.tolist():
        # exactly the original's values: float32 losses, 0/1 ints, float64 differences of float32 outputs
        assert d[i] == loop_stats[i]
    keys = list(d)
    assert keys[:4] == ids[np.random.RandomState(0).permutation(6)[:4]].tolist()
    assert keys[4] == "train" and keys[-1] == "test"


def test_running_train_accuracy_per_batch():
    rec = StatsRecorder(np.arange(5), epochs=1)
    out = torch.eye(5)
    rec.record(0, torch.tensor([0, 1]), out[:2], torch.tensor([0, 0]), torch.zeros(2))  # 1 of 2
    rec.record(0, torch.tensor([2, 3, 4]), out[2:], torch.tensor([2, 3, 4]), torch.zeros(3))  # 3 of 3
    assert rec.end_epoch(80.0) == [50.0, 80.0]
    assert rec.best_acc_text() == "train test \n80.0 80.0"


def test_cifar_lr_off_by_one_table():
    lrs = [cifar_lr(0.1, e) for e in range(200)]
    assert all(abs(lr - 0.1) < 1e-12 for lr in lrs[:61])
    assert all(abs(lr - 0.02) < 1e-12 for lr in lrs[61:121])
    assert all(abs(lr - 0.004) < 1e-12 for lr in lrs[121:161])
    assert all(abs(lr - 0.0008) < 1e-12 for lr in lrs[161:])
    fixed = [cifar_lr(0.1, e, fix_offbyone=True) for e in (59, 60, 119, 120, 160)]
    np.testing.assert_allclose(fixed, [0.1, 0.02, 0.02, 0.004, 0.0008])
    # the same table as torch's MultiStepLR stepped the original's way
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[60, 120, 160], gamma=0.2)
    seen = []
    for _ in range(200):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    # MultiStepLR stepped once per epoch without an argument is the intended (fixed) schedule
    np.testing.assert_allclose(seen, [cifar_lr(0.1, e, fix_offbyone=True) for e in range(200)])


def test_cutout_square():
    g = torch.Generator().manual_seed(0)
    x = torch.ones(200, 3, 32, 32)
    y = cutout(x, 16, g, 1)
    zeros = (y[:, 0] == 0).sum(dim=(1, 2))
    assert int(zeros.max()) <= 16 * 16 and int(zeros.min()) >= 8 * 8  # clipped at most to a quarter
    assert torch.equal(y[:, 0] == 0, y[:, 2] == 0)  # same mask on every channel


def test_selection_windows_random_and_subsample():
    rng = np.random.RandomState(5)
    order = np.array([4, 2, 9, 0, 1, 3, 5, 6, 7, 8])
    assert D.select_training_indices(10, rng, order, 3, 0).tolist() == [0, 1, 3, 5, 6, 7, 8]
    assert D.select_training_indices(10, rng, order, 3, 8).tolist() == [0, 1, 2, 3, 4, 5, 6, 9]  # truncated
    got = D.select_training_indices(10, np.random.RandomState(5), order, 3, -1)
    assert got.tolist() == np.random.RandomState(5).permutation(10)[:7].tolist()
    sub = D.select_training_indices(10, np.random.RandomState(5), order, 0, 4, remove_subsample=1)
    assert len(sub) == 9 and set(sub[:3]) < {4, 2, 9, 0} and sub[3:].tolist() == order[4:].tolist()
    assert D.select_training_indices(10, rng, None, 0, 0).tolist() == list(range(10))


def test_pixel_noise_wraps_like_uint8():
    img = np.full((1, 3, 2, 2), 200, dtype=np.uint8)
    out = D.add_pixel_noise(img, 100, 0.0, np.random.RandomState(0), mean=120.0)
    changed = out != img
    assert changed.sum() == 4 and np.all(out[changed] == (200 + 120) % 256)
    clipped = D.add_pixel_noise(img, 100, 0.0, np.random.RandomState(0), mean=120.0, clip=True)
    assert np.all(clipped[clipped != img] == 255)
    big = D.synthetic("cifar10", 8, 1)[0].images.numpy()
    noisy = D.add_pixel_noise(big, 100, 0.5, np.random.RandomState(1))
    assert ((noisy != big).reshape(8, -1).sum(1) == 1024).all()  # one channel at each of 1024 positions
    half = D.add_pixel_noise(big, 50, 0.5, np.random.RandomState(1))
    assert ((half != big).reshape(8, -1).sum(1) == 512).all()


def test_label_noise():
    labels = np.arange(100) % 10
    new, pos, old, chg = D.add_label_noise(labels, 20, np.random.RandomState(0))
    assert len(pos) == 20 == len(set(pos.tolist()))
    assert (old != chg).all() and (new[pos] == chg).all() and (labels[pos] == old).all()
    assert (np.delete(new, pos) == np.delete(labels, pos)).all()


def test_param_counts_of_the_paper_networks():
    def count(m):
        return sum(p.numel() for p in m.parameters())

    assert count(MnistNet()) == 21840
    assert count(ResNet18(10)) == 11173962
    assert count(WideResNet(28, 10, 10, 0.3)) == 36479194
    assert MnistNet()(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_load_sorting_accepts_object_arrays(tmp_path):
    p = tmp_path / "s.pkl"
    p.write_bytes(pickle.dumps({"indices": np.array([2, 0, 1], dtype=object), "forgetting counts": [0, 0, 1]}))
    idx, counts = load_sorting(p)
    assert idx.tolist() == [2, 0, 1] and counts.tolist() == [0, 0, 1]


def test_configs_are_frozen_and_keep_the_original_names_and_order():
    import dataclasses

    from example_forgetting.cli import CifarConfig, MnistConfig, parse_cifar, parse_mnist

    argv = ["--dataset", "mnist", "--no_dropout", "--seed", "1", "--output_dir", "x", "--data_source", "synthetic"]
    config, print_only = parse_mnist(argv)
    assert isinstance(config, MnistConfig) and not print_only
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.seed = 2
    dests = [k for k in vars(mnist_parser().parse_args(argv)) if k != "print_config"]
    assert list(config.to_dict()) == dests  # config.json and --print_config: the parser's names, in order
    assert config.save_fname == "dataset_mnist__no_dropout_True__seed_1__sorting_file_none__remove_n_0__keep_lowest_n_0"
    cifar, _ = parse_cifar(["--output_dir", "x", "--data_source", "synthetic"])
    assert isinstance(cifar, CifarConfig) and cifar.noise_std_pixels == 0 and type(cifar.noise_std_pixels) is int
    assert cifar.save_fname.endswith("noise_std_pixels_0")


def test_margin_is_the_float64_difference_of_the_float32_outputs():
    """The original subtracted two ``.item()`` values as Python floats: 1 - 2**-30 is not a float32."""
    out = torch.tensor([[1.0, 2.0**-30, -5.0]])
    margin, correct = margins_and_correct(out, torch.tensor([0]))
    assert bool(correct[0]) and margin.dtype == torch.float64
    assert margin.item() == 1.0 - 2.0**-30 != float(torch.tensor(1.0) - torch.tensor(2.0**-30))
    rec = StatsRecorder(np.array([5]), epochs=1)
    rec.set_first_order(np.array([0]), 1)
    rec.record(0, torch.tensor([0]), out, torch.tensor([0]), torch.tensor([0.25]))
    rec.end_epoch(0.0)
    assert rec.to_dict()[5] == [[0.25], [1], [1.0 - 2.0**-30]]


@pytest.mark.parametrize("dataset", ["mnist", "permuted_mnist"])
def test_mnist_batches_normalised_per_batch_equal_the_whole_set_normalised(dataset):
    """uint8 images normalised when a batch is drawn give bit for bit the values of the whole
    set normalised (and permuted) once: the network sees exactly the same inputs."""
    from example_forgetting.cli import parse_mnist
    from example_forgetting.train import BatchInputs
    from forgetting_common.data import normalize, permute_pixels

    config, _ = parse_mnist(["--dataset", dataset, "--output_dir", "unused"])
    images = np.random.RandomState(0).randint(0, 256, size=(300, 1, 28, 28)).astype(np.uint8)
    images[0] = 0
    images[1] = 255
    permutation = torch.randperm(784, generator=torch.Generator().manual_seed(3)) if dataset != "mnist" else None
    inputs = BatchInputs(config, images, torch.device("cpu"), permutation, torch.Generator())
    assert inputs.x.dtype == torch.uint8  # held as bytes, not float32
    whole = normalize(torch.from_numpy(images), D.MNIST_MEAN, D.MNIST_STD)
    if permutation is not None:
        whole = permute_pixels(whole, permutation)
        assert not torch.equal(whole, normalize(torch.from_numpy(images), D.MNIST_MEAN, D.MNIST_STD))
    for pos in (torch.arange(64), torch.tensor([1, 0, 299, 7]), torch.from_numpy(np.random.RandomState(1).permutation(300))):
        batch = inputs(pos)
        assert batch.dtype == torch.float32 and torch.equal(batch, whole[pos])
    assert inputs(torch.tensor([0]))[0, 0, 0, 0].item() == np.float32((np.float32(0.0) - np.float32(0.1307)) / np.float32(0.3081))
