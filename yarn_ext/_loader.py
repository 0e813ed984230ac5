"""Loads the native module yarn_ext._C (and through it libyarn_ext), refusing a torch whose C++
ABI differs from the one it was built against with a message that says what to do, instead of an
undefined-symbol error or a crash."""

from __future__ import annotations

import importlib
from types import ModuleType

import torch

from yarn_ext._version import __version__

_REMEDY = (
    "Install the yarn_ext build made for this torch, or rebuild yarn_ext against it "
    "(pip install --no-build-isolation --force-reinstall --no-deps <yarn_ext source>)."
)


def _release(version: str) -> tuple[int, int]:
    """(major, minor) of a torch version string such as 2.14.1+cu130: torch's C++ ABI changes
    between minor releases."""
    major, minor = version.split("+")[0].split(".")[:2]
    return int(major), int(minor)


def abi_mismatch(
    built_with: str, running: str, built_cuda: str | None = None, running_cuda: str | None = None
) -> str | None:
    """The error message when an extension built against torch `built_with` (CUDA `built_cuda`,
    None for a CPU build) cannot be used with torch `running` (CUDA `running_cuda`), else None."""
    if _release(built_with) != _release(running):
        return (
            f"yarn_ext {__version__} was built against torch {built_with}, but torch {running} "
            f"is installed; the two C++ ABIs differ. {_REMEDY}"
        )
    if built_cuda is not None and running_cuda is None:
        return (
            f"yarn_ext {__version__} was built against a CUDA {built_cuda} build of torch "
            f"{built_with}, but the installed torch {running} is a CPU-only build. {_REMEDY}"
        )
    return None


def load_extension() -> ModuleType:
    try:
        build_info = importlib.import_module("yarn_ext._build_info")
    except ImportError:  # a build without the record: let the import speak for itself
        build_info = None
    if build_info is not None:
        message = abi_mismatch(
            build_info.TORCH_VERSION, torch.__version__, build_info.TORCH_CUDA, torch.version.cuda
        )
        if message is not None:
            raise ImportError(message)
    try:
        return importlib.import_module("yarn_ext._C")
    except ImportError as error:
        # An ABI break shows as a missing symbol or a missing torch library.
        if "undefined symbol" not in str(error) and "cannot open shared object" not in str(error):
            raise
        built = f"torch {build_info.TORCH_VERSION}" if build_info is not None else "another torch"
        raise ImportError(
            f"yarn_ext {__version__} cannot be loaded with torch {torch.__version__}: it was "
            f"built against {built} and the C++ ABIs differ ({error}). {_REMEDY}"
        ) from error
