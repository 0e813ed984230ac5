"""Build script for yarn_ext: the operator libraries libyarn_ext (schemas and CPU kernels) and
libyarn_ext_cuda (CUDA kernels), both on PyTorch's stable ABI and built with
torch.utils.cpp_extension; the Python module yarn_ext._C (pybind11 bindings of the helpers, no
torch); and, inside the package, the C++ API's headers and the CMake package that C++ programs
find through yarn_ext.cmake_prefix_path. Built once, the package loads into every torch from 2.10
on.

What the libraries are - sources, flags, public headers - is csrc/library.json, which
CMakeLists.txt (C++ builds from source) reads too; the CMake package files come from the same
templates (cmake/*.in, csrc/include/yarn_ext/version.h.in) in both builds.

Build without build isolation (the build needs torch's headers and nvcc's match for CUDA):

    pip install --no-build-isolation .

An editable or in-place build also builds the test hooks (tests/native/: the CUDA emulation and the
C++ module's parity hook), which are never part of the wheel or the CMake package.

CUDA kernels (csrc/cuda/*.cu) are compiled whenever torch is a CUDA build and the CUDA toolkit is
found - a GPU on the build machine is not needed. Environment switches:

    FORCE_CUDA=1            build the CUDA kernels or fail
    YARN_EXT_CPU_ONLY=1     never build them
    TORCH_CUDA_ARCH_LIST    target architectures (default: csrc/library.json)
    CUDA_HOME / CUDA_PATH   the toolkit (else /usr/local/cuda, else torch's guess)
    MAX_JOBS                parallel compile jobs
    YARN_EXT_DEBUG=1        -O0 -g
    YARN_EXT_SANITIZE=address,undefined
                            instrument the host code with these sanitizers (for testing:
                            .ci/sanitizers.sh runs the tests against such a build)
"""

from __future__ import annotations

import json
import os
import re
import sys
import sysconfig
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pybind11
from setuptools import Distribution, Extension, find_packages, setup

ROOT = Path(__file__).resolve().parent
CSRC = ROOT / "csrc"
# Where editable builds put the test hooks (never packaged).
TEST_HOOKS = ROOT / "tests" / "native"
LIBRARY = json.loads((CSRC / "library.json").read_text())
DEBUG = os.environ.get("YARN_EXT_DEBUG", "0") == "1"
# Sanitizers for the host code (empty: none); see .ci/sanitizers.sh.
SANITIZE = os.environ.get("YARN_EXT_SANITIZE", "")
# Where the package keeps the C++ parts (the layout of a CMake install under the package).
LIB_DIR, INCLUDE_DIR, CMAKE_DIR = "lib", "include", "share/cmake/yarn_ext"


def find_cuda_home() -> str | None:
    """The toolkit root. torch guesses it from the nvcc on PATH, which is wrong when that nvcc is
    a wrapper script (the link then fails with `cannot find -lcudart`), so look at the
    environment and the standard location first."""
    for candidate in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if candidate and (Path(candidate) / "bin" / "nvcc").exists():
            return candidate
    return None


_cuda_home = find_cuda_home()
if _cuda_home is not None:
    # torch.utils.cpp_extension reads CUDA_HOME when it is imported.
    os.environ["CUDA_HOME"] = _cuda_home
# cpp_extension reads the architectures from the environment when it compiles.
os.environ.setdefault("TORCH_CUDA_ARCH_LIST", LIBRARY["cuda_architectures"])

import torch  # noqa: E402
from torch.utils import cpp_extension  # noqa: E402


def read_version() -> str:
    text = (ROOT / "yarn_ext" / "_version.py").read_text()
    match = re.search(r'__version__ = "([^"]+)"', text)
    if match is None:
        raise RuntimeError("yarn_ext/_version.py does not define __version__")
    return match.group(1)


VERSION = read_version()


