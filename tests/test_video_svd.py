"""Video diffusion (SVD family), as stories: build a tiny random SVD from configs -> export it with
`edgekit export --task video` -> run it with the torch-free runtime -> compare with diffusers."""

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

from edgekit.cli import app  # noqa: E402
from edgekit.errors import InvalidArgumentError, NotAPackageError  # noqa: E402
from edgekit.manifest import Manifest  # noqa: E402
from tests.test_runtime_without_torch import BLOCKER  # noqa: E402

runner = CliRunner()
FRAMES, SIZE = 4, 32


@pytest.fixture(scope="module")
def diffusers_pipeline(tiny_svd: Path):
    from diffusers import StableVideoDiffusionPipeline

    pipeline = StableVideoDiffusionPipeline.from_pretrained(tiny_svd)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def _inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(image [1,3,H,W] in [0,1], initial latents [1,F,4,h,w], noise-augmentation noise [1,3,H,W]).
    The noise is the first draw of torch.Generator().manual_seed(seed), as the pipeline makes it."""
    image = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(100 + seed))
    latents = torch.randn(1, FRAMES, 4, SIZE // 2, SIZE // 2, generator=torch.Generator().manual_seed(200 + seed))
    noise = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))
    return image, latents, noise


def _image_array(image: torch.Tensor) -> np.ndarray:
    return image[0].permute(1, 2, 0).numpy()


# --- export ------------------------------------------------------------------------------
def test_export_writes_a_consistent_video_package(svd_package: Path) -> None:
    manifest = Manifest.load(svd_package)
    manifest.verify()
    assert [(g.role, g.index) for g in manifest.graphs] == [
        ("image_encoder", None), ("vae_encoder", None), ("time_embedding", None), ("down_block", 0),
        ("down_block", 1), ("mid_block", None), ("up_block", 0), ("up_block", 1), ("vae_decoder", None)]
    assert manifest.video.scheduler["_class_name"] == "EulerDiscreteScheduler"
    assert manifest.video.scheduler["prediction_type"] == "v_prediction" and manifest.video.scheduler["use_karras_sigmas"]
    c, svd = manifest.video.conditioning, manifest.video.svd
    assert (svd.fps, svd.motion_bucket_id, svd.noise_aug_strength, c.vae_scale_factor, svd.clip_image_size) == \
        (7, 127, 0.02, 2, 32)
    parity = manifest.parity
    assert max(parity["graphs_max_abs_diff"].values()) <= 1e-4 and parity["unet_chained_max_abs_diff"] <= 1e-4
    assert len(parity["shapes_checked"]) == 2  # a second batch/frames/height/width per graph
    decoder = manifest.graph("vae_decoder")
    assert [spec.shape for spec in decoder.inputs] == [("frames", 4, "latent_height", "latent_width")]
    verified = runner.invoke(app, ["verify", str(svd_package)])
    assert verified.exit_code == 0 and f"{len(manifest.files())} files verified" in verified.output, verified.output
    inspected = runner.invoke(app, ["inspect", str(svd_package)])
    assert inspected.exit_code == 0 and "task video" in inspected.stdout and "vae_decoder" in inspected.stdout
    # the ranking runtime refuses the package by task, in one line
    from edgekit.runtimes.selector import Selector

    with pytest.raises(NotAPackageError, match="is a video package"):
        Selector(manifest, None)


def test_tampered_skip_wiring_is_refused(svd_package: Path, tmp_path: Path) -> None:
    data = json.loads((svd_package / "manifest.json").read_text())
    up = next(g for g in data["graphs"] if g["role"] == "up_block")
    up["inputs"] = [spec for spec in up["inputs"] if not spec["name"].startswith("skip_")]
    with pytest.raises(NotAPackageError, match="never consumed"):
        Manifest.from_dict(data, tmp_path)


# --- generation vs diffusers ---------------------------------------------------------------
def test_two_steps_match_diffusers_frame_for_frame(svd_package: Path, diffusers_pipeline) -> None:
    import edgekit

    image, latents, noise = _inputs()
    options = {"min_guidance_scale": 1.0, "max_guidance_scale": 2.5, "fps": 7, "motion_bucket_id": 127,
               "noise_aug_strength": 0.02}
    expected = diffusers_pipeline(image, height=SIZE, width=SIZE, num_frames=FRAMES, num_inference_steps=2,
                                  generator=torch.Generator().manual_seed(0), latents=latents.clone(),
                                  output_type="np", **options).frames[0]
    pipeline = edgekit.load(str(svd_package))
    frames = pipeline.generate(_image_array(image), num_frames=FRAMES, steps=2, height=SIZE, width=SIZE,
                               latents=latents.numpy(), noise=noise.numpy(), **options)
    assert frames.shape == expected.shape == (FRAMES, SIZE, SIZE, 3) and frames.dtype == np.float32
    diff = float(np.abs(frames - expected).max())
    print(f"max |edgekit - diffusers| over {FRAMES} frames, 2 steps: {diff:.3g}")
    assert diff <= 1e-3
    assert pipeline.stats.max_resident_graphs <= 2 and pipeline.stats.guidance


def test_chunked_decode_with_all_frames_equals_the_full_decode(svd_package: Path, diffusers_pipeline) -> None:
    import edgekit

    pipeline = edgekit.load(str(svd_package))
    latents = np.random.default_rng(0).standard_normal((1, FRAMES, 4, SIZE // 2, SIZE // 2), dtype=np.float32)
    full = pipeline.decode(latents, None)
    same = pipeline.decode(latents, FRAMES)
    assert float(np.abs(full - same).max()) == 0.0
    # chunks of 2 are diffusers' decode_chunk_size approximation: SVD's temporal decoder mixes frames
    halves = pipeline.decode(latents, 2)
    with torch.no_grad():
        reference = diffusers_pipeline.decode_latents(torch.from_numpy(latents), FRAMES, decode_chunk_size=2)
    reference_frames = (reference[0].permute(1, 2, 3, 0) / 2 + 0.5).clamp(0, 1).numpy()
    chunk_vs_diffusers = float(np.abs(halves - reference_frames).max())
    chunk_vs_full = float(np.abs(halves - full).max())
    print(f"decode chunk 2: vs diffusers' chunk-2 decode {chunk_vs_diffusers:.3g}, vs the full decode {chunk_vs_full:.3g}")
    assert chunk_vs_diffusers <= 1e-4


def test_scheduler_matches_diffusers_for_common_configs() -> None:
    from diffusers import EulerDiscreteScheduler

    from edgekit.models.video_svd import SVD_SCHEDULER
    from edgekit.runtimes.video.scheduler import EulerScheduler

    configs = [SVD_SCHEDULER, {}, {"prediction_type": "v_prediction", "timestep_spacing": "trailing"},
               {"beta_schedule": "scaled_linear", "use_karras_sigmas": True, "timestep_spacing": "leading",
                "steps_offset": 1}, {"interpolation_type": "log_linear", "final_sigmas_type": "sigma_min"}]
    rng = np.random.default_rng(0)
    for config in configs:
        reference = EulerDiscreteScheduler(**config)
        reference.set_timesteps(5)
        ours = EulerScheduler(config).schedule(5)
        np.testing.assert_allclose(ours.timesteps, reference.timesteps.numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(ours.sigmas, reference.sigmas.numpy(), rtol=1e-5)
        assert abs(float(ours.init_noise_sigma) - float(reference.init_noise_sigma)) <= 1e-3 * float(ours.init_noise_sigma)
        x = rng.standard_normal((1, 2, 4, 3, 3), dtype=np.float32) * float(ours.init_noise_sigma)
        for i, t in enumerate(reference.timesteps):
            out = rng.standard_normal(x.shape, dtype=np.float32)
            scaled = reference.scale_model_input(torch.from_numpy(x), t).numpy()
            np.testing.assert_allclose(ours.scale(x, i), scaled, rtol=1e-5, atol=1e-6)
            expected = reference.step(torch.from_numpy(out), t, torch.from_numpy(x)).prev_sample.numpy()
            x_next = ours.step(out, i, x)
            np.testing.assert_allclose(x_next, expected, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(x).max())))
            x = expected


def test_clip_resize_matches_diffusers_antialiasing() -> None:
    from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import (
        _resize_with_antialiasing,
    )

    from edgekit.runtimes.video.images import resize_antialias

    image = torch.rand(1, 3, 56, 40, generator=torch.Generator().manual_seed(3)) * 2 - 1
    expected = _resize_with_antialiasing(image, (32, 32)).numpy()
    assert float(np.abs(resize_antialias(image.numpy(), 32) - expected).max()) <= 1e-4


# --- the CLI and the torch-free runtime ----------------------------------------------------
def test_cli_run_writes_gif_and_png_frames(svd_package: Path, tmp_path: Path) -> None:
    from PIL import Image

    source = tmp_path / "in.png"
    Image.fromarray((np.random.default_rng(1).random((SIZE, SIZE, 3)) * 255).astype(np.uint8)).save(source)
    out = tmp_path / "video" / "out.gif"
    result = runner.invoke(app, ["run", str(svd_package), "--image", str(source), "--frames", "3", "--steps", "2",
                                 "--out", str(out), "--decode-chunk", "2", "--seed", "5", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert payload["frames"] == 3 and payload["stats"]["decode_chunk"] == 2 and payload["stats"]["max_resident_graphs"] <= 2
    with Image.open(out) as gif:
        assert gif.n_frames == 3 and gif.size == (SIZE, SIZE)
    assert sorted(p.name for p in (tmp_path / "video" / "out_frames").iterdir()) == [
        "frame_000.png", "frame_001.png", "frame_002.png"]


def test_generation_runs_with_torch_and_diffusers_blocked(svd_package: Path) -> None:
    code = BLOCKER + textwrap.dedent(f"""
        import json, sys, numpy as np, edgekit
        frames = edgekit.load({str(svd_package)!r}).generate(np.full((32, 32, 3), 0.5, np.float32),
                                                             num_frames=2, steps=1, seed=0)
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
        print(json.dumps({{"shape": list(frames.shape), "heavy": heavy}}))
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"shape": [2, 32, 32, 3], "heavy": []}


