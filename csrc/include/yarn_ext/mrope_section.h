// The check of an MRoPE section layout, written once for the operators (csrc/checks.cpp), the
// module's policy (table_policy.h) and so the C++ module: torch-free and host-only. The layout's
// meaning is core/mrope.h. yarn_ext/_validation.py repeats the check for the fake (tracing)
// implementations, with the same messages (tests/test_validation_parity.py).
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "yarn_ext/core/mrope.h"
#include "yarn_ext/helper_math.h"

namespace yarn_ext::helper_math {

// Three non-negative pair counts summing to `half` (dim / 2, at most kMropeMaxPairs) and,
// interleaved, each component's pairs inside the head; else std::invalid_argument("<fn>: ...").
// Returns the layout as the kernels read it (core/mrope.h), its component stride 0 (the
// operators set it from the positions).
inline MropeLayout check_mrope_section(const char* fn, const std::vector<int64_t>& sections,
                                       bool interleaved, int64_t half) {
  std::string text = "[";
  int64_t sum = 0;
  bool non_negative = true;
  for (size_t i = 0; i < sections.size(); ++i) {
    text += (i > 0 ? ", " : "") + std::to_string(sections[i]);
    non_negative = non_negative && sections[i] >= 0;
    // Clamped so that the sum of any three cannot overflow; a clamped one fails the test anyway.
    if (non_negative) sum += std::min<int64_t>(sections[i], int64_t{1} << 40);
  }
  text += "]";
  require(sections.size() == kMropeComponents, fn,
          "mrope_section must have 3 entries (the pairs that follow the t, h and w positions), "
          "got ",
          text);
  require(non_negative && sum == half, fn,
          "mrope_section must be non-negative and sum to dim / 2 = ", half, ", got ", text);
  require(half <= kMropeMaxPairs, fn, "MRoPE supports up to dim / 2 = ", kMropeMaxPairs,
          " pairs, got ", half);
  for (int c = 1; c < kMropeComponents; ++c) {
    const int64_t count = sections[static_cast<size_t>(c)];
    // Interleaved, component c's pairs are c, c + 3, ...: its last one must be inside the head.
    require(!interleaved || count == 0 || c + 3 * (count - 1) < half, fn, "mrope_section ", text,
            " does not fit dim / 2 = ", half, " pairs interleaved: component ", c, "'s pairs ", c,
            ", ", c + 3, ", ... run past the last pair");
  }
  MropeLayout layout{};
  layout.enabled = true;
  const int64_t h_start = sections[0], w_start = sections[0] + sections[1];
  for (int64_t pair = 0; pair < half; ++pair) {
    int component = 0;
    if (interleaved) {
      const int r = static_cast<int>(pair % kMropeComponents);
      if (r > 0 && pair < 3 * sections[static_cast<size_t>(r)]) component = r;
    } else {
      component = pair < h_start ? 0 : (pair < w_start ? 1 : 2);
    }
    const uint64_t bit = uint64_t{1} << (pair % 64);
    if (component == 1) layout.h_pairs[pair / 64] |= bit;
    if (component == 2) layout.w_pairs[pair / 64] |= bit;
  }
  return layout;
}

}  // namespace yarn_ext::helper_math
