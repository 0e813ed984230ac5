"""Eight Python threads share one module: forward and rotate_ with implicit and explicit
positions while the cache grows concurrently. Every result is right, nothing crashes, and the
module's state is consistent afterwards.

A thread switch lands inside a growth's few microseconds rarely, so the tests widen those windows
(a sleep after building a cache and after each buffer assignment) and switch threads often: with
that, dropping the growth lock or reading the tables one attribute at a time fails them."""

from __future__ import annotations

import copy
import io
import math
import pickle
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import torch

from yarn_ext import YarnEmbedding, ops, reference

from .support import DEVICES, assert_matches_reference, randn

THREADS = 8
CALLS = 40


@pytest.fixture(autouse=True)
def wide_race_windows(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    build = ops.build_cos_sin_cache
    register_buffer = YarnEmbedding.register_buffer

    def slow_build(*args: object, **kwargs: object) -> torch.Tensor:
        cache = build(*args, **kwargs)  # type: ignore[arg-type]
        time.sleep(0.002)
        return cache

    def slow_register_buffer(self: YarnEmbedding, *args: object, **kwargs: object) -> None:
        register_buffer(self, *args, **kwargs)  # type: ignore[arg-type]
        time.sleep(0.001)

    monkeypatch.setattr("yarn_ext.embedding.ops.build_cos_sin_cache", slow_build)
    monkeypatch.setattr(YarnEmbedding, "register_buffer", slow_register_buffer)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        yield
    finally:
        sys.setswitchinterval(interval)


def run_in_threads(work: Callable[[int], None]) -> None:
    """Runs work(0), ..., work(THREADS - 1) in THREADS threads released together; the first
    failure of any thread is raised here."""
    errors: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def run(index: int) -> None:
        try:
            start.wait()
            work(index)
        except BaseException as error:  # reported by the main thread
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[0]


@pytest.mark.parametrize("device", DEVICES)
def test_threads_share_a_growing_module(device: str) -> None:
    # static YaRN at scale 32 over 32 positions: every growth up to 1024 positions extends the
    # cache without changing the frequencies, so each call has one right answer
    rope = YarnEmbedding(
        64, 64, original_max_position_embeddings=32, finetuned=True, scaling_factor=32.0
    ).to(device)
    inv_freq, mscale = rope.inv_freq.cpu(), rope.mscale
    longest = [0] * THREADS

    def work(index: int) -> None:
        generator = torch.Generator().manual_seed(index)
        for call in range(CALLS):
            length = int(torch.randint(8, 1024, (1,), generator=generator))
            x = randn(2, length, 64, seed=index * CALLS + call)
            if call % 2 == 0:  # implicit positions: may grow the cache
                longest[index] = max(longest[index], length)
                out = rope(x.to(device)).cpu()
                want = reference.rotate(x, inv_freq, mscale)
            else:  # in place with explicit positions, on the fly past the cache
                positions = torch.randint(0, 4096, (length,), generator=generator)
                out = x.to(device, copy=True)
                rope.rotate_(out, None, positions.to(device))
                out = out.cpu()
                want = reference.rotate(x, inv_freq, mscale, positions)
            assert_matches_reference(out, want, x, mscale)

    run_in_threads(work)
    # consistent afterwards: exactly the longest implicit call's cache, built at scale 32
    assert rope.scale == 32.0 and rope.mscale == mscale
    assert torch.equal(rope.inv_freq.cpu(), inv_freq)
    assert rope.max_seq_len_cached == rope.cos_sin_cache.shape[0] == max(64, *longest)
    fresh = ops.build_cos_sin_cache(rope.inv_freq, rope.max_seq_len_cached, mscale)
    assert torch.equal(rope.cos_sin_cache, fresh)


def test_threads_share_a_module_whose_scale_changes_as_it_grows() -> None:
    """Dynamic YaRN: every growth past 64 positions raises the scale to length / 32, so the
    frequencies, mscale and cache all change together. The threads ask for ever longer
    sequences, so most calls grow the module, racing each other. Each call must see one whole
    state: the module grown to some length M at least its own. Position 0 is rotated by angle 0,
    so row 0 comes out scaled by exactly mscale, which names M; the whole result must then be the
    rotation at M's frequencies. A call that mixed the frequencies of one state with the mscale
    or cache of another fails that check."""
    dim, original = 32, 32
    rope = YarnEmbedding(dim, 64, original_max_position_embeddings=original)
    states: dict[int, tuple[torch.Tensor, float]] = {}
    states_lock = threading.Lock()

    def state(grown_to: int) -> tuple[torch.Tensor, float]:
        """inv_freq and mscale of a fresh module grown to `grown_to` positions."""
        with states_lock:
            if grown_to not in states:
                fresh = YarnEmbedding(dim, 64, original_max_position_embeddings=original)
                fresh(torch.zeros(1, grown_to, dim))
                states[grown_to] = (fresh.inv_freq.clone(), fresh.mscale)
            return states[grown_to]

    requested = [64] * THREADS

    def work(index: int) -> None:
        generator = torch.Generator().manual_seed(100 + index)
        for call in range(CALLS):
            length = 65 + 16 * call + int(torch.randint(0, 16, (1,), generator=generator))
            x = randn(2, length, dim, seed=1000 + index * CALLS + call)
            positions = None
            if call % 3 == 0:  # forward, implicit positions: may grow
                requested[index] = max(requested[index], length)
                out = rope(x)
            elif call % 3 == 1:  # rotate_ with implicit positions: may grow
                requested[index] = max(requested[index], length)
                out = x.clone()
                rope.rotate_(out)
            else:  # explicit positions: no growth, any state may be seen
                positions = torch.randint(0, 2048, (length,), generator=generator)
                positions[0] = 0
                if index % 2 == 0:
                    out = rope(x, positions=positions)
                else:
                    out = x.clone()
                    rope.rotate_(out, None, positions)
            seen_mscale = (out[:, 0].double().norm() / x[:, 0].double().norm()).item()
            # mscale = 1 + 0.1 ln(M / original) after growth to M > 64; 1 for the initial state
            grown_to = max(64, round(original * math.exp((seen_mscale - 1) / 0.1)))
            assert positions is not None or grown_to >= length, (index, call, grown_to)
            inv_freq, mscale = state(grown_to)
            want = reference.rotate(x, inv_freq, mscale, positions)
            assert_matches_reference(out, want, x, mscale)

    run_in_threads(work)
    # consistent afterwards: the state of the longest implicit request, as a fresh build has it
    longest = max(requested)
    assert rope.max_seq_len_cached == rope.cos_sin_cache.shape[0] == longest
    assert rope.scale == longest / original
    inv_freq, mscale = state(longest)
    assert rope.mscale == mscale and torch.equal(rope.inv_freq, inv_freq)
    assert torch.equal(rope.cos_sin_cache, ops.build_cos_sin_cache(inv_freq, longest, mscale))


def grow_in_thread(rope: YarnEmbedding, length: int) -> threading.Thread:
    thread = threading.Thread(target=lambda: rope(randn(1, length, 16)), daemon=True)
    thread.start()
    return thread


def test_each_module_has_its_own_lock() -> None:
    # While one module's lock is held, another module grows; the first one's growth waits.
    a, b = (
        YarnEmbedding(16, max_position_embeddings=8),
        YarnEmbedding(16, max_position_embeddings=8),
    )
    with a._growth:
        other = grow_in_thread(b, 40)
        other.join(timeout=30)
        assert not other.is_alive() and b.max_seq_len_cached == 40
        same = grow_in_thread(a, 40)
        same.join(timeout=0.5)
        assert same.is_alive() and a.max_seq_len_cached == 8  # waits for a's lock
    same.join(timeout=30)
    assert not same.is_alive() and a.max_seq_len_cached == 40


@pytest.mark.parametrize("copy_with", ["deepcopy", "pickle", "torch.save"])
def test_copies_get_a_lock_of_their_own(copy_with: str) -> None:
    rope = YarnEmbedding(16, max_position_embeddings=8)
    rope(randn(1, 20, 16))
    if copy_with == "deepcopy":
        clone = copy.deepcopy(rope)
    elif copy_with == "pickle":
        clone = pickle.loads(pickle.dumps(rope))
    else:
        buffer = io.BytesIO()
        torch.save(rope, buffer)
        buffer.seek(0)
        clone = torch.load(buffer, weights_only=False)
    assert clone._growth is not rope._growth
    with rope._growth:  # the original's lock does not hold the copy back
        thread = grow_in_thread(clone, 50)
        thread.join(timeout=30)
        assert not thread.is_alive() and clone.max_seq_len_cached == 50
    assert rope.max_seq_len_cached == 20
