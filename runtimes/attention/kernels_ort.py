"""ONNX Runtime attention: the attention an edge user exports, as an ONNX graph with its mask,
run by an ORT inference session on the CPU (or CUDA with onnxruntime-gpu); the sessions come from
runtimes/backends/onnxruntime_raw.py.

Two graphs: `ort-matmul` is the plain graph exporters emit (MatMul → Add mask bias → Softmax →
MatMul, GQA by Expand), and `ort-attention` the fused opset-23 `Attention` op (boolean mask or
`is_causal`, native GQA). Shapes are static per problem. Whether ORT implements a graph for a
dtype/provider is probed once on a tiny graph of the same ops (ORT raises `NotImplemented`).
"""

from __future__ import annotations

import enum
import functools
import math
from dataclasses import dataclass

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper

from edgekit.runtimes.attention.convert import is_causal_form
from edgekit.runtimes.attention.kernels import RunFn
from edgekit.runtimes.attention.problem import Problem

_ONNX_TYPES = {torch.float32: TensorProto.FLOAT, torch.float16: TensorProto.FLOAT16,
               torch.bfloat16: TensorProto.BFLOAT16, torch.float64: TensorProto.DOUBLE}
_DEVICES = ("cpu", "cuda")  # torch device types, named as the backends name providers


class MaskInput(str, enum.Enum):
    """How the mask reaches the graph: not at all (full), `is_causal`, or a `[1,1,S,S]` input."""

    NONE = "none"
    CAUSAL = "causal"
    DENSE = "dense"

    def needs_tensor(self, fused: bool) -> bool:
        """The plain graph has no `is_causal`, so a causal mask becomes a bias input there."""
        return self is MaskInput.DENSE or (self is MaskInput.CAUSAL and not fused)


@dataclass(frozen=True)
class GraphSpec:
    """What the graph is built for: static sizes, GQA group, mask input or `is_causal`."""

    batch: int
    heads: int
    kv_heads: int
    seqlen: int
    head_dim: int
    elem: int  # onnx TensorProto element type
    mask: MaskInput


