"""MRoPE (Qwen2-VL, Qwen2.5-VL, Qwen3-VL, Qwen3.5): each frequency turns with one of a token's
temporal, height and width positions. Against the float64 reference (extended to MRoPE, with an
independent component map), plain RoPE's bits where the components are equal, the CUDA
emulation, autograd, tracing and bad input (test_properties.py draws section layouts and
positions). Outputs are NaN-poisoned."""

from __future__ import annotations

import pytest
import torch

import yarn_ext
from yarn_ext import ops, reference

from . import hooks, support
from .support import DEVICES, FLOAT_DTYPES, assert_matches_reference, assert_unchanged_after, randn

pytestmark = pytest.mark.usefixtures("poison")

# name: (rotary dim, head size, sections, interleaved) - the real models' head geometry
LAYOUTS = {
    "qwen2-vl": (128, 128, [16, 24, 24], False),
    "qwen3-vl": (128, 128, [24, 20, 20], True),
    "qwen3.5": (64, 256, [11, 11, 10], True),
}
CACHED = 64


def tables(dim: int, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor, float]:
    return support.tables(dim, CACHED, mscale=1.1, device=device)


def thw(*shape: int, seed: int = 0) -> torch.Tensor:
    """Three different positions per token: in the cache, past it and before it, and far."""
    generator = torch.Generator().manual_seed(seed)
    positions = torch.randint(-20, 2 * CACHED, (3, *shape), generator=generator)
    flat = positions.view(-1)
    far = torch.tensor([2**20 + 5, 2**40 + 3, -(2**33)])
    flat[1 : 1 + min(3, flat.numel() - 1)] = far[: min(3, flat.numel() - 1)]
    return positions


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("interleaved", [False, True])
def test_rotate_and_rotate_inplace_match_the_reference(layout, dtype, interleaved) -> None:
    dim, head, sections, mrope_interleaved = LAYOUTS[layout]
    cache, inv_freq, mscale = tables(dim)
    mrope = (sections, mrope_interleaved)
    x = randn(37, 5, head, dtype=dtype)
    k = randn(37, 2, head, dtype=dtype, seed=1)
    positions = thw(37, 1)
    out = ops.rotate(x, cache, inv_freq, mscale, positions, interleaved, False, *mrope)
    want = reference.rotate(x, inv_freq, mscale, positions, interleaved, False, *mrope)
    assert_matches_reference(out, want, x, mscale)
    q2, k2 = x.clone(), k.clone()
    ops.rotate_inplace(q2, k2, cache, inv_freq, mscale, positions, interleaved, *mrope)
    assert torch.equal(q2, out)
    want_k = reference.rotate(k, inv_freq, mscale, positions, interleaved, False, *mrope)
    assert_matches_reference(k2, want_k, k, mscale)


