#!/usr/bin/env bash
# One wheel, every torch: the wheel CI built (against torch 2.14.1) is installed, as it is, into
# fresh virtual environments with other torch releases, and in each:
#   - the matrix subset of the tests runs against the installed wheel (docs/testing.md): every
#     operator, the module, autograd, compile and the validation parity - every test that needs
#     neither a GPU nor the test hooks of an editable build (pytest -m "not hooks and not cuda"
#     over MATRIX_TESTS);
#   - the self-check (python -m yarn_ext);
#   - the C++ example builds and runs against that environment's LibTorch.
# Environments: torch 2.14.1 (the build's, CUDA 13.0), 2.13.0+cpu (a CPU-only torch: the CPU
# kernels alone) and 2.10.0, the declared minimum. The registry's 2.10.0 is a CUDA 12.8 build:
# there the wheel must refuse to import with a message naming both CUDA versions, and with
# YARN_EXT_CPU_ONLY=1 it runs its CPU kernels, which is what the subset then tests.
#
#   .ci/wheel_matrix.sh WORK_DIR WHEEL
set -euo pipefail
work="$(realpath "${1:?usage: wheel_matrix.sh WORK_DIR WHEEL}")"
wheel="$(realpath "${2:?usage: wheel_matrix.sh WORK_DIR WHEEL}")"
cd "$(dirname "$0")/.."
repo="$PWD"
MATRIX_TESTS=(test_rotate.py test_module.py test_autograd.py test_compile.py test_opcheck.py test_mrope.py
  test_meta.py test_errors.py test_validation_parity.py test_module_parity.py test_helpers.py
  test_accuracy.py test_aliasing.py test_meta_init.py test_rotate_store_kv.py)

# The tests, copied out of the checkout, so that the installed wheel is what they import.
tests="$work/matrix-tests"
rm -rf "$tests"
mkdir -p "$tests"
cp -r tests "$tests/tests"
rm -rf "$tests/tests/native"
cp pyproject.toml "$tests/"

run_env() {
  local name="$1" torch_spec="$2" cpu_only="$3"
  local venv="$work/matrix-$name"
  echo "== torch $torch_spec"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet "$torch_spec" pytest numpy
  "$venv/bin/python" -m pip install --quiet --no-deps "$wheel"
  if [[ "$cpu_only" == 1 ]]; then
    # Without the switch the wheel must refuse this torch, naming both CUDA versions.
    if (cd "$work" && "$venv/bin/python" -c "import yarn_ext") 2>"$work/refusal-$name.txt"; then
      echo "the wheel imported under a torch of another CUDA major"
      exit 1
    fi
    grep -q "CUDA 13" "$work/refusal-$name.txt" && grep -q "CUDA 12" "$work/refusal-$name.txt" ||
      { cat "$work/refusal-$name.txt"; echo "the refusal does not name both CUDA versions"; exit 1; }
    echo "refused without YARN_EXT_CPU_ONLY, as it should: $(tail -1 "$work/refusal-$name.txt")"
    export YARN_EXT_CPU_ONLY=1
  fi
  (cd "$tests" && "$venv/bin/python" -m pytest -q -p no:cacheprovider -m "not hooks and not cuda" \
    "${MATRIX_TESTS[@]/#/tests/}" | tail -3)
  (cd "$work" && "$venv/bin/python" -m yarn_ext | tail -2)
  local prefix torch_prefix
  prefix="$(cd "$work" && "$venv/bin/python" -c 'import yarn_ext; print(yarn_ext.cmake_prefix_path)')"
  torch_prefix="$("$venv/bin/python" -c 'import torch; print(torch.utils.cmake_prefix_path)')"
  cmake -S "$repo/examples/cpp" -B "$work/example-$name" -G Ninja \
    -DCMAKE_PREFIX_PATH="$prefix;$torch_prefix" -DYARN_EXT_CPU_ONLY="$cpu_only" \
    >"$work/example-$name.log" 2>&1 ||
    { tail -30 "$work/example-$name.log"; exit 1; }
  cmake --build "$work/example-$name" >>"$work/example-$name.log" 2>&1 ||
    { tail -30 "$work/example-$name.log"; exit 1; }
  ctest --test-dir "$work/example-$name" --output-on-failure | tail -2
  unset YARN_EXT_CPU_ONLY
  rm -rf "$venv" "$work/example-$name"
}

run_env 2.14.1 "torch==2.14.1" 0
run_env 2.13.0-cpu "torch==2.13.0+cpu" 0
run_env 2.10.0 "torch==2.10.0" 1
echo "wheel matrix passed"
