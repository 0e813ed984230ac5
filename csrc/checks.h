// Argument validation shared by the CPU and CUDA kernels, so that each operator rejects the same
// inputs with the same messages. Every message names the argument. Only metadata is inspected:
// no check reads tensor data or synchronizes a device. A failed check throws
// std::invalid_argument, which reaches Python as ValueError.
//
// yarn_ext/_validation.py performs the same checks for the fake (tracing) implementations, in the
// same order and with the same messages; tests/test_validation_parity.py holds the two together.
#pragma once

#include <torch/csrc/stable/tensor.h>

#include <cstdint>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "yarn_ext/core/mrope.h"

namespace yarn_ext::detail {

using torch::stable::Tensor;

// Throws std::invalid_argument("<op>: <parts...>").
template <typename... Parts>
[[noreturn]] void fail(const char* op, const Parts&... parts) {
  std::ostringstream message;
  message << op << ": ";
  (message << ... << parts);
  throw std::invalid_argument(message.str());
}

// YARN_CHECK(condition, op, message parts...): the parts are evaluated only when the condition
// fails - formatting them (shapes, device names, dtype names) costs more than a decode step's
// rotation.
#define YARN_CHECK(condition, op, ...)                             \
  do {                                                             \
    if (!(condition)) ::yarn_ext::detail::fail((op), __VA_ARGS__); \
  } while (false)

// The dtypes the operators know, as the C shim's codes (read once: the codes are the ABI's).
enum class Dtype {
  kFloat32,
  kFloat16,
  kBFloat16,
  kFloat64,
  kInt32,
  kInt64,
  kFloat8E4M3,  // float8_e4m3fn: a KV cache's element type (rotate_store_kv)
  kOther
};

// A tensor's metadata, read through torch's C shim once per call. Each read is a call into
// libtorch, and the stable Tensor's own scalar_type() and device() make a dozen each (they map
// codes to enums call by call): on a decode step the checks would cost more than the rotation.
// The sizes and strides point into the tensor, which outlives the call.
struct TensorMeta {
  Dtype dtype;
  int32_t device_type;  // the C shim's code
  int32_t device_index;
  int64_t dim;
  const int64_t* sizes;
  const int64_t* strides;

  int64_t size(int64_t d) const { return sizes[d < 0 ? d + dim : d]; }
  int64_t stride(int64_t d) const { return strides[d < 0 ? d + dim : d]; }
  int64_t numel() const;
  bool is_contiguous() const;  // ATen's rule: size-1 dimensions may have any stride
  bool same_device(const TensorMeta& other) const {
    return device_type == other.device_type && device_index == other.device_index;
  }
};

TensorMeta read_meta(const Tensor& t);

// Bytes per element of the dtypes the kernels read or write (0 for kOther).
int64_t element_size(Dtype dtype);

// Names as Python prints them without the "torch." ("float32", "bfloat16", "int64", ...).
const char* dtype_name(const Tensor& t);
// "cpu", "cuda:0", "meta": as torch.device prints.
std::string device_text(const TensorMeta& t);
// "[2, 3]".
std::string shape_text(const TensorMeta& t);

// Validates inv_freq (float64 [half], contiguous) and returns half = dim / 2.
int64_t check_inv_freq(const char* op, const Tensor& inv_freq, const TensorMeta& meta);

void check_mscale(const char* op, double mscale);

// Validates a cache build (inv_freq, num_positions >= 0, mscale); returns half = dim / 2.
int64_t check_cache_request(const char* op, const Tensor& inv_freq, int64_t num_positions,
                            double mscale);

// Validates the tables a rotation reads; returns half = dim / 2.
int64_t check_tables(const char* op, const Tensor& cos_sin_cache, const TensorMeta& cache,
                     const Tensor& inv_freq, const TensorMeta& frequencies, double mscale);

// Validates a tensor to be rotated: floating dtype, on the tables' device, [..., S, D] with
// D >= 2 * half.
void check_rotated(const char* op, const char* name, const Tensor& x, const TensorMeta& meta,
                   const TensorMeta& inv_freq, int64_t half);

// Validates positions against x; its strides broadcast to x.shape[:-1] (0 along broadcast
// dimensions) go to `strides` (x.dim - 1 of them). Positions with one more dimension than
// x.shape[:-1] are MRoPE positions, the t, h and w components along the first: accepted when
// `mrope` is given (their component stride goes to mrope->component_stride), an error otherwise.
void check_positions(const char* op, const Tensor& positions, const TensorMeta& meta,
                     const TensorMeta& x, const char* x_name, int64_t* strides, MropeLayout* mrope);

// In-place rotation: q and k must agree on device, dtype and head size.
void check_inplace_pair(const char* op, const Tensor& q, const TensorMeta& q_meta, const Tensor& k,
                        const TensorMeta& k_meta);

// In-place rotation: the memory checks (csrc/overlap.h decides; a view it cannot decide is
// refused). A view as the checks name it.
struct MemoryView {
  const char* name;
  const void* data;
  const TensorMeta* meta;
};

// A tensor must be writable without aliasing itself (`name` it is called).
void check_no_internal_overlap(const char* op, const char* name, const TensorMeta& t);

// q and k must not share an element.
void check_disjoint(const char* op, const MemoryView& q, const MemoryView& k);

// A written tensor must not share a byte with a tensor the call reads.
void check_not_read(const char* op, const MemoryView& written, const MemoryView& read);

// Two written tensors must not share a byte.
void check_apart(const char* op, const MemoryView& a, const MemoryView& b);

}  // namespace yarn_ext::detail
