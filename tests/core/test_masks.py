import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.profiler import ProfilerActivity, profile

from lightning_compress.core.masks import ParameterMasks, pack_mask, unpack_mask
from lightning_compress.core.target import compression_target


@settings(max_examples=80, deadline=None)
@given(shape=st.lists(st.integers(0, 11), min_size=0, max_size=3).map(tuple), seed=st.integers(0, 2**31 - 1))
def test_pack_unpack_round_trip(shape, seed) -> None:
    mask = torch.rand(shape, generator=torch.Generator().manual_seed(seed)) > 0.5
    packed = pack_mask(mask)
    assert packed.dtype == torch.uint8 and packed.numel() == (mask.numel() + 7) // 8
    assert np.array_equal(packed.numpy(), np.packbits(mask.numpy().reshape(-1), bitorder="little"))
    assert torch.equal(unpack_mask(packed, shape), mask)


def test_pack_rejects_non_bool_and_unpack_rejects_bad_size() -> None:
    with pytest.raises(TypeError, match="`mask` must be a bool tensor, got torch.float32"):
        pack_mask(torch.ones(3))
    with pytest.raises(ValueError, match=r"`packed` must be a 1-D uint8 tensor of 2 bytes for shape \(9,\)"):
        unpack_mask(torch.zeros(3, dtype=torch.uint8), (9,))


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))


def _masks_for(net: nn.Sequential, p: float = 0.5) -> ParameterMasks:
    masks = ParameterMasks({"0.weight": net[0].weight, "2.weight": net[2].weight})
    g = torch.Generator().manual_seed(1)
    masks.set_masks({n: torch.rand(m.shape, generator=g) > p for n, m in zip(masks.names, masks.masks)})
    return masks


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_apply_to_weights_and_grads_zero_exactly_the_pruned(dtype) -> None:
    net = _net().to(dtype)
    before = [p.detach().clone() for p in (net[0].weight, net[2].weight)]
    masks = _masks_for(net)
    net(torch.randn(4, 6, dtype=dtype)).sum().backward()
    masks.apply_to_grads()
    masks.apply_to_weights()
    for p, m, b in zip(masks.params, masks.masks, before):
        assert torch.equal(p.detach(), torch.where(m, b, torch.zeros((), dtype=dtype)))
        assert (p.grad[~m] == 0).all() and p.grad[m].ne(0).any()
    assert net[0].bias.grad.ne(0).any()  # unmasked parameters untouched


def test_apply_handles_chunks_and_non_contiguous_grads(monkeypatch) -> None:
    import lightning_compress.core.masks as masking

    monkeypatch.setattr(masking, "_CHUNK", 7)  # many chunks, ragged last one
    w = nn.Parameter(torch.randn(10, 9))
    masks = ParameterMasks({"w": w})
    keep = torch.rand(10, 9) > 0.4
    masks.set_masks({"w": keep})
    w.grad = torch.randn(9, 10).t()  # non-contiguous
    masks.apply_to_grads()
    masks.apply_to_weights()
    assert (w.detach()[~keep] == 0).all() and (w.detach()[keep] != 0).all()
    assert (w.grad[~keep] == 0).all()


def test_apply_to_grads_skips_missing_grads() -> None:
    net = _net()
    masks = _masks_for(net)
    masks.apply_to_grads()  # no grads at all: nothing to do, no error
    assert net[0].weight.grad is None


def test_apply_allocates_no_float_copy_of_the_mask() -> None:
    import lightning_compress.core.masks as masking

    w = nn.Parameter(torch.randn(2048, 2048))  # 16 MiB; a float copy of the mask would be 16 MiB more
    masks = ParameterMasks({"w": w}, {"w": torch.rand(2048, 2048) > 0.5})
    assert masking._CHUNK < w.numel()

    def allocated() -> int:
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            masks.apply_to_weights()
        return sum(e.cpu_memory_usage for e in prof.events() if e.cpu_memory_usage > 0)

    assert allocated() <= 4 * masking._CHUNK  # the first call: the fp32 scratch chunk (2 MiB), not a 16 MiB copy
    assert allocated() == 0  # the scratch is kept: later calls (every training step) allocate nothing


def _train_steps(net: nn.Sequential, opt: torch.optim.Optimizer, masks: ParameterMasks, n: int, mask_grads: bool):
    for _ in range(n):
        opt.zero_grad()
        net(torch.randn(4, 6)).pow(2).sum().backward()
        if mask_grads:
            masks.apply_to_grads(opt)
        opt.step()
        for p, m in zip(masks.params, masks.masks):
            assert (p.detach()[~m] == 0).all()


