"""YarnEmbedding.from_hf_config against transformers itself: the public YaRN configurations of
../shared/docs/yarn.md and edge cases, as PretrainedConfig objects, as their to_dict(), and as
config.json-style dicts (rope_scaling and a top-level rope_theta). inv_freq must match
transformers' within 1e-6 relative (transformers computes it in float32), the attention factor
within 1e-12."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from transformers import (
    DeepseekV3Config,
    GptOssConfig,
    LlamaConfig,
    Olmo3Config,
    Qwen2Config,
    Qwen3Config,
)
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from yarn_ext import YarnEmbedding
from yarn_ext.hf_config import hf_yarn_parameters

QWEN3 = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}
DEEPSEEK_V3 = {
    "type": "yarn",
    "factor": 40,
    "original_max_position_embeddings": 4096,
    "beta_fast": 32,
    "beta_slow": 1,
    "mscale": 1.0,
    "mscale_all_dim": 1.0,
}
GPT_OSS = {
    "rope_type": "yarn",
    "factor": 32.0,
    "original_max_position_embeddings": 4096,
    "beta_fast": 32.0,
    "beta_slow": 1.0,
    "truncate": False,
}
OLMO3 = {
    "rope_type": "yarn",
    "factor": 8.0,
    "original_max_position_embeddings": 8192,
    "beta_fast": 32.0,
    "beta_slow": 1.0,
    "attention_factor": 1.2079441541679836,
}


def configs():
    """name -> (config class, its keyword arguments: sizes, theta, the YaRN block). Fresh dicts
    on every call: transformers' config classes write into the rope dict they are given."""
    return copy.deepcopy(_configs())


def _configs():
    small = {"hidden_size": 256, "num_attention_heads": 4, "num_key_value_heads": 2}
    return {
        "Qwen3": (
            Qwen3Config,
            {
                **small,
                "head_dim": 128,
                "max_position_embeddings": 131072,
                "rope_theta": 1e6,
                "rope_scaling": QWEN3,
            },
        ),
        "DeepSeek-V3": (
            DeepseekV3Config,
            {
                "qk_rope_head_dim": 64,
                "max_position_embeddings": 163840,
                "rope_theta": 1e4,
                "rope_scaling": DEEPSEEK_V3,
            },
        ),
        "gpt-oss": (
            GptOssConfig,
            {
                "head_dim": 64,
                "max_position_embeddings": 131072,
                "rope_theta": 150000.0,
                "rope_scaling": GPT_OSS,
            },
        ),
        "Olmo 3": (
            Olmo3Config,
            {**small, "max_position_embeddings": 65536, "rope_theta": 5e5, "rope_scaling": OLMO3},
        ),
        # edge cases
        "betas equal": (
            LlamaConfig,
            {
                **small,
                "max_position_embeddings": 16384,
                "rope_theta": 1e4,
                "rope_scaling": {
                    **QWEN3,
                    "original_max_position_embeddings": 4096,
                    "beta_fast": 8.0,
                    "beta_slow": 8.0,
                },
            },
        ),
        "attention_factor given": (
            Qwen2Config,
            {
                **small,
                "max_position_embeddings": 131072,
                "rope_theta": 1e6,
                "rope_scaling": {**QWEN3, "attention_factor": 0.75},
            },
        ),
        "factor not max/original": (
            Qwen3Config,
            {
                **small,
                "head_dim": 64,
                "max_position_embeddings": 40960,
                "rope_theta": 1e6,
                "rope_scaling": QWEN3,
            },
        ),
        "no factor: max/original": (
            LlamaConfig,
            {
                **small,
                "max_position_embeddings": 65536,
                "rope_theta": 5e5,
                "rope_scaling": {
                    "rope_type": "yarn",
                    "factor": None,
                    "original_max_position_embeddings": 8192,
                },
            },
        ),
        "partial rotary": (
            LlamaConfig,
            {
                **small,
                "max_position_embeddings": 32768,
                "rope_theta": 1e4,
                "partial_rotary_factor": 0.5,
                "rope_scaling": {**QWEN3, "original_max_position_embeddings": 8192},
            },
        ),
        "mscale without mscale_all_dim": (
            LlamaConfig,
            {
                **small,
                "max_position_embeddings": 32768,
                "rope_theta": 1e4,
                "rope_scaling": {**QWEN3, "original_max_position_embeddings": 8192, "mscale": 0.7},
            },
        ),
        "no original: max_position_embeddings": (
            LlamaConfig,
            {
                **small,
                "max_position_embeddings": 8192,
                "rope_theta": 1e4,
                "rope_scaling": {"rope_type": "yarn", "factor": 4.0},
            },
        ),
        "top-level original wins": (
            LlamaConfig,
            {
                **small,
                "max_position_embeddings": 32768,
                "original_max_position_embeddings": 4096,
                "rope_theta": 1e4,
                "rope_scaling": QWEN3,
            },
        ),
    }


