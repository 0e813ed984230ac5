"""The multimodal-RoPE families against transformers itself, on small random models built here
(nothing downloaded): Qwen2-VL, Qwen2.5-VL (contiguous sections), Qwen3-VL and its MoE
(interleaved), Qwen3.5 and its MoE (interleaved, partial rotary). Their rotary classes and
apply functions against yarn_ext; whole models with an image (so that the t, h and w positions
really differ) switched with use_yarn_ext: logits and 32 greedy tokens; transformers'
fast-decoding compile recipe on a switched model; DeepSeek's softmax correction."""

from __future__ import annotations

import importlib
import math

import pytest
import torch
import transformers as tf
from torch._dynamo.utils import counters

from yarn_ext import YarnEmbedding
from yarn_ext.integrations.transformers import is_switched, restore, use_yarn_ext

from .support import randn
from .test_transformers_integration import SMALL

TEXT = {**SMALL, "vocab_size": 160}  # the rope block is each test's
del TEXT["rope_theta"]
PLAIN = {"rope_type": "default", "rope_theta": 10000.0}
YARN = {
    "rope_type": "yarn",
    "factor": 4.0,
    "original_max_position_embeddings": 64,
    "rope_theta": 10000.0,
}
IMAGE, VISION_START, VISION_END, VIDEO = 151, 152, 153, 154

# family: (config class, model class, text config, vision config) - head_dim 16 (8 pairs), or
# Qwen3.5's 32 with a quarter rotated (4 pairs)
CONTIGUOUS = {"mrope_section": [2, 3, 3]}
INTERLEAVED = {"mrope_section": [3, 3, 2], "mrope_interleaved": True}
QWEN35 = {"mrope_section": [2, 1, 1], "mrope_interleaved": True, "partial_rotary_factor": 0.25}
QWEN35_TEXT = {
    "head_dim": 32,
    "layer_types": ["linear_attention", "full_attention"],
    "linear_num_key_heads": 2,
    "linear_num_value_heads": 2,
    "linear_key_head_dim": 16,
    "linear_value_head_dim": 16,
}
MOE = {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32}
VISION_2 = {"depth": 1, "embed_dim": 32, "hidden_size": 64, "num_heads": 2}
VISION_25 = {
    "depth": 1,
    "hidden_size": 32,
    "out_hidden_size": 64,
    "intermediate_size": 64,
    "num_heads": 2,
    "fullatt_block_indexes": [0],
    "window_size": 56,
}
VISION_3 = {
    "depth": 1,
    "hidden_size": 32,
    "out_hidden_size": 64,
    "intermediate_size": 64,
    "num_heads": 2,
    "patch_size": 16,
    "num_position_embeddings": 16,
}
FAMILIES = {
    "qwen2_vl": ("Qwen2VL", {}, CONTIGUOUS, VISION_2),
    "qwen2_5_vl": ("Qwen2_5_VL", {}, CONTIGUOUS, VISION_25),
    "qwen3_vl": ("Qwen3VL", {"head_dim": 16}, INTERLEAVED, {**VISION_3, "depth": 2}),
    "qwen3_vl_moe": (
        "Qwen3VLMoe",
        {"head_dim": 16, **MOE, "decoder_sparse_step": 1},
        INTERLEAVED,
        {**VISION_3, "depth": 2},
    ),
    "qwen3_5": ("Qwen3_5", QWEN35_TEXT, QWEN35, VISION_3),
    "qwen3_5_moe": (
        "Qwen3_5Moe",
        {**QWEN35_TEXT, **MOE, "shared_expert_intermediate_size": 32},
        QWEN35,
        VISION_3,
    ),
}


def build(family: str, rope: dict) -> torch.nn.Module:
    prefix, text_extra, mrope, vision = FAMILIES[family]
    text = {**TEXT, **text_extra, "rope_parameters": {**rope, **mrope}}
    if prefix.startswith("Qwen3VL"):
        vision = {**vision, "deepstack_visual_indexes": [0]}
    config = getattr(tf, f"{prefix}Config")(
        text_config=text,
        vision_config={"spatial_merge_size": 2, "temporal_patch_size": 2, **vision},
        image_token_id=IMAGE,
        video_token_id=VIDEO,
        vision_start_token_id=VISION_START,
        vision_end_token_id=VISION_END,
    )
    for c in (config, config.text_config, config.vision_config):
        c._attn_implementation = "eager"
    torch.manual_seed(0)
    return getattr(tf, f"{prefix}ForConditionalGeneration")(config).eval()


