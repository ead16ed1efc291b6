"""Raw onnxruntime sessions on in-memory graphs, for the attention benchmark
(runtimes/attention/kernels_ort.py), which measures ORT's own kernels rather than running a
package: its graphs are built in memory, its CUDA runs bind device pointers (IO binding), and
it asks whether ORT implements an op for a dtype at all. None of that is part of the backend
contract, so it lives here, next to the one other module that imports onnxruntime.

Providers are the short names of onnxruntime_backend.PROVIDERS ("cpu", "cuda").
"""

from __future__ import annotations

from typing import Any

import onnxruntime as ort
from onnxruntime.capi.onnxruntime_pybind11_state import NotImplemented as OrtNotImplemented

from edgekit.runtimes.backends.onnxruntime_backend import PROVIDERS


def raw_session(model: bytes, provider: str, threads: int) -> Any:
    """An `onnxruntime.InferenceSession` on a serialized graph, with ORT's default options but
    `threads` intra-op threads and no CPU fallback (a kernel the provider lacks raises)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(model, options, providers=[PROVIDERS[provider]])


def missing_kernel(model: bytes, provider: str) -> str | None:
    """None when ORT builds a session for `model` on `provider`, else why not (one line)."""
    name = PROVIDERS[provider]
    if name not in ort.get_available_providers():
        return f"{name} is not available in this onnxruntime build"
    try:
        raw_session(model, provider, threads=1)
    except OrtNotImplemented as error:
        return f"onnxruntime has no {name} kernel: {str(error).split(':')[-1].strip()}"
    return None
