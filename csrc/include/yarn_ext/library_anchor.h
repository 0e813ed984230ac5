// Included by every public header. A program that includes any of them references a symbol of
// libyarn_ext (and of libyarn_ext_cuda where it links that), so the linker keeps the libraries -
// and with them the operator registrations - even under --as-needed, when the program reaches the
// operators only through the dispatcher. The CMake package defines YARN_EXT_LINK_CUDA where it
// links libyarn_ext_cuda: where the build has it and the consumer's torch has CUDA.
#pragma once

#include "yarn_ext/version.h"

extern "C" int yarn_ext_library_anchor();
#if defined(YARN_EXT_LINK_CUDA)
extern "C" int yarn_ext_cuda_library_anchor();
#endif

namespace yarn_ext::detail {

inline int library_anchors() {
#if defined(YARN_EXT_LINK_CUDA)
  return yarn_ext_library_anchor() + yarn_ext_cuda_library_anchor();
#else
  return yarn_ext_library_anchor();
#endif
}
[[maybe_unused]] inline const int kLibraryAnchor = library_anchors();

}  // namespace yarn_ext::detail
