#!/usr/bin/env bash
# The C++ and distribution checks of CI, run after the Python tests in the CI virtual environment:
#  1. the CMake package: configure, build, ctest, install to a temporary prefix;
#  2. the example consumer (examples/cpp) against that prefix - find_package(yarn_ext) alone;
#  3. a wheel (pip wheel --no-build-isolation), installed into a fresh virtual environment that
#     holds only torch, and smoke-tested there (.ci/wheel_smoke.py);
#  4. the example consumer again, against the wheel's yarn_ext.cmake_prefix_path.
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

echo "== example consumer against the installed package"
cmake -S examples/cpp -B "$work/example" -G Ninja -DCMAKE_PREFIX_PATH="$work/prefix"
cmake --build "$work/example"
ctest --test-dir "$work/example" --output-on-failure -V

echo "== wheel"
unset TORCH_CUDA_ARCH_LIST
python -m pip wheel --no-build-isolation --no-deps . -w "$work/dist"
python3 -m venv "$work/wheel-venv"
"$work/wheel-venv/bin/python" -m pip install --quiet "torch==$torch_version"
"$work/wheel-venv/bin/python" -m pip install --quiet --no-deps "$work"/dist/yarn_ext-*.whl
# Run from outside the checkout, so that the installed wheel is imported, not the source tree.
(cd "$work" && "$work/wheel-venv/bin/python" "$repo/.ci/wheel_smoke.py")

echo "== example consumer against the wheel"
wheel_prefix="$(cd "$work" && "$work/wheel-venv/bin/python" -c 'import yarn_ext; print(yarn_ext.cmake_prefix_path)')"
cmake -S examples/cpp -B "$work/example-wheel" -G Ninja -DCMAKE_PREFIX_PATH="$wheel_prefix"
cmake --build "$work/example-wheel"
ctest --test-dir "$work/example-wheel" --output-on-failure -V
