#include "checks.h"

#include <torch/csrc/inductor/aoti_torch/c/shim.h>
#include <torch/csrc/stable/macros.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace yarn_ext::detail {
namespace {

using torch::headeronly::ScalarType;

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
Overlap solve(const OverlapTerm* terms, size_t count, const int64_t* suffix_lo,
              const int64_t* suffix_hi, size_t i, int64_t target, int64_t& budget) {
  if (i == count) return target == 0 ? Overlap::kYes : Overlap::kNo;
  const OverlapTerm& t = terms[i];
  const int64_t first = std::max(t.lo, ceil_div(target - suffix_hi[i + 1], t.stride));
  const int64_t last = std::min(t.hi, floor_div(target - suffix_lo[i + 1], t.stride));
  bool unknown = false;
  for (int64_t digit = first; digit <= last; ++digit) {
    if (--budget < 0) return Overlap::kUnknown;
    const Overlap found =
        solve(terms, count, suffix_lo, suffix_hi, i + 1, target - digit * t.stride, budget);
    if (found == Overlap::kYes) return found;
    unknown = unknown || found == Overlap::kUnknown;
  }
  return unknown ? Overlap::kUnknown : Overlap::kNo;
}

// The bytes [first, last] a view can touch.
void byte_span(const void* data, const TensorMeta& t, intptr_t* first, intptr_t* last) {
  const auto base = reinterpret_cast<intptr_t>(data);
  const auto item = static_cast<intptr_t>(element_size(t.dtype));
  intptr_t lo = 0, hi = 0;
  for (int64_t d = 0; d < t.dim; ++d) {
    const intptr_t reach = static_cast<intptr_t>(t.sizes[d] - 1) * t.strides[d] * item;
    (reach < 0 ? lo : hi) += reach;
  }
  *first = base + lo;
  *last = base + hi + item - 1;
}

// Whether two views of the same dtype share an element. Exact for views that are cheap to decide
// (dense tensors, slices of one tensor such as fused qkv); views too irregular to decide quickly
// count as disjoint, which is what ATen assumes for its own in-place ops. Views whose bytes do not
// meet are disjoint; views that meet out of step with the element size share bytes.
bool views_overlap(const void* a_data, const TensorMeta& a, const void* b_data,
                   const TensorMeta& b) {
  if (a.numel() == 0 || b.numel() == 0) return false;
  intptr_t a_first, a_last, b_first, b_last;
  byte_span(a_data, a, &a_first, &a_last);
  byte_span(b_data, b, &b_first, &b_last);
  if (a_last < b_first || b_last < a_first) return false;
  const auto item = static_cast<intptr_t>(element_size(a.dtype));
  const intptr_t distance = reinterpret_cast<intptr_t>(b_data) - reinterpret_cast<intptr_t>(a_data);
  if (distance % item != 0) return true;
  // a's element at index i lies at sum(i_d * sa_d); they meet where
  // sum(i_d * sa_d) - sum(j_d * sb_d) == distance. Terms of equal stride merge: the sum of two
  // digits covers every integer between the sums of their bounds.
  // At most one term per dimension of a and b. On the stack for real tensors (views of a fused
  // qkv take this path on every in-place call with k, and a decode step should not allocate);
  // on the heap past 16 dimensions.
  constexpr int64_t kLocal = 16;
  OverlapTerm local_terms[kLocal];
  int64_t local_bounds[2 * (kLocal + 1)];
  std::vector<OverlapTerm> heap_terms;
  std::vector<int64_t> heap_bounds;
  OverlapTerm* terms = local_terms;
  int64_t* bounds = local_bounds;
  if (a.dim + b.dim > kLocal) {
    heap_terms.resize(static_cast<size_t>(a.dim + b.dim));
    heap_bounds.resize(static_cast<size_t>(2 * (a.dim + b.dim + 1)));
    terms = heap_terms.data();
    bounds = heap_bounds.data();
  }
  size_t count = 0;
  auto add = [&](int64_t stride, int64_t size, bool negate) {
    if (size == 1 || stride == 0) return;
    const int64_t magnitude = stride < 0 ? -stride : stride;
    const bool negative = negate != (stride < 0);
    OverlapTerm* term = std::find_if(terms, terms + count,
                                     [&](const OverlapTerm& t) { return t.stride == magnitude; });
    if (term == terms + count) terms[count++] = OverlapTerm{magnitude, 0, 0};
    (negative ? term->lo : term->hi) += size - 1;
  };
  for (int64_t d = 0; d < a.dim; ++d) add(a.strides[d], a.sizes[d], false);
  for (int64_t d = 0; d < b.dim; ++d) add(b.strides[d], b.sizes[d], true);
  std::sort(terms, terms + count,
            [](const OverlapTerm& x, const OverlapTerm& y) { return x.stride > y.stride; });
  int64_t* suffix_lo = bounds;
  int64_t* suffix_hi = bounds + count + 1;
  suffix_lo[count] = suffix_hi[count] = 0;
  for (size_t i = count; i-- > 0;) {
    // terms[i].lo holds a count of negative steps: make it the digit's lower bound.
    terms[i].lo = -terms[i].lo;
    suffix_lo[i] = suffix_lo[i + 1] + terms[i].lo * terms[i].stride;
    suffix_hi[i] = suffix_hi[i + 1] + terms[i].hi * terms[i].stride;
  }
  int64_t budget = 100000;
  return solve(terms, count, suffix_lo, suffix_hi, 0, distance / item, budget) == Overlap::kYes;
}

// The C shim's dtype and device codes, read once.
struct Codes {
  int32_t float32 = aoti_torch_dtype_float32();
  int32_t float16 = aoti_torch_dtype_float16();
  int32_t bfloat16 = aoti_torch_dtype_bfloat16();
  int32_t float64 = aoti_torch_dtype_float64();
  int32_t int32 = aoti_torch_dtype_int32();
  int32_t int64 = aoti_torch_dtype_int64();
  int32_t cpu = aoti_torch_device_type_cpu();
  int32_t cuda = aoti_torch_device_type_cuda();
  int32_t meta = aoti_torch_device_type_meta();
};

const Codes& codes() {
  static const Codes instance;
  return instance;
}

Dtype dtype_of(int32_t code) {
  const Codes& c = codes();
  if (code == c.float32) return Dtype::kFloat32;
  if (code == c.bfloat16) return Dtype::kBFloat16;
  if (code == c.float16) return Dtype::kFloat16;
  if (code == c.float64) return Dtype::kFloat64;
  if (code == c.int64) return Dtype::kInt64;
  if (code == c.int32) return Dtype::kInt32;
  return Dtype::kOther;
}

}  // namespace

