"""Reference scores computed with transformers alone (independent of edgekit's exporter code)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer


@torch.no_grad()
def cross_encoder_scores(checkpoint: Path, query: str, candidates: list[str], max_length: int) -> np.ndarray:
    """Scores as sentence-transformers' CrossEncoder computes them (logit, or log-odds for 2 labels)."""
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint).eval()
    batch = tokenizer([query] * len(candidates), candidates, padding=True, truncation=True,
                      max_length=max_length, return_tensors="pt")
    logits = model(**batch).logits
    scores = logits[:, 0] if logits.shape[1] == 1 else logits[:, 1] - logits[:, 0]
    return scores.numpy()


@torch.no_grad()
def bi_encoder_embeddings(checkpoint: Path, texts: list[str], max_length: int, pooling: str = "mean",
                          normalize: bool = True) -> np.ndarray:
    """Sentence embeddings as sentence-transformers computes them: pooling, then L2 normalisation."""
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModel.from_pretrained(checkpoint).eval()
    batch = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    hidden = model(**batch).last_hidden_state
    if pooling == "cls":
        pooled = hidden[:, 0]
    else:
        mask = batch["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1)
    if normalize:
        pooled = torch.nn.functional.normalize(pooled, dim=-1)
    return pooled.numpy()


def cosine_scores(embeddings: np.ndarray) -> np.ndarray:
    """Cosine of rows 1.. with row 0 (the query)."""
    query, candidates = embeddings[0], embeddings[1:]
    return candidates @ query / (np.linalg.norm(candidates, axis=1) * np.linalg.norm(query))
