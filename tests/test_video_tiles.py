"""Spatial decode tiles, as stories: the tile grid covers the latent with the asked overlaps and
blend weights that sum to 1 -> a tile as large as the latent is the untiled decode, bit for bit
-> smaller tiles approximate it (finite, reported difference, frames in [0, 1]) -> bad tile
settings are one-line typed errors, exit code 2 on the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgekit.errors import InvalidArgumentError
from edgekit.runtimes.video.tiles import (
    assemble,
    box_weights,
    check_tile,
    ramp_weights,
    tile_boxes,
    tile_spans,
)

runner = CliRunner()
FRAMES, SIZE = 3, 32  # the tiny SVD's VAE scale is 2: latents 16 x 16


# --- pure functions ------------------------------------------------------------------------
@pytest.mark.parametrize(("size", "tile", "overlap"), [(32, 16, 4), (28, 16, 4), (17, 16, 4), (16, 16, 4),
                                                      (5, 16, 4), (40, 8, 0), (33, 7, 3), (9, 1, 0), (10, 3, 1)])
def test_spans_cover_every_pixel_with_the_asked_overlaps(size: int, tile: int, overlap: int) -> None:
    spans = tile_spans(size, tile, overlap)
    covered = np.zeros(size, dtype=int)
    for start, end in spans:
        assert 0 <= start < end <= size and end - start <= tile
        covered[start:end] += 1
    assert covered.min() >= 1 and spans[0][0] == 0 and spans[-1][1] == size
    # every span but the last is a whole tile (the border one is clipped); neighbours share `overlap`
    assert all(end - start == tile for start, end in spans[:-1])
    assert all(prev[1] - nxt[0] == overlap for prev, nxt in zip(spans, spans[1:], strict=False))
    # each span has pixels of its own (no span lies inside its neighbours' union)
    assert all(np.any(covered[s:e] == 1) for s, e in spans)
    if size <= tile:
        assert spans == [(0, size)]


@pytest.mark.parametrize(("size", "tile", "overlap", "scale"), [(32, 16, 4, 8), (28, 16, 4, 2), (17, 16, 4, 1),
                                                               (33, 7, 3, 2), (40, 8, 0, 4), (10, 3, 1, 3)])
def test_blend_weights_sum_to_one_everywhere(size: int, tile: int, overlap: int, scale: int) -> None:
    spans = tile_spans(size, tile, overlap)
    weights = ramp_weights(spans, scale)
    total = np.zeros(size * scale, dtype=np.float64)
    for (start, end), w in zip(spans, weights, strict=True):
        assert w.shape == ((end - start) * scale,) and w.dtype == np.float32
        assert w.min() > 0 and w.max() <= 1
        total[start * scale: end * scale] += w
    np.testing.assert_allclose(total, 1.0, atol=1e-6)
    # a linear ramp across each overlap, 1 elsewhere
    if overlap and len(spans) > 1:
        ramp = weights[1][: overlap * scale]
        assert np.all(np.diff(ramp) > 0) and np.allclose(np.diff(ramp), 1 / (overlap * scale))


def test_boxes_grid_and_assembly_reproduce_a_smooth_image() -> None:
    boxes = tile_boxes(20, 13, 8, 2)
    assert len(boxes) == len(tile_spans(20, 8, 2)) * len(tile_spans(13, 8, 2))
    grid = box_weights(20, 13, 8, 2, scale=3)
    assert [box for box, _, _ in grid] == boxes
    total = assemble([np.ones((2, 1, (y1 - y0) * 3, (x1 - x0) * 3), np.float32) for (y0, y1, x0, x1) in boxes],
                     boxes, [(wy, wx) for _, wy, wx in grid], 20, 13, scale=3)
    assert total.shape == (2, 1, 60, 39)
    np.testing.assert_allclose(total, 1.0, atol=1e-6)  # weights sum to 1 over the 2-D grid
    # tiles cut from one image blend back into it exactly
    image = np.random.default_rng(0).standard_normal((1, 3, 60, 39)).astype(np.float32)
    pieces = [image[..., y0 * 3: y1 * 3, x0 * 3: x1 * 3] for (y0, y1, x0, x1) in boxes]
    np.testing.assert_allclose(assemble(pieces, boxes, [(wy, wx) for _, wy, wx in grid], 20, 13, 3), image,
                               atol=1e-5)


@pytest.mark.parametrize(("tile", "overlap", "needle"), [
    (0, None, "positive integer"), (-3, None, "positive integer"), (2.5, None, "positive integer"),
    (True, None, "positive integer"), (8, 4, "[0, 4)"), (8, -1, "[0, 4)"), (8, 1.5, "[0, 4)"), (1, 1, "[0, 0.5)"),
])
def test_bad_tile_arguments_are_typed_errors(tile: object, overlap: object, needle: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        check_tile(tile, overlap)
    assert needle in str(caught.value) and "\n" not in str(caught.value)


def test_default_overlap_is_a_quarter_tile() -> None:
    assert check_tile(16, None) == (16, 4) and check_tile(3, None) == (3, 0) and check_tile(8, 0) == (8, 0)


# --- on the tiny SVD package -----------------------------------------------------------------
@pytest.fixture(scope="module")
def pipeline(svd_package: Path):
    import edgekit

    return edgekit.load(str(svd_package))


def _latents(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((1, FRAMES, 4, SIZE // 2, SIZE // 2), dtype=np.float32)


def test_a_tile_as_large_as_the_latent_is_the_untiled_decode(pipeline) -> None:
    latents = _latents()
    for chunk in (None, 1):
        full = pipeline.decode(latents, chunk)
        for tile, overlap in ((16, None), (16, 7), (40, 0)):
            same = pipeline.decode(latents, chunk, tile=tile, tile_overlap=overlap)
            assert np.array_equal(same, full)
            assert pipeline.stats.decode_tiles == 1 and pipeline.stats.decode_tile == tile


def test_tiled_decode_approximates_the_full_decode(pipeline) -> None:
    latents = _latents(1)
    full = pipeline.decode(latents, None)
    for tile, overlap in ((8, 2), (6, 2), (8, 0), (12, None)):
        tiled = pipeline.decode(latents, None, tile=tile, tile_overlap=overlap)
        assert tiled.shape == full.shape == (FRAMES, SIZE, SIZE, 3) and tiled.dtype == np.float32
        diff = float(np.abs(tiled - full).max())
        mse = float(np.mean((tiled.astype(np.float64) - full) ** 2))
        psnr = float("inf") if mse == 0 else 10 * np.log10(1 / mse)
        print(f"tile {tile} overlap {overlap}: {pipeline.stats.decode_tiles} tiles, max |tiled - full| {diff:.3g}, "
              f"PSNR {psnr:.1f} dB")
        assert np.isfinite(tiled).all() and 0 <= tiled.min() <= tiled.max() <= 1
        assert np.isfinite(diff) and pipeline.stats.decode_tiles > 1
    # tiles compose with frame chunks
    both = pipeline.decode(latents, 1, tile=8, tile_overlap=2)
    assert both.shape == full.shape and np.isfinite(both).all() and 0 <= both.min() <= both.max() <= 1


def test_generate_records_the_tile_settings(pipeline) -> None:
    image = np.full((SIZE, SIZE, 3), 0.5, np.float32)
    frames = pipeline.generate(image, num_frames=2, steps=1, seed=0, decode_tile=8)
    stats = pipeline.stats.to_dict()
    assert frames.shape == (2, SIZE, SIZE, 3)
    assert (stats["decode_tile"], stats["decode_tile_overlap"], stats["decode_tiles"]) == (8, 2, 9)
    pipeline.generate(image, num_frames=2, steps=1, seed=0)
    stats = pipeline.stats.to_dict()
    assert (stats["decode_tile"], stats["decode_tile_overlap"], stats["decode_tiles"]) == (None, None, 1)


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"decode_tile": 0}, "positive integer"), ({"decode_tile": 8, "decode_tile_overlap": 4}, "[0, 4)"),
    ({"decode_tile_overlap": 2}, "needs a decode tile"),
])
def test_bad_tile_settings_raise_before_the_run(pipeline, kwargs: dict, needle: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        pipeline.generate(np.zeros((SIZE, SIZE, 3), np.float32), num_frames=2, steps=1, **kwargs)
    assert needle in str(caught.value)
    with pytest.raises(InvalidArgumentError):
        pipeline.decode(_latents(), None, tile=kwargs.get("decode_tile"), tile_overlap=kwargs.get("decode_tile_overlap"))


def test_cli_decode_tile(svd_package: Path, tmp_path: Path) -> None:
    from PIL import Image

    from edgekit.cli import app

    source = tmp_path / "in.png"
    Image.fromarray((np.random.default_rng(1).random((SIZE, SIZE, 3)) * 255).astype(np.uint8)).save(source)
    base = ["run", str(svd_package), "--image", str(source), "--frames", "2", "--steps", "1",
            "--out", str(tmp_path / "out.gif")]
    result = runner.invoke(app, [*base, "--decode-tile", "8", "--decode-tile-overlap", "3", "--json"])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout.strip().splitlines()[-1])["stats"]
    assert (stats["decode_tile"], stats["decode_tile_overlap"], stats["decode_tiles"]) == (8, 3, 9)
    for argv, needle in [(["--decode-tile", "0"], "positive integer"),
                         (["--decode-tile", "8", "--decode-tile-overlap", "4"], "[0, 4)"),
                         (["--decode-tile-overlap", "2"], "needs a decode tile")]:
        result = runner.invoke(app, [*base, *argv])
        assert result.exit_code == 2, result.output
        message = result.stderr.strip()
        assert message.startswith("error: ") and "\n" not in message and needle in message, message
