#!/usr/bin/env bash
# The host code under AddressSanitizer and UndefinedBehaviorSanitizer: a copy of the working tree
# is built with YARN_EXT_SANITIZE=address,undefined (libyarn_ext, every CPU instruction-set copy,
# and _C; CPU kernels only - nvcc's device code is not instrumented), then
#  1. the Python test suite runs against that build (python is not instrumented, so the ASan
#     runtime is preloaded). Only tests/test_huge.py is left out: its 9 GB tensors are too much
#     for ASan's quarantine and shadow on a 24 GB machine, and the same kernels and index
#     arithmetic run over every other size here;
#  2. the C++ tests (ctest) run, linked to the same instrumented library.
# Any report fails the run: ASan stops at its first error, and UBSan's reports are made fatal at
# compile time (-fno-sanitize-recover=all) as well as here.
#
#   .ci/sanitizers.sh WORK_DIR        (CI runs it in its virtual environment)
set -euo pipefail
work="$(realpath -m "${1:?usage: sanitizers.sh WORK_DIR}")"
cd "$(dirname "$0")/.."
repo="$PWD"
case "$work/" in "$repo/"*)
  echo "sanitizers.sh: WORK_DIR must be outside the repository ($repo)"
  exit 2
  ;;
esac
sanitizers=address,undefined
# The CPU kernels only: no GPU may be seen (the build has no CUDA kernels, and CUDA's start-up
# does not go with ASan's shadow memory).
export CUDA_VISIBLE_DEVICES=

echo "== copy of the working tree in $work/src"
rm -rf "$work/src"
mkdir -p "$work/src"
# tracked and untracked files as they are now (a tracked file deleted in the tree is left out)
git ls-files --cached --others --exclude-standard -z |
  while IFS= read -r -d '' file; do [[ -e "$file" ]] && printf '%s\0' "$file"; done |
  xargs -0 cp --parents -t "$work/src"
cd "$work/src"

echo "== build with -fsanitize=$sanitizers"
start=$SECONDS
build="$work/sanitize-build" # setup.py's build_temp
YARN_EXT_SANITIZE=$sanitizers YARN_EXT_CPU_ONLY=1 python setup.py build_ext --inplace \
  --build-temp "$build" >"$work/sanitize-build.log" 2>&1 ||
  { tail -40 "$work/sanitize-build.log"; exit 1; }
echo "built in $((SECONDS - start)) s"

check_instrumented() {
  # A build that silently lost its flags would make a clean run meaningless.
  local symbols
  symbols="$(nm -D "$1")"
  grep -q "__asan_report" <<<"$symbols" || { echo "$1 is not instrumented"; exit 1; }
  grep -q "__ubsan_handle" <<<"$symbols" || { echo "$1 has no UBSan checks"; exit 1; }
}
check_instrumented yarn_ext/lib/libyarn_ext.so
check_instrumented "$(ls yarn_ext/_C*.so)"

# The runtimes must come first in the process: preload into (uninstrumented) python the very
# ones the library was linked with.
runtime() { ldd yarn_ext/lib/libyarn_ext.so | awk -v lib="$1" 'index($1, lib) == 1 { print $3 }'; }
preload="$(runtime libasan) $(runtime libubsan)"
# detect_leaks=0: CPython and torch keep allocations alive until exit by design.
# allocator_may_return_null=1: an allocation that cannot be satisfied returns null, as malloc
# does, so that torch raises its out-of-memory error (a test asks for a petabyte on purpose)
# instead of ASan stopping the process. The price: an absurd size from an overflowed size
# computation becomes that exception instead of an ASan report, which still fails any test that
# does not expect an allocation error.
export ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1:halt_on_error=1:exitcode=86
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1:exitcode=87

# A clean run means something only if the instrumented build is the one under test: python, run
# here as pytest runs it, must import this copy and map its library and the sanitizer runtimes.
LD_PRELOAD="$preload" python -c '
from pathlib import Path

import yarn_ext

src = Path.cwd().resolve()
assert Path(yarn_ext.__file__).resolve().is_relative_to(src), f"imported {yarn_ext.__file__}"
maps = Path("/proc/self/maps").read_text()
library = str(src / "yarn_ext" / "lib" / "libyarn_ext.so")
assert library in maps, f"{library} is not the libyarn_ext loaded"
assert "libasan" in maps and "libubsan" in maps, "the sanitizer runtimes are not loaded"
print(f"testing {library}, instrumented")
'

echo "== Python tests under ASan+UBSan"
start=$SECONDS
# --capture=sys: the sanitizers write their reports to file descriptor 2, which pytest's default
# capture would swallow when the process stops.
# test_aoti.py builds and runs a C++ program of its own (not instrumented); the C++ tests below
# run the library's C++ side under the sanitizers.
LD_PRELOAD="$preload" python -m pytest -q -p no:cacheprovider --capture=sys \
  --ignore=tests/test_huge.py --ignore=tests/test_aoti.py tests
echo "tests ran in $((SECONDS - start)) s"

echo "== C++ tests under ASan+UBSan"
# tests/cpp as a project of its own against the instrumented build's CMake package (the one an
# in-place build writes into the package): only the test program is compiled.
# (yarn_ext.cmake_prefix_path, without importing the instrumented package outside LD_PRELOAD)
prefix="$PWD/yarn_ext/share/cmake"
flags="$(python -c 'import json; print(" ".join(json.load(open("csrc/library.json"))["sanitizer_flags"]))')"
cmake -S tests/cpp -B "$build/cpp-tests" -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_CXX_FLAGS="-fsanitize=$sanitizers $flags" \
  -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=$sanitizers" >"$work/sanitize-cmake.log" 2>&1 &&
  cmake --build "$build/cpp-tests" >>"$work/sanitize-cmake.log" 2>&1 ||
  { tail -40 "$work/sanitize-cmake.log"; exit 1; }
ctest --test-dir "$build/cpp-tests" --output-on-failure
echo "sanitizers: clean"
