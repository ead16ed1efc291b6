"""One module identity: the top-level folders are importable only as edgekit.*, and a checkout
that lost its symlinks says so in one line instead of failing somewhere deep."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import edgekit

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("folder", ["runtimes", "exporters", "models"])
def test_a_top_level_folder_cannot_be_imported_a_second_time(folder: str) -> None:
    """From the repository root `import runtimes` would find the folder itself and load a second
    copy of every module (two Policy classes, two error types): it is refused with the fix."""
    result = subprocess.run([sys.executable, "-c", f"import {folder}"], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode != 0
    assert f"ImportError: import edgekit.{folder}, not {folder}" in result.stderr.strip().splitlines()[-1]
    same = subprocess.run([sys.executable, "-c", f"import edgekit.{folder} as m; print(m.__name__)"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert same.returncode == 0 and same.stdout.strip() == f"edgekit.{folder}", same.stderr


def test_a_checkout_without_symlinks_is_named_in_one_line(tmp_path: Path) -> None:
    package = tmp_path / "edgekit"
    package.mkdir()
    shutil.copy(Path(edgekit.__file__), package / "__init__.py")
    (package / "runtimes").mkdir()
    (package / "models").mkdir()
    (package / "exporters").write_text("../exporters")  # what git writes when it cannot make a symlink
    result = subprocess.run([sys.executable, "-c", "import edgekit"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120)
    last = result.stderr.strip().splitlines()[-1]
    assert result.returncode != 0 and "edgekit/exporters is not a directory" in last and "symlinks" in last
