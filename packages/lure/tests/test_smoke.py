"""Smoke tests of the real entry points at tiny size (spec section 14), with their assertions."""

from __future__ import annotations

import json

import pytest
import torch
from lure.models import CIFAR100_MEAN

#: Extras of every synthetic smoke run (spec section 14), plus a small image size for speed.
SMOKE = ["--data_source", "synthetic", "--test_limit", "32", "--device", "cpu", "--quiet"]

SEED1 = ["--data", "D", "--run", "smoke", "--dataset", "cifar10", "--arch", "resnet18", "--seed", "10",
         "--epochs", "2", "--decreasing_lr", "1", "--batch_size", "16", "--weight_decay", "1e-4",
         "--meta_batch_size", "40", "--meta_batch_number", "3", "--snip_size", "0.20", "--sparsity_level", "1",
         "-wb", "--gamma", "0.1", "--use_snip"]


def small(tmp_path, *extra: str, arch: str = "resnet20s", states: int = 3, epochs: int = 2) -> list[str]:
    argv = [a for a in SEED1]
    argv[argv.index("resnet18")] = arch
    argv[argv.index("--meta_batch_number") + 1] = str(states)
    argv[argv.index("--epochs") + 1] = str(epochs)
    return [*argv, "--save_dir", str(tmp_path / "S"), *SMOKE, "--image_size", "8", "--save_start_weights", *extra]


def test_seed_command_1(runner, tmp_path, load):
    save, logs = tmp_path / "S", tmp_path / "L"
    argv = [*SEED1, "--log-dir", logs, "--save_dir", save, *SMOKE, "--image_size", "4", "--save_start_weights"]
    results, out, caught = runner.main(argv)
    assert any("wandb is not installed" in w for w in caught)  # -wb without wandb: offline log only
    for name in ["randinit.pth.tar", *(f"{k}checkpoint.pth.tar" for k in (1, 2, 3)),
                 *(f"{k}model_SA_best.pth.tar" for k in (1, 2, 3)), "snip_mask_1.pth", "snip_mask_2.pth",
                 "results.json"]:
        assert (save / name).is_file(), name
    assert (logs / "smoke" / "metrics.jsonl").is_file() and (logs / "smoke" / "config.json").is_file()
    assert "CER = " in out and "Final Test Accuracy:" in out
    states = load(save / "results.json")["states"]
    assert [s["train_size"] for s in states] == [36, 72, 108]
    assert [s["val_size"] for s in states] == [4, 8, 12]
    assert all(s["val_first"] == 45000 and s["train_first"] == 0 for s in states)
    for s in states:
        assert s["lrs"] == pytest.approx([0.1, 0.01])  # 0.1 then 0.01 in each state, reset to 0.1
    assert results["cer_sum"] == sum(s["cer"] for s in states)
    for k in (2, 3):
        mask = load(save / f"snip_mask_{k - 1}.pth")
        before = load(save / f"{k - 1}model_SA_best.pth.tar")["state_dict"]
        after = load(save / f"start_{k}.pth.tar")
        names = [n for n in before if n in mask and not n.endswith(("running_mean", "running_var", "num_batches_tracked", ".mean", ".std"))]
        total = sum(mask[n].numel() for n in names)
        zeros = sum(int((mask[n] == 0).sum()) for n in names)
        assert zeros / total >= 0.20
        assert states[k - 1]["mask_fraction"] == pytest.approx(zeros / total)
        for n in names:
            changed = before[n] != after[n]
            if "weight" in n:
                assert torch.equal(changed, mask[n] == 0), n
            else:
                assert not changed.any(), n  # biases (BN beta) never change
        for n in before:
            if "running" in n:
                assert torch.equal(before[n], after[n])


def test_seed_command_2_restricted_imagenet(runner, tmp_path, load):
    argv = ["--data", "D", "--imagenet_path", tmp_path / "P", "--run", "smoke", "--dataset", "restricted_imagenet",
            "--arch", "resnet50", "--seed", "10", "--epochs", "1", "--decreasing_lr", "1", "--batch_size", "16",
            "--weight_decay", "1e-4", "--meta_batch_size", "20", "--meta_batch_number", "2", "--snip_size", "0.20",
            "--save_dir", tmp_path / "S2", "--sparsity_level", "1", "-wb", "--gamma", "0.1", "--use_snip",
            *SMOKE, "--image_size", "4"]
    results, out, _ = runner.main(argv)
    states = results["states"]
    assert [s["val_first"] for s in states] == [80565, 80565]  # full replay: val chunks 1..k
    assert [s["val_size"] for s in states] == [2, 4]
    assert (tmp_path / "S2" / "snip_mask_1.pth").is_file()
    init = load(tmp_path / "S2" / "randinit.pth.tar")
    assert init["fc.weight"].shape == (14, 2048)
    # SNIP on R-ImageNet: floor(M * snip_size) = 4 examples of the state's list
    assert states[1]["snip_examples"] == 4


