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
// The host turns them into one bit per pair and component (mrope_section.h), so that a kernel
// finds the components of its kVec pairs with one shift, whatever the style.
#pragma once

#include <stdint.h>

#include "yarn_ext/core/macros.h"

namespace yarn_ext {

// The number of position components of an MRoPE token: t, h and w.
constexpr int kMropeComponents = 3;
// The most pairs (dim / 2) an MRoPE layout describes: 2 x 256 bits of kernel arguments. The
// MRoPE models rotate 32 or 64 pairs.
constexpr int kMropeMaxPairs = 256;
constexpr int kMropeWords = kMropeMaxPairs / 64;

struct MropeLayout {
  bool enabled;  // false: plain RoPE (one position per token)
  // Element stride between a token's t, h and w positions in the positions tensor; 0 where the
  // call passed plain positions (the three components equal, as transformers expands them).
  int64_t component_stride;
  // Bit p % 64 of word p / 64: pair p turns with the h (w) position; with neither, with t.
  uint64_t h_pairs[kMropeWords];
  uint64_t w_pairs[kMropeWords];
};

// Bits [first, first + 64 - first % 64) of a pair mask, from bit 0: the pairs of a kVec-pair
// item (first a multiple of kVec, which divides 64) are its low kVec bits.
YARN_HOST_DEVICE inline uint64_t mrope_bits(const uint64_t (&pairs)[kMropeWords], int64_t first) {
  return pairs[first / 64] >> (first % 64);
}

// The component (0: t, 1: h, 2: w) whose position pair `pair` turns with.
YARN_HOST_DEVICE inline int mrope_component(const MropeLayout& layout, int64_t pair) {
  if (mrope_bits(layout.h_pairs, pair) & 1) return 1;
  return (mrope_bits(layout.w_pairs, pair) & 1) ? 2 : 0;
}

}  // namespace yarn_ext
