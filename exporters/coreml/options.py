"""The Core ML export options, checked once at the CLI/API boundary.

Example::

    options = CoreMLOptions.parse("onnx,coreml", compute_units="cpu_and_ne", precision="fp16", palettize=4)
    options.formats        # ("onnx", "coreml")
    options.wants_coreml   # True
"""

from __future__ import annotations

from dataclasses import dataclass

from edgekit.errors import InvalidArgumentError

FORMATS = ("onnx", "coreml")
COMPUTE_UNITS = ("all", "cpu_and_ne", "cpu_and_gpu", "cpu_only")
PRECISIONS = ("fp16", "fp32")
PALETTE_BITS = (4, 6, 8)
DEPLOYMENT_TARGET = "iOS17"  # macOS 14: fp16 IO, flexible shapes and palettized weights all load there


@dataclass(frozen=True)
class CoreMLOptions:
    """What `edgekit export --format ...` asked for. `formats` keeps the user's order; at least
    one. compute_units is the default a runtime loads the Core ML graphs with (Core ML decides it
    at load time, not at conversion); precision is the mlprogram's compute precision (the graphs'
    inputs and outputs stay float32, as Apple's converter keeps chunk boundaries in fp32)."""

    formats: tuple[str, ...] = ("onnx",)
    compute_units: str = "all"
    precision: str = "fp16"
    palettize: int | None = None

    @property
    def wants_coreml(self) -> bool:
        return "coreml" in self.formats

    @property
    def wants_onnx(self) -> bool:
        return "onnx" in self.formats

    def check_combination(self, dtype: str = "fp32", shared_layers: bool = False, fuse: bool = False) -> None:
        """Options that cannot hold for Core ML graphs, refused before the model loads: int8
        graphs are onnxruntime's quantized ops (Core ML: --palettize 8), shared layers feed weights
        as inputs to one onnxruntime session, fusions are onnxruntime-only ops (kept for the ONNX
        graphs of onnx,coreml)."""
        if not self.wants_coreml:
            return
        if dtype in ("int8", "mixed"):
            raise InvalidArgumentError(f"--dtype {dtype} quantizes ONNX graphs only; for Core ML graphs use "
                                       "--palettize 8 (or 4, 6) instead")
        if shared_layers:
            raise InvalidArgumentError("--shared-layers applies to ONNX graphs only; leave it out with --format "
                                       "coreml or onnx,coreml")
        if fuse and not self.wants_onnx:
            raise InvalidArgumentError("--fuse rewrites ONNX graphs only; use --format onnx,coreml or leave --fuse out")

    @staticmethod
    def parse(formats: str | None = None, compute_units: str | None = None, precision: str | None = None,
              palettize: int | None = None) -> CoreMLOptions:
        """Check the raw option values; InvalidArgumentError (one line) names a bad one. Core ML
        options without `coreml` among the formats are a mistake, not ignored."""
        names = tuple(part.strip() for part in (formats or "onnx").split(",") if part.strip())
        for name in names:
            if name not in FORMATS:
                raise InvalidArgumentError(f"--format {formats!r}: unknown format {name!r}; use onnx, coreml "
                                           "or onnx,coreml")
        if not names or len(set(names)) != len(names):
            raise InvalidArgumentError(f"--format {formats!r}: name each of onnx, coreml at most once")
        coreml_given = [flag for flag, value in (("--compute-units", compute_units), ("--precision", precision),
                                                 ("--palettize", palettize)) if value is not None]
        if coreml_given and "coreml" not in names:
            raise InvalidArgumentError(f"{', '.join(coreml_given)} {'apply' if len(coreml_given) > 1 else 'applies'} to "
                                       "Core ML graphs; add --format coreml "
                                       "(or onnx,coreml)")
        if compute_units is not None and compute_units not in COMPUTE_UNITS:
            raise InvalidArgumentError(f"--compute-units {compute_units!r}: use one of {', '.join(COMPUTE_UNITS)}")
        if precision is not None and precision not in PRECISIONS:
            raise InvalidArgumentError(f"--precision {precision!r}: use fp16 or fp32")
        if palettize is not None and palettize not in PALETTE_BITS:
            raise InvalidArgumentError(f"--palettize {palettize}: use 4, 6 or 8 (bits per weight)")
        return CoreMLOptions(names, compute_units or "all", precision or "fp16", palettize)
