"""The one-graph-per-model baseline for `edgekit bench video`: the whole SVD UNet as one ONNX graph.

What an app gets by exporting each diffusers model of a Stable Video Diffusion pipeline whole:
one graph for the UNet (`unet.onnx`: sample [B, F, 2C, h, w] (scaled noisy latents concatenated
with the image latents), timestep [B], encoder_hidden_states [B, 1, D], added_time_ids [B, 3] ->
noise_pred [B, F, C, h, w]; batch, frames, height and width dynamic) and one graph for the VAE
decoder. The VAE decoder, the CLIP image encoder and the VAE encoder are already whole-model
graphs in an edgekit video package (`vae_decoder`, `image_encoder`, `vae_encoder`: each wraps
its whole diffusers module), so the baseline reuses them from the package instead of exporting
identical graphs again; only the UNet, which the package cuts into stages, is exported here.

Exported with the legacy TorchScript exporter (fast for SVD) and checked against diffusers'
UNet with onnxruntime at two shapes (the second with another batch, frame count and size).

Example::

    info = export_monolithic_svd(Path("tiny-svd"), Path("mono"))
    info["unet_max_abs_diff"]      # <= 1e-4 relative to max(1, max |reference|)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from edgekit.exporters.onnx_writer import export_graph
from edgekit.exporters.package_parts import check_parity, max_diff
from edgekit.exporters.video_svd import TOLERANCE, load_svd
from edgekit.runtimes.backends import backend_for

UNET_FILE = "unet.onnx"
INFO_FILE = "monolithic.json"
UNET_INPUTS = ["sample", "timestep", "encoder_hidden_states", "added_time_ids"]


class WholeUnet(torch.nn.Module):
    """diffusers' UNetSpatioTemporalConditionModel with tensor-only IO."""

    def __init__(self, unet: torch.nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor,
                added_time_ids: torch.Tensor) -> torch.Tensor:
        return self.unet(sample, timestep, encoder_hidden_states=encoder_hidden_states,
                         added_time_ids=added_time_ids, return_dict=False)[0]


def _example(unet: torch.nn.Module, batch: int, frames: int, lh: int, lw: int, seed: int) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    c = unet.config
    return (torch.randn(batch, frames, int(c.in_channels), lh, lw, generator=generator),
            torch.full((batch,), 1.6) + torch.rand(batch, generator=generator),
            torch.randn(batch, 1, int(c.cross_attention_dim), generator=generator),
            torch.tensor([[6.0, 127.0, 0.02]]).repeat(batch, 1))


def export_monolithic_svd(source: str | Path, out: Path) -> dict[str, Any]:
    """Export diffusers' whole SVD UNet from `source` to `out/unet.onnx`; parity-check it; write
    `out/monolithic.json` ({"unet_max_abs_diff", "shapes_checked", "unet_bytes"}) and return it."""
    src = load_svd(Path(source))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    unit = src.size_multiple // src.vae_scale_factor
    shapes = [(2, 3, 2 * unit, 2 * unit), (1, 2, unit, 3 * unit)]
    module = WholeUnet(src.unet).eval()
    examples = [_example(src.unet, *shape, seed=k) for k, shape in enumerate(shapes)]
    axes = {"sample": {0: "batch", 1: "frames", 3: "latent_height", 4: "latent_width"},
            "timestep": {0: "batch"}, "encoder_hidden_states": {0: "batch"}, "added_time_ids": {0: "batch"},
            "noise_pred": {0: "batch", 1: "frames", 3: "latent_height", 4: "latent_width"}}
    graph = export_graph(module, examples[0], out, UNET_FILE, UNET_INPUTS, ["noise_pred"], axes, "unet", "unet")
    session = backend_for("onnx", "cpu").load(out / graph.path)
    worst = 0.0
    try:
        for example in examples:
            with torch.no_grad():
                expected = module(*example).numpy()
            actual = session.run({name: value.numpy() for name, value in zip(UNET_INPUTS, example)})[0]
            diff, scale = max_diff(actual, expected)
            check_parity(f"whole UNet at shape {tuple(example[0].shape)}", diff, scale, TOLERANCE)
            worst = max(worst, diff)
    finally:
        session.release()
    size = sum(path.stat().st_size for path in out.iterdir() if path.name.startswith(UNET_FILE))
    info = {"unet_max_abs_diff": worst, "tolerance": TOLERANCE, "shapes_checked": [list(s) for s in shapes],
            "unet_bytes": size, "source": str(Path(source).resolve())}
    (out / INFO_FILE).write_text(json.dumps(info, indent=2), encoding="utf-8")
    return info

