"""The video branches of `edgekit run` and `edgekit calibrate` (a video package: generate a video
from an image; calibrate its step cache against a PSNR target). edgekit/cli.py dispatches here by
the package's task."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from edgekit.cli_common import progress_bar, stderr, stdout


@dataclass(frozen=True)
class TextOptions:
    """`edgekit run`'s text-to-video options (None: not given)."""

    prompt: str | None = None
    prompt_file: Path | None = None
    negative_prompt: str | None = None
    guidance_scale: float | None = None

    def given(self) -> list[str]:
        names = ("--prompt", "--prompt-file", "--negative-prompt", "--guidance-scale")
        return [name for name, value in zip(names, (self.prompt, self.prompt_file, self.negative_prompt,
                                                    self.guidance_scale)) if value is not None]

    def options(self) -> dict[str, Any]:
        """The generate() options: the prompt (read from --prompt-file where given), negative
        prompt and guidance scale, without the unset ones. A prompt file that is missing,
        unreadable, not UTF-8 or holds no text is one line."""
        from edgekit.errors import InvalidArgumentError

        prompt = self.prompt
        if self.prompt_file is not None:
            if prompt is not None:
                raise InvalidArgumentError("give --prompt or --prompt-file, not both")
            try:
                prompt = self.prompt_file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as error:
                reason = error.strerror if isinstance(error, OSError) and error.strerror else "not UTF-8 text"
                raise InvalidArgumentError(f"cannot read the prompt file {self.prompt_file} ({reason}); pass a UTF-8 "
                                           "text file or --prompt TEXT") from None
            if not prompt.strip():
                raise InvalidArgumentError(f"the prompt file {self.prompt_file} is empty; write the prompt in it or "
                                           "pass --prompt TEXT")
        given = {"prompt": prompt, "negative_prompt": self.negative_prompt, "guidance_scale": self.guidance_scale}
        return {name: value for name, value in given.items() if value is not None}


def run_video(package: Path, image: Path | None, frames: int | None, steps: int | None, out: Path | None,
              height: int | None, width: int | None, decode_chunk: int | None, seed: int, window: int | None,
              provider: str, threads: int | None, as_json: bool, decode_tile: int | None = None,
              decode_tile_overlap: int | None = None, slices: int | None = None, verify: bool = True,
              step_cache: str | None = None, cache_swap: str | None = None, work: Path | None = None,
              text: TextOptions = TextOptions(), text_to_video: bool = False,
              compute_units: str | None = None) -> None:
    """`edgekit run` for video packages: generate, write the GIF and PNG frames, report. An
    image-to-video package (svd) takes --image, a text-to-video one (wan: `text_to_video`, read from
    the manifest the caller loaded) --prompt/--prompt-file."""
    import edgekit
    from edgekit.errors import InvalidArgumentError
    from edgekit.runtimes.video.images import check_video_output, save_video

    if text_to_video and image is not None:
        raise InvalidArgumentError(f"{package} is a text-to-video package; it takes --prompt TEXT, not --image")
    if not text_to_video and text.given():
        raise InvalidArgumentError(f"{package} is an image-to-video package; {', '.join(text.given())} are for "
                                   "text-to-video (wan) packages; pass --image IN.png")
    if text_to_video and text.prompt is None and text.prompt_file is None:
        raise InvalidArgumentError("text-to-video packages need --prompt TEXT or --prompt-file FILE")
    if not text_to_video and image is None:
        raise InvalidArgumentError("video packages need --image IN.png (the first frame to animate)")
    if out is None:
        raise InvalidArgumentError("video packages need --out OUT.gif (PNG frames are written beside it)")
    check_video_output(out)  # before generating: a GIF path that is a folder fails now, not in a minute
    options: dict[str, Any] = text.options() if text_to_video else {
        "decode_tile": decode_tile, "decode_tile_overlap": decode_tile_overlap, "slices": slices,
        "step_cache": step_cache, "cache_swap": cache_swap, "work_dir": work}
    if text_to_video:
        unsupported = {"--decode-tile": decode_tile, "--decode-tile-overlap": decode_tile_overlap, "--slices": slices}
        given = [name for name, value in unsupported.items() if value is not None]
        if given:
            raise InvalidArgumentError(f"{', '.join(given)} do not apply to wan packages (exact frame-by-frame decode, "
                                       "no operator groups); use --decode-chunk N")
        options.update({name: value for name, value in (("step_cache", step_cache), ("cache_swap", cache_swap),
                                                         ("work_dir", work)) if value is not None})
    pipeline = edgekit.load(str(package), window=window, provider=provider, threads=threads, verify=verify,
                            compute_units=compute_units)
    with progress_bar(not as_json and stderr.is_terminal) as bar:
        task = bar.add_task("generating", total=None)
        video = pipeline.generate(image, num_frames=frames, steps=steps, seed=seed, height=height, width=width,
                                  decode_chunk=decode_chunk, **options,
                                  progress=lambda message, done, total: bar.update(task, description=message,
                                                                                   completed=done, total=total))
    gif, pngs = save_video(video, out, fps=pipeline.fps)
    stats = pipeline.stats.to_dict()
    if as_json:
        typer.echo(json.dumps({"gif": str(gif), "frames_dir": str(pngs[0].parent), "frames": len(pngs),
                               "stats": stats}, allow_nan=False))
        return
    rss = f"{stats['peak_rss_mb']:.0f} MiB" if stats["peak_rss_mb"] is not None else "n/a"
    tiles = (f" · decode tile {stats['decode_tile']} overlap {stats['decode_tile_overlap']} "
             f"({stats['decode_tiles']} tiles)" if stats["decode_tile"] is not None else "")
    tiles += f" · {stats['slices']} slices per operator group" if stats["slices"] > 1 else ""
    cache = stats["step_cache"]
    if cache:
        swap = cache["swap"]
        hidden = "" if swap["hidden_share"] is None else f", {swap['hidden_share']:.0%} of it hidden"
        tiles += (f" · step cache {cache['settings']}: {cache['full_steps']} full, {cache['cached_steps']} cached "
                  f"({cache['plan']}), {stats['unet_block_evals']} UNet block evaluations · swap {swap['mode']} "
                  f"{swap['write_ms'] + swap['read_ms']:.0f} ms, waited {swap['wait_ms']:.0f} ms{hidden}")
    stdout.print(f"wrote {gif} and {len(pngs)} PNG frames in {pngs[0].parent} · {stats['frames']} frames "
                 f"{stats['height']}x{stats['width']} · {stats['steps']} steps · latency {stats['latency_ms']:.0f} ms · "
                 f"peak RSS {rss} · graphs loaded {stats['graphs_loaded']} · max resident "
                 f"{stats['max_resident_graphs']} · decode chunk {stats['decode_chunk']}{tiles}")


