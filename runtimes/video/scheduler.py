"""diffusers' EulerDiscreteScheduler in numpy (no torch): timesteps, sigmas, scale and step.

Mirrors diffusers 0.42 `scheduling_euler_discrete.py` for the configurations SVD uses and the
common ones around it: beta schedules linear / scaled_linear / squaredcos_cap_v2 or trained
betas; timestep_spacing linspace / leading / trailing; interpolation linear / log_linear;
Karras sigmas (with the config's sigma_min / sigma_max); final sigma zero / sigma_min;
timestep_type discrete / continuous (continuous + v-prediction: t = 0.25 log sigma);
prediction types epsilon, v_prediction, sample; rescale_betas_zero_snr. Deterministic Euler
(s_churn = 0, as the SVD pipeline calls it). Exponential and beta sigmas are refused.

Arithmetic follows torch's dtypes: the training schedule and the sigmas are float32, Karras and
interpolation in float64 then cast, and `scale`/`step` in float32.

Example::

    scheduler = EulerScheduler(manifest.video.scheduler)
    schedule = scheduler.schedule(25)
    x = initial_noise * schedule.init_noise_sigma
    for i, t in enumerate(schedule.timesteps):
        model_in = schedule.scale(x, i); ...; x = schedule.step(model_out, i, x)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgekit.errors import InvalidArgumentError

_DEFAULTS: dict[str, Any] = {
    "num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear",
    "trained_betas": None, "prediction_type": "epsilon", "interpolation_type": "linear",
    "use_karras_sigmas": False, "use_exponential_sigmas": False, "use_beta_sigmas": False,
    "sigma_min": None, "sigma_max": None, "timestep_spacing": "linspace", "timestep_type": "discrete",
    "steps_offset": 0, "rescale_betas_zero_snr": False, "final_sigmas_type": "zero",
}


def _linspace32(start: float, end: float, steps: int) -> np.ndarray:
    return np.linspace(start, end, steps, dtype=np.float64).astype(np.float32)


def _cosine_betas(steps: int, max_beta: float = 0.999) -> np.ndarray:
    def alpha_bar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    return np.array([min(1 - alpha_bar((i + 1) / steps) / alpha_bar(i / steps), max_beta) for i in range(steps)],
                    dtype=np.float32)


def _rescale_zero_terminal_snr(betas: np.ndarray) -> np.ndarray:
    alphas_bar_sqrt = np.sqrt(np.cumprod(1.0 - betas, dtype=np.float32))
    first, last = alphas_bar_sqrt[0].copy(), alphas_bar_sqrt[-1].copy()
    alphas_bar_sqrt = (alphas_bar_sqrt - last) * (first / (first - last))
    alphas_bar = alphas_bar_sqrt ** 2
    alphas = np.concatenate([alphas_bar[:1], alphas_bar[1:] / alphas_bar[:-1]])
    return (1 - alphas).astype(np.float32)


@dataclass(frozen=True)
class Schedule:
    """One run's timesteps (what the UNet is fed, float32) and sigmas (len(timesteps) + 1)."""

    timesteps: np.ndarray
    sigmas: np.ndarray
    prediction_type: str
    init_noise_sigma: np.float32
    start_index: int = 0

    def sigma(self, i: int) -> np.float32:
        return self.sigmas[self.start_index + i]

    def scale(self, sample: np.ndarray, i: int) -> np.ndarray:
        """scale_model_input: sample / sqrt(sigma^2 + 1) at step i."""
        sigma = self.sigma(i)
        return (sample / np.sqrt(sigma * sigma + np.float32(1))).astype(np.float32)

    def step(self, model_output: np.ndarray, i: int, sample: np.ndarray) -> np.ndarray:
        """One deterministic Euler step from step i's sigma to the next one."""
        sigma = self.sigma(i)
        sample = sample.astype(np.float32)
        one = np.float32(1)
        if self.prediction_type in ("sample", "original_sample"):
            denoised = model_output
        elif self.prediction_type == "epsilon":
            denoised = sample - sigma * model_output
        else:  # v_prediction
            denoised = model_output * (-sigma / np.sqrt(sigma * sigma + one)) + sample / (sigma * sigma + one)
        derivative = (sample - denoised) / sigma
        dt = self.sigmas[self.start_index + i + 1] - sigma
        return (sample + derivative * dt).astype(np.float32)