@pytest.mark.parametrize(
    ("shape", "positions_shape"),
    [
        ((2, 3, 9, 64), (3, 2, 1, 9)),  # [B, H, S, D]: positions [3, B, 1, S]
        ((2, 9, 3, 64), (3, 2, 9, 1)),  # [B, S, H, D]: positions [3, B, S, 1]
        ((9, 64), (3, 9)),  # [T, D]: positions [3, T]
    ],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_layouts(shape, positions_shape, dtype) -> None:
    cache, inv_freq, mscale = tables(64)
    x = randn(*shape, dtype=dtype)
    positions = thw(*positions_shape[1:])
    mrope = ([12, 10, 10], True)
    out = ops.rotate(x, cache, inv_freq, mscale, positions, False, False, *mrope)
    want = reference.rotate(x, inv_freq, mscale, positions, False, False, *mrope)
    assert_matches_reference(out, want, x, mscale)


def test_positions_broadcast_after_the_components() -> None:
    # [3, 1, S] for [B, H, S, D]: the positions rank is x.dim() and size-1 dims broadcast
    cache, inv_freq, mscale = tables(64)
    x = randn(2, 3, 9, 64)
    positions = thw(1, 1, 9)
    mrope = ([32, 0, 0], False)
    out = ops.rotate(x, cache, inv_freq, mscale, positions, False, False, *mrope)
    want = reference.rotate(x, inv_freq, mscale, positions[0], False)  # t alone: plain RoPE
    assert_matches_reference(out, want, x, mscale)


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_cos_sin_within_1e_6_up_to_2_pow_20(layout) -> None:
    """The accuracy promise holds for MRoPE as for RoPE: each pair's cos/sin at its component's
    position, cached or computed on the fly, within 1e-6 of the float64 math near 2^20."""
    dim, _, sections, mrope_interleaved = LAYOUTS[layout]
    rope = yarn_ext.YarnEmbedding(
        dim,
        max_position_embeddings=4096,
        base=1e6,
        original_max_position_embeddings=32768,
        finetuned=True,
        mrope_section=sections,
        mrope_interleaved=mrope_interleaved,
    )
    generator = torch.Generator().manual_seed(5)
    # t cached, h and w near 2^20 computed on the fly
    positions = torch.randint(2**20 - 1024, 2**20 + 1, (3, 512), generator=generator)
    positions[0] = torch.randint(0, 4096, (512,), generator=generator)
    cos, sin = rope.cos_sin(positions=positions)
    half = dim // 2
    pick = torch.tensor(reference.mrope_components(half, sections, mrope_interleaved))
    angles = [reference.cos_sin(p, rope.inv_freq, rope.mscale) for p in positions]
    for got, part in ((cos, 0), (sin, 1)):
        per_component = torch.stack([a[part] for a in angles], -1)
        want = per_component.gather(-1, pick.expand(512, half)[..., None])[..., 0]
        error = (got[:, :half].double() - want).abs().max().item()
        assert error <= 1e-6, f"max |error| {error:.2e}"


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_equal_components_are_plain_rope_bit_for_bit(layout, dtype) -> None:
    dim, head, sections, mrope_interleaved = LAYOUTS[layout]
    cache, inv_freq, mscale = tables(dim)
    mrope = (sections, mrope_interleaved)
    x = randn(2, 4, 11, head, dtype=dtype)
    plain_positions = thw(2, 1, 11)[0]
    plain = ops.rotate(x, cache, inv_freq, mscale, plain_positions)
    equal = plain_positions.expand(3, *plain_positions.shape)
    assert torch.equal(ops.rotate(x, cache, inv_freq, mscale, equal, False, False, *mrope), plain)
    # plain positions on an MRoPE call mean equal components, as transformers expands them
    assert torch.equal(
        ops.rotate(x, cache, inv_freq, mscale, plain_positions, False, False, *mrope), plain
    )
    # and so do implicit ones
    assert torch.equal(
        ops.rotate(x, cache, inv_freq, mscale, None, False, False, *mrope),
        ops.rotate(x, cache, inv_freq, mscale),
    )


@pytest.mark.hooks
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("cached", [True, False])
def test_cuda_emulation_equals_the_cpu_kernel(layout, dtype, fast, cached) -> None:
    """The CUDA kernels' index and cos/sin arithmetic, run on the CPU: the token path (fast)
    and the generic one (a transposed view), out of place and in place; the gather of three
    cached rows (cached) and the pair-by-pair path that positions outside the cache take."""
    dim, head, sections, mrope_interleaved = LAYOUTS[layout]
    cache, inv_freq, mscale = tables(dim)
    mrope = {"mrope_section": sections, "mrope_interleaved": mrope_interleaved}
    x = randn(23, 6, head, dtype=dtype)
    if not fast:
        x = randn(head, 6, 23, dtype=dtype).permute(2, 1, 0)
    positions = thw(23, 1)
    if cached:
        positions = torch.randint(0, CACHED, (3, 23, 1), generator=torch.Generator().manual_seed(4))
    out, launches = hooks.emulate_cuda_rotate(x, cache, inv_freq, mscale, positions, False, **mrope)
    want = ops.rotate(x, cache, inv_freq, mscale, positions, False, False, *mrope.values())
    assert torch.equal(out, want)
    assert launches[0]["path"] == ("tokens" if fast else "generic_scalar")
    q, k = x.clone(), randn(23, 2, head, dtype=dtype, seed=2)
    q2, k2 = q.clone(), k.clone()
    hooks.emulate_cuda_rotate_inplace(q, k, cache, inv_freq, mscale, positions, True, **mrope)
    ops.rotate_inplace(q2, k2, cache, inv_freq, mscale, positions, True, *mrope.values())
    assert torch.equal(q, q2) and torch.equal(k, k2)
    # the backward's direction too
    back, _ = hooks.emulate_cuda_rotate(
        x, cache, inv_freq, mscale, positions, False, inverse=True, **mrope
    )
    assert torch.equal(
        back, ops.rotate(x, cache, inv_freq, mscale, positions, False, True, *mrope.values())
    )


@pytest.mark.parametrize(
    ("sections", "interleaved", "positions_shape", "match"),
    [
        ([16, 16], False, (3, 5, 1), "mrope_section must have 3 entries"),
        ([10, 10, 10], False, (3, 5, 1), "sum to dim / 2 = 32"),
        ([-1, 17, 16], False, (3, 5, 1), "non-negative"),
        ([2, 20, 10], True, (3, 5, 1), "does not fit dim / 2 = 32 pairs interleaved"),
        ([12, 10, 10], False, (2, 5, 1), "3 components in their first dimension"),
        ([12, 10, 10], False, (3, 6, 1), "does not broadcast"),
        (None, False, (3, 5, 1), "MRoPE positions .* but the call has no mrope_section"),
    ],
)
def test_bad_input_names_the_argument_and_changes_nothing(
    sections, interleaved, positions_shape, match
) -> None:
    cache, inv_freq, mscale = tables(64)
    q, k = randn(5, 4, 64), randn(5, 2, 64, seed=1)
    positions = thw(*positions_shape[1:])[: positions_shape[0]]
    with pytest.raises(ValueError, match=match):
        ops.rotate(q, cache, inv_freq, mscale, positions, False, False, sections, interleaved)
    assert_unchanged_after(
        lambda: ops.rotate_inplace(
            q, k, cache, inv_freq, mscale, positions, False, sections, interleaved
        ),
        q,
        k,
        error=ValueError,
        match=match,
    )


def test_the_style_needs_sections() -> None:
    cache, inv_freq, mscale = tables(64)
    q = randn(5, 4, 64)
    with pytest.raises(ValueError, match="mrope_interleaved needs mrope_section"):
        ops.rotate(q, cache, inv_freq, mscale, None, False, False, None, True)
    assert_unchanged_after(
        lambda: ops.rotate_inplace(q, None, cache, inv_freq, mscale, None, False, None, True),
        q,
        error=ValueError,
        match="mrope_interleaved needs mrope_section",
    )


def test_gradients_are_the_transpose() -> None:
    cache, inv_freq, mscale = tables(16)
    x = randn(5, 3, 20, dtype=torch.float64).requires_grad_()
    positions = thw(5, 1)
    mrope = ([3, 3, 2], True)

    def f(x: torch.Tensor) -> torch.Tensor:
        return ops.rotate(x, cache, inv_freq, mscale, positions, False, False, *mrope)

    assert torch.autograd.gradcheck(f, (x,))
    assert torch.autograd.gradgradcheck(f, (x,))


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device) -> None:
    cache, inv_freq, mscale = tables(64, device)
    x = randn(6, 3, 72).to(device).requires_grad_()
    positions = thw(6, 1).to(device)
    sections = [12, 10, 10]
    torch.library.opcheck(
        torch.ops.yarn_ext.rotate.mrope,
        (x, cache, inv_freq, mscale, positions, False, False, sections, True),
    )
    q, k = randn(6, 4, 64).to(device), randn(6, 2, 64, seed=1).to(device)
    torch.library.opcheck(
        torch.ops.yarn_ext.rotate_inplace.mrope,
        (q, k, cache, inv_freq, mscale, positions, True, sections, False),
    )


