"""The deep-feature step cache, as stories: build a tiny random SVD -> export it (block graphs, and
operator groups) -> run with `step_cache=` -> the schedule, the UNet blocks the sessions really
ran, the swap and the slices behave as docs/VIDEO.md ("Step cache") says."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("diffusers")

import edgekit  # noqa: E402
from edgekit.cli import app  # noqa: E402
from edgekit.errors import InvalidArgumentError  # noqa: E402
from edgekit.runtimes.video.step_cache import StepCache, StepPlanner, parse_step_cache  # noqa: E402

runner = CliRunner()
FRAMES, SIZE, STEPS = 2, 16, 10
DEEP = {"down_block_1", "mid_block", "up_block_0"}  # the tiny UNet's deep branch at depth 0
SHALLOW = {"down_block_0", "up_block_1"}


class CountingBackend:
    """A backend whose sessions count their runs per graph file: what the UNet really ran."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.runs = inner, Counter()

    def load(self, path: Path) -> Any:
        session, runs = self.inner.load(path), self.runs

        class Counted:
            def run(self, feeds: dict[str, np.ndarray], **kwargs: Any) -> Any:
                runs[Path(path).stem] += 1
                return session.run(feeds, **kwargs)

            def __getattr__(self, name: str) -> Any:
                return getattr(session, name)

        return Counted()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.fixture(scope="module")
