"""The native runtime's build, shared by the tests/test_native_*.py files: built once per test
session with runtimes/native/build.sh (what `make native` runs) into a session folder.

Skipped with a reason only when the machine has no C compiler (CI has one, so CI runs them).
EK_SANITIZE=address in the environment builds with AddressSanitizer; the tests then run the
binaries with ASan's runtime preloaded where a Python process hosts the library.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BUILD_SCRIPT = REPO / "runtimes" / "native" / "build.sh"


def build_native(out: Path, sanitize: str = "") -> Path:
    """Build into `out`; returns it (edgekit-rank, libedgekit.so, ek-tokenize inside)."""
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler on this machine: the native runtime cannot be built here")
    env = dict(os.environ, EK_BUILD_DIR=str(out), PYTHON=sys.executable, EK_SANITIZE=sanitize)
    proc = subprocess.run(["bash", str(BUILD_SCRIPT)], env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"native build failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    if sanitize == "address":  # ASan silently not linked would make every "no finding" meaningless
        linked = subprocess.run(["ldd", str(out / "edgekit-rank")], capture_output=True, text=True, check=True).stdout
        assert "libasan" in linked, linked
    return out
