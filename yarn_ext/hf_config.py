"""Rotary parameters from a transformers config (a PretrainedConfig, or config.json as a dict).

YaRN configs and plain-RoPE ones (rope_type "default", the legacy "mrope", or no rope block at
all: plain RoPE with the config's theta and rotary dim) are read; any other rope type (linear,
dynamic, llama3, longrope...) is an error naming it.

The keys combine as transformers' `_compute_yarn_parameters` (modeling_rope_utils.py) combines
them, so that a model's YarnEmbedding has transformers' frequencies and attention factor:

- base: `rope_theta`, or `rope_parameters["rope_theta"]` (transformers 5 keeps it there);
- the YaRN block: `rope_parameters` or `rope_scaling`, with `rope_type` (or `type`) "yarn";
- scale: `factor`, else max_position_embeddings / original_max_position_embeddings;
- attention factor: `attention_factor`; else get_mscale(scale, mscale) / get_mscale(scale,
  mscale_all_dim) when both are given and non-zero (DeepSeek); else get_mscale(scale);
- beta_fast, beta_slow: given and non-zero, else 32 and 1; truncate: default true;
- rotary dim: `qk_rope_head_dim` (DeepSeek's rotary part of the head), else head_dim (or
  hidden_size // num_attention_heads) times `partial_rotary_factor` (default 1);
- interleaved pairs where the config says `rope_interleave`, or by default for the DeepSeek
  family (INTERLEAVED_MODEL_TYPES) (GPT-J pairs;
  transformers also moves the rotated features into rotate_half order, the same permutation for
  q and k, which leaves every q.k product - and so attention - unchanged);
- MRoPE (Qwen2-VL, Qwen2.5-VL, Qwen3-VL, Qwen3.5): `mrope_section` from the rope block (or the
  other of rope_parameters / rope_scaling), else the model type's default, as transformers'
  rotary classes take it; interleaved as the model type's rotary class is (Qwen3-VL, Qwen3.5
  always, Qwen2-VL and Qwen2.5-VL never, whatever `mrope_interleaved` says), and for another
  model type where the block says `mrope_interleaved`;
- the softmax correction: with `mscale_all_dim` (the DeepSeek family's key; any YaRN config
  that has it) a model multiplies the attention's softmax scale by
  get_mscale(factor, mscale_all_dim)^2, as transformers' DeepSeek-V2/V3 attention does; 1
  otherwise.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Models whose rotation pairs features (2i, 2i+1) where config.json does not say otherwise:
# DeepSeek-V2 and LongCat-Flash always do; DeepSeek-V3 and its relatives' rope_interleave
# defaults to true.
INTERLEAVED_MODEL_TYPES = frozenset(
    {"deepseek_v2", "deepseek_v3", "kimi_k2", "longcat_flash", "glm4_moe_lite"}
)


# MRoPE models (the text model's type, without "_text"): the sections transformers' rotary
# classes default to, and the types whose class interleaves them.
MROPE_DEFAULT_SECTIONS = {
    "qwen2_vl": (16, 24, 24),
    "qwen2_5_vl": (16, 24, 24),
    "qwen3_vl": (24, 20, 20),
    "qwen3_vl_moe": (24, 20, 20),
    "qwen3_5": (11, 11, 10),
    "qwen3_5_moe": (11, 11, 10),
}
INTERLEAVED_MROPE_MODEL_TYPES = frozenset({"qwen3_vl", "qwen3_vl_moe", "qwen3_5", "qwen3_5_moe"})

# Rope types that are plain RoPE: "mrope" is Qwen2-VL's legacy name for it.
PLAIN_ROPE_TYPES = frozenset({"default", "mrope"})


@dataclass(frozen=True)
class HFYarnParameters:
    """What a YarnEmbedding needs from a transformers config (float64 throughout). yarn is False
    for a plain-RoPE config (scale 1, attention factor 1)."""

    dim: int
    base: float
    scale: float
    original_max_position_embeddings: int
    max_position_embeddings: int
    attention_factor: float
    beta_fast: float
    beta_slow: float
    truncate: bool
    interleaved: bool
    yarn: bool = True
    mrope_section: tuple[int, ...] | None = None
    mrope_interleaved: bool = False
    softmax_scale_factor: float = 1.0


def _as_dict(config: object) -> Mapping[str, Any]:
    if isinstance(config, Mapping):
        text = config.get("text_config")
        if isinstance(text, Mapping) and not _has_rope(config):  # a composite model (Llava...)
            # the text model's type decides MRoPE's defaults where its own block omits it
            if "model_type" not in text and "model_type" in config:
                text = {**text, "model_type": config["model_type"]}
            return text
        return config
    get_text_config = getattr(config, "get_text_config", None)
    if callable(get_text_config):  # a composite model's language model
        config = get_text_config()
    to_dict = getattr(config, "to_dict", None)
    if callable(to_dict):  # a transformers PretrainedConfig
        values = dict(to_dict())
        # where config.json gives no rope_theta, transformers takes the class's default_theta
        values.setdefault("default_theta", getattr(config, "default_theta", None))
        return values
    raise TypeError(
        "config must be a transformers PretrainedConfig or a dict (the contents of config.json), "
        f"got {type(config).__name__}"
    )


def _number(where: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):  # numpy scalars too
        raise TypeError(f"{where} must be a number, got {type(value).__name__} ({value!r})")
    if not math.isfinite(value):
        raise ValueError(f"{where} must be finite, got {value!r}")
    return float(value)


def _integer(where: str, value: object) -> int:
    number = _number(where, value)
    if number != int(number) or number <= 0:
        raise ValueError(f"{where} must be a positive integer, got {value!r}")
    return int(number)


def _has_rope(config: Mapping[str, Any]) -> bool:
    return bool(
        config.get("rope_scaling") or config.get("rope_parameters") or "rope_theta" in config
    )


def rope_block(config: Mapping[str, Any]) -> tuple[str, Mapping[str, Any], str]:
    """The rope block's key, contents and type ("default" where there is none). As in
    transformers, a non-empty rope_scaling wins over rope_parameters; parameters per layer type
    (transformers 5: {"full_attention": {...}, "sliding_attention": {...}}) give their YaRN
    block, the full-attention layers' where there are several."""
    for key in ("rope_scaling", "rope_parameters"):
        block = config.get(key)
        if not block:
            continue
        if not isinstance(block, Mapping):
            raise TypeError(f"{key} must be a dict, got {type(block).__name__}")
        kind = block.get("rope_type", block.get("type"))
        nested = {k: v for k, v in block.items() if isinstance(v, Mapping)}
        if kind is None and nested:
            labels = sorted(nested, key=lambda label: label != "full_attention")
            label = next(
                (k for k in labels if nested[k].get("rope_type", nested[k].get("type")) == "yarn"),
                labels[0],
            )
            key, block = f"{key}.{label}", nested[label]
            kind = block.get("rope_type", block.get("type"))
        return key, block, "default" if kind is None else kind
    return "rope_parameters", {}, "default"


