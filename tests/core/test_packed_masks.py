import pytest
import torch

from lightning_compress.core.packed_masks import PackedMasks


def test_round_trip_at_one_bit_per_element() -> None:
    g = torch.Generator().manual_seed(0)
    masks = {"a": torch.rand(37, 5, generator=g) > 0.5, "b": torch.rand(8, generator=g) > 0.2, "c": torch.ones(0) > 0}
    packed = PackedMasks(masks)
    assert list(packed) == ["a", "b", "c"] and len(packed) == 3
    for name, mask in masks.items():
        got = packed[name]
        assert got.dtype == torch.bool and torch.equal(got, mask)
        assert packed.shape(name) == mask.shape and packed.num_kept(name) == int(mask.sum())
    assert packed.nbytes == (185 + 7) // 8 + 1 + 0  # ceil(numel / 8) per mask
    packed["a"][0, 0] = not bool(masks["a"][0, 0])  # reading unpacks a copy: the stored mask does not change
    assert torch.equal(packed["a"], masks["a"])


def test_reordered_and_deleted_without_unpacking() -> None:
    packed = PackedMasks({"x": torch.tensor([True, False]), "y": torch.tensor([False])})
    assert list(packed.reordered(["y", "z", "x"])) == ["y", "x"]
    del packed["x"]
    assert list(packed) == ["y"] and "x" not in packed
    assert "PackedMasks({'y': (1,)}, 1 bytes)" == repr(packed)


@pytest.mark.parametrize("bad", [torch.ones(3), [True, False]])
def test_refuses_a_value_that_is_not_a_bool_tensor(bad) -> None:
    with pytest.raises(TypeError, match=r"mask 'w' must be a bool tensor, got"):
        PackedMasks()["w"] = bad