@pytest.mark.parametrize("flags,train_sizes,val_sizes,train_first", [
    (["-no_replay"], [36, 36, 36], [4, 4, 4], [0, 36, 72]),
    (["-one_replay"], [36, 72, 72], [4, 8, 8], [0, 0, 36]),
    (["-buffer_replay", "--buffer_size_train", "8", "--buffer_size_val", "2"], [36, 44, 52], [4, 6, 8], [0, 36, 72]),
    (["-snip_no_replay"], [36, 72, 108], [4, 8, 12], [0, 0, 0]),
])
def test_replay_modes(runner, tmp_path, flags, train_sizes, val_sizes, train_first):
    results, _, _ = runner.main(small(tmp_path, *flags))
    states = results["states"]
    assert [s["train_size"] for s in states] == train_sizes
    assert [s["val_size"] for s in states] == val_sizes
    assert [s["train_first"] for s in states] == train_first
    if "-snip_no_replay" in flags:
        assert states[1]["snip_examples"] == 8  # floor(40 * 0.2) examples of the new chunk
    else:
        assert states[1]["snip_examples"] == min(128, train_sizes[1])


def _params(sd):
    return {n: v for n, v in sd.items() if "running" not in n and "num_batches" not in n
            and not n.startswith("normalize")}


def test_use_randinit_restarts_from_initial_weights(runner, tmp_path, load):
    argv = [a for a in small(tmp_path, "--use_randinit", states=2, epochs=1) if a != "--use_snip"]
    runner.main(argv)
    init = load(tmp_path / "S" / "randinit.pth.tar")
    start = load(tmp_path / "S" / "start_2.pth.tar")
    assert all(torch.equal(init[n], start[n]) for n in init)
    assert not (tmp_path / "S" / "snip_mask_1.pth").exists()


def test_use_llf_resets_later_layers(runner, tmp_path, load):
    argv = [a for a in small(tmp_path, "--use_llf", states=2, epochs=1) if a != "--use_snip"]
    runner.main(argv)
    before = _params(load(tmp_path / "S" / "1model_SA_best.pth.tar")["state_dict"])
    after = _params(load(tmp_path / "S" / "start_2.pth.tar"))
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    # The original's rule on resnet20s: every conv and fc weight but the nine ResNet-18 names, so the third
    # blocks of layer1 and layer2 reset too.
    assert changed == {"layer1.2.conv1.weight", "layer1.2.conv2.weight", "layer2.2.conv1.weight", "layer2.2.conv2.weight",
                       *(f"layer3.{b}.conv{c}.weight" for b in range(3) for c in (1, 2)), "fc.weight"}


def test_use_fc_is_a_noop_with_warning(runner, tmp_path, load):
    argv = [a for a in small(tmp_path, "--use_fc", states=2, epochs=1) if a != "--use_snip"]
    _, _, caught = runner.main(argv)
    assert any("matched no parameter" in w for w in caught)
    before = load(tmp_path / "S" / "1model_SA_best.pth.tar")["state_dict"]
    after = load(tmp_path / "S" / "start_2.pth.tar")
    assert all(torch.equal(before[n], after[n]) for n in before)


def test_use_shrink_perturb(runner, tmp_path, load):
    argv = [a for a in small(tmp_path, "--use_shrink_perturb", states=2, epochs=1) if a != "--use_snip"]
    runner.main(argv)
    before = _params(load(tmp_path / "S" / "1model_SA_best.pth.tar")["state_dict"])
    after = _params(load(tmp_path / "S" / "start_2.pth.tar"))
    for n in before:
        fan_in = 1 if before[n].dim() == 1 else before[n][0].numel()
        assert (after[n] - 0.3 * before[n]).abs().max() <= 0.001 * fan_in ** -0.5 + 1e-6, n


