"""Random-weight Qwen3 rerankers built from configs and saved like real checkpoints.

For tests (a tiny model) and benchmarks (the 0.6B shape): config.json, model.safetensors and a
byte-level BPE tokenizer trained in-process on the demo corpus and the reranker prompt, with the
chat special tokens and single tokens "yes" and "no" (the head reads their lm_head rows). The
embedding table keeps the config's vocabulary size even when the tokenizer is smaller, as
Qwen3's own table (151,669 rows) is larger than its tokenizer's 151,646 regular tokens.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from edgekit.models.decoders import CAUSAL_LM, PREFIX, SEQ_CLS, SPECIAL_TOKENS, SUFFIX, TEMPLATE


def reranker_tokenizer(vocab_size: int = 512) -> Any:
    """A Qwen-like byte-level BPE tokenizer (pad <|endoftext|>, no BOS/EOS added)."""
    from importlib import resources

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = resources.files("edgekit").joinpath("data/demo_corpus.txt").read_text(encoding="utf-8").splitlines()
    prompt = [PREFIX, SUFFIX, TEMPLATE.format(instruction="Given a query, find passages", query="q", document="d")]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(corpus + prompt * 5 + ["yes", "no"] * 200, trainer)
    for word in ("yes", "no"):
        if tokenizer.token_to_id(word) is None:
            raise RuntimeError(f"the trained tokenizer has no token {word!r}")
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<|endoftext|>", eos_token="<|im_end|>",
                                   model_input_names=["input_ids", "attention_mask"])


def build_qwen3_reranker(directory: Path, config: dict[str, Any], seed: int = 0,
                         architecture: str = CAUSAL_LM, tokenizer_vocab: int = 512) -> Path:
    """Save a random Qwen3 reranker (`config` from models.decoders) to `directory`.

    architecture: Qwen3ForCausalLM, or Qwen3ForSequenceClassification (num_labels 1, the score
    row set to lm_head's yes row minus its no row, as the published seq-cls conversions do).
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    tokenizer = reranker_tokenizer(tokenizer_vocab)
    settings = dict(config)
    model_type = settings.pop("model_type")
    theta = settings.pop("rope_theta")
    settings["vocab_size"] = max(settings["vocab_size"], len(tokenizer))
    hf_config = AutoConfig.for_model(model_type, rope_parameters={"rope_type": "default", "rope_theta": theta},
                                     pad_token_id=tokenizer.pad_token_id, **settings)
    torch.manual_seed(seed)
    causal = AutoModelForCausalLM.from_config(hf_config).float().eval()
    if architecture == CAUSAL_LM:
        model = causal
    elif architecture == SEQ_CLS:
        hf_config.num_labels = 1
        model = AutoModelForSequenceClassification.from_config(hf_config).float().eval()
        model.model.load_state_dict(causal.model.state_dict())
        yes, no = tokenizer.convert_tokens_to_ids("yes"), tokenizer.convert_tokens_to_ids("no")
        with torch.no_grad():
            model.score.weight.copy_((causal.lm_head.weight[yes] - causal.lm_head.weight[no])[None])
    else:
        raise ValueError(f"architecture must be {CAUSAL_LM} or {SEQ_CLS}")
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
