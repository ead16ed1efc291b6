"""Wan's two flow-matching schedulers in numpy (no torch), step for step equal to diffusers 0.42.

* `FlowMatchEulerScheduler`: diffusers' `FlowMatchEulerDiscreteScheduler` with static shift
  (x_next = x + (sigma_next - sigma) * velocity).
* `UniPCFlowScheduler`: diffusers' `UniPCMultistepScheduler` in flow mode as Wan 2.1 ships it
  (prediction_type "flow_prediction", use_flow_sigmas, flow_shift): the UniPC predictor of order
  1..3 (B(h) = h for "bh1", e^h - 1 for "bh2") with the UniC corrector, on data predictions
  x0 = x - sigma * velocity, in lambda = log((1 - sigma) / sigma).

`check_flow_config` refuses every setting this module does not implement, and the settings for
which diffusers 0.42 itself returns NaN (see `_refuse_nan_settings`), so a package never runs a
schedule that differs from its reference. Arithmetic follows diffusers' dtypes: set_timesteps in
float64 numpy, sigmas stored float32, and every solver scalar and sample update in float32 (as
torch does for 0-d float32 tensors; python numbers meet np.float32 scalars as np.float32 so numpy
1.x's value-based casting does not widen them).

Both are stateful: one object per run, `step(i)` called for i = 0..n-1 in order (diffusers'
begin_index 0 path, which WanPipeline sets); UniPC keeps the last `solver_order` data predictions.
UniPC's timesteps are diffusers' int64 ones as exact float32 values. Example::

    schedule = flow_schedule(manifest_scheduler_config, steps=50)
    x = noise * schedule.init_noise_sigma
    for i, t in enumerate(schedule.timesteps):
        x = schedule.step(network(schedule.scale(x, i), t), i, x)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgekit.errors import InvalidArgumentError

UNIPC = "UniPCMultistepScheduler"
FLOW_EULER = "FlowMatchEulerDiscreteScheduler"
FLOW_SCHEDULERS = (UNIPC, FLOW_EULER)

# Keys diffusers 0.42 writes to scheduler_config.json, each with the values this module implements:
# a tuple of allowed values, or None when the key does not change the flow-mode computation
# (the beta schedule only feeds the non-flow sigmas; thresholding's ratios only matter when on).
_UNIPC_KEYS: dict[str, tuple | None] = {
    "num_train_timesteps": None, "flow_shift": None, "solver_order": (1, 2, 3),
    "prediction_type": ("flow_prediction",), "use_flow_sigmas": (True,), "predict_x0": (True,),
    "solver_type": ("bh1", "bh2"), "lower_order_final": (True, False), "disable_corrector": None,
    "final_sigmas_type": ("zero", "sigma_min"), "timestep_spacing": ("linspace", "leading", "trailing"),
    "thresholding": (False,), "use_karras_sigmas": (False,), "use_exponential_sigmas": (False,),
    "use_beta_sigmas": (False,), "use_dynamic_shifting": (False,), "shift_terminal": (None,),
    "solver_p": (None,), "time_shift_type": ("exponential",),
    "beta_start": None, "beta_end": None, "beta_schedule": None, "trained_betas": None,
    "rescale_betas_zero_snr": None, "dynamic_thresholding_ratio": None, "sample_max_value": None,
    "steps_offset": None, "sigma_min": None, "sigma_max": None,
}
_EULER_KEYS: dict[str, tuple | None] = {
    "num_train_timesteps": None, "shift": None, "use_dynamic_shifting": (False,),
    "invert_sigmas": (False,), "shift_terminal": (None,), "use_karras_sigmas": (False,),
    "use_exponential_sigmas": (False,), "use_beta_sigmas": (False,), "stochastic_sampling": (False,),
    # time_shift_type is only read with dynamic shifting (refused above); base/max shift and the
    # image sequence lengths compute mu for dynamic shifting only
    "time_shift_type": ("exponential", "linear"), "base_shift": None, "max_shift": None,
    "base_image_seq_len": None, "max_image_seq_len": None,
}
_UNIPC_DEFAULTS: dict[str, Any] = {
    "num_train_timesteps": 1000, "flow_shift": 1.0, "solver_order": 2, "solver_type": "bh2",
    "lower_order_final": True, "disable_corrector": [], "final_sigmas_type": "zero",
}
_EULER_DEFAULTS: dict[str, Any] = {"num_train_timesteps": 1000, "shift": 1.0}


def _refuse(key: str, value: Any, supported: str) -> InvalidArgumentError:
    return InvalidArgumentError(f"scheduler config {key}={value!r} is not supported by edgekit's flow "
                                f"schedulers; supported: {supported}")


def _positive(config: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> None:
    value = config.get(key)
    if key in config and (isinstance(value, bool) or not isinstance(value, kind) or not value > 0):
        raise _refuse(key, value, "a positive number" if kind is not int else "a positive integer")


def _refuse_nan_settings(c: dict[str, Any]) -> None:
    """Settings for which diffusers 0.42's flow UniPC itself returns NaN: stepping to sigma 0 makes
    h = lambda_t - lambda_s infinite, so bh1's B(h) = h times a zero residual is NaN, and a
    multistep (order >= 2) final step divides by r_k = 0. With final sigma_min the last step has
    h = 0, so an order-3 final step solves a NaN system."""
    order, final_zero = c["solver_order"], c["final_sigmas_type"] == "zero"
    if final_zero and c["solver_type"] == "bh1":
        raise _refuse("solver_type", "bh1", "bh2 with final_sigmas_type 'zero' (diffusers' bh1 step to sigma 0 "
                      "is NaN); bh1 with final_sigmas_type 'sigma_min'")
    if not c["lower_order_final"] and order >= (2 if final_zero else 3):
        raise _refuse("lower_order_final", False, f"True with solver_order {order} and final_sigmas_type "
                      f"{c['final_sigmas_type']!r} (diffusers' final step at order {order} is NaN)")


def check_flow_config(config: dict) -> None:
    """Raise InvalidArgumentError naming the first key whose value this module does not implement
    (unknown keys included: a newer diffusers' new setting must not be silently ignored)."""
    if not isinstance(config, dict):
        raise InvalidArgumentError(f"scheduler config must be a dict, got {type(config).__name__}")
    name = config.get("_class_name")
    if name not in FLOW_SCHEDULERS:
        raise _refuse("_class_name", name, ", ".join(FLOW_SCHEDULERS))
    keys = _UNIPC_KEYS if name == UNIPC else _EULER_KEYS
    for key, value in config.items():
        if key.startswith("_"):
            continue
        if key not in keys:
            raise _refuse(key, value, f"the keys diffusers 0.42's {name} writes")
        allowed = keys[key]
        if allowed is not None and not any(value is a or (type(value) is type(a) and value == a) for a in allowed):
            raise _refuse(key, value, ", ".join(repr(a) for a in allowed))
    _positive(config, "num_train_timesteps", int)
    _positive(config, "flow_shift" if name == UNIPC else "shift", (int, float))
    if name == UNIPC:
        disabled = config.get("disable_corrector", [])
        if not isinstance(disabled, list) or not all(isinstance(k, int) and not isinstance(k, bool) for k in disabled):
            raise _refuse("disable_corrector", disabled, "a list of step indices")
        _refuse_nan_settings({**_UNIPC_DEFAULTS, **config})


def _check_steps(steps: Any) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise InvalidArgumentError(f"steps must be a positive integer, got {steps!r}")
    return steps


class _InOrder:
    """The step counter shared by both schedulers: step i must be the next one of this run."""

    timesteps: np.ndarray
    sigmas: np.ndarray
    init_noise_sigma = np.float32(1.0)
    _next = 0

    def scale(self, sample: np.ndarray, i: int) -> np.ndarray:
        """Flow matching feeds the latents unscaled."""
        return sample

    def _advance(self, i: int) -> None:
        if i != self._next or i >= len(self.timesteps):
            raise InvalidArgumentError(f"scheduler step {i} called out of order: expected step {self._next} of "
                                       f"{len(self.timesteps)}; build a new schedule for each run")
        self._next += 1


class FlowMatchEulerScheduler(_InOrder):
    """diffusers' FlowMatchEulerDiscreteScheduler(**config) after set_timesteps(steps)."""

    def __init__(self, config: dict[str, Any], steps: int) -> None:
        check_flow_config(config)
        c = {**_EULER_DEFAULTS, **config}
        n, shift = int(c["num_train_timesteps"]), float(c["shift"])
        steps = _check_steps(steps)
        # __init__: the shifted float32 training sigmas, whose ends set_timesteps spans (and shifts again)
        train = np.linspace(1, n, n, dtype=np.float32)[::-1] / n
        train = shift * train / (1 + (shift - 1) * train)
        sigma_max, sigma_min = float(train[0]), float(train[-1])
        sigmas = np.linspace(sigma_max * n, sigma_min * n, steps) / n  # float64, as set_timesteps
        sigmas = (shift * sigmas / (1 + (shift - 1) * sigmas)).astype(np.float32)
        self.timesteps = (sigmas * n).astype(np.float32)
        self.sigmas = np.concatenate([sigmas, np.zeros(1, np.float32)])

    def step(self, model_output: np.ndarray, i: int, sample: np.ndarray) -> np.ndarray:
        """x_{i+1} = x_i + (sigma_{i+1} - sigma_i) * v, in float32."""
        self._advance(i)
        dt = self.sigmas[i + 1] - self.sigmas[i]
        return (sample.astype(np.float32) + dt * model_output).astype(model_output.dtype)


def _rounded(fn: Any, x: np.float32) -> np.float32:
    """fn in float64, rounded to float32: the correctly rounded float32 result, which torch's CPU
    scalar log / expm1 give almost always. numpy's own float32 log / expm1 are a few ulps off now
    and then, and UniPC's b(h) recursion (dividing by h up to three times) turns one ulp in h
    into 1e-4 relative at 50 steps, order 3."""
    return np.float32(fn(np.float64(x)))


def _lambda(sigma: np.float32) -> np.float32:
    """log-SNR of a flow sigma: alpha = 1 - sigma (inf at sigma 0, as in diffusers)."""
    return _rounded(np.log, np.float32(1) - sigma) - _rounded(np.log, sigma)


class UniPCFlowScheduler(_InOrder):
    """diffusers' UniPCMultistepScheduler(**config) in flow mode after set_timesteps(steps)."""

    def __init__(self, config: dict[str, Any], steps: int) -> None:
        check_flow_config(config)
        c = {**_UNIPC_DEFAULTS, **config}
        n, shift = int(c["num_train_timesteps"]), float(c["flow_shift"])
        steps = _check_steps(steps)
        sigmas = np.linspace(1, 1 / n, steps + 1)[:-1]
        sigmas = shift * sigmas / (1 + (shift - 1) * sigmas)
        if np.fabs(sigmas[0] - 1) < 1e-6:  # diffusers keeps log(1 - sigma) finite on the first step
            sigmas[0] -= 1e-6
        # diffusers stores timesteps as int64 (truncated); the network is fed those values
        self.timesteps = (sigmas * n).astype(np.int64).astype(np.float32)
        last = 0.0 if c["final_sigmas_type"] == "zero" else sigmas[-1]
        self.sigmas = np.concatenate([sigmas, [last]]).astype(np.float32)
        self.order, self.bh1 = int(c["solver_order"]), c["solver_type"] == "bh1"
        self.lower_order_final = bool(c["lower_order_final"])
        self.disable_corrector = frozenset(c["disable_corrector"])
        self._x0_history: list[np.ndarray] = []  # data predictions, newest last
        self._last_sample: np.ndarray | None = None
        self._last_order = 0

    def _update(self, x: np.ndarray, i_from: int, i_to: int, order: int, d_new: np.ndarray | None) -> np.ndarray:
        """One UniP (d_new None) or UniC update of x from sigmas[i_from] to sigmas[i_to], using the
        history's newest `order` data predictions (m0 = the one at i_from); UniC adds d_new - m0."""
        sig_t, sig_s0 = self.sigmas[i_to], self.sigmas[i_from]
        one = np.float32(1)
        alpha_t = one - sig_t
        lam_s0 = _lambda(sig_s0)
        h = _lambda(sig_t) - lam_s0
        m0 = self._x0_history[-1]
        rks, d1s = [], []
        for k in range(1, order):
            rk = (_lambda(self.sigmas[i_from - k]) - lam_s0) / h
            rks.append(rk)
            d1s.append((self._x0_history[-(k + 1)] - m0) / rk)
        rks.append(one)
        hh = -h
        h_phi_1 = _rounded(np.expm1, hh)
        h_phi_k = h_phi_1 / hh - 1
        b_h = hh if self.bh1 else _rounded(np.expm1, hh)
        factorial, b = 1, []
        for k in range(1, order + 1):
            b.append(h_phi_k * np.float32(factorial) / b_h)
            factorial *= k + 1
            h_phi_k = h_phi_k / hh - np.float32(1 / factorial)
        rks_arr, b_arr = np.array(rks, np.float32), np.array(b, np.float32)
        r = np.stack([rks_arr ** (k - 1) for k in range(1, order + 1)])
        x_base = sig_t / sig_s0 * x - alpha_t * h_phi_1 * m0
        if d_new is None:  # predictor
            if not d1s:  # diffusers subtracts alpha_t * B(h) * 0 (NaN when B(h) is infinite: refused)
                return (x_base - alpha_t * b_h * 0).astype(x.dtype)
            rhos = np.array([0.5], np.float32) if order == 2 else np.linalg.solve(r[:-1, :-1], b_arr[:-1])
            return (x_base - alpha_t * b_h * np.einsum("k,k...->...", rhos, np.stack(d1s))).astype(x.dtype)
        rhos = np.array([0.5], np.float32) if order == 1 else np.linalg.solve(r, b_arr)
        res = np.einsum("k,k...->...", rhos[:-1], np.stack(d1s)) if d1s else 0
        return (x_base - alpha_t * b_h * (res + rhos[-1] * (d_new - m0))).astype(x.dtype)

    def step(self, model_output: np.ndarray, i: int, sample: np.ndarray) -> np.ndarray:
        """Correct step i's sample with its data prediction (UniC, from step 1 on), then predict
        step i + 1 (UniP) at order min(solver_order, steps taken + 1[, steps left])."""
        self._advance(i)
        x0 = sample - self.sigmas[i] * model_output
        # the step to sigma 0 has an infinite h (and sigma_min's last step h = 0): diffusers'
        # formulas still give a finite sample for the settings check_flow_config accepts
        with np.errstate(divide="ignore", invalid="ignore"):
            if i > 0 and i - 1 not in self.disable_corrector and self._last_sample is not None:
                sample = self._update(self._last_sample, i - 1, i, self._last_order, x0)
            self._x0_history = (self._x0_history + [x0])[-self.order:]
            order = min(self.order, len(self.timesteps) - i) if self.lower_order_final else self.order
            self._last_order = min(order, len(self._x0_history))
            self._last_sample = sample
            return self._update(sample, i, i + 1, self._last_order, None)


def flow_schedule(config: dict, steps: int) -> FlowMatchEulerScheduler | UniPCFlowScheduler:
    """The scheduler named by config["_class_name"] (a diffusers scheduler_config.json dict)."""
    check_flow_config(config)
    if config["_class_name"] == UNIPC:
        return UniPCFlowScheduler(config, steps)
    return FlowMatchEulerScheduler(config, steps)