def build_graph(spec: GraphSpec, fused: bool) -> onnx.ModelProto:
    """q `[B,H,S,D]`, k/v `[B,H_kv,S,D]`, optional `mask` (`[1,1,S,S]`: float bias 0/−inf for
    the plain graph, boolean for the fused op) → out `[B,H,S,D]`."""
    b, h, hk, s, d, t = spec.batch, spec.heads, spec.kv_heads, spec.seqlen, spec.head_dim, spec.elem
    inputs = [helper.make_tensor_value_info("q", t, [b, h, s, d]),
              helper.make_tensor_value_info("k", t, [b, hk, s, d]),
              helper.make_tensor_value_info("v", t, [b, hk, s, d])]
    if spec.mask.needs_tensor(fused):
        inputs.append(helper.make_tensor_value_info("mask", TensorProto.BOOL if fused else t, [1, 1, s, s]))
    out = helper.make_tensor_value_info("out", t, [b, h, s, d])
    if fused:
        names = [i.name for i in inputs]
        nodes = [helper.make_node("Attention", names, ["out"], is_causal=int(spec.mask is MaskInput.CAUSAL))]
        graph = helper.make_graph(nodes, "attention", inputs, [out])
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])
    scale = helper.make_tensor("scale", t, [], [1.0 / math.sqrt(d)]) if t != TensorProto.FLOAT16 else \
        helper.make_tensor("scale", t, [], np.array([1.0 / math.sqrt(d)], np.float16).view(np.uint16).tolist())
    inits = [scale, helper.make_tensor("expand", TensorProto.INT64, [5], [b, hk, h // hk, s, d]),
             helper.make_tensor("merged", TensorProto.INT64, [4], [b, h, s, d]),
             helper.make_tensor("axis2", TensorProto.INT64, [1], [2])]
    nodes, k, v = [], "k", "v"
    if hk != h:
        for name in ("k", "v"):
            nodes += [helper.make_node("Unsqueeze", [name, "axis2"], [f"{name}5"]),
                      helper.make_node("Expand", [f"{name}5", "expand"], [f"{name}x"]),
                      helper.make_node("Reshape", [f"{name}x", "merged"], [f"{name}g"])]
        k, v = "kg", "vg"
    nodes += [helper.make_node("Mul", ["q", "scale"], ["qs"]),
              helper.make_node("Transpose", [k], ["kt"], perm=[0, 1, 3, 2]),
              helper.make_node("MatMul", ["qs", "kt"], ["scores"])]
    scores = "scores"
    if len(inputs) == 4:
        nodes.append(helper.make_node("Add", ["scores", "mask"], ["masked"]))
        scores = "masked"
    nodes += [helper.make_node("Softmax", [scores], ["probs"], axis=-1),
              helper.make_node("MatMul", ["probs", v], ["out"])]
    graph = helper.make_graph(nodes, "attention", inputs, [out], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _session(model: onnx.ModelProto, provider: str):
    from edgekit.runtimes.backends.onnxruntime_raw import raw_session

    return raw_session(model.SerializeToString(), provider, torch.get_num_threads())


@functools.cache
def _implemented(fused: bool, elem: int, gqa: bool, mask: MaskInput, provider: str) -> str | None:
    """None when ORT builds a session for this graph family on `provider`, else the reason."""
    from edgekit.runtimes.backends.onnxruntime_raw import missing_kernel

    spec = GraphSpec(1, 2, 1 if gqa else 2, 4, 4, elem, mask)
    return missing_kernel(build_graph(spec, fused).SerializeToString(), provider)


@dataclass(frozen=True)
class OrtKernel:
    """Attention as an ONNX graph in an ORT session (`fused`: the opset-23 Attention op)."""

    name: str
    fused: bool

    def _spec(self, p: Problem) -> GraphSpec:
        causal = is_causal_form(p.mask)
        mask = MaskInput.DENSE if causal is None else (MaskInput.CAUSAL if causal else MaskInput.NONE)
        return GraphSpec(p.batch, p.heads, p.kv_heads, p.seqlen, p.head_dim, _ONNX_TYPES[p.dtype], mask)

    def unsupported(self, p: Problem) -> str | None:
        if p.device.type not in _DEVICES or p.dtype not in _ONNX_TYPES:
            return f"no ONNX Runtime provider wired for {p.device.type}/{p.dtype}"
        if p.device.type == "cpu" and p.dtype == torch.bfloat16:
            return "bfloat16 has no numpy type to feed an ORT CPU session"
        spec = self._spec(p)
        return _implemented(self.fused, spec.elem, p.gqa, spec.mask, p.device.type)

    def backward_unsupported(self, p: Problem) -> str | None:
        return "ONNX Runtime inference sessions have no backward pass"

    def prepare(self, p: Problem) -> RunFn:
        spec = self._spec(p)
        session = _session(build_graph(spec, self.fused), p.device.type)
        feeds: dict[str, torch.Tensor] = {}
        if spec.mask.needs_tensor(self.fused):
            allowed = p.mask.dense(device=p.device)[None, None]
            feeds["mask"] = allowed if self.fused else torch.zeros(
                allowed.shape, dtype=p.dtype, device=p.device).masked_fill(~allowed, float("-inf"))
        if p.device.type == "cuda":
            return _cuda_runner(session, feeds, p)
        mask_np = {name: t.numpy() for name, t in feeds.items()}

        def run(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            out = session.run(["out"], {"q": q.numpy(), "k": k.numpy(), "v": v.numpy(), **mask_np})[0]
            return torch.from_numpy(out)

        return run


def _cuda_runner(session, feeds: dict[str, torch.Tensor], p: Problem) -> RunFn:
    """IO binding on device pointers, so no host copies are timed."""
    np_types = {torch.float32: np.float32, torch.float16: np.float16, torch.bool: np.bool_}

    def bind(binding, name: str, t: torch.Tensor, output: bool = False) -> torch.Tensor:
        t = t.contiguous()  # returned, so the caller keeps the bound memory alive
        args = (name, "cuda", t.device.index or 0, np_types[t.dtype], list(t.shape), t.data_ptr())
        (binding.bind_output if output else binding.bind_input)(*args)
        return t

    def run(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        out = torch.empty(p.batch, p.heads, p.seqlen, p.head_dim, dtype=p.dtype, device=p.device)
        binding = session.io_binding()
        alive = [bind(binding, name, t) for name, t in {"q": q, "k": k, "v": v, **feeds}.items()]
        bind(binding, "out", out, output=True)
        session.run_with_iobinding(binding)
        del alive
        return out

    return run
