#include "rotation_plan.h"

#include <torch/csrc/stable/ops.h>

#include <vector>

namespace yarn_ext::detail {
namespace {

using torch::stable::Tensor;

CosSinTables checked_tables(const char* op, const Tensor& cos_sin_cache, const Tensor& inv_freq,
                            double mscale, TensorMeta* frequencies_meta) {
  const TensorMeta cache = read_meta(cos_sin_cache);
  const TensorMeta frequencies = read_meta(inv_freq);
  *frequencies_meta = frequencies;
  const int64_t half = check_tables(op, cos_sin_cache, cache, inv_freq, frequencies, mscale);
  return {static_cast<const float*>(cos_sin_cache.const_data_ptr()),
          cache.sizes[0],
          static_cast<const double*>(inv_freq.const_data_ptr()),
          half,
          mscale,
          /*inverse=*/false};
}

// The positions of a call, read once for q and k.
struct Positions {
  const Tensor& tensor;
  TensorMeta meta;
  const void* data;
};

std::optional<Positions> read_positions(const std::optional<Tensor>& positions) {
  if (!positions.has_value()) return std::nullopt;
  return Positions{*positions, read_meta(*positions), positions->const_data_ptr()};
}

// Checks the positions against `t` and lays out the rotation of `t` (data `in`) into `out`.
RotationTask task(const char* op, const char* name, const TensorMeta& meta, const void* in,
                  Tensor out, const TensorMeta& out_meta, bool in_place,
                  const std::optional<Positions>& positions) {
  // The positions' strides along t's rows: on the stack for any real tensor, on the heap for a
  // tensor of more than 16 dimensions (size-1 ones, say).
  int64_t local[16];
  std::vector<int64_t> heap;
  int64_t* strides = nullptr;
  if (positions.has_value()) {
    strides = local;
    if (meta.dim - 1 > 16) {
      heap.resize(static_cast<size_t>(meta.dim - 1));
      strides = heap.data();
    }
    check_positions(op, positions->tensor, positions->meta, meta, name, strides);
  }
  RotationTask task;
  task.rows = rotation_rows(op, name, meta, out_meta, strides);
  task.in = in;
  task.out = in_place ? const_cast<void*>(in) : out.mutable_data_ptr();
  task.output = std::move(out);
  task.positions = positions.has_value() ? positions->data : nullptr;
  task.int32_positions = positions.has_value() && positions->meta.dtype == Dtype::kInt32;
  task.dtype = meta.dtype;
  task.head_size = meta.size(-1);
  task.num_rows = task.head_size == 0 ? 0 : meta.numel() / task.head_size;
  task.in_stride = meta.stride(-1);
  task.out_stride = out_meta.stride(-1);
  task.in_place = in_place;
  return task;
}

}  // namespace

RotationTask plan_rotate(const char* op, const Tensor& x, const Tensor& cos_sin_cache,
                         const Tensor& inv_freq, double mscale,
                         const std::optional<Tensor>& positions, CosSinTables* tables) {
  TensorMeta frequencies;
  *tables = checked_tables(op, cos_sin_cache, inv_freq, mscale, &frequencies);
  const TensorMeta meta = read_meta(x);
  check_rotated(op, "x", x, meta, frequencies, tables->half);
  Tensor out = torch::stable::empty_like(x);
  const TensorMeta out_meta = read_meta(out);
  return task(op, "x", meta, x.const_data_ptr(), std::move(out), out_meta, false,
              read_positions(positions));
}

InplaceRotation plan_rotate_inplace(const char* op, const Tensor& q, const std::optional<Tensor>& k,
                                    const Tensor& cos_sin_cache, const Tensor& inv_freq,
                                    double mscale, const std::optional<Tensor>& positions,
                                    CosSinTables* tables) {
  TensorMeta frequencies;
  *tables = checked_tables(op, cos_sin_cache, inv_freq, mscale, &frequencies);
  const TensorMeta q_meta = read_meta(q);
  check_rotated(op, "q", q, q_meta, frequencies, tables->half);
  TensorMeta k_meta{};
  if (k.has_value()) {
    k_meta = read_meta(*k);
    check_rotated(op, "k", *k, k_meta, frequencies, tables->half);
    check_inplace_pair(op, q, q_meta, *k, k_meta);
  }
  const void* q_data = q.const_data_ptr();
  const void* k_data = k.has_value() ? k->const_data_ptr() : nullptr;
  check_no_internal_overlap(op, "q", q_meta);
  if (k.has_value()) {
    check_no_internal_overlap(op, "k", k_meta);
    check_disjoint(op, q_data, q_meta, k_data, k_meta);
  }
  const std::optional<Positions> p = read_positions(positions);
  InplaceRotation plan{task(op, "q", q_meta, q_data, q, q_meta, true, p), std::nullopt};
  if (k.has_value()) plan.k = task(op, "k", k_meta, k_data, *k, k_meta, true, p);
  return plan;
}

}  // namespace yarn_ext::detail