@pytest.mark.parametrize(("argv", "needle"), [
    (["--frames", "2"], "--image"),
    (["--image", "{missing}"], "does not exist"),
    (["--image", "{gray}"], "mode is L"),
    (["--image", "{rgb}", "--frames", "0"], "num_frames must be a positive integer"),
    (["--image", "{rgb}", "--height", "30"], "multiples of 8"),
    (["--image", "{rgb}", "--query", "q"], "ranking options"),
])
def test_bad_video_input_is_one_line_exit_2(svd_package: Path, tmp_path: Path, argv: list[str], needle: str) -> None:
    from PIL import Image

    Image.new("L", (SIZE, SIZE)).save(tmp_path / "gray.png")
    Image.new("RGB", (SIZE, SIZE)).save(tmp_path / "rgb.png")
    paths = {"missing": tmp_path / "nope.png", "gray": tmp_path / "gray.png", "rgb": tmp_path / "rgb.png"}
    args = [a.format(**paths) for a in argv]
    result = runner.invoke(app, ["run", str(svd_package), *args, "--out", str(tmp_path / "o.gif"), "--steps", "1"])
    assert result.exit_code == 2, result.output
    message = result.stderr.strip()
    assert message.startswith("error: ") and "\n" not in message and needle in message, message


def test_bad_api_input_raises_typed_errors(svd_package: Path) -> None:
    import edgekit

    pipeline = edgekit.load(str(svd_package))
    rgb = np.zeros((SIZE, SIZE, 3), np.float32)
    for kwargs, needle in [({"image": None}, "input image is required"),
                           ({"image": np.zeros((SIZE, SIZE, 4), np.uint8)}, "expected [H, W, 3]"),
                           ({"image": rgb, "num_frames": 0}, "num_frames"),
                           ({"image": rgb, "width": 20}, "multiples of 8"),
                           ({"image": rgb, "latents": np.zeros((1, 2, 4, 4, 4), np.float32)}, "latents has shape"),
                           ({"image": rgb, "prompt": "a cat"}, "'prompt' is not an option of the svd family")]:
        with pytest.raises(InvalidArgumentError, match=None) as caught:
            pipeline.generate(**{"num_frames": 2, "steps": 1, **kwargs})
        assert needle in str(caught.value)


def test_export_refuses_a_non_svd_directory(tmp_path: Path) -> None:
    (tmp_path / "not-svd").mkdir()
    result = runner.invoke(app, ["export", str(tmp_path / "not-svd"), "--task", "video", "--out", str(tmp_path / "p")])
    assert result.exit_code == 2 and "model_index.json" in result.stderr


def test_an_image_of_another_size_is_resized_for_the_vae_and_clip(svd_package: Path) -> None:
    import edgekit

    image = (np.random.default_rng(2).random((48, 40, 3)) * 255).astype(np.uint8)
    frames = edgekit.load(str(svd_package)).generate(image, num_frames=2, steps=1, height=16, width=24, seed=1)
    assert frames.shape == (2, 16, 24, 3) and np.isfinite(frames).all() and 0 <= frames.min() <= frames.max() <= 1
