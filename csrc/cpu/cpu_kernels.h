// The CPU kernels' inner loops, compiled once per instruction set (vectorized/kernels.cpp is built
// with CPU_CAPABILITY = DEFAULT, AVX2 and AVX512 on x86-64) and chosen at run time from ATen's
// CPU capability (the ATEN_CPU_CAPABILITY environment variable can lower it, as for ATen's own
// kernels). The jobs are plain data: the instruction-set copies and the code that plans and
// threads them (rotate_kernel.cpp, cache_kernel.cpp) share nothing else.
#pragma once

#include <c10/core/ScalarType.h>

#include <cstdint>

#include "yarn_ext/core/strided_rows.h"

namespace yarn_ext::cpu {

// Some row dimensions of one operand, outermost first, with element strides.
struct RowDims {
  int ndim = 0;
  int64_t sizes[kMaxRowDims] = {};
  int64_t in[kMaxRowDims] = {};
  int64_t out[kMaxRowDims] = {};
  int64_t positions[kMaxRowDims] = {};  // token dimensions only; 0 for head dimensions
};

// One rotated tensor (q, k or x) split into tokens and heads: the position can change along the
// token dimensions and does not along the head dimensions, so one cos/sin row serves all the
// heads of a token. Every operand of a job has the same token sizes and positions strides.
struct RotateOperand {
  const void* in = nullptr;
  void* out = nullptr;    // == in for in-place rotation
  int64_t in_stride = 1;  // element strides of the last dimension
  int64_t out_stride = 1;
  RowDims tokens;
  RowDims heads;
  int64_t num_heads = 1;
  bool heads_inner = true;  // the heads of a token are closer in memory than its neighbours
};

struct RotateJob {
  c10::ScalarType dtype = c10::ScalarType::Float;
  RotateOperand operands[2];
  int num_operands = 1;
  int64_t num_tokens = 0;
  const void* positions = nullptr;  // nullptr: implicit, a token's position is its offset
  bool int32_positions = false;
  const float* cache = nullptr;
  int64_t cache_positions = 0;
  const double* frequencies = nullptr;
  int64_t half = 0;  // rotary pairs per head
  double mscale = 1.0;
  int64_t head_size = 0;
  bool interleaved = false;
  bool inverse = false;
};

struct Kernels {
  const char* name;
  // Rotates tokens [begin, end) of every operand of the job.
  void (*rotate_tokens)(const RotateJob& job, int64_t begin, int64_t end);
  // Rows [begin, end) of the float32 cos/sin cache: cos in columns [0, half), sin in [half, 2
  // half).
  void (*fill_cache_rows)(const double* frequencies, int64_t half, double mscale, float* cache,
                          int64_t begin, int64_t end);
};

// The copy for this CPU (and ATEN_CPU_CAPABILITY).
const Kernels& kernels();

}  // namespace yarn_ext::cpu
