"""The pruning-policy registry: names to classes, `--prune` specs to settings.

A policy is one module with one class that satisfies `pruning.Policy` and offers
`from_params(params, score_kind)` (rebuild a stored setting) and
`calibration_chains(layers, score_kind)` (the settings calibration may test). Adding one means
that module, its test, one line in `POLICIES` and its `--prune` syntax in `parse_prune` and
`PRUNE_HELP`.

`--prune` specs:
  exact              no pruning
  auto               the policy and parameters `edgekit calibrate` stored in the package
  threshold:X[@D], X cluster pruning with dispersion threshold X, from depth D (default 1)
  stable:M[@D]       rank stability: accept the top-K once it held for M comparisons
"""

from __future__ import annotations

from typing import Any, Protocol

from edgekit.errors import InvalidArgumentError, UnknownPolicyError
from edgekit.runtimes.policy_rank_stability import RankStability
from edgekit.runtimes.pruning import DEFAULT_CLUSTERS, ClusterPruning, Policy


class PolicyClass(Protocol):
    name: str

    def from_params(self, params: dict[str, Any], score_kind: str) -> Policy: ...

    def calibration_chains(self, layers: int, score_kind: str) -> list[list[Policy]]: ...


POLICIES: dict[str, PolicyClass] = {ClusterPruning.name: ClusterPruning, RankStability.name: RankStability}  # type: ignore[dict-item]
PRUNE_HELP = ("exact, auto (the calibrated policy), threshold:X or threshold:X@D (cluster pruning, from depth D), "
              "or stable:M or stable:M@D (rank stability: accept the top-K once unchanged for M depths).")


def policy_class(name: str) -> PolicyClass:
    if name not in POLICIES:
        raise UnknownPolicyError(f"pruning policy {name!r} is not one this edgekit knows ({', '.join(POLICIES)}); "
                                 "upgrade edgekit, or re-run `edgekit calibrate` with one of those")
    return POLICIES[name]


def build_policy(name: str, params: dict[str, Any], score_kind: str) -> Policy:
    """The stored setting `{"policy": name, "params": params}` as a policy object."""
    cls = policy_class(name)
    try:
        return cls.from_params(params, score_kind)
    except (KeyError, TypeError, ValueError):
        raise InvalidArgumentError(f"the package's calibration has malformed {name} parameters {params}; "
                                   "re-run `edgekit calibrate`") from None


def parse_prune(spec: str | float | None, score_kind: str, calibration: dict | None,
                top_k: int | None = None) -> Policy | None:
    """A `--prune` spec (see the module docstring) as a policy; None means exact. `auto` needs a
    calibration made for the same top-k."""
    if spec is None or spec == "exact":
        return None
    if spec == "auto":
        return calibrated_policy(score_kind, calibration, top_k)
    text = str(spec)
    kind, _, rest = text.partition(":") if ":" in text else ("threshold", "", text)
    value, _, depth = rest.partition("@")
    if kind not in ("threshold", "stable"):
        raise InvalidArgumentError(f"--prune {spec!r} is not understood; use {PRUNE_HELP[:-1]}")
    try:
        min_depth = int(depth) if depth else 1
        if kind == "stable":
            return RankStability(int(value), min_depth)
        return ClusterPruning(float(value), score_kind, DEFAULT_CLUSTERS, min_depth)
    except ValueError:
        raise InvalidArgumentError(f"--prune {spec!r} is not understood; use {PRUNE_HELP[:-1]}") from None


def calibrated_policy(score_kind: str, calibration: dict | None, top_k: int | None) -> Policy | None:
    """Rebuild exactly the stored policy. Also reads the first calibration shape (cluster only:
    `threshold`, `min_depth`, `clusters` at the top level)."""
    if not calibration:
        raise InvalidArgumentError(
            "--prune auto needs a calibrated package; run `edgekit calibrate PKG --data FILE.jsonl` "
            "or pass --prune threshold:X / stable:M"
        )
    calibrated_k = calibration.get("top_k")
    if top_k is not None and calibrated_k is not None and calibrated_k != top_k:
        raise InvalidArgumentError(
            f"the package was calibrated for top-k {calibrated_k}, not {top_k}; re-run `edgekit calibrate` "
            f"with --top-k {top_k}, or pass --prune threshold:X / stable:M"
        )
    if "params" not in calibration:  # the first shape
        if calibration.get("threshold") is None:
            return None
        legacy = {key: calibration[key] for key in ("threshold", "min_depth", "clusters") if key in calibration}
        return build_policy(str(calibration.get("policy", ClusterPruning.name)), legacy, score_kind)
    params = calibration["params"]
    if params is None:  # calibration certified no setting: run exact
        return None
    if not isinstance(params, dict):
        raise InvalidArgumentError("the package's calibration is malformed; re-run `edgekit calibrate`")
    return build_policy(str(calibration.get("policy")), params, score_kind)