def transformers_yarn(config) -> tuple[torch.Tensor, float]:
    layer_type = "full_attention" if "full_attention" in config.rope_parameters else None
    kwargs = {"layer_type": layer_type} if layer_type else {}
    return ROPE_INIT_FUNCTIONS["yarn"](config, "cpu", **kwargs)


def config_json(name: str) -> dict:
    """The config.json way of writing it: rope_scaling and a top-level rope_theta."""
    _, kwargs = configs()[name]
    block = {k: v for k, v in kwargs["rope_scaling"].items() if v is not None}
    return {**{k: v for k, v in kwargs.items() if k != "rope_scaling"}, "rope_scaling": block}


@pytest.mark.parametrize("name", list(configs()))
@pytest.mark.parametrize("form", ["PretrainedConfig", "to_dict", "config.json"])
def test_matches_transformers(name: str, form: str) -> None:
    cls, kwargs = configs()[name]
    config = cls(**kwargs)
    want_inv_freq, want_attention = transformers_yarn(config)
    source = {"PretrainedConfig": config, "to_dict": config.to_dict(), "config.json": None}[form]
    if form == "config.json":
        source = config_json(name)
        if kwargs["rope_scaling"].get("factor", 0) is None:
            source["rope_scaling"].pop("factor", None)
    rope = YarnEmbedding.from_hf_config(source)
    assert rope.inv_freq.shape == want_inv_freq.shape
    relative = ((rope.inv_freq - want_inv_freq.double()) / want_inv_freq.double()).abs().max()
    assert relative.item() <= 1e-6, f"{name}: inv_freq relative error {relative.item():.2e}"
    assert abs(rope.mscale - want_attention) <= 1e-12
    assert rope.max_seq_len_cached == config.max_position_embeddings


def test_deepseek_layout_and_rotary_dim() -> None:
    cls, kwargs = configs()["DeepSeek-V3"]
    # DeepSeek-V3 rotates GPT-J pairs: rope_interleave defaults to true in its config class,
    # and a config.json without the key means the same
    for config in (cls(**kwargs), {**config_json("DeepSeek-V3"), "model_type": "deepseek_v3"}):
        params = hf_yarn_parameters(config)
        assert params.dim == 64 and params.interleaved
        assert params.scale == 40.0 and params.attention_factor == 1.0
    plain = {**config_json("DeepSeek-V3"), "model_type": "deepseek_v3", "rope_interleave": False}
    assert not hf_yarn_parameters(plain).interleaved
    assert not hf_yarn_parameters(config_json("Qwen3")).interleaved


def test_rope_scaling_wins_and_numpy_numbers_are_numbers() -> None:
    # a transformers 5 config.json (rope_parameters: plain RoPE) with a YaRN rope_scaling added,
    # as model cards say to do: transformers runs YaRN, and so does yarn_ext
    config = {
        **config_json("Qwen3"),
        "rope_parameters": {"rope_type": "default", "rope_theta": 1e6},
    }
    assert hf_yarn_parameters(config).scale == 4.0
    numpy_config = config_json("Qwen3")
    numpy_config["rope_scaling"] = {
        **QWEN3,
        "factor": np.float32(4.0),
        "original_max_position_embeddings": np.int64(32768),
    }
    assert hf_yarn_parameters(numpy_config) == hf_yarn_parameters(config_json("Qwen3"))


