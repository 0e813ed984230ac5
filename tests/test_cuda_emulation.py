"""The CUDA rotation's work (core/token_work.h for the token-major fast path, core/rotate_work.h
for the generic one) run serially on the CPU through the test hooks in yarn_ext._C, with the CUDA
launcher's path choice, argument building and launch geometry (rotate_args.h). On the CPU it
must equal the CPU kernels bit for bit, so these tests check the GPU's index arithmetic without
a GPU: every layout the fast path accepts, the boundaries between the paths, head slices that
cross from q to k, positions outside the cache and the pass-through copies.

The hooks return the launches the CUDA launcher would make: path ("tokens", "generic_vector",
"generic_scalar"), grid, block, heads per slice. `sm_count` stands for the GPU's
multiprocessors, which size the head slices."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from yarn_ext import ops

from . import hooks, support
from .support import FLOAT_DTYPES, randn

pytestmark = [pytest.mark.usefixtures("poison"), pytest.mark.hooks]

H200_SMS = 132


def tables(dim: int, cached: int = 64) -> tuple[torch.Tensor, torch.Tensor, float]:
    return support.tables(dim, cached, mscale=1.1)


def positions_for(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """In, past and before the cache, and a few far enough for the long reduction by pi."""
    generator = torch.Generator().manual_seed(seed)
    positions = torch.randint(-100, 200, shape, generator=generator)
    far = torch.tensor([2**63 - 1, -(2**63), 2**50 + 3, -(2**45) - 7])
    count = min(far.numel(), positions.numel() - 1)
    positions.view(-1)[1 : 1 + count] = far[:count]
    return positions


def paths(launches: list[dict]) -> list[str]:
    return [launch["path"] for launch in launches]


def check_geometry(launches: list[dict]) -> None:
    """What a GPU accepts: at most 256 threads per block (the launch bounds), gridDim.y <= 65535."""
    for launch in launches:
        if launch["path"] == "tokens":
            assert launch["block"][0] * launch["block"][1] <= 256
            assert 1 <= launch["grid"][1] <= 65535


def emulate_out_of_place(x, cache, inv_freq, mscale, positions, interleaved=False, **kw):
    out, launches = hooks.emulate_cuda_rotate(
        x, cache, inv_freq, mscale, positions, interleaved, **kw
    )
    check_geometry(launches)
    return out, launches


def emulate_in_place(q, k, cache, inv_freq, mscale, positions, interleaved=False, **kw):
    launches = hooks.emulate_cuda_rotate_inplace(
        q, k, cache, inv_freq, mscale, positions, interleaved, **kw
    )
    check_geometry(launches)
    return launches


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("interleaved", [False, True])
@pytest.mark.parametrize(("head_size", "dim"), [(128, 128), (96, 64), (66, 64), (70, 2)])
def test_out_of_place_equals_cpu_kernel(dtype, interleaved, head_size, dim) -> None:
    cache, inv_freq, mscale = tables(dim)
    x = randn(3, 4, 20, head_size, dtype=dtype)
    positions = positions_for((3, 1, 20))
    out, launches = emulate_out_of_place(x, cache, inv_freq, mscale, positions, interleaved)
    want = ops.rotate(x, cache, inv_freq, mscale, positions, interleaved)
    assert torch.equal(out, want)
    # 16-byte vectors whenever the rotary half and the pass-through split into whole vectors;
    # then [B, H, S, D] with positions [B, 1, S] is tokens (B, S) x heads H
    width = 16 // x.element_size()
    vector = (dim // 2) % width == 0 and (head_size - dim) % width == 0
    assert paths(launches) == (["tokens"] if vector else ["generic_scalar"])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32, torch.float64])
@pytest.mark.parametrize("interleaved", [False, True])
@pytest.mark.parametrize("sm_count", [1, 4, 100000])
def test_in_place_q_and_k_in_one_launch(dtype, interleaved, sm_count) -> None:
    # q and k with different head counts, slices of one fused qkv. 300 tokens fill one
    # multiprocessor's 1024 threads with one slice of all 10 heads (sm_count 1); four want
    # slices of fewer heads; 100000 want one head per slice.
    cache, inv_freq, mscale = tables(128)
    tokens, hq, hk = 300, 7, 3
    qkv = randn(tokens, hq + 2 * hk, 128, dtype=dtype)
    positions = positions_for((tokens, 1))
    emulated = qkv.clone()
    launches = emulate_in_place(
        emulated[:, :hq],
        emulated[:, hq : hq + hk],
        cache,
        inv_freq,
        mscale,
        positions,
        interleaved,
        sm_count=sm_count,
    )
    assert paths(launches) == ["tokens"] and launches[0]["operands"] == 2
    per_slice = launches[0]["heads_per_slice"]
    assert launches[0]["grid"][1] == -(-(hq + hk) // per_slice)
    assert per_slice == {1: hq + hk, 100000: 1}.get(sm_count, per_slice)
    want = qkv.clone()
    ops.rotate_inplace(
        want[:, :hq], want[:, hq : hq + hk], cache, inv_freq, mscale, positions, interleaved
    )
    assert torch.equal(emulated, want)  # v untouched too


def test_a_slice_that_crosses_from_q_to_k() -> None:
    # 200 tokens x 4 items (bf16, dim 64) = 800 threads per slice; one multiprocessor wants
    # 1024, so 2 slices of 4 heads: q's [0, 4); q's [4, 5) with k's [0, 3)
    cache, inv_freq, mscale = tables(64)
    tokens, hq, hk = 200, 5, 3
    qkv = randn(tokens, hq + 2 * hk, 64, dtype=torch.bfloat16)
    positions = positions_for((tokens, 1))
    emulated, want = qkv.clone(), qkv.clone()
    (launch,) = emulate_in_place(
        emulated[:, :hq], emulated[:, hq : hq + hk], cache, inv_freq, mscale, positions, sm_count=1
    )
    assert launch["heads_per_slice"] == 4 and launch["grid"][1] == 2
    ops.rotate_inplace(want[:, :hq], want[:, hq : hq + hk], cache, inv_freq, mscale, positions)
    assert torch.equal(emulated, want)


def bshd(t):  # [B, S, H, D] contiguous
    return t


def bhsd_view(t):  # [B, H, S, D] view of [B, S, H, D] memory (transformers' layout)
    return t.transpose(1, 2)


def bhsd(t):  # contiguous [B, H, S, D]
    return t.transpose(1, 2).contiguous()


def tokens_thd(t):  # [T, H, D]
    return t.flatten(0, 1)


# (layout of [B=2, S=9, H=5, D] memory, positions for it from [B, S] positions (None:
# implicit)); every one of them takes the token path
FAST_LAYOUTS: dict[str, tuple[Callable, Callable]] = {
    "[T, H, D], positions [T, 1]": (tokens_thd, lambda p: p.flatten()[:, None]),
    "[T, H, D], implicit": (tokens_thd, lambda p: None),
    "[B, S, H, D], positions [B, S, 1]": (bshd, lambda p: p[:, :, None]),
    "[B, S, H, D], positions [S, 1] (broadcast over B)": (bshd, lambda p: p[0][:, None]),
    "[B, H, S, D] view, implicit": (bhsd_view, lambda p: None),
    "[B, H, S, D] view, positions [B, 1, S]": (bhsd_view, lambda p: p[:, None]),
    "[B, H, S, D], implicit": (bhsd, lambda p: None),
    "[B, H, S, D], positions [B, 1, S]": (bhsd, lambda p: p[:, None]),
    "[B, H, S, D], positions [S]": (bhsd, lambda p: p[0]),
    "[B, S, H, D], positions [B, S, H] (one per row)": (
        bshd,
        lambda p: p[:, :, None].expand(2, 9, 5).contiguous(),
    ),
    "one head [S, D], implicit": (lambda t: t[0, :, 0], lambda p: None),
    "one row [1, D]": (lambda t: t[0, 0, :1], lambda p: None),
}


@pytest.mark.parametrize("layout", list(FAST_LAYOUTS))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("sm_count", [1, H200_SMS])
def test_every_layout_the_fast_path_takes(layout, dtype, sm_count) -> None:
    make, make_positions = FAST_LAYOUTS[layout]
    cache, inv_freq, mscale = tables(64)
    memory = randn(2, 9, 5, 80, dtype=dtype)  # 16 pass-through features: copied out of place
    x = make(memory)
    positions = make_positions(positions_for((2, 9)))
    for interleaved in (False, True):
        out, launches = emulate_out_of_place(
            x, cache, inv_freq, mscale, positions, interleaved, sm_count=sm_count
        )
        assert paths(launches) == ["tokens"]
        assert torch.equal(out, ops.rotate(x, cache, inv_freq, mscale, positions, interleaved))
        q = x.clone()
        launches = emulate_in_place(
            q, None, cache, inv_freq, mscale, positions, interleaved, sm_count=sm_count
        )
        assert paths(launches) == ["tokens"]
        assert torch.equal(q, out)


def test_the_boundaries_of_the_fast_path() -> None:
    cache, inv_freq, mscale = tables(64)

    def path_of(memory: torch.Tensor, view: Callable, positions: torch.Tensor | None) -> str:
        """The path out of place and in place (on the same view of a copy), checked."""
        x = view(memory)
        out, launches = emulate_out_of_place(x, cache, inv_freq, mscale, positions)
        assert torch.equal(out, ops.rotate(x, cache, inv_freq, mscale, positions))
        q_memory = memory.clone()
        q = view(q_memory)
        want_memory = memory.clone()
        ops.rotate_inplace(view(want_memory), None, cache, inv_freq, mscale, positions)
        in_place = emulate_in_place(q, None, cache, inv_freq, mscale, positions)
        assert torch.equal(q_memory, want_memory)
        (path,) = set(paths(launches))
        (in_place_path,) = set(paths(in_place))
        return path if path == in_place_path else f"{path}, in place {in_place_path}"

    memory = randn(2, 3, 10, 4, 64, dtype=torch.bfloat16)  # [B, S1, S2, H, D]
    positions = positions_for((2, 3, 10, 1))
    # just qualifies: three token dimensions (S1 sliced: B and S1 do not merge) of which two
    # merge (S1 and S2), and a head dimension
    assert path_of(memory, lambda t: t[:, :2], positions[:, :2]) == "tokens"
    # just does not: the same with S2 sliced too, so that no two token dimensions merge
    assert path_of(memory, lambda t: t[:, :2, :9], positions[:, :2, :9]) == "generic_vector"
    # two token dimensions that do not merge, and a head: qualifies
    assert path_of(memory, lambda t: t[:, 0, :9], positions[:, 0, :9]) == "tokens"
    # all three merge
    assert path_of(memory, lambda t: t, positions) == "tokens"
    # implicit positions in [B, H, G, S, D]: of the dimensions the position does not change
    # along, the nearest in memory is the head and the others join the tokens. With H and G
    # sliced nothing merges: three token dimensions (B, H, S)
    five = randn(2, 3, 4, 6, 64, dtype=torch.float32)
    assert path_of(five, lambda t: t[:, :2, :3], None) == "generic_vector"
    assert path_of(five, lambda t: t[:, :2], None) == "tokens"  # H and G merge: the head
    assert path_of(five, lambda t: t[:, :, :3], None) == "tokens"  # B and H merge
    # rows off a 16-byte boundary, a strided last dimension: the scalar path
    wide = randn(5, 3, 136, dtype=torch.bfloat16)
    assert path_of(wide, lambda t: t[..., 1:65], None) == "generic_scalar"
    assert path_of(wide, lambda t: t[..., ::2][..., :64], None) == "generic_scalar"
    # 4 pass-through features (not a whole vector) are copied only out of place
    assert path_of(randn(5, 3, 72, dtype=torch.bfloat16), lambda t: t[..., :68], None) == (
        "generic_scalar, in place tokens"
    )


def test_q_and_k_with_different_tokens_take_two_launches() -> None:
    # q's tokens merge into one dimension (contiguous [B, S, H, D]); k is a slice along S, so
    # its tokens stay two dimensions: the same tokens, walked differently
    cache, inv_freq, mscale = tables(64)
    q = randn(2, 6, 4, 64, dtype=torch.bfloat16)
    k_memory = randn(2, 8, 2, 64, dtype=torch.bfloat16)
    k = k_memory[:, :6]
    positions = positions_for((2, 6, 1))
    q_want, k_want = q.clone(), k_memory.clone()
    ops.rotate_inplace(q_want, k_want[:, :6], cache, inv_freq, mscale, positions)
    launches = emulate_in_place(q, k, cache, inv_freq, mscale, positions)
    assert paths(launches) == ["tokens", "tokens"]
    assert [launch["operands"] for launch in launches] == [1, 1]
    assert torch.equal(q, q_want) and torch.equal(k_memory, k_want)


def test_empty_tensors_and_an_empty_k() -> None:
    cache, inv_freq, mscale = tables(64)
    # nothing to launch for an empty tensor
    q = randn(0, 4, 64, dtype=torch.bfloat16)
    assert emulate_in_place(q, None, cache, inv_freq, mscale, None) == []
    out, launches = emulate_out_of_place(q, cache, inv_freq, mscale, None)
    assert launches == [] and out.shape == q.shape
    qkv = randn(6, 4, 64, dtype=torch.bfloat16)
    emulated, want = qkv.clone(), qkv.clone()
    launches = emulate_in_place(emulated[:, :4], emulated[:, 4:], cache, inv_freq, mscale, None)
    assert [launch["operands"] for launch in launches] == [1]  # q alone
    ops.rotate_inplace(want[:, :4], want[:, 4:], cache, inv_freq, mscale, None)
    assert torch.equal(emulated, want)


@pytest.mark.parametrize(
    ("make", "path"),
    [
        (lambda t: t[..., :64], "tokens"),  # rows of a wider tensor, 16-byte aligned
        (lambda t: t[..., ::2][..., :64], "generic_scalar"),  # element stride 2
        (lambda t: t[..., 1:65], "generic_scalar"),  # rows start off a 16-byte boundary
        (lambda t: t.transpose(0, 1)[..., :64], "tokens"),  # head-major strides
        (lambda t: t[:, :, 3:67], "generic_scalar"),
    ],
)
def test_layouts_and_the_path_decision(make, path) -> None:
    cache, inv_freq, mscale = tables(64)
    x = make(randn(30, 5, 136, dtype=torch.bfloat16))
    positions = positions_for((x.shape[0], 1)) if x.shape[0] == 30 else None
    out, launches = emulate_out_of_place(x, cache, inv_freq, mscale, positions, False)
    assert paths(launches) == [path]
    assert torch.equal(out, ops.rotate(x, cache, inv_freq, mscale, positions, False))
    q = x.clone() if path == "generic_scalar" else x
    emulate_in_place(q, None, cache, inv_freq, mscale, positions, False)
    assert torch.equal(q, out)


def test_implicit_and_int32_positions() -> None:
    cache, inv_freq, mscale = tables(64, cached=16)
    x = randn(2, 3, 40, 64)
    out, _ = emulate_out_of_place(x, cache, inv_freq, mscale, None, True)
    assert torch.equal(out, ops.rotate(x, cache, inv_freq, mscale, None, True))
    positions = positions_for((2, 1, 40)).to(torch.int32)
    out, _ = emulate_out_of_place(x, cache, inv_freq, mscale, positions, False)
    assert torch.equal(out, ops.rotate(x, cache, inv_freq, mscale, positions, False))


def test_a_cache_view_off_its_alignment_takes_the_scalar_path() -> None:
    cache, inv_freq, mscale = tables(128)
    # a contiguous cache 16 bytes into a buffer: fine for 16-byte x vectors, not for the 32-byte
    # runs of 8 cos/sin floats that bf16 items read
    buffer = torch.empty(cache.numel() + 4)
    shifted = buffer[4:].view_as(cache)
    shifted.copy_(cache)
    x = randn(7, 4, 128, dtype=torch.bfloat16)
    positions = positions_for((7, 1))
    out, launches = emulate_out_of_place(x, shifted, inv_freq, mscale, positions, False)
    assert paths(launches) == ["generic_scalar"]
    assert torch.equal(out, ops.rotate(x, cache, inv_freq, mscale, positions, False))
    _, launches = emulate_out_of_place(x, cache, inv_freq, mscale, positions, False)
    assert paths(launches) == ["tokens"]


@pytest.mark.parametrize("items_per_row", [1, 3, 8, 16, 85, 256])
def test_token_counters_stay_32_bit_up_to_the_planners_limit(items_per_row) -> None:
    # The token path counts tokens in 32 bits: up to 2^31 - 1 - 256 tokens (so that the padding
    # threads of the last block stay below 2^31 too); one more takes the generic path. Heads
    # up to 2^30. No tensors: the planner and launch arithmetic alone.
    limit = 2**31 - 1 - 256
    for tokens in (limit, limit - 1, 2**30 + 7):
        fits, launch = hooks.plan_token_launch(tokens, 40, items_per_row)
        assert fits
        (grid_x, grid_y), (block_x, block_y) = launch["grid"], launch["block"]
        assert block_x == items_per_row and block_x * block_y <= 256
        assert (grid_x - 1) * block_y < tokens <= grid_x * block_y  # every token, one block
        assert grid_x * block_y <= 2**31 - 1  # no thread's token index wraps
        assert 1 <= grid_y <= 65535
    assert not hooks.plan_token_launch(limit + 1, 40, items_per_row)[0]
    assert hooks.plan_token_launch(1000, 2**30, items_per_row)[0]
    assert not hooks.plan_token_launch(1000, 2**30 + 1, items_per_row)[0]
    # slices: at most 65535 even for 2^30 heads
    _, launch = hooks.plan_token_launch(1, 2**30, items_per_row, sm_count=100000)
    assert launch["grid"][1] <= 65535
