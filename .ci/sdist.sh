#!/usr/bin/env bash
# The source distribution: built as a release would build it (python -m build --sdist; without
# isolation, which would fetch a newer torch than the one installed), checked for what a build
# needs and for nothing a build writes, then turned into a wheel by pip from the archive itself
# (pip unpacks it into a clean directory of its own) and installed and run in the wheel test
# environment. CPU kernels only: the CUDA build of the same sources is the main wheel's.
set -euo pipefail
work="$(realpath "${1:?usage: sdist.sh WORK_DIR VENV}")"
venv="$(realpath "${2:?usage: sdist.sh WORK_DIR VENV}")"
cd "$(dirname "$0")/.."

python -m build --sdist --no-isolation --skip-dependency-check -o "$work/sdist" . >"$work/sdist.log" 2>&1 ||
  { tail -30 "$work/sdist.log"; exit 1; }
sdist="$(ls "$work"/sdist/yarn_ext-*.tar.gz)"
echo "sdist: $(basename "$sdist")"
members="$(tar tzf "$sdist" | sed 's|^[^/]*/||')"
for needed in setup.py pyproject.toml CMakeLists.txt LICENSE csrc/library.json csrc/exports.map \
  cmake/yarn_extConfig.cmake.in csrc/include/yarn_ext/version.h.in \
  csrc/cpu/vectorized/kernels.cpp csrc/cuda/rotate_kernel.cu csrc/include/yarn_ext/yarn_ext.h; do
  grep -qx "$needed" <<<"$members" || { echo "the sdist lacks $needed"; exit 1; }
done
if grep -E '\.(so|o)$|_build_info\.py$|^build/|^tests/native/' <<<"$members"; then
  echo "the sdist holds files a build wrote"
  exit 1
fi
# Every source file library.json names is in it.
python - "$sdist" <<'PY'
import json, sys, tarfile
with tarfile.open(sys.argv[1]) as tar:
    names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
library = json.load(open("csrc/library.json"))
wanted = [p for key, value in library.items() if key.endswith("sources") for p in value]
missing = [p for p in wanted if p not in names]
assert not missing, f"the sdist lacks {missing}"
print(f"sdist: all {len(wanted)} sources of csrc/library.json are in it")
PY

YARN_EXT_CPU_ONLY=1 python -m pip wheel --no-build-isolation --no-deps "$sdist" \
  -w "$work/sdist-wheel" >"$work/sdist-wheel.log" 2>&1 || { tail -30 "$work/sdist-wheel.log"; exit 1; }
wheel="$(ls "$work"/sdist-wheel/yarn_ext-*.whl)"
echo "wheel from the sdist: $(basename "$wheel")"
"$venv/bin/python" -m pip install --quiet --no-deps --force-reinstall "$wheel"
(cd "$work" && "$venv/bin/python" -m yarn_ext)
