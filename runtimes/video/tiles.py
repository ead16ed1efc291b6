"""Spatial tiles for the VAE decode: tile boxes, blend weights, assembly (numpy only).

A latent image h x w is cut into square tiles of `tile` latent pixels whose neighbours share
`overlap` latent pixels; each tile is decoded on its own (by the same graph) and the decoded
pixel tiles (`scale` = the VAE's scale factor output pixels per latent pixel) are blended with
linear ramps across the overlaps. Contracts:

* `tile_spans(size, tile, overlap)`: half-open spans [start, end) that cover 0..size-1, start at
  0 and advance by `tile - overlap`; each span is `tile` long except the last, which is clipped
  to `size`; neighbours share exactly `overlap` pixels (the last one: `overlap` too, as the
  clipped tile still starts a stride after its neighbour). Spans stop at the first one that
  reaches `size`, so every span has pixels no other span has.
* `ramp_weights(spans, scale)`: per span, float32 weights over its `scale x length` output
  pixels: 1 outside overlaps, a linear ramp (x + 0.5) / L up across the overlap it shares with
  its predecessor (L = scale x overlap output pixels) and 1 - that ramp down across the one it
  shares with its successor, so at every output pixel the weights of the spans covering it sum
  to 1.
* `tile_boxes(height, width, tile, overlap)`: the grid (row spans x column spans) as
  (y0, y1, x0, x1) boxes in latent pixels, row-major; weights of the grid are products of the
  1-D weights, so they also sum to 1 everywhere.
* `blend_into(canvas, piece, box, wy, wx, scale)`: adds `piece * wy[:, None] * wx[None, :]` to
  the canvas window the box covers (canvas [..., H, W], piece [..., (y1-y0)*scale, (x1-x0)*scale]).
* `assemble(pieces, boxes, weights, height, width, scale)`: blends every piece into a fresh
  canvas [..., height*scale, width*scale] (what `blend_into` does one tile at a time).

Tiling is an approximation of the full decode (GroupNorm statistics and the decoder's receptive
field cross tile borders); a tile at least as large as the latent is the full decode.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgekit.errors import InvalidArgumentError

Span = tuple[int, int]
Box = tuple[int, int, int, int]


def check_tile(tile: object, overlap: object | None) -> tuple[int, int]:
    """(tile, overlap) validated: tile a positive int, overlap an int in [0, tile / 2)
    (None: tile // 4). Raises InvalidArgumentError otherwise."""
    if isinstance(tile, bool) or not isinstance(tile, (int, np.integer)) or tile < 1:
        raise InvalidArgumentError(f"decode tile must be a positive integer (latent pixels), got {tile!r}")
    tile = int(tile)
    if overlap is None:
        overlap = tile // 4
    if isinstance(overlap, bool) or not isinstance(overlap, (int, np.integer)) or not 0 <= 2 * overlap < tile:
        raise InvalidArgumentError(f"decode tile overlap must be an integer in [0, tile/2) = [0, {tile / 2:g}) "
                                   f"for tile {tile}, got {overlap!r}")
    return tile, int(overlap)


def tile_spans(size: int, tile: int, overlap: int) -> list[Span]:
    """Half-open spans covering 0..size-1 (see the module docstring)."""
    tile, overlap = check_tile(tile, overlap)
    if size < 1:
        raise InvalidArgumentError(f"size must be a positive integer, got {size!r}")
    stride = tile - overlap
    spans: list[Span] = []
    start = 0
    while True:
        end = min(start + tile, size)
        spans.append((start, end))
        if end == size:
            return spans
        start += stride


def ramp_weights(spans: Sequence[Span], scale: int = 1) -> list[np.ndarray]:
    """Per span, float32 blend weights over its scale x length output pixels (sum 1 everywhere)."""
    weights = []
    for k, (start, end) in enumerate(spans):
        w = np.ones((end - start) * scale, dtype=np.float32)
        if k > 0:
            shared = (spans[k - 1][1] - start) * scale
            if shared > 0:
                w[:shared] = (np.arange(shared, dtype=np.float32) + np.float32(0.5)) / np.float32(shared)
        if k + 1 < len(spans):
            shared = (end - spans[k + 1][0]) * scale
            if shared > 0:
                w[-shared:] = 1 - (np.arange(shared, dtype=np.float32) + np.float32(0.5)) / np.float32(shared)
        weights.append(w)
    return weights


def tile_boxes(height: int, width: int, tile: int, overlap: int) -> list[Box]:
    """The tile grid as (y0, y1, x0, x1) latent boxes, row-major."""
    return [(y0, y1, x0, x1) for y0, y1 in tile_spans(height, tile, overlap)
            for x0, x1 in tile_spans(width, tile, overlap)]


def box_weights(height: int, width: int, tile: int, overlap: int,
                scale: int = 1) -> list[tuple[Box, np.ndarray, np.ndarray]]:
    """(box, row weights, column weights) per tile of the grid, row-major, weights over output pixels."""
    rows, cols = tile_spans(height, tile, overlap), tile_spans(width, tile, overlap)
    wy, wx = ramp_weights(rows, scale), ramp_weights(cols, scale)
    return [((y0, y1, x0, x1), wy[i], wx[j]) for i, (y0, y1) in enumerate(rows) for j, (x0, x1) in enumerate(cols)]


def blend_into(canvas: np.ndarray, piece: np.ndarray, box: Box, wy: np.ndarray, wx: np.ndarray,
               scale: int = 1) -> None:
    """canvas[..., window of box] += piece * wy[:, None] * wx[None, :] (in place)."""
    y0, y1, x0, x1 = box
    canvas[..., y0 * scale: y1 * scale, x0 * scale: x1 * scale] += piece * wy[:, None] * wx[None, :]


def assemble(pieces: Sequence[np.ndarray], boxes: Sequence[Box], weights: Sequence[tuple[np.ndarray, np.ndarray]],
             height: int, width: int, scale: int = 1) -> np.ndarray:
    """Blend decoded tiles into one float32 canvas [..., height*scale, width*scale]."""
    canvas = np.zeros((*pieces[0].shape[:-2], height * scale, width * scale), dtype=np.float32)
    for piece, box, (wy, wx) in zip(pieces, boxes, weights, strict=True):
        blend_into(canvas, piece, box, wy, wx, scale)
    return canvas
