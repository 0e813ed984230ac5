"""The helper functions against Zeta's formulas (yarn_ext.reference, plain Python float64)."""

from __future__ import annotations

import itertools

import pytest
import torch

import yarn_ext
from yarn_ext import reference

DIMS = [2, 8, 64, 96, 128, 256]
BASES = [10000, 500000.0, 1e6, 150000, 1.5]
LENGTHS = [1, 2048, 4096, 32768, 131072]
ROTATIONS = [0.25, 1, 8, 16, 32, 33.5]


@pytest.mark.parametrize(("dim", "base", "length"), list(itertools.product(DIMS, BASES, LENGTHS)))
def test_find_correction_dim_is_bit_identical(dim: int, base: float, length: int) -> None:
    for rotations in ROTATIONS:
        got = yarn_ext.find_correction_dim(rotations, dim, base, length)
        assert got == reference.find_correction_dim(rotations, dim, base, length)


@pytest.mark.parametrize(("dim", "base", "length"), list(itertools.product(DIMS, BASES, LENGTHS)))
def test_find_correction_range_is_bit_identical(dim: int, base: float, length: int) -> None:
    for low_rot, high_rot in [(32, 1), (16, 32), (8, 8), (33.5, 0.25)]:
        got = yarn_ext.find_correction_range(low_rot, high_rot, dim, base, length)
        want = reference.find_correction_range(low_rot, high_rot, dim, base, length)
        assert got == want
        assert all(type(v) is int for v in got)
        got = yarn_ext.find_correction_range(low_rot, high_rot, dim, base, length, truncate=False)
        want = reference.find_correction_range(low_rot, high_rot, dim, base, length, False)
        assert got == tuple(float(v) for v in want)
        assert all(type(v) is float for v in got)


def test_find_correction_range_defaults_are_zetas() -> None:
    assert yarn_ext.find_correction_range(32, 1, 128) == reference.find_correction_range(
        32, 1, 128, 10000, 2048
    )
    assert yarn_ext.find_correction_dim(8, 128) == reference.find_correction_dim(
        8, 128, 10000, 2048
    )


@pytest.mark.parametrize(
    ("low", "high", "dim"),
    [
        (0.2, 0.8, 128),
        (0, 63, 64),
        (20, 46, 64),
        (5, 5, 32),
        (41, 33, 128),
        (-3.5, 7.25, 16),
        (8.0927791, 17.398024, 32),
        (0, 0, 1),
        (3, 9, 0),
    ],
)
def test_linear_ramp_mask_is_identical_in_float32(low: float, high: float, dim: int) -> None:
    got = yarn_ext.linear_ramp_mask(low, high, dim)
    want = reference.linear_ramp_mask(low, high, dim)
    assert got.dtype == torch.float32 and got.shape == (dim,)
    assert torch.equal(got, want)


def test_linear_ramp_mask_device_argument() -> None:
    ramp = yarn_ext.linear_ramp_mask(min=1, max=5, dim=8, device="meta")
    assert ramp.device.type == "meta" and ramp.shape == (8,)


@pytest.mark.parametrize("scale", [0.5, 1.0, 1.0000001, 2.0, 4.0, 8.0, 32.0, 40.0, 1e6])
@pytest.mark.parametrize("mscale", [1.0, 0.707, 1.2])
def test_get_mscale_is_bit_identical(scale: float, mscale: float) -> None:
    assert yarn_ext.get_mscale(scale, mscale) == reference.get_mscale(scale, mscale)
    assert yarn_ext.get_mscale(scale) == reference.get_mscale(scale)
    assert yarn_ext.get_mscale() == 1.0


@pytest.mark.parametrize("scale", [0, -3.0, 1])
def test_get_mscale_is_one_without_extension(scale: float) -> None:
    assert yarn_ext.get_mscale(scale) == reference.get_mscale(scale) == 1.0


