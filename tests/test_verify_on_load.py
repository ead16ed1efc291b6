"""Stories: one flipped weight byte (same size, same mtime) is refused by `edgekit run` and
`edgekit.load`, whether the file's hash is computed now or was remembered from an earlier run;
repeated loads of an unchanged package hash nothing; `--no-verify` opts out; `edgekit verify`
always re-hashes; the hash cache never becomes an error (edgekit/hash_cache.py)."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import edgekit
import edgekit.hash_cache as hash_cache
import edgekit.package_files as package_files
from edgekit.cli import app
from edgekit.errors import IntegrityError
from tests.conftest import CANDIDATES, QUERY
from tests.refusals import assert_refused

runner = CliRunner()
WEIGHTS = "graphs/layer_001.onnx.data"


@pytest.fixture(autouse=True)
def fresh_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each story starts like a new process on a new machine: an empty cache directory and an
    empty in-process cache."""
    monkeypatch.setenv("EDGEKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(hash_cache, "_memory", {})
    return tmp_path / "cache" / hash_cache.CACHE_FILE


@pytest.fixture
def hashes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The files hashed (by the cached check and by `edgekit verify`), in order."""
    seen: list[str] = []
    real = package_files.sha256_file

    def counting(path: Path, *args) -> str:
        seen.append(Path(path).name)
        return real(path, *args)

    monkeypatch.setattr(hash_cache, "sha256_file", counting)
    monkeypatch.setattr(package_files, "sha256_file", counting)
    return seen


def _files_settled(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend the package's files were written long ago, so their hashes may be remembered (a
    hash computed within RACY_NS of the file's last change is not: see hash_cache)."""
    monkeypatch.setattr(hash_cache, "_now_ns", lambda: time.time_ns() + 10 * hash_cache.RACY_NS)


def _flip_one_byte(path: Path) -> None:
    """Flip a byte in the middle, keeping the size and the mtime; the kernel still moves ctime
    (no call can set it back), which is what the cache keys on."""
    before = os.stat(path)
    time.sleep(0.05)  # past the coarse timestamp tick (1-10 ms) of the last write
    with open(path, "r+b") as handle:
        handle.seek(before.st_size // 2)
        byte = handle.read(1)[0]
        handle.seek(before.st_size // 2)
        handle.write(bytes([byte ^ 0xFF]))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert after.st_size == before.st_size and after.st_mtime_ns == before.st_mtime_ns
    assert after.st_ctime_ns != before.st_ctime_ns


def _run(package: Path, tmp_path: Path, *extra: str):
    candidates = tmp_path / "candidates.txt"
    candidates.write_text("\n".join(CANDIDATES) + "\n", encoding="utf-8")
    return runner.invoke(app, ["run", str(package), "--query", QUERY, "--candidates", str(candidates), "--json",
                               *extra])


def _assert_hash_mismatch(result, name: str) -> None:
    assert_refused(result, f"{name} changed since export (sha256 mismatch)", "restore the file")


def test_a_flipped_weight_byte_is_refused_on_a_cold_run(tiny_cross_package: Path, tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    shutil.copytree(tiny_cross_package, package)
    _flip_one_byte(package / WEIGHTS)
    _assert_hash_mismatch(_run(package, tmp_path), WEIGHTS)
    with pytest.raises(IntegrityError, match="graphs/layer_001.onnx.data changed since export"):
        edgekit.load(str(package))
    # the opt-out: the same package loads (and ranks, silently off) without the check
    assert _run(package, tmp_path, "--no-verify").exit_code == 0
    assert edgekit.load(str(package), verify=False) is not None


def test_a_flipped_weight_byte_is_refused_after_its_hash_was_remembered(tiny_cross_package: Path, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch,
                                                                        fresh_cache: Path,
                                                                        hashes: list[str]) -> None:
    package = tmp_path / "pkg"
    shutil.copytree(tiny_cross_package, package)
    _files_settled(monkeypatch)
    listed = len(edgekit.load(str(package)).manifest.files())
    assert len(hashes) == listed and fresh_cache.is_file()  # cold: every file hashed once, then remembered

    hashes.clear()
    assert _run(package, tmp_path).exit_code == 0
    assert hashes == []  # warm, in this process: nothing hashed
    monkeypatch.setattr(hash_cache, "_memory", {})  # a new process: only the cache file remains
    edgekit.load(str(package))
    assert hashes == []

    _flip_one_byte(package / WEIGHTS)
    monkeypatch.setattr(hash_cache, "_memory", {})
    _assert_hash_mismatch(_run(package, tmp_path), WEIGHTS)
    assert hashes == ["layer_001.onnx.data"]  # only the changed file was read again
    with pytest.raises(IntegrityError, match="changed since export"):  # and the in-process cache agrees
        edgekit.load(str(package))


def test_a_file_changed_just_before_hashing_is_not_remembered(tiny_cross_package: Path, tmp_path: Path,
                                                              fresh_cache: Path, hashes: list[str]) -> None:
    """Timestamps are coarse: a file rewritten within one tick after hashing could keep its
    identity, so a hash of a just-written file is used once and not remembered."""
    package = tmp_path / "pkg"
    shutil.copytree(tiny_cross_package, package)  # every file written just now
    edgekit.load(str(package))
    edgekit.load(str(package))
    listed = len(edgekit.load(str(package)).manifest.files())
    assert len(hashes) == 3 * listed and hash_cache._memory == {} and not fresh_cache.exists()


def test_verify_always_rehashes(tiny_cross_package: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                hashes: list[str]) -> None:
    package = tmp_path / "pkg"
    shutil.copytree(tiny_cross_package, package)
    _files_settled(monkeypatch)
    listed = len(edgekit.load(str(package)).manifest.files())
    hashes.clear()
    result = runner.invoke(app, ["verify", str(package)])
    assert result.exit_code == 0 and f"{listed} files verified" in result.stdout
    assert len(hashes) == listed


@pytest.mark.parametrize("damage", ["corrupt", "wrong shape", "unwritable"])
def test_a_broken_cache_is_ignored(tiny_cross_package: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   fresh_cache: Path, damage: str) -> None:
    package = tmp_path / "pkg"
    shutil.copytree(tiny_cross_package, package)
    _files_settled(monkeypatch)
    fresh_cache.parent.mkdir(parents=True)
    if damage == "corrupt":
        fresh_cache.write_bytes(b"\x00{not json")
    elif damage == "wrong shape":
        fresh_cache.write_text('{"format": "edgekit-hash-cache-1", "entries": {"%s": 7}}' % (package / WEIGHTS))
    else:  # the cache directory is a file: nothing can be written below it
        shutil.rmtree(fresh_cache.parent)
        fresh_cache.parent.write_text("not a directory")
    assert _run(package, tmp_path).exit_code == 0
    _flip_one_byte(package / WEIGHTS)
    monkeypatch.setattr(hash_cache, "_memory", {})
    _assert_hash_mismatch(_run(package, tmp_path), WEIGHTS)


def test_the_cache_file_stays_bounded(tiny_cross_package: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      fresh_cache: Path) -> None:
    package = tmp_path / "pkg"
    shutil.copytree(tiny_cross_package, package)
    _files_settled(monkeypatch)
    monkeypatch.setattr(hash_cache, "MAX_ENTRIES", 3)
    edgekit.load(str(package))
    entries = json.loads(fresh_cache.read_text())["entries"]
    assert len(entries) == 3 and all(Path(name).is_relative_to(package.resolve()) for name in entries)
