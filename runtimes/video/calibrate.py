"""`edgekit calibrate VPKG --target-psnr DB`: the most aggressive step-cache setting whose frames
keep a PSNR against the uncached run on a few seeds, stored in the manifest for
`generate(step_cache="auto")` (docs/VIDEO.md, "Calibration").

Procedure: for each seed, one uncached run (the reference frames) and one run per candidate
setting, all on the same image, size, frames and steps. A candidate passes when its *lowest*
PSNR over the seeds is >= the target. Among those that pass, the one with the fewest UNet block
evaluations is chosen (ties: the higher PSNR, then the earlier candidate); none passing stores `setting: null` (auto
runs uncached). This is a measurement on the seeds given, not a guarantee on new inputs.

Example::

    result = calibrate_step_cache(edgekit.load("vpkg"), image, target_psnr_db=30.0, seeds=(0, 1))
    write_step_cache_calibration(manifest, result)
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgekit.errors import InvalidArgumentError
from edgekit.manifest import MANIFEST_FILE, Manifest
from edgekit.package_digest import check_digest, write_manifest
from edgekit.runtimes.video.step_cache import parse_step_cache

# from the most to the least aggressive interval, then adaptive thresholds from the loosest
CANDIDATES = ("interval:5", "interval:4", "interval:3", "interval:2", "adaptive:0.2,max-skip:4",
              "adaptive:0.1,max-skip:3", "adaptive:0.05", "adaptive:0.02")


def psnr_db(actual: np.ndarray, reference: np.ndarray) -> float:
    """PSNR in dB of frames in [0, 1] (inf when identical)."""
    mse = float(np.mean((actual.astype(np.float64) - reference.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)


@dataclass(frozen=True)
class Tried:
    setting: str
    min_psnr_db: float
    block_evals_share: float  # the candidate's UNet block evaluations over the uncached runs', all seeds


@dataclass(frozen=True)
class StepCacheCalibration:
    """What `calibrate_step_cache` found: the chosen setting (None: none kept the target)."""

    setting: str | None
    target_psnr_db: float
    seeds: tuple[int, ...]
    run: dict[str, int]  # frames, steps, height, width
    tried: tuple[Tried, ...] = field(default_factory=tuple)

    def chosen(self) -> Tried | None:
        return next((t for t in self.tried if t.setting == self.setting), None)

    def to_dict(self) -> dict[str, Any]:
        chosen = self.chosen()
        return {"setting": self.setting, "target_psnr_db": self.target_psnr_db,
                "min_psnr_db": None if chosen is None else _finite(chosen.min_psnr_db),
                "block_evals_share": None if chosen is None else chosen.block_evals_share,
                "seeds": list(self.seeds), **self.run,
                "tried": [{"setting": t.setting, "min_psnr_db": _finite(t.min_psnr_db),
                           "block_evals_share": t.block_evals_share} for t in self.tried],
                "procedure": "lowest frame PSNR over the seeds against the uncached run >= target; fewest UNet "
                             "block evaluations among those, then the highest PSNR"}


def _finite(value: float) -> float | None:
    return None if math.isinf(value) else round(value, 3)  # JSON has no inf: identical frames read null


def check_calibration_args(target_psnr_db: float, seeds: Sequence[int], candidates: Sequence[str]) -> None:
    """InvalidArgumentError before any run for a bad target, seed list or candidate."""
    if not isinstance(target_psnr_db, (int, float)) or not math.isfinite(target_psnr_db) or target_psnr_db <= 0:
        raise InvalidArgumentError(f"--target-psnr must be a positive number of dB, got {target_psnr_db!r}")
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
        raise InvalidArgumentError(f"seeds must be one or more non-negative integers, got {list(seeds)!r}")
    for candidate in candidates:
        if not parse_step_cache(candidate).enabled:
            raise InvalidArgumentError(f"calibration candidate {candidate!r} caches nothing; give interval:N or "
                                       "adaptive:T settings")


def calibrate_step_cache(pipeline: Any, image: Any, target_psnr_db: float, seeds: Sequence[int] = (0, 1),
                         candidates: Sequence[str] = CANDIDATES, progress: Callable[[str], None] | None = None,
                         **options: Any) -> StepCacheCalibration:
    """Run `pipeline` (a VideoPipeline) uncached and with each candidate on every seed (see the
    module docstring); `options` go to every `generate` call (num_frames, steps, height, width)."""
    check_calibration_args(target_psnr_db, seeds, candidates)
    report = progress or (lambda message: None)
    worst = {c: math.inf for c in candidates}
    evals = {c: 0 for c in candidates}
    base_evals = 0
    for seed in seeds:
        report(f"seed {seed}: uncached")
        reference = pipeline.generate(image, seed=seed, **options)
        base_evals += pipeline.stats.unet_block_evals
        run = {"frames": pipeline.stats.frames, "steps": pipeline.stats.steps, "height": pipeline.stats.height,
               "width": pipeline.stats.width}
        for candidate in candidates:
            report(f"seed {seed}: {candidate}")
            frames = pipeline.generate(image, seed=seed, step_cache=candidate, **options)
            worst[candidate] = min(worst[candidate], psnr_db(frames, reference))
            evals[candidate] += pipeline.stats.unet_block_evals
    tried = tuple(Tried(parse_step_cache(c).text(), worst[c], round(evals[c] / base_evals, 4)) for c in candidates)
    passing = [t for t in tried if t.min_psnr_db >= target_psnr_db]
    best = min(passing, key=lambda t: (t.block_evals_share, -t.min_psnr_db)) if passing else None
    return StepCacheCalibration(setting=None if best is None else best.setting, target_psnr_db=float(target_psnr_db),
                                seeds=tuple(seeds), run=run, tried=tried)


def write_step_cache_calibration(manifest: Manifest, result: StepCacheCalibration) -> Manifest:
    """Store `result` as the manifest's `video.step_cache`: only that key of the JSON on disk
    changes (fields this edgekit does not know are kept), rewritten atomically with its digest."""
    before = (manifest.root / MANIFEST_FILE).read_bytes()
    check_digest(manifest.root, before)  # the new digest must not vouch for an edit made by someone else
    raw = json.loads(before)
    raw["video"]["step_cache"] = result.to_dict()
    write_manifest(manifest.root, json.dumps(raw, indent=2, allow_nan=False) + "\n")
    return Manifest.load(manifest.root)