# -- the module -------------------------------------------------------------------------------


def qwen35_module(**kw) -> yarn_ext.YarnEmbedding:
    return yarn_ext.YarnEmbedding(
        64,
        max_position_embeddings=CACHED,
        base=1e7,
        mrope_section=[11, 11, 10],
        mrope_interleaved=True,
        **kw,
    )


@pytest.mark.parametrize("device", DEVICES)
def test_module_forward_rotate_and_cos_sin(device) -> None:
    module = qwen35_module(device=device)
    assert module.mrope_section == (11, 11, 10) and module.mrope_interleaved
    assert "mrope_section=[11, 11, 10], mrope_interleaved=True" in repr(module)
    q = randn(2, 16, 7, 256).to(device)  # [B, H, S, D]
    k = randn(2, 4, 7, 256, seed=1).to(device)
    positions = thw(2, 1, 7).to(device)  # [3, B, 1, S]
    out = module(q, positions=positions)
    want = reference.rotate(
        q.cpu(),
        module.inv_freq.cpu(),
        module.mscale,
        positions.cpu(),
        False,
        False,
        [11, 11, 10],
        True,
    )
    assert_matches_reference(out.cpu(), want, q.cpu(), module.mscale)
    q2, k2 = module.rotate_(q.clone(), k.clone(), positions)
    assert torch.equal(q2, out)
    assert torch.equal(k2, module(k, positions=positions))
    # cos_sin at MRoPE positions: what transformers' MRoPE rotary classes return ([B, S, dim])
    cos, sin = module.cos_sin(positions=positions[:, :, 0])
    assert cos.shape == (2, 7, 64) and sin.shape == (2, 7, 64)
    pick = torch.tensor(reference.mrope_components(32, [11, 11, 10], True)).expand(2, 7, 32)
    angles = [
        reference.cos_sin(p, module.inv_freq.cpu(), module.mscale) for p in positions[:, :, 0].cpu()
    ]
    for got, part in ((cos, 0), (sin, 1)):
        per_component = torch.stack([a[part] for a in angles], -1)
        want_part = per_component.gather(-1, pick[..., None])[..., 0]
        assert (got.cpu().double() - torch.cat([want_part, want_part], -1)).abs().max() <= 1e-6
    # the seq_len form is plain positions [0, seq_len): the same as equal components
    c2, s2 = module.cos_sin(
        positions=torch.arange(5, device=device).expand(3, 5), dtype=torch.float64
    )
    c1, s1 = module.cos_sin(5, dtype=torch.float64)
    assert torch.equal(c2, c1[0, 0]) and torch.equal(s2, s1[0, 0])


