"""The Wan block cache (First-Block-Cache and the interval rule, runtimes/video/cached_dit.py), as
stories on the tiny exported Wan: threshold 0 is the uncached run bit for bit; without guidance
(one batch, so one decision per step as in diffusers) First-Block-Cache makes diffusers'
`FirstBlockCacheConfig` decisions and frames at the same threshold; the swap modes change where
the residual waits, never the result; bad settings are one line before any compute."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("diffusers")

import torch  # noqa: E402

import edgekit  # noqa: E402
from edgekit.errors import EdgekitError  # noqa: E402

PROMPT = "a red car on the beach at sunset"
RUN = {"prompt": PROMPT, "num_frames": 9, "height": 32, "width": 32, "steps": 6}
LATENT_SHAPE = (1, 16, 3, 4, 4)


def _latents(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(LATENT_SHAPE, dtype=np.float32)


def _run(package: Path, **options) -> tuple[np.ndarray, dict]:
    pipeline = edgekit.load(str(package))
    frames = pipeline.generate(**{**RUN, "latents": _latents(), **options})
    return frames, pipeline.stats.to_dict()


@pytest.mark.parametrize("setting", ["adaptive:0", "interval:1"])
def test_a_cache_that_never_reuses_is_the_uncached_run_bit_for_bit(wan_package: Path, setting: str) -> None:
    plain, _ = _run(wan_package)
    cached, stats = _run(wan_package, step_cache=setting)
    assert np.array_equal(plain, cached)
    assert stats["step_cache"]["plan"] == "F" * RUN["steps"]


def test_interval_skips_the_tail_blocks_and_swap_modes_agree(wan_package: Path, tmp_path: Path) -> None:
    plain, plain_stats = _run(wan_package)
    runs = {mode: _run(wan_package, step_cache="interval:2", cache_swap=mode, work_dir=tmp_path)
            for mode in ("off", "host", "disk")}
    frames, stats = runs["off"]
    assert stats["step_cache"]["plan"] == "FCFCFC"
    blocks = 2  # the tiny transformer's
    assert plain_stats["unet_block_evals"] == RUN["steps"] * blocks
    assert stats["unet_block_evals"] == 3 * blocks + 3 * 1  # cached steps run block 0 only
    assert not np.array_equal(frames, plain)  # the cache changed the arithmetic ...
    for mode in ("host", "disk"):  # ... and where the residual waits does not
        assert np.array_equal(runs[mode][0], frames), mode
    assert not list(tmp_path.iterdir())  # the disk swap's file is gone after the run


def test_first_block_cache_matches_diffusers_at_the_same_threshold(wan_package: Path, tiny_wan: Path) -> None:
    """Without guidance diffusers makes one First-Block-Cache decision per step on one batch, as
    edgekit does; max-skip is lifted (diffusers has none)."""
    from diffusers import FirstBlockCacheConfig, WanPipeline

    threshold = 0.3
    frames, stats = _run(wan_package, guidance_scale=1.0, step_cache=f"adaptive:{threshold},max-skip:1000")
    plan = stats["step_cache"]["plan"]
    assert "C" in plan and plan.startswith("F"), plan  # the threshold reuses on this model

    pipeline = WanPipeline.from_pretrained(tiny_wan)
    pipeline.set_progress_bar_config(disable=True)
    pipeline.transformer.enable_cache(FirstBlockCacheConfig(threshold=threshold))
    with torch.no_grad():
        out = pipeline(prompt=PROMPT, height=RUN["height"], width=RUN["width"], num_frames=RUN["num_frames"],
                       num_inference_steps=RUN["steps"], guidance_scale=1.0, latents=torch.from_numpy(_latents()),
                       output_type="np", max_sequence_length=16)
    expected = np.asarray(out.frames[0], dtype=np.float32)
    assert float(np.abs(frames - expected).max()) <= 1e-3


def test_bad_cache_settings_are_one_line_before_compute(wan_package: Path, tmp_path: Path) -> None:
    pipeline = edgekit.load(str(wan_package))
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    for options, needle in (
        ({"step_cache": "adaptive:0.1,depth:1"}, "leaves no transformer block"),
        ({"cache_swap": "disk"}, "needs a block cache"),
        ({"step_cache": "sometimes"}, "unknown mode"),
        ({"step_cache": "auto"}, "calibrated"),
        ({"step_cache": "interval:2", "cache_swap": "disk", "work_dir": blocker}, "--work"),
    ):
        with pytest.raises(EdgekitError) as caught:
            pipeline.generate(**{**RUN, **options})
        message = str(caught.value)
        assert needle in message and "\n" not in message, (options, message)
        assert pipeline.stats.graphs_loaded == 0


@pytest.mark.parametrize("setting", [
    "adaptive:0.3",  # FCCFCC on the tiny model: max-skip 2 forces full steps after cached ones
    "adaptive:0.06",  # FCFFFF: full steps decided after the head block (the split-stream path)
])
def test_first_block_cache_gives_the_same_frames_whatever_the_swap(wan_package: Path, tmp_path: Path,
                                                                   setting: str) -> None:
    """First-Block-Cache keeps three arrays across the step (tail residual, reference residual,
    the head output within a full step): moved through host or disk, the result is the in-place one."""
    frames, stats = _run(wan_package, guidance_scale=1.0, step_cache=setting)
    assert "C" in stats["step_cache"]["plan"] and "F" in stats["step_cache"]["plan"][1:]
    for mode in ("host", "disk"):
        swapped, swapped_stats = _run(wan_package, guidance_scale=1.0, step_cache=setting, cache_swap=mode,
                                      work_dir=tmp_path)
        assert swapped_stats["step_cache"]["plan"] == stats["step_cache"]["plan"]
        assert np.array_equal(swapped, frames), mode
    assert not list(tmp_path.iterdir())
