#include "checks.h"

#include <ATen/ExpandUtils.h>
#include <ATen/MemoryOverlap.h>
#include <c10/util/Exception.h>

#include <cmath>

namespace yarn_ext::detail {
namespace {

bool is_supported_float(at::ScalarType type) {
  return type == at::kFloat || type == at::kHalf || type == at::kBFloat16 || type == at::kDouble;
}

}  // namespace

int64_t check_inv_freq(const char* op, const at::Tensor& inv_freq) {
  TORCH_CHECK_TYPE(inv_freq.scalar_type() == at::kDouble, op,
                   ": inv_freq must be float64 (the angles are formed in float64), got ",
                   inv_freq.scalar_type());
  TORCH_CHECK_VALUE(inv_freq.dim() == 1 && inv_freq.size(0) > 0, op,
                    ": inv_freq must be a non-empty 1-D tensor [dim / 2], got shape ",
                    inv_freq.sizes());
  TORCH_CHECK_VALUE(inv_freq.is_contiguous(), op, ": inv_freq must be contiguous");
  return inv_freq.size(0);
}

void check_mscale(const char* op, double mscale) {
  TORCH_CHECK_VALUE(std::isfinite(mscale), op, ": mscale must be finite, got ", mscale);
}

int64_t check_tables(const char* op, const at::Tensor& cos_sin_cache, const at::Tensor& inv_freq,
                     double mscale) {
  const int64_t half = check_inv_freq(op, inv_freq);
  check_mscale(op, mscale);
  TORCH_CHECK_TYPE(cos_sin_cache.scalar_type() == at::kFloat, op,
                   ": cos_sin_cache must be float32, got ", cos_sin_cache.scalar_type());
  TORCH_CHECK_VALUE(cos_sin_cache.dim() == 2 && cos_sin_cache.size(1) == 2 * half, op,
                    ": cos_sin_cache must have shape [positions, ", 2 * half,
                    "] to match inv_freq, got ", cos_sin_cache.sizes());
  TORCH_CHECK_VALUE(cos_sin_cache.is_contiguous(), op, ": cos_sin_cache must be contiguous");
  TORCH_CHECK_VALUE(cos_sin_cache.device() == inv_freq.device(), op,
                    ": cos_sin_cache and inv_freq must be on the same device, got ",
                    cos_sin_cache.device(), " and ", inv_freq.device());
  return half;
}

void check_rotated(const char* op, const char* name, const at::Tensor& x,
                   const at::Tensor& inv_freq, int64_t half) {
  TORCH_CHECK_TYPE(is_supported_float(x.scalar_type()), op, ": ", name,
                   " must be float32, float16, bfloat16 or float64, got ", x.scalar_type());
  TORCH_CHECK_VALUE(x.device() == inv_freq.device(), op, ": ", name, " is on ", x.device(),
                    " but the embedding tables are on ", inv_freq.device());
  TORCH_CHECK_VALUE(x.dim() >= 2, op, ": ", name,
                    " must have at least 2 dimensions [..., seq, head_dim], got shape ", x.sizes());
  TORCH_CHECK_VALUE(x.size(-1) >= 2 * half, op, ": ", name, ".shape[-1] (", x.size(-1),
                    ") is smaller than the rotary dim (", 2 * half, ")");
}

at::Tensor broadcast_positions(const char* op, const std::optional<at::Tensor>& positions,
                               const at::Tensor& x, const char* x_name) {
  if (!positions.has_value() || !positions->defined()) return at::Tensor();
  const at::Tensor& p = *positions;
  TORCH_CHECK_TYPE(p.scalar_type() == at::kLong || p.scalar_type() == at::kInt, op,
                   ": positions must be an int32 or int64 tensor, got ", p.scalar_type());
  TORCH_CHECK_VALUE(p.device() == x.device(), op, ": positions is on ", p.device(), " but ", x_name,
                    " is on ", x.device());
  const at::IntArrayRef rows = x.sizes().slice(0, x.dim() - 1);
  TORCH_CHECK_VALUE(at::is_expandable_to(p.sizes(), rows), op, ": positions of shape ", p.sizes(),
                    " does not broadcast against ", x_name, ".shape[:-1] = ", rows,
                    " (for a [tokens, heads, head_dim] layout pass positions[:, None])");
  return p.expand(rows);
}

void check_inplace_pair(const char* op, const at::Tensor& q, const std::optional<at::Tensor>& k) {
  TORCH_CHECK_VALUE(at::has_internal_overlap(q) != at::MemOverlap::Yes, op,
                    ": q has overlapping elements (an expanded view?) and cannot be rotated in "
                    "place");
  if (!k.has_value() || !k->defined()) return;
  TORCH_CHECK_VALUE(k->device() == q.device(), op, ": q and k must be on the same device, got ",
                    q.device(), " and ", k->device());
  TORCH_CHECK_TYPE(k->scalar_type() == q.scalar_type(), op,
                   ": q and k must have the same dtype, got ", q.scalar_type(), " and ",
                   k->scalar_type());
  TORCH_CHECK_VALUE(k->dim() >= 1 && q.dim() >= 1 && k->size(-1) == q.size(-1), op,
                    ": q and k must have the same head size, got ", q.sizes(), " and ", k->sizes());
  TORCH_CHECK_VALUE(at::has_internal_overlap(*k) != at::MemOverlap::Yes, op,
                    ": k has overlapping elements (an expanded view?) and cannot be rotated in "
                    "place");
  // get_overlap_status answers TooHard for non-dense views (slices of a fused qkv tensor are
  // legitimately interleaved in memory); two views starting at the same element always overlap.
  const at::MemOverlapStatus overlap = at::get_overlap_status(q, *k);
  const bool same_start = q.numel() > 0 && k->numel() > 0 &&
                          q.storage().is_alias_of(k->storage()) &&
                          q.storage_offset() == k->storage_offset();
  TORCH_CHECK_VALUE(overlap != at::MemOverlapStatus::Full &&
                        overlap != at::MemOverlapStatus::Partial && !same_start,
                    op, ": q and k share memory; each element would be rotated twice");
}

}  // namespace yarn_ext::detail
