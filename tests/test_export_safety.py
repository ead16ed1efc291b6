"""Export never destroys: --force replaces only a package (or an empty folder), every output path
is checked before any work, leftovers of killed runs are cleaned (only ours), SIGTERM is handled
like Ctrl-C, the replace is crash-safe, files get plain permissions, and a damaged source is one
line (exit 2), never a traceback."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgekit import atomic
from edgekit.atomic import MARKER, check_destination, settle, staged_directory
from edgekit.cli import app
from edgekit.errors import OutputExistsError, SourceModelError
from edgekit.exporters import encoder_export
from edgekit.exporters import families as export_families
from edgekit.exporters.encoder_export import export_encoder
from edgekit.manifest import Manifest

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
QUIET = {"HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error"}


def _one_line_error(result, needle: str, code: int = 2) -> None:
    assert result.exit_code == code, result.output
    message = result.stderr.strip()
    assert message.startswith("error: ") and "\n" not in message and needle in message, message


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _hidden(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


@pytest.fixture
def no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the export gets as far as resolving the source or loading a model."""
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("the export started work before checking --out")

    monkeypatch.setattr(export_families, "resolve_source", forbidden)
    monkeypatch.setattr(encoder_export, "resolve_source", forbidden)
    monkeypatch.setattr(encoder_export, "load_source_model", forbidden)


def _unwritable_folder(tmp_path: Path) -> Path:
    """A folder this process cannot create anything in (root ignores mode bits: use sysfs)."""
    if os.geteuid() != 0:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    try:
        os.mkdir("/sys/edgekit-probe")
    except OSError:
        return Path("/sys")
    os.rmdir("/sys/edgekit-probe")
    pytest.skip("no folder here refuses root's writes")


# --- --force replaces only what is ours ----------------------------------------------------------
def test_force_refuses_a_folder_of_user_files(tiny_cross_encoder: Path, tmp_path: Path, no_work: None) -> None:
    thesis = tmp_path / "thesis"
    thesis.mkdir()
    (thesis / "thesis.tex").write_text("\\chapter{Results}")
    (thesis / "data.csv").write_text("a,b\n1,2\n")
    before = _tree(thesis)
    result = runner.invoke(app, ["export", str(tiny_cross_encoder), "--out", str(thesis), "--force"])
    _one_line_error(result, "--force replaces only an edgekit package or an empty folder")
    assert "nothing was deleted" in result.stderr
    assert _tree(thesis) == before and _hidden(tmp_path) == []


def test_force_refuses_a_file(tiny_cross_encoder: Path, tmp_path: Path, no_work: None) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    result = runner.invoke(app, ["export", str(tiny_cross_encoder), "--out", str(tmp_path / "notes.txt"), "--force"])
    _one_line_error(result, "is a file")
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_a_folder_with_a_foreign_manifest_is_not_a_package(tmp_path: Path) -> None:
    (tmp_path / "web").mkdir()
    (tmp_path / "web" / "manifest.json").write_text(json.dumps({"name": "my web app"}))
    with pytest.raises(OutputExistsError, match="holds other files"):
        check_destination(tmp_path / "web", overwrite=True)
    assert (tmp_path / "web" / "manifest.json").is_file()


def test_force_replaces_an_empty_folder_and_a_package(tiny_cross_encoder: Path, tiny_cross_package: Path,
                                                      tmp_path: Path) -> None:
    out = tmp_path / "pkg"
    out.mkdir()
    export_encoder(str(tiny_cross_encoder), out, max_length=64, overwrite=True)  # empty folder: replaced
    assert Manifest.load(out).ranking.max_length == 64
    (out / "stray.txt").write_text("inside the old package")  # a package is replaced whole
    export_encoder(str(tiny_cross_encoder), out, max_length=32, overwrite=True)
    assert Manifest.load(out).ranking.max_length == 32 and not (out / "stray.txt").exists()
    assert not (out / MARKER).exists() and _hidden(tmp_path) == []


