// Included by every public header. A program that includes any of them references a symbol of
// libyarn_ext, so the linker keeps the library - and with it the operator registrations - even
// under --as-needed when the program reaches the operators only through the dispatcher.
#pragma once

namespace yarn_ext::detail {

int library_anchor();  // defined next to the operator registrations (ops.cpp)
[[maybe_unused]] inline const int kLibraryAnchor = library_anchor();

}  // namespace yarn_ext::detail
