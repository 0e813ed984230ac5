#include "cpu/cpu_kernels.h"

#include <ATen/Version.h>

#include <string>

namespace yarn_ext::cpu {

// One table per instruction-set copy of vectorized/kernels.cpp that CMake built.
namespace DEFAULT {
extern const Kernels kernels;
}
#if defined(YARN_EXT_CPU_AVX2)
namespace AVX2 {
extern const Kernels kernels;
}
#endif
#if defined(YARN_EXT_CPU_AVX512)
namespace AVX512 {
extern const Kernels kernels;
}
#endif

const Kernels& kernels() {
  // ATen's answer for this CPU ("DEFAULT", "AVX2", "AVX512"; lowered by ATEN_CPU_CAPABILITY),
  // decided once.
  static const Kernels& chosen = []() -> const Kernels& {
    [[maybe_unused]] const std::string capability = at::get_cpu_capability();
#if defined(YARN_EXT_CPU_AVX512)
    if (capability == "AVX512") return AVX512::kernels;
#endif
#if defined(YARN_EXT_CPU_AVX2)
    if (capability == "AVX2" || capability == "AVX512") return AVX2::kernels;
#endif
    return DEFAULT::kernels;
  }();
  return chosen;
}

}  // namespace yarn_ext::cpu
