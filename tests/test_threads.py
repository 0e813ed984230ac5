"""Eight Python threads share one module: forward and rotate_ with implicit and explicit
positions while the cache grows concurrently. Every result is right, nothing crashes, and the
module's state is consistent afterwards."""

from __future__ import annotations

import threading

import torch

from yarn_ext import YarnEmbedding, ops, reference

from .support import assert_matches_reference, randn

THREADS = 8
CALLS = 40


def test_threads_share_a_growing_module() -> None:
    # static YaRN at scale 32 over 32 positions: every growth up to 1024 positions extends the
    # cache without changing the frequencies, so each call has one right answer
    rope = YarnEmbedding(
        64, 64, original_max_position_embeddings=32, finetuned=True, scaling_factor=32.0
    )
    inv_freq, mscale = rope.inv_freq.clone(), rope.mscale
    errors: list[BaseException] = []
    longest = [0] * THREADS
    start = threading.Barrier(THREADS)

    def work(index: int) -> None:
        generator = torch.Generator().manual_seed(index)
        try:
            start.wait()
            for call in range(CALLS):
                length = int(torch.randint(8, 1024, (1,), generator=generator))
                x = randn(2, length, 64, seed=index * CALLS + call)
                if call % 2 == 0:  # implicit positions: may grow the cache
                    longest[index] = max(longest[index], length)
                    out = rope(x)
                    want = reference.rotate(x, inv_freq, mscale)
                else:  # in place with explicit positions, on the fly past the cache
                    positions = torch.randint(0, 4096, (length,), generator=generator)
                    out = x.clone()
                    rope.rotate_(out, None, positions)
                    want = reference.rotate(x, inv_freq, mscale, positions)
                assert_matches_reference(out, want, x, mscale)
        except BaseException as error:  # reported by the main thread
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[0]
    # consistent afterwards: exactly the longest implicit call's cache, built at scale 32
    assert rope.scale == 32.0 and rope.mscale == mscale
    assert torch.equal(rope.inv_freq, inv_freq)
    assert rope.max_seq_len_cached == rope.cos_sin_cache.shape[0] == max(64, *longest)
    fresh = ops.build_cos_sin_cache(inv_freq, rope.max_seq_len_cached, mscale)
    assert torch.equal(rope.cos_sin_cache, fresh)
