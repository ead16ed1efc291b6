"""The tiny encoder builders, kept importable from tests; they live in edgekit.models.encoder_builds."""

from edgekit.models.encoder_builds import (  # noqa: F401
    CORPUS,
    WORDS,
    bpe_tokenizer,
    build_bi_encoder,
    build_cross_encoder,
    wordpiece_tokenizer,
)
