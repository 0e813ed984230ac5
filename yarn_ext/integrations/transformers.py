"""Run a transformers model's rotary embedding on yarn_ext's kernels: Llama, Qwen2, Qwen3, and
the multimodal-RoPE families Qwen2-VL, Qwen2.5-VL, Qwen3-VL (and MoE) and Qwen3.5 (and MoE).

    from yarn_ext.integrations.transformers import use_yarn_ext, restore

    use_yarn_ext(model)   # from now on q and k are rotated by yarn_ext
    ...
    restore(model)        # back to transformers' own code

How: in these models the rotary module (model.model.rotary_emb) computes (cos, sin) once per
forward, and every attention layer calls its modeling module's apply_rotary_pos_emb(q, k, cos,
sin). The switch adds a forward hook to the rotary module that returns (position_ids, the
YarnEmbedding) instead, and wraps apply_rotary_pos_emb - once, for good - so that, given that
pair, it rotates q and k with yarn_ext's differentiable operator (float64 angles, no cos/sin
tensors); any other call goes to the function it wrapped, so models that are not switched are
not affected. A switched model survives copy.deepcopy, pickling and .to(); where its layers sit
on several devices, the embedding follows q to each.

The YarnEmbedding comes from the rotary module's config (a composite model's text config)
through YarnEmbedding.from_hf_config: YaRN (rope_type "yarn") or plain RoPE (rope_type
"default"), MRoPE where the model has it. Other rope types (linear, dynamic, llama3, longrope)
raise. In the MRoPE models position_ids is [3, batch, seq] (temporal, height, width), and q and
k are rotated with each frequency at its component's position; the vision tower's own rotary
embedding is left alone.

Compiled: the hook and the wrapper trace without a graph break, so that transformers'
fast-decoding recipe (model.forward = torch.compile(model.forward, fullgraph=True), generate
with cache_implementation="static") works on a switched model wherever it works on the
unswitched one.
"""

from __future__ import annotations

import copy
import importlib
import threading
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from yarn_ext.embedding import YarnEmbedding

# The modeling modules whose attention calls a module-level apply_rotary_pos_emb(q, k, cos, sin)
# with q and k as [batch, heads, seq, head_dim].
MODELING_MODULES = {
    name: f"transformers.models.{name}.modeling_{name}"
    for name in (
        "llama",
        "qwen2",
        "qwen3",
        "qwen2_vl",
        "qwen2_5_vl",
        "qwen3_vl",
        "qwen3_vl_moe",
        "qwen3_5",
        "qwen3_5_moe",
    )
}
_ATTRIBUTE = "_yarn_ext_rope"  # the YarnEmbedding, registered on the rotary module
_HOOK = "_yarn_ext_hook"  # the id of the forward hook, on the rotary module
_lock = threading.Lock()
# The modeling modules whose apply_rotary_pos_emb is wrapped in this process. The hook reads it
# (a set of names traces without a graph break; importing a module does not).
_INSTALLED: set[str] = set()


def _rope_for(module: nn.Module, config: object) -> YarnEmbedding:
    rope = YarnEmbedding.from_hf_config(config, device=module.inv_freq.device)
    if rope.dim != 2 * module.inv_freq.numel():
        raise ValueError(
            f"the config gives a rotary dim of {rope.dim}, the model rotates "
            f"{2 * module.inv_freq.numel()} features"
        )
    return rope


def _on_device(rope: YarnEmbedding, device: torch.device) -> YarnEmbedding:
    """The embedding on q's device: a model split over devices has layers on several."""
    if rope.inv_freq.device == device:
        return rope
    copies = rope.__dict__.setdefault("_yarn_ext_copies", {})
    if device not in copies:
        copies[device] = copy.deepcopy(rope).to(device)
    return copies[device]


def _wrap(original: Callable[..., Any]) -> Callable[..., Any]:
    def apply_rotary_pos_emb(
        q: Tensor, k: Tensor, cos: Any, sin: Any, *args: Any, **kwargs: Any
    ) -> tuple[Tensor, Tensor]:
        if not isinstance(sin, YarnEmbedding):  # a model that is not switched
            return original(q, k, cos, sin, *args, **kwargs)
        rope = _on_device(sin, q.device)
        # q, k: [batch, heads, seq, head_dim]; position_ids [batch, seq] -> [batch, 1, seq], and
        # MRoPE's [3, batch, seq] -> [3, batch, 1, seq]
        positions = cos.to(q.device).unsqueeze(-2)
        return rope(q, positions=positions), rope(k, positions=positions)

    apply_rotary_pos_emb.__wrapped__ = original  # type: ignore[attr-defined]
    apply_rotary_pos_emb._yarn_ext = True  # type: ignore[attr-defined]
    return apply_rotary_pos_emb


