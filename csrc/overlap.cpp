#include "overlap.h"

#include <algorithm>
#include <cstdint>
#include <vector>

namespace yarn_ext::detail {
namespace {

// How many digits the search may try per question. Views made by slicing, transposing or
// splitting a tensor (fused qkv, interleaved heads) are decided in a few dozen; the budget only
// runs out on as_strided views built to be hard, and those are refused.
constexpr int64_t kSearchBudget = 100000;

// One unknown of the overlap equation: an integer digit in [lo, hi] times a positive stride.
struct Term {
  int64_t stride;
  int64_t lo;
  int64_t hi;
};

// The equation sum(digit_i * stride_i) == target over a few terms. On the stack for any real
// question (two views of up to 16 dimensions and a byte term): the in-place operator asks several
// on every decode step, which should not allocate.
class Equation {
 public:
  explicit Equation(int64_t capacity) {
    if (capacity > kLocal) {
      heap_terms_.resize(static_cast<size_t>(capacity));
      heap_bounds_.resize(static_cast<size_t>(2 * (capacity + 1)));
      terms_ = heap_terms_.data();
      bounds_ = heap_bounds_.data();
    }
  }

  // Adds stride * digit, digit in [lo, hi]. A term of a stride already present merges with it:
  // the sum of two digits takes every integer between the sums of their bounds.
  void add(int64_t stride, int64_t lo, int64_t hi) {
    if (stride < 0) {
      add(-stride, -hi, -lo);
      return;
    }
    if (stride == 0 || lo == hi) return;  // adds a constant: zero, as every caller has lo or hi 0
    Term* term =
        std::find_if(terms_, terms_ + count_, [&](const Term& t) { return t.stride == stride; });
    if (term == terms_ + count_) {
      terms_[count_++] = Term{stride, lo, hi};
    } else {
      term->lo += lo;
      term->hi += hi;
    }
  }

  // Sets a term that must not merge (its range excludes 0); the caller keeps strides distinct.
  void set(int64_t stride, int64_t lo, int64_t hi) { terms_[count_++] = Term{stride, lo, hi}; }

  // Is there a solution? Depth-first over the terms, largest stride first; what the remaining
  // terms can add bounds each digit, which leaves a couple of candidates per level for real views.
  Overlap solve(int64_t target, int64_t& budget) {
    // (The strides are distinct - add() merges equal ones, set()'s callers keep them apart - so
    // the order is the one Python's sort gives. std::sort: stable_sort may allocate.)
    std::sort(terms_, terms_ + count_,
              [](const Term& x, const Term& y) { return x.stride > y.stride; });
    suffix_lo_ = bounds_;
    suffix_hi_ = bounds_ + count_ + 1;
    suffix_lo_[count_] = suffix_hi_[count_] = 0;
    for (size_t i = count_; i-- > 0;) {
      suffix_lo_[i] = suffix_lo_[i + 1] + terms_[i].lo * terms_[i].stride;
      suffix_hi_[i] = suffix_hi_[i + 1] + terms_[i].hi * terms_[i].stride;
    }
    return search(0, target, budget);
  }

 private:
  static constexpr int64_t kLocal = 40;

  static int64_t floor_div(int64_t a, int64_t b) {
    return a / b - ((a % b != 0) && ((a < 0) != (b < 0)));
  }
  static int64_t ceil_div(int64_t a, int64_t b) { return -floor_div(-a, b); }

  Overlap search(size_t i, int64_t target, int64_t& budget) {
    if (i == count_) return target == 0 ? Overlap::kYes : Overlap::kNo;
    const Term& t = terms_[i];
    const int64_t first = std::max(t.lo, ceil_div(target - suffix_hi_[i + 1], t.stride));
    const int64_t last = std::min(t.hi, floor_div(target - suffix_lo_[i + 1], t.stride));
    bool unknown = false;
    for (int64_t digit = first; digit <= last; ++digit) {
      if (--budget < 0) return Overlap::kUnknown;
      const Overlap found = search(i + 1, target - digit * t.stride, budget);
      if (found == Overlap::kYes) return found;
      unknown = unknown || found == Overlap::kUnknown;
    }
    return unknown ? Overlap::kUnknown : Overlap::kNo;
  }

