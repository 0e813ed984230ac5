#include "rotation_plan.h"

#include <ATen/ops/empty_like.h>

#include "checks.h"

namespace yarn_ext::detail {

RotationTask plan_rotate(const char* op, const at::Tensor& x, const at::Tensor& cos_sin_cache,
                         const at::Tensor& inv_freq, double mscale,
                         const std::optional<at::Tensor>& positions) {
  const c10::SymInt half = check_tables(op, cos_sin_cache, inv_freq, mscale);
  check_rotated(op, "x", x, inv_freq, half);
  at::Tensor pos = broadcast_positions(op, positions, x, "x");
  at::Tensor out = at::empty_like(x);
  RotationRows rows{};
  if (!has_symbolic_shape(x)) rows = rotation_rows(op, "x", x, out, pos);
  return {x, std::move(out), std::move(pos), rows};
}

InplaceRotation plan_rotate_inplace(const char* op, const at::Tensor& q,
                                    const std::optional<at::Tensor>& k,
                                    const at::Tensor& cos_sin_cache, const at::Tensor& inv_freq,
                                    double mscale, const std::optional<at::Tensor>& positions) {
  const c10::SymInt half = check_tables(op, cos_sin_cache, inv_freq, mscale);
  check_rotated(op, "q", q, inv_freq, half);
  const bool has_k = k.has_value() && k->defined();
  if (has_k) check_rotated(op, "k", *k, inv_freq, half);
  check_inplace_pair(op, q, k);
  const bool symbolic = has_symbolic_shape(q) || (has_k && has_symbolic_shape(*k));
  if (!symbolic) check_inplace_memory(op, q, k);
  auto in_place = [&](const char* name, const at::Tensor& t) {
    at::Tensor pos = broadcast_positions(op, positions, t, name);
    RotationRows rows{};
    if (!symbolic) rows = rotation_rows(op, name, t, t, pos);
    return RotationTask{t, t, std::move(pos), rows};
  };
  InplaceRotation plan{in_place("q", q), std::nullopt};
  if (has_k) plan.k = in_place("k", *k);
  return plan;
}

}  // namespace yarn_ext::detail
