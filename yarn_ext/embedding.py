"""YarnEmbedding: Zeta's module API; forward applies the rotation with yarn_ext's kernels."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import NamedTuple, SupportsFloat, SupportsIndex

import torch
from torch import Tensor, nn

from yarn_ext import _C, ops
from yarn_ext._checks import as_float, as_int, positive_float, positive_int
from yarn_ext.helpers import yarn_inv_freq
from yarn_ext.hf_config import hf_yarn_parameters


class _Tables(NamedTuple):
    """What the kernels read: float64 inv_freq, the float32 cache, and how they were made."""

    inv_freq: Tensor
    cos_sin_cache: Tensor
    scale: float
    mscale: float


class YarnEmbedding(nn.Module):
    """YaRN rotary position embedding (Zeta's constructor; transformers' extra keywords).

    Args:
        dim: rotary dimension (even). Inputs may be wider; features past `dim` pass through.
        max_position_embeddings: positions cached at construction.
        base: RoPE theta.
        original_max_position_embeddings: the context the model was trained on.
        extrapolation_factor, attn_factor, beta_fast, beta_slow: YaRN's knobs (Zeta's defaults).
        finetuned: False gives plain RoPE (until the cache grows); True gives static YaRN with
            scale `scaling_factor`, or else max_position_embeddings / original.
        device: where the tables live.
        scaling_factor: the static YaRN scale (only with finetuned=True).
        attention_factor: the attention scale, overriding get_mscale(scale) * attn_factor.
        truncate: whole-dimension correction range (False: transformers' gpt-oss variant).
        interleaved: rotate pairs (2i, 2i+1) (GPT-J) instead of (i, i + dim/2) (NeoX, Zeta).

    Attributes:
        inv_freq: float64 [dim / 2]. mscale: float, multiplies cos and sin.
        max_seq_len_cached: positions in the cache. cos_sin_cache: float32 [positions, dim],
            mscale * cos in columns [0, dim/2) and mscale * sin in [dim/2, dim).

    A call that needs more positions than are cached (seq_len > max_seq_len_cached) recomputes
    YaRN with scale seq_len / original_max_position_embeddings and rebuilds the cache (dynamic
    YaRN, as in Zeta); the cache only grows, and the scale never drops (where seq_len / original
    is below the current scale only the cache is extended). Positions outside the cache that are
    given explicitly are computed on the fly with the current frequencies. A call that raises
    leaves the module unchanged.
    """

    inv_freq: Tensor
    cos_sin_cache: Tensor
    scale: float
    mscale: float
    max_seq_len_cached: int
    _current: _Tables  # inv_freq, cos_sin_cache, scale, mscale: the state a call reads
    _growth: threading.RLock  # serialises this module's growth; recreated by copies and loads

    def __init__(
        self,
        dim: SupportsIndex,
        max_position_embeddings: SupportsIndex = 2048,
        base: SupportsFloat = 10000,
        original_max_position_embeddings: SupportsIndex = 2048,
        extrapolation_factor: SupportsFloat = 1,
        attn_factor: SupportsFloat = 1,
        beta_fast: SupportsFloat = 32,
        beta_slow: SupportsFloat = 1,
        finetuned: bool = False,
        device: torch.device | str | None = None,
        *,
        scaling_factor: SupportsFloat | None = None,
        attention_factor: SupportsFloat | None = None,
        truncate: bool = True,
        interleaved: bool = False,
    ) -> None:
        super().__init__()
        self._growth = threading.RLock()
        # dim, base, the betas and the scale are checked by the C++ core (yarn_inv_freq) with
        # messages that name them; here only what the core does not see.
        self.dim = as_int("dim", dim)
        self.max_position_embeddings = positive_int(
            "max_position_embeddings", max_position_embeddings
        )
        self.base = as_float("base", base)
        self.original_max_position_embeddings = positive_int(
            "original_max_position_embeddings", original_max_position_embeddings
        )
        self.extrapolation_factor = as_float("extrapolation_factor", extrapolation_factor)
        self.attn_factor = as_float("attn_factor", attn_factor)
        self.beta_fast = as_float("beta_fast", beta_fast)
        self.beta_slow = as_float("beta_slow", beta_slow)
        self.finetuned = bool(finetuned)
        if scaling_factor is not None and not self.finetuned:
            raise ValueError("scaling_factor is only used with finetuned=True (static YaRN)")
        self.scaling_factor = (
            None if scaling_factor is None else positive_float("scaling_factor", scaling_factor)
        )
        self.attention_factor = (
            None if attention_factor is None else as_float("attention_factor", attention_factor)
        )
        self.truncate = bool(truncate)
        self.interleaved = bool(interleaved)

        if self.finetuned:
            static_scale = self.scaling_factor or (
                self.max_position_embeddings / self.original_max_position_embeddings
            )
            tables = self._make_tables(static_scale, self.max_position_embeddings, device)
        else:
            tables = self._make_tables(None, self.max_position_embeddings, device)
        self._commit(tables)

    @classmethod
    def from_hf_config(
        cls, config: object, *, device: torch.device | str | None = None
    ) -> YarnEmbedding:
        """The YaRN embedding of a transformers model: `config` is its PretrainedConfig or the
        contents of its config.json (a dict). Reads rope_theta, the YaRN block under
        rope_parameters or rope_scaling, the rotary dim (qk_rope_head_dim, or head_dim - or
        hidden_size / num_attention_heads - times partial_rotary_factor) and
        max_position_embeddings, and combines them as transformers' _compute_yarn_parameters
        does (yarn_ext.hf_config). Static YaRN: the module caches max_position_embeddings
        positions at the config's scale. A block that is not YaRN, or a key of the wrong type,
        raises an error naming the key."""
        p = hf_yarn_parameters(config)
        return cls(
            p.dim,
            max_position_embeddings=p.max_position_embeddings,
            base=p.base,
            original_max_position_embeddings=p.original_max_position_embeddings,
            beta_fast=p.beta_fast,
            beta_slow=p.beta_slow,
            finetuned=True,
            device=device,
            scaling_factor=p.scale,
            attention_factor=p.attention_factor,
            truncate=p.truncate,
            interleaved=p.interleaved,
        )

    # -- tables ----------------------------------------------------------------------------

    def _make_tables(
        self, scale: float | None, num_positions: int, device: torch.device | str | None
    ) -> _Tables:
        """inv_freq, mscale and the cache for YaRN at `scale`; None is plain RoPE (scale 1,
        mscale 1 as in Zeta, unless attention_factor is given)."""
        inv_freq = yarn_inv_freq(
            self.dim,
            self.base,
            1.0 if scale is None else scale,
            self.original_max_position_embeddings,
            self.extrapolation_factor,
            self.beta_fast,
            self.beta_slow,
            truncate=self.truncate,
            device=device,
        )
        mscale = _C.table_mscale(scale, self.attn_factor, self.attention_factor)
        cache = ops.build_cos_sin_cache(inv_freq, num_positions, mscale)
        return _Tables(inv_freq, cache, 1.0 if scale is None else float(scale), float(mscale))

    def _grown_tables(self, seq_len: int) -> _Tables:
        """The tables for a call that needs `seq_len` (> max_seq_len_cached) positions. Nothing
        is stored: callers commit them once their kernel succeeded."""
        # The policy (csrc/tables.cpp, shared with the C++ module): dynamic YaRN raises the scale
        # to seq_len / original; where that would not raise it, only the cache is extended.
        scale = _C.grown_scale(seq_len, self.original_max_position_embeddings, self.scale)
        if scale is not None:
            return self._make_tables(scale, seq_len, self.inv_freq.device)
        cache = ops.build_cos_sin_cache(self.inv_freq, seq_len, self.mscale)
        return _Tables(self.inv_freq, cache, self.scale, self.mscale)

    def _commit(self, tables: _Tables) -> None:
        self.register_buffer("inv_freq", tables.inv_freq, persistent=False)
        self.register_buffer("cos_sin_cache", tables.cos_sin_cache, persistent=False)
        self.scale = tables.scale
        self.mscale = tables.mscale
        # One attribute holds the whole state, for the calls (one assignment: atomic); it is
        # also cheaper to read than the buffers through nn.Module.__getattr__.
        self._current = tables
        self.max_seq_len_cached = int(tables.cos_sin_cache.shape[0])

    def _needed_length(
        self,
        seq_len: SupportsIndex | None,
        positions: Tensor | None,
        *tensors: Tensor | None,
    ) -> int | torch.SymInt | None:
        """The sequence length a call needs cached: seq_len, or without positions the longest
        dim -2 of the tensors (row s gets position s). With positions and no seq_len, None:
        nothing is recomputed and nothing is read back to the host (positions past the cache
        are computed on the fly by the kernel). Lengths stay symbolic under torch.compile with
        dynamic shapes (no int()): the growth test becomes a guard, not a specialization."""
        if seq_len is not None:
            return positive_int("seq_len", seq_len)
        if positions is not None:
            return None
        lengths = [t.shape[-2] for t in tensors if t is not None and t.dim() >= 2]
        if not lengths:
            return None
        return lengths[0] if len(lengths) == 1 else torch.sym_max(*lengths)

    # -- API -------------------------------------------------------------------------------

    def forward(
        self, x: Tensor, seq_len: SupportsIndex | None = None, *, positions: Tensor | None = None
    ) -> Tensor:
        """x [..., S, D] (D >= dim) with YaRN applied to its first dim features; same shape,
        dtype and device. `positions` (int32/int64) broadcasts against x.shape[:-1] ([S],
        [B, S] for [B, S, D], [B, 1, S] for [B, H, S, D], [B, S, 1] for [B, S, H, D]); without
        it row s along dim -2 gets position s and seq_len defaults to S. Differentiable with
        respect to x."""
        needed = self._needed_length(seq_len, positions, x)
        if needed is not None and needed > self.max_seq_len_cached:
            return self._forward_growing(needed, x, positions)
        t = self._current
        return ops.rotate(x, t.cos_sin_cache, t.inv_freq, t.mscale, positions, self.interleaved)

    def rotate_(
        self,
        q: Tensor,
        k: Tensor | None = None,
        positions: Tensor | None = None,
        *,
        seq_len: SupportsIndex | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Rotates q and (optionally) k in place in one kernel call and returns them. q and k
        may differ in head count and be non-contiguous views (slices of a fused qkv tensor).
        Same position rules as forward; a call that raises has changed nothing. For inference:
        where q or k requires grad this raises (use forward)."""
        # With positions and no seq_len (a decode step) nothing can grow: straight to the kernel.
        if positions is None or seq_len is not None:
            needed = self._needed_length(seq_len, positions, q, k)
            if needed is not None and needed > self.max_seq_len_cached:
                self._rotate_growing(needed, q, k, positions)
                return q, k
        t = self._current
        ops.rotate_inplace(q, k, t.cos_sin_cache, t.inv_freq, t.mscale, positions, self.interleaved)
        return q, k

    # Growth runs eagerly: under torch.compile it is a graph break, and the usual path (positions
    # given, or a cache long enough) stays in the graph. The new tables are committed only once
    # the kernel succeeded, so a call that raises leaves the module as it was. Calls from several
    # threads: growth holds the module's own lock, _growth (a thread that finds the cache grown
    # meanwhile uses it), and every call reads the tables once, from _current, so it sees one
    # state or the next, never a mix.

    def _tables_for(self, needed: int) -> tuple[_Tables, bool]:
        """Under self._growth: the tables a call needing `needed` positions uses, and whether they
        are new (to be committed after the call's kernel)."""
        if needed <= self.max_seq_len_cached:
            return self._current, False
        return self._grown_tables(needed), True

    @torch.compiler.disable
    def _forward_growing(self, needed: int, x: Tensor, positions: Tensor | None) -> Tensor:
        with self._growth:
            t, new = self._tables_for(int(needed))
            out = ops.rotate(x, t.cos_sin_cache, t.inv_freq, t.mscale, positions, self.interleaved)
            if new:
                self._commit(t)
        return out

    @torch.compiler.disable
    def _rotate_growing(
        self, needed: int, q: Tensor, k: Tensor | None, positions: Tensor | None
    ) -> None:
        with self._growth:
            t, new = self._tables_for(int(needed))
            ops.rotate_inplace(
                q, k, t.cos_sin_cache, t.inv_freq, t.mscale, positions, self.interleaved
            )
            if new:
                self._commit(t)

    def cos_sin(
        self,
        seq_len: SupportsIndex,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> tuple[Tensor, Tensor]:
        """(cos, sin), each [1, 1, seq_len, dim] and scaled by mscale: what Zeta's forward
        returned. The layout matches the rotation style: cat(freqs, freqs) (Zeta's) by default,
        each frequency repeated twice in a row when interleaved."""
        seq_len = positive_int("seq_len", seq_len)
        # Built from the (possibly grown) tables and committed last: a call that raises (say a
        # bad dtype or device) changes nothing.
        with self._growth:
            return self._cos_sin(seq_len, dtype, device)

    def _cos_sin(
        self, seq_len: int, dtype: torch.dtype | None, device: torch.device | str | None
    ) -> tuple[Tensor, Tensor]:
        grown = self._grown_tables(seq_len) if seq_len > self.max_seq_len_cached else None
        half = self.dim // 2
        table = (grown.cos_sin_cache if grown is not None else self._current.cos_sin_cache)[
            :seq_len
        ]
        cos, sin = table[:, :half], table[:, half:]
        if self.interleaved:
            cos, sin = cos.repeat_interleave(2, dim=-1), sin.repeat_interleave(2, dim=-1)
        else:
            cos, sin = torch.cat((cos, cos), dim=-1), torch.cat((sin, sin), dim=-1)
        result = (
            cos[None, None].to(dtype=dtype, device=device),
            sin[None, None].to(dtype=dtype, device=device),
        )
        if grown is not None:
            self._commit(grown)
        return result

    # -- nn.Module plumbing ----------------------------------------------------------------

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> YarnEmbedding:
        # .to(dtype), .half(), .bfloat16() must not lower the precision of the tables (the
        # float64 inv_freq, the float32 cache): follow device moves, keep the dtypes.
        # Under the lock: a growth committing meanwhile would leave tables on the old device.
        with self._growth:
            before = dict(self._buffers)
            super()._apply(fn, recurse)
            for name, old in before.items():
                new = self._buffers.get(name)
                if old is not None and new is not None and new.dtype != old.dtype:
                    self._buffers[name] = old.to(device=new.device)
            self._current = _Tables(
                self._buffers["inv_freq"], self._buffers["cos_sin_cache"], self.scale, self.mscale
            )
        return self

    # Each module has its own lock: growth of one never waits for another. A lock cannot be
    # copied or pickled, so copies and loaded modules get a fresh one.

    def __getstate__(self) -> dict[str, object]:
        state = self.__dict__.copy()
        state.pop("_growth", None)
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        super().__setstate__(state)
        self._growth = threading.RLock()

    def extra_repr(self) -> str:
        kind = f"yarn scale={self.scale:g}" if not math.isclose(self.scale, 1.0) else "rope"
        return (
            f"dim={self.dim}, base={self.base:g}, {kind}, mscale={self.mscale:.6g}, "
            f"max_seq_len_cached={self.max_seq_len_cached}, interleaved={self.interleaved}"
        )
