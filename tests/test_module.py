"""YarnEmbedding against the float64 reference for every option, and Zeta's semantics (including
the three cases where Zeta's own code crashes: finetuned=True, cache growth, seq_len=None)."""

from __future__ import annotations

import math

import pytest
import torch

import yarn_ext
from yarn_ext import YarnEmbedding, reference

from .support import FLOAT_DTYPES, assert_matches_reference, randn

pytestmark = pytest.mark.usefixtures("poison")


def expected_inv_freq(module: YarnEmbedding, scale: float) -> torch.Tensor:
    return reference.yarn_inv_freq(
        module.dim,
        module.base,
        scale,
        module.original_max_position_embeddings,
        module.extrapolation_factor,
        module.beta_fast,
        module.beta_slow,
        module.truncate,
    )


def check_tables(module: YarnEmbedding, scale: float, mscale: float, cached: int) -> None:
    assert module.scale == scale
    assert module.mscale == pytest.approx(mscale, rel=1e-15)
    assert module.max_seq_len_cached == cached
    assert module.inv_freq.dtype == torch.float64
    torch.testing.assert_close(
        module.inv_freq, expected_inv_freq(module, scale), rtol=1e-15, atol=0
    )
    assert module.cos_sin_cache.shape == (cached, module.dim)
    assert module.cos_sin_cache.dtype == torch.float32
    cos, sin = reference.cos_sin(torch.arange(cached), module.inv_freq, module.mscale)
    half = module.dim // 2
    # float32 storage: within one rounding of the float64 value
    bound = 2**-24 * max(mscale, 1.0) * 1.0001
    assert (module.cos_sin_cache[:, :half].double() - cos).abs().max() <= bound
    assert (module.cos_sin_cache[:, half:].double() - sin).abs().max() <= bound


def test_plain_rope_by_default() -> None:
    m = YarnEmbedding(64, max_position_embeddings=300, base=10000)
    check_tables(m, scale=1.0, mscale=1.0, cached=300)


def test_plain_rope_ignores_attn_factor_as_zeta_does() -> None:
    m = YarnEmbedding(64, max_position_embeddings=100, attn_factor=2.0)
    assert m.mscale == 1.0


def test_finetuned_static_yarn_uses_max_over_original() -> None:
    m = YarnEmbedding(
        128,
        max_position_embeddings=4096,
        base=1e6,
        original_max_position_embeddings=1024,
        finetuned=True,
        attn_factor=0.9,
    )
    check_tables(m, scale=4.0, mscale=(0.1 * math.log(4.0) + 1.0) * 0.9, cached=4096)


def test_finetuned_with_scaling_factor() -> None:
    m = YarnEmbedding(
        64,
        max_position_embeddings=512,
        original_max_position_embeddings=256,
        finetuned=True,
        scaling_factor=8.0,
    )
    check_tables(m, scale=8.0, mscale=0.1 * math.log(8.0) + 1.0, cached=512)


def test_attention_factor_overrides_mscale() -> None:
    m = YarnEmbedding(
        64,
        max_position_embeddings=256,
        original_max_position_embeddings=64,
        finetuned=True,
        attention_factor=1.2079441541679836,
    )
    check_tables(m, scale=4.0, mscale=1.2079441541679836, cached=256)
    plain = YarnEmbedding(64, max_position_embeddings=16, attention_factor=0.5)
    assert plain.mscale == 0.5


@pytest.mark.parametrize("truncate", [True, False])
def test_truncate_and_betas(truncate: bool) -> None:
    m = YarnEmbedding(
        64,
        max_position_embeddings=512,
        base=150000,
        original_max_position_embeddings=128,
        finetuned=True,
        beta_fast=16,
        beta_slow=2,
        extrapolation_factor=0.75,
        truncate=truncate,
    )
    check_tables(m, scale=4.0, mscale=0.1 * math.log(4.0) + 1.0, cached=512)


def test_equal_betas_are_allowed() -> None:
    m = YarnEmbedding(
        64,
        max_position_embeddings=64,
        original_max_position_embeddings=16,
        finetuned=True,
        beta_fast=4,
        beta_slow=4,
    )
    check_tables(m, scale=4.0, mscale=0.1 * math.log(4.0) + 1.0, cached=64)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("interleaved", [False, True])
def test_forward_matches_reference(dtype: torch.dtype, interleaved: bool) -> None:
    m = YarnEmbedding(
        64,
        max_position_embeddings=128,
        original_max_position_embeddings=32,
        finetuned=True,
        interleaved=interleaved,
    )
    x = randn(2, 3, 100, 80, dtype=dtype)  # [B, H, S, D], partial rotary (80 > 64)
    out = m(x)
    assert out.shape == x.shape and out.dtype == dtype and out.device == x.device
    want = reference.rotate(x, m.inv_freq, m.mscale, interleaved=interleaved)
    assert_matches_reference(out, want, x, m.mscale)
    assert torch.equal(out[..., 64:], x[..., 64:])