def _rotary_block(config: Mapping[str, Any]) -> tuple[str, Mapping[str, Any], bool]:
    """The rope block's key and contents and whether it is YaRN (else plain RoPE), or a clear
    error naming a type yarn_ext does not serve."""
    key, block, kind = rope_block(config)
    if kind == "yarn":
        return key, block, True
    if kind in PLAIN_ROPE_TYPES:
        return key, block, False
    raise ValueError(
        f"{key}.rope_type is {kind!r}: yarn_ext serves 'yarn' and plain RoPE ('default') "
        "configs, not this rope type"
    )


def rope_base_and_dim(
    config: Mapping[str, Any], key: str, block: Mapping[str, Any]
) -> tuple[float, int]:
    """RoPE theta and the rotary dim (see the module docstring)."""
    theta = block.get("rope_theta")
    where_theta = f"{key}.rope_theta"
    if theta is None:
        theta, where_theta = config.get("rope_theta"), "rope_theta"
    if theta is None:  # transformers: the config class's default_theta, 10000 for most
        theta, where_theta = config.get("default_theta") or 10000.0, "default_theta"
    base = _number(where_theta, theta)
    if config.get("qk_rope_head_dim") is not None:
        return base, _integer("qk_rope_head_dim", config["qk_rope_head_dim"])
    if config.get("head_dim") is not None:
        head_dim = _integer("head_dim", config["head_dim"])
    elif config.get("hidden_size") is not None and config.get("num_attention_heads") is not None:
        head_dim = _integer("hidden_size", config["hidden_size"]) // _integer(
            "num_attention_heads", config["num_attention_heads"]
        )
    else:
        raise ValueError(
            "the config gives neither head_dim nor hidden_size and num_attention_heads"
        )
    partial = block.get("partial_rotary_factor")
    where_partial = f"{key}.partial_rotary_factor"
    if partial is None:
        partial, where_partial = config.get("partial_rotary_factor", 1.0), "partial_rotary_factor"
    return base, int(head_dim * _number(where_partial, partial))


