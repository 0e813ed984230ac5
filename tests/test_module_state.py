"""The module's state survives copy.deepcopy, pickling, state_dict round trips and dtype moves
without losing precision; a grown cache travels with copies."""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch

from yarn_ext import YarnEmbedding

from .support import DEVICES, randn, requires_cuda


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
    x = randn(2, 150, 64).to(a.inv_freq.device)
    positions = torch.arange(150, device=x.device) * 9
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


def test_state_dict_of_a_grown_dynamic_module() -> None:
    # The tables are derived from the constructor's arguments, so state_dict holds none of them
    # (checkpoints stay those of the model without yarn_ext, as with transformers' rotary
    # modules). A loaded module therefore starts as constructed; dynamic growth is not saved, and
    # the same long call grows it to exactly the saved tables again.
    saved = grown_module()
    assert saved.state_dict() == {}
    loaded = YarnEmbedding(64, max_position_embeddings=64, original_max_position_embeddings=32)
    loaded.load_state_dict(saved.state_dict(), strict=True)
    assert loaded.max_seq_len_cached == 64 and loaded.scale == 1.0
    loaded(randn(1, 200, 64))
    assert_same_module(saved, loaded)


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
    calls = (
        lambda: rope(randn(1, 500, 64)),
        lambda: rope.rotate_(randn(1, 500, 64)),
        lambda: rope.cos_sin(500),
    )
    for call in calls:
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


@pytest.mark.parametrize("device", DEVICES)
def test_real_allocation_failure_during_growth_leaves_the_module_as_it_was(device: str) -> None:
    # A real one this time: a cache of 2^42 positions (a petabyte) cannot be allocated, and the
    # allocator's error (raised inside the C++ cache builder) reaches Python as an exception.
    rope = grown_module().to(device)
    before = copy.deepcopy(rope)
    x = randn(1, 8, 64).to(device)
    calls = (
        lambda: rope(x, seq_len=2**42),
        lambda: rope.rotate_(x, seq_len=2**42),
        lambda: rope.cos_sin(2**42),
    )
    for call in calls:
        with pytest.raises((RuntimeError, torch.OutOfMemoryError), match="allocate"):
            call()
        assert_same_module(rope, before)
    assert torch.equal(x, randn(1, 8, 64).to(device))  # the failed in-place call wrote nothing


@requires_cuda
def test_moves_between_devices_keep_the_tables_exactly() -> None:
    rope = grown_module()
    on_gpu = copy.deepcopy(rope).cuda().half()
    assert on_gpu.inv_freq.device.type == on_gpu.cos_sin_cache.device.type == "cuda"
    assert on_gpu.inv_freq.dtype == torch.float64 and on_gpu.cos_sin_cache.dtype == torch.float32
    assert torch.equal(on_gpu.inv_freq.cpu(), rope.inv_freq)
    assert torch.equal(on_gpu.cos_sin_cache.cpu(), rope.cos_sin_cache)
    x = randn(2, 150, 64)
    gpu_out = on_gpu(x.cuda()).cpu()
    assert (gpu_out - rope(x)).abs().max().item() <= 1e-5
    back = on_gpu.to("cpu")
    assert_same_module(rope, back)
