#include "rotate_args.h"

#include <cstdint>

namespace yarn_ext::detail {
namespace {

bool vectorizable(const RotationTask& task, int64_t kVec, int64_t half) {
  const int64_t bytes = kVec * static_cast<int64_t>(task.input.element_size());
  const int64_t pass = task.input.size(-1) - 2 * half;
  bool ok = task.input.stride(-1) == 1 && task.output.stride(-1) == 1 && half % kVec == 0 &&
            (task.input.is_same(task.output) || pass % kVec == 0) &&
            reinterpret_cast<uintptr_t>(task.input.const_data_ptr()) % bytes == 0 &&
            reinterpret_cast<uintptr_t>(task.output.const_data_ptr()) % bytes == 0;
  for (int d = 0; ok && d < task.rows.ndim; ++d) {
    ok = task.rows.strides[kInput][d] % kVec == 0 && task.rows.strides[kOutput][d] % kVec == 0;
  }
  return ok;
}

}  // namespace

bool vector_path(const RotationTask& first, const RotationTask* second, const at::Tensor& cache,
                 int64_t kVec, int64_t half) {
  const auto cache_alignment = static_cast<uintptr_t>(kVec) * sizeof(float);
  return vectorizable(first, kVec, half) &&
         (second == nullptr || vectorizable(*second, kVec, half)) &&
         reinterpret_cast<uintptr_t>(cache.const_data_ptr()) % cache_alignment == 0;
}

}  // namespace yarn_ext::detail