def test_always_rezeroes_after_every_step_and_detach_removes_the_hook() -> None:
    net = _net()
    masks = _masks_for(net)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01)
    masks.attach([opt], always=True)
    _train_steps(net, opt, masks, 3, mask_grads=False)  # gradients not masked: only the re-zeroing keeps the zeros
    masks.detach()
    opt.zero_grad()
    net(torch.randn(4, 6)).pow(2).sum().backward()
    opt.step()
    assert any((p.detach()[~m] != 0).any() for p, m in zip(masks.params, masks.masks))


@pytest.mark.parametrize(
    "make_opt",
    [
        lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.01, nesterov=True),
        lambda ps: torch.optim.AdamW(ps, lr=0.1, weight_decay=0.1),
        lambda ps: torch.optim.Adam(ps, lr=0.1, weight_decay=0.1, amsgrad=True),
        lambda ps: torch.optim.RMSprop(ps, lr=0.01, momentum=0.5, centered=True),
    ],
    ids=["sgd-nesterov-wd", "adamw", "adam-amsgrad-l2", "rmsprop-centered"],
)
def test_elementwise_optimizers_keep_zeros_with_one_rezero_per_mask_change(make_opt) -> None:
    net = _net()
    opt = make_opt(net.parameters())
    masks = ParameterMasks({"0.weight": net[0].weight, "2.weight": net[2].weight})
    masks.attach([opt])
    _train_steps(net, opt, masks, 3, mask_grads=True)  # dense: builds up momentum everywhere
    g = torch.Generator().manual_seed(1)
    masks.set_masks({n: torch.rand(m.shape, generator=g) > 0.5 for n, m in zip(masks.names, masks.masks)})
    masks.apply_to_weights()
    # the first step after the change re-zeroes and clears the state of the pruned positions; the others need nothing
    _train_steps(net, opt, masks, 5, mask_grads=True)
    for p, m in zip(masks.params, masks.masks):
        for value in opt.state[p].values():
            if value.shape == m.shape:
                assert (value[~m] == 0).all()
    # proof that the later steps skip the pass: a value written into a pruned weight survives the next step
    with torch.no_grad():
        net[0].weight[~masks["0.weight"]] = 0.0
        first = (~masks["0.weight"]).nonzero()[0]
        net[0].weight[tuple(first)] = 5.0
    opt.zero_grad()
    net(torch.randn(4, 6)).pow(2).sum().backward()
    masks.apply_to_grads(opt)
    opt.step()
    assert net[0].weight[tuple(first)] != 0
    masks.detach()


@pytest.mark.parametrize("apply_first", [True, False], ids=["weights-applied", "weights-not-applied"])
def test_mask_change_clears_state_before_the_step_without_a_second_weight_pass(apply_first) -> None:
    net = _net()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)  # no decay: the 5.0 below leaves no momentum
    masks = ParameterMasks({"0.weight": net[0].weight, "2.weight": net[2].weight})
    masks.attach([opt])
    _train_steps(net, opt, masks, 2, mask_grads=True)  # dense: momentum everywhere, the attach pass done
    g = torch.Generator().manual_seed(3)
    masks.set_masks({n: torch.rand(m.shape, generator=g) > 0.5 for n, m in zip(masks.names, masks.masks)})
    if apply_first:
        masks.apply_to_weights()
    first = tuple((~masks["0.weight"]).nonzero()[0])
    with torch.no_grad():
        net[0].weight[first] = 5.0  # written after the re-zeroing: only a post-step pass would clear it
    opt.zero_grad()
    net(torch.randn(4, 6)).pow(2).sum().backward()
    masks.apply_to_grads(opt)
    opt.step()
    momentum = opt.state[net[0].weight]["momentum_buffer"]
    assert (momentum[~masks["0.weight"]] == 0).all()  # cleared before (or after) the step
    assert (net[2].weight.detach()[~masks["2.weight"]] == 0).all()
    if apply_first:  # the state cleared before the step, the weights not passed over again after it
        assert net[0].weight[first] != 0
        assert (opt.state[net[2].weight]["momentum_buffer"][~masks["2.weight"]] == 0).all()
    else:  # no re-zeroing by the writer: the post-step hook re-zeroes the weights and clears the state
        assert (net[0].weight.detach()[~masks["0.weight"]] == 0).all()
    masks.detach()


