"""Large-model initialization, as torchtitan and FSDP2 do it: build the model under
`torch.device("meta")`, materialize it with `to_empty`, then call `reset_parameters()` on each
module that has it. The embedding's meta tables cost nothing; materialized tables hold no values
until reset, and every call refuses them; reset builds them exactly as construction does."""

from __future__ import annotations

import copy
import time

import pytest
import torch
from torch import nn

from yarn_ext import YarnEmbedding

from .support import assert_unchanged_after, randn

CONFIG = {
    "dim": 16,
    "max_position_embeddings": 64,
    "original_max_position_embeddings": 16,
    "finetuned": True,
    "base": 1e4,
}


class Attention(nn.Module):
    """A projection and the embedding, as in a model's attention layer."""

    def __init__(self) -> None:
        super().__init__()
        self.qk = nn.Linear(32, 32)
        self.rope = YarnEmbedding(**CONFIG)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rope(self.qk(x).view(*x.shape[:-1], 2, 16).transpose(-2, -3))


def init_pass(model: nn.Module) -> None:
    """torchtitan's and FSDP2's: reset_parameters() on every module that defines it."""
    for module in model.modules():
        reset = getattr(module, "reset_parameters", None)
        if callable(reset):
            reset()


def test_the_ambient_device_holds_the_tables_and_they_cost_nothing() -> None:
    start = time.perf_counter()
    with torch.device("meta"):
        # 2^24 positions x 128: 8 GiB of float32 cache if it were real
        rope = YarnEmbedding(128, max_position_embeddings=1 << 24)
    assert time.perf_counter() - start < 5.0
    assert rope.inv_freq.is_meta and rope.cos_sin_cache.is_meta
    assert rope.cos_sin_cache.shape == (1 << 24, 128) and rope.inv_freq.dtype == torch.float64
    # the device argument wins over the context, as in torch's own modules
    with torch.device("meta"):
        assert YarnEmbedding(16, device="cpu").cos_sin_cache.device.type == "cpu"
    # meta tables serve meta inputs: shapes only
    out = rope(torch.empty(2, 4, 8, 128, device="meta"))
    assert out.is_meta and out.shape == (2, 4, 8, 128)


def test_materialized_tables_are_refused_until_reset() -> None:
    with torch.device("meta"):
        rope = YarnEmbedding(**CONFIG)
    rope.to_empty(device="cpu")
    assert not rope.cos_sin_cache.is_meta
    x = randn(1, 8, 16)
    refused = "uninitialized memory.*reset_parameters"
    with pytest.raises(RuntimeError, match=refused):
        rope(x)
    with pytest.raises(RuntimeError, match=refused):
        rope(x, seq_len=100)  # a growing call too: growth would start from garbage
    with pytest.raises(RuntimeError, match=refused):
        rope.cos_sin(8)
    q = x.clone()
    assert_unchanged_after(lambda: rope.rotate_(q), q, error=RuntimeError, match=refused)
    # copies and dtype conversions keep the mark
    with pytest.raises(RuntimeError, match=refused):
        copy.deepcopy(rope).half()(x)

    rope.reset_parameters()
    fresh = YarnEmbedding(**CONFIG)
    assert torch.equal(rope.inv_freq, fresh.inv_freq)
    assert torch.equal(rope.cos_sin_cache, fresh.cos_sin_cache)
    assert (rope.scale, rope.mscale, rope.max_seq_len_cached) == (
        fresh.scale,
        fresh.mscale,
        fresh.max_seq_len_cached,
    )
    assert torch.equal(rope(x), fresh(x))
    for a, b in zip(rope.cos_sin(8), fresh.cos_sin(8), strict=True):
        assert torch.equal(a, b)


def test_to_empty_of_a_built_module_is_refused_too() -> None:
    rope = YarnEmbedding(**CONFIG)
    rope.to_empty(device="cpu")
    with pytest.raises(RuntimeError, match="uninitialized memory"):
        rope(randn(1, 8, 16))
    # to the meta device and back: still refused; a plain device move keeps built tables usable
    rope.to("meta").to_empty(device="cpu")
    with pytest.raises(RuntimeError, match="uninitialized memory"):
        rope(randn(1, 8, 16))
    rope.reset_parameters()
    rope.to("cpu")
    assert torch.equal(rope(randn(1, 8, 16)), YarnEmbedding(**CONFIG)(randn(1, 8, 16)))


def test_reset_parameters_returns_to_the_constructed_tables() -> None:
    """Documented choice: as constructed, not as grown (what a state_dict load gives too)."""
    rope, fresh = YarnEmbedding(**CONFIG), YarnEmbedding(**CONFIG)
    rope(randn(1, 200, 16))  # grows to 200 positions
    assert rope.max_seq_len_cached == 200
    rope.reset_parameters()
    assert rope.max_seq_len_cached == fresh.max_seq_len_cached
    assert torch.equal(rope.cos_sin_cache, fresh.cos_sin_cache)
    assert torch.equal(rope.inv_freq, fresh.inv_freq)
    # on the meta device it stays there, and stays free
    meta = YarnEmbedding(**CONFIG, device="meta")
    meta.reset_parameters()
    assert meta.cos_sin_cache.is_meta


def test_the_large_model_recipe() -> None:
    """meta -> to_empty -> init pass gives the model a normal build gives (the projection's
    weights copied over, as a checkpoint load would)."""
    torch.manual_seed(0)
    want = Attention()
    with torch.device("meta"):
        model = Attention()
    model.to_empty(device="cpu")
    init_pass(model)
    model.load_state_dict(want.state_dict())  # the embedding contributes no entries
    x = randn(3, 8, 32)
    assert torch.equal(model(x), want(x))
    assert torch.equal(model.rope.cos_sin_cache, want.rope.cos_sin_cache)