int64_t TensorMeta::numel() const {
  int64_t n = 1;
  for (int64_t d = 0; d < dim; ++d) n *= sizes[d];
  return n;
}

bool TensorMeta::is_contiguous() const {
  if (numel() == 0) return true;
  int64_t expected = 1;
  for (int64_t d = dim - 1; d >= 0; --d) {
    if (sizes[d] == 1) continue;
    if (strides[d] != expected) return false;
    expected *= sizes[d];
  }
  return true;
}

TensorMeta read_meta(const Tensor& t) {
  AtenTensorHandle handle = t.get();
  TensorMeta meta{};
  int32_t dtype = 0;
  STABLE_TORCH_ERROR_CODE_CHECK(aoti_torch_get_dtype(handle, &dtype));
  meta.dtype = dtype_of(dtype);
  STABLE_TORCH_ERROR_CODE_CHECK(aoti_torch_get_device_type(handle, &meta.device_type));
  STABLE_TORCH_ERROR_CODE_CHECK(aoti_torch_get_device_index(handle, &meta.device_index));
  STABLE_TORCH_ERROR_CODE_CHECK(aoti_torch_get_dim(handle, &meta.dim));
  int64_t* sizes = nullptr;
  int64_t* strides = nullptr;
  STABLE_TORCH_ERROR_CODE_CHECK(aoti_torch_get_sizes(handle, &sizes));
  STABLE_TORCH_ERROR_CODE_CHECK(aoti_torch_get_strides(handle, &strides));
  meta.sizes = sizes;
  meta.strides = strides;
  return meta;
}