def as_config_dict(config: object) -> Mapping[str, Any]:
    """A PretrainedConfig's to_dict(), or the dict itself."""
    return _as_dict(config)


def _get_mscale(scale: float, mscale: float = 1.0) -> float:
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def _mrope(
    cfg: Mapping[str, Any], key: str, block: Mapping[str, Any]
) -> tuple[tuple[int, ...] | None, bool]:
    """The MRoPE sections and style of a config (None for plain RoPE), see the module
    docstring."""
    model_type = str(cfg.get("model_type") or "").removesuffix("_text")
    where, sections = f"{key}.mrope_section", block.get("mrope_section")
    flag = block.get("mrope_interleaved")
    for other in ("rope_parameters", "rope_scaling"):  # the other block, where the key is not
        other_block = cfg.get(other)
        if isinstance(other_block, Mapping):
            if sections is None and other_block.get("mrope_section") is not None:
                where, sections = f"{other}.mrope_section", other_block["mrope_section"]
            if flag is None:
                flag = other_block.get("mrope_interleaved")
    if sections is None:
        sections = MROPE_DEFAULT_SECTIONS.get(model_type)
    if sections is None:
        return None, False
    if isinstance(sections, str | bytes) or not hasattr(sections, "__iter__"):
        raise TypeError(f"{where} must be a list of 3 integers, got {sections!r}")
    values = tuple(_integer_or_zero(where, s) for s in sections)
    if flag is not None and not isinstance(flag, bool):
        raise TypeError(f"mrope_interleaved must be true or false, got {flag!r}")
    if model_type in MROPE_DEFAULT_SECTIONS or flag is None:
        # transformers' rotary classes fix the style per model, whatever the flag says
        flag = model_type in INTERLEAVED_MROPE_MODEL_TYPES
    return values, flag


def _integer_or_zero(where: str, value: object) -> int:
    number = _number(where, value)
    if number != int(number) or number < 0:
        raise ValueError(f"{where} must hold non-negative integers, got {value!r}")
    return int(number)


def _plain_parameters(
    cfg: Mapping[str, Any], key: str, block: Mapping[str, Any]
) -> HFYarnParameters:
    """A plain-RoPE config: theta, the rotary dim and the context, unscaled."""
    base, dim = rope_base_and_dim(cfg, key, block)
    if cfg.get("max_position_embeddings") is None:
        raise ValueError("the config has no max_position_embeddings")
    max_positions = _integer("max_position_embeddings", cfg["max_position_embeddings"])
    sections, mrope_interleaved = _mrope(cfg, key, block)
    return HFYarnParameters(
        dim=dim,
        base=base,
        scale=1.0,
        original_max_position_embeddings=max_positions,
        max_position_embeddings=max_positions,
        attention_factor=1.0,
        beta_fast=32.0,
        beta_slow=1.0,
        truncate=True,
        interleaved=_interleaved(cfg),
        yarn=False,
        mrope_section=sections,
        mrope_interleaved=mrope_interleaved,
    )


