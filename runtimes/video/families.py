"""The video families this runtime runs: family name (manifest `family`) -> its `VideoFamily` class.

A new family (SVD, Wan so far) is one module implementing runtimes/video/family.py's contract and one
line here. The manifest check (edgekit/video_manifest.py) reads the names from this registry.
"""

from __future__ import annotations

from typing import Any

from edgekit.errors import InvalidArgumentError
from edgekit.manifest import Manifest
from edgekit.runtimes.backends import Backend
from edgekit.runtimes.graph_io import checked_backend
from edgekit.runtimes.video.family import VideoFamily
from edgekit.runtimes.video.svd import SvdFamily
from edgekit.runtimes.video.wan import WanFamily

VIDEO_FAMILIES: dict[str, type[Any]] = {
    SvdFamily.name: SvdFamily,
    WanFamily.name: WanFamily,
}


def register_video_family(family: type[Any]) -> type[Any]:
    """Add `family` (a class with a `name` and the VideoFamily methods) to the registry; returns it,
    so it can decorate the class."""
    VIDEO_FAMILIES[family.name] = family
    return family


def family_for(manifest: Manifest, backend: Backend, window: int) -> VideoFamily:
    """The registered family of `manifest`, bound to its package and `backend`."""
    family = VIDEO_FAMILIES.get(manifest.family)
    if manifest.video is None or family is None:
        raise InvalidArgumentError(f"{manifest.root} is a {manifest.task} package of family {manifest.family!r}; "
                                   f"the video runtime runs the families {sorted(VIDEO_FAMILIES)}")
    return family(manifest, checked_backend(backend, manifest), window)  # sessions' IO names checked on load