int64_t element_size(Dtype dtype) {
  switch (dtype) {
    case Dtype::kFloat16:
    case Dtype::kBFloat16:
      return 2;
    case Dtype::kFloat32:
    case Dtype::kInt32:
      return 4;
    case Dtype::kFloat64:
    case Dtype::kInt64:
      return 8;
    case Dtype::kOther:
      return 0;
  }
  return 0;
}

const char* dtype_name(const Tensor& t) {
  switch (t.scalar_type()) {
    case ScalarType::Float:
      return "float32";
    case ScalarType::Half:
      return "float16";
    case ScalarType::BFloat16:
      return "bfloat16";
    case ScalarType::Double:
      return "float64";
    case ScalarType::Char:
      return "int8";
    case ScalarType::Byte:
      return "uint8";
    case ScalarType::Short:
      return "int16";
    case ScalarType::Int:
      return "int32";
    case ScalarType::Long:
      return "int64";
    case ScalarType::Bool:
      return "bool";
    case ScalarType::ComplexFloat:
      return "complex64";
    case ScalarType::ComplexDouble:
      return "complex128";
    default:
      return "another dtype";
  }
}

std::string device_text(const TensorMeta& t) {
  const Codes& c = codes();
  std::string text;
  if (t.device_type == c.cpu) {
    text = "cpu";
  } else if (t.device_type == c.cuda) {
    text = "cuda";
  } else if (t.device_type == c.meta) {
    text = "meta";
  } else {
    text = "device type " + std::to_string(t.device_type);
  }
  // As torch.device prints: CPU and meta tensors without an index, CUDA tensors with theirs.
  if (t.device_index >= 0 && t.device_type != c.cpu && t.device_type != c.meta) {
    text += ":" + std::to_string(t.device_index);
  }
  return text;
}

std::string shape_text(const TensorMeta& t) {
  std::string text = "[";
  for (int64_t d = 0; d < t.dim; ++d) {
    if (d > 0) text += ", ";
    text += std::to_string(t.sizes[d]);
  }
  return text + "]";
}

int64_t check_inv_freq(const char* op, const Tensor& inv_freq, const TensorMeta& meta) {
  YARN_CHECK(meta.dtype == Dtype::kFloat64, op,
             "inv_freq must be float64 (the angles are formed in float64), got ",
             dtype_name(inv_freq));
  YARN_CHECK(meta.dim == 1 && meta.sizes[0] > 0, op,
             "inv_freq must be a non-empty 1-D tensor [dim / 2], got shape ", shape_text(meta));
  YARN_CHECK(meta.is_contiguous(), op, "inv_freq must be contiguous");
  return meta.sizes[0];
}

void check_mscale(const char* op, double mscale) {
  YARN_CHECK(std::isfinite(mscale), op, "mscale must be finite, got ", mscale);
}

int64_t check_cache_request(const char* op, const Tensor& inv_freq, int64_t num_positions,
                            double mscale) {
  const int64_t half = check_inv_freq(op, inv_freq, read_meta(inv_freq));
  check_mscale(op, mscale);
  YARN_CHECK(num_positions >= 0, op, "num_positions must be >= 0, got ", num_positions);
  return half;
}

int64_t check_tables(const char* op, const Tensor& cos_sin_cache, const TensorMeta& cache,
                     const Tensor& inv_freq, const TensorMeta& frequencies, double mscale) {
  const int64_t half = check_inv_freq(op, inv_freq, frequencies);
  check_mscale(op, mscale);
  YARN_CHECK(cache.dtype == Dtype::kFloat32, op, "cos_sin_cache must be float32, got ",
             dtype_name(cos_sin_cache));
  YARN_CHECK(cache.dim == 2 && cache.sizes[1] == half * 2, op,
             "cos_sin_cache must have shape [positions, ", half * 2, "] to match inv_freq, got ",
             shape_text(cache));
  YARN_CHECK(cache.is_contiguous(), op, "cos_sin_cache must be contiguous");
  YARN_CHECK(cache.same_device(frequencies), op,
             "cos_sin_cache and inv_freq must be on the same device, got ", device_text(cache),
             " and ", device_text(frequencies));
  return half;
}

