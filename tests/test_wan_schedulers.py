"""Wan's schedulers in numpy (runtimes/video/flow_schedulers.py) against diffusers 0.42, step by step.

Story: build diffusers' scheduler and ours from the same scheduler_config.json dict, feed both the
same seeded random model outputs (shaped like Wan latents) at every step, and compare the
timesteps exactly and every step's sample. Then: the Wan 2.1 config as saved is accepted and
picked by `_class_name`; every setting the numpy code does not implement is refused in one line.

Tolerance: 1e-5 of the sample's scale (max |sample|, at least 1). Both sides do the same float32
operations in the same order with correctly rounded log / expm1; what remains is last-ulp noise
from LAPACK's small solves and einsum's summation order (measured: under 4e-7 of the scale after
50 steps, order 3). A wrong coefficient, sigma or history slot moves samples by 1e-2 or more.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("diffusers")
import torch  # noqa: E402  (diffusers' own dependency)
from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler  # noqa: E402

from edgekit.errors import InvalidArgumentError  # noqa: E402
from edgekit.runtimes.video.flow_schedulers import (  # noqa: E402
    FLOW_SCHEDULERS,
    FlowMatchEulerScheduler,
    UniPCFlowScheduler,
    check_flow_config,
    flow_schedule,
)

WAN_LATENTS = (1, 16, 3, 4, 4)  # [B, C, frames, H, W]
TOLERANCE = 1e-5
# Order-3 UniPC solves a 3x3 float32 system per step and carries it 50 steps: torch's float32
# kernels (MKL) take different paths per CPU, so diffusers' own reference moves with the machine:
# 1.7e-5 of scale on an AMD EPYC (AVX-512), under 1e-5 on the Intel machines earlier runs used,
# with numpy 2.3 and 2.4 alike.
ORDER3_TOLERANCE = 5e-5
WAN21 = {"_class_name": "UniPCMultistepScheduler", "num_train_timesteps": 1000,
         "prediction_type": "flow_prediction", "use_flow_sigmas": True, "flow_shift": 3.0,
         "solver_order": 2, "solver_type": "bh2", "predict_x0": True, "lower_order_final": True}
_DIFFUSERS = {"UniPCMultistepScheduler": UniPCMultistepScheduler,
              "FlowMatchEulerDiscreteScheduler": FlowMatchEulerDiscreteScheduler}


def saved_config(config: dict) -> dict:
    """What scheduler/scheduler_config.json holds for `config`: every key diffusers writes."""
    scheduler = _DIFFUSERS[config["_class_name"]](**{k: v for k, v in config.items() if not k.startswith("_")})
    return json.loads(scheduler.to_json_string())


def unipc(**settings) -> dict:
    return {**WAN21, **settings}


def run_both(config: dict, steps: int, seed: int = 0, tolerance: float = TOLERANCE) -> float:
    """Step diffusers and ours on the same inputs; assert every step agrees; return the worst
    difference as a fraction of the sample's scale."""
    reference = _DIFFUSERS[config["_class_name"]].from_config(config)
    reference.set_timesteps(steps)
    reference.set_begin_index(0)
    ours = flow_schedule(config, steps)
    np.testing.assert_array_equal(ours.timesteps, reference.timesteps.numpy().astype(np.float32))
    assert ours.timesteps.dtype == np.float32 and ours.sigmas.dtype == np.float32
    np.testing.assert_array_equal(ours.sigmas, reference.sigmas.numpy())
    rng = np.random.default_rng(seed)
    sample = rng.standard_normal(WAN_LATENTS).astype(np.float32) * ours.init_noise_sigma
    expected = torch.from_numpy(sample.copy())
    worst = 0.0
    for i, t in enumerate(reference.timesteps):
        velocity = rng.standard_normal(WAN_LATENTS).astype(np.float32)
        assert ours.scale(sample, i) is sample
        expected = reference.step(torch.from_numpy(velocity), t, expected).prev_sample
        sample = ours.step(velocity, i, sample)
        want = expected.numpy()
        scale = max(1.0, float(np.abs(want).max()))
        assert np.isfinite(want).all(), "diffusers itself went non-finite: check_flow_config must refuse this"
        np.testing.assert_allclose(sample, want, rtol=0, atol=tolerance * scale, err_msg=f"step {i} of {steps}")
        assert sample.dtype == np.float32
        worst = max(worst, float(np.abs(sample - want).max()) / scale)
    return worst


