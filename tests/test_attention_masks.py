"""Masks as rectangles: the closed-form area of every generator equals a dense count, the
rectangles are disjoint, no row is empty, generators are deterministic, and the converters
agree with the dense mask."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from edgekit.errors import InvalidArgumentError
from edgekit.runtimes.attention.convert import is_causal_form, varlen_form
from edgekit.runtimes.attention.generators import MASK_NAMES, MaskParams, band, make_mask
from edgekit.runtimes.attention.masks import Kind, Mask, Rect

torch.set_num_threads(1)


def dense_count_disjoint(mask: Mask) -> tuple[int, int]:
    """(pixels covered by the union, pixels covered counting overlaps) from dense rectangles."""
    cover = torch.zeros(mask.seqlen_q, mask.seqlen_k, dtype=torch.int32)
    for rect in mask.rects:
        cover += Mask("one", mask.seqlen_q, mask.seqlen_k, (rect,)).dense().int()
    return int((cover > 0).sum()), int(cover.sum())


@pytest.mark.parametrize("kind", list(Kind))
@given(lq=st.integers(0, 12), lk=st.integers(0, 12))
@settings(max_examples=40, deadline=None)
def test_rect_area_closed_form_matches_dense(kind: Kind, lq: int, lk: int) -> None:
    rect = Rect(2, 2 + lq, 3, 3 + lk, kind)
    mask = Mask("r", 20, 20, (rect,))
    assert rect.area() == int(mask.dense().sum())


@pytest.mark.parametrize("name", MASK_NAMES)
@given(s=st.integers(1, 160), seed=st.integers(0, 10_000))
@settings(max_examples=25, deadline=None)
def test_generator_area_and_flops_match_dense(name: str, s: int, seed: int) -> None:
    mask = make_mask(name, s, seed)
    union, with_overlaps = dense_count_disjoint(mask)
    assert union == with_overlaps, "rectangles overlap"
    assert mask.area() == union
    assert mask.flops(heads=3, head_dim=8) == 4 * union * 3 * 8
    assert mask.flops(heads=3, head_dim=8, backward=True) == 10 * union * 3 * 8
    assert bool(mask.dense().any(dim=1).all()), "a query row has no keys"
    assert mask.block_area(s // 3, s, 0, s // 2) == int(mask.dense()[s // 3:, : s // 2].sum())


@pytest.mark.parametrize("name", MASK_NAMES)
def test_generators_are_deterministic_for_a_seed(name: str) -> None:
    assert make_mask(name, 777, seed=5) == make_mask(name, 777, seed=5)


def test_random_masks_change_with_the_seed() -> None:
    assert make_mask("document", 4096, seed=1) != make_mask("document", 4096, seed=2)
    assert make_mask("block-sparse", 1024, seed=1) != make_mask("block-sparse", 1024, seed=2)


@given(n=st.integers(1, 40), left=st.integers(0, 45), right=st.integers(0, 45))
@settings(max_examples=60, deadline=None)
def test_band_is_exactly_the_window(n: int, left: int, right: int) -> None:
    mask = Mask("band", n + 5, n + 5, tuple(band(5, n, left, right)))
    q = torch.arange(n + 5)[:, None]
    k = torch.arange(n + 5)[None, :]
    want = (q >= 5) & (k >= 5) & (k - q >= -left) & (k - q <= right)
    assert torch.equal(mask.dense(), want)
    assert mask.area() == int(want.sum())


def test_documents_never_fill_the_sequence_and_index_blocks_match() -> None:
    mask = make_mask("document", 8192, seed=3)
    assert max(r.lq for r in mask.rects) <= 4096
    idx = torch.tensor([0, 5, 4000, 8191])
    assert torch.equal(mask.index_block(idx, idx), mask.dense()[idx][:, idx])


def test_structured_converters() -> None:
    assert is_causal_form(make_mask("full", 64)) is False
    assert is_causal_form(make_mask("causal", 64)) is True
    assert is_causal_form(make_mask("document", 64)) is None
    doc = make_mask("document-causal", 300, seed=2, params=MaskParams())
    varlen = varlen_form(doc)
    assert varlen is not None and varlen.causal
    assert int(varlen.cu_seqlens[-1]) == 300
    assert varlen_form(make_mask("prefix-lm", 64)) is None


def test_unknown_mask_is_a_user_error() -> None:
    with pytest.raises(InvalidArgumentError, match="unknown mask"):
        make_mask("diagonal", 8)