void check_rotated(const char* op, const char* name, const Tensor& x, const TensorMeta& meta,
                   const TensorMeta& inv_freq, int64_t half) {
  const bool floating = meta.dtype == Dtype::kFloat32 || meta.dtype == Dtype::kFloat16 ||
                        meta.dtype == Dtype::kBFloat16 || meta.dtype == Dtype::kFloat64;
  YARN_CHECK(floating, op, name, " must be float32, float16, bfloat16 or float64, got ",
             dtype_name(x));
  YARN_CHECK(meta.same_device(inv_freq), op, name, " is on ", device_text(meta),
             " but the embedding tables are on ", device_text(inv_freq));
  YARN_CHECK(meta.dim >= 2, op, name,
             " must have at least 2 dimensions [..., seq, head_dim], got shape ", shape_text(meta));
  YARN_CHECK(meta.size(-1) >= half * 2, op, name, ".shape[-1] (", meta.size(-1),
             ") is smaller than the rotary dim (", half * 2, ")");
}

void check_positions(const char* op, const Tensor& positions, const TensorMeta& p,
                     const TensorMeta& x, const char* x_name, int64_t* strides) {
  YARN_CHECK(p.dtype == Dtype::kInt64 || p.dtype == Dtype::kInt32, op,
             "positions must be an int32 or int64 tensor, got ", dtype_name(positions));
  YARN_CHECK(p.same_device(x), op, "positions is on ", device_text(p), " but ", x_name, " is on ",
             device_text(x));
  const int64_t rows = x.dim - 1;
  bool broadcasts = p.dim <= rows;
  for (int64_t i = 1; broadcasts && i <= p.dim; ++i) {
    broadcasts = p.size(-i) == 1 || p.size(-i) == x.size(rows - i);
  }
  if (!broadcasts) {
    std::string row_shape = "[";
    for (int64_t d = 0; d < rows; ++d) {
      row_shape += (d > 0 ? ", " : "") + std::to_string(x.sizes[d]);
    }
    fail(op, "positions of shape ", shape_text(p), " does not broadcast against ", x_name,
         ".shape[:-1] = ", row_shape + "]",
         " (for a [tokens, heads, head_dim] layout pass positions[:, None])");
  }
  const int64_t lead = rows - p.dim;
  for (int64_t d = 0; d < rows; ++d) {
    strides[d] = d < lead || p.sizes[d - lead] == 1 ? 0 : p.strides[d - lead];
  }
}

void check_inplace_pair(const char* op, const Tensor& q, const TensorMeta& q_meta, const Tensor& k,
                        const TensorMeta& k_meta) {
  YARN_CHECK(k_meta.same_device(q_meta), op, "q and k must be on the same device, got ",
             device_text(q_meta), " and ", device_text(k_meta));
  YARN_CHECK(k_meta.dtype == q_meta.dtype, op, "q and k must have the same dtype, got ",
             dtype_name(q), " and ", dtype_name(k));
  YARN_CHECK(k_meta.dim >= 1 && q_meta.dim >= 1 && k_meta.size(-1) == q_meta.size(-1), op,
             "q and k must have the same head size, got ", shape_text(q_meta), " and ",
             shape_text(k_meta));
}

void check_no_internal_overlap(const char* op, const char* name, const TensorMeta& t) {
  bool overlap = false;
  for (int64_t d = 0; d < t.dim; ++d) overlap = overlap || (t.sizes[d] > 1 && t.strides[d] == 0);
  YARN_CHECK(!overlap, op, name,
             " has overlapping elements (an expanded view?) and cannot be rotated in place");
}

void check_disjoint(const char* op, const void* q_data, const TensorMeta& q, const void* k_data,
                    const TensorMeta& k) {
  YARN_CHECK(!views_overlap(q_data, q, k_data, k), op,
             "q and k share memory; each shared element would be rotated twice");
}

}  // namespace yarn_ext::detail
