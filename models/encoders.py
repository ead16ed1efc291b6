"""Encoder families (BERT-style transformers used as cross-encoders and bi-encoders).

Each spec says where the pieces live inside a transformers model, how its classification head
reads the hidden states, the parity tolerance, and a tiny config for tests. Families are keyed
by the checkpoint's `model_type` (an explicit table, never by sniffing names or paths).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edgekit.errors import SourceModelError

# How a *ForSequenceClassification head turns hidden states [B, S, H] into logits [B, L].
HEAD_POOLER_CLASSIFIER = "pooler+classifier"  # BERT: tanh pooler on [CLS], then linear
HEAD_CLASSIFICATION_MODULE = "classification-module"  # RoBERTa/XLM-R/ELECTRA: module reads [:, 0]
HEAD_DISTILBERT = "distilbert"  # DistilBERT: pre_classifier + ReLU + classifier on [:, 0]


@dataclass(frozen=True)
class EncoderFamily:
    """Where a family's parts live. Paths are attribute names, dotted from the base model."""

    name: str
    model_types: tuple[str, ...]
    base_attr: str  # attribute of the *ForSequenceClassification model holding the base model
    layers_path: str  # dotted path from the base model to its ModuleList of layers
    cross_head: str
    has_token_type_ids: bool
    positions_from_mask: bool = False  # RoBERTa: positions count real tokens from padding_idx + 1
    tolerance: float = 1e-4  # max abs diff (relative to the output's scale) allowed at export
    tiny_config: dict[str, Any] = field(default_factory=dict)


_TINY = dict(
    vocab_size=1000,  # replaced by the tokenizer's size in tests
    hidden_size=32,
    num_hidden_layers=3,
    num_attention_heads=4,
    intermediate_size=64,
    max_position_embeddings=128,
)

ENCODER_FAMILIES: tuple[EncoderFamily, ...] = (
    EncoderFamily(
        name="bert",
        model_types=("bert",),
        base_attr="bert",
        layers_path="encoder.layer",
        cross_head=HEAD_POOLER_CLASSIFIER,
        has_token_type_ids=True,
        tiny_config=dict(_TINY, model_type="bert"),
    ),
    EncoderFamily(
        name="roberta",
        model_types=("roberta", "xlm-roberta"),
        base_attr="roberta",
        layers_path="encoder.layer",
        cross_head=HEAD_CLASSIFICATION_MODULE,
        has_token_type_ids=False,
        positions_from_mask=True,
        tiny_config=dict(_TINY, model_type="xlm-roberta", pad_token_id=1, type_vocab_size=1),
    ),
    EncoderFamily(
        name="electra",
        model_types=("electra",),
        base_attr="electra",
        layers_path="encoder.layer",
        cross_head=HEAD_CLASSIFICATION_MODULE,
        has_token_type_ids=True,
        tiny_config=dict(_TINY, model_type="electra", embedding_size=16),
    ),
    EncoderFamily(
        name="distilbert",
        model_types=("distilbert",),
        base_attr="distilbert",
        layers_path="transformer.layer",
        cross_head=HEAD_DISTILBERT,
        has_token_type_ids=False,
        tiny_config=dict(
            model_type="distilbert", vocab_size=1000, dim=32, n_layers=3, n_heads=4, hidden_dim=64,
            max_position_embeddings=128,
        ),
    ),
)


def family_for_model_type(model_type: str) -> EncoderFamily:
    """The family that handles `model_type`, or a SourceModelError listing what is supported."""
    for family in ENCODER_FAMILIES:
        if model_type in family.model_types:
            return family
    supported = sorted(t for family in ENCODER_FAMILIES for t in family.model_types)
    raise SourceModelError(
        f"model_type {model_type!r} is not a supported encoder; supported: {', '.join(supported)}"
    )
