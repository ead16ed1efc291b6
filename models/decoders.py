"""Decoder rerankers (Qwen3-Reranker style): the prompt they were trained with and tiny configs.

A decoder reranker scores a (query, document) pair by the probability that the model answers
"yes" rather than "no" after a fixed chat prompt: P = sigmoid(logit_yes - logit_no) at the last
token. Checkpoints come as `Qwen3ForCausalLM` (the "yes"/"no" rows of lm_head are the head) or
as `Qwen3ForSequenceClassification` "seq-cls" conversions (one score row, = yes - no).
"""

from __future__ import annotations

from typing import Any

DECODER_MODEL_TYPES = ("qwen3",)
CAUSAL_LM = "Qwen3ForCausalLM"
SEQ_CLS = "Qwen3ForSequenceClassification"

# The Qwen3-Reranker prompt (model card of Qwen/Qwen3-Reranker-0.6B): a system line asking for
# "yes" or "no", the user turn with instruction, query and document, then the assistant turn
# opened with an empty think block, so the next token is the answer.
PREFIX = ("<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
          'Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n')
TEMPLATE = "<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {document}"
SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
DEFAULT_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
SPECIAL_TOKENS = ("<|im_start|>", "<|im_end|>", "<think>", "</think>", "<|endoftext|>")
YES, NO = "yes", "no"


def tiny_qwen3_config(vocab_size: int, layers: int = 3) -> dict[str, Any]:
    """A Qwen3 config small enough for tests (hidden 64, 4 heads of 16, 2 KV heads)."""
    return dict(
        model_type="qwen3", vocab_size=vocab_size, hidden_size=64, intermediate_size=128,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        max_position_embeddings=512, rope_theta=1_000_000.0, rms_norm_eps=1e-6, tie_word_embeddings=True,
    )


def qwen3_reranker_0_6b_config(vocab_size: int = 151_669) -> dict[str, Any]:
    """The shape of Qwen3-Reranker-0.6B (28 layers, hidden 1024, 16 heads of 128, 8 KV heads,
    MLP 3072, the real vocabulary size), for random-weight benchmarks built on the CPU."""
    return dict(
        model_type="qwen3", vocab_size=vocab_size, hidden_size=1024, intermediate_size=3072,
        num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8, head_dim=128,
        max_position_embeddings=40_960, rope_theta=1_000_000.0, rms_norm_eps=1e-6, tie_word_embeddings=True,
    )