def test_module_bad_input() -> None:
    module = qwen35_module()
    plain = yarn_ext.YarnEmbedding(64, max_position_embeddings=CACHED)
    q = randn(5, 4, 256)
    with pytest.raises(ValueError, match="but the call has no mrope_section"):
        plain(q[..., :64], positions=thw(5, 1))
    assert_unchanged_after(
        lambda: module.rotate_(q, None, thw(5, 1)[:2]), q, error=ValueError, match="3 components"
    )
    with pytest.raises(ValueError, match="components first"):
        module.cos_sin(positions=torch.arange(5))
    with pytest.raises(ValueError, match="give seq_len or positions"):
        module.cos_sin()
    with pytest.raises(ValueError, match="YarnEmbedding: mrope_section must be non-negative"):
        yarn_ext.YarnEmbedding(64, mrope_section=[11, 11, 11])
    with pytest.raises(ValueError, match="YarnEmbedding: mrope_section must have 3 entries"):
        yarn_ext.YarnEmbedding(64, mrope_section=[16, 16])
    with pytest.raises(ValueError, match="mrope_interleaved needs mrope_section"):
        yarn_ext.YarnEmbedding(64, mrope_interleaved=True)
    with pytest.raises(TypeError, match="mrope_section"):
        yarn_ext.YarnEmbedding(64, mrope_section=32)  # type: ignore[arg-type]


def test_module_compiles_and_exports() -> None:
    module = qwen35_module()
    q = randn(5, 16, 256)
    positions = thw(5, 1)
    eager = module(q, positions=positions)
    compiled = torch.compile(module, fullgraph=True, backend="inductor")
    assert torch.equal(compiled(q, positions=positions), eager)

    class Rotate(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rope = qwen35_module()

        def forward(
            self, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor
        ) -> torch.Tensor:
            q, k = q.clone(), k.clone()
            self.rope.rotate_(q, k, positions)
            return q + k.sum(1, keepdim=True)

    k = randn(5, 4, 256, seed=1)
    program = torch.export.export(Rotate(), (q, k, positions))
    assert torch.equal(program.module()(q, k, positions), Rotate()(q, k, positions))
