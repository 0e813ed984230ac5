"""rotate_store_kv: QK-RMSNorm, rotation and the paged KV-cache write in one pass (CPU).

The oracle is a float64 computation of the whole step written here (norm, rotation by
yarn_ext.reference, cache write, quantization). Without norm weights the fused operator must
give rotate_inplace's bits; the caches sit inside poisoned guard bands that must stay untouched,
and every slot the call does not own must keep its poison."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from yarn_ext import ops, reference

from .support import assert_unchanged_after, randn, tables

HALF = 32  # rotary dim 64
FP8_MAX = 448.0


@dataclass
class Case:
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    positions: torch.Tensor
    slots: torch.Tensor
    k_cache: torch.Tensor
    v_cache: torch.Tensor
    k_store: torch.Tensor  # the cache's storage, guard bands included
    v_store: torch.Tensor
    guard: int


def poison_value(dtype: torch.dtype) -> float:
    return FP8_MAX if dtype == torch.float8_e4m3fn else float("nan")


def make_case(
    dtype: torch.dtype = torch.bfloat16,
    cache_dtype: torch.dtype | None = None,
    tokens: int = 11,
    heads: tuple[int, int] = (4, 2),
    head_size: int = 128,
    v_head_size: int | None = None,
    blocks: int = 6,
    block_size: int = 4,
    padding: int = 2,
    fused: bool = False,
    strided_blocks: bool = False,
    seed: int = 0,
) -> Case:
    """q, k and v (slices of one fused qkv when `fused`), positions inside and past the cache,
    `padding` tokens at slot -1 and distinct random slots for the rest, and poisoned caches in
    guard bands (with a block dimension that skips every other block when `strided_blocks`)."""
    cache_dtype = cache_dtype or dtype
    v_head_size = v_head_size or head_size
    hq, hk = heads
    generator = torch.Generator().manual_seed(seed)
    if fused:
        width = (hq + hk) * head_size + hk * v_head_size
        qkv = randn(tokens, width, dtype=dtype, seed=seed)
        q = qkv[:, : hq * head_size].view(tokens, hq, head_size)
        k = qkv[:, hq * head_size : (hq + hk) * head_size].view(tokens, hk, head_size)
        v = qkv[:, (hq + hk) * head_size :].view(tokens, hk, v_head_size)
    else:
        q = randn(tokens, hq, head_size, dtype=dtype, seed=seed)
        k = randn(tokens, hk, head_size, dtype=dtype, seed=seed + 1)
        v = randn(tokens, hk, v_head_size, dtype=dtype, seed=seed + 2)
    positions = torch.randint(0, 200, (tokens,), generator=generator)  # the cache holds 64
    slots = torch.randperm(blocks * block_size, generator=generator)[:tokens]
    slots[torch.randperm(tokens, generator=generator)[:padding]] = -1
    guard = 64

    def cache(size: int) -> tuple[torch.Tensor, torch.Tensor]:
        step = 2 if strided_blocks else 1
        inner = block_size * hk * size
        store = torch.full((2 * guard + blocks * step * inner,), poison_value(cache_dtype)).to(
            cache_dtype
        )
        view = store[guard : guard + blocks * step * inner].view(
            blocks * step, block_size, hk, size
        )
        return view[::step], store

    k_cache, k_store = cache(head_size)
    v_cache, v_store = cache(v_head_size)
    return Case(q, k, v, positions, slots, k_cache, v_cache, k_store, v_store, guard)


def call_args(case: Case, cache: torch.Tensor, inv_freq: torch.Tensor, mscale: float) -> tuple:
    """The operator's positional arguments for a case."""
    return (
        case.q,
        case.k,
        case.v,
        cache,
        inv_freq,
        mscale,
        case.positions,
        case.k_cache,
        case.v_cache,
        case.slots,
    )


def run(case: Case, cache: torch.Tensor, inv_freq: torch.Tensor, mscale: float, **kwargs) -> None:
    ops.rotate_store_kv(*call_args(case, cache, inv_freq, mscale), **kwargs)