def test_other_optimizers_are_rezeroed_after_every_step() -> None:
    class NoisySGD(torch.optim.SGD):  # moves every weight, whatever its gradient: not element-wise-safe
        @torch.no_grad()
        def step(self, closure=None):
            super().step(closure)
            for group in self.param_groups:
                for p in group["params"]:
                    p.add_(0.01)

    net = _net()
    masks = _masks_for(net)
    opt = NoisySGD(net.parameters(), lr=0.1)
    masks.attach([opt])
    _train_steps(net, opt, masks, 3, mask_grads=True)
    masks.detach()


def test_hooks_touch_only_their_optimizers_parameters() -> None:
    net = _net()
    masks = _masks_for(net)
    opt0 = torch.optim.SGD(net[0].parameters(), lr=0.1)
    opt2 = torch.optim.SGD(net[2].parameters(), lr=0.1)
    masks.attach([opt0, opt2])
    with torch.no_grad():
        net[2].weight.fill_(1.0)  # pretend something revived layer 2's pruned weights
    net(torch.randn(4, 6)).sum().backward()
    opt0.step()
    assert (net[0].weight.detach()[~masks["0.weight"]] == 0).all()
    assert (net[2].weight.detach() == 1.0).all()  # opt0's hook leaves layer 2 alone
    opt2.step()
    assert (net[2].weight.detach()[~masks["2.weight"]] == 0).all()
    masks.detach()


def test_two_masks_on_one_weight_combine_as_and() -> None:
    w = nn.Parameter(torch.randn(8, 8))
    a = ParameterMasks({"w": w}, {"w": torch.rand(8, 8) > 0.5})
    b = ParameterMasks({"w": w}, {"w": torch.rand(8, 8) > 0.5})
    opt = torch.optim.Adam([w], lr=0.1)
    a.attach([opt])
    b.attach([opt])
    for _ in range(3):
        opt.zero_grad()
        (w * torch.randn(8, 8)).sum().backward()
        a.apply_to_grads(opt)
        b.apply_to_grads(opt)
        opt.step()
    both = a["w"] & b["w"]
    assert torch.equal(w.detach() != 0, both)


def test_sparsity_and_state_dict_round_trip() -> None:
    net = _net()
    masks = _masks_for(net)
    pruned = masks.num_pruned()
    assert masks.sparsity() == pytest.approx(sum(pruned.values()) / (30 + 15))
    assert masks.layer_sparsity()["0.weight"] == pytest.approx(pruned["0.weight"] / 30)
    state = masks.state_dict()
    assert state["shapes"] == {"0.weight": [5, 6], "2.weight": [3, 5]}
    assert all(v.dtype == torch.uint8 for v in state["masks"].values())
    fresh = ParameterMasks({"0.weight": net[0].weight, "2.weight": net[2].weight})
    fresh.load_state_dict(state)
    assert all(torch.equal(x, y) for x, y in zip(fresh.masks, masks.masks))


def test_load_state_dict_rejects_other_parameters() -> None:
    net = _net()
    state = _masks_for(net).state_dict()
    only_one = ParameterMasks({"0.weight": net[0].weight})
    with pytest.raises(KeyError, match="saved masks are for"):
        only_one.load_state_dict(state)
    only_one.load_state_dict(state, strict=False)
    assert torch.equal(only_one["0.weight"], unpack_mask(state["masks"]["0.weight"], (5, 6)))


def test_set_masks_validates() -> None:
    masks = _masks_for(_net())
    with pytest.raises(KeyError, match="'nope'"):
        masks.set_masks({"nope": torch.ones(1, dtype=torch.bool)})
    with pytest.raises(ValueError, match=r"mask for '0.weight' must be a bool tensor of shape \(5, 6\)"):
        masks.set_masks({"0.weight": torch.ones(5, 6)})
    with pytest.raises(ValueError, match="`params` must hold at least one parameter"):
        ParameterMasks({})


def test_compression_target() -> None:
    plain = nn.Linear(2, 2)
    assert compression_target(plain) is plain

    class Distill(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.student, self.teacher = nn.Linear(2, 2), nn.Linear(2, 2)

        @property
        def compression_target(self) -> nn.Module:
            return self.student

    d = Distill()
    assert compression_target(d) is d.student
