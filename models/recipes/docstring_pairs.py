"""Training and held-out data for docstring cross-encoders, from `models.docstrings` only.

Contract: every passage comes from `collect_passages(training_modules())`, so nothing here
touches the dev set's modules (`DEVSET_MODULES`). Those passages are split *by module* into a
training pool and a held-out pool (whole modules, chosen by a hash of the module name, so the
split does not depend on the seed or on which modules import). A training group is
(query, [positive, negatives...]) with the positive first: query = a function's docstring
summary, positive = its own passage, negatives = BM25-hard ones (rank-bm25 over the training
pool) plus random ones; negatives never share the query's summary (a duplicate summary would be
a false negative). Training modules re-export some dev-set docstrings word for word (`posix` is
`os`, `posixpath` is `os.path`); `without_devset_text` drops those passages. Everything is deterministic for a seed on one Python version.

Example::

    pools = split_pools(without_devset_text(collect_passages(training_modules())))
    sampler = GroupSampler(pools.train, hard=4, random_negatives=3)
    groups = sampler.groups(count=8, seed=0)  # list[Group]
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from edgekit.models.docstrings import DEVSET_MODULES, Passage, collect_passages, words

HELD_OUT_SHARE = 0.12  # of passages, in whole modules
HARD_POOL = 30  # BM25 ranks a hard negative is drawn from
HELD_OUT_CANDIDATES = 30


@dataclass(frozen=True)
class Pools:
    """Training pool, held-out pool and the held-out module names."""

    train: list[Passage]
    held_out: list[Passage]
    held_out_modules: tuple[str, ...]


@dataclass(frozen=True)
class Group:
    """One listwise training example: `texts[0]` is the positive."""

    query: str
    texts: list[str]


def _module(passage: Passage) -> str:
    return passage.name.split(".")[0]


def _body(passage: Passage) -> str:
    """Signature + docstring without the qualified name (what `posix.x` and `os.x` share)."""
    return passage.passage[len(passage.name):][:200]


def without_devset_text(passages: list[Passage]) -> list[Passage]:
    """Passages whose summary or body does not also occur in the dev set's modules."""
    devset = collect_passages(DEVSET_MODULES)
    summaries = {p.summary for p in devset}
    bodies = {_body(p) for p in devset}
    return [p for p in passages if p.summary not in summaries and _body(p) not in bodies]


def split_pools(passages: list[Passage], share: float = HELD_OUT_SHARE) -> Pools:
    """Hold out whole modules in sha1(module) order until `share` of the passages is held out.

    Modules larger than 3x the average held-out module are skipped so no single big module
    (turtle, tkinter) decides the held-out set alone.
    """
    by_module: dict[str, list[Passage]] = {}
    for passage in passages:
        by_module.setdefault(_module(passage), []).append(passage)
    goal = share * len(passages)
    order = sorted(by_module, key=lambda name: hashlib.sha1(name.encode()).hexdigest())
    held: list[str] = []
    count = 0
    for name in order:
        if count >= goal:
            break
        if len(by_module[name]) > max(10, goal / 3):
            continue
        held.append(name)
        count += len(by_module[name])
    held_set = set(held)
    return Pools(
        train=[p for p in passages if _module(p) not in held_set],
        held_out=[p for p in passages if _module(p) in held_set],
        held_out_modules=tuple(sorted(held)),
    )


class GroupSampler:
    """Builds (query, positive + negatives) groups over one pool of passages."""

    def __init__(self, pool: list[Passage], hard: int, random_negatives: int) -> None:
        from rank_bm25 import BM25Okapi

        if len(pool) < hard + random_negatives + 2:
            raise ValueError(f"pool of {len(pool)} passages is too small for {hard}+{random_negatives} negatives")
        self.pool = pool
        self.hard = hard
        self.random_negatives = random_negatives
        self._bm25 = BM25Okapi([words(p.passage) for p in pool])
        self._ranked: dict[int, list[int]] = {}

    def bm25_ranking(self, index: int, depth: int = HARD_POOL) -> list[int]:
        """Top-`depth` pool indices for passage `index`'s summary (ties by index), cached."""
        if index not in self._ranked:
            scores = self._bm25.get_scores(words(self.pool[index].summary))
            order = sorted(range(len(self.pool)), key=lambda i: (-scores[i], i))
            self._ranked[index] = order[: max(depth, HARD_POOL)]
        return self._ranked[index][:depth]

    def _negatives(self, index: int, rng: random.Random) -> list[int]:
        summary = self.pool[index].summary
        usable = [i for i in self.bm25_ranking(index) if i != index and self.pool[i].summary != summary]
        chosen = rng.sample(usable, k=min(self.hard, len(usable)))
        while len(chosen) < self.hard + self.random_negatives:
            other = rng.randrange(len(self.pool))
            if other != index and other not in chosen and self.pool[other].summary != summary:
                chosen.append(other)
        return chosen

    def groups(self, count: int, seed: int) -> list[Group]:
        """`count` groups; positives walk reshuffled epochs of the pool (seeded)."""
        rng = random.Random(seed)
        order: list[int] = []
        out = []
        while len(out) < count:
            if not order:
                order = list(range(len(self.pool)))
                rng.shuffle(order)
            index = order.pop()
            texts = [self.pool[index].passage] + [self.pool[i].passage for i in self._negatives(index, rng)]
            out.append(Group(self.pool[index].summary, texts))
        return out


def held_out_examples(pool: list[Passage], candidates: int = HELD_OUT_CANDIDATES,
                      limit: int | None = None, seed: int = 13) -> list[dict]:
    """Dev-set-shaped examples over the held-out pool: BM25 top-`candidates` with the positive
    guaranteed in, shuffled; `{"query", "candidates", "relevant", "source"}` per example."""
    from rank_bm25 import BM25Okapi

    bm25 = BM25Okapi([words(p.passage) for p in pool])
    rng = random.Random(seed)
    chosen = list(range(len(pool)))
    rng.shuffle(chosen)
    examples = []
    for index in chosen[:limit]:
        scores = bm25.get_scores(words(pool[index].summary))
        ranked = [i for i in sorted(range(len(pool)), key=lambda i: (-scores[i], i))
                  if i == index or pool[i].summary != pool[index].summary][:candidates]
        if index not in ranked:
            ranked[-1] = index
        rng.shuffle(ranked)
        examples.append({"query": pool[index].summary, "candidates": [pool[i].passage for i in ranked],
                         "relevant": [ranked.index(index)], "source": pool[index].name})
    return examples