@pytest.mark.parametrize(
    ("change", "error", "names"),
    [
        ({"rope_scaling": {"rope_type": "linear", "factor": 2.0}}, ValueError, "rope_type"),
        ({"rope_scaling": {**QWEN3, "factor": "4"}}, TypeError, "rope_scaling.factor"),
        ({"rope_scaling": {**QWEN3, "beta_fast": True}}, TypeError, "rope_scaling.beta_fast"),
        ({"rope_scaling": {**QWEN3, "truncate": "no"}}, TypeError, "rope_scaling.truncate"),
        (
            {"rope_scaling": {**QWEN3, "original_max_position_embeddings": 0.5}},
            ValueError,
            "rope_scaling.original_max_position_embeddings",
        ),
        ({"rope_theta": "1e6"}, TypeError, "rope_theta"),
        ({"head_dim": 12.5}, ValueError, "head_dim"),
        ({"max_position_embeddings": -1}, ValueError, "max_position_embeddings"),
    ],
)
def test_bad_configs_name_the_key(change: dict, error: type, names: str) -> None:
    config = {**config_json("Qwen3"), **change}
    with pytest.raises(error, match=names.replace(".", r"\.")):
        YarnEmbedding.from_hf_config(config)


def test_config_must_be_a_config_or_a_dict() -> None:
    with pytest.raises(TypeError, match="PretrainedConfig or a dict"):
        YarnEmbedding.from_hf_config("config.json")


# -- plain RoPE, MRoPE, other rope types ----------------------------------------------------------


def plain_config(**rope: object) -> dict:
    config = {**config_json("Qwen3")}
    del config["rope_scaling"]
    return {**config, **rope}


@pytest.mark.parametrize(
    "rope",
    [
        {},
        {"rope_scaling": None},
        {"rope_scaling": {"rope_type": "default"}},
        {"rope_parameters": {"rope_type": "default", "rope_theta": 1e6}},
        {"rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]}},  # Qwen2-VL's legacy
    ],
    ids=["none", "null", "default", "rope_parameters", "legacy-mrope"],
)
def test_plain_rope_configs_give_plain_rope(rope: dict) -> None:
    config = plain_config(**rope)
    module = YarnEmbedding.from_hf_config(config)
    theta = config.get("rope_theta", 1e6)
    assert module.base == theta and module.scale == 1.0 and module.mscale == 1.0
    assert module.dim == config["head_dim"]
    want = 1.0 / theta ** (torch.arange(0, module.dim, 2, dtype=torch.float64) / module.dim)
    assert torch.allclose(module.inv_freq, want, rtol=1e-15, atol=0)
    assert module.max_seq_len_cached == config["max_position_embeddings"]
    sections = (rope.get("rope_scaling") or {}).get("mrope_section")
    assert module.mrope_section == (None if sections is None else tuple(sections))


@pytest.mark.parametrize("kind", ["linear", "dynamic", "llama3", "longrope"])
def test_other_rope_types_name_the_type(kind: str) -> None:
    config = plain_config(rope_scaling={"rope_type": kind, "factor": 2.0})
    with pytest.raises(ValueError, match=f"rope_scaling.rope_type is '{kind}'"):
        YarnEmbedding.from_hf_config(config)


# Qwen3.5's config.json, its text config without the MRoPE keys
QWEN35_JSON = {
    "model_type": "qwen3_5",
    "text_config": {
        "head_dim": 256,
        "hidden_size": 4096,
        "num_attention_heads": 16,
        "max_position_embeddings": 262144,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 10000000,
            "partial_rotary_factor": 0.25,
        },
    },
}
QWEN3_VL_TEXT = {
    "model_type": "qwen3_vl_text",
    "head_dim": 128,
    "hidden_size": 4096,
    "num_attention_heads": 32,
    "max_position_embeddings": 262144,
    "rope_theta": 5000000,
}


