import pytest
import torch
from forgetting_common import masks as M
from torch import nn


def test_prune_count_is_the_originals_truncated_float_product():
    # The originals compute int(n * (1 - keep)) in floating point; 1 - 0.9 = 0.09999999999999998.
    assert M.prune_count(10, 0.9) == 0
    assert M.prune_count(235_200, 0.9) == 23_519  # LeNet fc1 at keep 0.9 (not 23,520)
    assert M.prune_count(100, 0.55) == 44  # 100 * 0.44999999999999996
    assert M.prune_count(5, 0.8) == 0  # 5 * 0.19999999999999996
    assert M.forget_count(1000, (1 - 0.3) / 2) == 350
    assert M.prune_count(235_200, 0.3) == 164_640  # the IMP-style seed's fc1
    assert M.prune_count(1000, 0.65) == 350
    assert M.prune_count(7, 0.0) == 7
    assert M.prune_count(7, 1.0) == 0
    with pytest.raises(ValueError):
        M.prune_count(7, 1.5)


@pytest.mark.parametrize("keep", [0.0, 0.1, 0.3, 0.5, 0.9, 1.0])
def test_magnitude_mask_keeps_exact_count_of_largest(keep):
    ref = torch.randn(37, 11)
    mask = M.magnitude_mask(ref, keep)
    forgotten = M.prune_count(ref.numel(), keep)
    assert int((~mask).sum()) == forgotten
    if 0 < forgotten < ref.numel():
        assert ref.abs()[mask].min() >= ref.abs()[~mask].max()


def test_magnitude_mask_ties_break_by_position():
    ref = torch.tensor([1.0, 1.0, 1.0, 1.0, 5.0])
    mask = M.magnitude_mask(ref, 0.6)  # forget floor(5 * 0.4) = 2 of the tied ones
    assert mask.tolist() == [False, False, True, True, True]


def test_magnitude_mask_matches_a_stable_sort_with_many_ties():
    gen = torch.Generator().manual_seed(0)
    ref = torch.randint(-3, 4, (500,), generator=gen).float()  # seven distinct values, many ties
    for keep in (0.1, 0.37, 0.5, 0.93):
        forget = M.prune_count(ref.numel(), keep)
        expected = torch.ones(500, dtype=torch.bool)
        expected[torch.sort(ref.abs(), stable=True).indices[:forget]] = False
        assert torch.equal(M.magnitude_mask(ref, keep), expected)


def test_random_mask_is_reproducible_and_near_rate():
    gen_a = torch.Generator().manual_seed(3)
    gen_b = torch.Generator().manual_seed(3)
    like = torch.empty(200, 200)
    a = M.random_mask(like, 0.3, gen_a)
    b = M.random_mask(like, 0.3, gen_b)
    assert torch.equal(a, b)
    assert abs(a.float().mean().item() - 0.3) < 0.01
    assert M.random_mask(like, 0.0).sum() == 0
    assert M.random_mask(like, 1.0).all()


def test_exact_random_mask_count():
    mask = M.exact_random_mask(torch.empty(13, 7), 0.25, torch.Generator().manual_seed(0))
    assert int((~mask).sum()) == M.prune_count(91, 0.25)


def test_global_mask_ranks_across_tensors():
    refs = {"a": torch.tensor([0.1, 0.2, 5.0]), "b": torch.tensor([[3.0, 0.05], [4.0, 6.0]])}
    masks = M.global_magnitude_mask(refs, keep=0.5)  # forget floor(7 * 0.5) = 3 smallest
    assert masks["a"].tolist() == [False, False, True]
    assert masks["b"].tolist() == [[True, False], [True, True]]
    assert M.kept_fraction(masks) == pytest.approx(4 / 7)


