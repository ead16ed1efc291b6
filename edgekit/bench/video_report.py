"""`edgekit bench video`'s measurements as a `Report` (rendered by edgekit/bench/render.py).

video.py measures and compares (one row per variant: stages, ratios against onnx-monolithic,
frames and latents against diffusers, onnx-monolithic and edgekit's own decodes) and checks the
issue's targets; this module types those rows as Variants, the targets as Verdicts, and the
method as notes. The rows and verdicts stay whole in the report's details.
"""

from __future__ import annotations

import math
from typing import Any

from edgekit.bench.report import Machine, Quality, Ratio, Report, Stage, Variant, Verdict, Workload

BASELINE, REFERENCE, UNCACHED = "onnx-monolithic", "diffusers", "edgekit"
RATIOS = ("denoise_time", "decode_peak", "denoise_peak", "peak", "latency", "latency_with_load")
UNCACHED_RATIOS = ("denoise_time", "latency", "denoise_peak", "peak")  # step-cache variants vs edgekit
# (row key, reference variant, output) for every comparison video.py makes
COMPARISONS = (("frames_vs_diffusers", REFERENCE, "frames"), ("latents_vs_diffusers", REFERENCE, "latents"),
               ("frames_vs_monolithic", BASELINE, "frames"), ("latents_vs_monolithic", BASELINE, "latents"),
               ("frames_vs_edgekit_full", "edgekit", "frames"), ("frames_vs_edgekit_chunked", "edgekit-chunked", "frames"),
               ("frames_vs_unsliced", "edgekit-groups", "frames"), ("latents_vs_unsliced", "edgekit-groups", "latents"),
               ("frames_vs_uncached", UNCACHED, "frames"), ("latents_vs_uncached", UNCACHED, "latents"))
CLAIMS = {"decode_peak": "decode peak <= 0.20x onnx-monolithic's decode",
          "denoise_peak": "denoise peak <= 0.50x onnx-monolithic's denoise at max abs diff <= 1e-4",
          "latency": "end-to-end latency <= 1.2x onnx-monolithic",
          "denoise_peak_sliced": "Feature Slicer: denoise peak <= 0.50x onnx-monolithic's denoise at max abs diff <= 1e-4",
          "edgekit-cached_denoise_time": "step cache: denoise time <= 1/1.6 of edgekit's (uncached)",
          "edgekit-adaptive_denoise_time": "adaptive step cache: denoise time <= 1/1.6 of edgekit's (uncached)",
          "cached_denoise_peak": "step cache with swap: denoise peak <= 1.0x edgekit's (uncached)",
          "streamlined_denoise_peak": "slices + cache + swap: denoise peak <= 0.5x edgekit's (uncached)",
          "streamlined_latency": "edgekit-streamlined: end-to-end latency <= 0.70x onnx-monolithic",
          "streamlined_peak": "edgekit-streamlined: peak <= 0.20x onnx-monolithic"}
DETAIL_KEYS = ("stats", "switches", "tile", "frames_file", "stage_peak_exact", "runs", "latents_max_abs",
               "ratios_vs_uncached")


def _db(value: float | None) -> str:
    return "–" if value is None else ("inf" if math.isinf(value) else f"{value:.1f} dB")


def _variant(row: dict[str, Any]) -> Variant:
    ratios, spread = row.get("ratios") or {}, row.get("ratio_range") or {}
    uncached = row.get("ratios_vs_uncached") or {}
    quality = []
    for key, reference, output in COMPARISONS:
        found = row.get(key)
        if isinstance(found, dict):
            quality.append(Quality(reference, output, max_abs_diff=found["max_abs_diff"], psnr_db=found["psnr_db"]))
        elif found is not None:
            quality.append(Quality(reference, output, max_abs_diff=found))
    return Variant(
        row["name"], latency_ms=row["latency_ms"], peak_rss_mb=row["peak_rss_mb"],
        figures={"load_ms": row.get("load_ms"), "unet_block_evals": row.get("unet_block_evals")},
        stages=tuple(Stage(name, s["ms"], s["peak_rss_mb"]) for name, s in row["stages"].items()),
        ratios=(*(Ratio(key, ratios[key], BASELINE, tuple(spread[key]) if spread.get(key) else None)
                  for key in RATIOS if key in ratios),
                *(Ratio(key, uncached[key], UNCACHED) for key in UNCACHED_RATIOS if key in uncached)),
        quality=tuple(quality), details={key: row[key] for key in DETAIL_KEYS if row.get(key) is not None})


def _verdict_detail(verdict: dict[str, Any], slices: int) -> str:
    parts = []
    if verdict.get("against"):
        parts.append(f"against {verdict['against']}")
    if verdict.get("plan"):
        parts.append(f"steps {verdict['plan']} (F full, C cached)")
    if verdict.get("range"):
        low, high = verdict["range"]
        parts.append(f"rounds {low:.2f}–{high:.2f}{', not met in every round' if high > verdict['target'] else ''}")
    if verdict.get("latents_max_abs_diff") is not None:
        parts.append(f"denoised latents max abs diff {verdict['latents_max_abs_diff']:.2g} (max |latents| "
                     f"{verdict['latents_scale']:.3g}: {'within' if verdict['latents_close'] else 'outside'} "
                     f"1e-4 x max(1, max |reference|)), frames {verdict['frames_max_abs_diff']:.2g}")
    if verdict.get("latents_vs_unsliced") is not None:
        parts.append(f"{slices} slices per group: denoised latents vs edgekit-groups (unsliced) max abs diff "
                     f"{verdict['latents_vs_unsliced']:.2g}, latency {verdict['latency_ratio']:.2f}×")
    if verdict.get("psnr_vs_full_decode_db") is not None:
        parts.append(f"PSNR vs the full decode {_db(verdict['psnr_vs_full_decode_db'])}")
    if len(verdict.get("considered") or {}) > 1:
        parts.append("best of " + ", ".join(f"{k} {v:.2f}×" for k, v in verdict["considered"].items()))
    return "; ".join(parts)