def calibrate_video(package: Path, target_psnr: float | None, seeds: int, image: Path | None, frames: int | None,
                    steps: int | None, threads: int | None, as_json: bool) -> None:
    """`edgekit calibrate` for video packages (runtimes/video/calibrate.py)."""
    import edgekit
    from edgekit.errors import InvalidArgumentError
    from edgekit.runtimes.video.calibrate import (
        CANDIDATES,
        calibrate_step_cache,
        check_calibration_args,
        write_step_cache_calibration,
    )
    from edgekit.runtimes.video.images import smooth_test_image

    if target_psnr is None:
        raise InvalidArgumentError("video calibration needs --target-psnr DB (e.g. 30)")
    if seeds < 1:
        raise InvalidArgumentError(f"--seeds must be >= 1, got {seeds}")
    check_calibration_args(target_psnr, list(range(seeds)), CANDIDATES)
    pipeline = edgekit.load(str(package), threads=threads)
    c = pipeline.manifest.video.conditioning
    source: Any = image if image is not None else smooth_test_image(c.height, c.width)
    with progress_bar(not as_json and stderr.is_terminal) as bar:
        task = bar.add_task("calibrating", total=None)
        result = calibrate_step_cache(pipeline, source, target_psnr, seeds=tuple(range(seeds)),
                                      progress=lambda message: bar.update(task, description=message),
                                      num_frames=frames, steps=steps)
    updated = write_step_cache_calibration(pipeline.manifest, result)
    if as_json:
        typer.echo(json.dumps({"step_cache": updated.video.step_cache}, allow_nan=False))
        return
    stored = updated.video.step_cache
    if stored["setting"] is None:
        stdout.print(f"no step-cache setting kept {target_psnr:g} dB on {seeds} seed(s); `--step-cache auto` "
                     "runs uncached")
    else:
        stdout.print(f"{stored['setting']}: lowest PSNR {stored['min_psnr_db']} dB over {seeds} seed(s) "
                     f"(target {target_psnr:g}), {stored['block_evals_share']:.0%} of the UNet block evaluations; "
                     "stored for `--step-cache auto`")
