"""The bad-input table (README "Bad input"): input → the one error line → exit status.

Each case runs the script's ``main`` through ``forgetting_common.errors.run_main`` as the script
does, in-process (fast), and checks that stderr holds exactly one ``<prog>: error:`` line, no
traceback, and the exit status.
"""

from __future__ import annotations

import errno
import importlib
import json
import pathlib
import signal

import pytest
from forgetting_common.errors import run_main

PROGS = {"run": "main.py", "retrain": "retrain.py", "two_models": "two_models.py", "gif": "generate_gif.py"}


@pytest.fixture(autouse=True)
def keep_sigterm_handler():
    before = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, before)


def run_script(module: str, argv: list[str], capsys) -> tuple[int, str, str]:
    """(exit status, the error line, all of stderr)."""
    mod = importlib.import_module(f"wpl_enas.{module}")
    prog = PROGS[module]
    with pytest.raises(SystemExit) as exc:
        run_main(lambda: mod.main(argv), prog=prog)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith(f"{prog}: error:")]
    assert len(errors) == 1, err
    assert "Traceback" not in err
    return exc.value.code, errors[0], err


TINY = ["--num_gpu=0", "--quiet", "--comment=bad"]

TABLE = [
    # script, arguments, the error line starts with (after "<prog>: error: "), exit status
    ("run", ["--shared_lr=-1"], "argument --shared_lr: expected a finite number greater than zero, got '-1'", 2),
    ("run", ["--shared_lr=0"], "argument --shared_lr: expected a finite number greater than zero, got '0'", 2),
    ("run", ["--controller_lr=nan"], "argument --controller_lr: expected a finite number greater than zero", 2),
    ("run", ["--shared_l2_reg=-1e-7"], "argument --shared_l2_reg: expected a finite number of zero or more", 2),
    ("run", ["--shared_grad_clip=-0.25"], "argument --shared_grad_clip: expected a finite number of zero or more", 2),
    ("run", ["--alpha_fisher=-60"], "argument --alpha_fisher: expected a finite number of zero or more", 2),
    ("run", ["--lambda_fisher=1.5"], "argument --lambda_fisher: expected a number in [0, 1], got '1.5'", 2),
    ("run", ["--ema_baseline_decay=-0.1"], "argument --ema_baseline_decay: expected a number in [0, 1]", 2),
    ("run", ["--softmax_temperature=0"], "argument --softmax_temperature: expected a finite number greater than", 2),
    ("run", ["--shared_decay=-0.96"], "argument --shared_decay: expected a finite number greater than zero", 2),
    ("run", ["--alpha_decay=inf"], "argument --alpha_decay: expected a finite number, got 'inf'", 2),
    ("run", ["--shared_dropout=1.5"], "--shared_dropout must be in [0, 1), got 1.5", 2),
    ("run", ["--random_seed=-1"], "--random_seed must be in [0, 2**32), got -1", 2),
    ("run", ["--batch_size=0"], "--batch_size must be positive, got 0", 2),
    ("run", ["--max_epoch=-1"], "--max_epoch and --shared_max_step must not be negative", 2),
    ("run", ["--max_epoch=ten"], "argument --max_epoch: invalid int value: 'ten'", 2),
    ("run", ["--network_type=lstm"], "argument --network_type: invalid choice: 'lstm'", 2),
    ("run", ["--mode=search"], "argument --mode: invalid choice: 'search'", 2),
    ("run", ["--shared_rnn_activations=['tanh', 'gelu']"], "--shared_rnn_activations must be a list drawn from", 2),
    ("run", ["--num_gpu=2"], "--num_gpu=2: only 0 (CPU) or 1 GPU is supported", 2),
    ("run", ["--dataset=nope"], "dataset 'nope' not found", 2),
    ("run", ["--load_path=missing"], "--load_path=missing: run folder logs/ptb_missing does not exist", 2),
    ("run", ["--mode=derive"], "--mode=derive needs --load_path=<run folder>", 2),
    ("retrain", ["--dag=missing.json"], "missing.json not found", 2),
    ("retrain", ["--dag=notjson.json"], "notjson.json is not a best_dag.json written by main.py", 2),
    ("retrain", ["--retrain_epochs=0"], "argument --retrain_epochs: expected a positive integer, got '0'", 2),
    ("retrain", ["--shared_lr=-1"], "argument --shared_lr: expected a finite number greater than zero", 2),
    ("two_models", ["--lr=-1"], "argument --lr: expected a finite number greater than zero, got '-1'", 2),
    ("two_models", ["--seeds=a,b"], "--seeds must be a comma list of integers, got 'a,b'", 2),
    ("two_models", ["--arms=plain,ewc"], "--arms: unknown arm 'ewc'", 2),
    ("two_models", ["--dataset=cifar"], "argument --dataset: invalid choice: 'cifar'", 2),
    ("gif", ["--model_name=nothing_here"], "run folder logs/nothing_here not found", 2),
    ("gif", ["--model_name=x", "--max_frame=0"], "--max_frame must be positive, got 0", 2),
]


@pytest.mark.parametrize(("module", "argv", "first", "code"), TABLE, ids=[" ".join(c[1]) for c in TABLE])
def test_bad_input_table(workdir, capsys, module, argv, first, code):
    (workdir / "notjson.json").write_text("this is not JSON")
    extra = TINY if module in ("run", "retrain") else []
    status, line, _ = run_script(module, extra + argv, capsys)
    assert status == code
    assert line.startswith(f"{PROGS[module]}: error: {first}"), line
    assert not (workdir / "logs" / "ptb_bad").exists()


