// yarn_ext's C++ API, all of it: the helpers, the operators (through the dispatcher: CPU, CUDA
// and autograd), and the YarnEmbedding module. Header-only, compiled against the program's own
// LibTorch; link yarn_ext::yarn_ext for the libraries that register the operators.
#pragma once

#include "yarn_ext/helpers.h"
#include "yarn_ext/ops.h"
#include "yarn_ext/version.h"
#include "yarn_ext/yarn_embedding.h"