def _install_wrapper(modeling_name: str) -> None:
    """Wraps the modeling module's apply_rotary_pos_emb unless it is wrapped already (also after
    another library replaced it: then that library's function is the one wrapped)."""
    modeling = importlib.import_module(modeling_name)
    if not getattr(modeling.apply_rotary_pos_emb, "_yarn_ext", False):
        with _lock:
            if not getattr(modeling.apply_rotary_pos_emb, "_yarn_ext", False):
                modeling.apply_rotary_pos_emb = _wrap(modeling.apply_rotary_pos_emb)
    _INSTALLED.add(modeling_name)


def _rotary_hook(
    module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any
) -> tuple[Tensor, YarnEmbedding]:
    # (position_ids, the YarnEmbedding) in place of (cos, sin): see the module docstring. The
    # wrapper is (re)installed here too: for a model unpickled in a new process, and after
    # another library replaced the function. Not while compiling, where importing a module is a
    # graph break: there use_yarn_ext (or an eager call) has installed it already.
    name = type(module).__module__
    if not torch.compiler.is_compiling() or name not in _INSTALLED:
        _install_wrapper(name)
    position_ids = kwargs["position_ids"] if "position_ids" in kwargs else args[1]
    return position_ids, getattr(module, _ATTRIBUTE)


def _rotary_modules(model: nn.Module) -> list[nn.Module]:
    """Every supported rotary embedding in model: the language model's (a vision tower's
    rotary embedding rotates image patches with a function of its own)."""
    return [
        module
        for module in model.modules()
        if type(module).__module__ in MODELING_MODULES.values()
        and type(module).__name__.endswith("RotaryEmbedding")
        and "Vision" not in type(module).__name__
    ]


def use_yarn_ext(model: nn.Module) -> nn.Module:
    """Switches `model` (a transformers Llama, Qwen2, Qwen3, Qwen2-VL, Qwen2.5-VL, Qwen3-VL or
    Qwen3.5 model - MoE variants included - with or without its LM head, or a composite model
    around one) to yarn_ext's kernels, in place, and returns it. Idempotent; `restore` undoes
    it."""
    rotary = _rotary_modules(model)
    if not rotary:
        raise ValueError(
            f"{type(model).__name__} has no rotary embedding of a supported architecture "
            f"({', '.join(MODELING_MODULES)})"
        )
    todo = [module for module in rotary if not hasattr(module, _ATTRIBUTE)]
    ropes = []
    for module in todo:  # every embedding first: a failure leaves the model unchanged
        config = getattr(module, "config", None)
        if config is None:
            config = getattr(model, "config", None)
        if config is None:
            raise ValueError(f"{type(module).__name__} has no config")
        ropes.append(_rope_for(module, config))
    for module, rope in zip(todo, ropes, strict=True):
        _install_wrapper(type(module).__module__)
        module.add_module(_ATTRIBUTE, rope)
        handle = module.register_forward_hook(_rotary_hook, with_kwargs=True)
        setattr(module, _HOOK, handle.id)
    return model


def restore(model: nn.Module) -> nn.Module:
    """Undoes `use_yarn_ext`: the model runs transformers' own rotary code again (the wrapped
    apply_rotary_pos_emb stays, passing every call of an unswitched model through)."""
    for module in _rotary_modules(model):
        if not hasattr(module, _ATTRIBUTE):
            continue
        hook_id = getattr(module, _HOOK)
        module._forward_hooks.pop(hook_id, None)
        module._forward_hooks_with_kwargs.pop(hook_id, None)
        delattr(module, _HOOK)
        delattr(module, _ATTRIBUTE)
    return model


def is_switched(model: nn.Module) -> bool:
    """Whether `model`'s rotary embedding runs on yarn_ext's kernels."""
    return any(hasattr(module, _ATTRIBUTE) for module in _rotary_modules(model))
