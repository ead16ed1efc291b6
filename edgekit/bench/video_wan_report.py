"""`edgekit bench video --family wan`'s measurements as a `Report` (rendered by
edgekit/bench/render.py), markdown section key "video-wan" (the SVD bench's is "video").

video_wan.py measures and compares (one row per variant: stages, ratios against onnx-monolithic,
frames and latents against diffusers, onnx-monolithic, the cached variants' own no-cache run,
edgekit-chunked's against edgekit's) and checks the issue's targets; this module types those rows
as Variants and the targets as Verdicts. Rows and verdicts stay whole in the report's details.
"""

from __future__ import annotations

from typing import Any

from edgekit.bench.report import Machine, Quality, Ratio, Report, Stage, Variant, Verdict, Workload
from edgekit.bench.video_report import UNCACHED_RATIOS

BASELINE, REFERENCE = "onnx-monolithic", "diffusers"
KEY = "video-wan"
RATIOS = ("denoise_time", "decode_peak", "denoise_peak", "peak", "latency")
DETAIL_KEYS = ("stats", "switches", "step_cache", "frames_file", "stage_peak_exact", "latents_max_abs",
               "ratios_vs_uncached", "uncached")


def _quality(row: dict[str, Any]) -> tuple[Quality, ...]:
    """(row key prefix, reference) pairs as Quality figures, frames then latents."""
    found = []
    pairs = [("diffusers", REFERENCE), ("monolithic", BASELINE), ("edgekit", "edgekit")]
    if row.get("uncached") not in (None, REFERENCE):  # diffusers-fbc's no-cache run is the reference itself
        pairs.append(("uncached", row["uncached"]))
    for suffix, reference in pairs:
        for output in ("frames", "latents"):
            value = row.get(f"{output}_vs_{suffix}")
            if isinstance(value, dict):
                found.append(Quality(reference, output, max_abs_diff=value["max_abs_diff"], psnr_db=value["psnr_db"]))
            elif value is not None:
                found.append(Quality(reference, output, max_abs_diff=value))
    return tuple(found)


def _variant(row: dict[str, Any]) -> Variant:
    ratios, uncached = row.get("ratios") or {}, row.get("ratios_vs_uncached") or {}
    return Variant(
        row["name"], latency_ms=row["latency_ms"], peak_rss_mb=row["peak_rss_mb"],
        figures={"load_ms": row.get("load_ms"), "block_evals": row.get("block_evals")},
        stages=tuple(Stage(name, s["ms"], s["peak_rss_mb"]) for name, s in row["stages"].items()),
        ratios=(*(Ratio(key, ratios[key], BASELINE) for key in RATIOS if key in ratios),
                *(Ratio(key, uncached[key], row["uncached"]) for key in UNCACHED_RATIOS if key in uncached)),
        quality=_quality(row), details={key: row[key] for key in DETAIL_KEYS if row.get(key) is not None})


def _detail(verdict: dict[str, Any]) -> str:
    parts = [f"against {verdict['against']}"] if verdict.get("against") else []
    if verdict.get("kind") == "max_abs_diff":  # a difference, not a ratio: the numbers go here
        shown = "—" if verdict["value"] is None else f"{verdict['value']:.2g}"
        parts.append(f"max abs diff {shown} (target {verdict['target']:g})")
    if verdict.get("plan"):
        parts.append(f"steps {verdict['plan']} (F full, C cached)")
    if verdict.get("psnr_db") is not None:
        parts.append(f"PSNR {verdict['psnr_db']:.1f} dB")
    return "; ".join(parts)


def _notes(config: dict[str, Any], model: dict[str, Any], rows: list[dict[str, Any]]) -> list[str]:
    shape = model["latent_shape"]
    notes = [f"Random weights: {model['blocks']} transformer blocks, package {model['package_mb']} MiB fp32. "
             f"{config['frames']} frames at {config['height']}x{config['width']} (latents {shape}), "
             f"{config['steps']} steps, guidance {model['guidance_scale']} (the transformer runs a batch of 2 in "
             f"edgekit and onnx-monolithic, two calls of 1 in diffusers), prompts of {model['max_sequence_length']} "
             f"tokens; every variant gets the same prompt {model['prompt']!r}, negative prompt "
             f"{model['negative_prompt']!r} and initial latents (seed {config['seed']}).",
             "Stage peaks: the process's VmHWM reset when the stage starts and read when it ends (everything resident "
             "during the stage, weights held from earlier stages included); overall peak includes loading. Latency: "
             "the generate call (loading excluded; onnx-monolithic opens the text encoder, the whole transformer and "
             "the whole decoder before it, with onnxruntime's default options)."]
    for row in rows:
        cache = row.get("step_cache")
        if cache:
            notes.append(f"{row['name']} {cache['settings']}: steps {cache['plan']} (F full, C cached: only block 0 "
                         f"runs), {row.get('block_evals')} block evaluations; diffusers-fbc uses the same threshold. "
                         "With random weights these figures describe the mechanism, not a trained model's quality.")
    return notes


def build_report(config: dict[str, Any], model: dict[str, Any], rows: list[dict[str, Any]],
                 verdicts: dict[str, dict[str, Any]], targets: dict[str, float], command: str) -> Report:
    ratio_kind = lambda v: v.get("kind") != "max_abs_diff"  # noqa: E731  (render writes value and target as ratios)
    typed = tuple(Verdict(v["claim"], v["variant"], value=v["value"] if ratio_kind(v) else None,
                          target=v["target"] if ratio_kind(v) else None, met=v["met"], detail=_detail(v))
                  for v in verdicts.values())
    return Report(
        workload=Workload(
            title="Text to video (Wan 2.1): diffusers vs one ONNX graph per model vs edgekit", key=KEY,
            command=command, machine=Machine.here(), subject=f"{model['package']} (source {model['source']})",
            data=f"prompt {model['prompt']!r}, seeded initial latents",
            sizes={"frames": config["frames"], "height": config["height"], "width": config["width"],
                   "steps": config["steps"]},
            threads=config["threads"], settings={"adaptive": config["adaptive"], "repeat": config.get("repeat", 1)}),
        baseline=BASELINE, reference=REFERENCE, variants=tuple(_variant(row) for row in rows),
        verdicts=typed, notes=tuple(_notes(config, model, rows)),
        details={"config": config, "model": model, "targets": targets, "verdicts": verdicts},
    )
