"""Child process of `edgekit bench video`: one variant, one JSON line out.

    python -m edgekit.bench.video_variant --variant edgekit --package PKG --inputs IN.npz \
        --out-dir DIR [--source SVD_DIR] [--graph MONO/unet.onnx] --threads 2

Variants (every one gets the image, initial latents [1, F, C, h, w] and noise-augmentation noise
[1, 3, H, W] of IN.npz, the package's conditioning defaults and the same step count):

  diffusers          StableVideoDiffusionPipeline as is (torch, fp32), latents given, noise the
                     first draw of torch.Generator().manual_seed(seed) (checked against IN.npz)
  diffusers-memory   the same with diffusers' CPU memory switches: decode_chunk_size=1 and
                     unet.enable_forward_chunking(); enable_model_cpu_offload moves models
                     between the GPU and the CPU, so it is GPU-only and not applied here
  onnx-monolithic    one ONNX graph per model (whole UNet, VAE decoder, image encoder, VAE
                     encoder), four sessions with onnxruntime's default options opened at load
                     and kept open, driven by the runtime's own driver and SVD family with the
                     denoiser network swapped for the one-graph UNet (runtimes/video/family.py)
  edgekit            the package through edgekit.load(PKG, window=2).generate, full decode
  edgekit-chunked    the same with decode_chunk=1
  edgekit-tiled      decode_chunk=1 and spatial decode tiles of 16 latent pixels sharing 4
                     (128 / 32 output pixels with SVD's VAE), blended across the overlaps
  edgekit-groups     a package exported with --op-groups (the UNet as operator groups), unsliced,
                     full decode: what grouping alone costs
  edgekit-sliced     the same package with every group run over --slices slices of its axis
  edgekit-lean       edgekit-sliced's denoise with edgekit-tiled's decode (chunk 1 + tiles):
                     every memory switch at once
  edgekit-cached     edgekit with the step cache --step-cache (default interval:3), swap disk
  edgekit-adaptive   edgekit with the adaptive step cache --adaptive (default adaptive:0.05), swap disk
  edgekit-cached-noswap  edgekit-cached with the swap off (the cached feature stays resident)
  edgekit-streamlined    the op-group package: --slices, --step-cache, swap disk, decode chunk 1 +
                     tiles (slicing, caching and tiled decoding in one run)

Per stage (encode = CLIP image encoder + VAE encoder; denoise = every UNet step with the
scheduler; decode = VAE decoder): wall time and peak RSS. The peak of a stage is the process's
VmHWM after resetting it (Linux: "5" > /proc/self/clear_refs) when the stage starts, read when it
ends: the largest resident set of the whole process during that stage (weights still held
from earlier stages included). Where the reset is refused the numbers are cumulative high-water
marks and `stage_peak_exact` is false. `peak_rss_mb` is the largest value seen over the run,
loading included. Frames [F, H, W, 3] and denoised latents are written to --out-dir as .npy.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.measure import current_rss_mb, peak_rss_mb

VARIANTS = ("diffusers", "diffusers-memory", "onnx-monolithic", "edgekit", "edgekit-chunked", "edgekit-tiled",
            "edgekit-groups", "edgekit-sliced", "edgekit-lean", "edgekit-cached", "edgekit-adaptive",
            "edgekit-cached-noswap", "edgekit-streamlined")
# the step cache's comparison: what `edgekit bench video` runs unless --variants says otherwise
DEFAULT_VARIANTS = ("onnx-monolithic", "edgekit", "edgekit-cached", "edgekit-adaptive", "edgekit-cached-noswap",
                    "edgekit-streamlined")
CHUNK_ONE = ("edgekit-chunked", "edgekit-tiled", "edgekit-lean", "edgekit-streamlined")  # decode one frame per call
TILED = ("edgekit-tiled", "edgekit-lean", "edgekit-streamlined")
SLICED = ("edgekit-sliced", "edgekit-lean", "edgekit-streamlined")
# step-cache variants: (which setting, cache swap); the swap file goes to --out-dir
CACHED = {"edgekit-cached": ("interval", "disk"), "edgekit-adaptive": ("adaptive", "disk"),
          "edgekit-cached-noswap": ("interval", "off"), "edgekit-streamlined": ("interval", "disk")}
TILE, TILE_OVERLAP = 16, 4  # edgekit-tiled: latent pixels (x the VAE scale, 8: 128 output pixels, 32 shared)
STAGES = ("encode", "denoise", "decode")


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


class StageMeter:
    """Per-stage wall time and VmHWM peaks (see the module docstring)."""

    def __init__(self) -> None:
        self.ms: dict[str, float] = {}
        self.peak: dict[str, float | None] = {}
        self.start_rss: dict[str, float] = {}
        self.highest = peak_rss_mb() or 0.0
        self.exact = True
        self._open: dict[str, float] = {}

    def begin(self, stage: str) -> None:
        self.highest = max(self.highest, peak_rss_mb() or 0.0)
        self.exact = _reset_peak() and self.exact
        self.start_rss[stage] = round(current_rss_mb(), 1)
        self._open[stage] = time.perf_counter()

    def end(self, stage: str) -> None:
        self.ms[stage] = (time.perf_counter() - self._open.pop(stage)) * 1000
        self.peak[stage] = peak_rss_mb()
        self.highest = max(self.highest, self.peak[stage] or 0.0)

    def overall(self) -> float:
        return max(self.highest, peak_rss_mb() or 0.0)


def _conditioning(manifest: Any) -> dict[str, Any]:
    c = manifest.video.svd
    return {"fps": c.fps, "motion_bucket_id": c.motion_bucket_id, "noise_aug_strength": c.noise_aug_strength,
            "min_guidance_scale": c.min_guidance_scale, "max_guidance_scale": c.max_guidance_scale}


def wrap_method(obj: Any, name: str, before: Any = None, after: Any = None) -> None:
    """Replace obj.name with a call that runs `before(*args)` / `after(result, *args)` around it."""
    original = getattr(obj, name)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if before:
            before(*args, **kwargs)
        result = original(*args, **kwargs)
        if after:
            after(result, *args, **kwargs)
        return result

    setattr(obj, name, wrapped)


def run_diffusers(args: argparse.Namespace, inputs: dict[str, np.ndarray], manifest: Any,
                  meter: StageMeter, result: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    import torch
    from diffusers import StableVideoDiffusionPipeline
    from PIL import Image

    torch.set_num_threads(args.threads)
    loaded = time.perf_counter()
    pipeline = StableVideoDiffusionPipeline.from_pretrained(args.source)
    pipeline.set_progress_bar_config(disable=True)
    memory = args.variant == "diffusers-memory"
    if memory:
        pipeline.unet.enable_forward_chunking()
        result["switches"] = {"decode_chunk_size": 1, "unet.enable_forward_chunking": True,
                              "enable_model_cpu_offload": "not applied: it offloads between GPU and CPU (GPU-only)"}
    result["load_ms"] = (time.perf_counter() - loaded) * 1000
    image = inputs["image"]
    _, frames, _, lh, lw = inputs["latents"].shape
    height, width = image.shape[:2]
    clip = int(pipeline.image_encoder.config.image_size)
    # diffusers resizes a PIL image to 224 for CLIP but feeds a tensor to CLIP as is
    given: Any = (torch.from_numpy(image.astype(np.float32) / 255).permute(2, 0, 1)[None]
                  if (height, width) == (clip, clip) else Image.fromarray(image))
    noise = torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(int(inputs["seed"])))
    if not np.array_equal(noise.numpy(), inputs["noise"]):
        raise SystemExit("the noise in the inputs file is not the generator's first draw")
    captured: dict[str, np.ndarray] = {}
    wrap_method(pipeline, "_encode_image", before=lambda *a, **k: meter.begin("encode"))
    wrap_method(pipeline, "_encode_vae_image", after=lambda r, *a, **k: (meter.end("encode"), meter.begin("denoise")))

    def decode_start(latents: Any, *a: Any, **k: Any) -> None:
        meter.end("denoise")
        captured["latents"] = latents.detach().numpy().copy()
        meter.begin("decode")

    wrap_method(pipeline, "decode_latents", before=decode_start, after=lambda r, *a, **k: meter.end("decode"))
    started = time.perf_counter()
    with torch.no_grad():
        video = pipeline(given, height=height, width=width, num_frames=frames, num_inference_steps=args.steps,
                         generator=torch.Generator().manual_seed(int(inputs["seed"])),
                         latents=torch.from_numpy(inputs["latents"]).clone(), output_type="np",
                         decode_chunk_size=1 if memory else frames, **_conditioning(manifest)).frames[0]
    result["latency_ms"] = (time.perf_counter() - started) * 1000
    return np.asarray(video, dtype=np.float32), captured["latents"].reshape(1, frames, -1, lh, lw)


def run_edgekit(args: argparse.Namespace, inputs: dict[str, np.ndarray], manifest: Any,
                meter: StageMeter, result: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    import edgekit

    loaded = time.perf_counter()
    pipeline = edgekit.load(args.package, window=2, threads=args.threads)
    result["load_ms"] = (time.perf_counter() - loaded) * 1000
    pipeline.observers.append(meter)  # the driver tells it when each stage starts and ends
    frames = inputs["latents"].shape[1]
    height, width = inputs["image"].shape[:2]
    started = time.perf_counter()
    tiled = args.variant in TILED
    if tiled:
        result["tile"] = {"tile": TILE, "overlap": TILE_OVERLAP}
    cache: dict[str, Any] = {}
    if args.variant in CACHED:
        kind, swap = CACHED[args.variant]
        cache = {"step_cache": args.step_cache if kind == "interval" else args.adaptive, "cache_swap": swap,
                 "work_dir": args.out_dir}
    video = pipeline.generate(inputs["image"], num_frames=frames, steps=args.steps, height=height, width=width,
                              decode_chunk=1 if args.variant in CHUNK_ONE else frames,
                              decode_tile=TILE if tiled else None, decode_tile_overlap=TILE_OVERLAP if tiled else None,
                              slices=args.slices if args.variant in SLICED else None,
                              latents=inputs["latents"], noise=inputs["noise"], **cache, **_conditioning(manifest))
    result["latency_ms"] = (time.perf_counter() - started) * 1000
    result["stats"] = pipeline.stats.to_dict()
    return video, pipeline.latents


def run_monolithic(args: argparse.Namespace, inputs: dict[str, np.ndarray], manifest: Any,
                   meter: StageMeter, result: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The runtime's driver and SVD family with the streamed UNet swapped for the one-graph UNet,
    and every graph opened at load with onnxruntime's defaults and kept open (the family runs
    the kept-open encoders and decoder as they are: no arena shrink, no release)."""
    from edgekit.runtimes.backends import backend_for
    from edgekit.runtimes.video.driver import generate
    from edgekit.runtimes.video.family import OneGraph
    from edgekit.runtimes.video.svd import SvdFamily

    loaded = time.perf_counter()
    backend = backend_for("onnx", "cpu", args.threads, tuned=False)  # onnxruntime's defaults: what an app gets
    sessions = {role: backend.load(manifest.root / manifest.graph(role).path)
                for role in ("image_encoder", "vae_encoder")}
    unet = backend.load(Path(args.graph))
    sessions["vae_decoder"] = backend.load(manifest.root / manifest.graph("vae_decoder").path)
    result["load_ms"] = (time.perf_counter() - loaded) * 1000
    family = SvdFamily(manifest, backend, sessions=sessions)
    frames = inputs["latents"].shape[1]
    height, width = inputs["image"].shape[:2]
    request = family.request(image=inputs["image"], num_frames=frames, steps=args.steps, height=height, width=width,
                             decode_chunk=frames, latents=inputs["latents"], noise=inputs["noise"],
                             **_conditioning(manifest))
    started = time.perf_counter()
    run = generate(family, request, network=OneGraph(unet), observers=[meter])
    result["latency_ms"] = (time.perf_counter() - started) * 1000
    return run.frames, run.latents


