#include "checks.h"

#include <ATen/ExpandUtils.h>
#include <ATen/MemoryOverlap.h>
#include <c10/util/Exception.h>
#include <c10/util/SmallVector.h>

#include <algorithm>
#include <cmath>

namespace yarn_ext::detail {
namespace {

bool is_supported_float(at::ScalarType type) {
  return type == at::kFloat || type == at::kHalf || type == at::kBFloat16 || type == at::kDouble;
}

// One dimension of the overlap equation: index digit in [lo, hi] times a positive stride.
struct OverlapTerm {
  int64_t stride;
  int64_t lo;
  int64_t hi;
};

enum class Overlap { kNo, kYes, kUnknown };

int64_t floor_div(int64_t a, int64_t b) {
  return a / b - ((a % b != 0) && ((a < 0) != (b < 0)));
}
int64_t ceil_div(int64_t a, int64_t b) {
  return -floor_div(-a, b);
}

// Is there a digit vector with sum(digit * stride) == target? Terms are sorted by stride,
// largest first; suffix_lo/hi[i] bound what terms i.. can contribute. Depth-first with pruning:
// for views of one tensor (fused qkv slices) each level has at most a couple of candidates.
// Small inline buffers: this runs on every in-place call with k, and a decode step should not
// pay for heap allocations (terms: at most one per distinct stride of q and k).
using Terms = c10::SmallVector<OverlapTerm, 8>;
using Bounds = c10::SmallVector<int64_t, 9>;

Overlap solve(const Terms& terms, const Bounds& suffix_lo, const Bounds& suffix_hi, size_t i,
              int64_t target, int64_t& budget) {
  if (i == terms.size()) return target == 0 ? Overlap::kYes : Overlap::kNo;
  const OverlapTerm& t = terms[i];
  const int64_t first = std::max(t.lo, ceil_div(target - suffix_hi[i + 1], t.stride));
  const int64_t last = std::min(t.hi, floor_div(target - suffix_lo[i + 1], t.stride));
  bool unknown = false;
  for (int64_t digit = first; digit <= last; ++digit) {
    if (--budget < 0) return Overlap::kUnknown;
    const Overlap found =
        solve(terms, suffix_lo, suffix_hi, i + 1, target - digit * t.stride, budget);
    if (found == Overlap::kYes) return found;
    unknown = unknown || found == Overlap::kUnknown;
  }
  return unknown ? Overlap::kUnknown : Overlap::kNo;
}

// Whether two views share an element. Exact for views that are cheap to decide (dense tensors,
// slices of one tensor such as fused qkv); views too irregular to decide quickly count as
// disjoint, which is what ATen assumes for its own in-place ops.
bool views_overlap(const at::Tensor& a, const at::Tensor& b) {
  if (a.numel() == 0 || b.numel() == 0 || !a.storage().is_alias_of(b.storage())) return false;
  // a's element at index i lies at off_a + sum(i_d * s_d); they meet where
  // sum(i_d * sa_d) - sum(j_d * sb_d) == off_b - off_a. Terms of equal stride merge: the sum of
  // two digits covers every integer between the sums of their bounds.
  Terms terms;
  auto add = [&](int64_t stride, int64_t size, bool negate) {
    if (size == 1 || stride == 0) return;
    const int64_t magnitude = stride < 0 ? -stride : stride;
    const bool negative = negate != (stride < 0);
    auto term = std::find_if(terms.begin(), terms.end(),
                             [&](const OverlapTerm& t) { return t.stride == magnitude; });
    if (term == terms.end()) term = terms.insert(terms.end(), OverlapTerm{magnitude, 0, 0});
    (negative ? term->lo : term->hi) += size - 1;
  };
  for (int64_t d = 0; d < a.dim(); ++d) add(a.stride(d), a.size(d), false);
  for (int64_t d = 0; d < b.dim(); ++d) add(b.stride(d), b.size(d), true);
  std::sort(terms.begin(), terms.end(),
            [](const OverlapTerm& x, const OverlapTerm& y) { return x.stride > y.stride; });
  Bounds suffix_lo(terms.size() + 1, 0), suffix_hi(terms.size() + 1, 0);
  for (size_t i = terms.size(); i-- > 0;) {
    // terms[i].lo holds a count of negative steps: make it the digit's lower bound.
    terms[i].lo = -terms[i].lo;
    suffix_lo[i] = suffix_lo[i + 1] + terms[i].lo * terms[i].stride;
    suffix_hi[i] = suffix_hi[i + 1] + terms[i].hi * terms[i].stride;
  }
  int64_t budget = 100000;
  const int64_t target = b.storage_offset() - a.storage_offset();
  return solve(terms, suffix_lo, suffix_hi, 0, target, budget) == Overlap::kYes;
}

}  // namespace

c10::SymInt check_inv_freq(const char* op, const at::Tensor& inv_freq) {
  TORCH_CHECK_TYPE(inv_freq.scalar_type() == at::kDouble, op,
                   ": inv_freq must be float64 (the angles are formed in float64), got ",
                   inv_freq.scalar_type());
  TORCH_CHECK_VALUE(inv_freq.dim() == 1 && inv_freq.sym_size(0) > 0, op,
                    ": inv_freq must be a non-empty 1-D tensor [dim / 2], got shape ",
                    inv_freq.sym_sizes());
  TORCH_CHECK_VALUE(inv_freq.sym_is_contiguous().guard_bool(__FILE__, __LINE__), op,
                    ": inv_freq must be contiguous");
  return inv_freq.sym_size(0);
}

void check_mscale(const char* op, double mscale) {
  TORCH_CHECK_VALUE(std::isfinite(mscale), op, ": mscale must be finite, got ", mscale);
}

int64_t check_cache_request(const char* op, const at::Tensor& inv_freq, int64_t num_positions,
                            double mscale) {
  const int64_t half = check_inv_freq(op, inv_freq).expect_int();
  check_mscale(op, mscale);
  TORCH_CHECK_VALUE(num_positions >= 0, op, ": num_positions must be >= 0, got ", num_positions);
  return half;
}

c10::SymInt check_tables(const char* op, const at::Tensor& cos_sin_cache,
                         const at::Tensor& inv_freq, double mscale) {
  c10::SymInt half = check_inv_freq(op, inv_freq);
  check_mscale(op, mscale);
  TORCH_CHECK_TYPE(cos_sin_cache.scalar_type() == at::kFloat, op,
                   ": cos_sin_cache must be float32, got ", cos_sin_cache.scalar_type());
  TORCH_CHECK_VALUE(cos_sin_cache.dim() == 2 && cos_sin_cache.sym_size(1) == half * 2, op,
                    ": cos_sin_cache must have shape [positions, ", half * 2,
                    "] to match inv_freq, got ", cos_sin_cache.sym_sizes());
  TORCH_CHECK_VALUE(cos_sin_cache.sym_is_contiguous().guard_bool(__FILE__, __LINE__), op,
                    ": cos_sin_cache must be contiguous");
  TORCH_CHECK_VALUE(cos_sin_cache.device() == inv_freq.device(), op,
                    ": cos_sin_cache and inv_freq must be on the same device, got ",
                    cos_sin_cache.device(), " and ", inv_freq.device());
  return half;
}

void check_rotated(const char* op, const char* name, const at::Tensor& x,
                   const at::Tensor& inv_freq, const c10::SymInt& half) {
  TORCH_CHECK_TYPE(is_supported_float(x.scalar_type()), op, ": ", name,
                   " must be float32, float16, bfloat16 or float64, got ", x.scalar_type());
  TORCH_CHECK_VALUE(x.device() == inv_freq.device(), op, ": ", name, " is on ", x.device(),
                    " but the embedding tables are on ", inv_freq.device());
  TORCH_CHECK_VALUE(x.dim() >= 2, op, ": ", name,
                    " must have at least 2 dimensions [..., seq, head_dim], got shape ",
                    x.sym_sizes());
  TORCH_CHECK_VALUE(x.sym_size(-1) >= half * 2, op, ": ", name, ".shape[-1] (", x.sym_size(-1),
                    ") is smaller than the rotary dim (", half * 2, ")");
}

at::Tensor broadcast_positions(const char* op, const std::optional<at::Tensor>& positions,
                               const at::Tensor& x, const char* x_name) {
  if (!positions.has_value() || !positions->defined()) return at::Tensor();
  const at::Tensor& p = *positions;
  TORCH_CHECK_TYPE(p.scalar_type() == at::kLong || p.scalar_type() == at::kInt, op,
                   ": positions must be an int32 or int64 tensor, got ", p.scalar_type());
  TORCH_CHECK_VALUE(p.device() == x.device(), op, ": positions is on ", p.device(), " but ", x_name,
                    " is on ", x.device());
  const c10::SymIntArrayRef rows = x.sym_sizes().slice(0, x.dim() - 1);
  TORCH_CHECK_VALUE(at::is_expandable_to(p.sym_sizes(), rows), op, ": positions of shape ",
                    p.sym_sizes(), " does not broadcast against ", x_name, ".shape[:-1] = ", rows,
                    " (for a [tokens, heads, head_dim] layout pass positions[:, None])");
  return p.expand_symint(rows);
}

void check_inplace_pair(const char* op, const at::Tensor& q, const std::optional<at::Tensor>& k) {
  if (!k.has_value() || !k->defined()) return;
  TORCH_CHECK_VALUE(k->device() == q.device(), op, ": q and k must be on the same device, got ",
                    q.device(), " and ", k->device());
  TORCH_CHECK_TYPE(k->scalar_type() == q.scalar_type(), op,
                   ": q and k must have the same dtype, got ", q.scalar_type(), " and ",
                   k->scalar_type());
  TORCH_CHECK_VALUE(k->dim() >= 1 && q.dim() >= 1 && k->sym_size(-1) == q.sym_size(-1), op,
                    ": q and k must have the same head size, got ", q.sym_sizes(), " and ",
                    k->sym_sizes());
}

void check_inplace_memory(const char* op, const at::Tensor& q, const std::optional<at::Tensor>& k) {
  TORCH_CHECK_VALUE(at::has_internal_overlap(q) != at::MemOverlap::Yes, op,
                    ": q has overlapping elements (an expanded view?) and cannot be rotated in "
                    "place");
  if (!k.has_value() || !k->defined()) return;
  TORCH_CHECK_VALUE(at::has_internal_overlap(*k) != at::MemOverlap::Yes, op,
                    ": k has overlapping elements (an expanded view?) and cannot be rotated in "
                    "place");
  TORCH_CHECK_VALUE(!views_overlap(q, *k), op,
                    ": q and k share memory; each shared element would be rotated twice");
}

bool has_symbolic_shape(const at::Tensor& t) {
  return t.defined() && t.unsafeGetTensorImpl()->has_symbolic_sizes_strides();
}

}  // namespace yarn_ext::detail