def test_integral_floats_are_accepted_where_configs_carry_them() -> None:
    assert yarn_ext.find_correction_dim(8, 256.0, 10000, 2048.0) == reference.find_correction_dim(
        8, 256, 10000, 2048
    )
    rope = yarn_ext.YarnEmbedding(64.0, max_position_embeddings=4096.0)
    assert rope.dim == 64 and rope.max_seq_len_cached == 4096


@pytest.mark.parametrize(
    ("dim", "base", "scale", "original", "betas", "truncate", "extrapolation"),
    [
        (128, 1e6, 4.0, 32768, (32, 1), True, 1.0),  # Qwen3
        (64, 1e4, 40.0, 4096, (32, 1), True, 1.0),  # DeepSeek-V3's rotary part
        (64, 150000, 32.0, 4096, (32, 1), False, 1.0),  # gpt-oss
        (128, 5e5, 8.0, 8192, (32, 1), True, 1.0),  # Olmo 3
        (128, 1e4, 1.0, 2048, (32, 1), True, 1.0),  # plain RoPE
        (256, 1e4, 2.5, 2048, (4, 4), True, 0.5),  # equal betas, partial extrapolation
        (32, 1e4, 0.5, 2048, (32, 1), True, 1.0),  # scale < 1
    ],
)
def test_yarn_inv_freq_matches_float64_reference(
    dim, base, scale, original, betas, truncate, extrapolation
) -> None:
    got = yarn_ext.yarn_inv_freq(
        dim, base, scale, original, extrapolation, *betas, truncate=truncate
    )
    want = reference.yarn_inv_freq(dim, base, scale, original, extrapolation, *betas, truncate)
    assert got.dtype == torch.float64 and got.shape == (dim // 2,)
    # float64 throughout; the C++ pow and torch's may differ in the last bit
    torch.testing.assert_close(got, want, rtol=1e-15, atol=0)


def test_plain_rope_inv_freq_within_two_ulps() -> None:
    got = yarn_ext.yarn_inv_freq(128, 10000, 1.0)
    want = 1.0 / torch.tensor([10000.0 ** (2 * i / 128) for i in range(64)], dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=4.5e-16, atol=0)  # 2 ulps


def test_seed_helper_example_runs_unchanged() -> None:
    # The seed document's helper example, verbatim apart from the import line (and the document's
    # stray line break inside "low, high").
    from yarn_ext import find_correction_dim, find_correction_range, get_mscale, linear_ramp_mask

    # fmt: off
    # Calculate correction dimension
    correction_dim = find_correction_dim(num_rotations=8, dim=256, base=10000, max_position_embeddings=2048)  # noqa: E501

    # Calculate correction range
    low, high = find_correction_range(low_rot=16, high_rot=32, dim=256, base=10000, max_position_embeddings=2048)  # noqa: E501

    # Generate linear ramp mask
    ramp_mask = linear_ramp_mask(min=0.2, max=0.8, dim=128)

    # Calculate mscale
    mscale = get_mscale(scale=2.0)
    # fmt: on

    assert correction_dim == reference.find_correction_dim(8, 256, 10000, 2048)
    assert (low, high) == (41, 33)  # the formula's answer for these arguments (see yarn.md)
    assert torch.equal(ramp_mask, reference.linear_ramp_mask(0.2, 0.8, 128))
    assert mscale == reference.get_mscale(2.0)


def test_seed_module_example_runs_unchanged() -> None:
    import torch

    from yarn_ext import YarnEmbedding

    # Create an instance of YarnEmbedding
    yarn_embedding = YarnEmbedding(dim=256, max_position_embeddings=2048)

    # Apply positional embeddings to an input tensor
    input_tensor = torch.rand(16, 32, 256)  # Example input tensor
    output = yarn_embedding(input_tensor, seq_len=32)

    assert output.shape == input_tensor.shape and output.dtype == input_tensor.dtype
    want = reference.rotate(input_tensor, yarn_embedding.inv_freq, 1.0)
    assert (output.double() - want).abs().max().item() < 1e-5
