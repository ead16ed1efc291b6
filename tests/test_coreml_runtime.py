"""Core ML graphs in a package (issue 17, runtime side): a mixed package (ONNX graphs and their
Core ML twins over one embedding table and tokenizer) verifies, runs its ONNX graphs anywhere,
refuses Core ML off macOS in one line, and is refused when a format misses a slot.

The Core ML twins here are stand-ins: .mlpackage directories of arbitrary files, hashed and listed
as an exporter lists them (the exporter side, exporters/coreml/, writes real ones). Core ML's
`predict` runs only on macOS, so the backend's wiring is checked against a stand-in coremltools
whose "model" computes with the ONNX twin (test_the_core_ml_backend_wiring_*): nothing in this
file runs Core ML itself.
"""

from __future__ import annotations

import platform
import shutil
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

import edgekit
from edgekit.cli import app
from edgekit.errors import ContainmentError, InvalidArgumentError, NotAPackageError, ProviderUnavailableError
from edgekit.manifest import Manifest
from edgekit.runtimes.backends import backend_for, choose_format, coreml_backend
from tests.conftest import CANDIDATES, QUERY
from tests.manifest_edit import add_coreml_twins, rewrite_manifest

runner = CliRunner()
@pytest.fixture()
def mixed_package(tiny_cross_package: Path, tmp_path: Path) -> Path:
    package = tmp_path / "mixed"
    shutil.copytree(tiny_cross_package, package)
    add_coreml_twins(package)
    return package


def _ranked(package: Path, **options: Any) -> list[tuple[int, float]]:
    return [(r.index, r.score) for r in edgekit.load(str(package), **options).rank(QUERY, CANDIDATES, top_k=4)]


def test_a_mixed_package_verifies_inspects_and_runs_its_onnx_graphs_on_cpu(tiny_cross_package: Path,
                                                                            mixed_package: Path) -> None:
    onnx_only, mixed = Manifest.load(tiny_cross_package), Manifest.load(mixed_package)
    assert mixed.graph_formats == ("mlpackage", "onnx") and onnx_only.graph_formats == ("onnx",)
    coreml = mixed.for_format("mlpackage")
    assert [g.name for g in coreml.stream_graphs] == [g.name + "_coreml" for g in onnx_only.stream_graphs]
    assert mixed.for_format("onnx").stream_graphs == onnx_only.stream_graphs
    # shared files (embedding table, tokenizer) are in every view, once
    assert coreml.ranking == onnx_only.ranking and len(mixed.files()) == len(onnx_only.files()) + 3 * len(coreml.graphs)
    verified = runner.invoke(app, ["verify", str(mixed_package)])
    assert verified.exit_code == 0 and f"{len(mixed.files())} files verified" in verified.stdout, verified.output
    inspected = runner.invoke(app, ["inspect", str(mixed_package)])
    assert inspected.exit_code == 0, inspected.output
    assert "layer_002_coreml" in inspected.stdout and "mlpackage graphs (5;" in inspected.stdout
    # provider cpu runs the ONNX graphs: the same ranking as the ONNX-only package, to the bit
    selector = edgekit.load(str(mixed_package), provider="cpu")
    assert selector.manifest.graph_formats == ("onnx",)
    assert _ranked(mixed_package) == _ranked(tiny_cross_package)
    assert _ranked(mixed_package, graph_format="onnx") == _ranked(tiny_cross_package)


def test_lookups_on_a_mixed_manifest_must_name_a_format(mixed_package: Path) -> None:
    """A role lookup on the whole mixed manifest would find twins; it is refused in one line."""
    with pytest.raises(InvalidArgumentError, match=r"holds mlpackage and onnx graphs; .*for_format") as caught:
        Manifest.load(mixed_package).graph("head")
    assert "\n" not in str(caught.value)
    with pytest.raises(KeyError, match="no 'tflite' graphs"):
        Manifest.load(mixed_package).for_format("tflite")


