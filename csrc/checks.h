// Argument validation shared by every backend's kernels (CPU, CUDA, Meta), so that each operator
// rejects the same inputs with the same messages. Every message names the argument. Only
// metadata is inspected: no check reads tensor data or synchronizes a device.
//
// The checks on shapes work on symbolic shapes too (sym_sizes; a comparison of SymInts guards),
// because the Meta kernels run them while torch.compile traces with dynamic shapes. The checks on
// memory layout (check_inplace_memory, and the row layout of tensor_rows.h) need concrete strides
// and run only on concrete tensors: a traced call meets them when the compiled graph runs.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/SymInt.h>

#include <cstdint>
#include <optional>

namespace yarn_ext::detail {

// Validates inv_freq (float64 [half], contiguous) and returns half = dim / 2.
c10::SymInt check_inv_freq(const char* op, const at::Tensor& inv_freq);

void check_mscale(const char* op, double mscale);

// Validates a cache build (inv_freq, num_positions >= 0, mscale); returns half = dim / 2.
int64_t check_cache_request(const char* op, const at::Tensor& inv_freq, int64_t num_positions,
                            double mscale);

// Validates the tables a rotation reads; returns half = dim / 2.
c10::SymInt check_tables(const char* op, const at::Tensor& cos_sin_cache,
                         const at::Tensor& inv_freq, double mscale);

// Validates a tensor to be rotated: floating dtype, on the tables' device, [..., S, D] with
// D >= 2 * half.
void check_rotated(const char* op, const char* name, const at::Tensor& x,
                   const at::Tensor& inv_freq, const c10::SymInt& half);

// positions expanded (a view, no copy) to x.shape[:-1], or an undefined tensor when absent.
at::Tensor broadcast_positions(const char* op, const std::optional<at::Tensor>& positions,
                               const at::Tensor& x, const char* x_name);

// In-place rotation: q and k must agree on device, dtype and head size.
void check_inplace_pair(const char* op, const at::Tensor& q, const std::optional<at::Tensor>& k);

// In-place rotation: q and k must be writable without aliasing themselves or each other.
// Concrete tensors only.
void check_inplace_memory(const char* op, const at::Tensor& q, const std::optional<at::Tensor>& k);

// Whether t has symbolic sizes or strides (a FakeTensor traced with dynamic shapes).
bool has_symbolic_shape(const at::Tensor& t);

}  // namespace yarn_ext::detail