# (solver_order, solver_type, lower_order_final, final_sigmas_type): every combination diffusers
# keeps finite. bh1 and non-lower-order final steps only exist with final sigma_min (see below).
UNIPC_SETTINGS = [
    (1, "bh2", True, "zero"), (2, "bh2", True, "zero"), (3, "bh2", True, "zero"), (1, "bh2", False, "zero"),
    (1, "bh1", True, "sigma_min"), (2, "bh1", True, "sigma_min"), (3, "bh1", True, "sigma_min"),
    (2, "bh1", False, "sigma_min"), (2, "bh2", False, "sigma_min"), (3, "bh2", True, "sigma_min"),
]


@pytest.mark.parametrize(("order", "solver_type", "lower_order_final", "final"), UNIPC_SETTINGS)
def test_unipc_matches_diffusers_step_by_step(order, solver_type, lower_order_final, final):
    for flow_shift in (3.0, 5.0):
        for steps in (1, 2, 4, 10, 50):
            config = saved_config(unipc(flow_shift=flow_shift, solver_order=order, solver_type=solver_type,
                                        lower_order_final=lower_order_final, final_sigmas_type=final))
            tolerance = ORDER3_TOLERANCE if order == 3 else TOLERANCE
            assert run_both(config, steps, seed=steps, tolerance=tolerance) <= tolerance


def test_unipc_trailing_spacing_and_disabled_corrector_match_diffusers():
    run_both(saved_config(unipc(timestep_spacing="trailing", disable_corrector=[0, 3])), 10)
    run_both(saved_config(unipc(num_train_timesteps=500, flow_shift=7.0, solver_order=3)), 20)


@pytest.mark.parametrize("shift", [1.0, 3.0, 7.0])
def test_flow_match_euler_matches_diffusers_step_by_step(shift):
    for steps in (1, 4, 50):
        config = saved_config({"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": shift})
        assert run_both(config, steps, seed=steps) <= TOLERANCE


def test_wan21_released_config_is_accepted_as_saved_and_runs():
    check_flow_config(WAN21)
    saved = saved_config(WAN21)
    assert {"beta_schedule", "thresholding", "final_sigmas_type", "_diffusers_version"} <= saved.keys()
    check_flow_config(saved)
    run_both(saved, 50)