def release(version: str) -> tuple[str, str, str]:
    """MAJOR, MINOR, PATCH: the leading X.Y.Z, as CMakeLists.txt reads the version (and as torch's
    CMake config gives Torch_VERSION), for the files both builds write."""
    match = re.match(r"(\d+)\.(\d+)\.(\d+)", version)
    if match is None:
        raise RuntimeError(f"version {version!r} does not start with MAJOR.MINOR.PATCH")
    return match.group(1), match.group(2), match.group(3)


def want_cuda() -> bool:
    if os.environ.get("YARN_EXT_CPU_ONLY", "0") == "1":
        print("yarn_ext: YARN_EXT_CPU_ONLY=1, building the CPU kernels only")
        return False
    have_toolkit = cpp_extension.CUDA_HOME is not None
    if os.environ.get("FORCE_CUDA", "0") == "1":
        if torch.version.cuda is None or not have_toolkit:
            raise RuntimeError(
                "FORCE_CUDA=1 needs a CUDA build of torch and the CUDA toolkit "
                f"(torch.version.cuda={torch.version.cuda}, CUDA_HOME={cpp_extension.CUDA_HOME})"
            )
        return True
    if torch.version.cuda is None:
        print("yarn_ext: torch is a CPU build, building the CPU kernels only")
        return False
    if not have_toolkit:
        print("yarn_ext: no CUDA toolkit found (set CUDA_HOME), building the CPU kernels only")
        return False
    return True


CUDA = want_cuda()


def local_version(cuda: bool) -> str:
    """The variant a build is, as a local version label the way torch labels its own builds
    (2.14.1+cu130): cuXYZ for the CUDA release of the torch the CUDA kernels were built against,
    cpu without them. YARN_EXT_LOCAL_VERSION replaces it; set empty, it drops the label (a package
    index such as PyPI takes no local versions).

    Source distributions have no variant, and a build from one keeps the sdist's version unless
    YARN_EXT_LOCAL_VERSION is set: pip refuses what it builds from yarn_ext-0.1.0.tar.gz found on
    an index or through --find-links if it is not 0.1.0, label included."""
    label = os.environ.get("YARN_EXT_LOCAL_VERSION")
    if label is None:
        from_sdist = "sdist" in sys.argv[1:] or (ROOT / "PKG-INFO").exists()
        if from_sdist:
            label = ""
        else:
            label = "cu" + "".join(torch.version.cuda.split(".")[:2]) if cuda else "cpu"
    if label and not re.fullmatch(r"[a-z0-9]+(\.[a-z0-9]+)*", label):
        raise RuntimeError(f"YARN_EXT_LOCAL_VERSION={label!r} is not a local version label")
    return label


LOCAL_VERSION = local_version(CUDA)
FULL_VERSION = f"{VERSION}+{LOCAL_VERSION}" if LOCAL_VERSION else VERSION
if CUDA:
    print(
        f"yarn_ext: CPU and CUDA kernels, {cpp_extension.CUDA_HOME}/bin/nvcc for "
        f"TORCH_CUDA_ARCH_LIST={os.environ['TORCH_CUDA_ARCH_LIST']}"
    )


# -- what the libraries are: csrc/library.json ------------------------------------------------


def paths(key: str) -> list[str]:
    """Paths of library.json, relative to this directory (setuptools refuses absolute sources)."""
    return list(LIBRARY[key])


def include_dirs() -> list[str]:
    return [str(ROOT / p) for p in LIBRARY["include_dirs"]]


def sanitizer_flags() -> list[str]:
    if not SANITIZE:
        return []
    flags = [f"-fsanitize={SANITIZE}", *LIBRARY["sanitizer_flags"]]
    return flags + ([] if DEBUG else LIBRARY["sanitizer_release_flags"])


def cxx_flags() -> list[str]:
    """The flags of every host unit (after Python's own, which the compiler starts from: -g0
    drops their debug information from a release build)."""
    mode = LIBRARY["debug_flags"] if DEBUG else [*LIBRARY["cxx_release_flags"], "-g0"]
    return [f"-std=c++{LIBRARY['cxx_standard']}", *LIBRARY["cxx_flags"], *mode, *sanitizer_flags()]


