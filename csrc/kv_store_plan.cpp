#include "kv_store_plan.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "yarn_ext/mrope_section.h"

namespace yarn_ext::detail {
namespace {

using torch::stable::Tensor;

// q, k and v: [tokens, heads, head_size] of a 16- or 32-bit float type with unit element stride
// (slices of a fused qkv projection qualify), on the tables' device.
void check_heads(const char* op, const char* name, const Tensor& t, const TensorMeta& meta,
                 const TensorMeta& inv_freq) {
  const bool floating = meta.dtype == Dtype::kFloat32 || meta.dtype == Dtype::kFloat16 ||
                        meta.dtype == Dtype::kBFloat16;
  YARN_CHECK(floating, op, name, " must be float32, float16 or bfloat16, got ", dtype_name(t));
  YARN_CHECK(meta.same_device(inv_freq), op, name, " is on ", device_text(meta),
             " but the embedding tables are on ", device_text(inv_freq));
  YARN_CHECK(meta.dim == 3, op, name, " must have shape [tokens, heads, head_dim], got shape ",
             shape_text(meta));
  YARN_CHECK(meta.size(-1) <= kKvMaxHeadSize, op, name, ".shape[-1] (", meta.size(-1),
             ") is larger than the ", kKvMaxHeadSize, " features a head may have");
  YARN_CHECK(meta.stride(-1) == 1 || meta.size(-1) <= 1, op, name,
             " must have unit stride in its last dimension, got stride ", meta.stride(-1));
}

// A paged cache: [num_blocks, block_size, heads, head_size] matching `heads`, contiguous in its
// last two dimensions.
void check_cache(const char* op, const char* name, const Tensor& cache, const TensorMeta& meta,
                 const TensorMeta& like, const char* like_name, Dtype dtype, const Tensor& q) {
  YARN_CHECK(meta.dtype == dtype || meta.dtype == Dtype::kFloat8E4M3, op, name,
             " must have q's dtype (", dtype_name(q), ") or float8_e4m3fn, got ",
             dtype_name(cache));
  YARN_CHECK(meta.same_device(like), op, name, " is on ", device_text(meta), " but ", like_name,
             " is on ", device_text(like));
  const bool shaped = meta.dim == 4 && meta.size(2) == like.size(1) && meta.size(3) == like.size(2);
  YARN_CHECK(shaped, op, name, " must have shape [num_blocks, block_size, ", like.size(1), ", ",
             like.size(2), "] (the heads and head_dim of ", like_name, "), got ", shape_text(meta));
  const bool inner = (meta.size(3) <= 1 || meta.stride(3) == 1) &&
                     (meta.size(2) <= 1 || meta.stride(2) == meta.size(3));
  YARN_CHECK(inner, op, name, " must be contiguous in its last two dimensions (heads, head_dim)");
}

// A norm weight: [head_size] of q's dtype, contiguous, on q's device.
void check_weight(const char* op, const char* name, const Tensor& w, const TensorMeta& meta,
                  const TensorMeta& q, const Tensor& q_tensor) {
  YARN_CHECK(meta.dtype == q.dtype, op, name, " must have q's dtype (", dtype_name(q_tensor),
             "), got ", dtype_name(w));
  YARN_CHECK(meta.same_device(q), op, name, " is on ", device_text(meta), " but q is on ",
             device_text(q));
  YARN_CHECK(meta.dim == 1 && meta.size(0) == q.size(-1), op, name, " must have shape [",
             q.size(-1), "] (q's head_dim), got ", shape_text(meta));
  YARN_CHECK(meta.is_contiguous(), op, name, " must be contiguous");
}

// A float8 cache's scale: one float32 value on q's device.
void check_scale(const char* op, const char* name, const Tensor& s, const TensorMeta& meta,
                 const TensorMeta& q) {
  YARN_CHECK(meta.dtype == Dtype::kFloat32, op, name, " must be float32, got ", dtype_name(s));
  YARN_CHECK(meta.same_device(q), op, name, " is on ", device_text(meta), " but q is on ",
             device_text(q));
  YARN_CHECK(meta.numel() == 1, op, name, " must hold one value (a per-tensor scale), got shape ",
             shape_text(meta));
}

// Positions: [T] or [T, 1] per token; with mrope_section also [3, T] or [3, T, 1] (t, h, w).
void check_kv_positions(const char* op, const Tensor& positions, const TensorMeta& p,
                        const TensorMeta& q, int64_t tokens, KvStorePlan* plan) {
  YARN_CHECK(p.dtype == Dtype::kInt64 || p.dtype == Dtype::kInt32, op,
             "positions must be an int32 or int64 tensor, got ", dtype_name(positions));
  YARN_CHECK(p.same_device(q), op, "positions is on ", device_text(p), " but q is on ",
             device_text(q));
  plan->positions = positions.const_data_ptr();
  plan->int32_positions = p.dtype == Dtype::kInt32;
  const bool plain = (p.dim == 1 || (p.dim == 2 && p.size(1) == 1)) && p.size(0) == tokens;
  if (plain) {
    plan->position_stride = p.stride(0);
    plan->tables.mrope.component_stride = 0;
    return;
  }
  const bool mrope = (p.dim == 2 || (p.dim == 3 && p.size(2) == 1)) &&
                     p.size(0) == kMropeComponents && p.size(1) == tokens;
  YARN_CHECK(!mrope || plan->tables.mrope.enabled, op, "positions of shape ", shape_text(p),
             " are MRoPE positions (t, h, w first), but the call has no mrope_section");
  YARN_CHECK(mrope, op, "positions must have shape [", tokens, "] or [", tokens, ", 1]",
             plan->tables.mrope.enabled ? " (MRoPE: [3, T] or [3, T, 1])" : "", " for the ", tokens,
             " tokens of q, got ", shape_text(p));
  plan->position_stride = p.stride(1);
  plan->tables.mrope.component_stride = p.stride(0);
}

TokenHeads heads_view(const Tensor& t, const TensorMeta& meta) {
  return {const_cast<void*>(t.const_data_ptr()), meta.stride(0), meta.stride(1), meta.size(1)};
}

PagedCache paged_view(const Tensor& t, const TensorMeta& meta) {
  return {const_cast<void*>(t.const_data_ptr()), meta.stride(0), meta.stride(1)};
}

}  // namespace

KvStorePlan plan_rotate_store_kv(const char* op, const KvStoreArgs& a) {
  KvStorePlan plan{};
  const TensorMeta cache = read_meta(a.cos_sin_cache);
  const TensorMeta frequencies = read_meta(a.inv_freq);
  const int64_t half = check_tables(op, a.cos_sin_cache, cache, a.inv_freq, frequencies, a.mscale);
  plan.tables = {static_cast<const float*>(a.cos_sin_cache.const_data_ptr()),
                 cache.sizes[0],
                 static_cast<const double*>(a.inv_freq.const_data_ptr()),
                 half,
                 a.mscale,
                 /*inverse=*/false,
                 /*mrope=*/{}};
  if (a.mrope.sections.has_value()) {
    plan.tables.mrope =
        helper_math::check_mrope_section(op, *a.mrope.sections, a.mrope.interleaved, half);
  }
  // q, k and v
  const TensorMeta q = read_meta(a.q);
  const TensorMeta k = read_meta(a.k);
  const TensorMeta v = read_meta(a.v);
  check_heads(op, "q", a.q, q, frequencies);
  YARN_CHECK(q.size(-1) >= half * 2, op, "q.shape[-1] (", q.size(-1),
             ") is smaller than the rotary dim (", half * 2, ")");
  check_heads(op, "k", a.k, k, frequencies);
  check_inplace_pair(op, a.q, q, a.k, k);
  check_heads(op, "v", a.v, v, frequencies);
  YARN_CHECK(v.dtype == q.dtype, op, "v must have q's dtype (", dtype_name(a.q), "), got ",
             dtype_name(a.v));
  const int64_t tokens = q.size(0);
  YARN_CHECK(k.size(0) == tokens && v.size(0) == tokens, op,
             "q, k and v must have the same number of tokens, got shapes ", shape_text(q), ", ",
             shape_text(k), " and ", shape_text(v));
  YARN_CHECK(v.size(1) == k.size(1), op, "v must have k's number of heads (", k.size(1),
             "), got shape ", shape_text(v));
  plan.dtype = q.dtype;
  plan.device_index = q.device_index;
  plan.num_tokens = tokens;
  plan.head_size = q.size(-1);
  plan.v_head_size = v.size(-1);
  plan.q = heads_view(a.q, q);
  plan.k = heads_view(a.k, k);
  plan.v = heads_view(a.v, v);
  plan.interleaved = a.interleaved;
  plan.write_k = a.write_k;
  // positions
  const TensorMeta positions = read_meta(a.positions);
  check_kv_positions(op, a.positions, positions, q, tokens, &plan);
  // the caches
  const TensorMeta k_cache = read_meta(a.k_cache);
  const TensorMeta v_cache = read_meta(a.v_cache);
  check_cache(op, "k_cache", a.k_cache, k_cache, k, "k", q.dtype, a.q);
  check_cache(op, "v_cache", a.v_cache, v_cache, v, "v", q.dtype, a.q);
  YARN_CHECK(v_cache.dtype == k_cache.dtype, op,
             "k_cache and v_cache must have the same dtype, got ", dtype_name(a.k_cache), " and ",
             dtype_name(a.v_cache));
  YARN_CHECK(v_cache.size(0) == k_cache.size(0) && v_cache.size(1) == k_cache.size(1), op,
             "k_cache and v_cache must have the same blocks [num_blocks, block_size], got shapes ",
             shape_text(k_cache), " and ", shape_text(v_cache));
  plan.k_cache = paged_view(a.k_cache, k_cache);
  plan.v_cache = paged_view(a.v_cache, v_cache);
  plan.num_blocks = k_cache.size(0);
  plan.block_size = k_cache.size(1);
  plan.fp8 = k_cache.dtype == Dtype::kFloat8E4M3;
  // slot_mapping
  const TensorMeta slots = read_meta(a.slot_mapping);
  YARN_CHECK(slots.dtype == Dtype::kInt64 || slots.dtype == Dtype::kInt32, op,
             "slot_mapping must be an int32 or int64 tensor, got ", dtype_name(a.slot_mapping));
  YARN_CHECK(slots.same_device(q), op, "slot_mapping is on ", device_text(slots), " but q is on ",
             device_text(q));
  YARN_CHECK(slots.dim == 1 && slots.size(0) == tokens, op, "slot_mapping must have shape [",
             tokens, "] (a slot per token), got ", shape_text(slots));
  plan.slots = a.slot_mapping.const_data_ptr();
  plan.int32_slots = slots.dtype == Dtype::kInt32;
  plan.slot_stride = slots.stride(0);
  // the norm
  TensorMeta q_weight{};
  TensorMeta k_weight{};
  if (a.q_norm_weight.has_value()) {
    q_weight = read_meta(*a.q_norm_weight);
    check_weight(op, "q_norm_weight", *a.q_norm_weight, q_weight, q, a.q);
    plan.q_weight = a.q_norm_weight->const_data_ptr();
  }
  if (a.k_norm_weight.has_value()) {
    k_weight = read_meta(*a.k_norm_weight);
    check_weight(op, "k_norm_weight", *a.k_norm_weight, k_weight, q, a.q);
    plan.k_weight = a.k_norm_weight->const_data_ptr();
  }
  YARN_CHECK(std::isfinite(a.eps) && a.eps >= 0, op, "eps must be finite and >= 0, got ", a.eps);
  plan.eps = static_cast<float>(a.eps);  // as torch adds it to a float32 tensor
  plan.unit_offset = a.norm_unit_offset;
  // the scales
  TensorMeta k_scale{};
  TensorMeta v_scale{};
  if (plan.fp8) {
    YARN_CHECK(a.k_scale.has_value() && a.v_scale.has_value(), op,
               "k_scale and v_scale are required with a float8_e4m3fn cache (float32 tensors of "
               "one value)");
    k_scale = read_meta(*a.k_scale);
    v_scale = read_meta(*a.v_scale);
    check_scale(op, "k_scale", *a.k_scale, k_scale, q);
    check_scale(op, "v_scale", *a.v_scale, v_scale, q);
    plan.k_scale = static_cast<const float*>(a.k_scale->const_data_ptr());
    plan.v_scale = static_cast<const float*>(a.v_scale->const_data_ptr());
  } else {
    YARN_CHECK(!a.k_scale.has_value() && !a.v_scale.has_value(), op,
               "k_scale and v_scale are for float8_e4m3fn caches, but the caches are ",
               dtype_name(a.k_cache));
  }
  // the counter of invalid slots
  TensorMeta invalid{};
  if (a.invalid_slots.has_value()) {
    invalid = read_meta(*a.invalid_slots);
    YARN_CHECK(invalid.dtype == Dtype::kInt32, op, "invalid_slots must be an int32 tensor, got ",
               dtype_name(*a.invalid_slots));
    YARN_CHECK(invalid.same_device(q), op, "invalid_slots is on ", device_text(invalid),
               " but q is on ", device_text(q));
    YARN_CHECK(invalid.numel() == 1, op,
               "invalid_slots must hold one value (a counter), got shape ", shape_text(invalid));
    plan.invalid_slots = static_cast<int32_t*>(a.invalid_slots->mutable_data_ptr());
  }
  // Memory, last: each written element once; nothing written that the call reads; q, k and v
  // apart from the caches.
  check_no_internal_overlap(op, "q", q);
  if (a.write_k) check_no_internal_overlap(op, "k", k);
  check_no_internal_overlap(op, "k_cache", k_cache);
  check_no_internal_overlap(op, "v_cache", v_cache);
  const MemoryView q_view{"q", plan.q.data, &q};
  const MemoryView k_view{"k", plan.k.data, &k};
  const MemoryView v_view{"v", plan.v.data, &v};
  const MemoryView k_cache_view{"k_cache", plan.k_cache.data, &k_cache};
  const MemoryView v_cache_view{"v_cache", plan.v_cache.data, &v_cache};
  check_disjoint(op, q_view, k_view);
  std::vector<MemoryView> written = {q_view, k_cache_view, v_cache_view};
  std::vector<MemoryView> read = {
      v_view,
      {"cos_sin_cache", plan.tables.cache, &cache},
      {"inv_freq", plan.tables.frequencies, &frequencies},
      {"positions", plan.positions, &positions},
      {"slot_mapping", plan.slots, &slots},
  };
  if (a.write_k) {
    written.push_back(k_view);
  } else {
    read.insert(read.begin(), k_view);
  }
  if (plan.invalid_slots != nullptr) {
    written.push_back({"invalid_slots", plan.invalid_slots, &invalid});
  }
  if (plan.q_weight != nullptr) read.push_back({"q_norm_weight", plan.q_weight, &q_weight});
  if (plan.k_weight != nullptr) read.push_back({"k_norm_weight", plan.k_weight, &k_weight});
  if (plan.fp8) {
    read.push_back({"k_scale", plan.k_scale, &k_scale});
    read.push_back({"v_scale", plan.v_scale, &v_scale});
  }
  for (size_t i = 0; i < written.size(); ++i) {
    for (size_t j = i + 1; j < written.size(); ++j) check_apart(op, written[i], written[j]);
    for (const MemoryView& r : read) check_not_read(op, written[i], r);
  }
  return plan;
}

void check_slots(const char* op, const KvStorePlan& plan) {
  const int64_t num_slots = plan.num_blocks * plan.block_size;
  // (slot, token) of the tokens with a slot; on the stack for a decode step's few tokens
  using Use = std::pair<int64_t, int64_t>;
  constexpr int64_t kOnStack = 64;
  Use on_stack[kOnStack];
  std::vector<Use> on_heap;
  Use* used = on_stack;
  if (plan.num_tokens > kOnStack) {
    on_heap.resize(static_cast<size_t>(plan.num_tokens));
    used = on_heap.data();
  }
  int64_t count = 0;
  for (int64_t t = 0; t < plan.num_tokens; ++t) {
    const int64_t offset = t * plan.slot_stride;
    const int64_t slot = plan.int32_slots ? static_cast<const int32_t*>(plan.slots)[offset]
                                          : static_cast<const int64_t*>(plan.slots)[offset];
    YARN_CHECK(slot >= -1 && slot < num_slots, op, "slot_mapping[", t, "] = ", slot,
               " is outside [-1, ", num_slots, ") (-1 is padding; the caches have ",
               plan.num_blocks, " blocks of ", plan.block_size, ")");
    if (slot >= 0) used[count++] = {slot, t};
  }
  std::sort(used, used + count);
  for (int64_t i = 1; i < count; ++i) {
    YARN_CHECK(used[i].first != used[i - 1].first, op, "slot_mapping has slot ", used[i].first,
               " twice (tokens ", used[i - 1].second, " and ", used[i].second,
               "): a cache row would be written twice");
  }
}

int64_t kv_store_vector_width(const KvStorePlan& plan) {
  const int64_t element = plan.dtype == Dtype::kFloat32 ? 4 : 2;
  const int64_t width = 16 / element;
  const int64_t cache_element = plan.fp8 ? 1 : element;
  auto aligned = [](const void* p, int64_t bytes) {
    return reinterpret_cast<uintptr_t>(p) % static_cast<uintptr_t>(bytes) == 0;
  };
  auto whole = [&](int64_t elements) { return elements % width == 0; };
  auto heads = [&](const TokenHeads& t) {
    return aligned(t.data, width * element) && whole(t.token_stride) && whole(t.head_stride);
  };
  auto paged = [&](const PagedCache& c) {
    return aligned(c.data, width * cache_element) && whole(c.block_stride) && whole(c.slot_stride);
  };
  return whole(plan.head_size) && whole(plan.v_head_size) && whole(plan.tables.half) &&
                 heads(plan.q) && heads(plan.k) && heads(plan.v) && paged(plan.k_cache) &&
                 paged(plan.v_cache) && aligned(plan.q_weight, width * element) &&
                 aligned(plan.k_weight, width * element) &&
                 aligned(plan.tables.cache, width * static_cast<int64_t>(sizeof(float)))
             ? width
             : 1;
}

}  // namespace yarn_ext::detail
