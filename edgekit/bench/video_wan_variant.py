"""Child process of `edgekit bench video --family wan`: one variant, one JSON line out.

    python -m edgekit.bench.video_wan_variant --variant edgekit --package VPKG --inputs IN.npz \
        --out-dir DIR --steps 10 [--source WAN_DIR] [--transformer T.onnx --decoder D.onnx] \
        [--adaptive adaptive:T] --threads 2

Every variant gets IN.npz's prompt, negative prompt, guidance scale and initial latents
[1, 16, T, h, w], and the same step count:

  diffusers        WanPipeline.from_pretrained(source) as is (torch, fp32), latents given
  diffusers-fbc    the same with transformer.enable_cache(FirstBlockCacheConfig(threshold=T)),
                   T the threshold of --adaptive (edgekit-cached's)
  onnx-monolithic  the runtime's driver and WanFamily with the streamed DiT swapped for the whole
                   transformer as one graph (OneGraph) and the decode done by the whole VAE
                   decoder graph in one call (WanFamily's "vae_decoder_whole" session); the text
                   encoder, the transformer and the decoder opened at load with onnxruntime's
                   defaults and kept open
  edgekit          edgekit.load(VPKG, window=2).generate: one latent frame per decoder call
  edgekit-cached   edgekit with First-Block-Cache --adaptive and the cache swap on disk
  edgekit-chunked  edgekit with decode_chunk 2 (two latent frames per call after the first; exact)

Stages: encode = the prompt encoding (diffusers' encode_prompt), denoise = the step loop, decode
= the VAE decode and the mapping to [0, 1] frames. Per stage wall time and peak RSS (VmHWM reset
at the stage's start: edgekit/bench/video_variant.py's StageMeter); frames [F, H, W, 3] and the
denoised latents [1, C, T, h, w] are written to --out-dir as .npy (video_variant.write_outputs).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.bench.video_variant import StageMeter, wrap_method, write_outputs

VARIANTS = ("diffusers", "diffusers-fbc", "onnx-monolithic", "edgekit", "edgekit-cached", "edgekit-chunked")
CACHED = {"edgekit-cached": "edgekit", "diffusers-fbc": "diffusers"}  # cached variant -> its no-cache run
CHUNKED_DECODE = 2  # edgekit-chunked: latent frames per decoder call after the first
DEFAULT_ADAPTIVE = "adaptive:0.36,max-skip:1000"  # how it was picked: edgekit/bench/video_wan.py's docstring


def fbc_threshold(setting: str) -> float:
    """The First-Block-Cache threshold of an "adaptive:T[,...]" step-cache setting."""
    from edgekit.errors import InvalidArgumentError
    from edgekit.runtimes.video.step_cache import parse_step_cache

    cache = parse_step_cache(setting)
    if cache.mode != "adaptive":
        raise InvalidArgumentError(f"--adaptive {setting!r}: the wan bench compares First-Block-Cache with "
                                   "diffusers' at one threshold; give adaptive:T")
    return float(cache.threshold)


def _prompts(inputs: dict[str, np.ndarray]) -> dict[str, Any]:
    return {"prompt": str(inputs["prompt"]), "negative_prompt": str(inputs["negative_prompt"]),
            "guidance_scale": float(inputs["guidance_scale"])}


def run_diffusers(args: argparse.Namespace, inputs: dict[str, np.ndarray], manifest: Any,
                  meter: StageMeter, result: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    import torch
    from diffusers import WanPipeline

    torch.set_num_threads(args.threads)
    loaded = time.perf_counter()
    pipeline = WanPipeline.from_pretrained(args.source)
    pipeline.set_progress_bar_config(disable=True)
    if args.variant == "diffusers-fbc":
        from diffusers import FirstBlockCacheConfig

        threshold = fbc_threshold(args.adaptive)
        pipeline.transformer.enable_cache(FirstBlockCacheConfig(threshold=threshold))
        result["switches"] = {"FirstBlockCacheConfig.threshold": threshold}
    result["load_ms"] = (time.perf_counter() - loaded) * 1000
    latents = inputs["latents"]
    _, _, _, lh, lw = latents.shape
    scale = manifest.video.conditioning.vae_scale_factor
    captured: dict[str, np.ndarray] = {}

    def last_step(pipe: Any, i: int, t: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        if i == args.steps - 1:
            captured["latents"] = tensors["latents"].detach().numpy().copy()
        return {}

    wrap_method(pipeline, "encode_prompt", before=lambda *a, **k: meter.begin("encode"),
                after=lambda r, *a, **k: (meter.end("encode"), meter.begin("denoise")))
    wrap_method(pipeline.vae, "decode", before=lambda *a, **k: (meter.end("denoise"), meter.begin("decode")))
    wrap_method(pipeline.video_processor, "postprocess_video", after=lambda r, *a, **k: meter.end("decode"))
    started = time.perf_counter()
    with torch.no_grad():
        video = pipeline(**_prompts(inputs), height=lh * scale, width=lw * scale, num_frames=int(inputs["frames"]),
                         num_inference_steps=args.steps, latents=torch.from_numpy(latents.copy()), output_type="np",
                         max_sequence_length=manifest.video.wan.max_sequence_length,
                         callback_on_step_end=last_step).frames[0]
    result["latency_ms"] = (time.perf_counter() - started) * 1000
    return np.asarray(video, dtype=np.float32), captured["latents"]


def _generate_options(args: argparse.Namespace, inputs: dict[str, np.ndarray]) -> dict[str, Any]:
    latents = inputs["latents"]
    return {**_prompts(inputs), "num_frames": int(inputs["frames"]), "steps": args.steps,
            "height": int(inputs["height"]), "width": int(inputs["width"]), "latents": latents}


def run_edgekit(args: argparse.Namespace, inputs: dict[str, np.ndarray], manifest: Any,
                meter: StageMeter, result: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    import edgekit

    loaded = time.perf_counter()
    pipeline = edgekit.load(args.package, window=2, threads=args.threads)
    result["load_ms"] = (time.perf_counter() - loaded) * 1000
    pipeline.observers.append(meter)
    options = _generate_options(args, inputs)
    if args.variant == "edgekit-cached":
        options.update(step_cache=args.adaptive, cache_swap="disk", work_dir=args.out_dir)
    if args.variant == "edgekit-chunked":
        options["decode_chunk"] = CHUNKED_DECODE
    started = time.perf_counter()
    video = pipeline.generate(**options)
    result["latency_ms"] = (time.perf_counter() - started) * 1000
    result["stats"] = pipeline.stats.to_dict()
    return video, pipeline.latents


def run_monolithic(args: argparse.Namespace, inputs: dict[str, np.ndarray], manifest: Any,
                   meter: StageMeter, result: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The runtime's driver and WanFamily, the DiT swapped for the whole-transformer graph and the
    decode for the whole-decoder graph; every session opened at load with onnxruntime's defaults
    and kept open."""
    from edgekit.runtimes.backends import backend_for
    from edgekit.runtimes.video.driver import generate
    from edgekit.runtimes.video.family import OneGraph
    from edgekit.runtimes.video.wan import WanFamily

    loaded = time.perf_counter()
    backend = backend_for("onnx", "cpu", args.threads, tuned=False)  # onnxruntime's defaults: what an app gets
    sessions = {"text_encoder": backend.load(manifest.root / manifest.graph("text_encoder").path)}
    transformer = backend.load(Path(args.transformer))
    sessions["vae_decoder_whole"] = backend.load(Path(args.decoder))
    result["load_ms"] = (time.perf_counter() - loaded) * 1000
    family = WanFamily(manifest, backend, sessions=sessions)
    request = family.request(**_generate_options(args, inputs))
    started = time.perf_counter()
    run = generate(family, request, network=OneGraph(transformer), observers=[meter])
    result["latency_ms"] = (time.perf_counter() - started) * 1000
    result["stats"] = run.stats.to_dict()
    return run.frames, run.latents


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--variant", choices=VARIANTS, required=True)
    parser.add_argument("--package", required=True)
    parser.add_argument("--inputs", required=True)
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--source", help="the diffusers directory (diffusers variants)")
    parser.add_argument("--transformer", help="the whole-transformer graph (onnx-monolithic)")
    parser.add_argument("--decoder", help="the whole-VAE-decoder graph (onnx-monolithic)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--adaptive", default=DEFAULT_ADAPTIVE, help="edgekit-cached and diffusers-fbc's threshold")
    args = parser.parse_args()
    from edgekit.manifest import Manifest

    manifest = Manifest.load(args.package)
    with np.load(args.inputs) as data:
        inputs = {key: data[key] for key in data.files}
    meter = StageMeter()
    result: dict[str, Any] = {"variant": args.variant, "threads": args.threads}
    runner = {"diffusers": run_diffusers, "diffusers-fbc": run_diffusers,
              "onnx-monolithic": run_monolithic}.get(args.variant, run_edgekit)
    video, latents = runner(args, inputs, manifest, meter, result)
    write_outputs(args.out_dir, args.variant, video, latents, meter, result)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