def isa_copies() -> list[dict[str, object]]:
    """The instruction-set copies of the CPU kernels' loops this machine's compiler makes."""
    x86 = os.uname().machine in ("x86_64", "AMD64", "amd64")
    return [copy for copy in LIBRARY["isa_copies"] if x86 or not copy["x86_64_only"]]


STABLE_ABI = [f"-DTORCH_TARGET_VERSION={LIBRARY['torch_target_version']}"]


def link_flags(soname: str) -> list[str]:
    """Only the yarn_ext_* entry points exported; torch's libraries found from the package layout
    (site-packages/yarn_ext/lib -> site-packages/torch/lib)."""
    return [
        f"-Wl,--version-script={ROOT / LIBRARY['exports_map']}",
        f"-Wl,-soname,{soname}",
        f"-Wl,-rpath,{LIBRARY['package_rpath']}",
        *([f"-fsanitize={SANITIZE}"] if SANITIZE else []),
    ]


# Extensions that are plain shared libraries (lib<name>.so, no Python ABI tag): the operator
# libraries, loaded with torch.ops.load_library and linked by C++ programs.
PLAIN_LIBRARIES: set[str] = set()


def operator_library(name: str, *, cuda: bool, sources: list[str]) -> Extension:
    """libyarn_ext or libyarn_ext_cuda, compiled by cpp_extension on the stable ABI. Like
    torchvision's _C_stable and FlashAttention 3: py_limited_api (no libtorch_python), and only
    the libraries that hold the C shim - not torch's C++ libraries, which cpp_extension would
    link by default."""
    factory = cpp_extension.CUDAExtension if cuda else cpp_extension.CppExtension
    compile_args: dict[str, list[str]] = {"cxx": cxx_flags() + STABLE_ABI}
    if cuda:
        mode = LIBRARY["debug_flags"] if DEBUG else LIBRARY["cuda_release_flags"]
        defines = [f"-D{d}" for d in LIBRARY["cuda_definitions"]]
        standard = f"-std=c++{LIBRARY['cxx_standard']}"
        compile_args["nvcc"] = [standard, *LIBRARY["cuda_flags"], *mode, *STABLE_ABI, *defines]
    ext = factory(
        name=f"yarn_ext.lib.{name}",
        sources=sources,
        include_dirs=include_dirs(),
        extra_compile_args=compile_args,
        extra_link_args=link_flags(f"{name}.so"),
        py_limited_api=True,
    )
    ext.libraries = ["torch_cpu"] + (["torch_cuda", "cudart"] if cuda else [])
    PLAIN_LIBRARIES.add(ext.name)
    return ext


def helper_module() -> Extension:
    """yarn_ext._C: pybind11 bindings of the helpers; no torch, so one build serves every torch."""
    # (-fno-wrapv: see library.json's notes; the sanitizers' flags last, after -O3.)
    compile_args = ["-std=c++17", "-fvisibility=hidden", "-fno-wrapv"]
    compile_args += LIBRARY["debug_flags"] if DEBUG else ["-O3", "-g0"]
    compile_args += sanitizer_flags()
    link_args = [f"-Wl,--version-script={CSRC / 'python' / 'exports.map'}"]
    if SANITIZE:
        link_args.append(f"-fsanitize={SANITIZE}")
    return Extension(
        name="yarn_ext._C",
        sources=["csrc/python/bindings.cpp"],
        include_dirs=[str(CSRC / "include"), pybind11.get_include()],
        extra_compile_args=compile_args,
        extra_link_args=link_args,
        language="c++",
    )


# -- the package's C++ files: headers and the CMake package ---------------------------------------


def configure_file(template: Path, target: Path, values: dict[str, str]) -> None:
    """CMake's configure_file(... @ONLY): @NAME@ replaced by values[NAME]; an unknown name is an
    error, so that the templates and this script cannot drift apart silently."""

    def value(match: re.Match[str]) -> str:
        if match.group(1) not in values:
            raise KeyError(f"{template}: no value for @{match.group(1)}@")
        return values[match.group(1)]

    write_if_changed(target, re.sub(r"@(\w+)@", value, template.read_text()))


