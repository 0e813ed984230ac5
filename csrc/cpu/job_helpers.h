// What the CPU operators share when they set up a job for the instruction-set copies
// (cpu_kernels.h) on the stable-ABI side: the element type, and how tokens are split over
// torch's threads.
#pragma once

#include <torch/csrc/stable/ops.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

#include "checks.h"
#include "cpu/cpu_kernels.h"

namespace yarn_ext::cpu {

inline ElementType element_type(detail::Dtype type) {
  switch (type) {
    case detail::Dtype::kFloat16:
      return ElementType::kFloat16;
    case detail::Dtype::kBFloat16:
      return ElementType::kBFloat16;
    case detail::Dtype::kFloat64:
      return ElementType::kFloat64;
    default:  // float32, the only other type the checks let through
      return ElementType::kFloat32;
  }
}

// ATen's grain: below it, threading costs more than it saves.
constexpr int64_t kGrainElements = 32768;

// Calls work(begin, end) over chunks of [0, num_tokens) of at least kGrainElements elements; a
// call smaller than that (decode) runs on the calling thread without allocating anything.
template <typename Work>
void for_token_chunks(int64_t num_tokens, int64_t elements_per_token, const Work& work) {
  const int64_t grain =
      std::max<int64_t>(1, kGrainElements / std::max<int64_t>(1, elements_per_token));
  const auto threads = static_cast<int64_t>(torch::stable::get_num_threads());
  // (Inside a parallel region torch's parallel_for runs its range on the calling thread, which
  // then takes every chunk from the counter.)
  if (num_tokens <= grain || threads == 1) {
    work(0, num_tokens);
    return;
  }
  // Tokens are handed out in chunks (about 8 per thread, at least a grain each) from a shared
  // counter, not split in equal parts up front: where cores are shared (a VM, a busy server), a
  // core held up for a while leaves its chunks to the others instead of making the call wait
  // for its part. (Measured on the 2-core development VM: with equal parts, whole runs of calls
  // took the time of one core, or worse, while a copy of the same bytes - bound by memory, not
  // by cores - kept its speed.)
  const int64_t chunk = std::max(grain, (num_tokens + 8 * threads - 1) / (8 * threads));
  const int64_t chunks = (num_tokens + chunk - 1) / chunk;
  std::atomic<int64_t> next{0};
  torch::stable::parallel_for(0, std::min(threads, chunks), 1, [&](int64_t, int64_t) {
    for (int64_t c = next.fetch_add(1); c < chunks; c = next.fetch_add(1)) {
      work(c * chunk, std::min(num_tokens, (c + 1) * chunk));
    }
  });
}

}  // namespace yarn_ext::cpu
