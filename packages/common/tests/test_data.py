import os
import zipfile
from pathlib import Path

import pytest
import torch
from forgetting_common import data as D
from forgetting_common.data import fake
from forgetting_common.data.roots import DatasetError

REAL = os.environ.get(D.DATA_ENV)
needs_real = pytest.mark.skipif(not REAL, reason=f"{D.DATA_ENV} is unset: no real datasets to read")


def test_resolve_root_order(monkeypatch, tmp_path):
    monkeypatch.delenv(D.DATA_ENV, raising=False)
    assert D.resolve_root(None, "./data") == Path("./data")
    monkeypatch.setenv(D.DATA_ENV, str(tmp_path))
    assert D.resolve_root(None, "./data") == tmp_path
    assert D.resolve_root("/x/y", "./data") == Path("/x/y")


def test_fake_mnist_roundtrip_and_missing_error(tmp_path):
    fake.write_mnist(tmp_path, n_train=30, n_test=20)
    x, y = D.load_mnist(tmp_path, train=True)
    assert x.shape == (30, 28, 28) and x.dtype == torch.uint8 and y.dtype == torch.int64
    assert D.load_mnist(tmp_path, train=False)[0].shape == (20, 28, 28)
    with pytest.raises(DatasetError) as err:
        D.load_mnist(tmp_path / "nowhere", flag="--data_root")
    text = str(err.value)
    assert "nowhere" in text and "MNIST/raw" in text and "--data_root" in text and D.DATA_ENV in text


def test_failed_download_is_a_clear_error(tmp_path, monkeypatch):
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise ConnectionError("no route to host")

    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    with pytest.raises(DatasetError, match="downloading it failed .*no route to host"):
        D.load_mnist(tmp_path, download=True)


def test_fake_emnist_roundtrip(tmp_path):
    fake.write_emnist(tmp_path, split="balanced", n_train=12, n_test=6)
    x, y = D.load_emnist(tmp_path, "balanced", train=False)
    assert x.shape == (6, 28, 28) and int(y.max()) < 47


def test_pixel_permutation_is_fixed_by_seed_and_invertible():
    p = D.pixel_permutation(3)
    assert torch.equal(p, D.pixel_permutation(3)) and not torch.equal(p, D.pixel_permutation(4))
    assert torch.equal(p.sort().values, torch.arange(784))
    images = torch.arange(2 * 784).view(2, 28, 28)
    permuted = D.permute_pixels(images, p)
    assert torch.equal(permuted.view(2, -1), images.view(2, -1)[:, p])
    assert torch.equal(D.permute_pixels(images.unsqueeze(1), p).squeeze(1), permuted)


@pytest.mark.parametrize("name, classes", [("cifar10", 10), ("cifar100", 100)])
def test_fake_cifar_pickles(tmp_path, name, classes):
    fake.write_cifar(tmp_path, name, n_train=40, n_test=10)
    x, y, names = D.load_cifar(tmp_path, name, train=True)
    assert x.shape == (40, 3, 32, 32) and len(names) == classes
    assert D.load_cifar(tmp_path, name, train=False)[0].shape == (10, 3, 32, 32)


def test_malformed_cifar_pickle_is_a_clear_error(tmp_path):
    fake.write_cifar(tmp_path, "cifar10", n_train=10, n_test=5)
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(DatasetError, match="malformed"):
        D.load_cifar(tmp_path, "cifar10", train=False)