def write_if_changed(target: Path, text: str) -> None:
    """Writes `text` unless `target` holds it already: an unchanged file keeps its time, so that
    what is compiled against it (the test hooks include version.h) is not rebuilt."""
    if target.exists() and target.read_text() == text:
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)


def write_package_files(package_dir: Path, cuda: bool) -> None:
    """What CMakeLists.txt's install writes, for the same libraries: the public headers,
    version.h and the CMake package (found through yarn_ext.cmake_prefix_path), and the record
    the package checks at import (_build_info.py)."""
    include = package_dir / INCLUDE_DIR
    headers = {
        include / header.relative_to(CSRC / "include"): header
        for pattern in LIBRARY["public_headers"]
        for header in sorted((CSRC / "include").glob(pattern))
    }
    # Unchanged files are left alone (a rebuild of an unchanged tree compiles nothing); files
    # no longer shipped go.
    version_h = include / "yarn_ext" / "version.h"
    for old in include.rglob("*") if include.exists() else []:
        if old.is_file() and old not in headers and old != version_h:
            old.unlink()
    for target, header in headers.items():
        write_if_changed(target, header.read_text())
    major, minor, patch = release(VERSION)
    values = {
        "PROJECT_VERSION": f"{major}.{minor}.{patch}",
        "PROJECT_VERSION_MAJOR": major,
        "PROJECT_VERSION_MINOR": minor,
        "PROJECT_VERSION_PATCH": patch,
        "YARN_EXT_TORCH_VERSION": ".".join(release(torch.__version__)),
        "YARN_EXT_MINIMUM_TORCH": LIBRARY["minimum_torch"],
        "YARN_EXT_CXX_STANDARD": str(LIBRARY["cxx_standard"]),
        "YARN_EXT_CUDA_LIBRARY": "1" if cuda else "0",
        "YARN_EXT_CMAKE_DIR": CMAKE_DIR,
        "YARN_EXT_CMAKE_DIR_TO_PREFIX": "/".join([".."] * len(CMAKE_DIR.split("/"))),
        "YARN_EXT_LIBDIR": LIB_DIR,
        "YARN_EXT_INCLUDEDIR": INCLUDE_DIR,
        "YARN_EXT_LIBRARY_FILE": "libyarn_ext.so",
        "YARN_EXT_LIBRARY_SONAME": "libyarn_ext.so",
        "YARN_EXT_CUDA_LIBRARY_FILE": "libyarn_ext_cuda.so",
        "YARN_EXT_CUDA_LIBRARY_SONAME": "libyarn_ext_cuda.so",
        "YARN_EXT_BUILD_TORCH_DIR": str(Path(torch.utils.cmake_prefix_path) / "Torch"),
        "YARN_EXT_BUILD_CUDA_ROOT": cpp_extension.CUDA_HOME or "",
    }
    configure_file(CSRC / "include" / "yarn_ext" / "version.h.in", version_h, values)
    for name in ("yarn_extConfig", "yarn_extConfigVersion", "yarn_extTargets"):
        configure_file(
            ROOT / "cmake" / f"{name}.cmake.in", package_dir / CMAKE_DIR / f"{name}.cmake", values
        )
    (package_dir / "_build_info.py").write_text(
        f'"""Written by setup.py at build time."""\n\nVERSION = "{FULL_VERSION}"\n'
        f'TORCH_VERSION = "{torch.__version__}"\n'
        f"TORCH_CUDA = {torch.version.cuda!r}  # torch.version.cuda of the build's torch\n"
        f"CUDA_KERNELS = {cuda}\n"
        f'MINIMUM_TORCH = "{LIBRARY["minimum_torch"]}"  # csrc/library.json\n'
    )


# -- the build ------------------------------------------------------------------------------------


