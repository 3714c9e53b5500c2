"""Shared fixtures: in-process CLI runs, narrow CIFAR networks, and smoke-run folders.

Smoke runs follow the spec's section 13: synthetic data, 64 training and 32 test examples,
3 MNIST epochs, 2 CIFAR epochs. CIFAR networks keep their architecture but are narrowed (ResNet18
width 4, WRN-10-1) so that the suite fits its time budget on two CPU cores; the full-size
networks are checked by parameter count in ``test_units.py``.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from example_forgetting import models, train
from example_forgetting.cli import cifar_main, mnist_main, order_main
from forgetting_common.safeload import load_pickle as safe_load_pickle

torch.set_num_threads(1)

PACKAGE = Path(__file__).resolve().parents[1]
SMOKE = ["--data_source", "synthetic", "--train_limit", "64", "--test_limit", "32", "--quiet",
         "--device", "cpu", "--no_tensorboard"]
MNIST_FILTER = ["dataset", "mnist", "no_dropout", "True", "sorting_file", "none", "remove_n", "0",
                "keep_lowest_n", "0"]
CIFAR_FILTER = ["dataset", "cifar10", "data_augmentation", "True", "cutout", "False", "sorting_file",
                "none", "remove_n", "0", "keep_lowest_n", "0", "remove_subsample", "0",
                "noise_percent_labels", "0", "noise_percent_pixels", "0", "noise_std_pixels", "0"]


def narrow_cifar_model(name: str, num_classes: int) -> torch.nn.Module:
    if name == "resnet18":
        return models.ResNet18(num_classes=num_classes, width=4)
    if name == "wideresnet":
        return models.WideResNet(depth=10, num_classes=num_classes, widen_factor=1, drop_rate=0.3)
    raise ValueError(name)


@contextlib.contextmanager
def narrow_models():
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train, "build_cifar_model", narrow_cifar_model)
        yield


class Runner:
    """Calls a script's ``main(argv)`` in-process and captures stdout."""

    def __call__(self, main, argv):
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            result = main([str(a) for a in argv])
        self.stdout = buf.getvalue()
        return result

    mnist = staticmethod(mnist_main)
    cifar = staticmethod(cifar_main)
    order = staticmethod(order_main)


@pytest.fixture
def run():
    return Runner()


@pytest.fixture
def narrow(monkeypatch):
    monkeypatch.setattr(train, "build_cifar_model", narrow_cifar_model)


def load_pickle(path):
    """Our outputs must load with the restricted loader the order script uses."""
    return safe_load_pickle(path)


@pytest.fixture(scope="session")
def mnist_dirs(tmp_path_factory):
    """README step 1 for MNIST and permuted MNIST (2 seeds each) plus a dropout run, step 2's
    order command, and the selected / random removal runs (spec 13.1-13.4)."""
    root = tmp_path_factory.mktemp("mnist")
    m, p = root / "M", root / "P"
    r = Runner()
    for seed in (1, 2):
        r(mnist_main, ["--dataset", "mnist", "--no_dropout", "--output_dir", m, "--seed", seed, "--epochs", 3, *SMOKE])
        r(mnist_main, ["--dataset", "permuted_mnist", "--no_dropout", "--output_dir", p, "--seed", seed, "--epochs", 3, *SMOKE])
    r(mnist_main, ["--dataset", "mnist", "--output_dir", m, "--seed", 1, "--epochs", 3, *SMOKE])
    ordering = r(order_main, ["--output_dir", m, "--output_name", "mnist_sorted", "--input_dir", m,
                              "--input_fname_args", *MNIST_FILTER, "--epochs", 3])
    order_stdout = r.stdout
    removal = {}
    for k in (0, -1):
        removal[k] = r(mnist_main, ["--dataset", "mnist", "--sorting_file", "mnist_sorted", "--input_dir", m,
                                    "--output_dir", m, "--seed", 1, "--remove_n", 16, "--keep_lowest_n", k,
                                    "--epochs", 3, *SMOKE])
    return {"M": m, "P": p, "ordering": ordering, "order_stdout": order_stdout, "removal": removal}


@pytest.fixture(scope="session")
def cifar_dirs(tmp_path_factory):
    """README's CIFAR statistics runs (2 seeds) and its sort command (spec 13.5)."""
    root = tmp_path_factory.mktemp("cifar")
    c = root / "C"
    r = Runner()
    with narrow_models():
        for seed in (1, 2):
            r(cifar_main, ["--dataset", "cifar10", "--data_augmentation", "--output_dir", c, "--seed", seed,
                           "--epochs", 2, *SMOKE])
        ordering = r(order_main, ["--output_dir", c, "--output_name", "cifar10_sorted", "--input_dir", c,
                                  "--input_fname_args", *CIFAR_FILTER, "--epochs", 2])
    return {"C": c, "ordering": ordering, "order_stdout": r.stdout}


def run_script(script: str, *argv, env_extra=None, timeout=120) -> subprocess.CompletedProcess:
    """Run one of the package's scripts as a user would (``python <script> ...``)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.update(env_extra or {})
    return subprocess.run([sys.executable, script, *map(str, argv)], cwd=PACKAGE, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def script():
    return run_script
