#!/usr/bin/env bash
# The GPU check, for a machine with one NVIDIA GPU, in stages that each keep to a time budget.
# A lent GPU gives at most 10 minutes per command and 15 in all, start-up included: run the
# headline stage first, in one command, then as many of the others as the time left allows,
# one command each (they need the headline stage's build: same checkout, same machine).
#
#   headline  (default; 300 s) in order of importance: build for this GPU's architecture only;
#             the smoke test; the headline benchmark - the fast and the generic path against a
#             same-run device-to-device copy (and FlashInfer where installed) at 1, 16, 1024,
#             16384 and 131072 tokens, bf16, written to OUT_DIR/headline/results.md - then the
#             other CUDA tests (but the slow, torch.compile and hypothesis ones), the
#             self-check, and the CPU kernels' instruction-set test.
#   compile   (420 s) the torch.compile CUDA tests and the benchmark with torch.compile
#             (a fresh compilation per size and dtype)
#   slow      (300 s) the slow CUDA tests (a >2^31-element tensor) and the hypothesis tests
#   sanitize  (300 s) compute-sanitizer memcheck over a short subset, racecheck over the smoke
#             test
#   all       every stage, in that order (1320 s: more than a lent GPU gives in one session;
#             for a machine of one's own)
#
#   benchmarks/gpu_check.sh OUT_DIR [STAGE...]
#
# Each stage prints its budget; a step that would run past it is stopped (timeout) and the
# stage reports what it skipped. Logs and tables go to OUT_DIR; the exit status is non-zero if
# anything failed or was cut short.
set -uo pipefail
out="$(realpath -m "${1:?usage: benchmarks/gpu_check.sh OUT_DIR [headline|compile|slow|sanitize|all]...}")"
shift
stages=("$@")
[[ ${#stages[@]} -eq 0 ]] && stages=(headline)
[[ " ${stages[*]} " == *" all "* ]] && stages=(headline compile slow sanitize)
mkdir -p "$out"
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
python="${PYTHON:-python3}"
status=0

declare -A budgets=([headline]=300 [compile]=420 [slow]=300 [sanitize]=300)
stage_start=0
stage_budget=0
stage_name=""

begin_stage() {
  stage_name="$1"
  stage_budget="${budgets[$1]}"
  stage_start=$SECONDS
  echo
  echo "#### stage $stage_name: budget ${stage_budget} s"
}

end_stage() {
  echo "#### stage $stage_name: used $((SECONDS - stage_start)) of ${stage_budget} s"
}

# step NAME LOG COMMAND...: runs the command within what is left of the stage's budget, output
# to OUT_DIR/LOG (and its tail to the terminal).
step() {
  local name="$1" log="$2"
  shift 2
  local left=$((stage_budget - (SECONDS - stage_start)))
  echo
  echo "== $name (${left} s left in stage $stage_name)"
  if ((left <= 5)); then
    echo "SKIPPED: the stage's budget is spent"
    status=1
    return 1
  fi
  local start=$SECONDS
  timeout -k 10 "$left" "$@" >"$out/$log" 2>&1
  local rc=$?
  tail -n 25 "$out/$log"
  if ((rc == 124 || rc == 137)); then
    echo "STOPPED at the stage's budget after $((SECONDS - start)) s"
    status=1
  elif ((rc != 0)); then
    echo "FAILED (exit $rc) after $((SECONDS - start)) s"
    status=1
  else
    echo "ok in $((SECONDS - start)) s"
  fi
  return $rc
}

# compute-sanitizer TOOL over the short subset; reads the tool's summary line.
sanitize() {
  local tool="$1" filter="$2"
  local sanitizer
  sanitizer="$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)"
  # memcheck with torch's caching allocator off: every tensor is an allocation of its own, so
  # an access past its end is out of bounds (inside a pooled block it would go unseen).
  # --report-api-errors no: torch itself makes CUDA API calls that fail on purpose (probing).
  step "compute-sanitizer $tool" "$tool.log" \
    env PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$sanitizer" --tool "$tool" --report-api-errors no \
    $python -m pytest -q -p no:cacheprovider -m "cuda and not slow" tests/test_cuda.py -k "$filter"
  local summary
  summary="$(grep -E "(ERROR|RACECHECK) SUMMARY" "$out/$tool.log" | tail -1)"
  echo "$tool summary: ${summary:-none printed}"
  if [[ -z "$summary" || ! "$summary" =~ :\ 0\  ]]; then
    echo "$tool: FAILED (the summary reports problems or is missing)"
    status=1
  fi
}

headline() {
  begin_stage headline
  $python -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else "gpu_check.sh: no CUDA device")' || exit 1
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
  arch="$($python -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())')"
  export TORCH_CUDA_ARCH_LIST="$arch" FORCE_CUDA=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}"
  step "build for compute capability $arch only" build.log \
    $python setup.py build_ext --inplace || { end_stage; return; }
  step "smoke test" smoke.log $python -m pytest -q -p no:cacheprovider -m cuda tests/test_cuda.py \
    -k "smoke or bits_equal" || { end_stage; return; }
  step "headline benchmark: fast and generic path against the copy" benchmark.log \
    $python -m benchmarks.run --device cuda --no-compile --dtypes bfloat16 \
    --tokens 1 16 1024 16384 131072 --out "$out/headline"
  # the other CUDA tests: all but the slow ones (stage slow), test_compile (stage compile) and
  # the hypothesis tests (stage slow). Only the files with CUDA cases are collected: the others
  # may import packages that a bare GPU machine lacks, or has in other versions.
  mapfile -t cuda_files < <(grep -l -E "requires_cuda|DEVICES" tests/test_*.py |
    grep -v -E "test_compile.py|test_properties.py")
  step "CUDA tests" tests.log $python -m pytest -q -p no:cacheprovider -m "cuda and not slow" \
    "${cuda_files[@]}"
  step "self-check" selfcheck.log $python -m yarn_ext --device cuda
  step "CPU kernels of this host's instruction sets against the DEFAULT copy" cpu_kernels.log \
    $python -m pytest -q -p no:cacheprovider tests/test_cpu_kernels.py
  end_stage
}

compile_stage() {
  begin_stage compile
  step "torch.compile CUDA tests" compile_tests.log \
    $python -m pytest -q -p no:cacheprovider -m cuda tests/test_compile.py
  step "benchmark with torch.compile" compile_benchmark.log \
    $python -m benchmarks.run --device cuda --dtypes bfloat16 float16 --out "$out/compile"
  end_stage
}

slow_stage() {
  begin_stage slow
  step "slow CUDA tests" slow_tests.log \
    $python -m pytest -q -p no:cacheprovider -m "cuda and slow" tests/test_cuda.py
  if $python -c 'import hypothesis' 2>/dev/null; then
    step "hypothesis on CUDA" properties.log \
      $python -m pytest -q -p no:cacheprovider -m cuda tests/test_properties.py
  else
    echo "NOT RUN: hypothesis on CUDA (hypothesis is not installed: pip install hypothesis)"
    status=1
  fi
  end_stage
}

sanitize_stage() {
  begin_stage sanitize
  sanitize memcheck "smoke or bits_equal"
  sanitize racecheck "smoke"
  end_stage
}

for stage in "${stages[@]}"; do
  case "$stage" in
    headline) headline ;;
    compile) compile_stage ;;
    slow) slow_stage ;;
    sanitize) sanitize_stage ;;
    *)
      echo "gpu_check.sh: unknown stage $stage (headline, compile, slow, sanitize, all)"
      exit 2
      ;;
  esac
done
echo
[[ -f "$out/headline/results.md" ]] &&
  sed -n '/^## In-place q+k rotation/,/^## Cache construction/p' "$out/headline/results.md"
exit $status
