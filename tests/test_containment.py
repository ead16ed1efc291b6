"""Stories: an attacker edits a copy of a tiny package so that loading it would read files outside
the package (external data pointing elsewhere, symlinks, an edited manifest); `edgekit verify`,
`edgekit run` and `edgekit.load` refuse it in one line, exit 2, before onnxruntime is ever asked
for a session (edgekit/containment.py, edgekit/package_digest.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper
from typer.testing import CliRunner

import edgekit
from edgekit.cli import app
from edgekit.errors import ContainmentError, IntegrityError
from edgekit.package_digest import DIGEST_FILE
from edgekit.package_files import sha256_file
from edgekit.runtimes.backends import backend_for
from tests.conftest import CANDIDATES, QUERY
from tests.manifest_edit import rewrite_manifest
from tests.refusals import assert_refused

runner = CliRunner()
OUTSIDE_FIX = "packages may not read files outside themselves"


def _forbid_sessions(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any onnxruntime session created from here on fails the test: refusals must come first.
    Patched below the backend (by name: tests use onnxruntime only through the backend), so no
    path to a session escapes."""
    def refuse(*args, **kwargs):
        raise AssertionError("onnxruntime was asked for a session: the package was not refused first")

    monkeypatch.setattr("onnxruntime.InferenceSession", refuse)


@pytest.fixture
def no_sessions(monkeypatch: pytest.MonkeyPatch) -> None:
    _forbid_sessions(monkeypatch)


def _copy(package: Path, where: Path) -> Path:
    where.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(package, where)
    return where


def _cli(*args) -> object:
    return runner.invoke(app, [str(a) for a in args])


def _verify_and_run_refuse(package: Path, tmp_path: Path, *needles: str) -> None:
    candidates = tmp_path / "candidates.txt"
    candidates.write_text("\n".join(CANDIDATES) + "\n", encoding="utf-8")
    assert_refused(_cli("verify", package), *needles)
    assert_refused(_cli("run", package, "--query", QUERY, "--candidates", candidates), *needles)
    assert_refused(_cli("run", package, "--query", QUERY, "--candidates", candidates, "--no-verify"), *needles)


def _relist(package: Path, relative: str) -> None:
    """After rewriting `relative`, record its real size and hash in the manifest (and re-sign the
    digest): only containment is left to catch the attack."""
    path = package / relative

    def update(data: dict) -> None:
        for graph in data["graphs"]:
            for entry in graph["files"]:
                if entry["file"] == relative:
                    entry.update(sha256=sha256_file(path), bytes=path.stat().st_size)

    rewrite_manifest(package, update)


def _point_external_data(graph_file: Path, location: str) -> None:
    """Rewrite every external-data location inside `graph_file` (written as raw protobuf, as an
    attacker would: onnx's own writer may refuse such locations)."""
    model = onnx.load(str(graph_file), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    graph_file.write_bytes(model.SerializeToString())


def _external(name: str, location: str, count: int = 4) -> TensorProto:
    """A float tensor of `count` values whose bytes live at `location` (offset 0)."""
    tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=[count], data_location=TensorProto.EXTERNAL)
    for key, value in (("location", location), ("offset", "0"), ("length", str(4 * count))):
        tensor.external_data.add(key=key, value=value)
    return tensor