def write_outputs(out_dir: str | Path, variant: str, video: np.ndarray, latents: np.ndarray, meter: StageMeter,
                  result: dict[str, Any]) -> None:
    """Frames and latents as .npy in `out_dir`, and the per-stage figures, into `result` (the
    JSON line every video bench child prints)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    frames_file, latents_file = out / f"{variant}-frames.npy", out / f"{variant}-latents.npy"
    np.save(frames_file, video.astype(np.float32))
    np.save(latents_file, np.asarray(latents, dtype=np.float32))
    result.update(stages={stage: {"ms": meter.ms.get(stage), "peak_rss_mb": meter.peak.get(stage),
                                  "start_rss_mb": meter.start_rss.get(stage)} for stage in STAGES},
                  stage_peak_exact=meter.exact, peak_rss_mb=meter.overall(), frames_file=str(frames_file),
                  latents_file=str(latents_file), shape=list(video.shape))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--variant", choices=VARIANTS, required=True)
    parser.add_argument("--package", required=True)
    parser.add_argument("--inputs", required=True)
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--source", help="the diffusers directory (diffusers variants)")
    parser.add_argument("--graph", help="the whole-UNet graph (onnx-monolithic)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--slices", type=int, default=4, help="edgekit-sliced: slices per operator group")
    parser.add_argument("--step-cache", default="interval:3", help="edgekit-cached(-noswap), -streamlined")
    parser.add_argument("--adaptive", default="adaptive:0.05", help="edgekit-adaptive's step cache")
    args = parser.parse_args()
    from edgekit.manifest import Manifest

    manifest = Manifest.load(args.package).for_format("onnx")  # the video bench measures onnxruntime
    with np.load(args.inputs) as data:
        inputs = {key: data[key] for key in data.files}
    meter = StageMeter()
    result: dict[str, Any] = {"variant": args.variant, "threads": args.threads}
    runner = {"diffusers": run_diffusers, "diffusers-memory": run_diffusers,
              "onnx-monolithic": run_monolithic}.get(args.variant, run_edgekit)  # every other variant is edgekit
    video, latents = runner(args, inputs, manifest, meter, result)
    write_outputs(args.out_dir, args.variant, video, latents, meter, result)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
