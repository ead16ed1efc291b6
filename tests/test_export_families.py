"""The export family contract, for every registered family: it has a tiny source, it recognises
that source and no other family does, a wrong option is a one-line error naming the option and
the family, and the registry (with the CLI's export command up to the exporter) runs without
torch, where a missing extra is one line naming the pip extra."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgekit.cli import app
from edgekit.errors import InvalidArgumentError, SourceModelError
from edgekit.exporters.families import FAMILIES, TASKS, family_for_source, family_named
from edgekit.exporters.families.base import flag
from edgekit.manifest import TASKS as MANIFEST_TASKS
from edgekit.manifest import Manifest
from edgekit.ranking_manifest import RANKING_ROLES
from edgekit.video_manifest import VIDEO_ROLES

NAMES = [family.name for family in FAMILIES]
ALL_OPTIONS = sorted({option for family in FAMILIES for option in family.options})
runner = CliRunner()


def test_families_state_their_contract() -> None:
    assert len(set(NAMES)) == len(NAMES) and set(TASKS) <= set(MANIFEST_TASKS)
    for family in FAMILIES:
        roles = VIDEO_ROLES if family.task == "video" else RANKING_ROLES
        assert family.stages and set(family.stages) <= set(roles), family.name
        assert family.description and callable(family.build_tiny) and callable(family.recognise), family.name


@pytest.mark.parametrize("name", NAMES)
def test_each_family_alone_recognises_its_tiny_source(name: str, tiny_source: Callable[[str], Path]) -> None:
    source = tiny_source(name)
    assert [family.name for family in FAMILIES if family.recognises(source)] == [name]
    family = family_named(name)
    assert family_for_source(source) is family and family_for_source(source, family.task) is family


@pytest.mark.parametrize("name", NAMES)
def test_a_wrong_option_is_one_line_naming_option_and_family(name: str, tiny_source: Callable[[str], Path],
                                                              tmp_path: Path) -> None:
    family = family_named(name)
    wrong = next(option for option in ALL_OPTIONS if option not in family.options)
    with pytest.raises(InvalidArgumentError) as caught:
        family.export(tiny_source(name), tmp_path / "pkg", None, **{wrong: 1})
    message = str(caught.value)
    assert "\n" not in message and flag(wrong) in message and name in message
    assert not (tmp_path / "pkg").exists()


def test_packages_hold_only_their_familys_stages(tiny_cross_package: Path, tiny_bi_package: Path) -> None:
    for name, package in (("cross-encoder", tiny_cross_package), ("bi-encoder", tiny_bi_package)):
        roles = {graph.role for graph in Manifest.load(package).graphs}
        assert roles <= set(family_named(name).stages), name


def test_cli_export_refuses_an_option_of_another_family(tiny_cross_encoder: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["export", str(tiny_cross_encoder), "--out", str(tmp_path / "p"), "--op-groups"])
    message = result.stderr.strip()
    assert result.exit_code == 2 and "\n" not in message
    assert "--op-groups does not apply to cross-encoder" in message and not (tmp_path / "p").exists()


def test_unrecognised_sources_name_what_they_hold(tiny_bi_encoder: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceModelError) as caught:
        family_for_source(tmp_path / "empty")
    assert "\n" not in str(caught.value) and all(name in str(caught.value) for name in NAMES)
    plain = tmp_path / "plain"  # an encoder without modules.json: a bi-encoder only when asked
    plain.mkdir()
    shutil.copy(tiny_bi_encoder / "config.json", plain / "config.json")
    with pytest.raises(SourceModelError, match=r"model_type 'bert'.*no modules.json"):
        family_for_source(plain)
    assert family_for_source(plain, "select").name == "bi-encoder"
    with pytest.raises(SourceModelError, match="--task rerank does not fit"):
        family_for_source(tiny_bi_encoder, "rerank")
    with pytest.raises(InvalidArgumentError, match="unknown task 'audio'"):
        family_for_source(plain, "audio")
    base = tmp_path / "qwen3-base"  # a decoder without the head a reranker scores with
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"model_type": "qwen3", "architectures": ["Qwen3Model"]}))
    with pytest.raises(SourceModelError, match=r"model_type 'qwen3', architectures \['Qwen3Model'\].*qwen3-reranker"):
        family_for_source(base, "rerank")


# --- without torch --------------------------------------------------------------------------
BLOCKER = textwrap.dedent(
    """
    import importlib.abc, sys
    BLOCKED = ("torch", "transformers", "diffusers", "optimum")
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"blocked in this test: {name}", name=name)
            return None
    sys.meta_path.insert(0, Block())
    """
)


def _run_blocked(code: str, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCKER + textwrap.dedent(code), *argv], capture_output=True,
                          text=True, timeout=120)


def test_registry_recognises_without_torch(tiny_cross_encoder: Path, tiny_bi_encoder: Path) -> None:
    result = _run_blocked("""
        import json, sys
        from edgekit.exporters.families import family_for_source
        names = [family_for_source(path).name for path in sys.argv[1:]]
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
        print(json.dumps({"names": names, "heavy": heavy}))
    """, str(tiny_cross_encoder), str(tiny_bi_encoder))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"names": ["cross-encoder", "bi-encoder"],
                                                                  "heavy": []}


@pytest.mark.parametrize("name, extra", [("cross-encoder", "export"), ("svd", "export,video")])
def test_export_without_torch_names_the_extra(name: str, extra: str, tiny_source: Callable[[str], Path],
                                              tmp_path: Path) -> None:
    result = _run_blocked("""
        import sys
        from edgekit.cli import main
        sys.argv = ["edgekit", "export", *sys.argv[1:]]
        main()
    """, str(tiny_source(name)), "--out", str(tmp_path / "pkg"))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and f"pip install 'edgekit[{extra}]'" in lines[0]
    assert not (tmp_path / "pkg").exists()