def test_jpeg_zip_and_folder_layouts(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    zpath = fake.write_cifar10_jpeg_zip(tmp_path / "root", per_class_train=3, per_class_test=2)
    assert zipfile.is_zipfile(zpath)
    x, y, names = D.load_cifar(tmp_path / "root", "cifar10", train=True)
    assert x.shape == (30, 3, 32, 32) and names[0] == "airplane" and y.tolist() == sorted(y.tolist())
    again = D.load_cifar(tmp_path / "root", "cifar10", train=True)  # from the cache
    assert torch.equal(again[0], x)
    fake.write_image_folder(tmp_path / "folder", ("train", "test"), 4, 2, size=16, fmt="png")
    fx, fy, fnames = D.load_image_zip_or_folder(tmp_path / "folder", "test")
    assert fx.shape == (8, 3, 16, 16) and len(fnames) == 4
    with pytest.raises(DatasetError, match="cifar10-jpeg"):
        D.load_cifar(tmp_path / "empty", "cifar10")


def test_image_folder_split_checks_class_count(tmp_path):
    fake.write_image_folder(tmp_path / "Flower102", ("train", "val", "test"), 5, 1, size=8)
    ds = D.image_folder_split(tmp_path, "Flower102", "val", num_classes=5)
    assert len(ds) == 5
    with pytest.raises(DatasetError, match="has 5 class folders but Flower102 has 102"):
        D.image_folder_split(tmp_path, "Flower102", "train", num_classes=102)
    train = D.image_folder_split(tmp_path, "Flower102", "train")
    assert len(D.image_folder_split(tmp_path, "Flower102", "test", classes=train.classes)) == 5
    (tmp_path / "Flower102" / "test" / "class004").rename(tmp_path / "Flower102" / "test" / "zzz")
    with pytest.raises(DatasetError, match="other class folders"):
        D.image_folder_split(tmp_path, "Flower102", "test", classes=train.classes)
    with pytest.raises(DatasetError, match="Aircrafts"):
        D.image_folder_split(tmp_path, "Aircrafts", "train")


def test_text_corpus(tmp_path):
    (tmp_path / "train.txt").write_text(" a b c \n b c \n")
    (tmp_path / "valid.txt").write_text(" c d \n")
    (tmp_path / "test.txt").write_text(" a \n")
    corpus = D.Corpus(tmp_path)
    assert corpus.dictionary.idx2word == ["a", "b", "c", "<eos>", "d"]
    assert corpus.train.tolist() == [0, 1, 2, 3, 1, 2, 3]
    assert corpus.valid.tolist() == [2, 4, 3]
    batches = D.batchify(corpus.train, 2)
    assert batches.shape == (3, 2) and batches[:, 0].tolist() == [0, 1, 2]
    (tmp_path / "test.txt").unlink()
    with pytest.raises(DatasetError, match="test.txt"):
        D.Corpus(tmp_path)
    fake.write_text_corpus(tmp_path / "gen", vocab_size=20)
    assert len(D.Corpus(tmp_path / "gen").dictionary) <= 21


def test_digits_need_no_download():
    x, y = D.load_digits()
    assert x.shape == (1797, 8, 8) and int(x.max()) == 16 and set(y.tolist()) == set(range(10))


def test_batches_cover_every_index_once_and_augment_shapes():
    data = D.ImageTensors(torch.rand(10, 3, 8, 8), torch.arange(10))
    gen = torch.Generator().manual_seed(0)
    seen = torch.cat([idx for idx, _, _ in data.batches(3, generator=gen)])
    assert sorted(seen.tolist()) == list(range(10))
    idx, x, y = next(data.batches(4, generator=gen, crop_padding=2, flip=True, cutout_length=4))
    assert x.shape == (4, 3, 8, 8) and torch.equal(y, idx)
    assert sum(1 for _ in D.index_batches(10, 3, drop_last=True)) == 3


def test_random_crop_is_a_shifted_window_and_flip_mirrors():
    from forgetting_common.data.tensors import cutout, random_crop, random_flip

    x = torch.arange(16.0).view(1, 1, 4, 4)
    gen = torch.Generator().manual_seed(1)
    out = random_crop(x, 1, gen)
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    windows = [padded[..., i:i + 4, j:j + 4] for i in range(3) for j in range(3)]
    assert any(torch.equal(out, w) for w in windows)
    flipped = random_flip(x.repeat(64, 1, 1, 1), torch.Generator().manual_seed(0))
    assert any(torch.equal(f, x[0].flip(-1)) for f in flipped) and any(torch.equal(f, x[0]) for f in flipped)
    holes = cutout(torch.ones(50, 1, 8, 8), 4, torch.Generator().manual_seed(0))
    zeros = (holes == 0).sum(dim=(1, 2, 3))
    assert zeros.max() == 16 and zeros.min() >= 4  # a 4x4 square, clipped at the border


def test_normalize():
    x = torch.full((2, 3, 2, 2), 255, dtype=torch.uint8)
    out = D.normalize(x, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert torch.allclose(out, torch.ones_like(out))
    assert D.normalize(torch.zeros(2, 4, 4, dtype=torch.uint8), (0.1307,), (0.3081,)).shape == (2, 1, 4, 4)


@needs_real
def test_real_mnist():
    x, y = D.load_mnist(REAL, train=True)
    assert x.shape == (60000, 28, 28) and y[:5].tolist() == [5, 0, 4, 1, 9]
    tx, ty = D.load_mnist(REAL, train=False)
    assert tx.shape == (10000, 28, 28) and torch.bincount(ty).tolist()[0] == 980


@needs_real
def test_real_jpeg_cifar10():
    x, y, names = D.load_cifar(REAL, "cifar10", train=False)
    assert x.shape == (10000, 3, 32, 32) and len(names) == 10
    assert torch.bincount(y).tolist() == [1000] * 10
    mean = x.float().mean(dim=(0, 2, 3)) / 255
    assert torch.allclose(mean, torch.tensor([0.4942, 0.4851, 0.4504]), atol=0.01)


@needs_real
def test_real_ptb():
    corpus = D.Corpus(Path(REAL) / "ptb")
    assert len(corpus.dictionary) == 10000 and corpus.train.numel() == 929589


def test_truncated_idx_file_is_reported_as_truncated(tmp_path):
    fake.write_mnist(tmp_path, n_train=20, n_test=10)
    images = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-100])
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte is truncated: \d+ bytes, expected \d+"):
        D.load_mnist(tmp_path, train=True)
    assert D.load_mnist(tmp_path, train=False)[0].shape == (10, 28, 28)


