#include "cpu/cuda_emulation.h"

#include <ATen/Dispatch.h>
#include <c10/util/Exception.h>

#include "rotate_args.h"
#include "rotation_plan.h"
#include "yarn_ext/core/rotate_work.h"
#include "yarn_ext/core/token_work.h"

namespace yarn_ext::testing {
namespace {

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
EmulatedLaunch run(const TokenRotateArgs<scalar_t>& args, bool interleaved) {
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
  return {"tokens",       launch.grid_x,        launch.grid_y,    launch.block_x,
          launch.block_y, args.heads_per_slice, args.num_operands};
}

// The generic grid-stride loop, serially: every flat index once.
template <typename scalar_t, int kVec>
EmulatedLaunch run(const RotateArgs<scalar_t>& args, bool interleaved) {
  const int64_t total = args.total_items();
  for (int64_t index = 0; index < total; ++index) {
    if (interleaved) {
      rotate_work_item<scalar_t, kVec, true>(args, index);
    } else {
      rotate_work_item<scalar_t, kVec, false>(args, index);
    }
  }
  EmulatedLaunch launch;
  launch.path = kVec > 1 ? "generic_vector" : "generic_scalar";
  launch.operands = args.num_operands;
  return launch;
}

std::vector<EmulatedLaunch> emulate(const detail::RotationTask& first,
                                    const detail::RotationTask* second, const at::Tensor& cache,
                                    const at::Tensor& inv_freq, double mscale, bool interleaved,
                                    bool inverse, int sm_count) {
  TORCH_CHECK_VALUE(first.input.device().is_cpu(), "the CUDA emulation runs on CPU tensors");
  TORCH_CHECK_VALUE(sm_count > 0, "sm_count must be positive");
  std::vector<EmulatedLaunch> launches;
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, first.input.scalar_type(), "yarn_ext_emulate_cuda", [&] {
        detail::with_rotate_args<scalar_t>(
            first, second, cache, inv_freq, mscale, inverse, sm_count, /*token_path=*/true,
            [&](auto width, const auto& args) {
              launches.push_back(run<scalar_t, decltype(width)::value>(args, interleaved));
            });
      });
  return launches;
}

}  // namespace

TokenPlan plan_token_launch(int64_t num_tokens, int64_t total_heads, int64_t items_per_row,
                            int sm_count) {
  detail::TokenLayout layout{};
  layout.tokens[0] = 1;
  layout.tokens[1] = num_tokens;
  layout.heads = total_heads;
  const detail::TokenLayout* layouts[1] = {&layout};
  TokenPlan plan;
  plan.fits = detail::token_path_fits(layouts, 1, items_per_row);
  if (!plan.fits) return plan;
  // the launch arguments' sizes, set as token_rotate_args sets them (no tensors: no pointers)
  TokenRotateArgs<float> args{};
  args.num_operands = 1;
  args.operands[0].num_heads = static_cast<int32_t>(total_heads);
  detail::set_token_sizes(args, num_tokens, num_tokens, items_per_row, total_heads, sm_count);
  const TokenLaunch launch = token_launch(args);
  plan.launch = {
      "tokens", launch.grid_x, launch.grid_y, launch.block_x, launch.block_y, args.heads_per_slice,
      1};
  return plan;
}

std::vector<EmulatedLaunch> emulate_cuda_rotate(const at::Tensor& x, at::Tensor& out,
                                                const at::Tensor& cos_sin_cache,
                                                const at::Tensor& inv_freq, double mscale,
                                                const std::optional<at::Tensor>& positions,
                                                bool interleaved, bool inverse, int sm_count) {
  const detail::RotationTask task =
      detail::plan_rotate("yarn_ext.rotate", x, cos_sin_cache, inv_freq, mscale, positions);
  out = task.output;
  return emulate(task, nullptr, cos_sin_cache, inv_freq, mscale, interleaved, inverse, sm_count);
}

std::vector<EmulatedLaunch> emulate_cuda_rotate_inplace(const at::Tensor& q,
                                                        const std::optional<at::Tensor>& k,
                                                        const at::Tensor& cos_sin_cache,
                                                        const at::Tensor& inv_freq, double mscale,
                                                        const std::optional<at::Tensor>& positions,
                                                        bool interleaved, int sm_count) {
  const detail::InplaceRotation plan = detail::plan_rotate_inplace(
      "yarn_ext.rotate_inplace", q, k, cos_sin_cache, inv_freq, mscale, positions);
  return emulate(plan.q, plan.k ? &*plan.k : nullptr, cos_sin_cache, inv_freq, mscale, interleaved,
                 /*inverse=*/false, sm_count);
}

}  // namespace yarn_ext::testing