def _one_node_graph(where: str, location: str) -> onnx.ModelProto:
    """y = x + w, where w's bytes are read from `location`: from an initializer, from a Constant
    node's attribute, or from a Constant inside an If node's branch (a subgraph)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])
    initializers, nodes = [], []
    if where == "initializer":
        initializers.append(_external("w", location))
    elif where == "attribute":
        nodes.append(helper.make_node("Constant", [], ["w"], value=_external("value", location)))
    else:  # a subgraph
        branch_out = helper.make_tensor_value_info("w_branch", TensorProto.FLOAT, [4])
        then = helper.make_graph([helper.make_node("Constant", [], ["w_branch"], value=_external("v", location))],
                                 "then", [], [branch_out])
        other = helper.make_graph([helper.make_node("Constant", [], ["w_branch"],
                                                    value=helper.make_tensor("z", TensorProto.FLOAT, [4], [0.0] * 4))],
                                  "else", [], [branch_out])
        initializers.append(helper.make_tensor("cond", TensorProto.BOOL, [], [True]))
        nodes.append(helper.make_node("If", ["cond"], ["w"], then_branch=then, else_branch=other))
    nodes.append(helper.make_node("Add", ["x", "w"], ["y"]))
    graph = helper.make_graph(nodes, "one_node", [x], [y], initializer=initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


# --- (a) a layer's external data points outside the package ------------------------------------
def test_a_layer_reading_weights_outside_the_package_is_refused_before_any_session(
        tiny_cross_package: Path, tmp_path: Path, no_sessions: None) -> None:
    package = _copy(tiny_cross_package, tmp_path / "shared" / "pkg")
    secret = tmp_path / "x" / "secret.data"  # graphs/../../../x is tmp_path/x
    secret.parent.mkdir()
    shutil.copy(package / "graphs" / "layer_001.onnx.data", secret)  # valid weights: a runtime would rank with them
    _point_external_data(package / "graphs" / "layer_001.onnx", "../../../x/secret.data")
    _relist(package, "graphs/layer_001.onnx")
    _verify_and_run_refuse(package, tmp_path, "'layer_001'", "'../../../x/secret.data'", OUTSIDE_FIX)
    with pytest.raises(ContainmentError, match="not one of the graph's listed files"):
        edgekit.load(str(package))


# --- (b) a one-node graph reads /etc/passwd -------------------------------------------------------
@pytest.mark.parametrize("where", ["initializer", "attribute", "subgraph"])
def test_a_graph_whose_tensor_reads_etc_passwd_is_refused(tiny_cross_package: Path, tmp_path: Path, where: str,
                                                          no_sessions: None) -> None:
    package = _copy(tiny_cross_package, tmp_path / "pkg")
    (package / "graphs" / "layer_000.onnx").write_bytes(_one_node_graph(where, "/etc/passwd").SerializeToString())
    _relist(package, "graphs/layer_000.onnx")
    _verify_and_run_refuse(package, tmp_path, "'layer_000'", "'/etc/passwd'", OUTSIDE_FIX)


def test_a_compiled_blob_node_is_refused(tiny_cross_package: Path, tmp_path: Path, no_sessions: None) -> None:
    """EPContext nodes name a provider's compiled blob by file path: no edgekit graph has one."""
    package = _copy(tiny_cross_package, tmp_path / "pkg")
    node = helper.make_node("EPContext", ["x"], ["y"], domain="com.microsoft", embed_mode=0,
                            ep_cache_context="/etc/passwd")
    graph = helper.make_graph([node], "blob", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    (package / "graphs" / "head.onnx").write_bytes(helper.make_model(graph).SerializeToString())
    _relist(package, "graphs/head.onnx")
    _verify_and_run_refuse(package, tmp_path, "'head'", "EPContext")


# --- (c) symlinks pointing outside ----------------------------------------------------------------
@pytest.mark.parametrize("target, named", [
    ("tokenizer/tokenizer.json", "package file tokenizer/tokenizer.json is a symlink"),
    ("graphs/word_embeddings.npy", "package file graphs/word_embeddings.npy is a symlink"),
    ("graphs/layer_000.onnx", "graph 'layer_000': graphs/layer_000.onnx is a symlink"),
    ("graphs/layer_000.onnx.data", "graph 'layer_000': graphs/layer_000.onnx.data is a symlink"),
    ("graphs", "graphs (a directory on the way to graphs/"),
    ("manifest.json", "manifest.json is a symlink"),
    (DIGEST_FILE, f"{DIGEST_FILE} is a symlink"),
])
def test_a_symlink_inside_the_package_is_refused(tiny_cross_package: Path, tmp_path: Path, target: str, named: str,
                                                 no_sessions: None) -> None:
    """The linked-to copy is identical, so sizes, hashes and the digest all match: only the
    symlink rule refuses it (a link could as well point at another package or a secret)."""
    package = _copy(tiny_cross_package, tmp_path / "pkg")
    outside = tmp_path / "outside" / Path(target).name
    outside.parent.mkdir()
    shutil.move(package / target, outside)
    os.symlink(outside, package / target)
    _verify_and_run_refuse(package, tmp_path, named, OUTSIDE_FIX)
    with pytest.raises(ContainmentError):
        edgekit.load(str(package))


def test_the_package_root_itself_may_be_a_symlink(tiny_cross_package: Path, tmp_path: Path) -> None:
    """Users link to packages; the root is resolved once and everything is read below it."""
    package = _copy(tiny_cross_package, tmp_path / "pkg")
    link = tmp_path / "current"
    os.symlink(package, link)
    assert _cli("verify", link).exit_code == 0
    selector = edgekit.load(str(link))
    assert selector.manifest.root == package.resolve()
    assert len(selector.rank(QUERY, CANDIDATES, top_k=2)) == 2


# --- (d) external data inside the package but not listed for the graph ---------------------------
def test_unlisted_external_data_is_refused_although_onnxruntime_accepts_it(tiny_cross_package: Path,
                                                                           tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The file sits beside the graph, so onnxruntime itself loads it without complaint: the
    refusal is edgekit's own, and it comes before any session."""
    package = _copy(tiny_cross_package, tmp_path / "pkg")
    graphs = package / "graphs"
    shutil.copy(graphs / "layer_001.onnx.data", graphs / "extra.data")
    _point_external_data(graphs / "layer_001.onnx", "extra.data")
    _relist(package, "graphs/layer_001.onnx")
    backend_for("onnx", "cpu").load(graphs / "layer_001.onnx").release()  # onnxruntime accepts it
    _forbid_sessions(monkeypatch)
    _verify_and_run_refuse(package, tmp_path, "'layer_001'", "'extra.data'", "not one of the graph's listed files")


def test_another_graphs_external_data_is_not_this_graphs(tiny_cross_package: Path, tmp_path: Path,
                                                         no_sessions: None) -> None:
    """Listed in the package is not enough: a graph reads only the files listed for it."""
    package = _copy(tiny_cross_package, tmp_path / "pkg")
    _point_external_data(package / "graphs" / "layer_001.onnx", "layer_000.onnx.data")
    _relist(package, "graphs/layer_001.onnx")
    _verify_and_run_refuse(package, tmp_path, "'layer_001'", "'layer_000.onnx.data'")


def test_a_graph_file_that_is_not_onnx_isassert_refused(tiny_cross_package: Path, tmp_path: Path,
                                                              no_sessions: None) -> None:
    package = _copy(tiny_cross_package, tmp_path / "pkg")
    (package / "graphs" / "head.onnx").write_bytes(b"\x0a\xff\xff\xff\xff not protobuf")
    _relist(package, "graphs/head.onnx")
    _verify_and_run_refuse(package, tmp_path, "'head'", "is not a readable ONNX model")


# --- the manifest's digest --------------------------------------------------------------------------
def test_swapping_two_layers_in_the_manifest_is_caught_by_the_digest(tiny_cross_package: Path, tmp_path: Path,
                                                                     no_sessions: None) -> None:
    """Every file is intact and listed with its real hash, but layer 0 would now run layer 1's
    weights and vice versa: only the manifest's own digest shows the edit."""
    package = _copy(tiny_cross_package, tmp_path / "pkg")
    path = package / "manifest.json"
    text = path.read_text(encoding="utf-8")
    swapped = text.replace("layer_000", "@").replace("layer_001", "layer_000").replace("@", "layer_001")
    assert swapped != text
    path.write_text(swapped, encoding="utf-8")
    _verify_and_run_refuse(package, tmp_path, "manifest.json was edited after export", DIGEST_FILE)
    with pytest.raises(IntegrityError, match="edited after export"):
        edgekit.load(str(package), verify=False)


def test_a_package_without_its_digest_is_refused(tiny_cross_package: Path, tmp_path: Path, no_sessions: None) -> None:
    package = _copy(tiny_cross_package, tmp_path / "pkg")
    (package / DIGEST_FILE).unlink()
    _verify_and_run_refuse(package, tmp_path, f"no {DIGEST_FILE}", "re-export")


def test_the_digest_is_what_sha256sum_checks(tiny_cross_package: Path) -> None:
    """One line, `<sha256>  manifest.json`: `sha256sum -c manifest.sha256` checks a package by hand."""
    line = (tiny_cross_package / DIGEST_FILE).read_text(encoding="ascii")
    assert line == f"{sha256_file(tiny_cross_package / 'manifest.json')}  manifest.json\n"
    if shutil.which("sha256sum"):
        checked = subprocess.run(["sha256sum", "-c", DIGEST_FILE], cwd=tiny_cross_package, capture_output=True, text=True)
        assert checked.returncode == 0 and "manifest.json: OK" in checked.stdout


def test_a_version_1_package_is_named_as_one_not_as_a_digest_failure(tiny_cross_package: Path,
                                                                      tmp_path: Path) -> None:
    """Version-1 packages predate the digest: the version check comes first and says what to do."""
    package = _copy(tiny_cross_package, tmp_path / "pkg")
    rewrite_manifest(package, lambda data: data.update(format_version=1))
    (package / DIGEST_FILE).unlink()
    assert_refused(_cli("verify", package), "format version 1", "re-export")


@pytest.mark.parametrize("case", ["symlink loop", "name too long"])
def test_an_unresolvable_package_path_is_one_line(tmp_path: Path, case: str) -> None:
    if case == "symlink loop":
        os.symlink(tmp_path / "b", tmp_path / "a")
        os.symlink(tmp_path / "a", tmp_path / "b")
        package = tmp_path / "a"
    else:
        package = tmp_path / ("d/" * 2600)
    assert_refused(_cli("verify", package))
