"""The operators check their arguments twice: in C++, in the kernels (csrc/checks.cpp), and in
Python, in the fake implementations that tracing runs (yarn_ext/_validation.py). Every bad input
here goes through both - the real tensors to the kernel, FakeTensor copies of them to the fake
implementation - and must be rejected by both with the same exception and the same message; every
good one must be accepted by both, with the same output metadata."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

import yarn_ext

from . import support
from .support import randn, undecidable_pair, undecidable_self_view

HALF = 8  # rotary dim 16


def tables() -> tuple[torch.Tensor, torch.Tensor]:
    cache, inv_freq, _ = support.tables(
        2 * HALF, 32, base=1e4, scale=1.0, original=2048, mscale=1.0
    )
    return cache, inv_freq


def unmergeable() -> torch.Tensor:
    """A view with 13 row dimensions that no stride pattern lets merge."""
    return randn(*[3] * 13, 16)[(slice(0, 2),) * 13]


def rotate(
    x, cache=None, inv_freq=None, mscale=1.0, positions=None, mrope=None, mrope_interleaved=False
):
    c, f = tables()
    args = (x, c if cache is None else cache, f if inv_freq is None else inv_freq, mscale)
    if mrope is None:
        return lambda: ("rotate", (*args, positions, False, False))
    return lambda: ("rotate.mrope", (*args, positions, False, False, mrope, mrope_interleaved))


def inplace(
    q, k, cache=None, inv_freq=None, mscale=1.0, positions=None, mrope=None, mrope_interleaved=False
):
    c, f = tables()
    args = (q, k, c if cache is None else cache, f if inv_freq is None else inv_freq, mscale)
    if mrope is None:
        return lambda: ("rotate_inplace", (*args, positions, False))
    return lambda: ("rotate_inplace.mrope", (*args, positions, False, mrope, mrope_interleaved))


def thw(*shape: int) -> torch.Tensor:
    """MRoPE positions: t, h and w components that differ."""
    return torch.randint(-4, 40, (3, *shape), generator=torch.Generator().manual_seed(3))


def cache_build(inv_freq, num_positions=4, mscale=1.0):
    return lambda: ("build_cos_sin_cache", (inv_freq, num_positions, mscale))


_c, _f = tables()
_f514 = yarn_ext.yarn_inv_freq(514)
_c514 = yarn_ext.ops.build_cos_sin_cache(_f514, 4, 1.0)
_x = randn(4, 2, 16)
_fused = randn(4, 6, 48)
_q = randn(4, 2, 16)
_side_by_side = randn(4, 2, 17)
_storage = randn(320_000)
_f2 = yarn_ext.yarn_inv_freq(2)
_c2 = yarn_ext.ops.build_cos_sin_cache(_f2, 8, 1.0)
BAD: dict[str, Callable[[], tuple[str, tuple]]] = {
    "inv_freq dtype": rotate(_x, inv_freq=_f.float()),
    "inv_freq 2-D": rotate(_x, inv_freq=_f[None]),
    "inv_freq empty": rotate(_x, cache=_c[:, :0], inv_freq=_f[:0]),
    "inv_freq strided": rotate(_x, inv_freq=yarn_ext.yarn_inv_freq(4 * HALF)[::2]),
    "mscale inf": rotate(_x, mscale=float("inf")),
    "mscale nan": rotate(_x, mscale=float("nan")),
    "cache dtype": rotate(_x, cache=_c.double()),
    "cache width": rotate(_x, cache=_c[:, :8]),
    "cache 3-D": rotate(_x, cache=_c[None]),
    "cache strided": rotate(_x, cache=_c.t().contiguous().t()),
    "cache device": rotate(_x, cache=_c.to("meta")),
    "x dtype": rotate(_x.int()),
    "x bool": rotate(_x.bool()),
    "x 1-D": rotate(_x[0, 0]),
    "x narrow": rotate(_x[..., :12]),
    "x device": rotate(_x.to("meta")),
    "positions dtype": rotate(_x, positions=torch.zeros(2)),
    "positions device": rotate(_x, positions=torch.zeros(2, dtype=torch.long, device="meta")),
    "positions shape": rotate(_x, positions=torch.zeros(3, dtype=torch.long)),
    "positions rank": rotate(_x, positions=torch.zeros(5, 4, 2, dtype=torch.long)),
    "x layout": rotate(unmergeable(), positions=torch.tensor(5)),
    "k dtype": inplace(randn(4, 2, 16), randn(4, 1, 16).double()),
    "k device": inplace(randn(4, 2, 16), randn(4, 1, 16).to("meta")),
    "k head size": inplace(randn(4, 2, 32), randn(4, 1, 16)),
    "k narrow": inplace(randn(4, 2, 16), randn(4, 1, 12)),
    "q expanded": inplace(randn(1, 1, 16).expand(4, 2, 16), None),
    "k expanded": inplace(randn(4, 2, 16), randn(1, 1, 16).expand(4, 2, 16)),
    "q is k": inplace(_x, _x),
    "q and k overlap": inplace(_fused[..., 0:32], _fused[..., 16:48]),
    "q and k same heads": inplace(_fused[:, :2, :16], _fused[:, 1:3, :16]),
    "q rows repeat": inplace(randn(64).as_strided((4, 2, 16), (1, 20, 1)), None),
    "q views the cache": inplace(_c[:4, None], None, cache=_c, inv_freq=_f),
    "k views inv_freq": inplace(
        randn(1, 1, 16), _f.view(torch.float32).view(1, 1, 16), cache=_c, inv_freq=_f
    ),
    "positions alias q": inplace(_q, None, positions=_q.view(torch.int32)[:, :, 0]),
    "positions alias k": inplace(randn(4, 2, 16), _q, positions=_q.view(torch.int64)[:, :, 0]),
    "q undecidable": inplace(undecidable_self_view(_storage), None, cache=_c2, inv_freq=_f2),
    "q and k undecidable": inplace(*undecidable_pair(_storage), cache=_c2, inv_freq=_f2),
    "positions against k": inplace(
        randn(4, 2, 16), randn(4, 3, 5, 16), positions=torch.arange(4)[:, None]
    ),
    "k layout": inplace(randn(4, 2, 16), unmergeable(), positions=torch.tensor(5)),
    "cache inv_freq dtype": cache_build(_f.float()),
    "cache num_positions": cache_build(_f, num_positions=-1),
    "mrope section count": rotate(_x, positions=thw(4, 1), mrope=[4, 4]),
    "mrope section sum": rotate(_x, mrope=[2, 2, 2]),
    "mrope section negative": rotate(_x, mrope=[-1, 5, 4]),
    "mrope too many pairs": rotate(randn(2, 2, 514), _c514, _f514, mrope=[257, 0, 0]),
    "mrope interleaved fit": rotate(_x, mrope=[0, 5, 3], mrope_interleaved=True),
    "mrope positions on plain call": rotate(_x, positions=thw(4, 1)),
    "mrope components": rotate(_x, positions=thw(4, 1)[:2], mrope=[2, 3, 3]),
    "mrope positions shape": rotate(_x, positions=thw(5, 1), mrope=[2, 3, 3]),
    "mrope positions dtype": rotate(_x, positions=thw(4, 1).float(), mrope=[2, 3, 3]),
    "mrope in place positions on plain call": inplace(randn(4, 2, 16), None, positions=thw(4, 1)),
    "mrope in place k": inplace(
        randn(4, 2, 16), randn(5, 1, 16), positions=thw(4, 1), mrope=[2, 3, 3]
    ),
    "cache mscale": cache_build(_f, mscale=float("nan")),
}

GOOD: dict[str, Callable[[], tuple[str, tuple]]] = {
    "mrope positions": rotate(_x, positions=thw(4, 1), mrope=[2, 3, 3]),
    "mrope plain positions": rotate(
        _x, positions=torch.arange(4)[:, None], mrope=[3, 3, 2], mrope_interleaved=True
    ),
    "mrope implicit positions": rotate(_x, mrope=[8, 0, 0]),
    "mrope broadcast components": rotate(_x, positions=thw(1, 1).expand(3, 4, 1), mrope=[2, 3, 3]),
    "mrope in place": inplace(
        randn(4, 2, 16),
        randn(4, 1, 16),
        positions=thw(4, 1),
        mrope=[3, 3, 2],
        mrope_interleaved=True,
    ),
    "plain": rotate(_x),
    "positions": rotate(_x, positions=torch.arange(4)[:, None]),
    "int32 positions": rotate(_x, positions=torch.arange(2, dtype=torch.int32)),
    "wide": rotate(randn(4, 2, 24)),
    "transposed": rotate(randn(4, 2, 16).transpose(0, 1)),
    "size-1 dims": rotate(randn(*[1] * 20, 2, 16), positions=torch.tensor(3)),
    "in place q k": inplace(randn(4, 2, 16), randn(4, 1, 16), positions=torch.arange(4)[:, None]),
    "in place fused": inplace(_fused[..., :16], _fused[..., 16:32]),
    "in place interleaved heads": inplace(_fused[:, 0::2, :16], _fused[:, 1::2, :16]),
    "in place positions beside q": inplace(
        _side_by_side[..., :16], None, positions=_side_by_side.view(torch.int32)[:, :1, 16]
    ),
    "in place rows not nested": inplace(randn(200).as_strided((3, 3, 16), (32, 48, 1)), None),
    "cache": cache_build(_f),
}


def run(name: str, args: tuple) -> object:
    """Operator `name` (an overload as "rotate.mrope") on args."""
    op, _, overload = name.partition(".")
    return getattr(getattr(torch.ops.yarn_ext, op), overload or "default")(*args)


def fake_copies(args: tuple, mode: FakeTensorMode) -> tuple:
    """Every tensor argument as a FakeTensor; views of one tensor stay views of one storage."""
    return tuple(mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args)


def outcome(fn: Callable[[], object]) -> tuple[type, str] | None:
    try:
        fn()
    except Exception as error:  # the exception itself is what is compared
        return type(error), str(error)
    return None


@pytest.mark.parametrize("case", list(BAD))
def test_kernels_and_fake_implementations_reject_alike(case: str) -> None:
    name, args = BAD[case]()
    real = outcome(lambda: run(name, args))
    with FakeTensorMode(allow_non_fake_inputs=False) as mode:
        fake_args = fake_copies(args, mode)
        fake = outcome(lambda: run(name, fake_args))
    assert real is not None, f"{case}: the kernel accepted it"
    assert real[0] is ValueError, real
    assert fake == real


@pytest.mark.parametrize("case", list(GOOD))
def test_kernels_and_fake_implementations_accept_alike(case: str) -> None:
    name, args = GOOD[case]()
    real = run(
        name,
        tuple(
            a.clone() if isinstance(a, torch.Tensor) and name.startswith("rotate_inplace") else a
            for a in args
        ),
    )
    with FakeTensorMode() as mode:
        fake = run(name, fake_copies(args, mode))
    if real is None:
        assert fake is None
        return
    assert (fake.shape, fake.stride(), fake.dtype, fake.device) == (
        real.shape,
        real.stride(),
        real.dtype,
        real.device,
    )