@pytest.mark.parametrize("damage", ["empty class", "missing class", "test differs"])
def test_jpeg_cifar_class_folders_are_checked(tmp_path, damage):
    root = tmp_path / "cifar10-jpeg"
    fake.write_image_folder(root, classes=10, per_class=2, splits=("train", "test"), size=32, fmt="jpg")
    victim = root / ("test" if damage == "test differs" else "train") / "class003"
    for f in victim.iterdir():
        f.unlink()
    if damage == "missing class":
        victim.rmdir()
    if damage == "test differs":
        victim.rename(victim.with_name("class999"))
        fake.write_image_folder(tmp_path / "other", classes=1, per_class=1, splits=("test",), size=32, fmt="jpg")
        for f in (tmp_path / "other" / "test" / "class000").iterdir():
            f.rename(victim.with_name("class999") / f.name)
    train = damage != "test differs"
    with pytest.raises(DatasetError) as err:
        D.load_cifar(tmp_path, "cifar10", train=train, cache=False)
    message = str(err.value)
    if damage == "empty class":
        assert "class003 holds no images" in message
    elif damage == "missing class":
        assert "9 class folders" in message
    else:
        assert "class003" in message or "class999" in message


def test_corrupt_jpeg_names_the_file(tmp_path):
    root = tmp_path / "cifar10-jpeg"
    fake.write_image_folder(root, classes=10, per_class=1, splits=("train",), size=32, fmt="jpg")
    broken = sorted((root / "train" / "class002").iterdir())[0]
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(DatasetError, match=rf"image {broken} cannot be decoded"):
        D.load_cifar(tmp_path, "cifar10", train=True, cache=False)


def test_failed_download_leaves_no_empty_folders(tmp_path):
    root = tmp_path / "new" / "data"
    with pytest.raises(RuntimeError):
        with D.download_guard(root):
            (root / "MNIST" / "raw").mkdir(parents=True)
            (root / "MNIST" / "raw" / "part.gz").write_bytes(b"half")
            raise RuntimeError("host unreachable")
    assert not (tmp_path / "new").exists()
    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "notes.txt").write_text("x")
    with pytest.raises(RuntimeError):
        with D.download_guard(keep):
            (keep / "MNIST").mkdir()
            raise RuntimeError("host unreachable")
    assert sorted(p.name for p in keep.iterdir()) == ["notes.txt"]
