"""`python -m yarn_ext`: a self-check of the installed build; `python -m yarn_ext inspect
CONFIG.json [--plot FILE.png]`: the YaRN parameters a transformers config derives.

The self-check prints the torch version and the kernels built, applies YaRN with a real model's
configuration (Qwen3: head_dim 128, theta 1e6, factor 4 over 32768 positions) to random q and k,
and checks the result against the float64 reference. Exits non-zero when the error exceeds its
bound.
"""

from __future__ import annotations

import argparse
import sys

import torch

import yarn_ext
from yarn_ext import reference


def self_check(tokens: int, device: str) -> int:
    print(f"yarn_ext {yarn_ext.__version__} with torch {torch.__version__}")
    print(f"kernels built: {', '.join(yarn_ext.built_backends())}")
    print(f"CPU kernels: {yarn_ext.cpu_kernels()}")
    original, factor = 32768, 4.0
    rope = yarn_ext.YarnEmbedding(
        128,
        max_position_embeddings=int(original * factor),
        base=1e6,
        original_max_position_embeddings=original,
        finetuned=True,
        device=device,
    )
    print(f"config: Qwen3 YaRN, {rope.extra_repr()}")
    generator = torch.Generator().manual_seed(0)
    # Positions spread over the extended context, a few past the cache (computed on the fly).
    positions = torch.randint(0, rope.max_seq_len_cached + 1024, (tokens,), generator=generator)
    q = torch.randn(tokens, 32, 128, generator=generator, dtype=torch.float32)
    k = torch.randn(tokens, 8, 128, generator=generator, dtype=torch.float32)
    expected_q = reference.rotate(q, rope.inv_freq.cpu(), rope.mscale, positions[:, None])
    expected_k = reference.rotate(k, rope.inv_freq.cpu(), rope.mscale, positions[:, None])
    q_dev, k_dev, pos_dev = q.to(device), k.to(device), positions.to(device)[:, None]
    rope.rotate_(q_dev, k_dev, pos_dev)
    error = max(
        (q_dev.cpu().double() - expected_q).abs().max().item(),
        (k_dev.cpu().double() - expected_k).abs().max().item(),
    )
    # float32 rotation: inputs ~N(0,1), each output a two-term sum rounded once.
    bound = 2e-5
    status = "ok" if error <= bound else "FAILED"
    print(
        f"rotate_ on {device}, float32, {tokens} tokens x (32 q + 8 k heads), positions up to "
        f"{int(positions.max())}: max |error| vs float64 reference = {error:.3e} "
        f"(bound {bound:.0e}) {status}"
    )
    return 0 if error <= bound else 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["inspect"]:
        from pathlib import Path

        from yarn_ext.inspection import inspect

        inspector = argparse.ArgumentParser(
            prog="python -m yarn_ext inspect",
            description="The YaRN parameters of a transformers config.json, as "
            "YarnEmbedding.from_hf_config derives them.",
        )
        inspector.add_argument("config", type=Path, help="a transformers config.json")
        inspector.add_argument("--plot", type=Path, help="a PNG of inv_freq against dimension")
        args = inspector.parse_args(argv[1:])
        return inspect(args.config, args.plot)
    parser = argparse.ArgumentParser(prog="python -m yarn_ext", description=__doc__)
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    return self_check(args.tokens, args.device)


if __name__ == "__main__":
    sys.exit(main())