def test_flow_schedule_picks_the_scheduler_by_class_name():
    assert FLOW_SCHEDULERS == ("UniPCMultistepScheduler", "FlowMatchEulerDiscreteScheduler")
    assert isinstance(flow_schedule(saved_config(WAN21), 4), UniPCFlowScheduler)
    euler = flow_schedule(saved_config({"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 5.0}), 4)
    assert isinstance(euler, FlowMatchEulerScheduler)
    for schedule in (flow_schedule(WAN21, 4), euler):
        assert schedule.init_noise_sigma == np.float32(1.0) and schedule.init_noise_sigma.dtype == np.float32
        assert len(schedule.sigmas) == 5 and schedule.sigmas[-1] == 0


EULER = {"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 3.0}
REFUSED = [
    ({"_class_name": "DDIMScheduler"}, "_class_name", "'DDIMScheduler'"),
    ({**WAN21, "_class_name": None}, "_class_name", "None"),
    (unipc(use_flow_sigmas=False), "use_flow_sigmas", "False"),
    (unipc(prediction_type="epsilon"), "prediction_type", "'epsilon'"),
    (unipc(predict_x0=False), "predict_x0", "False"),
    (unipc(use_karras_sigmas=True), "use_karras_sigmas", "True"),
    (unipc(use_exponential_sigmas=True), "use_exponential_sigmas", "True"),
    (unipc(use_beta_sigmas=True), "use_beta_sigmas", "True"),
    (unipc(thresholding=True), "thresholding", "True"),
    (unipc(use_dynamic_shifting=True), "use_dynamic_shifting", "True"),
    (unipc(shift_terminal=0.1), "shift_terminal", "0.1"),
    (unipc(solver_type="midpoint"), "solver_type", "'midpoint'"),
    (unipc(solver_order=4), "solver_order", "4"),
    (unipc(solver_order=0), "solver_order", "0"),
    (unipc(final_sigmas_type="one"), "final_sigmas_type", "'one'"),
    (unipc(timestep_spacing="karras"), "timestep_spacing", "'karras'"),
    (unipc(flow_shift=-1.0), "flow_shift", "-1.0"),
    (unipc(num_train_timesteps=0), "num_train_timesteps", "0"),
    (unipc(disable_corrector="all"), "disable_corrector", "'all'"),
    (unipc(solver_p="DPMSolverMultistepScheduler"), "solver_p", "'DPMSolverMultistepScheduler'"),
    (unipc(new_knob=1), "new_knob", "1"),
    # diffusers 0.42 itself returns NaN for these (test below), so they are refused, not matched
    (unipc(solver_type="bh1"), "solver_type", "'bh1'"),
    (unipc(lower_order_final=False), "lower_order_final", "False"),
    (unipc(lower_order_final=False, solver_order=3, final_sigmas_type="sigma_min"), "lower_order_final", "False"),
    ({**EULER, "use_dynamic_shifting": True}, "use_dynamic_shifting", "True"),
    ({**EULER, "stochastic_sampling": True}, "stochastic_sampling", "True"),
    ({**EULER, "invert_sigmas": True}, "invert_sigmas", "True"),
    ({**EULER, "shift_terminal": 0.1}, "shift_terminal", "0.1"),
    ({**EULER, "use_karras_sigmas": True}, "use_karras_sigmas", "True"),
    ({**EULER, "shift": 0}, "shift", "0"),
]


@pytest.mark.parametrize(("config", "key", "value"), REFUSED, ids=[f"{k}={v}" for _, k, v in REFUSED])
def test_check_flow_config_refuses_what_it_does_not_implement(config, key, value):
    with pytest.raises(InvalidArgumentError) as refused:
        check_flow_config(config)
    message = str(refused.value)
    assert f"{key}={value}" in message and "supported" in message and "\n" not in message
    with pytest.raises(InvalidArgumentError):
        flow_schedule(config, 4)


@pytest.mark.parametrize("settings", [
    {"solver_type": "bh1"}, {"lower_order_final": False},
    {"lower_order_final": False, "solver_order": 3, "final_sigmas_type": "sigma_min"},
])
def test_refused_unipc_settings_are_the_ones_diffusers_gets_nan_for(settings):
    """Why bh1 / lower_order_final=False are refused with the final zero sigma: diffusers' last
    step divides by an infinite h (sigma_min's last step: a zero h in an order-3 solve)."""
    reference = UniPCMultistepScheduler(**{k: v for k, v in unipc(**settings).items() if k != "_class_name"})
    reference.set_timesteps(4)
    rng = np.random.default_rng(0)
    sample = torch.from_numpy(rng.standard_normal(WAN_LATENTS).astype(np.float32))
    for t in reference.timesteps:
        sample = reference.step(torch.from_numpy(rng.standard_normal(WAN_LATENTS).astype(np.float32)), t,
                                sample).prev_sample
    assert not torch.isfinite(sample).all()


def test_steps_out_of_order_and_bad_step_counts_are_refused():
    schedule = flow_schedule(WAN21, 3)
    x = np.zeros(WAN_LATENTS, np.float32)
    with pytest.raises(InvalidArgumentError, match="out of order"):
        schedule.step(x, 1, x)
    for i in range(3):
        x = schedule.step(np.ones_like(x), i, x)
    with pytest.raises(InvalidArgumentError, match="out of order"):
        schedule.step(x, 3, x)
    with pytest.raises(InvalidArgumentError, match="out of order"):
        schedule.step(x, 0, x)  # a finished run is not restarted: one schedule per run
    for steps in (0, -2, 2.5, True):
        with pytest.raises(InvalidArgumentError, match="steps must be a positive integer"):
            flow_schedule(EULER, steps)
