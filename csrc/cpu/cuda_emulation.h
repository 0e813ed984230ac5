// Test hooks: the CUDA rotation's work (core/token_work.h, core/rotate_work.h) runs serially on
// the CPU, with the same path choice, argument building and launch geometry as the CUDA
// launcher (rotate_args.h), so that the CPU tests exercise the GPU's index arithmetic where no
// GPU is at hand. Not part of the API.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace yarn_ext::testing {

// One launch as the CUDA launcher would make it.
struct EmulatedLaunch {
  std::string path;  // "tokens", "generic_vector" or "generic_scalar"
  int64_t grid_x = 0, grid_y = 0, block_x = 0, block_y = 0;  // tokens path only
  int64_t heads_per_slice = 0;                               // tokens path only
  int64_t operands = 0;                                      // tensors in the launch
};

// Out of place into `out`; `sm_count` stands for the GPU's multiprocessors (it sizes the token
// path's head slices).
std::vector<EmulatedLaunch> emulate_cuda_rotate(const at::Tensor& x, at::Tensor& out,
                                                const at::Tensor& cos_sin_cache,
                                                const at::Tensor& inv_freq, double mscale,
                                                const std::optional<at::Tensor>& positions,
                                                bool interleaved, bool inverse, int sm_count);

// q and optional k in place.
std::vector<EmulatedLaunch> emulate_cuda_rotate_inplace(const at::Tensor& q,
                                                        const std::optional<at::Tensor>& k,
                                                        const at::Tensor& cos_sin_cache,
                                                        const at::Tensor& inv_freq, double mscale,
                                                        const std::optional<at::Tensor>& positions,
                                                        bool interleaved, int sm_count);

// The token path's plan for a call of these sizes, without tensors: whether it takes the token
// path, and its launch (for the planner's limits near 2^31 tokens).
struct TokenPlan {
  bool fits = false;
  EmulatedLaunch launch;
};
TokenPlan plan_token_launch(int64_t num_tokens, int64_t total_heads, int64_t items_per_row,
                            int sm_count);

}  // namespace yarn_ext::testing
