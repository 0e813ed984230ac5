"""End to end: a Qwen3 attention layer served from a paged KV cache through rotate_store_kv
(norm, rotation and cache write fused) and a paged attention written here in torch, against
transformers' own Qwen3 attention with its ordinary cache: a prefill of several tokens, then
decode steps one token at a time."""

from __future__ import annotations

import pytest
import torch

import yarn_ext

transformers = pytest.importorskip("transformers")
from transformers.models.qwen3 import modeling_qwen3  # noqa: E402

BLOCK_SIZE = 4
NUM_BLOCKS = 16


def tiny_config(dtype: torch.dtype) -> object:
    config = transformers.Qwen3Config(
        hidden_size=128,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=64,
        max_position_embeddings=128,
        rms_norm_eps=1e-6,
        rope_parameters={
            "rope_type": "yarn",
            "rope_theta": 1e6,
            "factor": 4.0,
            "original_max_position_embeddings": 32,
        },
        dtype=dtype,
    )
    config._attn_implementation = "sdpa"
    return config


def paged_attention(q, k_cache, v_cache, slots, positions, key_positions, scale, kv_scales):
    """softmax(q k^T * scale) v over the keys stored at `slots` (at `key_positions`), causal
    by position, GQA by repeating the kv heads; q [T, Hq, D]. Dequantizes a float8 cache."""
    keys = k_cache.reshape(-1, *k_cache.shape[2:])[slots].float()
    values = v_cache.reshape(-1, *v_cache.shape[2:])[slots].float()
    if kv_scales is not None:
        keys, values = keys * kv_scales[0], values * kv_scales[1]
    groups = q.shape[1] // keys.shape[1]
    keys = keys.repeat_interleave(groups, dim=1)
    values = values.repeat_interleave(groups, dim=1)
    scores = torch.einsum("thd,shd->hts", q.float(), keys) * scale
    allowed = key_positions[None, :] <= positions[:, None]
    scores = scores.masked_fill(~allowed[None], float("-inf"))
    return torch.einsum("hts,shd->thd", scores.softmax(-1), values)


def run_both(dtype: torch.dtype, cache_dtype: torch.dtype, prefill: int = 7, decode: int = 4):
    """(transformers' outputs, yarn_ext's) for a prefill and `decode` single-token steps."""
    torch.manual_seed(0)
    config = tiny_config(dtype)
    attention = modeling_qwen3.Qwen3Attention(config, layer_idx=0).to(dtype).eval()
    with torch.no_grad():
        for norm in (attention.q_norm, attention.k_norm):
            norm.weight.copy_(torch.rand(norm.weight.shape) + 0.5)
    rotary = modeling_qwen3.Qwen3RotaryEmbedding(config)
    rope = yarn_ext.YarnEmbedding.from_hf_config(config)
    cache = transformers.DynamicCache(config=config)
    hq, hkv, d = config.num_attention_heads, config.num_key_value_heads, config.head_dim
    k_cache = torch.zeros(NUM_BLOCKS, BLOCK_SIZE, hkv, d).to(cache_dtype)
    v_cache = torch.zeros_like(k_cache)
    scales = None
    if cache_dtype == torch.float8_e4m3fn:
        scales = (torch.tensor(0.02), torch.tensor(0.01))
    # the sequence's blocks, in a scattered order, as a block table would give them
    block_table = torch.randperm(NUM_BLOCKS)[: (prefill + decode + BLOCK_SIZE - 1) // BLOCK_SIZE]
    total = prefill + decode
    hidden = torch.randn(1, total, config.hidden_size).to(dtype)
    theirs, ours = [], []
    steps = [(0, prefill)] + [(prefill + i, prefill + i + 1) for i in range(decode)]
    with torch.no_grad():
        for start, end in steps:
            x = hidden[:, start:end]
            position_ids = torch.arange(start, end)[None]
            cos, sin = rotary(x, position_ids)
            out, _ = attention(x, (cos, sin), None, cache=cache)
            theirs.append(out[0])

            positions = torch.arange(start, end)
            slots = block_table[positions // BLOCK_SIZE] * BLOCK_SIZE + positions % BLOCK_SIZE
            tokens = end - start
            q = attention.q_proj(x[0]).view(tokens, hq, d)
            k = attention.k_proj(x[0]).view(tokens, hkv, d)
            v = attention.v_proj(x[0]).view(tokens, hkv, d)
            rope.rotate_store_kv_(
                q,
                k,
                v,
                positions,
                k_cache,
                v_cache,
                slots,
                q_norm_weight=attention.q_norm.weight,
                k_norm_weight=attention.k_norm.weight,
                eps=config.rms_norm_eps,
                k_scale=None if scales is None else scales[0],
                v_scale=None if scales is None else scales[1],
            )
            key_positions = torch.arange(0, end)
            key_slots = block_table[key_positions // BLOCK_SIZE] * BLOCK_SIZE + (
                key_positions % BLOCK_SIZE
            )
            attended = paged_attention(
                q, k_cache, v_cache, key_slots, positions, key_positions, attention.scaling, scales
            )
            ours.append(attention.o_proj(attended.reshape(tokens, hq * d).to(dtype)))
    return torch.cat(theirs), torch.cat(ours)


@pytest.mark.parametrize(
    "dtype, cache_dtype, tolerance",
    [
        (torch.float32, torch.float32, 1e-5),
        (torch.bfloat16, torch.bfloat16, 1.5e-2),
        # float8 keys and values: e4m3 keeps 3 mantissa bits (relative rounding up to 1/16)
        (torch.bfloat16, torch.float8_e4m3fn, 8e-2),
    ],
    ids=["float32", "bfloat16", "bfloat16-fp8-cache"],
)
def test_paged_qwen3_attention_matches_transformers(dtype, cache_dtype, tolerance) -> None:
    theirs, ours = run_both(dtype, cache_dtype)
    scale = theirs.float().abs().max().item()
    error = (theirs.float() - ours.float()).abs().max().item()
    assert error <= tolerance * scale, f"max |error| {error:.3e} > {tolerance * scale:.3e}"