class BuildExtension(cpp_extension.BuildExtension):
    """cpp_extension's build, with the instruction-set copies of the CPU kernels compiled first
    (they need flags of their own and no TORCH_TARGET_VERSION) and linked into libyarn_ext, and
    the package's C++ files written next to the libraries."""

    def get_ext_filename(self, fullname: str) -> str:
        # (setuptools asks with the full name or, for the output path, with its last part.)
        if any(fullname in (name, name.split(".")[-1]) for name in PLAIN_LIBRARIES):
            return os.path.join(*fullname.split(".")) + ".so"
        return super().get_ext_filename(fullname)

    def build_extensions(self) -> None:
        # Python's link command carries an rpath to Python's own library directory, which a
        # wheel must not: the libraries find what they need from the package layout.
        for attr in ("linker_so", "linker_so_cxx"):
            command = getattr(self.compiler, attr, None)
            if command:
                setattr(self.compiler, attr, [a for a in command if not a.startswith("-Wl,-rpath")])
        for ext in self.extensions:
            if ext.name in PLAIN_LIBRARIES and self.in_place:
                # Also where this torch is: C++ programs built against a source checkout then run
                # without LD_LIBRARY_PATH (a wheel has the package layout's rpath alone).
                ext.extra_link_args.append(f"-Wl,-rpath,{cpp_extension.TORCH_LIB_PATH}")
            if ext.name == "yarn_ext.lib.libyarn_ext":
                ext.extra_objects = self.compile_isa_copies()
                ext.extra_compile_args["cxx"] += [
                    f"-DYARN_EXT_CPU_{c['name']}" for c in isa_copies()
                ]
        super().build_extensions()

    def build_extension(self, ext: Extension) -> None:
        # Each library compiles its objects in a folder of its own: they share the host sources,
        # with flags of their own.
        base = self.build_temp
        self.build_temp = os.path.join(base, ext.name)
        try:
            super().build_extension(ext)
        finally:
            self.build_temp = base

    def compile_isa_copies(self) -> list[str]:
        """csrc/cpu/vectorized/kernels.cpp once per instruction set, in parallel, with this
        build's compiler (Python's flags, then library.json's). A copy is compiled again only
        when its flags or a file it includes changed (the compiler's dependency file says which),
        as ninja decides for the other objects."""
        includes = include_dirs() + cpp_extension.include_paths()
        common = cxx_flags() + LIBRARY["isa_flags"]

        def compile_copy(copy: dict[str, object]) -> list[str]:
            name = str(copy["name"])
            output_dir = Path(self.build_temp) / "isa" / name
            (obj,) = self.compiler.object_filenames([LIBRARY["isa_source"]], output_dir=output_dir)
            macros = [("CPU_CAPABILITY", name), (f"CPU_CAPABILITY_{name}", None)]
            flags = [*common, *copy["flags"]]  # type: ignore[misc]
            command = json.dumps([self.compiler.compiler_so, macros, includes, flags])
            record, depfile = Path(obj + ".cmd"), Path(obj + ".d")
            if up_to_date(Path(obj), depfile, record, command):
                return [obj]
            objects = self.compiler.compile(
                [LIBRARY["isa_source"]],
                output_dir=str(output_dir),
                macros=macros,  # type: ignore[arg-type]
                include_dirs=includes,
                extra_postargs=[*flags, "-MMD", "-MF", str(depfile)],
            )
            record.write_text(command)
            return objects

        with ThreadPoolExecutor(
            max_workers=int(os.environ.get("MAX_JOBS") or os.cpu_count() or 1)
        ) as pool:
            return [obj for objects in pool.map(compile_copy, isa_copies()) for obj in objects]

    in_place = False  # an in-place or editable build (setuptools clears inplace while it builds)

    def run(self) -> None:
        self.in_place = bool(self.inplace or getattr(self, "editable_mode", False))
        # Incremental builds: the objects stay in build/, where other builds keep them (an
        # editable install would build in a fresh temporary folder each time), and ninja decides
        # what to compile again from each object's flags and included files. force: setuptools'
        # own test (a library older than its listed sources) misses headers, so it never skips a
        # library; linking is cheap.
        if getattr(self, "editable_mode", False):
            self.build_temp = str(BUILD_TEMP)
        self.force = True
        if self.in_place:
            # setuptools copies the libraries into the source tree, but does not make yarn_ext/lib
            # (ignored by git, so missing from a fresh clone).
            Path(self.get_ext_fullpath("yarn_ext.lib.libyarn_ext")).parent.mkdir(exist_ok=True)
        super().run()
        package_dir = Path(self.get_ext_fullpath("yarn_ext._C")).resolve().parent
        write_package_files(package_dir, CUDA)
        if self.in_place:
            build_test_hooks(package_dir, Path(self.build_temp).resolve() / "test_hooks")


