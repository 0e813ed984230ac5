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

// Three non-negative pair counts summing to `half` (dim / 2) and, interleaved, each component's
// pairs inside the head; else std::invalid_argument("<fn>: ..."). Returns the layout, its
// component stride 0 (the operators set it from the positions).
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
  MropeLayout layout{};
  layout.enabled = true;
  layout.interleaved = interleaved;
  for (int c = 0; c < kMropeComponents; ++c) {
    const int64_t count = sections[static_cast<size_t>(c)];
    layout.sections[c] = static_cast<int32_t>(count);
    // Interleaved, component c's pairs are c, c + 3, ...: its last one must be inside the head.
    require(!interleaved || c == 0 || count == 0 || c + 3 * (count - 1) < half, fn,
            "mrope_section ", text, " does not fit dim / 2 = ", half,
            " pairs interleaved: component ", c, "'s pairs ", c, ", ", c + 3,
            ", ... run past the last pair");
  }
  return layout;
}

}  // namespace yarn_ext::helper_math