def test_build_masks_per_layer_rule():
    refs = {"fc1.weight": torch.randn(10, 10), "fc3.weight": torch.randn(10, 10)}
    masks = M.build_masks(refs, lambda name: 0.3 if "fc1" in name else 0.65, kind="magnitude")
    assert int(masks["fc1.weight"].sum()) == 30
    assert int(masks["fc3.weight"].sum()) == 65
    with pytest.raises(ValueError):
        M.build_masks(refs, 0.5, kind="nonsense")


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(6, 5)
        self.block = nn.Sequential(nn.Linear(5, 4), nn.ReLU())
        self.fc2 = nn.Linear(4, 3)


def test_select_and_parameters_from():
    net = Net()
    assert M.parameters_from(net, "block") == ["block.0.weight", "block.0.bias", "fc2.weight", "fc2.bias"]
    assert M.parameters_from(net, "fc2.weight") == ["fc2.weight", "fc2.bias"]
    assert M.parameters_from(net, "0.bias", match="contains") == ["block.0.bias", "fc2.weight", "fc2.bias"]
    with pytest.raises(KeyError, match="top-level names"):
        M.parameters_from(net, "layer4")
    names = [n for n, _ in M.select_parameters(net, exclude_substrings=("bias",))]
    assert names == ["fc1.weight", "block.0.weight", "fc2.weight"]


def test_apply_reinit_keeps_masked_entries_and_redraws_the_rest():
    torch.manual_seed(0)
    net = Net()
    before = M.snapshot(net)
    mask = M.magnitude_mask(net.fc1.weight, 0.5)
    M.apply_reinit(net, {"fc1.weight": mask}, generator=torch.Generator().manual_seed(1))
    after = net.fc1.weight.detach()
    assert torch.equal(after[mask], before["fc1.weight"][mask])
    assert not torch.equal(after[~mask], before["fc1.weight"][~mask])
    assert torch.equal(net.fc1.bias, before["fc1.bias"])  # unmasked="keep"
    assert torch.equal(net.fc2.weight, before["fc2.weight"])  # other modules untouched


def test_apply_reinit_with_generator_is_reproducible_and_leaves_global_rng():
    results = []
    for _ in range(2):
        torch.manual_seed(0)
        net = Net()
        state = torch.get_rng_state()
        M.apply_reinit(net, M.full_masks({"fc2.weight": net.fc2.weight}, False),
                       generator=torch.Generator().manual_seed(5), unmasked="reinit")
        assert torch.equal(torch.get_rng_state(), state)
        results.append(M.snapshot(net))
    assert all(torch.equal(results[0][k], results[1][k]) for k in results[0])


def test_apply_reinit_unmasked_reinit_redraws_biases_and_explicit_modules():
    torch.manual_seed(0)
    net = Net()
    before = M.snapshot(net)
    keep_all = M.full_masks({"fc1.weight": net.fc1.weight}, True)
    M.apply_reinit(net, keep_all, unmasked="reinit")
    assert torch.equal(net.fc1.weight, before["fc1.weight"])
    assert not torch.equal(net.fc1.bias, before["fc1.bias"])
    # An explicit container is re-drawn whole (its children's reset_parameters).
    M.apply_reinit(net, {}, modules=[("block", net.block)], unmasked="reinit")
    assert not torch.equal(net.block[0].weight, before["block.0.weight"])


def test_zero_and_rewind():
    torch.manual_seed(0)
    net = Net()
    init = M.snapshot(net)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    mask = M.magnitude_mask(net.fc1.weight, 0.5)
    M.rewind(net, {"fc1.weight": init["fc1.weight"]}, {"fc1.weight": mask})
    assert torch.equal(net.fc1.weight[~mask], init["fc1.weight"][~mask])
    assert torch.equal(net.fc1.weight[mask], init["fc1.weight"][mask] + 1.0)
    M.apply_zero(net, {"fc1.weight": mask})
    assert (net.fc1.weight[~mask] == 0).all()
    M.forget(net, {}, "rewind", stored=init)
    M.rewind(net, init)
    assert all(torch.equal(p, init[n]) for n, p in net.named_parameters())
    with pytest.raises(ValueError):
        M.forget(net, {}, "melt")
