"""Run a transformers Llama, Qwen2 or Qwen3 model's rotary embedding on yarn_ext's kernels.

    from yarn_ext.integrations.transformers import use_yarn_ext, restore

    use_yarn_ext(model)   # from now on q and k are rotated by yarn_ext
    ...
    restore(model)        # back to transformers' own code

How: in these models the rotary module (model.model.rotary_emb) computes (cos, sin) once per
forward, and every attention layer calls its modeling module's apply_rotary_pos_emb(q, k, cos,
sin). The switch makes the rotary module return (position_ids, the YarnEmbedding) instead, and
wraps apply_rotary_pos_emb so that, given that pair, it rotates q and k with yarn_ext's
differentiable operator - float64 angles, no cos/sin tensors - and otherwise calls transformers'
function unchanged (so models that are not switched are not affected).

The YarnEmbedding comes from the model's config: YaRN (rope_type "yarn") through
YarnEmbedding.from_hf_config, plain RoPE (rope_type "default") as a YarnEmbedding at scale 1.
Other rope types (linear, dynamic, llama3, longrope) raise.
"""

from __future__ import annotations

import importlib
import types
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from yarn_ext.embedding import YarnEmbedding
from yarn_ext.hf_config import as_config_dict, rope_base_and_dim, rope_block

# The modeling modules whose attention calls a module-level apply_rotary_pos_emb(q, k, cos, sin)
# with q and k as [batch, heads, seq, head_dim].
MODELING_MODULES = {
    "llama": "transformers.models.llama.modeling_llama",
    "qwen2": "transformers.models.qwen2.modeling_qwen2",
    "qwen3": "transformers.models.qwen3.modeling_qwen3",
}
_ATTRIBUTE = "_yarn_ext_rope"  # the YarnEmbedding, registered on the rotary module
_originals: dict[str, Callable[..., Any]] = {}  # modeling module -> its apply_rotary_pos_emb
_switched: dict[str, int] = {}  # modeling module -> switched rotary modules


def _rope_for(config: object, device: torch.device) -> YarnEmbedding:
    cfg = as_config_dict(config)
    key, block, kind = rope_block(cfg)
    if kind == "yarn":
        return YarnEmbedding.from_hf_config(config, device=device)
    if kind == "default":
        base, dim = rope_base_and_dim(cfg, key, block)
        return YarnEmbedding(dim, cfg["max_position_embeddings"], base, device=device)
    raise ValueError(f"{key}.rope_type is {kind!r}: yarn_ext runs 'yarn' and 'default' RoPE")


def _apply_rotary_pos_emb(original: Callable[..., Any]) -> Callable[..., Any]:
    def apply_rotary_pos_emb(
        q: Tensor, k: Tensor, cos: Any, sin: Any, *args: Any, **kwargs: Any
    ) -> tuple[Tensor, Tensor]:
        if not isinstance(sin, YarnEmbedding):  # a model that is not switched
            return original(q, k, cos, sin, *args, **kwargs)
        # q, k: [batch, heads, seq, head_dim]; position_ids [batch, seq] -> [batch, 1, seq]
        positions = cos[:, None, :]
        return sin(q, positions=positions), sin(k, positions=positions)

    apply_rotary_pos_emb.__wrapped__ = original  # type: ignore[attr-defined]
    return apply_rotary_pos_emb


def _rotary_forward(self: nn.Module, x: Tensor, position_ids: Tensor) -> tuple[Tensor, Any]:
    # (position_ids, the YarnEmbedding) in place of (cos, sin): see the module docstring
    return position_ids, getattr(self, _ATTRIBUTE)


def _rotary_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(modeling module name, rotary module) of every supported rotary embedding in model."""
    found = []
    for module in model.modules():
        name = type(module).__module__
        if name in MODELING_MODULES.values() and type(module).__name__.endswith("RotaryEmbedding"):
            found.append((name, module))
    return found


def use_yarn_ext(model: nn.Module) -> nn.Module:
    """Switches `model` (a transformers Llama, Qwen2 or Qwen3 model, with or without its LM head)
    to yarn_ext's kernels, in place, and returns it. Idempotent; `restore` undoes it."""
    rotary = _rotary_modules(model)
    if not rotary:
        raise ValueError(
            f"{type(model).__name__} has no rotary embedding of a supported architecture "
            f"({', '.join(MODELING_MODULES)})"
        )
    config = getattr(model, "config", None)
    if config is None:
        raise ValueError(f"{type(model).__name__} has no config")
    for module_name, module in rotary:
        if hasattr(module, _ATTRIBUTE):
            continue
        device = next((b.device for b in module.buffers()), torch.device("cpu"))
        module.add_module(_ATTRIBUTE, _rope_for(config, device))
        module.forward = types.MethodType(_rotary_forward, module)
        modeling = importlib.import_module(module_name)
        if module_name not in _originals:
            _originals[module_name] = modeling.apply_rotary_pos_emb
            modeling.apply_rotary_pos_emb = _apply_rotary_pos_emb(_originals[module_name])
        _switched[module_name] = _switched.get(module_name, 0) + 1
    return model


def restore(model: nn.Module) -> nn.Module:
    """Undoes `use_yarn_ext`: the model runs transformers' own rotary code again. transformers'
    apply_rotary_pos_emb is put back once no switched model of that architecture is left."""
    for module_name, module in _rotary_modules(model):
        if not hasattr(module, _ATTRIBUTE):
            continue
        delattr(module, _ATTRIBUTE)
        del module.forward  # the class's forward again
        _switched[module_name] -= 1
        if _switched[module_name] == 0:
            importlib.import_module(module_name).apply_rotary_pos_emb = _originals.pop(module_name)
            del _switched[module_name]
    return model


def is_switched(model: nn.Module) -> bool:
    """Whether `model`'s rotary embedding runs on yarn_ext's kernels."""
    return any(hasattr(module, _ATTRIBUTE) for _, module in _rotary_modules(model))
