"""`python -m yarn_ext` runs its self-check and reports success."""

from __future__ import annotations

import subprocess
import sys


def test_python_m_yarn_ext_self_check() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "yarn_ext", "--tokens", "64"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "kernels built: CPU" in result.stdout
    assert "max |error| vs float64 reference" in result.stdout and " ok" in result.stdout
