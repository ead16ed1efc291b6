"""LayerStream keeps at most W graphs resident, prefetches ahead and releases behind."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgekit.errors import InvalidArgumentError
from edgekit.runtimes.layer_stream import LayerStream


class FakeSession:
    """Counts live sessions so the test sees residency from the loader's side too."""

    def __init__(self, path: Path, ledger: dict) -> None:
        self.path = path
        self.ledger = ledger
        with ledger["lock"]:
            ledger["live"] += 1
            ledger["peak"] = max(ledger["peak"], ledger["live"])
            ledger["loaded"].append(path.name)

    def release(self) -> None:
        with self.ledger["lock"]:
            self.ledger["live"] -= 1
            self.ledger["released"].append(self.path.name)


def _ledger() -> dict:
    return {"lock": threading.Lock(), "live": 0, "peak": 0, "loaded": [], "released": []}


@settings(max_examples=25, deadline=None)
@given(graphs=st.integers(1, 9), window=st.integers(1, 4))
def test_never_more_than_window_resident(graphs: int, window: int) -> None:
    ledger = _ledger()
    paths = [Path(f"g{i}") for i in range(graphs)]
    stream = LayerStream(paths, lambda p: FakeSession(p, ledger), window=window)
    seen = []
    for index, session in stream:
        assert session.path == paths[index]
        seen.append(index)
    assert seen == list(range(graphs))
    assert ledger["peak"] <= window and stream.max_resident <= window
    assert ledger["live"] == 0  # everything released at the end
    assert ledger["loaded"] == [p.name for p in paths] and stream.loads == graphs


def test_next_graph_loads_while_current_computes() -> None:
    consumer_has_g0 = threading.Event()
    g1_overlapped: list[bool] = []
    ledger = _ledger()

    def load(path: Path) -> FakeSession:
        if path.name == "g1":  # only a background load can see the consumer holding g0
            g1_overlapped.append(consumer_has_g0.wait(timeout=5))
        return FakeSession(path, ledger)

    stream = LayerStream([Path("g0"), Path("g1")], load, window=2)
    iterator = iter(stream)
    index, _ = next(iterator)
    assert index == 0
    consumer_has_g0.set()  # "computing" graph 0 now
    assert [i for i, _ in iterator] == [1]
    assert g1_overlapped == [True]


def test_window_one_loads_only_after_release() -> None:
    ledger = _ledger()
    stream = LayerStream([Path(f"g{i}") for i in range(4)], lambda p: FakeSession(p, ledger), window=1)
    for _ in stream:
        time.sleep(0.001)
    assert ledger["peak"] == 1 and stream.max_resident == 1


def test_load_failure_propagates_and_releases_everything() -> None:
    ledger = _ledger()

    def load(path: Path) -> FakeSession:
        if path.name == "g2":
            raise OSError("disk gone")
        return FakeSession(path, ledger)

    with pytest.raises(OSError, match="disk gone"):
        for _ in LayerStream([Path(f"g{i}") for i in range(4)], load, window=2):
            pass
    assert ledger["live"] == 0


def test_window_must_be_positive() -> None:
    with pytest.raises(InvalidArgumentError, match="window"):
        LayerStream([Path("g0")], lambda p: FakeSession(p, _ledger()), window=0)
