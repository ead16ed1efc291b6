"""Property: the manifest parser turns any JSON into a Manifest or a typed one-line refusal.

`Manifest.from_dict(data, root)` (and `Manifest.load` on a package whose manifest.json was
rewritten) either returns a Manifest or raises an EdgekitError subclass whose message is one
line; any other exception (IndexError, OverflowError, MemoryError, RecursionError ...) is a
parser bug, and hypothesis shrinks it to a minimal manifest. Two sources of manifests:

(a) generated: the right keys with random values of random types (nested wrong types, huge and
    negative numbers, NaN and inf, long strings, control characters, unicode, missing keys);
(b) mutated real manifests of tiny exported packages (a cross-encoder, the same with
    --shared-layers, a Qwen3 decoder reranker, and an SVD video package when diffusers is installed): parsed once, then 1-3 mutations each
    (delete a key, a value of another type, a number at an extreme, graph entries duplicated,
    reordered, dropped or with their files or roles swapped, roles renamed).

Profiles (EDGEKIT_FUZZ): `smoke` (default, CI): 1,000 examples each, derandomized so a CI run
is reproducible; `long`: 20,000 each, random. Each test counts the examples it ran and asserts
the profile's minimum, and prints the counts (pytest -s) and records them as test properties.
Parse only: no session is created.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgekit.errors import EdgekitError
from edgekit.manifest import Manifest
from edgekit.ranking_manifest import RANKING_ROLES
from edgekit.video_manifest import VIDEO_ROLES
from tests.manifest_edit import write_manifest

PROFILES = {"smoke": 1_000, "long": 20_000}
PROFILE = os.environ.get("EDGEKIT_FUZZ", "smoke")
if PROFILE not in PROFILES:
    raise ValueError(f"EDGEKIT_FUZZ={PROFILE!r} is not one of {sorted(PROFILES)}")
EXAMPLES = PROFILES[PROFILE]
for _name, _count in PROFILES.items():
    settings.register_profile(f"edgekit-fuzz-{_name}", max_examples=_count, deadline=None,
                              derandomize=_name == "smoke", database=None,
                              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                     HealthCheck.filter_too_much, HealthCheck.large_base_example])
FUZZ = settings.get_profile(f"edgekit-fuzz-{PROFILE}")

# --- values an attacker would try -------------------------------------------------------------
EXTREMES = [0, -1, 1, -5, True, False, None, 2, 2.0, 0.5, 10**12, 1e12, 2**63, 10**400, -(10**400),
            float("inf"), float("-inf"), float("nan"), 1e-300, "", " ", "x" * 5000, "../../etc/passwd",
            "/etc/passwd", "a\\b", "a/./b", "a//b", "a\x00b", "\x1b[2J", "é" * 300, "{query:>999999999}",
            "{query.__class__}", "{", [], {}, [1, 2], {"a": 1}, [[[]]]]
# a fresh copy per draw: a later mutation must never change the shared list/dict objects above
# (hypothesis replays draws and refuses a strategy whose data changes between runs)
EXTREME = st.sampled_from(EXTREMES).map(copy.deepcopy)
JSON_LEAVES = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(min_value=-(10**500), max_value=10**500),
                        st.floats(), st.text(max_size=40), EXTREME)
JSON = st.recursive(JSON_LEAVES, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=6)


SMALL = st.integers(min_value=-2, max_value=8)
SHA = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)


class Drafter:
    """Draws one plausible manifest with this example's junk rate: each field `pick`ed is, one
    time in `rate`, anything at all (JSON), and each object now and then loses a key. The rate is
    drawn per manifest, so some manifests are clean (and parse), most have a field or two wrong,
    some are riddled. (One composite, not nested flatmaps: several times faster to generate.)"""

    def __init__(self, draw: Callable[[st.SearchStrategy], Any]) -> None:
        self.draw = draw
        self.rate = draw(st.sampled_from([0, 300, 60, 15, 4]))

    def junk(self) -> bool:
        # a middle value of the range: hypothesis favours the ends of an integer range
        return self.rate > 0 and self.draw(st.integers(0, self.rate - 1)) == self.rate // 2

    def pick(self, plausible: Any) -> Any:
        """`plausible` (a strategy, or a value taken as is) or, at the junk rate, any JSON."""
        if self.junk():
            return self.draw(JSON)
        return self.draw(plausible) if isinstance(plausible, st.SearchStrategy) else plausible

    def obj(self, fields: dict[str, Any]) -> dict[str, Any]:
        data = {key: self.pick(value) for key, value in fields.items()}
        if data and self.junk():
            del data[sorted(data)[self.draw(st.integers(0, len(data) - 1))]]
        return data

    def file(self, path: str) -> dict[str, Any]:
        return self.obj({"file": path, "sha256": SHA, "bytes": st.integers(0, 10**6)})

    def graph(self, name: str, role: str, index: int | None, inputs: list[str], output: str,
              shared: bool = False) -> dict[str, Any]:
        """A graph entry; `shared`: a shared-layers layer (the shared graph, its own weights file)."""
        path = "graphs/layer_shared.onnx" if shared else f"graphs/{name}.onnx"
        spec = {"dtype": "float32", "shape": ["batch", "sequence", 32]}
        data = f"graphs/{name}.onnx.data"
        fields: dict[str, Any] = {
            "name": name, "role": role, "format": "onnx", "path": path,
            "files": [self.obj({"file": path, "sha256": "0" * 64, "bytes": 900}) if shared else self.file(path),
                      self.file(data)],
            "inputs": [self.obj({"name": tensor, **spec}) for tensor in inputs],
            "outputs": [self.obj({"name": output, **spec})]}
        if shared:
            tensor = self.obj({"name": st.sampled_from(["w", "w", "hidden_states"]), "dtype": st.sampled_from(
                ["float32", "int8", "int4"]), "shape": st.sampled_from([[32, 32], [32, 32], [-1], []]),
                "offset": st.integers(0, 2**20), "bytes": st.sampled_from([4096, 1024, 4])})
            fields["weights"] = self.obj({"file": st.sampled_from([data, data, path]), "tensors": [tensor]})
        if index is not None or self.junk():
            fields["index"] = index
        return self.obj(fields)


@st.composite
def ranking_manifest(draw: Any) -> Any:
    """A rerank or select manifest shaped like an export (embeddings, L layers, head, maybe a depth
    head) with random plausible values, some fields junk (Drafter)."""
    d = Drafter(draw)
    task = d.draw(st.sampled_from(["rerank", "select"]))
    layers = d.draw(st.integers(1, 2))
    shared = d.draw(st.integers(0, 3)) == 1  # a shared-layers package (weights entries, `requires`)
    graphs = [d.graph("embeddings", "embeddings", None, ["inputs_embeds", "token_type_ids"], "hidden_states_out")]
    graphs += [d.graph(f"layer_{i:03d}", "layer", i, ["hidden_states", "attention_mask"], "hidden_states_out", shared)
               for i in range(layers)]
    head_inputs = ["hidden_states"] if task == "rerank" else ["hidden_states", "attention_mask"]
    graphs.append(d.graph("head", "head", None, head_inputs, "score" if task == "rerank" else "embedding"))
    if d.draw(st.integers(0, 3)) == 1:
        graphs.append(d.graph("head_depth_001", "depth_head", 1, ["hidden_states"], "score"))
    if d.junk():
        graphs = d.draw(st.permutations(graphs))
    vocabulary = d.draw(st.sampled_from([98, 98, 98, 5, 2**24]))
    rotary = d.pick(None)  # the layers take no cos/sin: a rotary section is refused
    prompt = None if task == "select" else d.pick(st.none() | st.fixed_dictionaries({key: st.text(max_size=20) for key in (
        "prefix", "suffix", "instruction")} | {"template": st.sampled_from(
            ["{instruction}{query}{document}", "{query}", "plain", "{query:>9}", "{0}", "{", "{query!r}"])}))
    section = d.obj({
        "max_length": st.integers(1, 2**20), "hidden_size": st.sampled_from([32, 32, 7]), "num_layers": layers,
        "tokenizer": d.obj({"files": [d.file("tokenizer/tokenizer.json")], "pad_token_id": st.integers(0, 100),
                            "pair": task == "rerank" and prompt is None,
                            "truncation": st.sampled_from(["longest_first", "only_second", "only_first"]),
                            "type_ids": st.booleans()}),
        "scoring": d.obj({"kind": "logit" if task == "rerank" else "cosine", "pooling": st.sampled_from(
            [None, "mean", "cls"]), "normalize": st.booleans(), "num_labels": st.none() | st.integers(1, 4),
            "label_tokens": st.none() | st.dictionaries(st.sampled_from(["yes", "no"]), st.integers(0, 120), min_size=1)}),
        "embedding_table": d.obj({"entry": d.file("graphs/word_embeddings.npy"), "shape": [vocabulary, 32],
                                  "dtype": "float32"}),
        "padding_side": st.sampled_from(["right", "left"]),
        "prompt": prompt, "rotary": rotary,
        "dims": st.dictionaries(st.sampled_from(["num_attention_heads", "head_dim", "vocab_size"]),
                                st.integers(1, 2**20), max_size=3),
        "calibration": st.none() | st.dictionaries(st.sampled_from(["policy", "params", "top_k"]), JSON, max_size=3),
    })
    return d.obj({"format": "edgekit-package", "format_version": 2, "task": task,
                  **({"requires": d.pick(st.sampled_from([["shared-layers"], ["shared-layers"], [], ["x"]]))}
                     if shared else {}),
                  "family": st.sampled_from(["bert", "qwen3"]), "dtype": "fp32",
                  "exporter": {"edgekit": "0.1.0"}, "source": {"path": "x"}, "graphs": graphs, "ranking": section,
                  "parity": {}})


@st.composite
def video_manifest(draw: Any) -> Any:
    """A video manifest: a plausible video section (scheduler, conditioning, op groups, svd) over
    a few unet_group graphs; the graph set rarely forms a whole UNet (the mutation test, on a real
    SVD package, reaches the UNet checks)."""
    d = Drafter(draw)
    graphs = [d.graph(f"group_{i}", "unet_group", i, ["hidden_states"], "noise_pred") for i in range(2)]
    video = d.obj({
        "scheduler": d.obj({"_class_name": "EulerDiscreteScheduler", "num_train_timesteps": st.integers(2, 2000),
                            "prediction_type": st.sampled_from(["epsilon", "v_prediction"]),
                            "beta_start": st.floats(0, 0.01), "use_karras_sigmas": st.booleans(),
                            "trained_betas": st.none()}),
        "conditioning": d.obj({key: st.integers(1, 64) for key in (
            "num_frames", "num_inference_steps", "height", "width", "latent_channels", "vae_scale_factor",
            "size_multiple")} | {"scaling_factor": st.floats(0.01, 1.0)}),
        "op_groups": {f"group_{i}": d.obj({"axis": st.sampled_from(["frames", "pixels", "videos"]),
                                           "inputs": {"hidden_states": 0}, "outputs": {"noise_pred_out": 0},
                                           "block": "mid", "ops": ["a"], "exact": "why"}) for i in range(2)},
        "svd": d.obj({"fps": st.integers(1, 30), "motion_bucket_id": st.integers(0, 255),
                      "noise_aug_strength": st.floats(0, 1), "min_guidance_scale": st.floats(0, 3),
                      "max_guidance_scale": st.floats(0, 3), "clip_image_size": st.integers(1, 224),
                      "image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25]}),
    })
    return d.obj({"format": "edgekit-package", "format_version": 2, "task": "video", "family": "svd",
                  "dtype": "fp32", "exporter": {"edgekit": "0.1.0"}, "graphs": graphs, "video": video})


# mostly ranking manifests shaped like exports; some video ones; now and then any JSON at all
GENERATED = st.one_of(ranking_manifest(), ranking_manifest(), ranking_manifest(), video_manifest(), JSON)


def parse_outcome(data: Any, root: Path) -> str:
    """'parsed' or 'refused'; any other exception propagates (the property fails)."""
    try:
        Manifest.from_dict(data, root)
    except EdgekitError as error:
        assert "\n" not in str(error), str(error)
        return "refused"
    return "parsed"


def load_outcome(package: Path) -> str:
    """The same through Manifest.load: JSON text (NaN, huge ints) and the presence checks."""
    try:
        Manifest.load(package)
    except EdgekitError as error:
        assert "\n" not in str(error), str(error)
        return "refused"
    return "parsed"


def _report(record_property: Callable[[str, Any], None], name: str, counts: Counter) -> None:
    total = sum(counts.values())
    print(f"\n{name} [{PROFILE}]: {total} examples, {dict(counts)}")
    record_property(f"{name}_examples", total)
    assert total >= EXAMPLES, f"{name}: hypothesis ran {total} examples, the {PROFILE} profile needs {EXAMPLES}"


def test_generated_manifests_parse_or_are_refused_in_one_line(tmp_path: Path, record_property: Any) -> None:
    counts: Counter = Counter()

    @FUZZ
    @given(GENERATED)
    def check(data: Any) -> None:
        counts[parse_outcome(data, tmp_path)] += 1

    check()
    _report(record_property, "generated", counts)


# --- mutations of real manifests ----------------------------------------------------------------
Node = Any
Route = tuple[Any, ...]


def routes(node: Node, route: Route = ()) -> list[Route]:
    """Every place in a JSON tree, the root excluded: keys of objects, indices of lists."""
    found = []
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in children:
        found.append((*route, key))
        found.extend(routes(child, (*route, key)))
    return found


def _parent(data: Node, route: Route) -> Node:
    for key in route[:-1]:
        data = data[key]
    return data


def mutate(data: dict[str, Any], draw: Callable[[st.SearchStrategy], Any]) -> str:
    """One mutation of `data` in place; returns its kind."""
    kind = draw(st.sampled_from(["delete", "replace", "extreme", "graphs", "swap", "role", "list"]))
    graphs = data.get("graphs") if isinstance(data.get("graphs"), list) else None
    if kind in ("graphs", "swap", "role") and graphs:
        i, j = draw(st.integers(0, len(graphs) - 1)), draw(st.integers(0, len(graphs) - 1))
        if kind == "graphs":
            how = draw(st.sampled_from(["drop", "duplicate", "reverse", "move"]))
            if how == "drop":
                graphs.pop(i)
            elif how == "duplicate":
                graphs.insert(j, copy.deepcopy(graphs[i]))
            elif how == "reverse":
                graphs.reverse()
            else:
                graphs.insert(j, graphs.pop(i))
        elif kind == "swap" and isinstance(graphs[i], dict) and isinstance(graphs[j], dict):
            keys = draw(st.sampled_from([("path", "files"), ("role", "index"), ("inputs",), ("outputs",), ("name",)]))
            for key in keys:
                if key in graphs[i] and key in graphs[j]:
                    graphs[i][key], graphs[j][key] = graphs[j][key], graphs[i][key]
        elif kind == "role" and isinstance(graphs[i], dict):
            graphs[i]["role"] = draw(st.sampled_from([*RANKING_ROLES, *VIDEO_ROLES, "lyer", ""]))
            if draw(st.booleans()):
                graphs[i]["index"] = draw(st.none() | SMALL)
        return kind
    places = routes(data)
    route = draw(st.sampled_from(places))
    parent, key = _parent(data, route), route[-1]
    if kind == "delete":
        del parent[key]
    elif kind == "extreme":
        parent[key] = draw(EXTREME)
    elif kind == "list" and isinstance(parent[key], list) and parent[key]:
        value = parent[key]
        how = draw(st.sampled_from(["drop", "duplicate", "reverse", "empty"]))
        if how == "drop":
            value.pop(draw(st.integers(0, len(value) - 1)))
        elif how == "duplicate":
            value.append(copy.deepcopy(value[draw(st.integers(0, len(value) - 1))]))
        elif how == "reverse":
            value.reverse()
        else:
            value.clear()
    else:
        parent[key] = draw(JSON)
    return kind


@pytest.fixture(scope="module")
def real_manifests(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                   ) -> dict[str, tuple[dict[str, Any], Path]]:
    """name -> (parsed manifest.json, a scratch copy of the package to write mutations into)."""
    packages = {"cross-encoder": request.getfixturevalue("tiny_cross_package"),
                "qwen3-reranker": _qwen3_package(request, tmp_path_factory),
                "cross-encoder-shared": _shared_package(request, tmp_path_factory)}
    try:
        import diffusers  # noqa: F401
    except ImportError:
        pass
    else:
        packages["svd"] = request.getfixturevalue("svd_package")
        packages["wan"] = request.getfixturevalue("wan_package")
    found = {}
    for name, package in packages.items():
        scratch = tmp_path_factory.mktemp("fuzz") / name
        shutil.copytree(package, scratch)
        data = json.loads((scratch / "manifest.json").read_text(encoding="utf-8"))
        Manifest.from_dict(data, scratch)  # the unmutated manifest parses
        found[name] = (data, scratch)
    return found


def _qwen3_package(request: pytest.FixtureRequest, factory: pytest.TempPathFactory) -> Path:
    from typer.testing import CliRunner

    from edgekit.cli import app

    out = factory.mktemp("fuzz-qwen3") / "pkg"
    result = CliRunner().invoke(app, ["export", str(request.getfixturevalue("tiny_qwen3")), "--out", str(out),
                                      "--max-length", "64"])
    assert result.exit_code == 0, result.output
    return out


def _shared_package(request: pytest.FixtureRequest, factory: pytest.TempPathFactory) -> Path:
    """The tiny cross-encoder exported with --shared-layers (a `weights` entry per layer)."""
    from typer.testing import CliRunner

    from edgekit.cli import app

    out = factory.mktemp("fuzz-shared") / "pkg"
    result = CliRunner().invoke(app, ["export", str(request.getfixturevalue("tiny_cross_encoder")), "--out", str(out),
                                      "--max-length", "64", "--shared-layers"])
    assert result.exit_code == 0, result.output
    return out


def test_mutated_real_manifests_parse_or_are_refused_in_one_line(real_manifests: dict[str, Any],
                                                                  record_property: Any) -> None:
    names = sorted(real_manifests)

    @FUZZ
    @given(st.sampled_from(names), st.data())
    def check(name: str, data: st.DataObject) -> None:
        base, scratch = real_manifests[name]
        mutated = copy.deepcopy(base)
        kinds.update(mutate(mutated, data.draw) for _ in range(data.draw(st.integers(1, 3))))
        counts[(name, parse_outcome(mutated, scratch))] += 1
        if data.draw(st.integers(0, 9)) == 0:  # a tenth also through the file: JSON text, presence checks
            write_manifest(scratch, mutated)
            loads[load_outcome(scratch)] += 1

    counts: Counter = Counter()
    kinds: Counter = Counter()
    loads: Counter = Counter()
    check()
    print(f"\nmutations applied: {dict(kinds)}; through Manifest.load: {dict(loads)}")
    _report(record_property, "mutated", counts)
    assert {name for name, _ in counts} == set(names)  # every real manifest was mutated
    assert loads["parsed"] + loads["refused"] > 0
