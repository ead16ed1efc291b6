"""Decode-stage peak RSS of one video run with edgekit-lean's settings (4 slices, decode chunk 1,
tiles of 16 latent pixels), the high-water mark reset when the decode starts (the bench's rule).

    python scripts/probe_decode_peak.py PACKAGE_WITH_OP_GROUPS INPUTS.npz

INPUTS.npz is a video bench run's inputs (`edgekit bench video` writes it under its work folder:
runs/<package>-<frames>x<h>x<w>-s<steps>/inputs.npz). docs/BENCHMARKS.md ("Reruns after format
v2") quotes five runs of this probe per version to show that the tiled decode's peak is bimodal.
For a release before the video driver (commit 47d1ff3), the reset wrapped `VideoPipeline.decode`
instead of a stage observer; the reading was otherwise the same.
"""

from __future__ import annotations

import sys

import numpy as np

import edgekit
from edgekit.measure import current_rss_mb, peak_rss_mb


class DecodePeak:
    """A stage observer: resets VmHWM when a stage begins, reads it when the stage ends."""

    def __init__(self) -> None:
        self.marks: dict[str, float] = {}

    def begin(self, stage: str) -> None:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
        self.marks[f"{stage}_start_mb"] = current_rss_mb()

    def end(self, stage: str) -> None:
        self.marks[f"{stage}_peak_mb"] = peak_rss_mb() or 0.0


def main(package: str, inputs_file: str) -> None:
    inputs = np.load(inputs_file)
    pipeline = edgekit.load(package, threads=2)
    probe = DecodePeak()
    pipeline.observers.append(probe)
    latents = inputs["latents"]
    pipeline.generate(inputs["image"], num_frames=latents.shape[1], steps=2, seed=0, latents=latents,
                      noise=inputs["noise"], height=inputs["image"].shape[0], width=inputs["image"].shape[1],
                      decode_chunk=1, decode_tile=16, slices=4)
    print({name: round(value, 1) for name, value in probe.marks.items() if name.startswith("decode")})


if __name__ == "__main__":
    main(*sys.argv[1:3])
