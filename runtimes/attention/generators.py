"""The mask generators, by kebab-case name. Each is seeded and deterministic: the same
`(seqlen, seed, params)` gives the same rectangles on every machine (Python's `random.Random`).

Every generator returns disjoint rectangles and gives every query at least one key (no fully
masked rows, whose output is undefined and differs between kernels).

Example:
    >>> make_mask("sliding-window-causal", 8, seed=0, params=MaskParams(window=3)).area()
    26
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from edgekit.errors import InvalidArgumentError
from edgekit.runtimes.attention.masks import Kind, Mask, Rect

# Document-length histogram (tokens, weight): a long-tailed pretraining-like mix. Each sampled
# length is uniform within its bin, then capped (see `document_lengths`).
LENGTH_HISTOGRAM: tuple[tuple[int, int, float], ...] = (
    (16, 128, 0.30), (128, 512, 0.30), (512, 2048, 0.25), (2048, 8192, 0.10), (8192, 32768, 0.05),
)


@dataclass(frozen=True)
class MaskParams:
    """Shape parameters; `None` means a default derived from the sequence length."""

    window: int | None = None        # sliding window half-width (keys `q-w … q+w`)
    global_tokens: int | None = None  # global-sliding-window: leading global tokens
    prefix_fraction: float = 0.25     # prefix-lm: share of each document that is bidirectional
    block: int | None = None          # block-causal / block-sparse block size
    density: float = 0.25             # block-sparse: chance that an off-diagonal block is kept
    max_doc_fraction: float = 0.5     # a document never exceeds this share of the sequence

    def window_for(self, s: int) -> int:
        return self.window if self.window is not None else max(1, s // 8)

    def block_for(self, s: int) -> int:
        return self.block if self.block is not None else max(1, min(64, s // 4))


Generator = Callable[[int, int, MaskParams], Mask]


def band(a: int, n: int, left: int, right: int) -> list[Rect]:
    """Rectangles for keys `k` with `-left <= k - q <= right` inside the square `[a, a+n)²`.

    Lower part (diagonal included) is a causal triangle then a bi-causal band; upper part a
    bi-causal band then an inverse-causal triangle. Empty rectangles are dropped."""
    left, right = max(0, left), max(0, right)
    rects: list[Rect] = []
    if left >= n - 1:
        rects.append(Rect(a, a + n, a, a + n, Kind.CAUSAL))
    else:
        rects += [Rect(a, a + left, a, a + left, Kind.CAUSAL),
                  Rect(a + left, a + n, a, a + n, Kind.BI_CAUSAL)]
    if right >= n - 1:
        rects.append(Rect(a, a + n - 1, a + 1, a + n, Kind.INVERSE_CAUSAL))
    elif right > 0:
        rects += [Rect(a, a + n - right, a + 1, a + n, Kind.BI_CAUSAL),
                  Rect(a + n - right, a + n - 1, a + n - right + 1, a + n, Kind.INVERSE_CAUSAL)]
    return [r for r in rects if r.area() > 0]


def document_lengths(s: int, rng: random.Random, max_fraction: float = 0.5) -> list[int]:
    """Split `s` tokens into documents with lengths drawn from `LENGTH_HISTOGRAM`, each capped
    at `max_fraction · s` (at least 1) so no single document fills the sequence (when s > 1)."""
    cap = max(1, int(s * max_fraction))
    bins, weights = [(lo, hi) for lo, hi, _ in LENGTH_HISTOGRAM], [w for *_, w in LENGTH_HISTOGRAM]
    lengths: list[int] = []
    left = s
    while left > 0:
        lo, hi = rng.choices(bins, weights)[0]
        n = min(rng.randrange(lo, hi), cap, left)
        lengths.append(n)
        left -= n
    return lengths


def _starts(lengths: list[int]) -> list[tuple[int, int]]:
    out, at = [], 0
    for n in lengths:
        out.append((at, at + n))
        at += n
    return out


def _mask(name: str, s: int, rects: list[Rect]) -> Mask:
    return Mask(name, s, s, tuple(r for r in rects if r.area() > 0))


def full(s: int, seed: int, p: MaskParams) -> Mask:
    return _mask("full", s, [Rect(0, s, 0, s, Kind.FULL)])


def causal(s: int, seed: int, p: MaskParams) -> Mask:
    return _mask("causal", s, [Rect(0, s, 0, s, Kind.CAUSAL)])


def sliding_window(s: int, seed: int, p: MaskParams) -> Mask:
    w = p.window_for(s)
    return _mask("sliding-window", s, band(0, s, w, w))


def sliding_window_causal(s: int, seed: int, p: MaskParams) -> Mask:
    return _mask("sliding-window-causal", s, band(0, s, p.window_for(s), 0))


def document(s: int, seed: int, p: MaskParams) -> Mask:
    docs = _starts(document_lengths(s, random.Random(seed), p.max_doc_fraction))
    return _mask("document", s, [Rect(a, b, a, b, Kind.FULL) for a, b in docs])


def document_causal(s: int, seed: int, p: MaskParams) -> Mask:
    docs = _starts(document_lengths(s, random.Random(seed), p.max_doc_fraction))
    return _mask("document-causal", s, [Rect(a, b, a, b, Kind.CAUSAL) for a, b in docs])


def shared_question(s: int, seed: int, p: MaskParams) -> Mask:
    """A causal question, then answers that each see the whole question and themselves causally
    (reward-model training, FlashMask's "share question")."""
    rng = random.Random(seed)
    q_len = max(1, min(s, int(s * rng.uniform(0.1, 0.4))))
    rects = [Rect(0, q_len, 0, q_len, Kind.CAUSAL)]
    for a, b in _starts(document_lengths(s - q_len, rng, p.max_doc_fraction)):
        rects += [Rect(q_len + a, q_len + b, 0, q_len, Kind.FULL),
                  Rect(q_len + a, q_len + b, q_len + a, q_len + b, Kind.CAUSAL)]
    return _mask("shared-question", s, rects)


def causal_blockwise(s: int, seed: int, p: MaskParams) -> Mask:
    """In-context examples each causal on their own; the last block sees all earlier blocks
    and itself causally (FlashMask's "causal blockwise")."""
    docs = _starts(document_lengths(s, random.Random(seed), p.max_doc_fraction))
    rects = [Rect(a, b, a, b, Kind.CAUSAL) for a, b in docs]
    last_a = docs[-1][0]
    if last_a > 0:
        rects.append(Rect(last_a, s, 0, last_a, Kind.FULL))
    return _mask("causal-blockwise", s, rects)


def _prefix_lm(a: int, b: int, fraction: float) -> list[Rect]:
    pre = a + max(1, int((b - a) * fraction))
    return [Rect(a, pre, a, pre, Kind.FULL), Rect(pre, b, a, pre, Kind.FULL), Rect(pre, b, pre, b, Kind.CAUSAL)]


def prefix_lm(s: int, seed: int, p: MaskParams) -> Mask:
    return _mask("prefix-lm", s, _prefix_lm(0, s, p.prefix_fraction))


def prefix_lm_document(s: int, seed: int, p: MaskParams) -> Mask:
    docs = _starts(document_lengths(s, random.Random(seed), p.max_doc_fraction))
    return _mask("prefix-lm-document", s, [r for a, b in docs for r in _prefix_lm(a, b, p.prefix_fraction)])


def global_sliding_window(s: int, seed: int, p: MaskParams) -> Mask:
    """Longformer: `g` global tokens see and are seen by all; the rest a bidirectional window."""
    g = p.global_tokens if p.global_tokens is not None else max(1, s // 16)
    g = min(g, s)
    w = p.window_for(s)
    rects = [Rect(0, g, 0, s, Kind.FULL), Rect(g, s, 0, g, Kind.FULL)]
    rects += [Rect(r.q0 + g, r.q1 + g, r.k0 + g, r.k1 + g, r.kind) for r in band(0, s - g, w, w)]
    return _mask("global-sliding-window", s, rects)


def block_causal_document(s: int, seed: int, p: MaskParams) -> Mask:
    """Documents cut into blocks; a block sees itself and earlier blocks of its document fully."""
    rects, blk = [], p.block_for(s)
    for a, b in _starts(document_lengths(s, random.Random(seed), p.max_doc_fraction)):
        rects += [Rect(c, min(c + blk, b), a, min(c + blk, b), Kind.FULL) for c in range(a, b, blk)]
    return _mask("block-causal-document", s, rects)


def block_sparse(s: int, seed: int, p: MaskParams) -> Mask:
    """Random block-sparse: diagonal blocks always, off-diagonal blocks with chance `density`."""
    rng, blk = random.Random(seed), p.block_for(s)
    starts = list(range(0, s, blk))
    rects = [Rect(qa, min(qa + blk, s), ka, min(ka + blk, s), Kind.FULL)
             for qa in starts for ka in starts if qa == ka or rng.random() < p.density]
    return _mask("block-sparse", s, rects)


GENERATORS: dict[str, Generator] = {
    "full": full, "causal": causal, "sliding-window": sliding_window,
    "sliding-window-causal": sliding_window_causal, "document": document,
    "document-causal": document_causal, "shared-question": shared_question,
    "causal-blockwise": causal_blockwise, "prefix-lm": prefix_lm,
    "prefix-lm-document": prefix_lm_document, "global-sliding-window": global_sliding_window,
    "block-causal-document": block_causal_document, "block-sparse": block_sparse,
}
MASK_NAMES: tuple[str, ...] = tuple(GENERATORS)


def make_mask(name: str, seqlen: int, seed: int = 0, params: MaskParams | None = None) -> Mask:
    """The named mask; `InvalidArgumentError` for an unknown name or a length below 1."""
    if name not in GENERATORS:
        raise InvalidArgumentError(f"unknown mask {name!r}; choose from {', '.join(MASK_NAMES)}")
    if seqlen < 1:
        raise InvalidArgumentError(f"sequence length must be at least 1, got {seqlen}")
    return GENERATORS[name](seqlen, seed, params or MaskParams())