def image_inputs(model: torch.nn.Module, text_tokens: int = 30) -> dict[str, torch.Tensor]:
    """An image of 4 x 6 patches (6 tokens after the 2 x 2 merge) inside a text prompt."""
    generator = torch.Generator().manual_seed(1)
    patch = model.config.vision_config.patch_size
    grid = torch.tensor([[1, 4, 6]])
    pixels = torch.randn(int(grid.prod()), 3 * 2 * patch * patch, generator=generator)
    text = torch.randint(0, 150, (1, text_tokens), generator=generator)
    image = torch.full((1, int(grid.prod()) // 4), IMAGE)
    start, end = torch.tensor([[VISION_START]]), torch.tensor([[VISION_END]])
    ids = torch.cat([text[:, :5], start, image, end, text[:, 5:]], 1)
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "pixel_values": pixels,
        "image_grid_thw": grid,
        "mm_token_type_ids": (ids == IMAGE).int(),
    }


def text_rotary(model: torch.nn.Module) -> torch.nn.Module:
    return next(
        m
        for m in model.modules()
        if type(m).__name__.endswith("RotaryEmbedding") and "Vision" not in type(m).__name__
    )


# -- the rotary classes and apply functions ---------------------------------------------------


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_5"])
@pytest.mark.parametrize("rope", [PLAIN, YARN], ids=["default", "yarn"])
def test_rotary_class_and_apply_function_parity(family: str, rope: dict) -> None:
    model = build(family, rope)
    rotary = text_rotary(model)
    config = model.config.text_config
    modeling = importlib.import_module(type(rotary).__module__)
    ours = YarnEmbedding.from_hf_config(config)
    assert ours.mrope_section == tuple(FAMILIES[family][2]["mrope_section"])
    head_dim = getattr(config, "head_dim", None) or 16
    q = randn(2, 4, 11, head_dim)
    k = randn(2, 2, 11, head_dim, seed=1)
    # t, h and w differ; some positions are past the 256-position cache
    positions = torch.randint(0, 400, (3, 2, 11), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        cos, sin = rotary(q, positions)
        # (a switch wraps this function; given cos and sin it is transformers' own)
        want_q, want_k = modeling.apply_rotary_pos_emb(q, k, cos, sin)
    got_q = ours(q, positions=positions[:, :, None, :])
    got_k, _ = ours.rotate_(k.clone(), None, positions[:, :, None, :])
    # transformers forms its angles in float32 (position * inv_freq rounded): at position 400
    # that is off by a few 1e-5; a wrong component would be off by O(1)
    for got, want in ((got_q, want_q), (got_k, want_k)):
        assert (got - want).abs().max().item() <= 1e-4 * want.abs().max().item()
    our_cos, our_sin = ours.cos_sin(positions=positions)
    assert (our_cos - cos).abs().max().item() <= 1e-4
    assert (our_sin - sin).abs().max().item() <= 1e-4


# -- whole models, switched ---------------------------------------------------------------------


def positions_seen(model: torch.nn.Module, inputs: dict) -> torch.Tensor:
    """The position_ids the language model's rotary embedding was called with."""
    seen = []
    handle = text_rotary(model).register_forward_pre_hook(
        lambda module, args: seen.append(args[1].clone())
    )
    try:
        with torch.no_grad():
            model(**inputs)
    finally:
        handle.remove()
    return seen[0]


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("rope", [YARN, PLAIN], ids=["yarn", "default"])
def test_image_logits_and_greedy_generation(family: str, rope: dict) -> None:
    model = build(family, rope)
    inputs = image_inputs(model)
    positions = positions_seen(model, inputs)
    assert positions.shape[0] == 3 and not torch.equal(positions[1], positions[0])
    with torch.no_grad():
        want = model(**inputs).logits
        want_generated = model.generate(**inputs, max_new_tokens=32, do_sample=False)
        use_yarn_ext(model)
        assert is_switched(model)
        got = model(**inputs).logits
        got_generated = model.generate(**inputs, max_new_tokens=32, do_sample=False)
        restore(model)
        again = model(**inputs).logits
    scale = want.abs().max().item()
    error = (got - want).abs().max().item()
    assert error <= 1e-5 * scale, f"max |logit difference| {error:.2e} (logits up to {scale:.2f})"
    assert torch.equal(got_generated, want_generated)
    assert got_generated.shape[1] == inputs["input_ids"].shape[1] + 32
    assert torch.equal(again, want)


def test_text_only_generation() -> None:
    model = build("qwen3_vl", YARN)
    ids = image_inputs(model)["input_ids"][:, :5]
    with torch.no_grad():
        want = model.generate(ids, max_new_tokens=32, do_sample=False)
        use_yarn_ext(model)
        got = model.generate(ids, max_new_tokens=32, do_sample=False)
        restore(model)
    assert torch.equal(got, want)


# -- transformers' fast-decoding recipe, compiled -------------------------------------------------


def compiled_generate(
    model: torch.nn.Module, inputs: dict, fullgraph: bool
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(eager tokens, compiled tokens, graph breaks) of generate with a static cache and
    model.forward compiled."""
    torch._dynamo.reset()
    counters.clear()
    with torch.no_grad():
        eager = model.generate(
            **inputs, max_new_tokens=12, do_sample=False, cache_implementation="static"
        )
        forward = model.forward
        model.forward = torch.compile(forward, fullgraph=fullgraph)
        try:
            compiled = model.generate(
                **inputs, max_new_tokens=12, do_sample=False, cache_implementation="static"
            )
        finally:
            model.forward = forward
    return eager, compiled, sum(counters["graph_break"].values())


def qwen3() -> torch.nn.Module:
    config = tf.Qwen3Config(**TEXT, head_dim=16, rope_parameters=dict(YARN))
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    return tf.Qwen3ForCausalLM(config).eval()


@pytest.mark.slow
@pytest.mark.parametrize("family", ["qwen3", "qwen2_vl", "qwen3_5"])
def test_switched_text_generation_compiles_with_fullgraph(family: str) -> None:
    model = qwen3() if family == "qwen3" else build(family, YARN)
    ids = {"input_ids": torch.randint(0, 150, (1, 6), generator=torch.Generator().manual_seed(3))}
    # transformers' own model compiles so (else this test would say nothing)
    eager, compiled, breaks = compiled_generate(model, ids, fullgraph=True)
    assert torch.equal(compiled, eager) and breaks == 0
    use_yarn_ext(model)
    try:
        eager, compiled, breaks = compiled_generate(model, ids, fullgraph=True)
    finally:
        restore(model)
    assert torch.equal(compiled, eager) and breaks == 0


@pytest.mark.slow
@pytest.mark.parametrize("family", ["qwen2_vl", "qwen3_5"])
def test_switched_image_generation_adds_no_graph_break(family: str) -> None:
    """Image prefill breaks transformers' own graph (.tolist() / .item() in get_rope_index and
    the vision tower): the switch must add no break of its own."""
    model = build(family, YARN)
    inputs = image_inputs(model, text_tokens=10)
    eager, compiled, theirs = compiled_generate(model, inputs, fullgraph=False)
    assert torch.equal(compiled, eager) and theirs > 0
    use_yarn_ext(model)
    try:
        eager, compiled, ours = compiled_generate(model, inputs, fullgraph=False)
    finally:
        restore(model)
    assert torch.equal(compiled, eager)
    assert ours == theirs


# -- DeepSeek's softmax correction --------------------------------------------------------------


@pytest.mark.parametrize(
    ("mscale", "mscale_all_dim", "factor"), [(1.0, 1.0, 40.0), (0.707, 0.707, 16.0), (1.0, 0, 4.0)]
)
def test_deepseek_softmax_scale_factor_matches_transformers(mscale, mscale_all_dim, factor):
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3Attention

    rope = {
        "rope_type": "yarn",
        "factor": factor,
        "original_max_position_embeddings": 64,
        "mscale": mscale,
        "mscale_all_dim": mscale_all_dim,
        "beta_fast": 32,
        "beta_slow": 1,
        "rope_theta": 10000.0,
    }
    config = tf.DeepseekV3Config(
        vocab_size=64,
        hidden_size=64,
        intermediate_size=64,
        moe_intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        q_lora_rank=32,
        kv_lora_rank=16,
        qk_rope_head_dim=8,
        qk_nope_head_dim=16,
        v_head_dim=16,
        max_position_embeddings=256,
        rope_parameters=rope,
    )
    attention = DeepseekV3Attention(config, layer_idx=0)
    want = attention.scaling / attention.qk_head_dim**-0.5
    ours = YarnEmbedding.from_hf_config(config)
    assert math.isclose(ours.softmax_scale_factor, want, rel_tol=1e-12)
    assert math.isclose(YarnEmbedding.from_hf_config(config.to_dict()).softmax_scale_factor, want)
    if mscale_all_dim:
        assert ours.softmax_scale_factor > 1.0
        assert f"softmax_scale_factor={ours.softmax_scale_factor:.6g}" in repr(ours)