def test_forward_positions_layouts() -> None:
    m = YarnEmbedding(32, max_position_embeddings=64)
    generator = torch.Generator().manual_seed(3)
    cases = [
        ((5, 32), (5,)),
        ((2, 5, 32), (2, 5)),
        ((2, 4, 5, 32), (2, 1, 5)),
        ((2, 5, 4, 32), (2, 5, 1)),
    ]
    for shape, positions_shape in cases:
        x = randn(*shape)
        positions = torch.randint(-10, 200, positions_shape, generator=generator)
        out = m(x, positions=positions)
        want = reference.rotate(x, m.inv_freq, m.mscale, positions)
        assert_matches_reference(out, want, x, m.mscale)
    assert m.max_seq_len_cached == 64  # positions given: nothing grew


def test_rotate_in_place_returns_its_arguments() -> None:
    m = YarnEmbedding(
        128, max_position_embeddings=64, original_max_position_embeddings=16, finetuned=True
    )
    q, k = randn(9, 8, 128), randn(9, 2, 128, seed=1)
    positions = torch.arange(9)[:, None] * 7
    want_q = reference.rotate(q, m.inv_freq, m.mscale, positions)
    want_k = reference.rotate(k, m.inv_freq, m.mscale, positions)
    q_in, k_in = q.clone(), k.clone()
    q_out, k_out = m.rotate_(q, k, positions)
    assert q_out is q and k_out is k
    assert_matches_reference(q, want_q, q_in, m.mscale)
    assert_matches_reference(k, want_k, k_in, m.mscale)
    q_only, none = m.rotate_(q_in.clone(), positions=positions)
    assert none is None and torch.equal(q_only, q)


def test_seq_len_none_defaults_to_the_sequence_length() -> None:
    m = YarnEmbedding(32, max_position_embeddings=16, original_max_position_embeddings=16)
    x = randn(1, 20, 32)
    out = m(x)  # Zeta raises TypeError here
    assert m.max_seq_len_cached == 20
    assert_matches_reference(out, reference.rotate(x, m.inv_freq, m.mscale), x, m.mscale)


def test_dynamic_growth_recomputes_yarn_and_only_grows() -> None:
    m = YarnEmbedding(
        64, max_position_embeddings=32, base=10000, original_max_position_embeddings=16
    )
    check_tables(m, scale=1.0, mscale=1.0, cached=32)
    x = randn(2, 40, 64)
    out = m(x, seq_len=48)  # Zeta raises TypeError here
    check_tables(m, scale=3.0, mscale=0.1 * math.log(3.0) + 1.0, cached=48)
    assert_matches_reference(out, reference.rotate(x, m.inv_freq, m.mscale), x, m.mscale)
    m(randn(2, 10, 64), seq_len=20)  # shorter: nothing changes
    check_tables(m, scale=3.0, mscale=0.1 * math.log(3.0) + 1.0, cached=48)
    q = randn(60, 2, 64)
    m.rotate_(q, positions=torch.arange(60)[:, None])  # positions given: no growth
    assert m.max_seq_len_cached == 48
    m.cos_sin(64)
    check_tables(m, scale=4.0, mscale=0.1 * math.log(4.0) + 1.0, cached=64)


def test_growth_keeps_attention_factor() -> None:
    m = YarnEmbedding(
        32,
        max_position_embeddings=16,
        original_max_position_embeddings=8,
        finetuned=True,
        attention_factor=1.5,
    )
    m(randn(40, 32))
    check_tables(m, scale=5.0, mscale=1.5, cached=40)


@pytest.mark.parametrize("interleaved", [False, True])
def test_cos_sin_has_zetas_layout(interleaved: bool) -> None:
    m = YarnEmbedding(
        16,
        max_position_embeddings=64,
        original_max_position_embeddings=16,
        finetuned=True,
        interleaved=interleaved,
    )
    cos, sin = m.cos_sin(50)
    assert cos.shape == sin.shape == (1, 1, 50, 16) and cos.dtype == torch.float32
    ref_cos, ref_sin = reference.cos_sin(torch.arange(50), m.inv_freq, m.mscale)
    if interleaved:
        ref_cos, ref_sin = ref_cos.repeat_interleave(2, -1), ref_sin.repeat_interleave(2, -1)
    else:  # Zeta: emb = cat(freqs, freqs)
        ref_cos, ref_sin = torch.cat((ref_cos, ref_cos), -1), torch.cat((ref_sin, ref_sin), -1)
    assert (cos[0, 0].double() - ref_cos).abs().max() < 1e-7
    assert (sin[0, 0].double() - ref_sin).abs().max() < 1e-7
    half_cos, _ = m.cos_sin(50, dtype=torch.bfloat16)
    assert half_cos.dtype == torch.bfloat16


