"""Exports a model that uses YarnEmbedding and packages it with AOTInductor, for the C++ server
in main.cpp. The model is an attention block in Qwen3's layout (a fused qkv projection, YaRN on q
and k at explicit positions, grouped-query attention), small enough to compile in seconds, with
a dynamic token count.

    python examples/aoti/export_model.py OUT_DIR

writes OUT_DIR/model.pt2 (the package) and OUT_DIR/check.pt (inputs of another token count than
the traced one, and the eager model's output for them), which main.cpp compares against.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

from yarn_ext import YarnEmbedding

HEADS, KV_HEADS, HEAD_DIM = 8, 2, 64
# Qwen3's rope block (theta 1e6, YaRN factor 4 over a 32768-token original context).
CONFIG = {
    "hidden_size": HEADS * HEAD_DIM,
    "num_attention_heads": HEADS,
    "head_dim": HEAD_DIM,
    "max_position_embeddings": 131072,
    "rope_theta": 1e6,
    "rope_scaling": {
        "rope_type": "yarn",
        "factor": 4.0,
        "original_max_position_embeddings": 32768,
    },
}


class Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        hidden = HEADS * HEAD_DIM
        self.qkv = nn.Linear(hidden, (HEADS + 2 * KV_HEADS) * HEAD_DIM)
        self.out = nn.Linear(hidden, hidden)
        self.rope = YarnEmbedding.from_hf_config(CONFIG)

    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """x [tokens, hidden], positions [tokens] (int64): one sequence, causal."""
        tokens = x.shape[0]
        qkv = self.qkv(x).view(tokens, HEADS + 2 * KV_HEADS, HEAD_DIM)
        q, k, v = qkv.split([HEADS, KV_HEADS, KV_HEADS], dim=1)
        q = self.rope(q, positions=positions[:, None])
        k = self.rope(k, positions=positions[:, None])
        attention = nn.functional.scaled_dot_product_attention(
            q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), is_causal=True, enable_gqa=True
        )
        return self.out(attention.transpose(0, 1).reshape(tokens, -1))


def main(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = Attention().eval()
    hidden = HEADS * HEAD_DIM
    # Traced with 16 tokens; the token count stays dynamic in the package.
    example = (torch.randn(16, hidden), torch.arange(16))
    tokens = torch.export.Dim("tokens", min=2, max=8192)
    with torch.no_grad():
        program = torch.export.export(model, example, dynamic_shapes=({0: tokens}, {0: tokens}))
        calls = [n for n in program.graph.nodes if str(n.target).startswith("yarn_ext.")]
        print(f"yarn_ext operator calls in the exported program: {len(calls)}")
        package = torch._inductor.aoti_compile_and_package(
            program, package_path=str(out_dir / "model.pt2")
        )
        # 37 tokens far into the extended context (past the 32768-token original one).
        x, positions = torch.randn(37, hidden), torch.arange(37) * 1500 + 70000
        expected = model(x, positions)
    torch.save([x, positions, expected], out_dir / "check.pt")
    print(f"wrote {package} and {out_dir / 'check.pt'}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
