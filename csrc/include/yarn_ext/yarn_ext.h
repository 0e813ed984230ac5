// yarn_ext's C++ API, all of it: the helpers, the operators (through the dispatcher: CPU, CUDA
// and autograd), the table policy and the YarnEmbedding module. Link yarn_ext::yarn_ext.
#pragma once

#include "yarn_ext/helpers.h"
#include "yarn_ext/ops.h"
#include "yarn_ext/tables.h"
#include "yarn_ext/version.h"
#include "yarn_ext/yarn_embedding.h"

namespace yarn_ext::detail {

// Defined next to the operator registrations. A program that includes this header references it,
// so the linker keeps libyarn_ext (and with it the registrations) even under --as-needed when
// the program only reaches the operators through the dispatcher.
int library_anchor();
[[maybe_unused]] inline const int kLibraryAnchor = library_anchor();

}  // namespace yarn_ext::detail