# --- every output path is checked before any work ----------------------------------------------
@pytest.mark.parametrize(("out", "needle"), [
    ("afile.txt/pkg", "which is a file, not a folder"),
    ("afile.txt/deeper/pkg", "which is a file, not a folder"),
    ("{long_path}", "bytes long"),
    ("{long_name}", "names here are at most"),
    ("{unwritable}/pkg", "cannot write in"),
])
def test_bad_out_fails_before_the_model_is_loaded(tiny_cross_encoder: Path, tmp_path: Path, no_work: None,
                                                  out: str, needle: str) -> None:
    (tmp_path / "afile.txt").write_text("not a folder")
    paths = {"long_path": str(tmp_path.joinpath(*["d" * 200] * 25, "pkg")), "long_name": str(tmp_path / ("n" * 250))}
    if "{unwritable}" in out:
        paths["unwritable"] = str(_unwritable_folder(tmp_path))
    target = out.format(**paths) if "{" in out else str(tmp_path / out)
    result = runner.invoke(app, ["export", str(tiny_cross_encoder), "--out", target])
    _one_line_error(result, needle)
    assert len(result.stderr) < 400  # a 5,000-character path is shortened in the message
    assert (tmp_path / "afile.txt").read_text() == "not a folder"


def test_out_inside_a_file_is_one_line_from_the_real_cli(tiny_cross_encoder: Path, tmp_path: Path) -> None:
    (tmp_path / "afile.txt").write_text("x")
    result = subprocess.run([sys.executable, "-m", "edgekit.cli", "export", str(tiny_cross_encoder),
                             "--out", str(tmp_path / "afile.txt" / "pkg")], capture_output=True, text=True,
                            timeout=120, cwd=ROOT, env={**os.environ, **QUIET, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "which is a file, not a folder" in result.stderr
    assert "torch" not in result.stderr


# --- leftovers of killed runs --------------------------------------------------------------------
def _dead_pid() -> int:
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True)
    return int(finished.stdout)


def _partial(parent: Path, name: str, pid: int | None, contents: dict[str, str]) -> Path:
    folder = parent / name
    folder.mkdir()
    if pid is not None:
        (folder / MARKER).write_text(json.dumps({"pid": pid, "host": socket.gethostname()}))
    for relative, text in contents.items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_text(text)
    return folder


def test_the_next_export_removes_stale_partials_and_only_ours(tiny_cross_encoder: Path, tmp_path: Path) -> None:
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        killed = _partial(tmp_path, ".pkg.partial-deadbeef", _dead_pid(), {"graphs/layer_000.onnx": "half"})
        legacy = _partial(tmp_path, ".pkg.partial-0badc0de", None, {"graphs/x.onnx": "old", "manifest.json": "{}"})
        old = _partial(tmp_path, ".pkg.old-12345678", None, {})  # empty: ours
        running = _partial(tmp_path, ".pkg.partial-abcdef01", live.pid, {"graphs/y.onnx": "writing"})
        foreign = _partial(tmp_path, ".pkg.partial-12345678", None, {"notes.txt": "a user's file"})
        other_name = _partial(tmp_path, ".other.partial-deadbeef", None, {})
        odd_name = _partial(tmp_path, ".pkg.partial-notahex!", None, {})
        export_encoder(str(tiny_cross_encoder), tmp_path / "pkg", max_length=32)
        assert not killed.exists() and not legacy.exists() and not old.exists()
        assert running.exists() and foreign.exists() and other_name.exists() and odd_name.exists()
        assert (foreign / "notes.txt").read_text() == "a user's file"
    finally:
        live.kill()
        live.wait()


def test_a_replace_cut_between_its_renames_is_recovered(tiny_cross_encoder: Path, tiny_cross_package: Path,
                                                        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without renameat2 the old package is renamed aside first; a kill right then leaves only
    `.pkg.old-*`. The next export of pkg renames it back before anything else."""
    out = tmp_path / "pkg"
    shutil.copytree(tiny_cross_package, out)
    before = _tree(out)
    real_rename = os.rename

    def killed_after_first(source: str | Path, target: str | Path) -> None:
        if Path(target) == out:  # the second rename: the process "dies" here
            raise SystemExit("killed")
        real_rename(source, target)

    monkeypatch.setattr(atomic, "_exchange", lambda first, second: False)
    monkeypatch.setattr(atomic.os, "rename", killed_after_first)
    with pytest.raises(SystemExit), staged_directory(out, overwrite=True) as root:
        (root / "manifest.json").write_text(json.dumps({"format": "edgekit-package", "new": True}))
    monkeypatch.undo()
    assert not out.exists() and [p.name.startswith(".pkg.old-") for p in tmp_path.iterdir()] == [True]

    result = runner.invoke(app, ["export", str(tiny_cross_encoder), "--out", str(out)])
    _one_line_error(result, "restored from .pkg.old-")
    assert _tree(out) == before and _hidden(tmp_path) == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="renameat2 is Linux's")
def test_the_replace_is_one_exchange_on_linux(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "new").write_text("new")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "old").write_text("old")
    assert atomic._exchange(tmp_path / "a", tmp_path / "b")
    assert os.listdir(tmp_path / "b") == ["new"] and os.listdir(tmp_path / "a") == ["old"]


# --- signals ---------------------------------------------------------------------------------------
SLOW_EXPORT = textwrap.dedent("""
    import signal, sys, time
    from edgekit.exporters import package_parts
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, even if started in the background
    real = package_parts.export_graph

    def slow(*args, **kwargs):
        spec = real(*args, **kwargs)
        print("graph written", flush=True)
        time.sleep(60)
        return spec

    package_parts.export_graph = slow
    from edgekit.cli import main
    sys.argv = ["edgekit", "export", sys.argv[1], "--out", sys.argv[2], "--force"]
    main()
""")


def test_sigterm_during_export_leaves_the_old_package_and_no_partial(
        tiny_cross_encoder: Path, tiny_cross_package: Path, tmp_path: Path) -> None:
    """A real export in a child process, held after its first graph; SIGTERM then (Ctrl-C is the
    same path: tests below raise both inside the staged directory)."""
    signum = signal.SIGTERM
    out = tmp_path / "pkg"
    shutil.copytree(tiny_cross_package, out)
    before = _tree(out)
    child = subprocess.Popen([sys.executable, "-c", SLOW_EXPORT, str(tiny_cross_encoder), str(out)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                             env={**os.environ, **QUIET, "PYTHONPATH": str(ROOT)})
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "graph written"
        assert [p.name for p in tmp_path.glob(".pkg.partial-*")], "the staging folder should exist now"
        child.send_signal(signum)
        _, stderr = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode == 128 + signum, stderr
    assert stderr.count("\n") == 1 and stderr.startswith("error: export interrupted"), stderr
    assert _hidden(tmp_path) == [] and _tree(out) == before


@pytest.mark.parametrize(("signum", "raised"), [(signal.SIGTERM, atomic.ExportInterrupted),
                                                (signal.SIGINT, KeyboardInterrupt)])
def test_a_signal_inside_the_staged_directory_removes_it(tmp_path: Path, signum: int, raised: type) -> None:
    class NotHandled(Exception):
        pass

    def outside(signum: int, frame: object) -> None:  # SIGTERM outside the export: fail, don't kill pytest
        raise NotHandled(signum)

    previous = signal.signal(signal.SIGTERM, outside)
    try:
        with pytest.raises(raised), staged_directory(tmp_path / "pkg") as root:
            (root / "graphs").mkdir()
            (root / "graphs" / "layer_000.onnx").write_bytes(b"half")
            os.kill(os.getpid(), signum)
            time.sleep(5)  # the handler raises here
            raise AssertionError("the signal should have interrupted the export")
        assert signal.getsignal(signal.SIGTERM) is outside  # put back after the export
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert list(tmp_path.iterdir()) == []


# --- permissions -----------------------------------------------------------------------------------
def test_package_files_get_the_permissions_of_a_plain_open(tiny_cross_package: Path) -> None:
    mask = os.umask(0)
    os.umask(mask)
    modes = {p.relative_to(tiny_cross_package).as_posix(): p.stat().st_mode & 0o777
             for p in [tiny_cross_package, *tiny_cross_package.rglob("*")]}
    assert any(name.endswith(".onnx.data") for name in modes)  # onnx writes these 0600
    wrong = {name: oct(mode) for name, mode in modes.items()
             if mode != (0o777 & ~mask if (tiny_cross_package / name).is_dir() else 0o666 & ~mask)}
    assert wrong == {}


def test_settle_follows_the_umask(tmp_path: Path) -> None:
    (tmp_path / "graphs").mkdir(mode=0o700)
    descriptor = os.open(tmp_path / "graphs" / "w.onnx.data", os.O_CREAT | os.O_WRONLY, 0o600)
    os.close(descriptor)
    mask = os.umask(0o027)
    try:
        settle(tmp_path)
    finally:
        os.umask(mask)
    assert (tmp_path / "graphs" / "w.onnx.data").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "graphs").stat().st_mode & 0o777 == 0o750


# --- a damaged source is one line, exit 2 -----------------------------------------------------------
def _damaged(source: Path, tmp_path: Path, file: str, content: bytes | None) -> Path:
    copy = tmp_path / "src"
    shutil.copytree(source, copy)
    data = (source / file).read_bytes()
    (copy / file).write_bytes(content if content is not None else data[:len(data) - 100])  # None: truncated
    return copy


@pytest.mark.parametrize(("family", "file", "content", "needle"), [
    ("cross-encoder", "config.json", b"[1, 2]", "config.json that is not a readable JSON object"),
    ("cross-encoder", "config.json", b"null", "config.json that is not a readable JSON object"),
    ("bi-encoder", "modules.json", b'{"0": {"type": "sentence_transformers.models.Transformer"}}',
     "modules.json holds a JSON object"),
    ("cross-encoder", "model.safetensors", None, "a .safetensors file is truncated or damaged"),
])
def test_damaged_source_is_one_line_from_the_real_cli(tiny_source, tmp_path: Path, family: str, file: str,
                                                      content: bytes | None, needle: str) -> None:
    source = _damaged(tiny_source(family), tmp_path, file, content)
    result = subprocess.run([sys.executable, "-m", "edgekit.cli", "export", str(source), "--out",
                             str(tmp_path / "pkg")], capture_output=True, text=True, timeout=300, cwd=ROOT,
                            env={**os.environ, **QUIET, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ") and needle in result.stderr, \
        result.stderr
    assert not (tmp_path / "pkg").exists() and _hidden(tmp_path) == []


@pytest.mark.parametrize(("family", "content"), [("qwen3-reranker", b"\x10\x00"), ("bi-encoder", None)])
def test_truncated_safetensors_through_the_api(tiny_source, tmp_path: Path, family: str,
                                               content: bytes | None) -> None:
    source = _damaged(tiny_source(family), tmp_path, "model.safetensors", content)
    with pytest.raises(SourceModelError, match="a .safetensors file is truncated or damaged") as caught:
        export_families.export_source(source, tmp_path / "pkg")
    assert "\n" not in str(caught.value) and not (tmp_path / "pkg").exists()


@pytest.mark.parametrize(("content", "needle"), [(b"[1, 2]", "holds a JSON array ([1, 2])"),
                                                 (b"null", "holds null"), (b"{", "cannot read")])
def test_damaged_config_through_the_api(tiny_cross_encoder: Path, tmp_path: Path, content: bytes,
                                        needle: str) -> None:
    source = _damaged(tiny_cross_encoder, tmp_path, "config.json", content)
    with pytest.raises(SourceModelError, match=None) as caught:
        export_encoder(str(source), tmp_path / "pkg")
    assert needle in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(("modules", "needle"), [
    ([{"type": "sentence_transformers.models.Transformer", "path": ""},
      {"type": "sentence_transformers.models.Pooling", "path": "../../elsewhere"}], "must be a folder inside"),
    ([{"type": "sentence_transformers.models.Transformer", "path": ""},
      {"type": "sentence_transformers.models.Pooling"}], "Pooling module has no folder"),
    (["sentence_transformers.models.Transformer"], "holds a JSON array"),
])
def test_damaged_modules_json_through_the_api(tiny_bi_encoder: Path, tmp_path: Path, modules: list,
                                              needle: str) -> None:
    source = _damaged(tiny_bi_encoder, tmp_path, "modules.json", json.dumps(modules).encode())
    with pytest.raises(SourceModelError, match=None) as caught:
        export_encoder(str(source), tmp_path / "pkg")
    assert needle in str(caught.value) and "\n" not in str(caught.value)