def _notes(cfg: dict[str, Any], model: dict[str, Any], by: dict[str, dict[str, Any]]) -> list[str]:
    rounds = cfg.get("repeat", 1)
    notes = [(f"Random weights: UNet {model['unet_params'] / 1e6:.1f}M parameters, VAE {model['vae_params'] / 1e6:.1f}M; "
              f"package {model['package_mb']} MiB fp32, whole-UNet graph {model['unet_graph_mb']} MiB. "
              f"{cfg['frames']} frames at {cfg['height']}x{cfg['width']}, {cfg['steps']} Euler steps, guidance "
              f"{'on (UNet batch 2)' if model['guidance'] else 'off'}, seed {cfg['seed']}; every variant gets the same "
              "image, initial latents and noise." if model.get("unet_params") and model.get("vae_params") else
              f"{cfg['frames']} frames at {cfg['height']}x{cfg['width']}, {cfg['steps']} Euler steps, seed {cfg['seed']}."),
             "Stage peaks: the process's VmHWM reset when the stage starts and read when it ends (everything resident "
             "during the stage, weights held from earlier stages included); overall peak includes loading. Latency: "
             "the generate call (loading excluded; onnx-monolithic opens its four sessions before it)."]
    if rounds > 1:
        notes.append(f"Times and peaks are medians over {rounds} rounds (each round runs every variant once); in "
                     "brackets the lowest and highest ratio of one round's run to the baseline's run in the same round.")
    chunked, tiled = by.get("edgekit-chunked") or {}, by.get("edgekit-tiled") or {}
    if chunked.get("frames_vs_edgekit_full"):
        full = chunked["frames_vs_edgekit_full"]
        notes.append(f"edgekit-chunked (decode chunk 1) vs edgekit's full decode: max abs diff {full['max_abs_diff']:.2g}, "
                     f"PSNR {_db(full['psnr_db'])} (SVD's temporal decoder mixes frames: chunked decoding is an "
                     "approximation).")
    if tiled.get("frames_vs_edgekit_full"):
        full, tile = tiled["frames_vs_edgekit_full"], tiled.get("tile") or {}
        line = (f"edgekit-tiled (decode chunk 1, tiles of {tile.get('tile')} latent pixels sharing {tile.get('overlap')}) "
                f"vs edgekit's full decode: max abs diff {full['max_abs_diff']:.2g}, PSNR {_db(full['psnr_db'])}")
        if tiled.get("frames_vs_edgekit_chunked"):
            step = tiled["frames_vs_edgekit_chunked"]
            line += (f"; vs edgekit-chunked (the tiling alone): max abs diff {step['max_abs_diff']:.2g}, "
                     f"PSNR {_db(step['psnr_db'])}")
        notes.append(line + " (GroupNorm statistics and the receptive field cross tile borders: tiling is an "
                     "approximation too).")
    cached = [row for name, row in by.items() if (row.get("stats") or {}).get("step_cache")]
    if cached:
        lines = []
        for row in cached:
            cache = row["stats"]["step_cache"]
            swap = cache["swap"]
            share = "" if swap["hidden_share"] is None else f", {swap['hidden_share']:.0%} hidden"
            lines.append(f"{row['name']} {cache['settings']} {cache['plan']}, {row['stats']['unet_block_evals']} UNet "
                         f"block evaluations, swap {swap['mode']} {swap['write_ms'] + swap['read_ms']:.0f} ms moved, "
                         f"{swap['wait_ms']:.0f} ms waited{share}")
        notes.append("Step cache (F full step, C cached step: only the shallow blocks run); the frames and latents "
                     "are compared with edgekit's uncached run; with random weights these figures describe the "
                     "mechanism, not a trained model's quality: " + "; ".join(lines) + ".")
    if any(row.get("switches") for row in by.values()):
        notes.append("diffusers-memory: decode_chunk_size=1 and unet.enable_forward_chunking(); enable_model_cpu_offload "
                     "is GPU-only (it moves models between the GPU and the CPU) and is not applied.")
    return notes


def build_report(config: dict[str, Any], model: dict[str, Any], rows: list[dict[str, Any]], verdicts: dict[str, Any],
                 targets: dict[str, float], command: str) -> Report:
    """The Report of one `edgekit bench video` run (`rows` and `verdicts` as video.py computes them)."""
    by = {row["name"]: row for row in rows}
    typed = tuple(Verdict(CLAIMS.get(key, key), v["variant"], v["ratio"], v["target"], v["met"],
                          _verdict_detail(v, config["slices"])) for key, v in verdicts.items())
    return Report(
        workload=Workload(
            title="Video: SVD image-to-video, diffusers vs one graph per model vs edgekit", key="video",
            command=command, machine=Machine.here(), subject=f"{model['package']} (source {model['source']})",
            data=f"a smooth RGB test image, seed {config['seed']}",
            sizes={"frames": config["frames"], "height": config["height"], "width": config["width"],
                   "steps": config["steps"]},
            threads=config["threads"], settings={"slices": config["slices"], "repeat": config.get("repeat", 1)}),
        baseline=BASELINE, reference=REFERENCE, variants=tuple(_variant(row) for row in rows),
        verdicts=typed, notes=tuple(_notes(config, model, by)),
        details={"config": config, "model": model, "targets": targets, "verdicts": verdicts},
    )
