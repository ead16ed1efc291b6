"""A whole decoder reranker as ONE ONNX graph: the baseline for the deep benchmark.

Same math as the package (token lookup, rotary tables and causal mask computed in the graph,
every decoder layer, the yes/no head), so the benchmark compares memory and time, not models.
Graphs over 2 GB (a 0.6B model in fp32) are written with external data by torch.onnx, so the
output is a directory: `model.onnx` plus its tensor files.

Graph contract: input_ids [batch, sequence] int64 and attention_mask [batch, sequence] int64,
LEFT-padded, with the prompt applied (edgekit's TextEncoder builds them) -> score [batch] =
P(yes) at the last position.
"""

from __future__ import annotations

import os
import shutil
import uuid
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgekit.errors import ParityError
from edgekit.exporters.decoder import DecoderStages, reference_scores, split_decoder
from edgekit.exporters.decoder_export import left_padded, load_decoder, prompt_ids, rotary_spec
from edgekit.exporters.onnx_writer import OPSET
from edgekit.exporters.source import inspect_decoder
from edgekit.models.decoders import DEFAULT_INSTRUCTION, PREFIX, SUFFIX, TEMPLATE
from edgekit.ranking_manifest import PromptSpec, RotarySpec
from edgekit.runtimes.backends import backend_for

TOLERANCE = 1e-4
GRAPH_FILE = "model.onnx"


class _DecoderGraph(nn.Module):
    def __init__(self, stages: DecoderStages, rotary: RotarySpec) -> None:
        super().__init__()
        self.table = stages.table
        self.layers = nn.ModuleList(stages.layers)
        self.head = stages.head
        inv_freq = 1.0 / (rotary.theta ** (torch.arange(0, rotary.dim, 2, dtype=torch.int64).float() / rotary.dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.scaling = rotary.scaling

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = nn.functional.embedding(input_ids, self.table)
        batch, length = input_ids.shape
        angles = torch.arange(length, dtype=torch.float32)[:, None] * self.inv_freq[None, :]
        both = torch.cat([angles, angles], dim=-1)
        cos = (both.cos() * self.scaling)[None].expand(batch, -1, -1)
        sin = (both.sin() * self.scaling)[None].expand(batch, -1, -1)
        causal = torch.ones(length, length, dtype=torch.bool).tril()
        allowed = causal[None] & attention_mask[:, None, :].bool()
        bias = torch.where(allowed, 0.0, torch.finfo(torch.float32).min)[:, None]
        for layer in self.layers:
            hidden = layer(hidden, bias, cos, sin)
        return self.head(hidden)


def export_monolithic_decoder(source_dir: Path, out_dir: Path, max_length: int = 128) -> Path:
    """Write the decoder reranker at `source_dir` as one graph in `out_dir` (atomically);
    checked in onnxruntime against transformers (max abs diff <= TOLERANCE). Returns the graph."""
    info = inspect_decoder(Path(source_dir))
    model, tokenizer = load_decoder(info)
    stages = split_decoder(model, tokenizer)
    wrapper = _DecoderGraph(stages, rotary_spec(model.config)).eval()
    prompt = PromptSpec(prefix=PREFIX, template=TEMPLATE, suffix=SUFFIX, instruction=DEFAULT_INSTRUCTION)
    pad = int(tokenizer.pad_token_id)
    trace = left_padded(prompt_ids(tokenizer, prompt, "read a file", ["open it", "sort a list in place"], max_length),
                        pad)
    out_dir = Path(out_dir)
    temporary = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}"
    temporary.mkdir(parents=True)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(wrapper, trace, str(temporary / GRAPH_FILE), input_names=["input_ids", "attention_mask"],
                              output_names=["score"],
                              dynamic_axes={"input_ids": {0: "batch", 1: "sequence"},
                                            "attention_mask": {0: "batch", 1: "sequence"}, "score": {0: "batch"}},
                              opset_version=OPSET, do_constant_folding=True, dynamo=False)
        documents = ["how to open a file", "a much longer document about sorting lists in place " * 8, "cats"]
        check = left_padded(prompt_ids(tokenizer, prompt, "read a file", documents, max_length), pad)
        expected = reference_scores(stages, *check).numpy()
        session = backend_for("onnx", "cpu").load(temporary / GRAPH_FILE)
        actual = session.run({"input_ids": check[0].numpy(), "attention_mask": check[1].numpy()})[0]
        session.release()
        diff = float(np.max(np.abs(actual - expected))) if actual.shape == expected.shape else float("inf")
        if not diff <= TOLERANCE:
            raise ParityError(f"monolithic graph of {source_dir}: differs from transformers by {diff:.3g}")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(temporary, out_dir)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return out_dir / GRAPH_FILE
