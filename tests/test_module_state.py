"""The module's state survives copy.deepcopy, pickling, state_dict round trips and dtype moves
without losing precision; a grown cache travels with copies."""

from __future__ import annotations

import copy
import io
import pickle

import torch

from yarn_ext import YarnEmbedding

from .support import randn


def grown_module() -> YarnEmbedding:
    rope = YarnEmbedding(64, max_position_embeddings=64, original_max_position_embeddings=32)
    rope(randn(1, 200, 64))  # dynamic YaRN: the cache grows to 200 at scale 200 / 32
    assert rope.max_seq_len_cached == 200 and rope.scale == 200 / 32
    return rope


def assert_same_module(a: YarnEmbedding, b: YarnEmbedding) -> None:
    assert (a.scale, a.mscale, a.max_seq_len_cached) == (b.scale, b.mscale, b.max_seq_len_cached)
    assert a.inv_freq.dtype == b.inv_freq.dtype == torch.float64
    assert a.cos_sin_cache.dtype == b.cos_sin_cache.dtype == torch.float32
    assert torch.equal(a.inv_freq, b.inv_freq) and torch.equal(a.cos_sin_cache, b.cos_sin_cache)
    x = randn(2, 150, 64)
    positions = torch.arange(150) * 9
    assert torch.equal(a(x, positions=positions), b(x, positions=positions))


def test_deepcopy_keeps_the_grown_tables_and_is_independent() -> None:
    rope = grown_module()
    twin = copy.deepcopy(rope)
    assert_same_module(rope, twin)
    twin(randn(1, 400, 64))  # growing the copy leaves the original alone
    assert twin.max_seq_len_cached == 400 and rope.max_seq_len_cached == 200


def test_pickle_and_torch_save_round_trip() -> None:
    rope = grown_module()
    assert_same_module(rope, pickle.loads(pickle.dumps(rope)))
    buffer = io.BytesIO()
    torch.save(rope, buffer)
    buffer.seek(0)
    assert_same_module(rope, torch.load(buffer, weights_only=False))


def test_state_dict_round_trip_in_a_model() -> None:
    # the tables are derived from the configuration, not state: a model's state_dict carries
    # its weights only, and loads (strictly) into a model with a fresh embedding
    def model() -> torch.nn.Module:
        torch.manual_seed(0)
        return torch.nn.ModuleDict(
            {"proj": torch.nn.Linear(64, 64), "rope": YarnEmbedding(64, 256, finetuned=True)}
        )

    saved = model()
    state = saved.state_dict()
    assert set(state) == {"proj.weight", "proj.bias"}
    loaded = model()
    loaded.load_state_dict(state, strict=True)
    assert_same_module(saved["rope"], loaded["rope"])


def test_dtype_and_device_moves_keep_the_tables_precise() -> None:
    rope = grown_module()
    for move in (
        lambda m: m.half(),
        lambda m: m.bfloat16(),
        lambda m: m.to(torch.float16),
        lambda m: m.double(),
        lambda m: m.to("cpu"),
        lambda m: m.float(),
    ):
        moved = move(copy.deepcopy(rope))
        assert_same_module(rope, moved)


def test_failed_growth_leaves_the_module_as_it_was(monkeypatch) -> None:
    # an allocation failure while growing (simulated: the cache build raises as torch does when
    # out of memory) leaves the old tables, scale and cache length in place
    rope = grown_module()
    before = copy.deepcopy(rope)

    def out_of_memory(*args: object, **kwargs: object) -> torch.Tensor:
        raise torch.OutOfMemoryError("simulated: out of memory while building the cache")

    monkeypatch.setattr("yarn_ext.embedding.ops.build_cos_sin_cache", out_of_memory)
    for call in (lambda: rope(randn(1, 500, 64)), lambda: rope.rotate_(randn(1, 500, 64))):
        try:
            call()
        except torch.OutOfMemoryError:
            pass
        else:
            raise AssertionError("the simulated failure did not reach the caller")
        assert_same_module(rope, before)
    monkeypatch.undo()
    assert_same_module(rope, before)
    rope(randn(1, 500, 64))  # and it still grows once memory is there
    assert rope.max_seq_len_cached == 500
