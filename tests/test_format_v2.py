"""Format v2: one manifest for every task, graphs named by role and found by role, every file
hashed, and malformed graph entries refused in one line that names the graph."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import edgekit
import edgekit.errors
from edgekit.cli import app
from edgekit.errors import FormatVersionError, NotAPackageError
from edgekit.manifest import FORMAT_VERSION, Manifest
from edgekit.package_files import files_under, sha256_file
from tests.conftest import CANDIDATES, QUERY
from tests.manifest_edit import add_coreml_twins, rewrite_manifest

runner = CliRunner()


def _copy(package: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "pkg"
    shutil.copytree(package, copy)
    return copy


def _edit(package: Path, change: Any) -> None:
    rewrite_manifest(package, change)


def test_export_writes_version_2_with_role_format_and_hashes(tiny_cross_package: Path) -> None:
    data = json.loads((tiny_cross_package / "manifest.json").read_text())
    assert data["format_version"] == FORMAT_VERSION == 2
    assert {"task", "family", "dtype", "exporter", "graphs", "ranking"} <= set(data)
    assert data["exporter"]["edgekit"] == edgekit.__version__
    for graph in data["graphs"]:
        assert graph["role"] in ("embeddings", "layer", "head") and graph["format"] == "onnx"
        assert graph["files"][0]["file"] == graph["path"] and graph["path"].endswith(".onnx")
        for entry in graph["files"]:  # every file, external data included, with its real hash
            on_disk = tiny_cross_package / entry["file"]
            assert entry["sha256"] == sha256_file(on_disk) and entry["bytes"] == on_disk.stat().st_size
        assert any(entry["file"].endswith(".onnx.data") for entry in graph["files"])
    assert [g["index"] for g in data["graphs"] if g["role"] == "layer"] == [0, 1, 2]


@pytest.mark.parametrize("fixture", ["tiny_cross_package", "tiny_bi_package", "svd_package", "wan_package"])
def test_verify_and_inspect_share_one_code_path_for_every_task(fixture: str, request: pytest.FixtureRequest) -> None:
    package: Path = request.getfixturevalue(fixture)
    manifest = Manifest.load(package)
    manifest.verify()
    inspected = runner.invoke(app, ["inspect", str(package)])
    assert inspected.exit_code == 0, inspected.output
    assert f"format v2 · task {manifest.task} · family {manifest.family}" in " ".join(inspected.stdout.split())
    verified = runner.invoke(app, ["verify", str(package)])
    assert verified.exit_code == 0 and f"{len(manifest.files())} files" in verified.stdout


def test_graphs_are_found_by_role_not_position(tiny_cross_package: Path, tmp_path: Path) -> None:
    """Reversing the graph list changes nothing: the runtime looks graphs up by role and index."""
    expected = [(r.index, r.score) for r in edgekit.load(str(tiny_cross_package)).rank(QUERY, CANDIDATES, top_k=4)]
    package = _copy(tiny_cross_package, tmp_path)
    _edit(package, lambda d: d["graphs"].reverse())
    assert [g.role for g in Manifest.load(package).graphs][0] == "head"
    got = [(r.index, r.score) for r in edgekit.load(str(package)).rank(QUERY, CANDIDATES, top_k=4)]
    assert got == expected


def _layer(data: dict[str, Any], index: int = 1) -> dict[str, Any]:
    return next(g for g in data["graphs"] if g["role"] == "layer" and g["index"] == index)


@pytest.mark.parametrize("change, needle", [
    (lambda d: _layer(d).pop("role"), "graph 'layer_001': missing field 'role'"),
    (lambda d: _layer(d).update(role="lyer"), "graph 'layer_001': role 'lyer' is not one of"),
    (lambda d: _layer(d).pop("format"), "graph 'layer_001': missing field 'format'"),
    (lambda d: _layer(d).update(format="tflite"), "graph 'layer_001': format 'tflite' is not one of"),
    (lambda d: _layer(d).pop("files"), "graph 'layer_001': missing field 'files'"),
    (lambda d: _layer(d).update(files=[]), "graph 'layer_001' lists no files"),
    (lambda d: _layer(d).update(index=0), "graph 'layer_001': role 'layer' with index 0 is taken"),
    (lambda d: _layer(d).update(name="layer_000"), "graph 'layer_000' is listed twice"),
    (lambda d: _layer(d).update(files=_layer(d, 0)["files"], path=_layer(d, 0)["path"]), "is listed twice"),
    (lambda d: _layer(d).update(path="graphs/other.onnx"), "lists its .onnx file 'graphs/other.onnx' first"),
    (lambda d: _layer(d).update(index="1"), "graph 'layer_001': index must be an integer"),
    (lambda d: d["graphs"].remove(_layer(d, 2)), "layer graphs must have indices 0..2"),
])
def test_a_malformed_graph_entry_is_refused_in_one_line_naming_the_graph(
        tiny_cross_package: Path, tmp_path: Path, change: Any, needle: str) -> None:
    package = _copy(tiny_cross_package, tmp_path)
    _edit(package, change)
    with pytest.raises(NotAPackageError) as caught:
        Manifest.load(package)
    message = str(caught.value)
    assert needle in message and "re-export" in message and "\n" not in message
    result = runner.invoke(app, ["verify", str(package)])
    assert result.exit_code == 2 and needle in result.stderr and "Traceback" not in result.output


def test_a_video_graph_entry_is_checked_by_the_same_rules(svd_package: Path, tmp_path: Path) -> None:
    package = _copy(svd_package, tmp_path)
    _edit(package, lambda d: next(g for g in d["graphs"] if g["role"] == "mid_block").update(role="middle"))
    with pytest.raises(NotAPackageError, match="graph 'mid_block': role 'middle' is not one of"):
        Manifest.load(package)


def test_a_version_1_package_is_refused_with_the_fix(tiny_cross_package: Path, tmp_path: Path) -> None:
    package = _copy(tiny_cross_package, tmp_path)
    _edit(package, lambda d: d.update(format_version=1))
    with pytest.raises(FormatVersionError, match="version 1 is not supported .* re-export the package"):
        Manifest.load(package)
    result = runner.invoke(app, ["run", str(package), "--query", QUERY, "--candidates", str(package / "x.txt")])
    assert result.exit_code == 2 and "version 1" in result.stderr and "\n" not in result.stderr.strip()


def test_a_directory_graph_lists_the_files_inside_it(tiny_cross_package: Path, tmp_path: Path) -> None:
    """The format admits a graph that is a directory (an .mlpackage): its files are hashed one by
    one, presence and hashes are checked like any file, and a missing inner file is named."""
    package = _copy(tiny_cross_package, tmp_path)
    add_coreml_twins(package)  # every graph gets a Core ML twin holding three stand-in files
    bundle = package / "graphs" / "head_coreml.mlpackage"
    entries = files_under(package, "graphs/head_coreml.mlpackage")
    assert [e.file for e in entries] == ["graphs/head_coreml.mlpackage/Data/com.apple.CoreML/model.mlmodel",
                                         "graphs/head_coreml.mlpackage/Data/com.apple.CoreML/weights/weight.bin",
                                         "graphs/head_coreml.mlpackage/Manifest.json"]
    manifest = Manifest.load(package)
    manifest.verify()
    head = manifest.for_format("mlpackage").graph("head")
    assert head.files == entries and head.bytes == sum(e.bytes for e in entries) == 33 + 96 + 30
    (bundle / "Manifest.json").unlink()
    result = runner.invoke(app, ["verify", str(package)])
    assert result.exit_code == 2 and "head_coreml.mlpackage/Manifest.json" in result.stderr


def test_an_mlpackage_graph_must_list_files_inside_its_directory(tiny_cross_package: Path, tmp_path: Path) -> None:
    package = _copy(tiny_cross_package, tmp_path)
    _edit(package, lambda d: next(g for g in d["graphs"] if g["role"] == "head").update(
        format="mlpackage", path="graphs/head.mlpackage"))
    with pytest.raises(NotAPackageError, match="graph 'head': an mlpackage graph's path is a directory ending "
                                               "with .mlpackage and it lists the files inside it"):
        Manifest.load(package)


def test_every_format_of_a_package_holds_every_slot(tiny_cross_package: Path, tmp_path: Path) -> None:
    """A package whose head alone is Core ML is two packages, each missing graphs: refused in one
    line (tests/test_coreml_runtime.py has mixed packages done right and how a format is picked)."""
    package = _copy(tiny_cross_package, tmp_path)
    bundle = package / "graphs" / "head.mlpackage"
    bundle.mkdir()
    (bundle / "Manifest.json").write_text("{}")
    entry = files_under(package, "graphs/head.mlpackage")[0]

    def head_as_mlpackage(data: dict[str, Any]) -> None:
        head = next(g for g in data["graphs"] if g["role"] == "head")
        head.update(format="mlpackage", path="graphs/head.mlpackage",
                    files=[{"file": entry.file, "sha256": entry.sha256, "bytes": entry.bytes}])

    _edit(package, head_as_mlpackage)
    with pytest.raises(NotAPackageError, match="the mlpackage graphs have no 'embeddings' graph") as caught:
        edgekit.load(str(package))
    assert "\n" not in str(caught.value)
