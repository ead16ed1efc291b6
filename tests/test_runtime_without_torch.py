"""The runtime imports and ranks with torch, transformers, diffusers and optimum blocked."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

BLOCKER = textwrap.dedent(
    """
    import importlib.abc, sys
    BLOCKED = ("torch", "transformers", "diffusers", "optimum")
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"blocked in this test: {name}")
            return None
    sys.meta_path.insert(0, Block())
    """
)


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCKER + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=120)


def test_api_ranks_with_heavy_modules_blocked(tiny_cross_package: Path) -> None:
    result = _run(f"""
        import json, sys, edgekit
        ranking = edgekit.load({str(tiny_cross_package)!r}).rank("read a file", ["open the file", "a cat"], top_k=2)
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
        print(json.dumps({{"n": len(ranking), "heavy": heavy}}))
    """)
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert payload == {"n": 2, "heavy": []}


def test_cli_run_with_heavy_modules_blocked(tiny_bi_package: Path, tmp_path: Path) -> None:
    candidates = tmp_path / "c.txt"
    candidates.write_text("open the file\nsort a list\nthe cat sat\n", encoding="utf-8")
    result = _run(f"""
        import sys
        from edgekit.cli import main
        sys.argv = ["edgekit", "run", {str(tiny_bi_package)!r}, "--query", "read a file",
                    "--candidates", {str(candidates)!r}, "--top-k", "2", "--json"]
        main()
    """)
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(payload["top_k"]) == 2 and payload["stats"]["max_resident_graphs"] <= 2


def test_graph_checks_read_onnx_schema_without_importing_onnx(tiny_cross_package: Path) -> None:
    """The containment check parses each .onnx with onnx's generated protobuf schema alone: a run
    never imports the onnx package itself (its __init__ pulls ml_dtypes, ~0.5 s), and importing
    onnx afterwards in the same process still works and shares the schema's classes."""
    result = _run(f"""
        import json, sys, edgekit
        edgekit.load({str(tiny_cross_package)!r}).rank("read a file", ["open the file", "a cat"], top_k=1)
        before = sorted(m for m in sys.modules if m.split(".")[0] in ("onnx", "ml_dtypes"))
        import onnx
        from edgekit.containment import onnx_schema
        model = onnx.load({str(tiny_cross_package / "graphs" / "layer_000.onnx")!r}, load_external_data=False)
        print(json.dumps({{"before": before, "same": onnx_schema().TensorProto is onnx.TensorProto,
                          "nodes": len(model.graph.node) > 0}}))
    """)
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert payload == {"before": [], "same": True, "nodes": True}


def test_the_core_ml_backend_imports_no_coremltools_off_macos(tiny_cross_package: Path) -> None:
    """coremltools probes for torch when imported: the Core ML backend imports it only on macOS,
    after the platform check, so off macOS asking for it is the one-line refusal and nothing heavy
    (nor coremltools) is imported."""
    result = _run("""
        import json, platform, sys
        import edgekit.runtimes.backends.coreml_backend
        from edgekit.errors import ProviderUnavailableError
        from edgekit.runtimes.backends import backend_for
        try:
            backend_for("mlpackage", "coreml")
            message = None
        except ProviderUnavailableError as error:
            message = str(error)
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in (*BLOCKED, "coremltools"))
        print(json.dumps({"darwin": platform.system() == "Darwin", "message": message, "loaded": loaded}))
    """)
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    if payload["darwin"]:
        pytest.skip("on macOS the backend imports coremltools by design")
    assert payload["loaded"] == [] and "Core ML graphs need macOS" in payload["message"]
