"""Bad input: one clear line, a non-zero exit, and nothing written or overwritten.

``TABLE`` is the package's bad-input table (README, "Bad input"): the command, the file it is
pointed at, the expected first (and only) line on stderr and the exit status. Each case runs
the script's entry point through ``run_main`` as ``python run_*.py`` does; the data-integrity
cases also run as real processes in ``test_bad_data_through_the_scripts``.
"""

from __future__ import annotations

import errno
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from example_forgetting.cli import (
    cifar_main,
    cifar_parser,
    mnist_main,
    mnist_parser,
    order_main,
    order_parser,
)
from forgetting_common import run_main
from forgetting_common.data import fake
from forgetting_common.errors import UserError

PACKAGE = Path(__file__).resolve().parents[1]
SMOKE = ["--data_source", "synthetic", "--train_limit", "64", "--test_limit", "32", "--quiet",
         "--device", "cpu", "--no_tensorboard", "--epochs", "1"]
REAL = ["--quiet", "--device", "cpu", "--no_tensorboard", "--epochs", "1", "--no_download"]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


class Evil:
    """A pickle that would run a command when loaded."""

    def __reduce__(self):
        return (os.system, ("touch PWNED",))


# ---- files the cases point at ------------------------------------------------------------------

def sorting(content):
    def make(tmp: Path) -> None:
        (tmp / "in").mkdir(exist_ok=True)
        (tmp / "in" / "s.pkl").write_bytes(content if isinstance(content, bytes) else pickle.dumps(content))
    return make


def mnist_raw(damage):
    def make(tmp: Path) -> None:
        fake.write_mnist(tmp / "data", n_train=40, n_test=20)
        damage(tmp / "data" / "MNIST" / "raw")
    return make


