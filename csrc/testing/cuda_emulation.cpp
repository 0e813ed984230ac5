// Test hooks, built only for the tests (libyarn_ext_testing; never in the wheel or the CMake
// package): the CUDA rotation's work (core/token_work.h, core/rotate_work.h) run serially on the
// CPU, with the same path choice, argument building and launch geometry as the CUDA launcher
// (rotate_args.h), so that the CPU tests exercise the GPU's index arithmetic where no GPU is at
// hand. Registered as operators of the namespace yarn_ext_testing on the stable ABI; the tests
// reach them through tests/hooks.py.
//
// A launch is returned as a row of int64: path (0 tokens, 1 generic with 16-byte vectors, 2
// generic one element at a time), grid x and y, block x and y, heads per slice (token path
// only), and the tensors in the launch.
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/headeronly/util/BFloat16.h>
#include <torch/headeronly/util/Half.h>

#include <array>
#include <optional>
#include <tuple>
#include <vector>

#include "checks.h"
#include "kv_store_plan.h"
#include "kv_store_work.h"
#include "rotate_args.h"
#include "rotation_plan.h"
#include "yarn_ext/core/rotate_work.h"
#include "yarn_ext/core/token_work.h"

namespace yarn_ext::testing {
namespace {

using torch::headeronly::ScalarType;
using torch::stable::Tensor;
using Launch = std::array<int64_t, 7>;

// Every thread of the token-major launch, block by block.
template <typename scalar_t, int kVec, bool interleaved, bool in_place>
void run_threads(const TokenRotateArgs<scalar_t>& args, const TokenLaunch& launch) {
  for (uint32_t by = 0; by < launch.grid_y; ++by) {
    for (uint32_t bx = 0; bx < launch.grid_x; ++bx) {
      for (uint32_t ty = 0; ty < launch.block_y; ++ty) {
        for (uint32_t tx = 0; tx < launch.block_x; ++tx) {
          rotate_token_thread<scalar_t, kVec, interleaved, in_place>(args, bx, by, tx, ty);
        }
      }
    }
  }
}

template <typename scalar_t, int kVec>
Launch run(const TokenRotateArgs<scalar_t>& args, bool interleaved) {
  const TokenLaunch launch = token_launch(args);
  const bool in_place = args.operands[0].in == args.operands[0].out;
  if (interleaved) {
    if (in_place) {
      run_threads<scalar_t, kVec, true, true>(args, launch);
    } else {
      run_threads<scalar_t, kVec, true, false>(args, launch);
    }
  } else if (in_place) {
    run_threads<scalar_t, kVec, false, true>(args, launch);
  } else {
    run_threads<scalar_t, kVec, false, false>(args, launch);
  }
  return {0,
          launch.grid_x,
          launch.grid_y,
          launch.block_x,
          launch.block_y,
          args.heads_per_slice,
          args.num_operands};
}

// The generic grid-stride loop, serially: every flat index once.
template <typename scalar_t, int kVec>
Launch run(const RotateArgs<scalar_t>& args, bool interleaved) {
  const int64_t total = args.total_items();
  for (int64_t index = 0; index < total; ++index) {
    if (interleaved) {
      rotate_work_item<scalar_t, kVec, true>(args, index);
    } else {
      rotate_work_item<scalar_t, kVec, false>(args, index);
    }
  }
  return {kVec > 1 ? 1 : 2, 0, 0, 0, 0, 0, args.num_operands};
}

template <typename scalar_t>
void emulate_typed(const detail::RotationTask& first, const detail::RotationTask* second,
                   const CosSinTables& tables, bool interleaved, bool inverse, int sm_count,
                   std::vector<Launch>& launches) {
  detail::with_rotate_args<scalar_t>(
      first, second, tables, inverse, sm_count, /*token_path=*/true,
      [&](auto width, const auto& args) {
        launches.push_back(run<scalar_t, decltype(width)::value>(args, interleaved));
      });
}

Tensor launch_rows(const std::vector<Launch>& launches) {
  Tensor rows = torch::stable::empty({static_cast<int64_t>(launches.size()), 7}, ScalarType::Long);
  auto* out = static_cast<int64_t*>(rows.mutable_data_ptr());
  for (const Launch& launch : launches) {
    for (int64_t value : launch) *out++ = value;
  }
  return rows;
}

Tensor emulate(const detail::RotationTask& first, const detail::RotationTask* second,
               const CosSinTables& tables, bool interleaved, bool inverse, int64_t sm_count) {
  YARN_CHECK(sm_count > 0, "emulate", "sm_count must be positive");
  std::vector<Launch> launches;
  const int sms = static_cast<int>(sm_count);
  switch (first.dtype) {
    case detail::Dtype::kFloat16:
      emulate_typed<c10::Half>(first, second, tables, interleaved, inverse, sms, launches);
      break;
    case detail::Dtype::kBFloat16:
      emulate_typed<c10::BFloat16>(first, second, tables, interleaved, inverse, sms, launches);
      break;
    case detail::Dtype::kFloat64:
      emulate_typed<double>(first, second, tables, interleaved, inverse, sms, launches);
      break;
    default:
      emulate_typed<float>(first, second, tables, interleaved, inverse, sms, launches);
  }
  return launch_rows(launches);
}

// Registered for the CPU key only: the emulation reads and writes host memory.
std::tuple<Tensor, Tensor> emulate_cuda_rotate(Tensor x, Tensor cache, Tensor inv_freq,
                                               double mscale, std::optional<Tensor> positions,
                                               bool interleaved, bool inverse, int64_t sm_count,
                                               std::optional<std::vector<int64_t>> mrope_section,
                                               bool mrope_interleaved) {
  CosSinTables tables;
  const detail::RotationTask task =
      detail::plan_rotate("yarn_ext.rotate", x, cache, inv_freq, mscale, positions,
                          {mrope_section, mrope_interleaved}, &tables);
  Tensor launches = emulate(task, nullptr, tables, interleaved, inverse, sm_count);
  return {task.output, launches};
}

Tensor emulate_cuda_rotate_inplace(Tensor q, std::optional<Tensor> k, Tensor cache, Tensor inv_freq,
                                   double mscale, std::optional<Tensor> positions, bool interleaved,
                                   int64_t sm_count,
                                   std::optional<std::vector<int64_t>> mrope_section,
                                   bool mrope_interleaved) {
  CosSinTables tables;
  const detail::InplaceRotation plan =
      detail::plan_rotate_inplace("yarn_ext.rotate_inplace", q, k, cache, inv_freq, mscale,
                                  positions, {mrope_section, mrope_interleaved}, &tables);
  return emulate(plan.q, plan.k ? &*plan.k : nullptr, tables, interleaved, /*inverse=*/false,
                 sm_count);
}

// The token path's plan for a call of these sizes, without tensors: [fits, launch...] (for the
// planner's limits near 2^31 tokens).
Tensor plan_token_launch(int64_t num_tokens, int64_t total_heads, int64_t items_per_row,
                         int64_t sm_count) {
  detail::TokenLayout layout{};
  layout.tokens[0] = 1;
  layout.tokens[1] = num_tokens;
  layout.heads = total_heads;
  const detail::TokenLayout* layouts[1] = {&layout};
  Launch launch{};
  const bool fits = detail::token_path_fits(layouts, 1, items_per_row);
  if (fits) {
    // the launch arguments' sizes, set as token_rotate_args sets them (no tensors: no pointers)
    TokenRotateArgs<float> args{};
    args.num_operands = 1;
    args.operands[0].num_heads = static_cast<int32_t>(total_heads);
    detail::set_token_sizes(args, num_tokens, num_tokens, items_per_row, total_heads,
                            static_cast<int>(sm_count));
    const TokenLaunch geometry = token_launch(args);
    launch = {0,
              geometry.grid_x,
              geometry.grid_y,
              geometry.block_x,
              geometry.block_y,
              args.heads_per_slice,
              1};
  }
  Tensor plan = torch::stable::empty({8}, ScalarType::Long);
  auto* out = static_cast<int64_t*>(plan.mutable_data_ptr());
  out[0] = fits;
  for (int i = 0; i < 7; ++i) out[i + 1] = launch[i];
  return plan;
}

// rotate_store_kv's CUDA work (kv_store_work.h), every thread of the launch the CUDA launcher
// would make, a row's lanes at a time: each lane's first step (its part of the sum of squares),
// the parts folded as the GPU's shuffles fold them, then each lane's second step - the order
// the GPU keeps (the fold, then a __syncwarp of the lanes), where no lane of a row writes
// before every lane has read.
// Slot values are not checked on the host (the kernel skips a slot outside the caches, and
// counts it into invalid_slots when given).
template <typename scalar_t, int kVec, bool interleaved>
void run_kv_store_row(const KvStoreLayout& layout, const kv_store::KvStoreLaunch& launch,
                      int64_t bx, int64_t by, int64_t tx, int64_t ty) {
  const auto u = [](int64_t v) { return static_cast<uint32_t>(v); };
  kv_store::ThreadRow lanes[kv_store::kLanes];
  float parts[kv_store::kLanes];
  // the GPU's shuffles among the row's lanes: each lane's mask names the same kLanes threads of
  // one warp, among them the lanes it exchanges with (its index xor 1, xor 2)
  const int64_t first = ty * launch.block_x + tx;
  const unsigned mask = kv_store::row_lanes_mask(u(first));
  for (int l = 0; l < kv_store::kLanes; ++l) {
    const uint32_t warp_lane = u((first + l) % 32);
    YARN_CHECK(
        kv_store::row_lanes_mask(u(first + l)) == mask && first / 32 == (first + l) / 32 &&
            ((mask >> warp_lane) & (mask >> (warp_lane ^ 1)) & (mask >> (warp_lane ^ 2)) & 1u) != 0,
        "emulate_cuda_rotate_store_kv", "a row's lanes are not one shuffle group");
    lanes[l] = kv_store::thread_row(layout, u(bx), u(by), u(tx + l), u(ty), u(launch.block_x),
                                    u(launch.block_y));
    if (!lanes[l].active) return;  // as every lane of its row
    parts[l] =
        kv_store::row_part<scalar_t, kVec>(layout, lanes[l].token, lanes[l].row, lanes[l].lane);
  }
  for (int l = 0; l < kv_store::kLanes; ++l) {
    const bool norm = kv_store::has_norm(layout, lanes[l].row);
    kv_store::rotate_store_row<scalar_t, kVec, interleaved>(
        layout, lanes[l].token, lanes[l].row, lanes[l].lane,
        norm ? kv_store::fold_lanes(parts, l) : 0.0f);
  }
}

template <typename scalar_t, int kVec>
void run_kv_store(const KvStoreLayout& layout, const kv_store::KvStoreLaunch& launch) {
  for (int64_t by = 0; by < launch.grid_y; ++by) {
    for (int64_t bx = 0; bx < launch.grid_x; ++bx) {
      for (int64_t ty = 0; ty < launch.block_y; ++ty) {
        for (int64_t tx = 0; tx < launch.block_x; tx += kv_store::kLanes) {
          if (layout.interleaved) {
            run_kv_store_row<scalar_t, kVec, true>(layout, launch, bx, by, tx, ty);
          } else {
            run_kv_store_row<scalar_t, kVec, false>(layout, launch, bx, by, tx, ty);
          }
        }
      }
    }
  }
}

template <typename scalar_t>
int64_t run_kv_store_typed(const detail::KvStorePlan& plan, const kv_store::KvStoreLaunch& launch) {
  constexpr int kVec = 16 / sizeof(scalar_t);
  if (detail::kv_store_vector_width(plan) == kVec) {
    run_kv_store<scalar_t, kVec>(plan, launch);
    return kVec;
  }
  run_kv_store<scalar_t, 1>(plan, launch);
  return 1;
}

// Returns [vector width, grid x, grid y, block x, block y].
Tensor emulate_kv_store(const detail::KvStorePlan& plan) {
  const kv_store::KvStoreLaunch launch = kv_store::kv_store_launch(plan);
  int64_t width = 0;
  if (launch.grid_x > 0) {
    switch (plan.dtype) {
      case detail::Dtype::kFloat16:
        width = run_kv_store_typed<c10::Half>(plan, launch);
        break;
      case detail::Dtype::kBFloat16:
        width = run_kv_store_typed<c10::BFloat16>(plan, launch);
        break;
      default:
        width = run_kv_store_typed<float>(plan, launch);
    }
  }
  Tensor row = torch::stable::empty({5}, ScalarType::Long);
  auto* out = static_cast<int64_t*>(row.mutable_data_ptr());
  out[0] = width;
  out[1] = launch.grid_x;
  out[2] = launch.grid_y;
  out[3] = launch.block_x;
  out[4] = launch.block_y;
  return row;
}

}  // namespace

STABLE_TORCH_LIBRARY(yarn_ext_testing, m) {
  m.def(
      "emulate_cuda_rotate(Tensor x, Tensor cache, Tensor inv_freq, float mscale, "
      "Tensor? positions, bool interleaved, bool inverse, int sm_count, "
      "int[]? mrope_section=None, bool mrope_interleaved=False) -> (Tensor, Tensor)");
  m.def(
      "emulate_cuda_rotate_inplace(Tensor(a!) q, Tensor(b!)? k, Tensor cache, Tensor inv_freq, "
      "float mscale, Tensor? positions, bool interleaved, int sm_count, "
      "int[]? mrope_section=None, bool mrope_interleaved=False) -> Tensor");
  m.def(
      "emulate_cuda_rotate_store_kv(Tensor(a!) q, Tensor(b!) k, Tensor v, Tensor cos_sin_cache, "
      "Tensor inv_freq, float mscale, Tensor positions, Tensor(c!) k_cache, Tensor(d!) v_cache, "
      "Tensor slot_mapping, Tensor? q_norm_weight, Tensor? k_norm_weight, float eps, "
      "bool norm_unit_offset, Tensor? k_scale, Tensor? v_scale, bool interleaved, bool write_k, "
      "int[]? mrope_section, bool mrope_interleaved, Tensor(e!)? invalid_slots) -> Tensor");
  m.def(
      "plan_token_launch(int num_tokens, int total_heads, int items_per_row, int sm_count) -> "
      "Tensor");
}

STABLE_TORCH_LIBRARY_IMPL(yarn_ext_testing, CPU, m) {
  m.impl("emulate_cuda_rotate", TORCH_BOX(&emulate_cuda_rotate));
  m.impl("emulate_cuda_rotate_inplace", TORCH_BOX(&emulate_cuda_rotate_inplace));
  m.impl("emulate_cuda_rotate_store_kv",
         TORCH_BOX((&detail::rotate_store_kv_entry<Tensor, &emulate_kv_store>)));
}

STABLE_TORCH_LIBRARY_IMPL(yarn_ext_testing, CompositeExplicitAutograd, m) {
  m.impl("plan_token_launch", TORCH_BOX(&plan_token_launch));
}

}  // namespace yarn_ext::testing
