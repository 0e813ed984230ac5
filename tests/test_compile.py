"""torch.compile, torch.export, autocast, and (on a GPU) host-sync freedom and CUDA graphs.

The usual path - positions given, or a cache long enough - is inside the graph: fullgraph=True
holds, dynamic shapes do not recompile, and results equal eager bit for bit (the same kernels
run). Cache growth is a graph break by design (it runs eagerly, see YarnEmbedding)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
import torch._dynamo
from torch import Tensor, nn
from torch._dynamo.utils import counters
from torch.export import Dim

from yarn_ext import YarnEmbedding

from .support import DEVICES, randn, requires_cuda


@pytest.fixture(autouse=True)
def fresh_dynamo() -> Iterator[None]:
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


def compiled_graphs() -> int:
    return counters["stats"]["unique_graphs"]


class AttentionBlock(nn.Module):
    """A grouped-query attention block on a fused qkv projection, rotating q and k either out of
    place (forward, differentiable) or in place (rotate_, inference)."""

    def __init__(self, in_place: bool, heads: int = 4, kv_heads: int = 2, head_dim: int = 32):
        super().__init__()
        self.in_place, self.heads, self.kv_heads, self.head_dim = (
            in_place,
            heads,
            kv_heads,
            head_dim,
        )
        width = heads * head_dim
        self.qkv = nn.Linear(width, (heads + 2 * kv_heads) * head_dim)
        self.out = nn.Linear(width, width)
        self.rope = YarnEmbedding(
            head_dim, 256, original_max_position_embeddings=64, finetuned=True
        )

    def forward(self, x: Tensor, positions: Tensor) -> tuple[Tensor, ...]:
        """The block's output, and yarn_ext's inputs and outputs: q and k before and after."""
        batch, seq, _ = x.shape
        qkv = self.qkv(x).view(batch, seq, self.heads + 2 * self.kv_heads, self.head_dim)
        q, k, v = qkv.split([self.heads, self.kv_heads, self.kv_heads], dim=2)
        q_in, k_in = q.clone(), k.clone()
        if self.in_place:
            q, k = q.clone(), k.clone()
            self.rope.rotate_(q, k, positions[:, :, None])  # [B, S, H, D] layout
        else:
            q = self.rope(q, positions=positions[:, :, None])
            k = self.rope(k, positions=positions[:, :, None])
        rotated = q.clone(), k.clone()
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        repeat = self.heads // self.kv_heads
        k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)
        attended = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        out = self.out(attended.transpose(1, 2).reshape(batch, seq, -1))
        return out, q_in, k_in, *rotated


def block_inputs(seq: int, device: str, seed: int) -> tuple[Tensor, Tensor]:
    x = randn(2, seq, 128, seed=seed).to(device)
    positions = (torch.arange(seq)[None] + torch.tensor([[0], [300]])).to(device)  # past cache
    return x, positions


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("in_place", [False, True])
@pytest.mark.parametrize("dynamic", [True, None])
def test_attention_block_compiles_fullgraph_without_recompiles(device, in_place, dynamic) -> None:
    torch.manual_seed(0)
    block = AttentionBlock(in_place).to(device)
    compiled = torch.compile(block, fullgraph=True, dynamic=dynamic)
    with torch.no_grad():
        for step, seq in enumerate((8, 13, 21, 40, 7)):
            x, positions = block_inputs(seq, device, step)
            out, q_in, k_in, q, k = compiled(x, positions)
            # yarn_ext's kernels inside the graph: bit for bit what they give eagerly on the
            # graph's own q and k
            want_q, want_k = q_in.clone(), k_in.clone()
            block.rope.rotate_(want_q, want_k, positions[:, :, None])
            assert torch.equal(q, want_q) and torch.equal(k, want_k)
            # the block around them: the projection and attention are Inductor's and cuBLAS's
            # choices on a GPU (equal bits only by luck); on the CPU they are the same code
            eager_out = block(x, positions)[0]
            if device == "cpu":
                assert torch.equal(out, eager_out)
            else:
                torch.testing.assert_close(out, eager_out, rtol=1e-4, atol=1e-5)
    # dynamic=True: one graph; the default: a static graph, then one dynamic recompile, then none
    assert compiled_graphs() == (1 if dynamic else 2)


def test_implicit_positions_stay_in_the_graph_with_dynamic_shapes() -> None:
    rope = YarnEmbedding(32, max_position_embeddings=64)
    compiled = torch.compile(lambda x: rope(x) * 2.0, fullgraph=True, dynamic=True)
    for seq in (5, 17, 64, 33):
        x = randn(2, 3, seq, 32, seed=seq)
        assert torch.equal(compiled(x), rope(x) * 2.0)
    assert compiled_graphs() == 1


def test_cache_growth_is_a_graph_break_that_matches_eager() -> None:
    compiled_rope = YarnEmbedding(
        32, max_position_embeddings=16, original_max_position_embeddings=16
    )
    eager_rope = YarnEmbedding(32, max_position_embeddings=16, original_max_position_embeddings=16)
    compiled = torch.compile(lambda x: compiled_rope(x) + 1.0, dynamic=True)
    for seq in (8, 20, 40, 30):
        x = randn(2, seq, 32, seed=seq)
        assert torch.equal(compiled(x), eager_rope(x) + 1.0)
        assert compiled_rope.max_seq_len_cached == eager_rope.max_seq_len_cached
        assert compiled_rope.scale == eager_rope.scale
    assert compiled_rope.max_seq_len_cached == 40


@pytest.mark.parametrize("device", DEVICES)
def test_training_step_compiles_and_matches_eager_gradients(device) -> None:
    rope = YarnEmbedding(32, max_position_embeddings=64, original_max_position_embeddings=16)
    rope = rope.to(device)
    weight = randn(3, 1, 32, dtype=torch.float64, seed=9).to(device)

    def loss(x: Tensor, positions: Tensor) -> Tensor:
        return (rope(x, positions=positions) * weight).sum()

    compiled = torch.compile(loss, fullgraph=True, dynamic=True)
    for seq in (5, 9, 17):
        x = randn(3, seq, 32, dtype=torch.float64, seed=seq).to(device).requires_grad_()
        positions = torch.randint(-10, 100, (3, seq)).to(device)
        (eager_grad,) = torch.autograd.grad(loss(x, positions), x)
        (compiled_grad,) = torch.autograd.grad(compiled(x, positions), x)
        assert torch.equal(compiled_grad, eager_grad)
    assert compiled_graphs() == 1


class ExportedModel(nn.Module):
    def __init__(self, in_place: bool) -> None:
        super().__init__()
        self.in_place = in_place
        self.proj = nn.Linear(64, 64)
        self.rope = YarnEmbedding(32, 128, original_max_position_embeddings=32, finetuned=True)

    def forward(self, x: Tensor, positions: Tensor) -> Tensor:
        batch, seq, _ = x.shape
        heads = self.proj(x).view(batch, seq, 2, 32)
        if self.in_place:
            heads = heads.clone()
            self.rope.rotate_(heads, None, positions[:, :, None])
            return heads
        return self.rope(heads, positions=positions[:, :, None])


@pytest.mark.parametrize("in_place", [False, True])
def test_export_and_run_the_exported_program(in_place) -> None:
    model = ExportedModel(in_place).eval()
    seq = Dim("seq", min=2, max=4096)
    example = (randn(2, 10, 64), torch.arange(10)[None].expand(2, 10).contiguous())
    # rotate_ is for inference: it is exported (and run) with autograd off, like any in-place
    # kernel; forward is exported as it is, gradients and all.
    with torch.set_grad_enabled(not in_place):
        program = torch.export.export(
            model, example, dynamic_shapes={"x": {1: seq}, "positions": {1: seq}}
        )
        ops_in_graph = {str(node.target) for node in program.graph.nodes}
        assert ("yarn_ext.rotate_inplace.default" if in_place else "yarn_ext.rotate.default") in (
            ops_in_graph
        )
        for length in (10, 33, 300):
            x = randn(2, length, 64, seed=length)
            positions = torch.randint(0, 500, (2, length))
            assert torch.equal(program.module()(x, positions), model(x, positions))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_autocast_keeps_float32_tables_and_the_same_results(device, dtype) -> None:
    def run(autocast: bool) -> tuple[Tensor, YarnEmbedding]:
        rope = YarnEmbedding(32, 16, original_max_position_embeddings=16).to(device)
        x = randn(2, 40, 32, dtype=dtype).to(device)  # 40 > 16: the cache grows in the region
        with torch.autocast(device, dtype=torch.bfloat16, enabled=autocast):
            return rope(x), rope

    plain, _ = run(False)
    autocast, rope = run(True)
    assert rope.cos_sin_cache.dtype == torch.float32 and rope.inv_freq.dtype == torch.float64
    assert autocast.dtype == dtype and torch.equal(autocast, plain)


@requires_cuda
def test_no_host_sync_on_the_positions_path() -> None:
    rope = YarnEmbedding(64, 128, original_max_position_embeddings=32, finetuned=True).cuda()
    x = randn(2, 40, 4, 64).cuda()
    q, k = randn(40, 8, 64).cuda(), randn(40, 2, 64).cuda()
    positions = torch.randint(-5, 500, (2, 40, 1)).cuda()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        rope(x, positions=positions)
        rope.rotate_(q, k, positions[0])
    finally:
        torch.cuda.set_sync_debug_mode("default")


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_cuda_graph_replays_rotate_in_place_with_new_inputs(dtype) -> None:
    rope = YarnEmbedding(128, 256, original_max_position_embeddings=64, finetuned=True).cuda()
    q = torch.zeros(16, 8, 128, dtype=dtype, device="cuda")
    k = torch.zeros(16, 2, 128, dtype=dtype, device="cuda")
    positions = torch.zeros(16, 1, dtype=torch.long, device="cuda")
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        rope.rotate_(q, k, positions)  # warm-up outside the capture
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        rope.rotate_(q, k, positions)
    for step in range(3):
        new_q = randn(16, 8, 128, dtype=dtype, seed=step).cuda()
        new_k = randn(16, 2, 128, dtype=dtype, seed=10 + step).cuda()
        new_positions = torch.randint(-100, 1000, (16, 1)).cuda()
        q.copy_(new_q)
        k.copy_(new_k)
        positions.copy_(new_positions)
        graph.replay()
        want_q, want_k = new_q.clone(), new_k.clone()
        rope.rotate_(want_q, want_k, new_positions)
        torch.cuda.synchronize()
        assert torch.equal(q, want_q) and torch.equal(k, want_k)
