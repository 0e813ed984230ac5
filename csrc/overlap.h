// Whether views share memory, decided from their metadata alone (no tensor data is read).
//
// An in-place rotation writes q and k while it reads the tables (cos_sin_cache, inv_freq,
// positions): a written element that is also read, or written twice, makes the result depend on
// the order of the work, which differs between the CPU and CUDA kernels and from run to run on a
// GPU. The in-place operator therefore needs a proof that the views it writes touch no byte of
// another view and no element of themselves twice. These functions give that proof, disprove it,
// or say they could not decide within a fixed amount of search; the caller refuses then.
//
// yarn_ext/_overlap.py decides the same questions for the fake (tracing) implementations with the
// same algorithm and the same search budget, so that tracing and eager refuse alike.
#pragma once

#include "checks.h"

namespace yarn_ext::detail {

enum class Overlap { kNo, kYes, kUnknown };

// Whether two views (any dtypes, on one device) share a byte.
Overlap views_overlap(const void* a_data, const TensorMeta& a, const void* b_data,
                      const TensorMeta& b);

// Whether two different indices of one view address the same element.
Overlap self_overlap(const TensorMeta& t);

}  // namespace yarn_ext::detail
