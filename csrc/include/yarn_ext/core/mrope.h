// Multimodal RoPE (MRoPE, Qwen2-VL and later): each token carries three positions - temporal,
// height and width - and each frequency takes its angle from one of them. Torch-free and
// host+device: the CPU kernels, the CUDA kernels and their emulation read the layout from here.
//
// The sections give how many frequencies (pairs) follow each component:
//   - contiguous (Qwen2-VL, Qwen2.5-VL): pairs [0, s0) follow t, the next s1 follow h, the last
//     s2 follow w;
//   - interleaved (Qwen3-VL, Qwen3.5): pair j follows component j % 3 while j < 3 * s_(j % 3),
//     and t past that - transformers' layout, which starts from t everywhere and overwrites h at
//     pairs 1, 4, ... and w at 2, 5, ...
// The sections sum to the number of pairs (checked on the host), so every pair has a component.
#pragma once

#include <stdint.h>

#include "yarn_ext/core/macros.h"

namespace yarn_ext {

// The number of position components of an MRoPE token: t, h and w.
constexpr int kMropeComponents = 3;

struct MropeLayout {
  bool enabled;  // false: plain RoPE (one position per token)
  bool interleaved;
  int32_t sections[kMropeComponents];  // pairs per component
  // Element stride between a token's t, h and w positions in the positions tensor; 0 where the
  // call passed plain positions (the three components equal, as transformers expands them).
  int64_t component_stride;
};

// The component (0: t, 1: h, 2: w) whose position pair `pair` turns with.
YARN_HOST_DEVICE inline int mrope_component(const MropeLayout& layout, int64_t pair) {
  if (layout.interleaved) {
    const int r = static_cast<int>(pair % kMropeComponents);
    if (r == 1 && pair < int64_t{3} * layout.sections[1]) return 1;
    if (r == 2 && pair < int64_t{3} * layout.sections[2]) return 2;
    return 0;
  }
  if (pair < layout.sections[0]) return 0;
  return pair < int64_t{layout.sections[0]} + layout.sections[1] ? 1 : 2;
}

}  // namespace yarn_ext