@pytest.mark.skipif(platform.system() == "Darwin", reason="checks the refusal off macOS")
def test_run_with_provider_coreml_off_macos_exits_2_in_one_line(mixed_package: Path, tiny_cross_package: Path,
                                                               tmp_path: Path) -> None:
    candidates = tmp_path / "c.txt"
    candidates.write_text("\n".join(CANDIDATES), encoding="utf-8")
    args = ["run", str(mixed_package), "--query", QUERY, "--candidates", str(candidates), "--provider", "coreml"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "Traceback" not in result.output
    line = result.stderr.strip()
    assert "\n" not in line and "need macOS" in line and "--provider cpu" in line and "--format onnx" in line
    # the same one line from the API, and for --compute-units too (the platform is checked first)
    with pytest.raises(ProviderUnavailableError, match="Core ML graphs need macOS"):
        edgekit.load(str(mixed_package), provider="coreml")
    assert runner.invoke(app, [*args, "--compute-units", "cpu_only"]).exit_code == 2
    # an ONNX-only package keeps onnxruntime's CoreML execution provider, and its own message
    plain = runner.invoke(app, ["run", str(tiny_cross_package), "--query", QUERY, "--candidates", str(candidates),
                                "--provider", "coreml"])
    if plain.exit_code == 0:
        pytest.skip("this onnxruntime has the CoreML execution provider")
    assert plain.exit_code == 2 and "CoreMLExecutionProvider" in plain.stderr and "macOS" in plain.stderr
    # --compute-units belongs to Core ML graphs: with ONNX graphs it is refused, not ignored
    ignored = runner.invoke(app, ["run", str(tiny_cross_package), "--query", QUERY, "--candidates", str(candidates),
                                  "--compute-units", "all"])
    assert ignored.exit_code == 2 and "compute_units is an option of mlpackage graphs" in ignored.stderr


def test_a_mixed_package_missing_one_core_ml_twin_is_refused_in_one_line(tiny_cross_package: Path,
                                                                         tmp_path: Path) -> None:
    package = tmp_path / "mixed"
    shutil.copytree(tiny_cross_package, package)
    add_coreml_twins(package, skip=("layer_001",))
    with pytest.raises(NotAPackageError) as caught:
        Manifest.load(package)
    message = str(caught.value)
    assert "the mlpackage graphs have no 'layer' graph with index 1" in message and "\n" not in message
    result = runner.invoke(app, ["verify", str(package)])
    assert result.exit_code == 2 and "no 'layer' graph with index 1" in result.stderr


def test_a_slot_is_unique_within_a_format(mixed_package: Path) -> None:
    def clash(d: dict[str, Any]) -> None:
        next(g for g in d["graphs"] if g["name"] == "layer_001_coreml")["index"] = 0

    rewrite_manifest(mixed_package, clash)
    with pytest.raises(NotAPackageError, match="'layer_001_coreml': role 'layer' with index 0 is taken by another "
                                               "mlpackage graph"):
        Manifest.load(mixed_package)


def test_the_format_is_chosen_in_one_place_and_a_wrong_choice_is_one_line(mixed_package: Path) -> None:
    assert choose_format(("mlpackage", "onnx"), "cpu") == "onnx"
    assert choose_format(("mlpackage", "onnx"), "coreml") == "mlpackage"
    assert choose_format(("onnx",), "coreml") == "onnx"  # onnxruntime's CoreML execution provider
    with pytest.raises(InvalidArgumentError, match="Core ML graphs only; run it with --provider coreml on macOS"):
        choose_format(("mlpackage",), "cpu")
    assert choose_format(("mlpackage", "onnx"), "coreml", "onnx") == "onnx"
    with pytest.raises(InvalidArgumentError, match="unknown provider 'cpu' for mlpackage graphs; choose one of "
                                                   "coreml") as caught:
        edgekit.load(str(mixed_package), graph_format="mlpackage", provider="cpu")
    assert "\n" not in str(caught.value)
    with pytest.raises(InvalidArgumentError, match=r"no 'tflite' graphs \(it has: mlpackage, onnx\)"):
        edgekit.load(str(mixed_package), graph_format="tflite")


def test_a_core_ml_only_package_runs_only_on_provider_coreml(mixed_package: Path) -> None:
    rewrite_manifest(mixed_package, lambda d: d.update(graphs=[g for g in d["graphs"] if g["format"] == "mlpackage"]))
    assert Manifest.load(mixed_package).graph_formats == ("mlpackage",)
    with pytest.raises(InvalidArgumentError, match="holds Core ML graphs only; run it with --provider coreml on macOS, "
                                                   "or re-export it with --format onnx,coreml"):
        edgekit.load(str(mixed_package))
    with pytest.raises(InvalidArgumentError, match=r"no 'onnx' graphs \(it has: mlpackage\)"):
        edgekit.load(str(mixed_package), graph_format="onnx")


def test_a_core_ml_directory_holds_only_its_listed_files(mixed_package: Path) -> None:
    """Core ML reads whatever its .mlpackage holds, so an unlisted file there is refused (it would
    be read without its hash checked); so is a Core ML path that is no .mlpackage directory."""
    (mixed_package / "graphs" / "head_coreml.mlpackage" / "Data" / "extra.bin").write_bytes(b"x")
    with pytest.raises(ContainmentError, match="head_coreml.mlpackage/Data/extra.bin' is inside the graph's "
                                               "directory but not listed"):
        Manifest.load(mixed_package)
    (mixed_package / "graphs" / "head_coreml.mlpackage" / "Data" / "extra.bin").unlink()
    Manifest.load(mixed_package)


# --- the backend's wiring, against a stand-in coremltools (Core ML's predict needs macOS) ----------
FLOAT32, FLOAT16, INT32 = 65568, 65552, 131104
INTEGER_INPUTS = ("attention_mask", "token_type_ids")  # int64 in the ONNX graphs


def _feature(name: str, data_type: int) -> Any:
    array = types.SimpleNamespace(dataType=data_type)
    return types.SimpleNamespace(name=name, type=types.SimpleNamespace(multiArrayType=array,
                                                                       WhichOneof=lambda _: "multiArrayType"))


class FakeMLModel:
    """Stands in for coremltools.models.MLModel: its spec is the ONNX twin's IO (masks and type ids
    declared int32, as coremltools converts int64; outputs in the twin's order) and `predict` runs
    the twin with the ONNX backend, after checking it was fed exactly the spec's types."""

    loaded: list[tuple[str, Any]] = []
    fed: list[dict[str, np.dtype]] = []

    def __init__(self, path: str, compute_units: Any = None) -> None:
        self.session = backend_for("onnx", "cpu").load(Path(path.replace("_coreml.mlpackage", ".onnx")))
        self.loaded.append((Path(path).name, compute_units))
        self.spec = self.spec_of(self.session)

    @staticmethod
    def spec_of(session: Any) -> Any:
        inputs = [_feature(name, INT32 if name in INTEGER_INPUTS else FLOAT32) for name in session.input_names]
        outputs = [_feature(name, FLOAT32) for name in session.output_names]
        return types.SimpleNamespace(description=types.SimpleNamespace(input=inputs, output=outputs))

    def get_spec(self) -> Any:
        return self.spec

    def predict(self, data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.fed.append({name: value.dtype for name, value in data.items()})
        for feature in self.spec.description.input:
            assert data[feature.name].dtype == (np.int32 if feature.type.multiArrayType.dataType == INT32
                                                else np.float32)
        feeds = {name: value.astype(np.int64) if value.dtype == np.int32 else value for name, value in data.items()}
        outputs = self.session.run(feeds)
        # a dict, in reverse order, float64: the backend must reorder by the spec and give float32
        pairs = list(zip(self.session.output_names, outputs))
        return {name: value.astype(np.float64) for name, value in reversed(pairs)}


def _fake_compile(package: str, destination: str) -> str:
    """Stands in for coremltools.utils.compile_model: the "compiled" folder names its package."""
    Path(destination).mkdir(parents=True)
    (Path(destination) / "source").write_text(package)
    compiled.append(Path(package).name)
    return destination


def _fake_compiled_model(path: str, compute_units: Any = None) -> FakeMLModel:
    """Stands in for coremltools.models.CompiledMLModel (loads what _fake_compile names)."""
    return FakeMLModel((Path(path) / "source").read_text(), compute_units)


compiled: list[str] = []


@pytest.fixture()
def fake_macos(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    module = types.ModuleType("coremltools")
    module.ComputeUnit = types.SimpleNamespace(ALL="ALL", CPU_AND_NE="CPU_AND_NE", CPU_ONLY="CPU_ONLY",
                                               CPU_AND_GPU="CPU_AND_GPU")
    module.models = types.SimpleNamespace(CompiledMLModel=_fake_compiled_model)
    module.utils = types.SimpleNamespace(compile_model=_fake_compile,
                                         load_spec=lambda path: FakeMLModel.spec_of(backend_for("onnx", "cpu").load(
                                             Path(path.replace("_coreml.mlpackage", ".onnx")))))
    monkeypatch.setitem(sys.modules, "coremltools", module)
    monkeypatch.setattr(coreml_backend.platform, "system", lambda: "Darwin")
    FakeMLModel.loaded, FakeMLModel.fed = [], []
    compiled.clear()
    return module


def test_the_core_ml_backend_wiring_casts_feeds_orders_outputs_and_releases(tiny_cross_package: Path,
                                                                             fake_macos: Any) -> None:
    """predict cannot run here (Core ML is macOS-only): the stand-in model runs the ONNX twin, so
    this checks what the backend does around predict — compute units, casts, order, release."""
    layer = tiny_cross_package / "graphs" / "layer_000_coreml.mlpackage"
    backend = backend_for("mlpackage", "coreml", compute_units="cpu_and_ne")
    session = backend.load(layer)
    assert FakeMLModel.loaded[-1] == ("layer_000_coreml.mlpackage", "CPU_AND_NE")
    backend.load(layer).release()
    assert compiled == ["layer_000_coreml.mlpackage"]  # compiled once per backend, loaded twice
    assert session.input_names == ("hidden_states", "attention_mask")
    width = Manifest.load(tiny_cross_package).ranking.hidden_size
    hidden = np.random.default_rng(0).standard_normal((2, 5, width)).astype(np.float32)
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=np.int64)
    got = session.run({"hidden_states": hidden, "attention_mask": mask, "token_type_ids": mask})  # extra: ignored
    assert FakeMLModel.fed == [{"hidden_states": np.float32, "attention_mask": np.int32}]
    expected = backend_for("onnx", "cpu").load(tiny_cross_package / "graphs" / "layer_000.onnx").run(
        {"hidden_states": hidden, "attention_mask": mask})
    assert len(got) == len(expected) == 1 and got[0].dtype == np.float32
    np.testing.assert_array_equal(got[0], expected[0])
    with pytest.raises(ValueError, match="outside int32"):
        session.run({"hidden_states": hidden, "attention_mask": mask + 2**40})
    session.release()
    with pytest.raises(RuntimeError, match="already released"):
        session.run({"hidden_states": hidden, "attention_mask": mask})
    # two outputs, a float16 input: outputs come back in the spec's order as float32, feeds as declared
    spec = types.SimpleNamespace(description=types.SimpleNamespace(
        input=[_feature("x", FLOAT16)], output=[_feature("first", FLOAT32), _feature("second", FLOAT16)]))
    seen: list[np.ndarray] = []

    def predict(data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        seen.append(data["x"])
        return {"second": data["x"] * 2, "first": data["x"] + 1}

    model = types.SimpleNamespace(get_spec=lambda: spec, predict=predict)
    first, second = coreml_backend.CoreMLSession(model, Path("two.mlpackage")).run({"x": np.full((2,), 1.5)})
    assert seen[0].dtype == np.float16 and first.dtype == second.dtype == np.float32
    assert first.tolist() == [2.5, 2.5] and second.tolist() == [3.0, 3.0]
    # a feed outside the spec's flexible ranges (a chunk over the batch bound) is one line, before predict
    bounded = _feature("x", FLOAT32)
    bounded.type.multiArrayType.shapeRange = types.SimpleNamespace(sizeRanges=[
        types.SimpleNamespace(lowerBound=1, upperBound=2), types.SimpleNamespace(lowerBound=4, upperBound=4)])
    spec = types.SimpleNamespace(description=types.SimpleNamespace(input=[bounded], output=[_feature("y", FLOAT32)]))
    bounded_model = types.SimpleNamespace(get_spec=lambda: spec, predict=lambda data: {"y": data["x"]})
    bounded_session = coreml_backend.CoreMLSession(bounded_model, Path("b.mlpackage"))
    assert bounded_session.run({"x": np.ones((2, 4))})[0].shape == (2, 4)
    with pytest.raises(InvalidArgumentError, match=r"takes x of shape \(1\.\.2, 4\), got \(3, 4\); run with a smaller"):
        bounded_session.run({"x": np.ones((3, 4))})
    with pytest.raises(InvalidArgumentError, match="compute units 'gpu' is not one of all, cpu_and_ne"):
        backend_for("mlpackage", "coreml", compute_units="gpu")
    assert backend_for("mlpackage", "coreml").traits.weights == "copy"


def test_the_core_ml_backend_wiring_ranks_a_mixed_package_like_its_onnx_graphs(mixed_package: Path,
                                                                               tiny_cross_package: Path,
                                                                               fake_macos: Any) -> None:
    """On a (faked) Mac, --provider coreml picks the Core ML twins, with the compute units the
    package records; streamed through the selector they rank as the ONNX graphs do (the stand-in
    computes with them: predict cannot run here)."""
    selector = edgekit.load(str(mixed_package), provider="coreml")
    assert selector.manifest.graph_formats == ("mlpackage",)
    assert _ranked(mixed_package, provider="coreml") == _ranked(tiny_cross_package)
    assert {units for _, units in FakeMLModel.loaded} == {"CPU_AND_NE"}  # exporter.coreml.compute_units
    assert {name for name, _ in FakeMLModel.loaded} == {f"{g.name}_coreml.mlpackage"
                                                        for g in Manifest.load(tiny_cross_package).stream_graphs}
    edgekit.load(str(mixed_package), provider="coreml", compute_units="cpu_only").rank(QUERY, CANDIDATES[:2])
    assert FakeMLModel.loaded[-1][1] == "CPU_ONLY"


def test_the_core_ml_type_numbers_are_core_mls() -> None:
    """ARRAY_DTYPES's keys are FeatureTypes.proto's ArrayDataType numbers (read from coremltools'
    generated schema when it is installed: importing it probes torch, so never in the runtime)."""
    schema = pytest.importorskip("coremltools.proto.FeatureTypes_pb2")
    names = schema.ArrayFeatureType.ArrayDataType
    assert {number: names.Name(number) for number in coreml_backend.ARRAY_DTYPES} == {
        FLOAT32: "FLOAT32", FLOAT16: "FLOAT16", 65600: "DOUBLE", INT32: "INT32"}


@pytest.mark.skipif(platform.system() == "Darwin", reason="checks the refusal off macOS")
def test_a_mixed_video_package_verifies_inspects_and_refuses_core_ml_off_macos(svd_package: Path,
                                                                               tmp_path: Path) -> None:
    """Video packages take Core ML twins by the same rules: every stage of the UNet twice, one
    format per run (the pipeline gets the ONNX view on cpu)."""
    package = tmp_path / "svd-mixed"
    shutil.copytree(svd_package, package)
    add_coreml_twins(package)
    manifest = Manifest.load(package)
    assert manifest.graph_formats == ("mlpackage", "onnx")
    assert len(manifest.for_format("mlpackage").unet_graphs) == len(Manifest.load(svd_package).unet_graphs)
    assert runner.invoke(app, ["verify", str(package)]).exit_code == 0
    inspected = runner.invoke(app, ["inspect", str(package)])
    assert inspected.exit_code == 0 and "mid_block_coreml" in inspected.stdout, inspected.output
    assert edgekit.load(str(package)).manifest.graph_formats == ("onnx",)
    image = tmp_path / "in.png"
    from PIL import Image

    Image.new("RGB", (16, 16)).save(image)
    result = runner.invoke(app, ["run", str(package), "--image", str(image), "--out", str(tmp_path / "o.gif"),
                                 "--provider", "coreml"])
    assert result.exit_code == 2 and "Core ML graphs need macOS" in result.stderr
    assert "\n" not in result.stderr.strip() and "Traceback" not in result.output