def test_cos_sin_with_rotate_half_reproduces_forward() -> None:
    # migrating from Zeta: the (cos, sin) pair with transformers' rotate_half gives forward's result
    m = YarnEmbedding(32, max_position_embeddings=64)
    x = randn(1, 2, 24, 32)
    cos, sin = m.cos_sin(24)
    rotate_half = torch.cat((-x[..., 16:], x[..., :16]), dim=-1)
    zeta_style = x * cos + rotate_half * sin
    torch.testing.assert_close(m(x), zeta_style, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "cast",
    [
        lambda m: m.to(torch.bfloat16),
        lambda m: m.half(),
        lambda m: m.double(),
        lambda m: m.to("cpu", torch.float16),
        lambda m: m.float(),
    ],
)
def test_dtype_casts_keep_table_precision(cast) -> None:
    m = YarnEmbedding(
        128,
        max_position_embeddings=256,
        base=1e6,
        original_max_position_embeddings=64,
        finetuned=True,
    )
    inv_freq, cache = m.inv_freq.clone(), m.cos_sin_cache.clone()
    assert cast(m) is m
    assert m.inv_freq.dtype == torch.float64 and torch.equal(m.inv_freq, inv_freq)
    assert m.cos_sin_cache.dtype == torch.float32 and torch.equal(m.cos_sin_cache, cache)
    x = randn(2, 300, 128, dtype=torch.bfloat16)
    assert_matches_reference(m(x), reference.rotate(x, m.inv_freq, m.mscale), x, m.mscale)


def test_module_composes_with_nn_modules() -> None:
    m = YarnEmbedding(64, device="cpu")
    assert m.inv_freq.device.type == "cpu"
    assert list(m.state_dict()) == []  # the tables are derived, not state
    assert "dim=64" in repr(m)
    meta = YarnEmbedding(64, max_position_embeddings=32).to("meta")
    assert meta.inv_freq.device.type == "meta" and meta.inv_freq.dtype == torch.float64


def test_empty_input_is_a_no_op() -> None:
    m = YarnEmbedding(16, max_position_embeddings=8)
    assert m(torch.empty(2, 0, 16)).shape == (2, 0, 16)
    q = torch.empty(0, 4, 16)
    m.rotate_(q, torch.empty(0, 1, 16), torch.empty(0, 1, dtype=torch.int64))
    assert m.max_seq_len_cached == 8


def test_real_model_configuration_qwen3() -> None:
    m = YarnEmbedding(
        128,
        max_position_embeddings=131072,
        base=1e6,
        original_max_position_embeddings=32768,
        finetuned=True,
    )
    assert m.scale == 4.0 and m.mscale == yarn_ext.get_mscale(4.0)
    positions = torch.tensor([0, 1, 32767, 32768, 100000, 131071, 131072, 400000])
    q = randn(positions.numel(), 4, 128, dtype=torch.bfloat16)
    out = m(q, positions=positions[:, None])
    want = reference.rotate(q, m.inv_freq, m.mscale, positions[:, None])
    assert_matches_reference(out, want, q, m.mscale)


def test_growth_never_lowers_the_scale() -> None:
    # cache shorter than the original context: growing within it stays plain RoPE
    m = YarnEmbedding(32, max_position_embeddings=32, original_max_position_embeddings=2048)
    m(randn(64, 32))
    check_tables(m, scale=1.0, mscale=1.0, cached=64)
    # a static scaling_factor larger than seq_len / original stays in force
    m = YarnEmbedding(
        32,
        max_position_embeddings=512,
        original_max_position_embeddings=256,
        finetuned=True,
        scaling_factor=8.0,
    )
    m.cos_sin(600)
    check_tables(m, scale=8.0, mscale=0.1 * math.log(8.0) + 1.0, cached=600)
    m.cos_sin(4096)  # 4096 / 256 = 16 > 8: dynamic YaRN takes over
    check_tables(m, scale=16.0, mscale=0.1 * math.log(16.0) + 1.0, cached=4096)


def test_rotate_in_place_grows_for_the_longer_of_q_and_k() -> None:
    m = YarnEmbedding(32, max_position_embeddings=8, original_max_position_embeddings=8)
    q, k = randn(1, 2, 4, 32), randn(1, 1, 20, 32, seed=1)
    k_in = k.clone()
    m.rotate_(q, k)
    check_tables(m, scale=2.5, mscale=0.1 * math.log(2.5) + 1.0, cached=20)
    assert_matches_reference(k, reference.rotate(k_in, m.inv_freq, m.mscale), k_in, m.mscale)
