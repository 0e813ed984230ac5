"""What a yarn_ext wheel may hold, checked on the wheel file itself (CI runs it on the wheel it
builds, after auditwheel):

  - every shared library reaches torch through its stable C ABI only: among the undefined dynamic
    symbols (nm -D --undefined-only) there is nothing C++ from libtorch, libc10 or libtorch_cuda -
    only torch's C shim (aoti_torch_*, torch_*), the C and C++ runtimes (versioned glibc,
    libstdc++, libgcc symbols) and the CUDA runtime (libcudart); yarn_ext._C has no torch at all;
  - the libraries export their C entry points only (yarn_ext_*), _C its module init only;
  - libyarn_ext itself needs no CUDA library, so that it loads under a CPU-only torch;
  - no test hook is in it (csrc/testing/: the CUDA emulation, the C++ module's parity hook).

    python .ci/check_wheel.py dist/yarn_ext-*.whl      (or an install prefix of the CMake package)
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

# Undefined symbols a library may have: torch's C shim, and anything versioned by the C/C++ and
# CUDA runtimes (glibc's GLIBC_*, libstdc++'s GLIBCXX_* / CXXABI_*, libgcc's GCC_*,
# libcudart's libcudart.so.*).
SHIM = re.compile(r"^(aoti_torch_|torch_)\w+$")
RUNTIME_VERSION = re.compile(r"@(GLIBC|GLIBCXX|CXXABI|GCC|libcudart\.so)[\w.]*$")
# Weak references every shared object has (transactional memory, profiling, __cxa_finalize).
WEAK_OK = {"_ITM_deregisterTMCloneTable", "_ITM_registerTMCloneTable", "__gmon_start__"}
# The C++ namespaces of libtorch, libc10 and libtorch_cuda, mangled.
TORCH_CXX = re.compile(r"^_Z\w*?(3c10|2at|5torch|5caffe2)")
TEST_HOOKS = re.compile(r"testing|module_hook", re.IGNORECASE)


def dynamic_symbols(path: Path, *flags: str) -> list[tuple[str, str]]:
    out = subprocess.run(
        ["nm", "-D", *flags, str(path)], check=True, capture_output=True, text=True
    ).stdout
    symbols = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2:
            symbols.append((parts[-2], parts[-1]))  # (type, name)
    return symbols


def needed(path: Path) -> list[str]:
    out = subprocess.run(
        ["readelf", "-d", str(path)], check=True, capture_output=True, text=True
    ).stdout
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out)


def check_library(path: Path, name: str) -> list[str]:
    problems = []
    is_python_module = name.startswith("_C")
    for kind, symbol in dynamic_symbols(path, "--undefined-only"):
        if TORCH_CXX.match(symbol):
            problems.append(f"{name}: C++ symbol of torch {symbol}")
        elif kind in ("w", "v") and symbol.split("@")[0] in WEAK_OK | {"__cxa_finalize"}:
            continue
        elif RUNTIME_VERSION.search(symbol):
            continue
        elif SHIM.match(symbol) and not is_python_module:
            continue
        elif is_python_module and symbol.startswith(("Py", "_Py")):
            continue  # the Python C API (unversioned)
        else:
            problems.append(
                f"{name}: undefined symbol {symbol} is neither torch's C shim nor a runtime's"
            )
    exported = {s for kind, s in dynamic_symbols(path, "--defined-only") if kind not in ("U",)}
    allowed = {"PyInit__C"} if is_python_module else None
    for symbol in sorted(exported):
        public = symbol in allowed if allowed is not None else symbol.startswith("yarn_ext_")
        if not public:
            problems.append(f"{name}: exports {symbol}, which is not public API")
    if name.startswith("libyarn_ext.so"):
        cuda = [lib for lib in needed(path) if "cuda" in lib]
        if cuda:
            problems.append(f"{name} needs {cuda}: it must load under a CPU-only torch")
    return problems


LIBRARY = re.compile(r"\.so(\.\d+)*$")


def main(target: str) -> int:
    """`target`: a wheel, or an install prefix of the CMake package."""
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        if Path(target).is_dir():
            names = [str(p.relative_to(target)) for p in Path(target).rglob("*")]
            paths = {n: Path(target) / n for n in names if LIBRARY.search(n)}
        else:
            with zipfile.ZipFile(target) as archive:
                names = archive.namelist()
                paths = {n: Path(archive.extract(n, tmp)) for n in names if LIBRARY.search(n)}
        problems += [f"test hook shipped: {n}" for n in names if TEST_HOOKS.search(n)]
        for name, path in paths.items():
            if not path.is_symlink():
                problems += check_library(path, Path(name).name)
    for problem in problems:
        print("check_wheel:", problem)
    print(f"check_wheel: {target}: {len(paths)} libraries, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
