"""yarn_ext.integrations.transformers end to end, on small randomly initialised Llama, Qwen2 and
Qwen3 models built from configs here (nothing downloaded): logits with and without the switch
agree within float32 rounding in float32 and within bfloat16 tolerance in bfloat16, 32 greedily
generated tokens are identical in float32, and restore() gives back transformers' own code."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

from yarn_ext.integrations.transformers import is_switched, restore, use_yarn_ext

YARN = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64}
SMALL = {
    "vocab_size": 128,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 256,
    "rope_theta": 10000.0,
}
MODELS = {
    "llama": (LlamaConfig, LlamaForCausalLM, {}),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM, {}),
    "qwen3": (Qwen3Config, Qwen3ForCausalLM, {"head_dim": 16}),
}


def build(name: str, rope_scaling: dict | None) -> torch.nn.Module:
    config_cls, model_cls, extra = MODELS[name]
    config = config_cls(**SMALL, **extra, rope_scaling=dict(rope_scaling) if rope_scaling else None)
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    return model_cls(config).eval()


def tokens(length: int = 40) -> torch.Tensor:
    return torch.randint(0, 128, (2, length), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("rope_scaling", [YARN, None], ids=["yarn", "default"])
def test_float32_logits_and_greedy_generation(name: str, rope_scaling: dict | None) -> None:
    model = build(name, rope_scaling)
    ids = tokens()
    with torch.no_grad():
        want = model(ids).logits
        want_generated = model.generate(ids[:, :8], max_new_tokens=32, do_sample=False)
        use_yarn_ext(model)
        assert is_switched(model)
        got = model(ids).logits
        got_generated = model.generate(ids[:, :8], max_new_tokens=32, do_sample=False)
        restore(model)
        assert not is_switched(model)
        again = model(ids).logits
    scale = want.abs().max().item()
    error = (got - want).abs().max().item()
    assert error <= 1e-5 * scale, f"max |logit difference| {error:.2e} (logits up to {scale:.2f})"
    assert torch.equal(got_generated, want_generated)
    assert got_generated.shape[1] == 8 + 32
    assert torch.equal(again, want)  # restored: transformers' own code, bit for bit


@pytest.mark.parametrize("name", list(MODELS))
def test_bfloat16_logits(name: str) -> None:
    model = build(name, YARN)
    ids = tokens()
    with torch.no_grad():
        reference = model(ids).logits.double()  # float32 model, transformers' rotation
        model.to(torch.bfloat16)
        theirs = model(ids).logits.double()
        use_yarn_ext(model)
        ours = model(ids).logits.double()
        restore(model)
    scale = reference.abs().max().item()
    # bfloat16 rounds every activation to 8 bits; the switch must not move the logits further
    # from the float32 model than transformers' own bfloat16 rotation does (and stay close).
    ours_error = (ours - reference).abs().max().item()
    theirs_error = (theirs - reference).abs().max().item()
    assert ours_error <= 0.05 * scale, f"{ours_error:.3e} vs logits up to {scale:.2f}"
    assert ours_error <= 1.5 * theirs_error + 1e-3 * scale


def test_training_gradients_flow() -> None:
    model = build("qwen3", YARN).train()
    ids = tokens(16)
    use_yarn_ext(model)
    try:
        loss = model(ids, labels=ids).loss
        loss.backward()
    finally:
        restore(model)
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_switch_is_idempotent_and_leaves_other_models_alone() -> None:
    switched, plain = build("llama", YARN), build("llama", YARN)
    ids = tokens(12)
    with torch.no_grad():
        want = plain(ids).logits
        use_yarn_ext(switched)
        use_yarn_ext(switched)  # a second switch changes nothing
        assert torch.equal(plain(ids).logits, want)  # not switched: transformers' code
        restore(switched)
        assert not is_switched(switched)


def test_unsupported_rope_type_and_model_raise() -> None:
    model = build("llama", {"rope_type": "linear", "factor": 2.0})
    with pytest.raises(ValueError, match="rope_type is 'linear'"):
        use_yarn_ext(model)
    assert not is_switched(model)
    with pytest.raises(ValueError, match="no rotary embedding"):
        use_yarn_ext(torch.nn.Linear(2, 2))


def test_copies_and_replaced_functions_keep_working() -> None:
    import copy
    import importlib
    import pickle

    model = build("qwen2", YARN)
    ids = tokens(12)
    with torch.no_grad():
        want = model(ids).logits
        use_yarn_ext(model)
        switched = model(ids).logits
        twin = copy.deepcopy(model)
        pickled = pickle.loads(pickle.dumps(model))
        restore(model)
        assert torch.equal(model(ids).logits, want)
        # the copies are still switched, and give the switched model's logits
        assert is_switched(twin) and torch.equal(twin(ids).logits, switched)
        assert is_switched(pickled) and torch.equal(pickled(ids).logits, switched)
        # another library replacing apply_rotary_pos_emb after the switch: still yarn_ext's
        modeling = importlib.import_module("transformers.models.qwen2.modeling_qwen2")
        modeling.apply_rotary_pos_emb = modeling.apply_rotary_pos_emb.__wrapped__
        assert torch.equal(twin(ids).logits, switched)
        restore(twin)
        assert torch.equal(twin(ids).logits, want)