def up_to_date(obj: Path, depfile: Path, record: Path, command: str) -> bool:
    """Whether `obj` was compiled by `command` (as `record` holds it) from files none of which
    changed since (the make-style dependency file the compiler wrote)."""
    if not (obj.exists() and depfile.exists() and record.exists()):
        return False
    if record.read_text() != command:
        return False
    built = obj.stat().st_mtime
    # "obj: dep dep \\\n dep ...": the dependencies, after the target (paths hold no spaces).
    deps = depfile.read_text().replace("\\\n", " ").split(":", 1)[1].split()
    return all(Path(dep).exists() and Path(dep).stat().st_mtime <= built for dep in deps)


# Where builds keep their objects between runs: setuptools' own place for them.
BUILD_TEMP = ROOT / "build" / f"temp.{sysconfig.get_platform()}-{sys.implementation.cache_tag}"


def build_test_hooks(package_dir: Path, build_temp: Path) -> None:
    """tests/native/: libyarn_ext_testing (the CUDA kernels' host logic emulated on CPU
    tensors) and yarn_ext_module_hook (the header-only C++ module yarn_ext::YarnEmbedding,
    compiled against this torch's LibTorch, driven from Python for the parity test of the two
    modules). For the tests only: built by editable builds, never packaged."""
    emulation = cpp_extension.CppExtension(
        name="libyarn_ext_testing",
        sources=paths("test_hook_sources") + paths("host_sources"),
        include_dirs=include_dirs(),
        extra_compile_args={"cxx": cxx_flags() + STABLE_ABI},
        extra_link_args=link_flags("libyarn_ext_testing.so"),
        py_limited_api=True,
    )
    emulation.libraries = ["torch_cpu"]
    PLAIN_LIBRARIES.add(emulation.name)
    module_hook = cpp_extension.CppExtension(
        name="yarn_ext_module_hook",
        sources=[str(CSRC / "testing" / "module_hook.cpp")],
        include_dirs=[str(package_dir / INCLUDE_DIR)],
        library_dirs=[str(package_dir / LIB_DIR)],
        libraries=["yarn_ext"] + (["yarn_ext_cuda"] if CUDA else []),
        extra_compile_args={"cxx": ["-O1", *sanitizer_flags()]},
        extra_link_args=[f"-Wl,-rpath,{package_dir / LIB_DIR}"]
        + ([f"-fsanitize={SANITIZE}"] if SANITIZE else []),
    )
    dist = Distribution({"name": "yarn_ext_test_hooks", "ext_modules": [emulation, module_hook]})
    command = BuildExtension(dist)
    command.build_lib = str(TEST_HOOKS)
    command.build_temp = str(build_temp)
    command.force = True  # ninja decides, as in BuildExtension.run
    command.ensure_finalized()
    # cpp_extension's run, not BuildExtension.run above: no package files, no recursion.
    cpp_extension.BuildExtension.run(command)


def extensions() -> list[Extension]:
    cpu_library = operator_library(
        "libyarn_ext", cuda=False, sources=paths("cpu_sources") + paths("host_sources")
    )
    if not CUDA:
        return [cpu_library, helper_module()]
    cuda_library = operator_library(
        "libyarn_ext_cuda", cuda=True, sources=paths("cuda_sources") + paths("host_sources")
    )
    return [cpu_library, cuda_library, helper_module()]


setup(
    name="yarn_ext",
    version=FULL_VERSION,
    install_requires=[f"torch>={LIBRARY['minimum_torch']}"],
    packages=find_packages(include=["yarn_ext", "yarn_ext.*"]),
    ext_modules=extensions(),
    cmdclass={"build_ext": BuildExtension},
)
