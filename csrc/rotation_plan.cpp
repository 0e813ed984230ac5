#include "rotation_plan.h"

#include <torch/csrc/stable/ops.h>

#include <vector>

#include "yarn_ext/mrope_section.h"

namespace yarn_ext::detail {
namespace {

using torch::stable::Tensor;

// The tables a rotation reads, checked, with their metadata (the in-place rotation checks that
// it writes none of them).
struct Tables {
  TensorMeta cache;
  TensorMeta frequencies;
  CosSinTables view;
};

Tables checked_tables(const char* op, const Tensor& cos_sin_cache, const Tensor& inv_freq,
                      double mscale, const MropeSection& mrope) {
  Tables t{read_meta(cos_sin_cache), read_meta(inv_freq), {}};
  const int64_t half = check_tables(op, cos_sin_cache, t.cache, inv_freq, t.frequencies, mscale);
  t.view = {static_cast<const float*>(cos_sin_cache.const_data_ptr()),
            t.cache.sizes[0],
            static_cast<const double*>(inv_freq.const_data_ptr()),
            half,
            mscale,
            /*inverse=*/false,
            /*mrope=*/{}};
  if (mrope.sections.has_value()) {
    t.view.mrope = helper_math::check_mrope_section(op, *mrope.sections, mrope.interleaved, half);
  }
  return t;
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
                  const std::optional<Positions>& positions, MropeLayout* mrope) {
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
    check_positions(op, positions->tensor, positions->meta, meta, name, strides,
                    mrope->enabled ? mrope : nullptr);
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
                         const std::optional<Tensor>& positions, const MropeSection& mrope,
                         CosSinTables* tables) {
  const Tables checked = checked_tables(op, cos_sin_cache, inv_freq, mscale, mrope);
  *tables = checked.view;
  const TensorMeta meta = read_meta(x);
  check_rotated(op, "x", x, meta, checked.frequencies, tables->half);
  Tensor out = torch::stable::empty_like(x);
  const TensorMeta out_meta = read_meta(out);
  return task(op, "x", meta, x.const_data_ptr(), std::move(out), out_meta, false,
              read_positions(positions), &tables->mrope);
}

InplaceRotation plan_rotate_inplace(const char* op, const Tensor& q, const std::optional<Tensor>& k,
                                    const Tensor& cos_sin_cache, const Tensor& inv_freq,
                                    double mscale, const std::optional<Tensor>& positions,
                                    const MropeSection& mrope, CosSinTables* tables) {
  const Tables checked = checked_tables(op, cos_sin_cache, inv_freq, mscale, mrope);
  *tables = checked.view;
  const TensorMeta q_meta = read_meta(q);
  check_rotated(op, "q", q, q_meta, checked.frequencies, tables->half);
  TensorMeta k_meta{};
  if (k.has_value()) {
    k_meta = read_meta(*k);
    check_rotated(op, "k", *k, k_meta, checked.frequencies, tables->half);
    check_inplace_pair(op, q, q_meta, *k, k_meta);
  }
  const std::optional<Positions> p = read_positions(positions);
  InplaceRotation plan{
      task(op, "q", q_meta, q.const_data_ptr(), q, q_meta, true, p, &tables->mrope), std::nullopt};
  if (k.has_value()) {
    plan.k = task(op, "k", k_meta, k->const_data_ptr(), *k, k_meta, true, p, &tables->mrope);
  }
  // Memory, last (its messages assume valid dtypes and shapes): each written element once, and
  // nothing the call reads.
  const MemoryView q_view{"q", plan.q.in, &q_meta};
  const MemoryView k_view{"k", plan.k.has_value() ? plan.k->in : nullptr, &k_meta};
  check_no_internal_overlap(op, "q", q_meta);
  if (k.has_value()) {
    check_no_internal_overlap(op, "k", k_meta);
    check_disjoint(op, q_view, k_view);
  }
  const MemoryView read[] = {
      {"cos_sin_cache", checked.view.cache, &checked.cache},
      {"inv_freq", checked.view.frequencies, &checked.frequencies},
      {"positions", p.has_value() ? p->data : nullptr, p.has_value() ? &p->meta : nullptr},
  };
  for (const MemoryView& table : read) {
    if (table.meta == nullptr) continue;
    check_not_read(op, q_view, table);
    if (k.has_value()) check_not_read(op, k_view, table);
  }
  return plan;
}

}  // namespace yarn_ext::detail
