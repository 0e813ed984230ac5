"""AOTInductor from C++: a model that uses YarnEmbedding, exported and packaged by
examples/aoti/export_model.py, runs in the C++ program of examples/aoti and matches the eager
model. The program is built against this install's yarn_ext.cmake_prefix_path (in CI, the
editable install of the README's command) and run without LD_LIBRARY_PATH: it also shows that a C++
consumer of an editable install finds yarn_ext's and torch's libraries on its own. cmake and
ninja come with requirements.txt."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import yarn_ext

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "aoti"


def run(command: list[str], **kwargs) -> str:
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.mark.slow
def test_aoti_package_runs_from_cpp(tmp_path: Path) -> None:
    out = run([sys.executable, str(EXAMPLE / "export_model.py"), str(tmp_path / "package")])
    calls = int(re.search(r"yarn_ext operator calls in the exported program: (\d+)", out)[1])
    assert calls == 2, out  # q and k: the package really calls yarn_ext's operators
    build = tmp_path / "build"
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    run(
        [
            "cmake",
            "-S",
            str(EXAMPLE),
            "-B",
            str(build),
            *generator,
            f"-DCMAKE_PREFIX_PATH={yarn_ext.cmake_prefix_path}",
        ]
    )
    run(["cmake", "--build", str(build)])
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    report = run(
        [
            str(build / "yarn_aoti"),
            str(tmp_path / "package" / "model.pt2"),
            str(tmp_path / "package" / "check.pt"),
        ],
        env=env,
    )
    print(report)
    match = re.search(r"(\d+) tokens, max \|C\+\+ - Python\| = (\S+) \(bound (\S+)\)", report)
    assert match is not None, report
    assert int(match[1]) == 37  # not the traced 16: the token count is dynamic
    assert float(match[2]) <= float(match[3])