class EulerScheduler:
    """Builds Schedules from a diffusers EulerDiscreteScheduler config (a dict)."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = {**_DEFAULTS, **{k: v for k, v in config.items() if not k.startswith("_")}}
        c = self.config
        if c["use_exponential_sigmas"] or c["use_beta_sigmas"]:
            raise InvalidArgumentError("exponential and beta sigmas are not supported by edgekit's Euler scheduler")
        n = int(c["num_train_timesteps"])
        if c["trained_betas"] is not None:
            betas = np.asarray(c["trained_betas"], dtype=np.float32)
        elif c["beta_schedule"] == "linear":
            betas = _linspace32(c["beta_start"], c["beta_end"], n)
        elif c["beta_schedule"] == "scaled_linear":
            betas = _linspace32(c["beta_start"] ** 0.5, c["beta_end"] ** 0.5, n) ** 2
        elif c["beta_schedule"] == "squaredcos_cap_v2":
            betas = _cosine_betas(n)
        else:
            raise InvalidArgumentError(f"beta_schedule {c['beta_schedule']!r} is not supported")
        if c["rescale_betas_zero_snr"]:
            betas = _rescale_zero_terminal_snr(betas)
        self.alphas_cumprod = np.cumprod((np.float32(1) - betas).astype(np.float32), dtype=np.float32)
        if c["rescale_betas_zero_snr"]:
            self.alphas_cumprod[-1] = 2.0 ** -24
        self.train_sigmas = np.sqrt((1 - self.alphas_cumprod) / self.alphas_cumprod).astype(np.float32)

    def _sigma_to_t(self, sigma: np.ndarray, log_sigmas: np.ndarray) -> np.ndarray:
        log_sigma = np.log(np.maximum(sigma, 1e-10))
        dists = log_sigma - log_sigmas[:, np.newaxis]
        low_idx = np.cumsum((dists >= 0), axis=0).argmax(axis=0).clip(max=log_sigmas.shape[0] - 2)
        high_idx = low_idx + 1
        low, high = log_sigmas[low_idx], log_sigmas[high_idx]
        w = np.clip((low - log_sigma) / (low - high), 0, 1)
        return ((1 - w) * low_idx + w * high_idx).reshape(sigma.shape)

    def schedule(self, steps: int) -> Schedule:
        """set_timesteps(steps) followed by the pipeline's first scale/step index lookup."""
        if not isinstance(steps, int) or steps < 1:
            raise InvalidArgumentError(f"steps must be a positive integer, got {steps!r}")
        c = self.config
        n = int(c["num_train_timesteps"])
        if c["timestep_spacing"] == "linspace":
            timesteps = np.linspace(0, n - 1, steps, dtype=np.float32)[::-1].copy()
        elif c["timestep_spacing"] == "leading":
            ratio = n // steps
            timesteps = (np.arange(0, steps) * ratio).round()[::-1].copy().astype(np.float32)
            timesteps += c["steps_offset"]
        elif c["timestep_spacing"] == "trailing":
            timesteps = np.arange(n, 0, -n / steps).round().copy().astype(np.float32) - 1
        else:
            raise InvalidArgumentError(f"timestep_spacing {c['timestep_spacing']!r} is not supported")
        sigmas = self.train_sigmas
        log_sigmas = np.log(sigmas)
        if c["interpolation_type"] == "linear":
            sigmas = np.interp(timesteps, np.arange(0, len(sigmas)), sigmas)
        elif c["interpolation_type"] == "log_linear":
            sigmas = np.exp(_linspace32(float(np.log(sigmas[-1])), float(np.log(sigmas[0])), steps + 1))
        else:
            raise InvalidArgumentError(f"interpolation_type {c['interpolation_type']!r} is not supported")
        if c["use_karras_sigmas"]:
            sigma_min = c["sigma_min"] if c["sigma_min"] is not None else float(sigmas[-1])
            sigma_max = c["sigma_max"] if c["sigma_max"] is not None else float(sigmas[0])
            ramp = np.linspace(0, 1, steps)
            rho = 7.0
            min_inv, max_inv = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
            sigmas = (max_inv + ramp * (min_inv - max_inv)) ** rho
            timesteps = np.array([self._sigma_to_t(np.asarray(s), log_sigmas) for s in sigmas])
        if c["final_sigmas_type"] == "sigma_min":
            last = float(np.sqrt((1 - self.alphas_cumprod[0]) / self.alphas_cumprod[0]))
        elif c["final_sigmas_type"] == "zero":
            last = 0.0
        else:
            raise InvalidArgumentError(f"final_sigmas_type {c['final_sigmas_type']!r} is not supported")
        sigmas = np.concatenate([sigmas, [last]]).astype(np.float32)
        if c["timestep_type"] == "continuous" and c["prediction_type"] == "v_prediction":
            timesteps = (np.float32(0.25) * np.log(sigmas[:-1])).astype(np.float32)
        else:
            timesteps = timesteps.astype(np.float32)
        if c["prediction_type"] not in ("epsilon", "v_prediction", "sample", "original_sample"):
            raise InvalidArgumentError(f"prediction_type {c['prediction_type']!r} is not supported")
        max_sigma = sigmas.max()
        init = max_sigma if c["timestep_spacing"] in ("linspace", "trailing") else np.sqrt(max_sigma ** 2 + 1)
        # diffusers finds the first timestep in the schedule; a repeated one starts at its 2nd index
        matches = np.nonzero(timesteps == timesteps[0])[0]
        start = int(matches[1] if len(matches) > 1 else matches[0])
        if start + len(timesteps) > len(sigmas) - 1:
            raise InvalidArgumentError(f"the scheduler cannot run {steps} steps (its first timestep repeats)")
        return Schedule(timesteps=timesteps, sigmas=sigmas, prediction_type=c["prediction_type"],
                        init_noise_sigma=np.float32(init), start_index=start)