@pytest.mark.parametrize(
    ("config", "sections", "interleaved"),
    [
        # rope_parameters (transformers 5), the flag given
        (
            {
                **QWEN3_VL_TEXT,
                "rope_parameters": {
                    "rope_type": "default",
                    "mrope_section": [24, 20, 20],
                    "mrope_interleaved": True,
                },
            },
            (24, 20, 20),
            True,
        ),
        # rope_scaling with a YaRN block (Qwen2.5-VL's long-context recipe), contiguous by type
        (
            {
                **QWEN3_VL_TEXT,
                "model_type": "qwen2_5_vl",
                "rope_scaling": {
                    "type": "yarn",
                    "factor": 4.0,
                    "original_max_position_embeddings": 32768,
                    "mrope_section": [16, 24, 24],
                },
            },
            (16, 24, 24),
            False,
        ),
        # the sections in the other block than the YaRN one
        (
            {
                **QWEN3_VL_TEXT,
                "rope_scaling": {"rope_type": "yarn", "factor": 2.0},
                "rope_parameters": {"mrope_section": [24, 20, 20]},
            },
            (24, 20, 20),
            True,
        ),
        # a composite config.json: the text config, its type from the outer one
        (
            QWEN35_JSON,
            (11, 11, 10),  # the model type's default, interleaved
            True,
        ),
        # transformers' Qwen3-VL interleaves whatever the flag says
        (
            {
                **QWEN3_VL_TEXT,
                "rope_parameters": {"mrope_section": [24, 20, 20], "mrope_interleaved": False},
            },
            (24, 20, 20),
            True,
        ),
        # another model type: the flag decides
        (
            {
                **QWEN3_VL_TEXT,
                "model_type": "my_vl",
                "rope_parameters": {"mrope_section": [24, 20, 20], "mrope_interleaved": True},
            },
            (24, 20, 20),
            True,
        ),
    ],
    ids=[
        "qwen3-vl",
        "qwen2.5-vl-yarn",
        "other-block",
        "qwen3.5-composite",
        "qwen3-vl-flag-false",
        "other-type-flag",
    ],
)
def test_mrope_configs(config: dict, sections: tuple, interleaved: bool) -> None:
    params = hf_yarn_parameters(config)
    assert params.mrope_section == sections and params.mrope_interleaved is interleaved
    module = YarnEmbedding.from_hf_config(config)
    assert module.mrope_section == sections and module.mrope_interleaved is interleaved
    assert module.dim == 2 * sum(sections)


def test_mrope_from_transformers_configs() -> None:
    from transformers import Qwen2_5_VLConfig, Qwen3_5Config, Qwen3VLConfig

    qwen25 = Qwen2_5_VLConfig(text_config={"rope_parameters": {"mrope_section": [16, 24, 24]}})
    qwen3 = Qwen3VLConfig()
    qwen35 = Qwen3_5Config()
    for config, sections, interleaved, dim in (
        (qwen25, (16, 24, 24), False, 128),
        (qwen3, (24, 20, 20), True, 128),
        (qwen35, (11, 11, 10), True, 64),
    ):
        module = YarnEmbedding.from_hf_config(config)
        assert (module.mrope_section, module.mrope_interleaved, module.dim) == (
            sections,
            interleaved,
            dim,
        )


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"mrope_section": "24,20,20"}, TypeError, "rope_parameters.mrope_section"),
        ({"mrope_section": [24, 20.5, 20]}, ValueError, "rope_parameters.mrope_section"),
        ({"mrope_section": [24, 20, 20], "mrope_interleaved": "yes"}, TypeError, "interleaved"),
        ({"mrope_section": [24, 20, 21]}, ValueError, "YarnEmbedding: mrope_section"),
    ],
)
def test_bad_mrope_configs_name_the_key(change: dict, error: type, match: str) -> None:
    config = {**QWEN3_VL_TEXT, "rope_parameters": {"rope_type": "default", **change}}
    with pytest.raises(error, match=match):
        YarnEmbedding.from_hf_config(config)
