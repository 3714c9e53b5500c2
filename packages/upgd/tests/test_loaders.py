"""The original on-disk layouts, written small by forgetting_common's fake writers, read by the tasks."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from forgetting_common.data.fake import (
    write_cifar,
    write_cifar10_jpeg_zip,
    write_emnist,
    write_mnist,
)
from forgetting_common.errors import UserError
from upgd.data import compute_resnet_features, load_source


def test_idx_pickle_and_jpeg_layouts(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the JPEG decode cache
    write_mnist(tmp_path / "m", n_train=30)
    write_emnist(tmp_path / "e", n_train=40)
    write_cifar(tmp_path / "c", n_train=20)
    write_cifar10_jpeg_zip(tmp_path / "j", per_class_train=2, per_class_test=1)
    mnist = load_source("mnist", tmp_path / "m")
    emnist = load_source("emnist", tmp_path / "e")
    cifar = load_source("cifar10", tmp_path / "c")
    jpeg = load_source("cifar10", tmp_path / "j")
    assert mnist.x.shape == (30, 784) and mnist.n_classes == 10
    assert emnist.x.shape == (40, 784) and emnist.n_classes == 47
    assert cifar.x.shape == (20, 3, 32, 32) and "pickles" in cifar.description
    assert jpeg.x.shape == (20, 3, 32, 32) and "JPEG" in jpeg.description
    x = cifar.scaled(cifar.x)
    assert -1.0 <= float(x.min()) and float(x.max()) <= 1.0


def test_mini_imagenet_features_file_and_feature_extraction(tmp_path):
    feats = torch.randn(12, 2048)
    (tmp_path / "mini-imagenet_targets.pkl").write_bytes(pickle.dumps(list(range(12))))
    (tmp_path / "processed_imagenet.pkl").write_bytes(pickle.dumps(feats.numpy()))
    src = load_source("mini_imagenet", tmp_path)
    assert torch.equal(src.x, feats) and src.n_classes == 100
    (tmp_path / "processed_imagenet.pkl").write_bytes(pickle.dumps(torch.randn(5, 2048).numpy()))
    with pytest.raises(UserError, match="do not match"):
        load_source("mini_imagenet", tmp_path)
    # The original's cache (a pickled torch tensor) would need code to rebuild: refused, with the fix.
    (tmp_path / "processed_imagenet.pkl").write_bytes(pickle.dumps(feats))
    with pytest.raises(UserError, match="processed_imagenet.pkl is refused: it asks for torch.*delete it to recompute"):
        load_source("mini_imagenet", tmp_path)

    class Tiny(torch.nn.Module):  # stands in for ResNet-50: conv body, pooling, then the fc head
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)
            self.avgpool = torch.nn.AdaptiveAvgPool2d(1)
            self.fc = torch.nn.Linear(4, 2)

    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8))
    out = compute_resnet_features(images, model=Tiny())
    assert out.shape == (3, 4)


def test_offline_stream_relabels_held_out_with_the_ended_task(tmp_path):
    from upgd.data import build_task

    write_emnist(tmp_path, n_train=60, n_test=30)
    task = build_task("label_permuted_emnist_offline", seed=0, device=torch.device("cpu"), data_dir=tmp_path,
                      change_freq=5)
    hx, hy = task.held_out
    assert hx.shape == (30, 784)
    mappings = []
    for step in range(11):
        _, _, done = task.next()
        if step % 5 == 0:
            mappings.append(task.mapping.clone())
        if done:
            assert torch.equal(task.previous_mapping, mappings[-2])  # the task that just ended
    # not composed: each task's labels are a fresh permutation of the original labels
    assert all(sorted(m.tolist()) == list(range(47)) for m in mappings)
