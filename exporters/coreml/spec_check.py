"""What a saved .mlpackage declares, read from its spec (coremltools' public protobuf API; runs
on any OS), and the checks `edgekit export --format coreml` makes before writing a package.

`SpecFacts` is what the manifest records per Core ML graph (`exporter.coreml.graphs`): the op
counts of the program, the compute precision its ops run in, how many weights are palettized
(`constexpr_lut_to_dense`), the bytes of its weight file, and each input's dtype and flexible
dims as [lower, upper] ranges (upper -1: unbounded).

Example::

    facts = read_spec(Path("graphs/layer_000_coreml.mlpackage"))
    facts.precision, facts.ops["linear"], facts.palettized_weights, facts.weight_bytes
    check_spec(facts, expected_inputs=("hidden_states", "attention_mask"), expected_outputs=("hidden_states_out",),
               precision="fp16", palettized=False, name="layer_000_coreml")
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgekit.errors import ParityError, SourceModelError
from edgekit.exporters.coreml.convert import PALETTE_MIN_ELEMENTS
from edgekit.exporters.coreml.library import import_coremltools, quiet

# Apple's recipe splits models into chunks under 1 GB of weights each: larger Core ML models do
# not load on the Neural Engine of iOS/iPadOS devices (apple/ml-stable-diffusion, "chunk_mlprogram").
CHUNK_LIMIT_BYTES = 1_000_000_000
PALETTE_OP = "constexpr_lut_to_dense"
_ARRAY_TYPES = {65568: "float32", 65552: "float16", 131104: "int32"}  # ArrayFeatureType.ArrayDataType


@dataclass(frozen=True)
class SpecFacts:
    """The facts of one saved mlprogram (see the module docstring)."""

    inputs: dict[str, dict[str, Any]]  # name -> {"dtype", "ranges": [[lo, hi], ...]}
    outputs: dict[str, str]  # name -> dtype
    ops: dict[str, int]
    precision: str  # "fp16" when a computing op yields float16, "fp32" when none does, "none": no computing op
    palettized_weights: int
    dense_weights: int  # float weight matrices (rank >= 2) of PALETTE_MIN_ELEMENTS+ elements stored as plain values
    weight_bytes: int

    def record(self) -> dict[str, Any]:
        return asdict(self)


def read_spec(package: Path) -> SpecFacts:
    """Read `package` (an .mlpackage directory) without compiling it (skip_model_load)."""
    ct = import_coremltools()
    from coremltools.proto import MIL_pb2

    with quiet():
        spec = ct.models.MLModel(str(package), skip_model_load=True).get_spec()
    if spec.WhichOneof("Type") != "mlProgram":
        raise SourceModelError(f"{package.name} is not an mlprogram (it is {spec.WhichOneof('Type')})")
    inputs = {}
    for feature in spec.description.input:
        array = feature.type.multiArrayType
        ranges = [[int(size.lowerBound), int(size.upperBound)] for size in array.shapeRange.sizeRanges]
        inputs[feature.name] = {"dtype": _ARRAY_TYPES.get(array.dataType, str(array.dataType)), "ranges": ranges}
    outputs = {feature.name: _ARRAY_TYPES.get(feature.type.multiArrayType.dataType, "?")
               for feature in spec.description.output}
    function = spec.mlProgram.functions["main"]
    operations = function.block_specializations[function.opset].operations
    ops = Counter(op.type for op in operations)
    half = MIL_pb2.DataType.Value("FLOAT16")
    computing = [op for op in operations if op.type not in ("const", PALETTE_OP, "cast")]
    computes_half = any(output.type.tensorType.dataType == half for op in computing for output in op.outputs)
    floats = {MIL_pb2.DataType.Value("FLOAT16"), MIL_pb2.DataType.Value("FLOAT32")}
    dense = sum(1 for op in operations if op.type == "const" and op.outputs[0].type.tensorType.dataType in floats
                and len(op.outputs[0].type.tensorType.dimensions) >= 2 and _elements(op.outputs[0]) >= PALETTE_MIN_ELEMENTS)
    weights = package / "Data" / "com.apple.CoreML" / "weights"
    weight_bytes = sum(path.stat().st_size for path in weights.rglob("*") if path.is_file()) if weights.is_dir() else 0
    return SpecFacts(inputs=inputs, outputs=outputs, ops=dict(sorted(ops.items())),
                     precision="fp16" if computes_half else "fp32" if computing else "none",
                     palettized_weights=ops.get(PALETTE_OP, 0), dense_weights=dense, weight_bytes=weight_bytes)


def _elements(value: Any) -> int:
    """Elements of a MIL value of fixed shape (0 for scalars and symbolic shapes)."""
    dims = value.type.tensorType.dimensions
    if not dims or any(dim.WhichOneof("dimension") != "constant" for dim in dims):
        return 0
    count = 1
    for dim in dims:
        count *= int(dim.constant.size)
    return count


def check_spec(facts: SpecFacts, expected_inputs: tuple[str, ...], expected_outputs: tuple[str, ...],
               precision: str, palettized: bool, name: str,
               flexible: dict[str, tuple[int, ...]] | None = None) -> None:
    """The converted program is what was asked for: the ONNX twin's input and output names, the
    requested precision, every weight matrix palettized when asked (none otherwise), each dim of
    `flexible` ({input: axes the ONNX graph names symbolically}) a range rather than one size, and
    weights under the 1 GB chunk limit. A mismatch is a converter fault: one line (ParityError),
    the package is not written."""
    problems = []
    if tuple(facts.inputs) != expected_inputs:
        problems.append(f"inputs {tuple(facts.inputs)} instead of {expected_inputs}")
    if tuple(facts.outputs) != expected_outputs:
        problems.append(f"outputs {tuple(facts.outputs)} instead of {expected_outputs}")
    if any(dtype != "float32" for dtype in facts.outputs.values()):
        problems.append(f"outputs of dtypes {sorted(set(facts.outputs.values()))}, not float32")
    if facts.precision not in (precision, "none"):
        problems.append(f"computes in {facts.precision}, {precision} was asked")
    if palettized and facts.dense_weights:
        problems.append(f"{facts.dense_weights} weight matrices of {PALETTE_MIN_ELEMENTS}+ elements left "
                        "unpalettized")
    if not palettized and facts.palettized_weights:
        problems.append(f"{facts.palettized_weights} palettized weights")
    for input_name, axes in (flexible or {}).items():
        ranges = facts.inputs.get(input_name, {}).get("ranges") or []
        fixed = [axis for axis in axes if axis >= len(ranges) or ranges[axis][0] == ranges[axis][1]]
        if fixed:
            problems.append(f"input {input_name} has fixed dims {fixed} that the ONNX graph keeps flexible")
    if problems:
        raise ParityError(f"{name}: the converted Core ML program has {'; '.join(problems)}; please report it")
    if facts.weight_bytes > CHUNK_LIMIT_BYTES:
        raise SourceModelError(f"{name}: {facts.weight_bytes / 1e9:.2f} GB of weights in one Core ML graph, over "
                               "the 1 GB a Neural Engine chunk may hold; export with --palettize 4|6|8 or "
                               "--format onnx")