def grouped(tiny_svd: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("grouped-cache") / "pkg"
    result = runner.invoke(app, ["export", str(tiny_svd), "--task", "video", "--out", str(out), "--op-groups"])
    assert result.exit_code == 0, result.output
    return out


def _image() -> np.ndarray:
    return np.random.default_rng(3).random((SIZE, SIZE, 3)).astype(np.float32)


def _run(package: Path, steps: int = STEPS, counting: bool = False, **options: Any) -> tuple[Any, dict[str, Any]]:
    pipeline = edgekit.load(str(package))
    if counting:
        pipeline.backend = CountingBackend(pipeline.backend)
    frames = pipeline.generate(_image(), num_frames=FRAMES, steps=steps, height=SIZE, width=SIZE, seed=1, **options)
    runs = pipeline.backend.runs if counting else None
    return (frames, pipeline.latents, runs), pipeline.stats.to_dict()


@pytest.fixture(scope="module")
def uncached(svd_package: Path) -> tuple[Any, dict[str, Any]]:
    return _run(svd_package, counting=True)


# --- exactness ---------------------------------------------------------------------------
@pytest.mark.parametrize("setting", ["interval:1", "adaptive:0", "adaptive:0,max-skip:5,warmup:1"])
def test_settings_that_never_reuse_equal_the_uncached_run_bit_for_bit(svd_package: Path, uncached: Any,
                                                                      setting: str) -> None:
    (frames, latents, _), stats = _run(svd_package, step_cache=setting)
    (ref_frames, ref_latents, _), _ = uncached
    assert np.array_equal(latents, ref_latents) and np.array_equal(frames, ref_frames)
    assert stats["step_cache"]["plan"] == "F" * STEPS and stats["step_cache"]["swap"]["writes"] == 0


# --- the schedule ------------------------------------------------------------------------
@pytest.mark.parametrize(("setting", "plan"), [
    ("interval:3", "FCCFCCFCCF"),                       # DeepCache: one full, N-1 cached
    ("interval:4,max-skip:2", "FCCFCCFCCF"),            # max-skip caps the interval's run of cached steps
    ("interval:2,warmup:3", "FFFCFCFCFC"),              # the first W steps are full
    ("adaptive:1e9,max-skip:2,warmup:2", "FFCCFCCFCC"),  # always under the threshold: max-skip decides
    ("adaptive:1e-12", "FFFFFFFFFF"),                   # never under it: every step full
])
def test_schedule_on_the_tiny_svd(svd_package: Path, uncached: Any, setting: str, plan: str) -> None:
    (_, latents, _), stats = _run(svd_package, step_cache=setting)
    cache = stats["step_cache"]
    assert cache["plan"] == plan and cache["full_steps"] == plan.count("F")
    if setting.startswith("adaptive"):
        # the statistic is taken on every step that may reuse (a cache exists, past warmup, under max-skip)
        measured = [i for i, change in enumerate(cache["changes"]) if change is not None]
        assert measured and all(cache["changes"][i] > 0 for i in measured)
        assert all(plan[i] == "C" or setting == "adaptive:1e-12" for i in measured)
    if "C" in plan:  # reusing features changes the result (random weights: the size says nothing)
        assert not np.array_equal(latents, uncached[0][1])


def test_planner_alone_adaptive_threshold_and_max_skip() -> None:
    planner = StepPlanner(parse_step_cache("adaptive:0.1,max-skip:1,warmup:1"))
    decisions = []
    for i, change in enumerate([None, 0.05, 0.05, 0.5, 0.01]):
        may = planner.may_reuse(i)
        cached = may and planner.decide(change)
        planner.record(cached, change if may else None)
        decisions.append((may, cached))
    # step 0 full (no cache); 1 reuses; 2 may not (max-skip 1); 3 too large; 4 reuses
    assert decisions == [(False, False), (True, True), (False, False), (True, False), (True, True)]
    assert "".join(planner.plan) == "FCFFC"


# --- the work really drops ---------------------------------------------------------------
def test_unet_block_evaluations_counted_from_the_sessions_drop_by_the_schedules_share(svd_package: Path,
                                                                                      uncached: Any) -> None:
    (_, _, runs), stats = _run(svd_package, counting=True, step_cache="interval:3")
    (_, _, base_runs), base_stats = uncached
    full, cached = stats["step_cache"]["full_steps"], stats["step_cache"]["cached_steps"]
    assert (full, cached) == (4, 6)
    assert all(base_runs[block] == STEPS for block in DEEP | SHALLOW)
    assert all(runs[block] == full for block in DEEP) and all(runs[block] == STEPS for block in SHALLOW)
    blocks = sum(runs[block] for block in DEEP | SHALLOW)
    base_blocks = sum(base_runs[block] for block in DEEP | SHALLOW)
    assert blocks == stats["unet_block_evals"] and base_blocks == base_stats["unet_block_evals"] == 5 * STEPS
    assert blocks / base_blocks == pytest.approx((full * 5 + cached * 2) / (STEPS * 5))  # 32 of 50
    assert runs["time_embedding"] == STEPS and runs["vae_decoder"] == base_runs["vae_decoder"] == 1


def test_depth_one_caches_the_mid_blocks_output(svd_package: Path) -> None:
    (_, _, runs), stats = _run(svd_package, counting=True, step_cache="interval:2,depth:1")
    assert stats["step_cache"]["shallow_blocks"] == ["down_block_0", "down_block_1", "up_block_0", "up_block_1"]
    assert runs["mid_block"] == stats["step_cache"]["full_steps"] == 5 and runs["down_block_1"] == STEPS


# --- swap ------------------------------------------------------------------------------
def test_swap_host_and_disk_give_the_latents_of_swap_off(svd_package: Path, tmp_path: Path) -> None:
    (frames, latents, _), off = _run(svd_package, step_cache="interval:3", cache_swap="off")
    for mode in ("host", "disk"):
        (swapped_frames, swapped, _), stats = _run(svd_package, step_cache="interval:3", cache_swap=mode,
                                                   work_dir=tmp_path)
        assert np.array_equal(swapped, latents) and np.array_equal(swapped_frames, frames)
        swap = stats["step_cache"]["swap"]
        # one write per full step but the last, one read per cached step, timings reported
        assert swap["mode"] == mode and swap["writes"] == 3 and swap["reads"] == 6
        assert swap["wait_ms"] >= 0 and swap["hidden_share"] is not None and 0 <= swap["hidden_share"] <= 1
    assert off["step_cache"]["swap"]["writes"] == 0
    assert list(tmp_path.iterdir()) == []  # the disk cache file is gone after the run


# --- composition with slices and decode tiles ----------------------------------------------
def test_slices_with_the_cache_equal_the_unsliced_cached_run(grouped: Path, svd_package: Path) -> None:
    options = {"step_cache": "interval:3", "decode_chunk": 1, "decode_tile": 4, "decode_tile_overlap": 1}
    (frames, latents, _), stats = _run(grouped, **options)
    (sliced_frames, sliced, _), sliced_stats = _run(grouped, slices=4, cache_swap="disk", **options)
    assert sliced_stats["slices"] == 4 and sliced_stats["decode_tiles"] > 1
    assert sliced_stats["step_cache"]["plan"] == stats["step_cache"]["plan"] == "FCCFCCFCCF"
    scale = max(1.0, float(np.abs(latents).max()))
    assert float(np.abs(sliced - latents).max()) <= 1e-5 * scale  # the exporter's slice tolerance
    assert float(np.abs(sliced_frames - frames).max()) <= 1e-4
    # the groups count as the same blocks as the block package's graphs
    (_, _, _), block_stats = _run(svd_package, step_cache="interval:3")
    assert stats["unet_block_evals"] == block_stats["unet_block_evals"] == 32


# --- refusals ----------------------------------------------------------------------------
@pytest.mark.parametrize(("options", "needle"), [
    (["--step-cache", "interval:0"], "interval must be >= 1"),
    (["--step-cache", "adaptive:-1"], "threshold must be a finite number >= 0"),
    (["--step-cache", "interval:3,depth:2"], "depth:2 is not a depth of this package's UNet"),
    (["--step-cache", "interval:3,speed:2"], "unknown option 'speed:2'"),
    (["--step-cache", "interval:3", "--cache-swap", "usb"], "cache swap must be one of off, host, disk"),
    (["--cache-swap", "host"], "needs a step cache"),
    (["--step-cache", "interval:3", "--cache-swap", "disk", "--work", "{file}/sub"], "cannot write its cache file"),
])
def test_bad_settings_exit_2_with_one_line_before_any_compute(svd_package: Path, tmp_path: Path,
                                                              options: list[str], needle: str) -> None:
    image = tmp_path / "in.png"
    from PIL import Image

    Image.fromarray((_image() * 255).astype(np.uint8)).save(image)
    options = [o.replace("{file}", str(image)) for o in options]
    out = tmp_path / "out.gif"
    result = runner.invoke(app, ["run", str(svd_package), "--image", str(image), "--out", str(out), *options])
    assert result.exit_code == 2, result.output
    assert needle in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert not out.exists()


def test_the_api_raises_before_loading_any_graph(svd_package: Path) -> None:
    pipeline = edgekit.load(str(svd_package))
    pipeline.backend = CountingBackend(pipeline.backend)
    for setting in ("interval:0", "adaptive:-1", "interval:2,depth:9", "interval:2,warmup:0", 3):
        with pytest.raises(InvalidArgumentError):
            pipeline.generate(_image(), num_frames=FRAMES, steps=2, height=SIZE, width=SIZE, step_cache=setting)
    assert sum(pipeline.backend.runs.values()) == 0
    assert parse_step_cache("interval:3").text() == "interval:3,depth:0,max-skip:2,warmup:1"
    assert parse_step_cache(None) == StepCache() and not StepCache().enabled


# --- calibration -------------------------------------------------------------------------
def test_calibrate_picks_the_fewest_block_evaluations_that_keep_the_psnr_and_auto_runs_it(
        tiny_svd: Path, tmp_path: Path) -> None:
    from edgekit.manifest import Manifest
    from edgekit.runtimes.video.calibrate import calibrate_step_cache, write_step_cache_calibration

    package = tmp_path / "pkg"
    assert runner.invoke(app, ["export", str(tiny_svd), "--task", "video", "--out", str(package)]).exit_code == 0
    pipeline = edgekit.load(str(package))
    options = {"num_frames": FRAMES, "steps": 6, "height": SIZE, "width": SIZE}
    candidates = ("interval:3", "interval:2", "adaptive:1e-12")
    loose = calibrate_step_cache(pipeline, _image(), target_psnr_db=1.0, seeds=(0,), candidates=candidates, **options)
    # every candidate keeps 1 dB: the fewest evaluations wins (interval:3: F C C F C C, 4/6 cached ... 18 of 30)
    shares = {t.setting.split(",")[0]: t.block_evals_share for t in loose.tried}
    assert shares == {"interval:3": 0.6, "interval:2": 0.7, "adaptive:1e-12": 1.0}
    assert loose.setting == "interval:3,depth:0,max-skip:2,warmup:1"
    # a target only the never-reusing candidate keeps (identical frames: inf dB)
    strict = calibrate_step_cache(pipeline, _image(), target_psnr_db=500.0, seeds=(0, 1), candidates=candidates,
                                  **options)
    assert strict.setting == "adaptive:1e-12,depth:0,max-skip:2,warmup:1"
    assert {t.setting.split(",")[0] for t in strict.tried if math.isinf(t.min_psnr_db)} == {"adaptive:1e-12"}
    updated = write_step_cache_calibration(Manifest.load(package), loose)
    assert updated.video.step_cache["setting"] == loose.setting and updated.video.step_cache["seeds"] == [0]
    assert runner.invoke(app, ["verify", str(package)]).exit_code == 0  # the digest follows the rewrite
    (_, _, _), stats = _run(package, steps=6, step_cache="auto")
    assert stats["step_cache"]["settings"] == loose.setting and stats["step_cache"]["plan"] == "FCCFCC"
    # a calibrated setting the runtime cannot parse is a manifest error, not a run
    raw = json.loads((package / "manifest.json").read_text())
    raw["video"]["step_cache"]["setting"] = "interval:0"
    from edgekit.package_digest import write_manifest

    write_manifest(package, json.dumps(raw))
    result = runner.invoke(app, ["inspect", str(package)])
    assert result.exit_code == 2 and "video.step_cache.setting" in result.output


def test_calibrate_cli_stores_a_setting_and_refuses_bad_input(tiny_svd: Path, tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    assert runner.invoke(app, ["export", str(tiny_svd), "--task", "video", "--out", str(package)]).exit_code == 0
    for options, needle in ((["--target-psnr", "-3"], "--target-psnr must be a positive number"),
                            ([], "needs --target-psnr"), (["--target-psnr", "30", "--seeds", "0"], "--seeds"),
                            (["--target-psnr", "30", "--data", "q.jsonl"], "--data is for ranking")):
        result = runner.invoke(app, ["calibrate", str(package), *options])
        assert result.exit_code == 2 and needle in result.output, result.output
    from PIL import Image

    Image.fromarray((_image() * 255).astype(np.uint8)).save(tmp_path / "in.png")
    never = runner.invoke(app, ["run", str(package), "--image", str(tmp_path / "in.png"), "--out",
                                str(tmp_path / "o.gif"), "--step-cache", "auto"])
    assert never.exit_code == 2 and "run `edgekit calibrate PKG --target-psnr DB` first" in never.output
    result = runner.invoke(app, ["calibrate", str(package), "--target-psnr", "1", "--seeds", "1", "--steps", "3",
                                 "--frames", "2", "--json"])
    assert result.exit_code == 0, result.output
    stored = json.loads(result.stdout)["step_cache"]
    assert stored["setting"] is not None and stored["target_psnr_db"] == 1.0 and len(stored["tried"]) == 8
    assert stored["min_psnr_db"] >= 1.0 and (stored["frames"], stored["steps"]) == (2, 3)


def test_a_swap_write_that_fails_mid_run_is_one_error_line_not_a_traceback(tmp_path: Path) -> None:
    from edgekit.errors import EdgekitError
    from edgekit.runtimes.video.cache_swap import CacheSwap

    folder = tmp_path / "work"
    folder.mkdir()
    swap = CacheSwap("disk", folder)
    feature = np.arange(12, dtype=np.float32).reshape(3, 4)
    swap.put(feature)
    assert np.array_equal(swap.take(), feature)  # the round trip through the mapped file
    next(folder.iterdir()).unlink()  # the file vanishes (a cleaned-up temporary folder)
    try:
        with pytest.raises(EdgekitError, match="could not move the step cache's feature"):
            swap.take()
    finally:
        swap.close()
