"""Tiny random encoder checkpoints (cross- and bi-encoders) built from configs and saved like
real ones (no hub downloads), for tests and the export families' `build_tiny`.

Each builder writes a directory that transformers (and so `edgekit export`) loads exactly as it
would a downloaded checkpoint: config.json, model.safetensors, tokenizer files, and for
bi-encoders the sentence-transformers files (modules.json, 1_Pooling/config.json, ...).
Imports torch and transformers: import this module only where the export extra is installed.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, PreTrainedTokenizerFast

from edgekit.models.encoders import ENCODER_FAMILIES, EncoderFamily

WORDS = ["the", "a", "of", "to", "and", "in", "is", "it", "for", "on", "with", "as", "how", "do", "i", "read", "file", "line", "by", "sort", "list", "python", "open", "data", "query", "text", "model", "fast", "slow", "cat", "dog", "sat", "mat", "sorted", "order", "place", "heap", "json", "parse", "string", "number", "path", "join"]
CORPUS = [
    "how do i read a file line by line",
    "open the file and read it line by line",
    "sort a list in place with sorted order",
    "the cat sat on the mat",
    "parse a json string into python data",
    "join a path with a file name",
]


def wordpiece_tokenizer() -> PreTrainedTokenizerFast:
    """A BERT-style WordPiece tokenizer: [CLS] A [SEP] B [SEP] with segment ids."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *letters, *("##" + c for c in letters)]
    tokenizer = Tokenizer(models.WordPiece({w: i for i, w in enumerate(dict.fromkeys(vocab))}, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]", model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )


def bpe_tokenizer() -> PreTrainedTokenizerFast:
    """A RoBERTa-style byte-level BPE tokenizer: <s> A </s></s> B </s>, pad id 1."""
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(CORPUS * 5, trainer)
    tokenizer.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", sep_token="</s>", cls_token="<s>",
        pad_token="<pad>", unk_token="<unk>", mask_token="<mask>", model_input_names=["input_ids", "attention_mask"],
    )


def _family(name: str) -> EncoderFamily:
    return next(family for family in ENCODER_FAMILIES if family.name == name)


def build_cross_encoder(directory: Path, family_name: str = "bert", num_labels: int = 1, seed: int = 0) -> Path:
    """Save a tiny random *ForSequenceClassification checkpoint of `family_name` to `directory`."""
    family = _family(family_name)
    tokenizer = bpe_tokenizer() if family_name == "roberta" else wordpiece_tokenizer()
    settings = dict(family.tiny_config)
    model_type = settings.pop("model_type")
    settings["vocab_size"] = len(tokenizer)
    config = AutoConfig.for_model(model_type, num_labels=num_labels, **settings)
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_config(config)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def build_bi_encoder(directory: Path, pooling: str = "mean", normalize: bool = True, seed: int = 0,
                     max_seq_length: int = 48) -> Path:
    """Save a tiny random BERT in sentence-transformers layout (Transformer, Pooling, Normalize)."""
    tokenizer = wordpiece_tokenizer()
    settings = dict(_family("bert").tiny_config)
    settings.pop("model_type")
    settings["vocab_size"] = len(tokenizer)
    torch.manual_seed(seed)
    model = AutoModel.from_config(AutoConfig.for_model("bert", **settings))
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    (directory / "modules.json").write_text(json.dumps(modules))
    (directory / "1_Pooling").mkdir(exist_ok=True)
    (directory / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": settings["hidden_size"],
        "pooling_mode_cls_token": pooling == "cls",
        "pooling_mode_mean_tokens": pooling == "mean",
    }))
    (directory / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq_length}))
    return directory
