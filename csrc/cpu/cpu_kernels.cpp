#include "cpu/cpu_kernels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#endif

#include <cctype>
#include <cstdlib>
#include <string>

#include "export.h"

namespace yarn_ext::cpu {

// One table per instruction-set copy of vectorized/kernels.cpp in the build.
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
#if defined(YARN_EXT_CPU_AVX512_BF16)
namespace AVX512_BF16 {
extern const Kernels kernels;
}
#endif

const char* choose_capability(bool avx2, bool avx512, bool avx512_bf16, const char* requested) {
  // ATen's rule: the best the CPU supports, lowered (never raised) by ATEN_CPU_CAPABILITY
  // ("default", "avx2", "avx512", any case); another value leaves the choice alone. ATen has no
  // AVX512_BF16 copy: "avx512" lowers to the plain AVX512 one.
  std::string wanted = requested != nullptr ? requested : "";
  for (char& c : wanted) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (wanted == "default") return "DEFAULT";
  if (avx512_bf16 && wanted != "avx2" && wanted != "avx512") return "AVX512_BF16";
  if (avx512 && wanted != "avx2") return "AVX512";
  if (avx2) return "AVX2";
  return "DEFAULT";
}

namespace {

// What this CPU supports, asked of the CPU itself (libtorch's own answer, at::get_cpu_capability,
// is not on the stable ABI). The same features ATen requires for its copies: AVX2 with FMA for
// AVX2; AVX-512 F, BW, VL and DQ for AVX512; and those with AVX-512 BF16 for AVX512_BF16.
[[maybe_unused]] bool cpu_has_avx2() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

[[maybe_unused]] bool cpu_has_avx512() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
#else
  return false;
#endif
}

// AVX-512 BF16's conversions, on top of AVX512's features (whose check covers the OS's saving of
// the AVX-512 state): CPUID leaf 7, subleaf 1, EAX bit 5, asked directly (older compilers'
// __builtin_cpu_supports does not know the feature).
[[maybe_unused]] bool cpu_has_avx512_bf16() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (__get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx) == 0) return false;
  return (eax >> 5) & 1u;
#else
  return false;
#endif
}

}  // namespace

const Kernels& kernels() {
  // Decided once, like ATen's own choice.
  static const Kernels& chosen = []() -> const Kernels& {
    bool avx2 = false;
    bool avx512 = false;
    bool avx512_bf16 = false;
#if defined(YARN_EXT_CPU_AVX2)
    avx2 = cpu_has_avx2();
#endif
#if defined(YARN_EXT_CPU_AVX512)
    avx512 = avx2 && cpu_has_avx512();
#endif
#if defined(YARN_EXT_CPU_AVX512_BF16)
    avx512_bf16 = avx512 && cpu_has_avx512_bf16();
#endif
    const std::string capability =
        choose_capability(avx2, avx512, avx512_bf16, std::getenv("ATEN_CPU_CAPABILITY"));
#if defined(YARN_EXT_CPU_AVX512_BF16)
    if (capability == "AVX512_BF16") return AVX512_BF16::kernels;
#endif
#if defined(YARN_EXT_CPU_AVX512)
    if (capability == "AVX512") return AVX512::kernels;
#endif
#if defined(YARN_EXT_CPU_AVX2)
    if (capability == "AVX2") return AVX2::kernels;
#endif
    return DEFAULT::kernels;
  }();
  return chosen;
}

}  // namespace yarn_ext::cpu

// The name of the copy in use, for yarn_ext.cpu_kernels() (read through ctypes: no Python here).
extern "C" YARN_EXT_API const char* yarn_ext_cpu_kernels() {
  return yarn_ext::cpu::kernels().name;
}