def truncate(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def label_byte(raw: Path) -> None:
    data = bytearray((raw / "train-labels-idx1-ubyte").read_bytes())
    data[8] = 12  # the first label: class 12 of MNIST's 10
    (raw / "train-labels-idx1-ubyte").write_bytes(bytes(data))


def jpeg_folder(damage):
    def make(tmp: Path) -> None:
        fake.write_image_folder(tmp / "data", ("train", "test"), CIFAR10_CLASSES, {"train": 2, "test": 1})
        damage(tmp / "data")
    return make


def empty_class(root: Path) -> None:
    for image in (root / "train" / "cat").iterdir():
        image.unlink()


def corrupt_jpeg(root: Path) -> None:
    (root / "train" / "dog" / "0001.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")


def cifar_pickles(damage):
    def make(tmp: Path) -> None:
        fake.write_cifar(tmp / "data", "cifar10", n_train=40, n_test=20)
        damage(tmp / "data" / "cifar-10-batches-py")
    return make


def stats_file(content):
    def make(tmp: Path) -> None:
        (tmp / "in").mkdir(exist_ok=True)
        data = content if isinstance(content, bytes) else pickle.dumps(content)
        (tmp / "in" / "dataset_mnist__seed_1__stats_dict.pkl").write_bytes(data)
    return make


def tracked_file(content):
    """A run folder ``in/runs/r/`` holding a ``tracked.npz`` (``content``: bytes, or the number of
    presentations of each of 4 examples, each correct at the last one only) and its config.json."""
    def make(tmp: Path) -> None:
        run = tmp / "in" / "runs" / "r"
        run.mkdir(parents=True)
        (run / "config.json").write_text('{"dataset": "mnist", "seed": 1}')
        if isinstance(content, bytes):
            (run / "tracked.npz").write_bytes(content)
            return
        n = content
        np.savez(run / "tracked.npz", **{
            "forgetting.ids": np.arange(4), "forgetting.events": np.zeros(4, dtype=np.int64),
            "forgetting.first_learned": np.full(4, n - 1), "forgetting.learned": np.ones(4, dtype=bool),
            "forgetting.presentations": np.full(4, n), "forgetting.epochs": np.asarray(n),
            "forgetting.history_epochs": np.arange(n)})
    return make


def output_file(tmp: Path) -> None:
    (tmp / "out").write_text("a file, not a folder")


M, C, ORD = "run_mnist.py", "run_cifar.py", "order_examples_by_forgetting.py"
MAINS = {M: mnist_main, C: cifar_main, ORD: order_main}
OUT = ["--output_dir", "{tmp}/out"]
ORDER = ["--input_dir", "{tmp}/in", "--output_dir", "{tmp}/out", "--output_name", "x", "--epochs", "2"]

# (id, script, argv, setup, expected stderr line (regex, after "<script>: error: "), exit status)
TABLE = [
    ("lr-negative", M, ["--lr", "-1", *OUT, *SMOKE], None, r"argument --lr: expected a finite number of zero or more, got '-1'", 2),
    ("lr-nan", M, ["--lr", "nan", *OUT, *SMOKE], None, r"argument --lr: expected a finite number", 2),
    ("momentum-negative", M, ["--momentum", "-0.5", *OUT, *SMOKE], None, r"argument --momentum: expected a finite number of zero or more", 2),
    ("batch-size-zero", M, ["--batch_size", "0", *OUT, *SMOKE], None, r"argument --batch_size: expected a positive integer, got '0'", 2),
    ("epochs-negative", M, [*OUT, *SMOKE, "--epochs", "-3"], None, r"argument --epochs: expected a positive integer", 2),
    ("epochs-not-a-number", M, [*OUT, *SMOKE, "--epochs", "x"], None, r"argument --epochs: expected a positive integer, got 'x'", 2),
    ("remove-n-negative", M, ["--remove_n", "-5", *OUT, *SMOKE], None, r"argument --remove_n: expected a non-negative integer", 2),
    ("unknown-dataset", M, ["--dataset", "fashion", *OUT, *SMOKE], None, r"argument --dataset: invalid choice: 'fashion'", 2),
    ("missing-output-dir", M, SMOKE, None, r"the following arguments are required: --output_dir", 2),
    ("sorting-file-missing", M, ["--sorting_file", "s", "--input_dir", "{tmp}/in", *OUT, *SMOKE], None, r"sorting file not found: looked for .*/in/s\.pkl", 2),
    ("sorting-file-garbage", M, ["--sorting_file", "s", "--input_dir", "{tmp}/in", *OUT, *SMOKE], sorting(b"not a pickle"), r"sorting file .*/in/s\.pkl is not a readable pickle", 2),
    ("sorting-file-runs-code", M, ["--sorting_file", "s", "--input_dir", "{tmp}/in", *OUT, *SMOKE], sorting(Evil()), r"sorting file .*/in/s\.pkl is refused: it asks for posix\.system", 2),
    ("sorting-file-wrong-type", M, ["--sorting_file", "s", "--input_dir", "{tmp}/in", *OUT, *SMOKE], sorting([1, 2, 3]), r"sorting file .*/in/s\.pkl is malformed: expected a dict with an 'indices' entry", 2),
    ("sorting-file-repeated-ids", M, ["--sorting_file", "s", "--input_dir", "{tmp}/in", *OUT, *SMOKE], sorting({"indices": [1, 1, 2]}), r"sorting file .* is malformed: 'indices' holds repeated ids", 2),
    ("sorting-file-other-dataset", M, ["--sorting_file", "s", "--input_dir", "{tmp}/in", "--remove_n", "10", *OUT, *SMOKE], sorting({"indices": list(range(1000))}), r"sorting file .* holds example ids up to 999, but the training set has 64", 2),
    ("remove-n-too-large", M, ["--sorting_file", "s", "--input_dir", "{tmp}/in", "--remove_n", "65", *OUT, *SMOKE], sorting({"indices": list(range(64))}), r"--remove_n 65 is larger than the training set \(64 examples\)", 2),
    ("sorting-file-a-path", M, ["--sorting_file", "../x", *OUT, *SMOKE], None, r"--sorting_file '\.\./x' must be a file name inside --input_dir", 2),
    ("output-dir-is-a-file", M, [*OUT, *SMOKE], output_file, r"--output_dir .*/out exists and is not a folder", 2),
    ("output-dir-under-proc", M, ["--output_dir", "/proc/ef_no_such/out", *SMOKE], None, r"/proc/ef_no_such(/out)?: No such file or directory", 2),
    ("resume-and-overwrite", M, [*OUT, *SMOKE, "--resume", "--overwrite"], None, r"--resume and --overwrite contradict each other", 2),
    ("mnist-missing", M, [*OUT, "--data_root", "{tmp}/nodata", *REAL], None, r"MNIST not found at .*/nodata/MNIST/raw: expected .*--data_root", 2),
    ("idx-truncated", M, [*OUT, "--data_root", "{tmp}/data", *REAL], mnist_raw(lambda raw: truncate(raw / "train-images-idx3-ubyte", 5000)), r".*/MNIST/raw/train-images-idx3-ubyte is truncated: 5000 bytes, expected 31376 for shape \[40, 28, 28\]", 2),
    ("idx-label-out-of-range", M, [*OUT, "--data_root", "{tmp}/data", *REAL], mnist_raw(label_byte), r"mnist training labels under .*/data range over 0\.\.12, but mnist has classes 0\.\.9", 2),
    ("learning-rate-negative", C, ["--learning_rate", "-1", *OUT, *SMOKE], None, r"argument --learning_rate: expected a finite number of zero or more, got '-1'", 2),
    ("noise-std-negative", C, ["--noise_std_pixels", "-1", *OUT, *SMOKE], None, r"argument --noise_std_pixels: expected a finite number of zero or more", 2),
    ("noise-mean-inf", C, ["--pixel_noise_mean", "inf", *OUT, *SMOKE], None, r"argument --pixel_noise_mean: expected a finite number, got 'inf'", 2),
    ("label-noise-over-100", C, ["--noise_percent_labels", "101", *OUT, *SMOKE], None, r"--noise_percent_labels must be in 0\.\.100, got 101", 2),
    ("n-holes-negative", C, ["--n_holes", "-1", *OUT, *SMOKE], None, r"argument --n_holes: expected a non-negative integer", 2),
    ("unknown-optimizer", C, ["--optimizer", "rmsprop", *OUT, *SMOKE], None, r"argument --optimizer: invalid choice: 'rmsprop'", 2),
    ("unknown-model", C, ["--model", "vgg", *OUT, *SMOKE], None, r"argument --model: invalid choice: 'vgg'", 2),
    ("unknown-cifar", C, ["--dataset", "svhn", *OUT, *SMOKE], None, r"argument --dataset: invalid choice: 'svhn'", 2),
    ("remove-subsample-without-sorting", C, ["--remove_subsample", "4", "--keep_lowest_n", "16", *OUT, *SMOKE], None, r"--remove_subsample needs a --sorting_file", 2),
    ("jpeg-empty-class", C, [*OUT, "--data_root", "{tmp}/data", *REAL], jpeg_folder(empty_class), r"class folder .*/data/train/cat holds no images", 2),
    ("jpeg-missing-class", C, [*OUT, "--data_root", "{tmp}/data", *REAL], jpeg_folder(lambda r: shutil.rmtree(r / "train" / "cat")), r".*/data has 9 class folders under train/ but CIFAR10 has 10", 2),
    ("jpeg-test-classes-differ", C, [*OUT, "--data_root", "{tmp}/data", *REAL], jpeg_folder(lambda r: (r / "test" / "cat").rename(r / "test" / "kitten")), r"class folder .*/data/test/cat is missing", 2),
    ("jpeg-corrupt", C, [*OUT, "--data_root", "{tmp}/data", *REAL], jpeg_folder(corrupt_jpeg), r"image .*/data/train/dog/0001\.jpg cannot be decoded", 2),
    ("cifar-pickle-truncated", C, [*OUT, "--data_root", "{tmp}/data", *REAL], cifar_pickles(lambda b: truncate(b / "data_batch_3", 100)), r"CIFAR10 at .*/cifar-10-batches-py is malformed \(CIFAR10 batch .*/data_batch_3 is not a readable pickle", 2),
    ("cifar-pickle-runs-code", C, [*OUT, "--data_root", "{tmp}/data", *REAL], cifar_pickles(lambda b: (b / "data_batch_2").write_bytes(pickle.dumps(Evil()))), r"CIFAR10 at .* is malformed \(CIFAR10 batch .*/data_batch_2 is refused: it asks for posix\.system", 2),
    ("cifar-missing", C, [*OUT, "--data_root", "{tmp}/nodata", *REAL], None, r"CIFAR10 not found at .*/nodata: expected .*--data_root", 2),
    ("order-epochs-zero", ORD, [*ORDER, "--epochs", "0"], None, r"argument --epochs: expected a positive integer, got '0'", 2),
    ("order-input-dir-missing", ORD, ORDER, None, r"--input_dir .*/in is not a folder", 2),
    ("order-no-match", ORD, [*ORDER, "--input_fname_args", "dataset", "permuted_mnist"], stats_file({0: [[0.1], [1], [0.2]]}), r"No input files found in .*/in that match \['dataset', 'permuted_mnist'\]", 2),
    ("order-odd-filter", ORD, [*ORDER, "--input_fname_args", "dataset"], stats_file({0: [[0.1], [1], [0.2]]}), r"--input_fname_args takes name value pairs, got an odd number of tokens: dataset", 2),
    ("order-stats-garbage", ORD, ORDER, stats_file(b"\x80garbage"), r"statistics file .*/in/dataset_mnist__seed_1__stats_dict\.pkl is not a readable pickle", 2),
    ("order-stats-runs-code", ORD, ORDER, stats_file(Evil()), r"statistics file .*__stats_dict\.pkl is refused: it asks for posix\.system", 2),
    ("order-stats-wrong-shape", ORD, ORDER, stats_file({0: 5}), r".*/in/dataset_mnist__seed_1__stats_dict\.pkl is not a statistics file \(entries must be", 2),
    ("track-unknown", M, ["--track", "forgetting,dead", *OUT, *SMOKE], None, r"argument --track: unknown tracker 'dead'; the trackers are forgetting,margin,dead_units,weight_rank,effective_rank,plasticity,ece,init_distance", 2),
    ("track-unknown-cifar", C, ["--track", "events", *OUT, *SMOKE], None, r"argument --track: unknown tracker 'events'", 2),
    ("order-tracked-more-presentations", ORD, ORDER, tracked_file(3), r".*/in/runs/r/tracked\.npz counted up to 3 presentations per example, more than --epochs 2; its counts cannot be cut: pass --epochs 3 or more", 2),
    ("order-tracked-garbage", ORD, ORDER, tracked_file(b"not a zip"), r"tracked-values file .*/in/runs/r/tracked\.npz is not a readable \.npz file", 2),
    ("order-output-a-path", ORD, ["--input_dir", "{tmp}/in", "--output_dir", "{tmp}/out", "--output_name", "a/b"], None, r"--output_name 'a/b' must be a file name, not a path", 2),
]


@pytest.fixture
def call(monkeypatch, capsys):
    """Run a script's entry point as ``python <script> argv`` does; return (exit status, stderr)."""

    def run(script: str, argv: list[str]) -> tuple[int, str]:
        monkeypatch.setattr(sys, "argv", [script, *argv])
        previous = signal.getsignal(signal.SIGTERM)
        try:
            with pytest.raises(SystemExit) as exc:
                run_main(MAINS[script], prog=script)
        finally:
            signal.signal(signal.SIGTERM, previous)
        return exc.value.code, capsys.readouterr().err

    return run


@pytest.mark.parametrize("case", TABLE, ids=[c[0] for c in TABLE])
def test_bad_input_table(tmp_path, monkeypatch, call, case):
    _, script, argv, setup, expected, status = case
    monkeypatch.chdir(tmp_path)
    if setup is not None:
        setup(tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    code, err = call(script, [a.replace("{tmp}", str(tmp_path)) for a in argv])
    assert code == status
    assert err.endswith("\n") and err.count("\n") == 1, err  # one line, no traceback
    assert re.match(rf"{re.escape(script)}: error: {expected}", err), err
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before  # nothing written, nothing changed
    assert setup is output_file or not (tmp_path / "out").exists()
    assert not (tmp_path / "PWNED").exists()


def test_readonly_output_folder_is_one_line(tmp_path, monkeypatch, call):
    """A read-only output folder (mocked: root ignores chmod) fails at the first write."""
    from forgetting_common import atomic

    def readonly(*args, dir=None, **kwargs):  # noqa: A002 (mkstemp's own keyword)
        raise OSError(errno.EROFS, "Read-only file system", str(dir))

    monkeypatch.setattr(atomic.tempfile, "mkstemp", readonly)
    code, err = call(M, ["--output_dir", str(tmp_path / "out"), *SMOKE])
    assert code == 2 and err.count("\n") == 1
    assert re.match(r"run_mnist.py: error: .*/out/runs/dataset_mnist\S*: Read-only file system", err), err


def test_full_disk_mid_run_is_one_line_and_leaves_no_torn_file(tmp_path, monkeypatch, call):
    """ENOSPC half-way through writing epoch 1's statistics pickle: one line, and epoch 0's
    files stay whole (the torn temporary file is removed)."""
    from forgetting_common import atomic

    real_mkstemp, real_fdopen, opened = atomic.tempfile.mkstemp, atomic.os.fdopen, []

    def mkstemp(*args, **kwargs):
        fd, name = real_mkstemp(*args, **kwargs)
        opened.append((fd, name))
        return fd, name

    class FullDisk:
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def write(self, data):
            self.handle.write(data[: len(data) // 2])
            self.handle.flush()
            raise OSError(errno.ENOSPC, "No space left on device")  # as a full disk reports it: no file name

    def fdopen(fd, *args, **kwargs):
        handle = real_fdopen(fd, *args, **kwargs)
        stats = [name for _, name in opened if "__stats_dict.pkl" in name]
        if opened and opened[-1][0] == fd and "__stats_dict.pkl" in opened[-1][1] and len(stats) == 2:
            return FullDisk(handle)
        return handle

    monkeypatch.setattr(atomic.tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(atomic.os, "fdopen", fdopen)
    out = tmp_path / "out"
    code, err = call(M, ["--output_dir", str(out), *SMOKE, "--epochs", "3"])
    monkeypatch.undo()
    assert code == 2 and err.count("\n") == 1
    assert re.match(rf"run_mnist.py: error: {re.escape(str(out))}(/\S+)?: No space left on device", err), err
    stats = next(out.glob("*__stats_dict.pkl"))
    from forgetting_common.safeload import load_pickle

    assert len(load_pickle(stats)["test"][1]) == 1  # epoch 0's complete file, not a torn one
    assert not list(out.rglob("*.tmp"))
    assert list(out.rglob("checkpoint.pt"))  # epoch 0's checkpoint: --resume continues


def test_sorting_file_written_by_the_original_loads(tmp_path, run):
    """The original's order script pickled numpy arrays (``{'indices', 'forgetting counts'}``)."""
    (tmp_path / "in").mkdir()
    order = np.random.RandomState(5).permutation(64)
    payload = {"indices": order, "forgetting counts": np.sort(np.random.RandomState(6).randint(0, 5, 64))}
    for protocol in (2, 3):
        (tmp_path / "in" / f"s{protocol}.pkl").write_bytes(pickle.dumps(payload, protocol=protocol))
        res = run(mnist_main, ["--sorting_file", f"s{protocol}", "--input_dir", tmp_path / "in", "--remove_n", 10,
                               "--output_dir", tmp_path / f"o{protocol}", *SMOKE])
        assert sorted(res.train_indx.tolist()) == sorted(set(range(64)) - set(order[:10].tolist()))


@pytest.mark.parametrize("parser,flags", [
    (mnist_parser, ["--dataset", "--lr", "--momentum", "--no_cuda", "--sorting_file", "--keep_lowest_n",
                    "--no_dropout", "--input_dir", "--output_dir", "--resume", "--data_root", "--permutation_seed"]),
    (cifar_parser, ["--model", "--learning_rate", "--data_augmentation", "--cutout", "--n_holes", "--no-cuda",
                    "--remove_subsample", "--noise_percent_labels", "--noise_std_pixels", "--optimizer", "--resume",
                    "--fix_lr_offbyone"]),
    (order_parser, ["--input_dir", "--input_fname_args", "--output_name", "--epochs", "--tie_seed"]),
])
def test_help_lists_original_and_extension_flags(capsys, parser, flags):
    with pytest.raises(SystemExit) as exc:
        parser().parse_args(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert all(flag in text for flag in flags)


def _script(name: str, *argv, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", XDG_CACHE_HOME=str(cwd / "cache"))
    return subprocess.run([sys.executable, str(PACKAGE / name), *map(str, argv)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("script,setup,expected,data", [
    (C, jpeg_folder(empty_class), r"run_cifar.py: error: class folder .*/data/train/cat holds no images",
     ["test", "train"]),
    (M, mnist_raw(lambda raw: truncate(raw / "t10k-labels-idx1-ubyte", 12)),
     r"run_mnist.py: error: .*/data/MNIST/raw/t10k-labels-idx1-ubyte is truncated: 12 bytes, expected 28", ["MNIST"]),
], ids=["cifar-empty-class", "mnist-truncated-idx"])
def test_bad_data_through_the_scripts(tmp_path, script, setup, expected, data):
    """Issue 12.5 end to end: the real script stops in one line naming the file, exit 2, no download."""
    setup(tmp_path)
    proc = _script(script, "--data_root", tmp_path / "data", "--output_dir", tmp_path / "out", "--epochs", 1,
                   "--device", "cpu", "--quiet", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and re.match(expected, proc.stderr), proc.stderr
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == data  # nothing downloaded


def test_failed_download_leaves_nothing_behind(tmp_path, monkeypatch):
    """Data absent: the original's download is tried; its failure removes what it created."""
    import torchvision

    class Unreachable:
        def __init__(self, root, train=True, download=False):
            if not download:
                raise RuntimeError("Dataset not found. You can use download=True to download it")
            raw = Path(root) / "MNIST" / "raw"
            raw.mkdir(parents=True, exist_ok=True)
            (raw / "train-images-idx3-ubyte.gz.part").write_bytes(b"12")
            raise RuntimeError("host unreachable")

    monkeypatch.setattr(torchvision.datasets, "MNIST", Unreachable)
    root = tmp_path / "deep" / "data"
    with pytest.raises(UserError, match=r"MNIST not found .* \(a download into .*deep/data was tried and failed: host unreachable\)"):
        mnist_main(["--data_root", str(root), "--output_dir", str(tmp_path / "o"), *REAL[:-1]])  # downloads allowed
    assert not (tmp_path / "deep").exists() and not (tmp_path / "o").exists()


def test_present_but_broken_data_is_never_answered_with_a_download(tmp_path, monkeypatch):
    import torchvision

    def no_download(*args, **kwargs):
        raise AssertionError("a download was tried for data that is present")

    monkeypatch.setattr(torchvision.datasets, "MNIST", no_download)
    mnist_raw(lambda raw: truncate(raw / "train-labels-idx1-ubyte", 20))(tmp_path)
    with pytest.raises(UserError, match="is truncated: 20 bytes, expected 48"):
        mnist_main(["--data_root", str(tmp_path / "data"), "--output_dir", str(tmp_path / "o"), *REAL[:-1]])


def test_finished_results_are_not_overwritten(tmp_path):
    argv = ["--dataset", "mnist", "--output_dir", str(tmp_path / "out"), *SMOKE]
    res = mnist_main(argv)
    before = res.stats_path.read_bytes()
    with pytest.raises(UserError, match="already exists"):
        mnist_main(argv)
    assert res.stats_path.read_bytes() == before
    mnist_main([*argv, "--overwrite"])  # explicit replacement works
    order_argv = ["--input_dir", str(tmp_path / "out"), "--output_dir", str(tmp_path / "out"), "--output_name", "s",
                  "--epochs", "1"]
    order_main(order_argv)
    with pytest.raises(UserError, match="already exists"):
        order_main(order_argv)