def rms_norm64(
    x: torch.Tensor, weight: torch.Tensor, eps: float, unit_offset: bool
) -> torch.Tensor:
    x = x.double()
    scale = (1 + weight.double()) if unit_offset else weight.double()
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * scale


def expected(
    q: torch.Tensor,
    k: torch.Tensor,
    positions: torch.Tensor,
    inv_freq: torch.Tensor,
    mscale: float,
    weights,
    eps: float,
    unit_offset: bool,
):
    """(q, k) of the whole step in float64 for the inputs q and k: normalized, then rotated."""
    q, k = q.double(), k.double()
    if weights is not None:
        q = rms_norm64(q, weights[0], eps, unit_offset)
        k = rms_norm64(k, weights[1], eps, unit_offset)
    positions = positions[:, None]
    return (
        reference.rotate(q, inv_freq, mscale, positions),
        reference.rotate(k, inv_freq, mscale, positions),
    )


def cache_rows(cache: torch.Tensor, slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(the rows of the tokens with a slot, the token indices)."""
    tokens = (slots >= 0).nonzero().flatten()
    s = slots[tokens]
    return cache[s // cache.shape[1], s % cache.shape[1]], tokens


def assert_only_slots_written(case: Case, cache: torch.Tensor, store: torch.Tensor) -> None:
    """Every element of the cache's storage - guard bands, skipped blocks, rows no token owns -
    still holds its poison, except the rows of the tokens' slots."""
    index = torch.arange(store.numel()).as_strided(
        cache.shape, cache.stride(), cache.storage_offset()
    )
    slots = case.slots[case.slots >= 0]
    owned = index[slots // cache.shape[1], slots % cache.shape[1]].flatten()
    rest = torch.ones(store.numel(), dtype=torch.bool)
    rest[owned] = False
    values = store.float()[rest]
    poison = poison_value(cache.dtype)
    kept = values.isnan() if poison != poison else values == poison
    assert kept.all(), f"{int((~kept).sum())} elements outside the tokens' rows were written"


def assert_close_to(actual: torch.Tensor, expected: torch.Tensor, ulps: float) -> None:
    eps = torch.finfo(actual.dtype).eps
    magnitude = expected.abs().max().item() + 1e-30
    error = (actual.double() - expected).abs().max().item()
    assert error <= ulps * eps * magnitude, (
        f"max |error| {error:.3e} > {ulps * eps * magnitude:.3e}"
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("interleaved", [False, True])
@pytest.mark.parametrize("fused", [False, True])
def test_without_norm_gives_rotate_inplace_bits(dtype, interleaved, fused, poison) -> None:
    cache, inv_freq, mscale = tables(2 * HALF, 64)
    case = make_case(dtype, fused=fused, strided_blocks=fused)
    q, k = case.q.clone(), case.k.clone()
    k_before, v_before = case.k.clone(), case.v.clone()
    ops.rotate_inplace(q, k, cache, inv_freq, mscale, case.positions[:, None], interleaved)
    run(case, cache, inv_freq, mscale, interleaved=interleaved)
    assert torch.equal(case.q, q)
    assert torch.equal(case.k, k_before), "k was written without write_k"
    assert torch.equal(case.v, v_before)
    k_rows, tokens = cache_rows(case.k_cache, case.slots)
    v_rows, _ = cache_rows(case.v_cache, case.slots)
    assert torch.equal(k_rows, k[tokens])
    assert torch.equal(v_rows, case.v[tokens])
    assert_only_slots_written(case, case.k_cache, case.k_store)
    assert_only_slots_written(case, case.v_cache, case.v_store)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("unit_offset", [False, True])
@pytest.mark.parametrize("head_size", [128, 256])
def test_norm_and_rotation_against_float64(dtype, unit_offset, head_size, poison) -> None:
    """Qwen3's norm (head 128, all rotated) and Qwen3.5's (head 256, a quarter rotated)."""
    cache, inv_freq, mscale = tables(2 * HALF, 64)
    case = make_case(dtype, head_size=head_size, v_head_size=head_size // 2, seed=3)
    weights = tuple(randn(head_size, dtype=dtype, seed=s) * 0.5 + 1 for s in (7, 8))
    eps = 1e-6
    q0, k0 = case.q.clone(), case.k.clone()
    run(
        case,
        cache,
        inv_freq,
        mscale,
        q_norm_weight=weights[0],
        k_norm_weight=weights[1],
        eps=eps,
        norm_unit_offset=unit_offset,
        write_k=True,
    )
    q64, k64 = expected(q0, k0, case.positions, inv_freq, mscale, weights, eps, unit_offset)
    # rounded after the norm, after the weight (Qwen3) and after the rotation: a few ulps
    assert_close_to(case.q, q64, 6)
    assert_close_to(case.k, k64, 6)
    k_rows, tokens = cache_rows(case.k_cache, case.slots)
    assert torch.equal(k_rows, case.k[tokens]), "the cache and write_k's k differ"
    v_rows, _ = cache_rows(case.v_cache, case.slots)
    assert torch.equal(v_rows, case.v[tokens])
    assert_only_slots_written(case, case.k_cache, case.k_store)


@pytest.mark.parametrize("unit_offset", [False, True])
def test_norm_as_the_models_compute_it(unit_offset) -> None:
    """Against transformers' Qwen3 and Qwen3.5 RMSNorm modules, then rotate_inplace: equal up to
    the order of the float32 sum of squares (at most one bfloat16 ulp, rarely)."""
    transformers = pytest.importorskip("transformers")
    del transformers
    if unit_offset:
        from transformers.models.qwen3_5.modeling_qwen3_5 import Qwen3_5RMSNorm as Norm
    else:
        from transformers.models.qwen3.modeling_qwen3 import Qwen3RMSNorm as Norm
    dtype = torch.bfloat16
    cache, inv_freq, mscale = tables(2 * HALF, 64)
    case = make_case(dtype, padding=0, seed=5)
    norms = []
    for seed in (1, 2):
        norm = Norm(case.q.shape[-1], eps=1e-6).to(dtype)
        with torch.no_grad():
            norm.weight.copy_(randn(case.q.shape[-1], seed=seed) * 0.3 + (0 if unit_offset else 1))
        norms.append(norm)
    with torch.no_grad():
        q, k = norms[0](case.q), norms[1](case.k)
        ops.rotate_inplace(q, k, cache, inv_freq, mscale, case.positions[:, None])
        run(
            case,
            cache,
            inv_freq,
            mscale,
            q_norm_weight=norms[0].weight,
            k_norm_weight=norms[1].weight,
            norm_unit_offset=unit_offset,
            write_k=True,
        )
    for actual, want in ((case.q, q), (case.k, k)):
        differ = actual != want
        assert differ.float().mean() < 0.01
        ulp = torch.finfo(dtype).eps * want.abs().float().clamp_min(2**-10)
        assert ((actual.float() - want.float()).abs() <= ulp * 2)[differ].all()


def test_float8_cache() -> None:
    dtype = torch.bfloat16
    cache, inv_freq, mscale = tables(2 * HALF, 64)
    case = make_case(dtype, cache_dtype=torch.float8_e4m3fn, seed=9)
    k_scale, v_scale = torch.tensor([0.005]), torch.tensor(0.5)  # some |k| / 0.005 > 448
    q, k = case.q.clone(), case.k.clone()
    k0 = case.k.clone()
    ops.rotate_inplace(q, k, cache, inv_freq, mscale, case.positions[:, None])
    run(case, cache, inv_freq, mscale, k_scale=k_scale, v_scale=v_scale)
    assert torch.equal(case.q, q)
    k_rows, tokens = cache_rows(case.k_cache, case.slots)
    v_rows, _ = cache_rows(case.v_cache, case.slots)

    def quantized(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return (x.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)

    want_k = quantized(k[tokens], k_scale)
    assert (want_k.float().abs() == FP8_MAX).any(), "the case does not test saturation"
    assert torch.equal(k_rows.view(torch.uint8), want_k.view(torch.uint8))
    assert torch.equal(
        v_rows.view(torch.uint8), quantized(case.v[tokens], v_scale).view(torch.uint8)
    )
    # against float64: within e4m3's rounding (half of 2^-3, relative) where not saturated
    k64 = expected(q, k0, case.positions, inv_freq, mscale, None, 0.0, False)[1][tokens]
    k64 = k64 / k_scale.item()
    inside = k64.abs() < FP8_MAX
    relative = ((k_rows.double() - k64).abs() / k64.abs().clamp_min(2**-6))[inside]
    assert relative.max() <= 2**-4 + 2**-7
    assert_only_slots_written(case, case.k_cache, case.k_store)
    assert_only_slots_written(case, case.v_cache, case.v_store)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("unit_offset", [False, True])
def test_whole_step_with_a_float8_cache_against_float64(dtype, unit_offset, poison) -> None:
    """Norm, rotation and quantization together: the float8 cache rows against the float64 step
    divided by the scale, where not saturated, within e4m3's rounding (half of 2^-3, relative;
    2^-10 among its subnormals) plus, for k, the dtype's roundings before it (a few ulps of the
    magnitude of the pair a value turns with, which the rotation keeps); saturated values at
    +-448; and bit for bit the quantization of the k that write_k leaves."""
    cache, inv_freq, mscale = tables(2 * HALF, 64)
    case = make_case(dtype, cache_dtype=torch.float8_e4m3fn, seed=31)
    weights = tuple(randn(128, dtype=dtype, seed=s) * 0.5 + 1 for s in (12, 13))
    k_scale, v_scale = torch.tensor([0.005]), torch.tensor([0.004])  # both saturate somewhere
    q0, k0 = case.q.clone(), case.k.clone()
    run(
        case,
        cache,
        inv_freq,
        mscale,
        q_norm_weight=weights[0],
        k_norm_weight=weights[1],
        norm_unit_offset=unit_offset,
        k_scale=k_scale,
        v_scale=v_scale,
        write_k=True,
    )
    q64, k64 = expected(q0, k0, case.positions, inv_freq, mscale, weights, 1e-6, unit_offset)
    assert_close_to(case.q, q64, 6)
    k_rows, tokens = cache_rows(case.k_cache, case.slots)
    v_rows, _ = cache_rows(case.v_cache, case.slots)
    k_want = k64[tokens] / k_scale.item()
    # NeoX, rotary dim 64: feature i turns with i + 32; those past 64 are not turned
    pair = torch.hypot(k_want[..., :HALF], k_want[..., HALF : 2 * HALF])
    magnitude = torch.cat([pair, pair, k_want[..., 2 * HALF :].abs()], -1)
    k_slack = 6 * torch.finfo(dtype).eps * magnitude
    v_want = case.v[tokens].double() / v_scale.item()
    for rows, want, slack in ((k_rows, k_want, k_slack), (v_rows, v_want, 0.0)):
        inside = want.abs() < FP8_MAX
        assert (~inside).any(), "the case does not test saturation"
        assert (rows.double()[~inside].abs() == FP8_MAX).all()
        error = (rows.double() - want).abs() - (2**-4 * want.abs() + 2**-10 + slack)
        assert error[inside].max() <= 0
    quantized = (case.k[tokens].float() / k_scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    assert torch.equal(k_rows.view(torch.uint8), quantized.view(torch.uint8))
    assert_only_slots_written(case, case.k_cache, case.k_store)
    assert_only_slots_written(case, case.v_cache, case.v_store)


def test_mrope_positions_give_rotate_inplace_bits() -> None:
    cache, inv_freq, mscale = tables(2 * HALF, 64)
    case = make_case(torch.bfloat16, seed=4)
    t = case.positions
    mrope = torch.stack([t, t + 3, t + 70])  # w past the cache for some tokens
    case.positions = mrope
    sections = [11, 11, 10]
    q, k = case.q.clone(), case.k.clone()
    ops.rotate_inplace(
        q,
        k,
        cache,
        inv_freq,
        mscale,
        mrope[:, :, None],
        mrope_section=sections,
        mrope_interleaved=True,
    )
    run(case, cache, inv_freq, mscale, mrope_section=sections, mrope_interleaved=True)
    assert torch.equal(case.q, q)
    k_rows, tokens = cache_rows(case.k_cache, case.slots)
    assert torch.equal(k_rows, k[tokens])


def test_int32_slots_and_positions_and_an_empty_call() -> None:
    cache, inv_freq, mscale = tables(2 * HALF, 64)
    case = make_case(torch.float32, seed=6)
    reference_case = make_case(torch.float32, seed=6)
    case.slots, case.positions = case.slots.int(), case.positions.int()[:, None]
    run(case, cache, inv_freq, mscale)
    run(reference_case, cache, inv_freq, mscale)
    assert torch.equal(case.q, reference_case.q)
    assert torch.equal(case.k_store.nan_to_num(7.0), reference_case.k_store.nan_to_num(7.0))
    empty = make_case(torch.float32, tokens=0, padding=0)
    run(empty, cache, inv_freq, mscale)
    assert empty.k_store.isnan().all()


def bad_inputs():
    """(what is wrong, the arguments' changes, the message)."""
    fp8 = torch.float8_e4m3fn
    return [
        (
            "slot past the cache",
            {"slots": [0, 1, 24]},
            r"slot_mapping\[2\] = 24 is outside \[-1, 24\)",
        ),
        ("slot below -1", {"slots": [0, -2, 3]}, r"slot_mapping\[1\] = -2 is outside"),
        ("slot twice", {"slots": [5, -1, 5]}, "slot_mapping has slot 5 twice"),
        (
            "scales without fp8",
            {"k_scale": torch.tensor(1.0), "v_scale": torch.tensor(1.0)},
            "are for float8_e4m3fn caches",
        ),
        ("fp8 without scales", {"cache_dtype": fp8}, "k_scale and v_scale are required"),
        (
            "positions per head",
            {"positions": torch.zeros(3, 2, dtype=torch.long)},
            r"positions must have shape \[3\] or \[3, 1\]",
        ),
        (
            "MRoPE positions on a plain call",
            {"positions": torch.zeros(3, 3, dtype=torch.long)},
            "MRoPE positions",
        ),
        ("float64 q", {"dtype": torch.float64}, "q must be float32, float16 or bfloat16"),
        (
            "cache dtype",
            {"cache_dtype": torch.float16},
            r"k_cache must have q's dtype \(bfloat16\) or float8_e4m3fn",
        ),
        (
            "float8_e5m2 cache",
            {"cache_dtype": torch.float8_e5m2},
            r"k_cache must have q's dtype \(bfloat16\) or float8_e4m3fn, got float8_e5m2",
        ),
        (
            "cache heads",
            {"cache_heads": 3},
            r"k_cache must have shape \[num_blocks, block_size, 2, 128\]",
        ),
        ("cache inner layout", {"cache_transposed": True}, "contiguous in its last two dimensions"),
        (
            "weight shape",
            {"q_norm_weight": torch.ones(64, dtype=torch.bfloat16)},
            r"q_norm_weight must have shape \[128\]",
        ),
        ("weight dtype", {"k_norm_weight": torch.ones(128)}, r"k_norm_weight must have q's dtype"),
        ("negative eps", {"eps": -1.0}, "eps must be finite and >= 0, got -1"),
        (
            "q in the cache",
            {"q_in_cache": True},
            "q and k_cache share memory; the call writes both",
        ),
        ("slot_mapping length", {"slots": [0, 1]}, r"slot_mapping must have shape \[3\]"),
        (
            "invalid_slots dtype",
            {"invalid_slots": torch.zeros(1, dtype=torch.int64)},
            "invalid_slots must be an int32 tensor, got int64",
        ),
        (
            "invalid_slots shape",
            {"invalid_slots": torch.zeros(2, dtype=torch.int32)},
            r"invalid_slots must hold one value \(a counter\), got shape \[2\]",
        ),
    ]


def build_bad(change: dict):
    """Arguments of a 3-token call with one thing wrong."""
    dtype = change.get("dtype", torch.bfloat16)
    cache_dtype = change.get("cache_dtype", dtype)
    cache, inv_freq, mscale = tables(2 * HALF, 64)
    q = randn(3, 4, 128, dtype=dtype)
    k = randn(3, 2, 128, dtype=dtype, seed=1)
    v = randn(3, 2, 128, dtype=dtype, seed=2)
    heads = change.get("cache_heads", 2)
    k_cache = torch.zeros(6, 4, heads, 128).to(cache_dtype)
    if change.get("cache_transposed"):
        k_cache = torch.zeros(6, 4, 128, heads).to(cache_dtype).transpose(2, 3)
    v_cache = torch.zeros(6, 4, 2, 128).to(cache_dtype)
    if change.get("q_in_cache"):
        q = k_cache.view(-1)[: 3 * 4 * 128].view(3, 4, 128)  # q inside the k cache's memory
    positions = change.get("positions", torch.tensor([1, 2, 3]))
    slots = torch.tensor(change.get("slots", [0, 1, 2]))
    args = (q, k, v, cache, inv_freq, mscale, positions, k_cache, v_cache, slots)
    kwargs = {
        name: change[name]
        for name in ("q_norm_weight", "k_norm_weight", "eps", "k_scale", "v_scale", "invalid_slots")
        if name in change
    }
    return args, kwargs


def storage_of(t: torch.Tensor) -> torch.Tensor:
    """t's memory itself (not a copy, which would not see a write): as bytes where its last
    dimension allows, so that float8 and bfloat16 caches compare bit for bit."""
    t = t.detach()
    return t.view(torch.uint8) if t.stride(-1) == 1 else t


@pytest.mark.parametrize("what, change, message", bad_inputs(), ids=[b[0] for b in bad_inputs()])
def test_bad_input_changes_nothing_and_fake_agrees(what, change, message) -> None:
    args, kwargs = build_bad(change)
    q, k, v, k_cache, v_cache = args[0], args[1], args[2], args[7], args[8]
    assert_unchanged_after(
        lambda: ops.rotate_store_kv(*args, **kwargs),
        q,
        k,
        v,
        storage_of(k_cache),
        storage_of(v_cache),
        error=ValueError,
        match=message,
    )
    with pytest.raises(ValueError) as eager:
        ops.rotate_store_kv(*args, **kwargs)
    if "slot_mapping[" in eager.value.args[0] or "twice" in eager.value.args[0]:
        return  # values, which tracing does not see
    with FakeTensorMode() as mode:
        fake_args = [mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args]
        fake_kwargs = {
            n: mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for n, a in kwargs.items()
        }
        with pytest.raises(ValueError) as traced:
            ops.rotate_store_kv(*fake_args, **fake_kwargs)
    assert traced.value.args[0] == eager.value.args[0]


def test_the_cpu_refuses_invalid_slots_and_leaves_the_counter() -> None:
    """The CPU raises on a slot outside the caches before writing anything, the counter
    included (the CUDA kernel counts such slots instead: test_kv_store_emulation.py)."""
    counter = torch.tensor([3], dtype=torch.int32)
    args, _ = build_bad({"slots": [0, 30, 2]})
    q, k_cache = args[0], args[7]
    assert_unchanged_after(
        lambda: ops.rotate_store_kv(*args, invalid_slots=counter),
        q,
        k_cache,
        counter,
        error=ValueError,
        match=r"slot_mapping\[1\] = 30 is outside",
    )
    args, _ = build_bad({})
    ops.rotate_store_kv(*args, invalid_slots=counter)
    assert counter.item() == 3


GRAD_ARGUMENTS = (
    "q k v cos_sin_cache inv_freq k_cache v_cache q_norm_weight k_norm_weight k_scale v_scale"
).split()


@pytest.mark.parametrize("name", GRAD_ARGUMENTS)
def test_any_tensor_requiring_grad_is_refused_in_grad_mode(name) -> None:
    """A gradient through any float argument would be lost: in grad mode each one refuses the
    call, naming itself, before anything is written; under no_grad the same call runs."""
    fp8 = name.endswith("_scale")
    change = {"cache_dtype": torch.float8_e4m3fn} if fp8 else {}
    if fp8:
        change |= {"k_scale": torch.tensor([0.5]), "v_scale": torch.tensor([0.25])}
    if name.endswith("norm_weight"):
        change[name] = randn(128, dtype=torch.bfloat16, seed=3)
    args, kwargs = build_bad(change)
    positional = "q k v cos_sin_cache inv_freq mscale positions k_cache v_cache".split()
    if name in positional:
        at = positional.index(name)
        # a leaf that requires grad (a float8 cache cannot: none is drawn here)
        args = (*args[:at], args[at].clone().requires_grad_(), *args[at + 1 :])
    else:
        kwargs[name] = kwargs[name].clone().requires_grad_()
    q, k, v, k_cache, v_cache = args[0], args[1], args[2], args[7], args[8]
    assert_unchanged_after(
        lambda: ops.rotate_store_kv(*args, **kwargs),
        q.detach(),
        k.detach(),
        v.detach(),
        storage_of(k_cache),
        storage_of(v_cache),
        error=RuntimeError,
        match=f"rotate_store_kv: {name} requires grad",
    )
    with torch.no_grad():
        ops.rotate_store_kv(*args, **kwargs)
    assert (storage_of(k_cache)[0, :3] != 0).any()  # it ran: slots 0-2's rows written


def test_opcheck_and_fullgraph_compile() -> None:
    cache, inv_freq, mscale = tables(2 * HALF, 64)
    case = make_case(torch.bfloat16, padding=1, seed=11)
    weights = (randn(128, dtype=torch.bfloat16, seed=1), randn(128, dtype=torch.bfloat16, seed=2))
    args = (
        case.q,
        case.k,
        case.v,
        cache,
        inv_freq,
        mscale,
        case.positions,
        case.k_cache,
        case.v_cache,
        case.slots,
        weights[0],
        weights[1],
    )
    torch.library.opcheck(torch.ops.yarn_ext.rotate_store_kv.default, args)
    # float8 caches: all but test_schema, whose check of the mutations multiplies the float8
    # tensors, which torch's CPU does not implement ("mul_cpu_reduced_float")
    fp8 = make_case(torch.bfloat16, cache_dtype=torch.float8_e4m3fn, padding=1, seed=11)
    scales = (torch.tensor([0.5]), torch.tensor([0.25]))
    fp8_args = (fp8.q, fp8.k, fp8.v, *args[3:7], fp8.k_cache, fp8.v_cache, fp8.slots, *weights)
    torch.library.opcheck(
        torch.ops.yarn_ext.rotate_store_kv.default,
        (*fp8_args, 1e-6, False, *scales),
        test_utils=("test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic"),
    )

    def step(q, k, v, positions, k_cache, v_cache, slots):
        ops.rotate_store_kv(
            q,
            k,
            v,
            cache,
            inv_freq,
            mscale,
            positions,
            k_cache,
            v_cache,
            slots,
            q_norm_weight=weights[0],
            k_norm_weight=weights[1],
            write_k=True,
        )
        return q.float().sum() + k.float().sum()

    compiled = torch.compile(step, fullgraph=True)
    eager = make_case(torch.bfloat16, padding=1, seed=12)
    traced = make_case(torch.bfloat16, padding=1, seed=12)
    names = ("q", "k", "v", "positions", "k_cache", "v_cache", "slots")
    want = step(*(getattr(eager, n) for n in names))
    got = compiled(*(getattr(traced, n) for n in names))
    assert torch.equal(want, got)
    for name in ("q", "k", "k_store", "v_store"):
        assert torch.equal(
            getattr(eager, name).float().nan_to_num(7.0),
            getattr(traced, name).float().nan_to_num(7.0),
        )


def test_module_method_uses_its_tables_and_style() -> None:
    import yarn_ext

    rope = yarn_ext.YarnEmbedding(2 * HALF, max_position_embeddings=64, interleaved=True)
    case = make_case(torch.bfloat16, head_size=256, seed=13)
    q, k = case.q.clone(), case.k.clone()
    rope.rotate_(q, k, case.positions[:, None])
    out = rope.rotate_store_kv_(
        case.q, case.k, case.v, case.positions, case.k_cache, case.v_cache, case.slots
    )
    assert out is case.q
    assert torch.equal(case.q, q)
    k_rows, tokens = cache_rows(case.k_cache, case.slots)
    assert torch.equal(k_rows, k[tokens])