  Term local_terms_[kLocal];
  int64_t local_bounds_[2 * (kLocal + 1)];
  std::vector<Term> heap_terms_;
  std::vector<int64_t> heap_bounds_;
  Term* terms_ = local_terms_;
  int64_t* bounds_ = local_bounds_;
  int64_t* suffix_lo_ = nullptr;
  int64_t* suffix_hi_ = nullptr;
  size_t count_ = 0;
};

// The bytes [first, last] a view can touch; false for an empty view, which touches none.
bool byte_span(const void* data, const TensorMeta& t, int64_t item, intptr_t* first,
               intptr_t* last) {
  intptr_t lo = 0, hi = 0;
  for (int64_t d = 0; d < t.dim; ++d) {
    if (t.sizes[d] == 0) return false;
    if (t.sizes[d] == 1) continue;  // any stride (as_strided), and no reach
    const intptr_t reach = static_cast<intptr_t>(t.sizes[d] - 1) * t.strides[d] * item;
    (reach < 0 ? lo : hi) += reach;
  }
  *first = reinterpret_cast<intptr_t>(data) + lo;
  *last = reinterpret_cast<intptr_t>(data) + hi + item - 1;
  return true;
}

}  // namespace

Overlap views_overlap(const void* a_data, const TensorMeta& a, const void* b_data,
                      const TensorMeta& b) {
  const int64_t a_item = element_size(a.dtype);
  const int64_t b_item = element_size(b.dtype);
  if (a_item == 0 || b_item == 0) return Overlap::kUnknown;  // a dtype the checks never let by
  // Most questions end here (tables and q/k are separate allocations): one pass over each shape.
  intptr_t a_first, a_last, b_first, b_last;
  if (!byte_span(a_data, a, a_item, &a_first, &a_last) ||
      !byte_span(b_data, b, b_item, &b_first, &b_last)) {
    return Overlap::kNo;  // an empty view
  }
  if (a_last < b_first || b_last < a_first) return Overlap::kNo;
  // a's element at index i covers the bytes a_data + sum(i_d * a_stride_d) + [0, a_item), and
  // likewise for b. They share a byte where
  //   sum(i_d * a_stride_d) - sum(j_d * b_stride_d) + (u - v) == b_data - a_data,
  // with strides in bytes, u in [0, a_item) and v in [0, b_item): exact for any two dtypes.
  // Size-1 dimensions add nothing, and may carry any stride (as_strided): they are skipped before
  // their stride is scaled. The others' reach lies inside their storage, so nothing overflows.
  Equation equation(a.dim + b.dim + 1);
  for (int64_t d = 0; d < a.dim; ++d) {
    if (a.sizes[d] > 1) equation.add(a.strides[d] * a_item, 0, a.sizes[d] - 1);
  }
  for (int64_t d = 0; d < b.dim; ++d) {
    if (b.sizes[d] > 1) equation.add(b.strides[d] * b_item, 1 - b.sizes[d], 0);
  }
  equation.add(1, 1 - b_item, a_item - 1);
  int64_t budget = kSearchBudget;
  return equation.solve(reinterpret_cast<intptr_t>(b_data) - reinterpret_cast<intptr_t>(a_data),
                        budget);
}

Overlap self_overlap(const TensorMeta& t) {
  // The dimensions that step (size > 1), by stride, smallest first.
  int64_t local[16];
  std::vector<int64_t> heap;
  int64_t* dims = local;
  if (t.dim > 16) {
    heap.resize(static_cast<size_t>(t.dim));
    dims = heap.data();
  }
  int64_t count = 0;
  for (int64_t d = 0; d < t.dim; ++d) {
    if (t.sizes[d] == 0) return Overlap::kNo;
    if (t.sizes[d] > 1) dims[count++] = d;
  }
  const auto stride = [&](int64_t d) { return t.strides[d] < 0 ? -t.strides[d] : t.strides[d]; };
  // (Equal strides are answered below whatever their order; std::sort does not allocate.)
  std::sort(dims, dims + count, [&](int64_t x, int64_t y) { return stride(x) < stride(y); });
  // Two index vectors meet where their difference e (e_d in [-(size_d - 1), size_d - 1], not all
  // zero) has sum(e_d * stride_d) == 0. A zero stride, or two equal ones, give such an e at once.
  // Where each stride passes everything the smaller ones reach, no e exists: every view made by
  // slicing, transposing or splitting a tensor is like that.
  bool nested = true;
  int64_t reach = 0;
  for (int64_t i = 0; i < count; ++i) {
    const int64_t s = stride(dims[i]);
    if (s == 0 || (i > 0 && s == stride(dims[i - 1]))) return Overlap::kYes;
    nested = nested && s > reach;
    reach += s * (t.sizes[dims[i]] - 1);
  }
  if (nested) return Overlap::kNo;
  // Otherwise search, once for each dimension p as the largest-stride one where e is nonzero
  // (positive there, as -e is a solution too): e is 0 on larger strides and free on smaller ones.
  int64_t budget = kSearchBudget;
  bool unknown = false;
  for (int64_t p = count; p-- > 0;) {
    Equation equation(p + 1);
    equation.set(stride(dims[p]), 1, t.sizes[dims[p]] - 1);
    for (int64_t i = 0; i < p; ++i) {
      equation.set(stride(dims[i]), 1 - t.sizes[dims[i]], t.sizes[dims[i]] - 1);
    }
    const Overlap found = equation.solve(0, budget);
    if (found == Overlap::kYes) return found;
    unknown = unknown || found == Overlap::kUnknown;
  }
  return unknown ? Overlap::kUnknown : Overlap::kNo;
}

}  // namespace yarn_ext::detail
