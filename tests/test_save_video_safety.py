"""save_video checks its paths before anything is generated or written, leaves no temporary file
behind on any failure, and leaves exactly this video's frames in the frames folder (the user's
other files there are left alone)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgekit.cli import app
from edgekit.errors import InvalidArgumentError, OutputPathError
from edgekit.runtimes.video import images
from edgekit.runtimes.video.images import check_video_output, save_video

runner = CliRunner()


def _frames(count: int, size: int = 8) -> np.ndarray:
    return np.random.default_rng(count).random((count, size, size, 3)).astype(np.float32)


def _everything(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


def test_fewer_frames_than_last_time_leave_exactly_the_new_ones(tmp_path: Path) -> None:
    gif = tmp_path / "clip.gif"
    save_video(_frames(6), gif, fps=7)
    (tmp_path / "clip_frames" / "notes.txt").write_text("the user's")
    (tmp_path / "clip_frames" / "frame_final.png").write_bytes(b"not our naming")
    gif_path, pngs = save_video(_frames(3), gif, fps=7)
    assert [p.name for p in pngs] == ["frame_000.png", "frame_001.png", "frame_002.png"]
    assert _everything(tmp_path) == ["clip.gif", "clip_frames", "clip_frames/frame_000.png",
                                     "clip_frames/frame_001.png", "clip_frames/frame_002.png",
                                     "clip_frames/frame_final.png", "clip_frames/notes.txt"]
    from PIL import Image

    with Image.open(gif_path) as written:
        assert written.n_frames == 3


@pytest.mark.parametrize(("layout", "needle"), [
    ("frames_folder_is_a_file", "the frames folder"),
    ("gif_is_a_folder", "is a folder; pass the path of a .gif file"),
    ("parent_is_a_file", "which is a file, not a folder"),
    ("not_a_gif", "must end with .gif"),
    ("name_too_long", "names here are at most"),
])
def test_bad_paths_are_refused_before_writing(tmp_path: Path, layout: str, needle: str) -> None:
    gif = tmp_path / "clip.gif"
    if layout == "frames_folder_is_a_file":
        (tmp_path / "clip_frames").write_text("a file")
    elif layout == "gif_is_a_folder":
        gif.mkdir()
    elif layout == "parent_is_a_file":
        (tmp_path / "out").write_text("a file")
        gif = tmp_path / "out" / "clip.gif"
    elif layout == "not_a_gif":
        gif = tmp_path / "clip.mp4"
    else:
        gif = tmp_path / ("c" * 250 + ".gif")
    before = _everything(tmp_path)
    with pytest.raises((OutputPathError, InvalidArgumentError), match=None) as caught:
        save_video(_frames(2), gif, fps=7)
    assert needle in str(caught.value) and "\n" not in str(caught.value)
    assert _everything(tmp_path) == before


def test_a_failed_write_leaves_no_temporary_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_replace = os.replace

    def disk_full_at_the_gif(source: str | Path, target: str | Path) -> None:
        if str(target).endswith(".gif"):
            raise OSError(28, "No space left on device")
        real_replace(source, target)

    monkeypatch.setattr(images.os, "replace", disk_full_at_the_gif)
    with pytest.raises(OutputPathError, match="No space left on device"):
        save_video(_frames(3), tmp_path / "clip.gif", fps=7)
    assert [name for name in _everything(tmp_path) if ".tmp-" in name] == []


def test_an_interrupted_write_leaves_no_temporary_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    real_save = Image.Image.save
    calls = []

    def ctrl_c_at_the_second_frame(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_save(self, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", ctrl_c_at_the_second_frame)
    with pytest.raises(KeyboardInterrupt):
        save_video(_frames(3), tmp_path / "clip.gif", fps=7)
    assert [name for name in _everything(tmp_path) if ".tmp-" in name] == []


def test_check_creates_nothing(tmp_path: Path) -> None:
    gif, folder = check_video_output(tmp_path / "new" / "deeper" / "clip.gif")
    assert folder == tmp_path / "new" / "deeper" / "clip_frames" and not (tmp_path / "new").exists()


# --- the CLI: checked before the package is loaded or anything generated -------------------------
@pytest.mark.parametrize(("layout", "needle"), [("gif_is_a_folder", "is a folder"),
                                                ("frames_folder_is_a_file", "the frames folder")])
def test_cli_run_refuses_bad_video_paths_before_generating(svd_package: Path, tmp_path: Path, layout: str,
                                                           needle: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    import edgekit

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("the package was loaded before the output paths were checked")

    monkeypatch.setattr(edgekit, "load", forbidden)
    Image.new("RGB", (32, 32)).save(tmp_path / "in.png")
    out = tmp_path / "video" / "out.gif"
    out.parent.mkdir()
    if layout == "gif_is_a_folder":
        out.mkdir()
    else:
        (out.parent / "out_frames").write_text("a file")
    result = runner.invoke(app, ["run", str(svd_package), "--image", str(tmp_path / "in.png"), "--out", str(out),
                                 "--frames", "2", "--steps", "1"])
    assert result.exit_code == 2, result.output
    message = result.stderr.strip()
    assert message.startswith("error: ") and "\n" not in message and needle in message, message
    assert [p.name for p in out.parent.iterdir()] == [out.name if layout == "gif_is_a_folder" else "out_frames"]


def test_cli_run_twice_with_fewer_frames_leaves_only_the_new_frames(svd_package: Path, tmp_path: Path) -> None:
    from PIL import Image

    Image.new("RGB", (32, 32)).save(tmp_path / "in.png")
    out = tmp_path / "out.gif"
    for frames in ("4", "2"):
        result = runner.invoke(app, ["run", str(svd_package), "--image", str(tmp_path / "in.png"), "--out",
                                     str(out), "--frames", frames, "--steps", "1"])
        assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out_frames").iterdir()) == ["frame_000.png", "frame_001.png"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