def _interleaved(cfg: Mapping[str, Any]) -> bool:
    interleaved = cfg.get("rope_interleave")
    if interleaved is None:
        interleaved = cfg.get("model_type") in INTERLEAVED_MODEL_TYPES
    if not isinstance(interleaved, bool):
        raise TypeError(f"rope_interleave must be true or false, got {interleaved!r}")
    return interleaved


def hf_yarn_parameters(config: object) -> HFYarnParameters:
    """The rotary parameters of a transformers config (see the module docstring for the rules):
    YaRN, or plain RoPE (yarn False)."""
    cfg = _as_dict(config)
    key, block, yarn = _rotary_block(cfg)
    if not yarn:
        return _plain_parameters(cfg, key, block)

    def get(name: str) -> object:
        return block.get(name)

    base, dim = rope_base_and_dim(cfg, key, block)

    if cfg.get("max_position_embeddings") is None:
        raise ValueError("the config has no max_position_embeddings")
    max_positions = _integer("max_position_embeddings", cfg["max_position_embeddings"])
    # transformers: a top-level original_max_position_embeddings wins (Phi-3's layout), then the
    # block's, then max_position_embeddings
    if cfg.get("original_max_position_embeddings") is not None:
        original = _integer(
            "original_max_position_embeddings", cfg["original_max_position_embeddings"]
        )
    elif get("original_max_position_embeddings") is not None:
        original = _integer(
            f"{key}.original_max_position_embeddings", get("original_max_position_embeddings")
        )
    else:
        original = max_positions

    factor = get("factor")
    scale = max_positions / original if factor is None else _number(f"{key}.factor", factor)

    mscale_all_dim = get("mscale_all_dim")
    if mscale_all_dim is not None:
        mscale_all_dim = _number(f"{key}.mscale_all_dim", mscale_all_dim)
    # DeepSeek's softmax correction: transformers' DeepSeek-V2/V3 attention multiplies its
    # scaling by get_mscale(factor, mscale_all_dim) twice (factor as given, not the derived scale)
    softmax_scale_factor = 1.0
    if mscale_all_dim and factor is not None:
        softmax_scale_factor = _get_mscale(scale, mscale_all_dim) ** 2

    attention_factor = get("attention_factor")
    if attention_factor is not None:
        attention = _number(f"{key}.attention_factor", attention_factor)
    else:
        mscale = get("mscale")
        if mscale is not None:
            mscale = _number(f"{key}.mscale", mscale)
        if mscale and mscale_all_dim:
            attention = _get_mscale(scale, mscale) / _get_mscale(scale, mscale_all_dim)
        else:
            attention = _get_mscale(scale)

    # transformers: `get("beta_fast") or 32` - a zero or missing beta takes the default
    beta_fast = get("beta_fast")
    beta_slow = get("beta_slow")
    beta_fast = _number(f"{key}.beta_fast", beta_fast) if beta_fast is not None else 0.0
    beta_slow = _number(f"{key}.beta_slow", beta_slow) if beta_slow is not None else 0.0

    # transformers reads truncate from the top-level rope dict, also where the YaRN block is one
    # of several per layer type
    top_key = key.split(".")[0]
    truncate = cfg[top_key].get("truncate") if top_key in cfg else None
    if truncate is None:
        truncate = True
    if not isinstance(truncate, bool):
        raise TypeError(f"{top_key}.truncate must be true or false, got {truncate!r}")
    interleaved = _interleaved(cfg)
    sections, mrope_interleaved = _mrope(cfg, key, block)

    return HFYarnParameters(
        dim=dim,
        base=base,
        scale=scale,
        original_max_position_embeddings=original,
        max_position_embeddings=max_positions,
        attention_factor=attention,
        beta_fast=beta_fast or 32.0,
        beta_slow=beta_slow or 1.0,
        truncate=truncate,
        interleaved=interleaved,
        mrope_section=sections,
        mrope_interleaved=mrope_interleaved,
        softmax_scale_factor=softmax_scale_factor,
    )
