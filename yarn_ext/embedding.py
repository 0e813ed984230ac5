"""YarnEmbedding: Zeta's module API; forward applies the rotation with yarn_ext's kernels.

The module's policy - the constructor's checks, which tables it holds and when they grow, the
length a call needs, cos_sin's layout - is csrc/include/yarn_ext/table_policy.h, shared with the
C++ module (yarn_embedding.h) through yarn_ext._C; this class holds the state and calls it."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from typing import NamedTuple, SupportsFloat, SupportsIndex

import torch
from torch import Tensor, nn

from yarn_ext import _C, ops
from yarn_ext._checks import as_int, as_number
from yarn_ext.helpers import yarn_inv_freq
from yarn_ext.hf_config import hf_yarn_parameters


def _needed_length(
    seq_len: SupportsIndex | None, positions: Tensor | None, *tensors: Tensor | None
) -> int | torch.SymInt | None:
    """The number of cached positions a call needs: a symbolic copy of the policy's rule
    (policy::needed_length in table_policy.h, which the C++ module calls): seq_len when given
    (positive); else None with positions (nothing is recomputed and nothing is read back to the
    host: positions past the cache are computed on the fly by the kernel); else the longest
    dim -2 of the tensors with two dimensions or more (row s gets position s), None if none.

    Written again here, not called through _C, because under torch.compile with dynamic shapes
    the lengths are SymInts: kept symbolic (torch.sym_max, no int()), the growth test becomes a
    guard rather than a specialization, and dynamic=True does not recompile per length. It also
    keeps the decode call free of a call into _C. tests/test_module_parity.py runs a table of
    cases through both rules and holds them equal, errors included."""
    if seq_len is not None:
        n = as_int("seq_len", seq_len)
        if n <= 0:
            raise ValueError(f"YarnEmbedding: seq_len must be positive, got {n}")
        return n
    if positions is not None:
        return None
    lengths = [t.shape[-2] for t in tensors if t is not None and t.dim() >= 2]
    if not lengths:
        return None
    return lengths[0] if len(lengths) == 1 else torch.sym_max(*lengths)


class _Tables(NamedTuple):
    """What the kernels read: float64 inv_freq, the float32 cache, and how they were made."""

    inv_freq: Tensor
    cos_sin_cache: Tensor
    scale: float
    mscale: float
    # Allocated by Module.to_empty, never written (see YarnEmbedding._apply). Meta tables hold
    # no values at all and are not this: they serve meta inputs (shapes only).
    uninitialized: bool = False


def _refuse_uninitialized() -> None:
    raise RuntimeError(
        "YarnEmbedding: the tables hold uninitialized memory: the module was materialized from "
        "the meta device (to_empty) and not initialized since; call reset_parameters() first"
    )


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
        mrope_section: MRoPE (Qwen2-VL and later): how many frequencies follow each of a
            token's temporal, height and width positions (three counts summing to dim / 2).
            forward, rotate_ and cos_sin then take positions with one more leading dimension,
            of size 3 ([3, T, 1] for [T, H, D]); plain positions mean three equal components.
        mrope_interleaved: the sections interleave t, h, w, t, ... (Qwen3-VL, Qwen3.5) instead
            of following each other (Qwen2-VL, Qwen2.5-VL).
        softmax_scale_factor: what the model's attention multiplies its softmax scale by
            (DeepSeek's mscale_all_dim correction; from_hf_config sets it). Stored for the
            model, not used by the rotation.

    Attributes:
        inv_freq: float64 [dim / 2]. mscale: float, multiplies cos and sin.
        max_seq_len_cached: positions in the cache. cos_sin_cache: float32 [positions, dim],
            mscale * cos in columns [0, dim/2) and mscale * sin in [dim/2, dim).

    Meta device: built under `with torch.device("meta")` (or device="meta") the tables are meta
    tensors and cost nothing. After `to_empty(device=...)` they are allocated but hold no values,
    and every call raises until `reset_parameters()` builds them (the torchtitan / FSDP2 recipe:
    meta, to_empty, then reset_parameters() on each module that has it).

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
    _mrope_args: list[int] | None  # the sections as the operators take them
    _current: _Tables  # inv_freq, cos_sin_cache, scale, mscale: the state a call reads
    _cos_sin_index: Tensor  # the policy's cos_sin column map, on the device of the last call
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
        mrope_section: Sequence[SupportsIndex] | None = None,
        mrope_interleaved: bool = False,
        softmax_scale_factor: SupportsFloat = 1.0,
    ) -> None:
        super().__init__()
        self._growth = threading.RLock()
        # Only the types are converted here (naming the argument); every value check is the
        # policy's check_config, which the C++ module runs too, with the same messages.
        self.dim = as_int("dim", dim)
        self.max_position_embeddings = as_int("max_position_embeddings", max_position_embeddings)
        self.base = as_number("base", base)
        self.original_max_position_embeddings = as_int(
            "original_max_position_embeddings", original_max_position_embeddings
        )
        self.extrapolation_factor = as_number("extrapolation_factor", extrapolation_factor)
        self.attn_factor = as_number("attn_factor", attn_factor)
        self.beta_fast = as_number("beta_fast", beta_fast)
        self.beta_slow = as_number("beta_slow", beta_slow)
        self.finetuned = bool(finetuned)
        self.scaling_factor = (
            None if scaling_factor is None else as_number("scaling_factor", scaling_factor)
        )
        self.attention_factor = (
            None if attention_factor is None else as_number("attention_factor", attention_factor)
        )
        self.truncate = bool(truncate)
        self.interleaved = bool(interleaved)
        if mrope_section is not None and not isinstance(mrope_section, Sequence):
            raise TypeError(
                "YarnEmbedding: mrope_section must be a sequence of 3 integers, got "
                f"{type(mrope_section).__name__}"
            )
        self._mrope_args = (
            None if mrope_section is None else [as_int("mrope_section", s) for s in mrope_section]
        )
        self.mrope_interleaved = bool(mrope_interleaved)
        self.softmax_scale_factor = as_number("softmax_scale_factor", softmax_scale_factor)

        config = self._config()
        _C.check_config(config)
        # device=None: torch's default device, which `with torch.device(...)` sets.
        self._commit(self._build(_C.initial_tables(config), device))
        self._cos_sin_index = self._columns(self.inv_freq.device)

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
        positions at the config's scale. A plain-RoPE config (rope_type "default", or no rope
        block) gives plain RoPE with its theta and rotary dim (which, like every module, grows
        into dynamic YaRN only on a call without positions past max_position_embeddings;
        transformers passes positions). MRoPE models (Qwen2-VL, Qwen2.5-VL,
        Qwen3-VL, Qwen3.5) get their mrope_section and style; DeepSeek's softmax correction
        goes to softmax_scale_factor. Another rope type, or a key of the wrong type, raises an
        error naming it."""
        p = hf_yarn_parameters(config)
        if not p.yarn:  # plain RoPE: the config's theta and rotary dim, unscaled
            return cls(
                p.dim,
                max_position_embeddings=p.max_position_embeddings,
                base=p.base,
                original_max_position_embeddings=p.original_max_position_embeddings,
                device=device,
                interleaved=p.interleaved,
                mrope_section=p.mrope_section,
                mrope_interleaved=p.mrope_interleaved,
            )
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
            mrope_section=p.mrope_section,
            mrope_interleaved=p.mrope_interleaved,
            softmax_scale_factor=p.softmax_scale_factor,
        )

    @property
    def mrope_section(self) -> tuple[int, ...] | None:
        """MRoPE's sections (pairs per t, h and w component), None for plain RoPE; fixed at
        construction, as every option the tables depend on."""
        return None if self._mrope_args is None else tuple(self._mrope_args)

    # -- tables ----------------------------------------------------------------------------

    def _config(self) -> _C.ModuleConfig:
        """The options as the policy reads them (from the attributes, as they are now)."""
        return _C.ModuleConfig(
            dim=self.dim,
            max_position_embeddings=self.max_position_embeddings,
            base=self.base,
            original_max_position_embeddings=self.original_max_position_embeddings,
            extrapolation_factor=self.extrapolation_factor,
            attn_factor=self.attn_factor,
            beta_fast=self.beta_fast,
            beta_slow=self.beta_slow,
            finetuned=self.finetuned,
            scaling_factor=self.scaling_factor,
            attention_factor=self.attention_factor,
            truncate=self.truncate,
            interleaved=self.interleaved,
            mrope_section=self._mrope_args,
            mrope_interleaved=self.mrope_interleaved,
            softmax_scale_factor=self.softmax_scale_factor,
        )

    def _build(self, plan: _C.TablePlan, device: torch.device | str | None) -> _Tables:
        """The tables a policy plan describes: new frequencies (on `device`), or the current ones
        with the planned cache. Nothing is stored: the caller commits them."""
        if plan.new_frequencies:
            inv_freq = yarn_inv_freq(
                self.dim,
                self.base,
                plan.scale,
                self.original_max_position_embeddings,
                self.extrapolation_factor,
                self.beta_fast,
                self.beta_slow,
                truncate=self.truncate,
                device=device,
            )
        else:
            inv_freq = self.inv_freq
        cache = ops.build_cos_sin_cache(inv_freq, plan.positions, plan.mscale)
        return _Tables(inv_freq, cache, plan.scale, plan.mscale)

    def _grown_tables(self, needed: int) -> _Tables | None:
        """Under self._growth: the tables for a call that needs `needed` positions, or None when
        the current ones serve (the policy's grown_tables). Nothing is stored: callers commit them
        once their kernel succeeded."""
        t = self._current
        plan = _C.grown_tables(
            self._config(), t.scale, t.mscale, int(t.cos_sin_cache.shape[0]), needed
        )
        return None if plan is None else self._build(plan, t.inv_freq.device)

    def _columns(self, device: torch.device) -> Tensor:
        """The policy's cos_sin column map (cos's columns, then sin's) on `device`: made once per
        device, so that cos_sin copies nothing from the host (no stream synchronization per call
        on CUDA). Made from the policy, not moved: a meta copy has no values to move."""
        columns = getattr(self, "_cos_sin_index", None)
        if columns is None or columns.device != device:
            columns = torch.tensor(
                _C.cos_sin_columns(self.dim, self.interleaved), dtype=torch.int64, device=device
            )
        return columns

    def reset_parameters(self) -> None:
        """Rebuilds the tables as constructed (not as grown: the same tables a module built now
        or loaded from a state_dict holds), on the device they are on. For meta-device
        initialization: after `to_empty` the tables hold no values until this is called."""
        with self._growth:
            device = self._current.inv_freq.device
            self._commit(self._build(_C.initial_tables(self._config()), device))
            self._cos_sin_index = self._columns(device)

    def _commit(self, tables: _Tables) -> None:
        self.register_buffer("inv_freq", tables.inv_freq, persistent=False)
        self.register_buffer("cos_sin_cache", tables.cos_sin_cache, persistent=False)
        self.scale = tables.scale
        self.mscale = tables.mscale
        # One attribute holds the whole state, for the calls (one assignment: atomic); it is
        # also cheaper to read than the buffers through nn.Module.__getattr__.
        self._current = tables
        self.max_seq_len_cached = int(tables.cos_sin_cache.shape[0])

    # -- API -------------------------------------------------------------------------------

    def forward(
        self, x: Tensor, seq_len: SupportsIndex | None = None, *, positions: Tensor | None = None
    ) -> Tensor:
        """x [..., S, D] (D >= dim) with YaRN applied to its first dim features; same shape,
        dtype and device. `positions` (int32/int64) broadcasts against x.shape[:-1] ([S],
        [B, S] for [B, S, D], [B, 1, S] for [B, H, S, D], [B, S, 1] for [B, S, H, D]); without
        it row s along dim -2 gets position s and seq_len defaults to S. Differentiable with
        respect to x."""
        if self._current.uninitialized:
            _refuse_uninitialized()
        needed = _needed_length(seq_len, positions, x)
        if needed is not None and needed > self.max_seq_len_cached:
            return self._forward_growing(needed, x, positions)
        # Read after the length: a commit sets _current before max_seq_len_cached, so a call that
        # saw the grown length sees the grown tables.
        t = self._current
        return ops.rotate(
            x,
            t.cos_sin_cache,
            t.inv_freq,
            t.mscale,
            positions,
            self.interleaved,
            False,
            self._mrope_args,
            self.mrope_interleaved,
        )

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
        if self._current.uninitialized:
            _refuse_uninitialized()
        # With positions and no seq_len (a decode step) nothing can grow: straight to the kernel.
        if positions is None or seq_len is not None:
            needed = _needed_length(seq_len, positions, q, k)
            if needed is not None and needed > self.max_seq_len_cached:
                self._rotate_growing(needed, q, k, positions)
                return q, k
        t = self._current  # after the length, as in forward
        ops.rotate_inplace(
            q,
            k,
            t.cos_sin_cache,
            t.inv_freq,
            t.mscale,
            positions,
            self.interleaved,
            self._mrope_args,
            self.mrope_interleaved,
        )
        return q, k

    def rotate_store_kv_(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        positions: Tensor,
        k_cache: Tensor,
        v_cache: Tensor,
        slot_mapping: Tensor,
        *,
        q_norm_weight: Tensor | None = None,
        k_norm_weight: Tensor | None = None,
        eps: float = 1e-6,
        norm_unit_offset: bool = False,
        k_scale: Tensor | None = None,
        v_scale: Tensor | None = None,
        write_k: bool = False,
        invalid_slots: Tensor | None = None,
    ) -> Tensor:
        """Serving's step after the qkv projection, in one pass (yarn_ext.ops.rotate_store_kv):
        q and k ([T, H, D]) normalized per head when the weights are given (Qwen3's RMSNorm, or
        Qwen3.5's (1 + weight) form with norm_unit_offset) and rotated with this module's tables
        and style (MRoPE's included) - q in place - and k and v written to the paged caches
        [num_blocks, block_size, Hkv, D] at slot_mapping (-1: padding), quantized for a
        float8_e4m3fn cache with k_scale and v_scale. positions: [T] or [T, 1] (MRoPE also
        [3, T]); positions past the cache are computed on the fly, so nothing grows. Returns q.
        A call that raises has changed nothing; for inference only. invalid_slots: on CUDA, an
        int32 counter the kernel adds the tokens whose slot lies outside the caches to (they
        are skipped; the CPU raises on them instead)."""
        if self._current.uninitialized:
            _refuse_uninitialized()
        t = self._current
        ops.rotate_store_kv(
            q,
            k,
            v,
            t.cos_sin_cache,
            t.inv_freq,
            t.mscale,
            positions,
            k_cache,
            v_cache,
            slot_mapping,
            q_norm_weight=q_norm_weight,
            k_norm_weight=k_norm_weight,
            eps=eps,
            norm_unit_offset=norm_unit_offset,
            k_scale=k_scale,
            v_scale=v_scale,
            interleaved=self.interleaved,
            write_k=write_k,
            mrope_section=self._mrope_args,
            mrope_interleaved=self.mrope_interleaved,
            invalid_slots=invalid_slots,
        )
        return q

    def _rotate(self, t: _Tables, x: Tensor, positions: Tensor | None) -> Tensor:
        """The rotation with tables `t` and this module's style (MRoPE's included)."""
        return ops.rotate(
            x,
            t.cos_sin_cache,
            t.inv_freq,
            t.mscale,
            positions,
            self.interleaved,
            False,
            self._mrope_args,
            self.mrope_interleaved,
        )

    def _rotate_inplace(
        self, t: _Tables, q: Tensor, k: Tensor | None, positions: Tensor | None
    ) -> None:
        ops.rotate_inplace(
            q,
            k,
            t.cos_sin_cache,
            t.inv_freq,
            t.mscale,
            positions,
            self.interleaved,
            self._mrope_args,
            self.mrope_interleaved,
        )

    # Growth runs eagerly: under torch.compile it is a graph break, and the usual path (positions
    # given, or a cache long enough) stays in the graph. The new tables are committed only once
    # the kernel succeeded, so a call that raises leaves the module as it was. Calls from several
    # threads: growth holds the module's own lock, _growth (a thread that finds the cache grown
    # meanwhile uses it), and every call reads the tables once, from _current, so it sees one
    # state or the next, never a mix.

    @torch.compiler.disable
    def _forward_growing(self, needed: int, x: Tensor, positions: Tensor | None) -> Tensor:
        with self._growth:
            grown = self._grown_tables(int(needed))
            t = self._current if grown is None else grown
            out = self._rotate(t, x, positions)
            if grown is not None:  # the kernel succeeded
                self._commit(grown)
        return out

    @torch.compiler.disable
    def _rotate_growing(
        self, needed: int, q: Tensor, k: Tensor | None, positions: Tensor | None
    ) -> None:
        with self._growth:
            grown = self._grown_tables(int(needed))
            t = self._current if grown is None else grown
            self._rotate_inplace(t, q, k, positions)
            if grown is not None:  # the kernel succeeded
                self._commit(grown)

    def cos_sin(
        self,
        seq_len: SupportsIndex | None = None,
        *,
        positions: Tensor | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> tuple[Tensor, Tensor]:
        """(cos, sin), scaled by mscale, in the layout of the rotation style: cat(freqs, freqs)
        (Zeta's) by default, each frequency repeated twice in a row when interleaved.

        With seq_len: each [1, 1, seq_len, dim], positions [0, seq_len) (what Zeta's forward
        returned; the cache grows to seq_len). With positions (int32/int64, on the tables'
        device): each positions.shape + [dim], nothing grows and positions outside the cache are
        computed as the rotation computes them. On an MRoPE embedding positions must carry the
        components first ([3, B, S] gives [B, S, dim], as transformers' MRoPE rotary classes
        return; text-only positions p are p.expand(3, ...)), and each frequency takes the
        position of its component."""
        if self._current.uninitialized:
            _refuse_uninitialized()
        if (seq_len is None) == (positions is None):
            raise ValueError("YarnEmbedding.cos_sin: give seq_len or positions (one of them)")
        if positions is not None:
            return self._cos_sin_at(positions, dtype, device)
        needed = _needed_length(seq_len, None)
        assert needed is not None  # a seq_len always gives one
        # Built from the (possibly grown) tables and committed last: a call that raises (say a
        # bad dtype or device) changes nothing.
        with self._growth:
            return self._cos_sin(int(needed), dtype, device)

    def _cos_sin_at(
        self, positions: Tensor, dtype: torch.dtype | None, device: torch.device | str | None
    ) -> tuple[Tensor, Tensor]:
        """cos_sin at given positions, through the rotation itself: rotating the unit vector
        (1, 0) of every pair gives (mscale cos, mscale sin) exactly (1 * c - 0 * s = c), from
        the cache or the float64 math as a rotation would, MRoPE included."""
        if self.mrope_section is not None and (positions.dim() < 1 or positions.shape[0] != 3):
            raise ValueError(
                "YarnEmbedding.cos_sin: on an MRoPE embedding positions must carry the t, h and "
                f"w components first ([3, ...]), got shape {list(positions.shape)}"
            )
        t = self._current
        half = self.dim // 2
        rows = positions.shape[1:] if self.mrope_section is not None else positions.shape
        unit = torch.zeros(self.dim, dtype=torch.float32, device=t.inv_freq.device)
        unit[:half] = 1
        x = unit.expand(*rows, 1, self.dim)
        rotated = ops.rotate(
            x,
            t.cos_sin_cache,
            t.inv_freq,
            t.mscale,
            positions.unsqueeze(-1),
            False,
            False,
            self._mrope_args,
            self.mrope_interleaved,
        ).squeeze(-2)
        with self._growth:  # (the column map is module state, shared with cos_sin(seq_len))
            columns = self._cos_sin_index = self._columns(rotated.device)
        cos, sin = (
            rotated.index_select(-1, part).to(dtype=dtype, device=device)
            for part in columns.split(self.dim)
        )
        return cos, sin

    def _cos_sin(
        self, seq_len: int, dtype: torch.dtype | None, device: torch.device | str | None
    ) -> tuple[Tensor, Tensor]:
        grown = self._grown_tables(seq_len) if seq_len > self.max_seq_len_cached else None
        table = (self._current if grown is None else grown).cos_sin_cache
        columns = self._cos_sin_index = self._columns(table.device)
        rows = table[:seq_len]
        # index_select makes each result a contiguous tensor of its own, as they have always been.
        cos, sin = (
            rows.index_select(1, part)[None, None].to(dtype=dtype, device=device)
            for part in columns.split(self.dim)
        )
        if grown is not None:
            self._commit(grown)
        return cos, sin

    # -- nn.Module plumbing ----------------------------------------------------------------

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> YarnEmbedding:
        # .to(dtype), .half(), .bfloat16() must not lower the precision of the tables (the
        # float64 inv_freq, the float32 cache): follow device moves, keep the dtypes.
        # Under the lock: a growth committing meanwhile would leave tables on the old device.
        # Tables that hold no values: real ones made from meta tensors (to_empty is the only
        # function that can make them), or made by to_empty from real ones (recognised by its
        # function's name; a torch that renamed it leaves the meta rule, which is torchtitan's
        # and FSDP2's case). Calls refuse them until reset_parameters. Meta tables are shapes
        # only and serve meta inputs.
        empties = getattr(fn, "__qualname__", "") == "Module.to_empty.<locals>.<lambda>"
        with self._growth:
            before = dict(self._buffers)
            super()._apply(fn, recurse)
            for name, old in before.items():
                new = self._buffers.get(name)
                if old is not None and new is not None and new.dtype != old.dtype:
                    self._buffers[name] = old.to(device=new.device)
            t = self._current
            inv_freq = self._buffers["inv_freq"]
            self._current = _Tables(
                inv_freq,
                self._buffers["cos_sin_cache"],
                self.scale,
                self.mscale,
                not inv_freq.is_meta and (t.uninitialized or t.inv_freq.is_meta or empties),
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
            + (
                ""
                if self.mrope_section is None
                else f", mrope_section={list(self.mrope_section)}, "
                f"mrope_interleaved={self.mrope_interleaved}"
            )
            + (
                ""
                if self.softmax_scale_factor == 1.0
                else f", softmax_scale_factor={self.softmax_scale_factor:.6g}"
            )
        )
