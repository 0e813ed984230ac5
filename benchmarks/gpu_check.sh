#!/usr/bin/env bash
# The GPU check, for a machine with one NVIDIA GPU: build the extension for that GPU's
# architecture only, run the CUDA tests, run compute-sanitizer memcheck and racecheck over them,
# run the GPU benchmark (python -m benchmarks.run --device cuda). Writes logs and the benchmark's
# results.md, results.json and plots to OUT_DIR; the table is printed last.
# Budget: under 10 minutes in all (each sanitizer pass is capped at 3).
#
#   benchmarks/gpu_check.sh OUT_DIR
set -uo pipefail
out="$(realpath -m "${1:?usage: benchmarks/gpu_check.sh OUT_DIR}")"
mkdir -p "$out"
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
python="${PYTHON:-python3}"
status=0
step() { echo; echo "== $*"; }

step "device"
$python -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else "gpu_check.sh: no CUDA device")' || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
arch="$($python -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())')"
export TORCH_CUDA_ARCH_LIST="$arch" FORCE_CUDA=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}"

step "build for compute capability $arch only"
start=$SECONDS
$python setup.py build_ext --inplace >"$out/build.log" 2>&1 || { tail -30 "$out/build.log"; exit 1; }
grep -iE "warning" "$out/build.log" | head -20
echo "built in $((SECONDS - start)) s"
$python -m yarn_ext --device cuda | tee "$out/selfcheck.log" || status=1

step "CUDA tests (every test marked cuda: test_cuda.py and the CUDA cases of the others)"
$python -m pytest -q -p no:cacheprovider -m cuda tests 2>&1 | tee "$out/tests.log" | tail -15 || status=1

step "CPU kernels of this host's instruction set against the DEFAULT copy (AVX512 where it has it)"
$python -m pytest -q -p no:cacheprovider tests/test_cpu_kernels.py 2>&1 | tail -3 || status=1

# compute-sanitizer over the CUDA tests (all but the slow ones). memcheck: out-of-bounds and
# misaligned accesses, errors of CUDA calls; with torch's caching allocator off, so that every
# tensor is an allocation of its own and an access past its end is out of bounds (inside a
# pooled block it would go unseen). racecheck: shared-memory hazards - the kernels use no shared
# memory today, so it guards the future. Each pass has a time limit so that the check keeps to
# its budget; running out of it counts as a failure.
sanitizer="$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)"
for tool in memcheck racecheck; do
  step "compute-sanitizer $tool over the CUDA tests"
  PYTORCH_NO_CUDA_MEMORY_CACHING=1 timeout -k 10 180 "$sanitizer" --tool "$tool" --error-exitcode 1 \
    $python -m pytest -q -p no:cacheprovider -m "cuda and not slow" tests/test_cuda.py \
    >"$out/$tool.log" 2>&1 || { echo "$tool: FAILED or timed out"; status=1; }
  grep -E "ERROR SUMMARY|RACECHECK SUMMARY|passed|failed" "$out/$tool.log" | tail -3
done

step "benchmark"
$python -m benchmarks.run --device cuda --out "$out" 2>&1 | tee "$out/benchmark.log" || status=1
exit $status