def test_read_only_output_folder(workdir, rnn_tiny, capsys, monkeypatch):
    real_mkdir = pathlib.Path.mkdir

    def mkdir(self, *args, **kwargs):
        if str(self).startswith("logs"):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "mkdir", mkdir)
    status, line, _ = run_script("run", rnn_tiny, capsys)
    assert status == 2 and line == "main.py: error: logs/ptb_2018-02-15_11-20-02: Read-only file system"


def test_output_folder_under_proc(workdir, rnn_tiny, capsys):
    status, line, _ = run_script("run", rnn_tiny + ["--log_dir=/proc/wpl_logs"], capsys)
    assert status == 2 and line.startswith("main.py: error: /proc/wpl_logs")


def test_full_disk_leaves_no_half_written_checkpoint(workdir, rnn_tiny, capsys, monkeypatch):
    import forgetting_common.atomic as atomic

    real = atomic.atomic_write_bytes

    def full(path, data):
        if str(path).endswith("checkpoint.pth"):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, data)

    monkeypatch.setattr(atomic, "atomic_write_bytes", full)
    status, line, _ = run_script("run", rnn_tiny, capsys)
    run = workdir / "logs" / "ptb_2018-02-15_11-20-02"
    assert status == 2 and line == f"main.py: error: {run.relative_to(workdir)}/checkpoint.pth: No space left on device"
    assert not (run / "checkpoint.pth").exists() and not list(run.glob(".*.tmp"))


def test_corrupt_and_malicious_resume_checkpoints(workdir, rnn_tiny, capsys):
    run = workdir / "logs" / "ptb_2018-02-15_11-20-02"
    run.mkdir(parents=True)
    (run / "params.json").write_text("{}")
    (run / "checkpoint.pth").write_bytes(b"\x00garbage")
    status, line, _ = run_script("run", rnn_tiny + ["--resume=True"], capsys)
    assert status == 2 and "resume checkpoint" in line and "checkpoint.pth" in line

    class Evil:
        def __reduce__(self):
            return (pathlib.Path.write_text, (workdir / "pwned", "code ran"))

    import torch

    torch.save({"format": 1, "epoch": 0, "x": Evil()}, run / "checkpoint.pth")
    status, line, _ = run_script("run", rnn_tiny + ["--resume=True"], capsys)
    assert status == 2 and "is refused" in line and not (workdir / "pwned").exists()


def test_finished_run_refused_then_nothing_left_with_resume(workdir, rnn_tiny, capsys):
    from wpl_enas.run import main

    run = workdir / "logs" / "ptb_2018-02-15_11-20-02"
    main(rnn_tiny + ["--max_epoch=1"])
    rows = (run / "metrics.jsonl").read_text()
    status, line, _ = run_script("run", rnn_tiny + ["--max_epoch=1"], capsys)
    assert status == 2 and "already holds a run; pass --resume=True" in line
    out = main(rnn_tiny + ["--max_epoch=1", "--resume=True"])
    assert out["trainer"].start_epoch == 1 and (run / "metrics.jsonl").read_text() == rows


def test_resume_without_checkpoint_restarts_cleanly(workdir, rnn_tiny):
    from forgetting_common.runlog import read_metrics
    from wpl_enas.run import main

    run = workdir / "logs" / "ptb_2018-02-15_11-20-02"
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text(json.dumps({"step": 99, "time": 1.0, "stale": 1}) + "\n")
    (run / "forgetting.jsonl").write_text('{"epoch": 7}\n')
    main(rnn_tiny + ["--max_epoch=2", "--resume=True"])
    assert all("stale" not in r for r in read_metrics(run))
    assert [json.loads(x)["epoch"] for x in (run / "forgetting.jsonl").read_text().splitlines()] == [1]


def test_corrupt_image_and_empty_class_folder(workdir, cnn_tiny, capsys):
    from PIL import Image

    base = workdir / "imgs" / "tiny"
    for split in ("train", "valid", "test"):
        for cls in ("a", "b"):
            (base / split / cls).mkdir(parents=True)
            Image.new("RGB", (8, 8), (10, 20, 30)).save(base / split / cls / "ok.png")
    (base / "train" / "b" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    argv = ["--dataset=tiny", "--data_dir=imgs", "--network_type=micro_cnn"] + cnn_tiny
    status, line, _ = run_script("run", argv, capsys)
    assert status == 2 and "cannot read image" in line and "broken.jpg" in line
    (base / "train" / "b" / "broken.jpg").unlink()
    (base / "train" / "c").mkdir()
    status, line, _ = run_script("run", argv, capsys)
    assert status == 2 and line.startswith("main.py: error: class folder") and "holds no images" in line


@pytest.mark.parametrize("module", list(PROGS))
def test_help_lists_original_and_new_flags(module, capsys):
    mod = importlib.import_module(f"wpl_enas.{module}")
    with pytest.raises(SystemExit) as exc:
        mod.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    expected = {"run": ["--shared_lr", "--alpha_decay_after", "--resume", "--device", "--quiet"],
                "retrain": ["--shared_lr", "--retrain_epochs", "--resume", "--overwrite"],
                "two_models": ["--lr", "--resume", "--overwrite", "--quiet"],
                "gif": ["--model_name", "--max_frame", "--log_dir"]}[module]
    assert all(flag in out for flag in expected), out


def test_gif_corrupt_drawing(workdir, capsys):
    (workdir / "logs" / "r" / "networks").mkdir(parents=True)
    (workdir / "logs" / "r" / "networks" / "000-000001-1.0.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    status, line, _ = run_script("gif", ["--model_name=r", "--output=o.gif"], capsys)
    assert status == 2 and line.startswith("generate_gif.py: error: cannot read drawing") and not (workdir / "o.gif").exists()
