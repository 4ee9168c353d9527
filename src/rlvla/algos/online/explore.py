"""Exploration during online RL: one knob per head, set at the start of a run and recorded in the checkpoint.

How much a policy explores decides what RL can learn: a policy that samples almost its deterministic action
gives every group the same outcome and every update a vanishing trust region. Each head has its own knob;
``algo.explore_noise`` sets it (0 keeps the head's own), and ``rollout/explore_std`` measures the result in
action units every iteration (the RMS distance of the sampled actions from the deterministic action for the same
input and starting noise):

===========  ====================================================================  =====================
head         ``explore_noise`` sets                                                 also
===========  ====================================================================  =====================
token        the sampling temperature (RL4VLA / SimpleVLA-RL sample at 1.5-1.6);    ``explore_steps``,
             with ``explore_steps=output``: the std of a Gaussian kernel around       ``explore_temperature``
             each greedy token, tokens drawn given the greedy prefix
flow, sde    ``noise_level`` a of sigma_t = a sqrt(t / (1 - t)); with               ``explore_steps``
             ``explore_steps=output``: the std around the ODE's action
flow, noise  the learned noise's upper bound (lower bound: half of it)              ``explore_steps``
diffusion    the std of every stochastic denoising step around the DDIM path        ``explore_steps``
             (eta 0, ``min_std`` = noise: DPPO's exploration floor as the std);
             with ``explore_steps=output``: the std around the DDIM action
gaussian     the std of the pre-squash Gaussian (log-std reset, floor at half)
===========  ====================================================================  =====================

``explore_steps`` (chain heads): ``one`` stochastic denoising step per decision, ``all`` of them, or ``output``
(the deterministic sampler's action plus Gaussian noise, given the stored starting noise: an exact likelihood
through the whole chain; see :class:`~rlvla.policies.heads.base.ChainHead`); ``denoise_steps`` changes the number of denoising steps (RLinf
uses 5 on MetaWorld). Deterministic evaluation ignores the noise settings (ODE, DDIM, argmax, mean).
"""

from __future__ import annotations

import dataclasses
import math

RL_EXPLORATION = {"noise": 0.15, "steps_mode": "output", "denoise_steps": 5}
"""The quickstart RL recipe's exploration (flow head: five denoising steps, the ODE action plus Gaussian noise of
std 0.15): the policy as its RL rollouts run it, also what ``rlvla bench imagined`` rolls out."""


def exploration_config(policy_cfg, noise: float = 0.0, steps_mode: str = "", denoise_steps: int = 0,
                       temperature: float = 0.0):  # fmt: skip
    """A copy of ``policy_cfg`` with the head's exploration settings changed (the policy is rebuilt from it)."""
    head = policy_cfg.head
    name = head.name
    changes: dict = {}
    if noise < 0 or temperature < 0:
        raise ValueError(f"explore_noise and explore_temperature must be >= 0, got {noise}, {temperature}")
    if temperature > 0:
        if name != "token":
            raise ValueError(f"explore_temperature applies to the token head, not {name!r}; leave it unset")
        changes["temperature"] = temperature
    if name == "token" and steps_mode:
        if steps_mode != "output":
            raise ValueError(f"explore_steps={steps_mode} applies to flow and diffusion heads; the token head takes output")
        if noise <= 0:
            raise ValueError("explore_steps=output on the token head needs explore_noise > 0 (the kernel's std)")
        changes["kernel"] = noise
        steps_mode, noise = "", 0.0  # consumed: the token head has no denoising steps
    output = steps_mode == "output" or (not steps_mode and getattr(head, "stochastic", "") == "output")
    if noise > 0:
        if output and name in ("flow", "diffusion"):
            changes["output_std"] = noise
        elif name == "token" and getattr(head, "kernel", 0.0) > 0:
            changes["kernel"] = noise  # the policy already explores locally: the knob is the kernel
        elif name == "token":
            changes["temperature"] = noise
        elif name == "flow" and head.logprob == "sde":
            changes["noise_level"] = noise
        elif name == "flow":
            changes.update(noise_min=noise / 2, noise_max=noise)
        elif name == "diffusion":
            changes.update(min_std=noise, eta=0.0)  # with eta 1 the posterior std at early steps swamps the knob
        elif name == "gaussian":
            changes.update(init_std=noise, min_std=noise / 2)
        else:
            raise ValueError(f"explore_noise has no meaning for the {name!r} head")
    if steps_mode or denoise_steps:
        if name not in ("flow", "diffusion"):
            raise ValueError(f"explore_steps / denoise_steps apply to flow and diffusion heads, not {name!r}; leave them unset")
        if steps_mode:
            changes["stochastic"] = steps_mode
        if denoise_steps:
            changes["steps"] = denoise_steps
    if not changes:
        return policy_cfg
    try:
        new_head = dataclasses.replace(head, **changes)
    except ValueError as e:
        raise ValueError(f"exploration settings invalid for the {name} head: {e}") from None
    return dataclasses.replace(policy_cfg, head=new_head)


def with_exploration(policy, noise: float = 0.0, steps_mode: str = "", denoise_steps: int = 0, temperature: float = 0.0):
    """``policy`` itself when the settings change nothing, else the same weights in a policy rebuilt from
    :func:`exploration_config` (same class, same device), with the knob's weight-level part applied
    (:func:`apply_exploration_weights`): the policy an RL run with these settings starts from."""
    cfg = exploration_config(policy.cfg, noise, steps_mode, denoise_steps, temperature)
    if cfg is policy.cfg:
        return policy
    weights = policy.state_dict()
    device = next(iter(weights.values())).device if weights else None
    new = type(policy)(cfg)
    if device is not None:
        new = new.to(device)
    new.load_state_dict(weights)
    apply_exploration_weights(new, noise)
    return new


def apply_exploration_weights(policy, noise: float) -> None:
    """Weight-level part of the knob: the Gaussian head's log-std is reset to ``log(noise)`` (call after loading the
    initial weights, not on resume)."""
    if noise > 0 and getattr(policy.cfg.head, "name", None) == "gaussian":
        import torch

        with torch.no_grad():
            policy.head.log_std.fill_(math.log(noise))
