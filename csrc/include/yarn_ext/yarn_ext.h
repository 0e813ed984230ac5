// yarn_ext's C++ API, all of it: the helpers, the operators (through the dispatcher: CPU, CUDA
// and autograd), the table policy and the YarnEmbedding module. Link yarn_ext::yarn_ext.
#pragma once

#include "yarn_ext/helpers.h"
#include "yarn_ext/ops.h"
#include "yarn_ext/tables.h"
#include "yarn_ext/version.h"
#include "yarn_ext/yarn_embedding.h"
