"""Wan 2.1 text to video, as stories: build a tiny random WanPipeline from configs -> export it with
`edgekit export` -> run it with the torch-free runtime -> compare with diffusers' WanPipeline on
the same initial latents."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("diffusers")

import torch  # noqa: E402

import edgekit  # noqa: E402
from edgekit.cli import app  # noqa: E402
from edgekit.errors import InvalidArgumentError  # noqa: E402
from edgekit.manifest import Manifest  # noqa: E402
from tests.test_runtime_without_torch import BLOCKER  # noqa: E402

runner = CliRunner()
PROMPT, NEGATIVE = "a red car on the beach at sunset", "blue"
FRAMES, SIZE, STEPS = 9, 32, 3  # 3 latent frames of 4x4 (VAE scale 8), 2x2 patches: 12 tokens
LATENT_SHAPE = (1, 16, 3, SIZE // 8, SIZE // 8)


@pytest.fixture(scope="module")
def diffusers_pipeline(tiny_wan: Path):
    from diffusers import WanPipeline

    pipeline = WanPipeline.from_pretrained(tiny_wan)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def _latents(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(LATENT_SHAPE, dtype=np.float32)


def _diffusers(pipeline, latents: np.ndarray, guidance_scale: float = 5.0, steps: int = STEPS) -> np.ndarray:
    with torch.no_grad():
        out = pipeline(prompt=PROMPT, negative_prompt=NEGATIVE, height=SIZE, width=SIZE, num_frames=FRAMES,
                       num_inference_steps=steps, guidance_scale=guidance_scale,
                       latents=torch.from_numpy(latents.copy()), output_type="np", max_sequence_length=16)
    return np.asarray(out.frames[0], dtype=np.float32)


# --- export ------------------------------------------------------------------------------
def test_export_writes_a_consistent_wan_package(wan_package: Path) -> None:
    manifest = Manifest.load(wan_package)
    manifest.verify()
    assert [(g.role, g.index) for g in manifest.graphs] == [
        ("text_encoder", None), ("dit_embed", None), ("dit_block", 0), ("dit_block", 1), ("dit_head", None),
        ("vae_decoder_first", None), ("vae_decoder_next", None)]
    wan = manifest.video.wan
    assert manifest.family == "wan" and manifest.video.scheduler["_class_name"] == "UniPCMultistepScheduler"
    assert wan.max_sequence_length == 16 and wan.patch_size == (1, 2, 2) and wan.vae_scale_factor_temporal == 4
    assert len(wan.latents_mean) == len(wan.latents_std) == 16
    assert manifest.video.conditioning.size_multiple == 16
    assert manifest.parity["dit_chained_max_abs_diff"] < 1e-4
    assert manifest.parity["decode_chained_max_abs_diff"] < 1e-5


# --- run vs diffusers ----------------------------------------------------------------------
@pytest.mark.parametrize("guidance_scale", [5.0, 1.0])
def test_frames_equal_diffusers_on_the_same_latents(wan_package: Path, diffusers_pipeline,
                                                    guidance_scale: float) -> None:
    latents = _latents()
    expected = _diffusers(diffusers_pipeline, latents, guidance_scale)
    pipeline = edgekit.load(str(wan_package))
    frames = pipeline.generate(prompt=PROMPT, negative_prompt=NEGATIVE, num_frames=FRAMES, steps=STEPS, height=SIZE,
                               width=SIZE, guidance_scale=guidance_scale, latents=latents)
    assert frames.shape == expected.shape == (FRAMES, SIZE, SIZE, 3)
    assert float(np.abs(frames - expected).max()) <= 1e-3
    assert pipeline.stats.guidance == (guidance_scale > 1)
    assert pipeline.stats.max_resident_graphs <= 2


def test_chunked_decode_equals_frame_by_frame_decode(wan_package: Path) -> None:
    pipeline = edgekit.load(str(wan_package))
    pipeline.generate(prompt=PROMPT, num_frames=FRAMES, steps=2, height=SIZE, width=SIZE, seed=3)
    latents = pipeline.latents
    by_frame = pipeline.decode(latents)
    for chunk in (2, 3):
        assert float(np.abs(pipeline.decode(latents, decode_chunk=chunk) - by_frame).max()) <= 1e-5


def test_decode_refuses_latents_it_cannot_decode_in_one_line(wan_package: Path) -> None:
    pipeline = edgekit.load(str(wan_package))
    for latents in ([[1.0]], np.zeros((2, 16, 1, 4, 4), np.float32), np.zeros((1, 4, 1, 4, 4), np.float32)):
        with pytest.raises(InvalidArgumentError) as caught:
            pipeline.decode(latents)
        assert "latents must be an array [1, 16, T, h, w]" in str(caught.value)


def test_window_one_equals_window_two_bit_for_bit(wan_package: Path) -> None:
    runs = [edgekit.load(str(wan_package), window=window).generate(prompt=PROMPT, num_frames=5, steps=2, height=16,
                                                                    width=32, seed=1) for window in (1, 2)]
    assert np.array_equal(runs[0], runs[1])


# --- bad input: one line, before any compute -------------------------------------------------
@pytest.mark.parametrize("options, needle", [
    ({"num_frames": 8}, "4k+1"),
    ({"height": 24}, "multiples of 16"),
    ({"prompt": "   "}, "prompt is empty"),
    ({"guidance_scale": -1.0}, "guidance_scale"),
    ({"latents": np.zeros((1, 16, 2, 4, 4), dtype=np.float32)}, "latents has shape"),
    ({"image": np.zeros((8, 8, 3))}, "not --image"),
    ({"guidance_scale": "5"}, "must be a number"),
    ({"latents": np.full(LATENT_SHAPE, np.nan, dtype=np.float32)}, "NaN"),
    ({"num_frames": 4 * 33 + 1}, "rope_max_seq_len 32"),  # 34 latent frames: past the tiny DiT's rotary table
])
def test_bad_input_is_one_line_before_compute(wan_package: Path, options: dict, needle: str) -> None:
    pipeline = edgekit.load(str(wan_package))
    given = {"prompt": PROMPT, "num_frames": FRAMES, "height": SIZE, "width": SIZE, **options}
    image = given.pop("image", None)
    with pytest.raises(InvalidArgumentError) as caught:
        pipeline.generate(image, **given)
    assert needle in str(caught.value) and "\n" not in str(caught.value)
    assert pipeline.stats.graphs_loaded == 0


def test_cli_runs_a_prompt_and_refuses_bad_input(wan_package: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.gif"
    result = runner.invoke(app, ["run", str(wan_package), "--prompt", PROMPT, "--frames", "5", "--steps", "2",
                                 "--height", "16", "--width", "16", "--out", str(out), "--seed", "2", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert payload["frames"] == 5 and out.is_file() and payload["stats"]["steps"] == 2
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n", encoding="utf-8")
    for args, needle in (
        (["--prompt-file", str(empty)], "is empty"),
        (["--prompt", PROMPT, "--frames", "6"], "4k+1"),
        (["--prompt", PROMPT, "--height", "20"], "multiples of 16"),
        (["--image", str(empty)], "--prompt"),
        ([], "--prompt"),
    ):
        result = runner.invoke(app, ["run", str(wan_package), *args, "--out", str(tmp_path / "x.gif")])
        message = result.stderr.strip()
        assert result.exit_code == 2 and "\n" not in message and needle in message, (args, message)
        assert not (tmp_path / "x.gif").exists()


def test_runtime_runs_with_heavy_modules_blocked(wan_package: Path) -> None:
    code = BLOCKER + textwrap.dedent(f"""
        import json, sys, edgekit
        frames = edgekit.load({str(wan_package)!r}).generate(prompt="a cat", num_frames=5, steps=1, height=16,
                                                            width=16)
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
        print(json.dumps({{"shape": list(frames.shape), "heavy": heavy}}))
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"shape": [5, 16, 16, 3], "heavy": []}


def test_calibrate_refuses_a_wan_package_in_one_line(wan_package: Path) -> None:
    result = runner.invoke(app, ["calibrate", str(wan_package), "--target-psnr", "30"])
    message = result.stderr.strip()
    assert result.exit_code == 2 and "\n" not in message and "wan package" in message