def test_cifar100(runner, tmp_path, load):
    argv = small(tmp_path, states=2, epochs=1)
    argv[argv.index("cifar10")] = "cifar100"
    runner.main(argv)
    init = load(tmp_path / "S" / "randinit.pth.tar")
    assert init["fc.weight"].shape[0] == 100
    assert torch.allclose(init["normalize.mean"].flatten(), torch.tensor(CIFAR100_MEAN))


def test_alma(runner, tmp_path, load):
    save, logs = tmp_path / "S3", tmp_path / "L"
    argv = ["--data", "D", "--log-dir", logs, "--run", "smoke", "--dataset", "cifar10", "--arch", "resnet20s",
            "--seed", "10", "--epochs", "2", "--decreasing_lr", "1", "--batch_size", "16", "--weight_decay", "1e-4",
            "--meta_batch_size", "40", "--meta_batch_number", "3", "--snip_size", "0.20", "--save_dir", save,
            "--sparsity_level", "1", "-wb", *SMOKE, "--image_size", "8", "--corruption_eval"]
    results, out, _ = runner.main(argv, alma=True)
    assert set(results["corruption_acc"]) == {"gaussian_noise", "shot_noise", "impulse_noise", "contrast",
                                               "brightness"}
    assert all(len(v) == 5 for v in results["corruption_acc"].values()) and "Mean corruption accuracy" in out
    assert all(s["lrs"] == [0.1, 0.1] for s in results["states"])
    assert not list(save.glob("snip_mask_*")) and not (save / "randinit.pth.tar").exists()
    assert "CER = " in out and json.loads((logs / "smoke" / "config.json").read_text())["script"] == "ALMA.py"


def test_resume_from_last_finished_state(runner, tmp_path, monkeypatch, load):
    from lure import train

    full_dir, cut_dir = tmp_path / "full", tmp_path / "cut"
    base = small(tmp_path, states=3, epochs=1)
    base = base[: base.index("--save_dir")] + base[base.index("--save_dir") + 2:]
    full, _, _ = runner.main([*base, "--save_dir", full_dir])

    real = train._run_state

    def interrupted(ctx, k, *a, **kw):
        if k == 3:
            raise KeyboardInterrupt
        return real(ctx, k, *a, **kw)

    monkeypatch.setattr(train, "_run_state", interrupted)
    with pytest.raises(KeyboardInterrupt):
        runner.main([*base, "--save_dir", cut_dir])
    monkeypatch.setattr(train, "_run_state", real)
    assert load(cut_dir / "results.json")["finished"] is False
    resumed, out, _ = runner.main([*base, "--save_dir", cut_dir, "--resume"])
    assert "resuming after state 2" in out
    assert resumed["test_acc_per_state"] == full["test_acc_per_state"]
    assert resumed["cer_counts"] == full["cer_counts"]
    a = load(full_dir / "3model_SA_best.pth.tar")["state_dict"]
    b = load(cut_dir / "3model_SA_best.pth.tar")["state_dict"]
    assert all(torch.equal(a[n], b[n]) for n in a)


def test_print_config_touches_nothing(runner, tmp_path):
    save = tmp_path / "never"
    _, out, _ = runner.main([*SEED1, "--log-dir", tmp_path / "L", "--save_dir", save, "--print_config"])
    config = json.loads(out.strip())
    assert config["meta_batch_size"] == 40 and config["wb"] is True and config["use_snip"] is True
    assert config["log_dir"] == str(tmp_path / "L") and "print_config" not in config
    assert not save.exists() and not (tmp_path / "L").exists()
    _, out, _ = runner.main(["--save_dir", save, "--print_config"], alma=True)
    config = json.loads(out.strip())
    assert config["gamma"] == 1.0 and config["workers"] == 2 and config["run"] == "Anytime_fixed"


def test_warmup_is_linear_per_iteration(runner, tmp_path, monkeypatch):
    from lure import train

    seen: list[float] = []
    real = train.set_lr

    def record(optimizer, lr):
        seen.append(lr)
        real(optimizer, lr)

    monkeypatch.setattr(train, "set_lr", record)
    argv = [a for a in small(tmp_path, "--warmup", "1", "--lr", "0.3", states=1, epochs=2) if a != "--use_snip"]
    runner.main(argv)
    # 36 training ids in batches of 16: 3 iterations per epoch; warm-up over epoch 0 from 0 to --lr,
    # then the schedule (milestone 1, gamma 0.1), then the state-end reset to --state_lr.
    assert seen == pytest.approx([0.1, 0.2, 0.3, 0.03, 0.03, 0.03, 0.1])
