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


def abi_mismatch(built_with: str, running: str) -> str | None:
    """The error message when an extension built against torch `built_with` cannot be used with
    torch `running`, else None."""
    if _release(built_with) == _release(running):
        return None
    return (
        f"yarn_ext {__version__} was built against torch {built_with}, but torch {running} is "
        f"installed; the two C++ ABIs differ. {_REMEDY}"
    )


def load_extension() -> ModuleType:
    try:
        build_info = importlib.import_module("yarn_ext._build_info")
    except ImportError:  # a build without the record: let the import speak for itself
        build_info = None
    if build_info is not None:
        message = abi_mismatch(build_info.TORCH_VERSION, torch.__version__)
        if message is not None:
            raise ImportError(message)
    try:
        return importlib.import_module("yarn_ext._C")
    except ImportError as error:
        if "undefined symbol" not in str(error):
            raise
        built = f"torch {build_info.TORCH_VERSION}" if build_info is not None else "another torch"
        raise ImportError(
            f"yarn_ext {__version__} cannot be loaded with torch {torch.__version__}: it was "
            f"built against {built} and the C++ ABIs differ ({error}). {_REMEDY}"
        ) from error
