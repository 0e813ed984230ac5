"""Gradients of the rotation: the C++ Autograd kernel (the inverse rotation, run by the same CPU
and CUDA kernels) against finite differences (gradcheck, gradgradcheck) and the float64
reference; the in-place operator refusing to be recorded."""

from __future__ import annotations

import functools

import pytest
import torch

from yarn_ext import YarnEmbedding, ops, reference

from . import hooks, support
from .support import DEVICES, FLOAT_DTYPES, assert_matches_reference, randn

pytestmark = pytest.mark.usefixtures("poison")


tables = functools.partial(support.tables, base=1e4, original=64, mscale=1.3)


POSITION_CASES = {
    "implicit": lambda: None,
    # [B, 1, S] broadcast over heads, int32
    "broadcast": lambda: torch.arange(5, dtype=torch.int32)[None, None, :].expand(2, 1, 5) * 3,
    # per row, with negative and past-the-cache positions (computed on the fly)
    "wild": lambda: torch.tensor([[[-7, 0, 3, 40, 1 << 20]]]).expand(2, 3, 5).contiguous(),
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("interleaved", [False, True])
@pytest.mark.parametrize(("head_size", "dim"), [(8, 8), (12, 8)])
@pytest.mark.parametrize("positions_case", list(POSITION_CASES))
def test_gradcheck_and_gradgradcheck(device, interleaved, head_size, dim, positions_case) -> None:
    cache, inv_freq, mscale = tables(dim, 16, device=device)
    positions = POSITION_CASES[positions_case]()
    if positions is not None:
        positions = positions.to(device)
    x = randn(2, 3, 5, head_size, dtype=torch.float64).to(device).requires_grad_()

    def f(x: torch.Tensor) -> torch.Tensor:
        return ops.rotate(x, cache, inv_freq, mscale, positions, interleaved)

    assert torch.autograd.gradcheck(f, (x,))
    assert torch.autograd.gradgradcheck(f, (x,))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("interleaved", [False, True])
def test_backward_is_the_scaled_inverse_rotation(device, dtype, interleaved) -> None:
    cache, inv_freq, mscale = tables(64, 32, device=device)
    x = randn(3, 40, 80, dtype=dtype).to(device).requires_grad_()
    grad = randn(3, 40, 80, dtype=dtype, seed=1).to(device)
    positions = torch.randint(-50, 100, (3, 40), generator=torch.Generator().manual_seed(2))
    out = ops.rotate(x, cache, inv_freq, mscale, positions.to(device), interleaved)
    (grad_x,) = torch.autograd.grad(out, x, grad)
    assert grad_x.dtype == dtype and grad_x.shape == x.shape
    want = reference.rotate(grad.cpu(), inv_freq.cpu(), mscale, positions, interleaved, True)
    assert_matches_reference(grad_x.cpu(), want, grad.cpu(), mscale)
    # the pass-through features get the gradient unchanged
    assert torch.equal(grad_x[..., 64:], grad[..., 64:])


@pytest.mark.parametrize("interleaved", [False, True])
def test_inverse_undoes_the_rotation(interleaved) -> None:
    cache, inv_freq, mscale = tables(64, 32)
    x = randn(4, 50, 64, dtype=torch.float64)
    there = ops.rotate(x, cache, inv_freq, mscale, interleaved=interleaved)
    back = ops.rotate(there, cache, inv_freq, mscale, interleaved=interleaved, inverse=True)
    torch.testing.assert_close(back, x * mscale**2, rtol=1e-12, atol=1e-12)


@pytest.mark.hooks
@pytest.mark.parametrize(
    ("view", "path"),
    [(lambda t: t[..., :64], "tokens"), (lambda t: t[..., 1:65], "generic_scalar")],
)
def test_cuda_work_rotates_inverse_too(view, path) -> None:
    # The CUDA kernels' work, run on the CPU: the inverse flag on the token-major path and on
    # the generic one.
    cache, inv_freq, mscale = tables(64, 32)
    x = view(randn(2, 40, 72))
    positions = torch.arange(-5, 35)
    out, launches = hooks.emulate_cuda_rotate(
        x, cache, inv_freq, mscale, positions, False, inverse=True
    )
    assert [launch["path"] for launch in launches] == [path]
    want = reference.rotate(x, inv_freq, mscale, positions, inverse=True)
    assert_matches_reference(out, want, x, mscale)


@pytest.mark.parametrize("device", DEVICES)
def test_module_forward_is_differentiable_including_cache_growth(device) -> None:
    rope = YarnEmbedding(32, max_position_embeddings=8, original_max_position_embeddings=8)
    rope = rope.to(device)
    x = randn(2, 20, 32).to(device).requires_grad_()  # 20 > 8 cached: the growing path
    grad = randn(2, 20, 32, seed=3).to(device)
    (grad_x,) = torch.autograd.grad(rope(x), x, grad)
    assert rope.max_seq_len_cached == 20
    want = reference.rotate(grad.cpu(), rope.inv_freq.cpu(), rope.mscale, inverse=True)
    assert_matches_reference(grad_x.cpu(), want, grad.cpu(), rope.mscale)


def test_the_tables_are_not_differentiable() -> None:
    cache, inv_freq, mscale = tables(16, 8)
    x = randn(4, 16).requires_grad_()
    with pytest.raises(RuntimeError, match="cos_sin_cache and inv_freq are not differentiable"):
        ops.rotate(x, cache.clone().requires_grad_(), inv_freq, mscale)
    with torch.no_grad():  # nothing is recorded, so nothing is asked
        ops.rotate(x, cache.clone().requires_grad_(), inv_freq, mscale)


def test_rotate_in_place_points_to_forward_when_recorded() -> None:
    rope = YarnEmbedding(16, max_position_embeddings=8)
    q = randn(4, 2, 16).requires_grad_() * 1.0
    before = q.detach().clone()
    with pytest.raises(RuntimeError, match=r"for inference.*YarnEmbedding\.forward"):
        rope.rotate_(q, None, torch.arange(4)[:, None])
    assert torch.equal(q.detach(), before)  # the failed call changed nothing
    with torch.inference_mode():
        q = randn(4, 2, 16)
        rope.rotate_(q, None, torch.arange(4)[:, None])
