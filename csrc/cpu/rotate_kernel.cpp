// CPU kernels: rotation out of place (rotate) and in place on q and optional k (rotate_inplace).
//
// This file plans and threads; the loops are in vectorized/kernels.cpp (one copy per instruction
// set, cpu_kernels.h). A call becomes one job over tokens - the rows sharing a position - with q
// and k in the same job when they have the same tokens, so each token's cos/sin row is read once
// for all its heads. Tokens are handed to threads in chunks of at least kGrainElements elements
// (about 8 chunks per thread); a call smaller than that (decode) runs on the calling thread
// without allocating anything.
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>

#include <algorithm>
#include <cstdlib>
#include <optional>
#include <utility>
#include <vector>

#include "cpu/cpu_kernels.h"
#include "cpu/job_helpers.h"
#include "rotation_overloads.h"
#include "rotation_plan.h"

namespace yarn_ext::cpu {
namespace {

using torch::stable::Tensor;

// Splits the (merged) row dimensions of a task into token dimensions - those along which the
// position changes - and head dimensions. With every_dim_a_token each row is its own token: for
// calls with fewer tokens than threads, whose work would otherwise sit on one thread.
JobOperand split_rows(const detail::RotationTask& task, bool every_dim_a_token) {
  JobOperand op;
  op.in = task.in;
  op.out = task.out;
  op.in_stride = task.in_stride;
  op.out_stride = task.out_stride;
  const RotationRows& rows = task.rows;
  for (int d = 0; d < rows.ndim; ++d) {
    const bool token = every_dim_a_token || rows.strides[kPositions][d] != 0;
    RowDims& dims = token ? op.tokens : op.heads;
    const int i = dims.ndim++;
    dims.sizes[i] = rows.sizes[d];
    dims.in[i] = rows.strides[kInput][d];
    dims.out[i] = rows.strides[kOutput][d];
    dims.positions[i] = rows.strides[kPositions][d];
  }
  for (int i = 0; i < op.heads.ndim; ++i) op.num_heads *= op.heads.sizes[i];
  // Walk heads innermost when they are nearer each other in memory than consecutive tokens.
  op.heads_inner =
      op.heads.ndim == 0 || op.tokens.ndim == 0 ||
      std::abs(op.heads.in[op.heads.ndim - 1]) <= std::abs(op.tokens.in[op.tokens.ndim - 1]);
  return op;
}

int64_t num_tokens(const JobOperand& op) {
  int64_t tokens = 1;
  for (int i = 0; i < op.tokens.ndim; ++i) tokens *= op.tokens.sizes[i];
  return tokens;
}

bool same_tokens(const RowDims& a, const RowDims& b) {
  if (a.ndim != b.ndim) return false;
  for (int i = 0; i < a.ndim; ++i) {
    if (a.sizes[i] != b.sizes[i] || a.positions[i] != b.positions[i]) return false;
  }
  return true;
}

// What a call rotates with: the tables and the direction.
struct RotationSettings {
  const CosSinTables& tables;
  bool interleaved;
  bool inverse;
};

void run_job(RotateJob& job, const RotationSettings& settings) {
  job.cache = settings.tables.cache;
  job.cache_positions = settings.tables.cache_positions;
  job.frequencies = settings.tables.frequencies;
  job.half = settings.tables.half;
  job.mscale = settings.tables.mscale;
  job.interleaved = settings.interleaved;
  job.inverse = settings.inverse;
  job.mrope = settings.tables.mrope;
  job.num_tokens = num_tokens(job.operands[0]);
  int64_t elements_per_token = 0;
  for (int o = 0; o < job.num_operands; ++o) {
    elements_per_token += job.operands[o].num_heads * job.head_size;
  }
  const Kernels& k = kernels();
  for_token_chunks(job.num_tokens, elements_per_token,
                   [&](int64_t begin, int64_t end) { k.rotate_tokens(job, begin, end); });
}

void set_positions(RotateJob& job, const detail::RotationTask& task) {
  job.positions = task.positions;
  job.int32_positions = task.int32_positions;
}

// Rotates `first` and optionally `second` (k: same positions and tables).
void run(const detail::RotationTask& first, const detail::RotationTask* second,
         const RotationSettings& settings) {
  const detail::RotationTask* tasks[2];
  int count = 0;
  int64_t elements = 0;
  for (const detail::RotationTask* task : {&first, second}) {
    if (task != nullptr && task->num_rows > 0 && task->head_size > 0) {
      tasks[count++] = task;
      elements += task->num_rows * task->head_size;
    }
  }
  if (count == 0) return;
  JobOperand operands[2];
  for (int o = 0; o < count; ++o) operands[o] = split_rows(*tasks[o], false);
  // Fewer tokens than threads but much work (one position broadcast over a large batch): then
  // every row is a token, so that the rows are what is split over threads.
  if (num_tokens(operands[0]) < static_cast<int64_t>(torch::stable::get_num_threads()) &&
      elements >= 2 * kGrainElements) {
    for (int o = 0; o < count; ++o) operands[o] = split_rows(*tasks[o], true);
  }
  RotateJob job;
  job.dtype = element_type(first.dtype);
  job.head_size = first.head_size;
  if (count == 2 && same_tokens(operands[0].tokens, operands[1].tokens)) {
    set_positions(job, *tasks[0]);
    job.operands[0] = operands[0];
    job.operands[1] = operands[1];
    job.num_operands = 2;
    run_job(job, settings);
    return;
  }
  for (int o = 0; o < count; ++o) {
    set_positions(job, *tasks[o]);
    job.operands[0] = operands[o];
    job.num_operands = 1;
    run_job(job, settings);
  }
}

Tensor rotate_cpu_any(Tensor x, Tensor cos_sin_cache, Tensor inv_freq, double mscale,
                      std::optional<Tensor> positions, bool interleaved, bool inverse,
                      std::optional<std::vector<int64_t>> mrope_section, bool mrope_interleaved) {
  CosSinTables tables;
  const detail::RotationTask task =
      detail::plan_rotate("yarn_ext.rotate", x, cos_sin_cache, inv_freq, mscale, positions,
                          {mrope_section, mrope_interleaved}, &tables);
  run(task, nullptr, {tables, interleaved, inverse});
  return task.output;
}

void rotate_inplace_cpu_any(Tensor q, std::optional<Tensor> k, Tensor cos_sin_cache,
                            Tensor inv_freq, double mscale, std::optional<Tensor> positions,
                            bool interleaved, std::optional<std::vector<int64_t>> mrope_section,
                            bool mrope_interleaved) {
  // Everything is validated before the first write, so a failing call leaves q and k untouched.
  CosSinTables tables;
  const detail::InplaceRotation plan =
      detail::plan_rotate_inplace("yarn_ext.rotate_inplace", q, k, cos_sin_cache, inv_freq, mscale,
                                  positions, {mrope_section, mrope_interleaved}, &tables);
  run(plan.q, plan.k ? &*plan.k : nullptr, {tables, interleaved, /*inverse=*/false});
}

// The operators' overloads: plain RoPE, and MRoPE (yarn_ext::rotate.mrope).
using Overloads = detail::RotationOverloads<&rotate_cpu_any, &rotate_inplace_cpu_any>;

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(yarn_ext, CPU, m) {
  m.impl("rotate", TORCH_BOX(&Overloads::rotate));
  m.impl("rotate_inplace", TORCH_BOX(&Overloads::rotate_inplace));
  m.impl("rotate.mrope", TORCH_BOX(&Overloads::rotate_mrope));
  m.impl("rotate_inplace.mrope", TORCH_BOX(&Overloads::rotate_inplace_mrope));
}

}  // namespace yarn_ext::cpu
