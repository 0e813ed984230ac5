// Symbols of libyarn_ext are hidden unless marked: the library exports only its C entry points
// (the loader anchor, the CPU kernel name, the CUDA path switch); its operators are reached
// through torch's dispatcher, not through symbols.
#pragma once

#define YARN_EXT_API __attribute__((visibility("default")))
