"""The module's policy is written once (csrc/include/yarn_ext/table_policy.h) and called by both
modules; these tests hold the two to it where they could drift apart: the Python module's symbolic
copy of the needed-length rule, and the constructor's error messages in both modules. (Their
results, tables and cos_sin included, interleaved or not, are compared bit for bit in
tests/test_package.py.)"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from yarn_ext import _C, YarnEmbedding
from yarn_ext.embedding import _needed_length

from . import hooks
from .support import randn

SEQ_LENS = [None, 1, 37, 0, -3]
# Each call's tensors by shape (None: an absent k): only those with two dimensions or more have a
# length, dim -2.
TENSORS = [
    [],
    [None],
    [(8,)],
    [(12, 8)],
    [(2, 5, 8)],
    [(2, 5, 8), None],
    [(2, 5, 4, 8), (2, 9, 2, 8)],
    [(3, 40, 8), (3, 7, 8)],
    [(8,), (6, 8)],
]


def outcome(call):
    """call()'s result, or the type and message of the error it raised."""
    try:
        return call()
    except Exception as error:
        return type(error), str(error)


@pytest.mark.parametrize(
    ("seq_len", "has_positions", "shapes"),
    list(itertools.product(SEQ_LENS, [False, True], TENSORS)),
)
def test_needed_length_is_the_policys(seq_len, has_positions, shapes) -> None:
    tensors = [None if shape is None else torch.empty(shape) for shape in shapes]
    positions = torch.arange(4) if has_positions else None
    lengths = [shape[-2] for shape in shapes if shape is not None and len(shape) >= 2]
    python = outcome(lambda: _needed_length(seq_len, positions, *tensors))
    policy = outcome(lambda: _C.needed_length(seq_len, has_positions, lengths))
    assert python == policy


def test_the_policys_plans() -> None:
    def config(**kwargs: object) -> _C.ModuleConfig:
        options = dict(
            dim=64,
            max_position_embeddings=64,
            base=1e4,
            original_max_position_embeddings=32,
            extrapolation_factor=1.0,
            attn_factor=1.0,
            beta_fast=32.0,
            beta_slow=1.0,
            finetuned=False,
            scaling_factor=None,
            attention_factor=None,
            truncate=True,
            interleaved=False,
            mrope_section=None,
            mrope_interleaved=False,
            softmax_scale_factor=1.0,
        )
        options.update(kwargs)
        return _C.ModuleConfig(**options)

    def plan(p: _C.TablePlan) -> tuple[bool, float, float, int]:
        return p.new_frequencies, p.scale, p.mscale, p.positions

    rope = config()
    assert plan(_C.initial_tables(rope)) == (True, 1.0, 1.0, 64)
    assert plan(_C.initial_tables(config(attention_factor=0.5))) == (True, 1.0, 0.5, 64)
    static = config(finetuned=True)
    mscale = 0.1 * math.log(2.0) + 1
    assert plan(_C.initial_tables(static)) == (True, 2.0, mscale, 64)
    assert plan(_C.initial_tables(config(finetuned=True, scaling_factor=8.0)))[1] == 8.0
    # The current tables serve; a longer call raises the scale; one that would not raise it only
    # extends the cache, with the same frequencies and mscale.
    assert _C.grown_tables(static, 2.0, mscale, 64, 64) is None
    assert plan(_C.grown_tables(static, 2.0, mscale, 64, 96)) == (
        True,
        3.0,
        0.1 * math.log(3.0) + 1,
        96,
    )
    assert plan(_C.grown_tables(static, 8.0, 1.5, 64, 96)) == (False, 8.0, 1.5, 96)


BAD_CONFIGS = [
    {"dim": 63},
    {"dim": 0},
    {"dim": -4},
    {"dim": 64, "base": 1.0},
    {"dim": 64, "base": float("nan")},
    {"dim": 64, "max_position_embeddings": 0},
    {"dim": 64, "original_max_position_embeddings": -1},
    {"dim": 64, "extrapolation_factor": float("inf")},
    {"dim": 64, "attn_factor": float("nan")},
    {"dim": 64, "beta_fast": 0.0, "beta_slow": 0.0},
    {"dim": 64, "beta_fast": 1.0, "beta_slow": 32.0},
    {"dim": 64, "scaling_factor": 2.0},
    {"dim": 64, "finetuned": True, "scaling_factor": 0.0},
    {"dim": 64, "finetuned": True, "scaling_factor": float("inf")},
    {"dim": 64, "attention_factor": float("nan")},
]


@pytest.mark.hooks
@pytest.mark.parametrize("bad", BAD_CONFIGS, ids=str)
def test_both_modules_reject_a_bad_option_with_the_same_message(bad) -> None:
    with pytest.raises(ValueError) as python:
        YarnEmbedding(**bad)
    with pytest.raises(ValueError) as cpp:
        hooks.cpp_module_calls(bad, [], randn(4, 2, 64), None, None, 1)
    assert str(python.value) == str(cpp.value)
    assert str(python.value).startswith("YarnEmbedding: ")
