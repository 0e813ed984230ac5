#include "checks.h"

#include "overlap.h"

#include <torch/csrc/inductor/aoti_torch/c/shim.h>
#include <torch/csrc/stable/macros.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace yarn_ext::detail {
namespace {

using torch::headeronly::ScalarType;

// The C shim's dtype and device codes, read once.
struct Codes {
  int32_t float32 = aoti_torch_dtype_float32();
  int32_t float16 = aoti_torch_dtype_float16();
  int32_t bfloat16 = aoti_torch_dtype_bfloat16();
  int32_t float64 = aoti_torch_dtype_float64();
  int32_t int32 = aoti_torch_dtype_int32();
  int32_t int64 = aoti_torch_dtype_int64();
  int32_t float8_e4m3fn = aoti_torch_dtype_float8_e4m3fn();
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
  if (code == c.float8_e4m3fn) return Dtype::kFloat8E4M3;
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
    case Dtype::kFloat8E4M3:
      return 1;
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
    case ScalarType::Float8_e4m3fn:
      return "float8_e4m3fn";
    case ScalarType::Float8_e5m2:  // the other float8 caches, which the operators refuse by name
      return "float8_e5m2";
    case ScalarType::Float8_e4m3fnuz:
      return "float8_e4m3fnuz";
    case ScalarType::Float8_e5m2fnuz:
      return "float8_e5m2fnuz";
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
                     const TensorMeta& x, const char* x_name, int64_t* strides,
                     MropeLayout* mrope) {
  YARN_CHECK(p.dtype == Dtype::kInt64 || p.dtype == Dtype::kInt32, op,
             "positions must be an int32 or int64 tensor, got ", dtype_name(positions));
  YARN_CHECK(p.same_device(x), op, "positions is on ", device_text(p), " but ", x_name, " is on ",
             device_text(x));
  const int64_t rows = x.dim - 1;
  auto row_shape = [&] {
    std::string text = "[";
    for (int64_t d = 0; d < rows; ++d) text += (d > 0 ? ", " : "") + std::to_string(x.sizes[d]);
    return text + "]";
  };
  // MRoPE positions: the components lead, the rest is laid out as plain positions are. (A
  // plain call's positions of that rank are MRoPE's only when their first dimension has the
  // three components; otherwise they get the broadcast message below.)
  const int64_t lead_dims = p.dim == rows + 1 && mrope != nullptr ? 1 : 0;
  YARN_CHECK(mrope != nullptr || p.dim != rows + 1 || p.sizes[0] != kMropeComponents, op,
             "positions of shape ", shape_text(p), " has one more dimension than ", x_name,
             ".shape[:-1] = ", row_shape(),
             ": MRoPE positions (t, h, w first), but the call has no mrope_section");
  if (lead_dims == 1) {
    YARN_CHECK(p.sizes[0] == kMropeComponents, op, "MRoPE positions of shape ", shape_text(p),
               " must have 3 components in their first dimension (one per mrope_section entry)");
    mrope->component_stride = p.strides[0];
  }
  const int64_t dims = p.dim - lead_dims;
  bool broadcasts = dims <= rows;
  for (int64_t i = 1; broadcasts && i <= dims; ++i) {
    broadcasts = p.size(-i) == 1 || p.size(-i) == x.size(rows - i);
  }
  if (!broadcasts) {
    fail(op, "positions of shape ", shape_text(p), " does not broadcast against ", x_name,
         ".shape[:-1] = ", row_shape(),
         " (for a [tokens, heads, head_dim] layout pass positions[:, None])");
  }
  const int64_t lead = rows - dims;
  for (int64_t d = 0; d < rows; ++d) {
    const int64_t i = d - lead + lead_dims;
    strides[d] = d < lead || p.sizes[i] == 1 ? 0 : p.strides[i];
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
  const Overlap found = self_overlap(t);
  YARN_CHECK(found != Overlap::kYes, op, name,
             " has overlapping elements (an expanded view?) and cannot be written in place");
  YARN_CHECK(found != Overlap::kUnknown, op, "the layout of ", name,
             " is too irregular to prove that its elements do not overlap, which writing it in "
             "place needs (pass a contiguous copy)");
}

void check_disjoint(const char* op, const MemoryView& q, const MemoryView& k) {
  const Overlap found = views_overlap(q.data, *q.meta, k.data, *k.meta);
  YARN_CHECK(found != Overlap::kYes, op,
             "q and k share memory; each shared element would be rotated twice");
  YARN_CHECK(found != Overlap::kUnknown, op,
             "q and k are views too irregular to prove that they do not share memory, which "
             "rotating both in place needs (pass separate tensors)");
}

void check_not_read(const char* op, const MemoryView& written, const MemoryView& read) {
  const Overlap found = views_overlap(written.data, *written.meta, read.data, *read.meta);
  YARN_CHECK(found != Overlap::kYes, op, written.name, " shares memory with ", read.name,
             ", which the call reads; writing ", written.name,
             " in place would change it mid-call (pass a copy)");
  YARN_CHECK(found != Overlap::kUnknown, op, written.name, " and ", read.name,
             " are views too irregular to prove that they do not share memory, which writing ",
             written.name, " in place needs (pass a copy)");
}

void check_apart(const char* op, const MemoryView& a, const MemoryView& b) {
  const Overlap found = views_overlap(a.data, *a.meta, b.data, *b.meta);
  YARN_CHECK(found != Overlap::kYes, op, a.name, " and ", b.name,
             " share memory; the call writes both (pass separate tensors)");
  YARN_CHECK(found != Overlap::kUnknown, op, a.name, " and ", b.name,
             " are views too irregular to prove that they do not share memory, which writing "
             "both needs (pass separate tensors)");
}

}  // namespace yarn_ext::detail
