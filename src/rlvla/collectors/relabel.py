"""Rewards that the simulator does not give: a learned reward model and exploration bonuses, added to a collected
:class:`~rlvla.collectors.rollout.Rollout`'s per-decision rewards before the update.

Each decision is scored on the observation it led to (:meth:`Rollout.next_observations`):

- a ``success`` reward model pays ``reward_weight`` once per episode, at the first decision whose next
  observation it scores above ``reward_threshold``; for a group method (no per-decision rewards) the episode's
  outcome score becomes 1 where the model called a success, else 0 (a progress or preference model: the episode's
  highest score);
- a ``progress`` or ``preference`` model is a potential: ``reward_weight * (gamma * phi(s') - phi(s))``
  (``phi(s') = 0`` after a termination), so it cannot change which policy is optimal for the rest of the reward;
- ``rnd`` / ``count`` bonuses on the policy's action readout of the next observation, weighted by
  ``bonus_coef`` annealed over ``bonus_anneal`` iterations.

Logged every iteration: the mean of each part, the bonus's share of the total reward magnitude, and for a success
model how often it says success (``reward/model_success``) where the simulator says failure
(``reward/false_success``: reward hacking, measured). A false-success rate that rises above its first value by
more than 0.1 (and above 0.2) prints a warning. A non-finite predicted reward stops the run naming the iteration.
"""

from __future__ import annotations

import sys

import torch

from rlvla.data.schema import IMAGE_PREFIX
from rlvla.errors import NonFiniteLossError
from rlvla.rewards.bonus import RND, SimHashCount, annealed


class RewardRelabeller:
    def __init__(self, policy, tasks, cfg, seed: int = 0) -> None:
        self.policy, self.cfg = policy, cfg
        self.model = None
        self.first_false: float | None = None
        self.warned = False
        if getattr(cfg, "reward", ""):
            from rlvla.rewards.models import RewardModel

            self.model = RewardModel.from_pretrained(cfg.reward).to(policy.device)
            self.model.check_compatible(tasks, policy.cfg.cameras, policy.cfg.image_size)
        self.group = not hasattr(cfg, "success_bonus")  # group methods score whole episodes
        kind = getattr(cfg, "bonus", "")
        dim = policy.backbone.dim
        self.bonus = RND(dim, seed=seed) if kind == "rnd" else SimHashCount(dim, seed=seed) if kind == "count" else None

    @property
    def active(self) -> bool:
        return self.model is not None or self.bonus is not None

    def _scores(self, obs) -> torch.Tensor:
        cams = {c: obs[IMAGE_PREFIX + c] for c in self.model.cfg.cameras}
        return self.model.score(cams, list(obs["task"]))

    def __call__(self, ro, iteration: int) -> dict:
        """Add the learned reward and the bonus to ``ro.batch["next.reward"]`` in place; -> metrics."""
        if not self.active or len(ro) == 0:
            return {}
        b, cfg = ro.batch, self.cfg
        task_r = b["next.reward"].double()
        total = task_r.clone()
        nxt = ro.next_observations()
        m: dict = {"reward/task_mean": float(task_r.mean())}
        ep = b["episode_index"]
        if self.model is not None:
            s_next = self._scores(nxt).double()
            if not torch.isfinite(s_next).all():
                raise NonFiniteLossError(f"the reward model predicted a non-finite reward at iteration {iteration}")
            if self.group:
                self._score_episodes(ro, s_next, m, iteration)
            elif self.model.cfg.kind == "success":
                above = s_next > cfg.reward_threshold
                learned = torch.zeros_like(total)
                said = {}
                for i in torch.nonzero(above).flatten().tolist():  # the first decision per episode above the threshold
                    e = int(ep[i])
                    if e not in said:
                        said[e] = i
                        learned[i] = cfg.reward_weight
                self._false_successes(ro, set(said), m, iteration)
                m["reward/model_mean"] = float(s_next.mean())
            else:
                s_now = self._scores(b).double()
                if not torch.isfinite(s_now).all():
                    raise NonFiniteLossError(f"the reward model predicted a non-finite reward at iteration {iteration}")
                term = b["next.terminated"].double()
                learned = cfg.reward_weight * (cfg.gamma * s_next * (1 - term) - s_now)
                m["reward/model_mean"] = float(s_next.mean())
            if not self.group:
                total = total + learned
                m["reward/learned_mean"] = float(learned.mean())
        if self.bonus is not None:
            with torch.no_grad():
                was = self.policy.training
                self.policy.eval()
                feats = torch.cat([self.policy.encode(_rows(nxt, k, 256))[0] for k in range(0, len(ro), 256)]).cpu()
                self.policy.train(was)
            raw = self.bonus.bonus(feats).double()
            if isinstance(self.bonus, RND):
                m["reward/rnd_loss"] = self.bonus.update(feats)
            coef = annealed(cfg.bonus_coef, iteration, cfg.bonus_anneal)
            bonus = coef * raw
            total = total + bonus
            m.update({"reward/bonus_mean": float(bonus.mean()), "reward/bonus_coef": coef,
                      "reward/bonus_share": float(bonus.abs().sum() / (total - bonus).abs().add(bonus.abs()).sum().clamp_min(1e-12))})  # fmt: skip
        if not torch.isfinite(total).all():
            raise NonFiniteLossError(f"non-finite rewards after the learned reward / bonus at iteration {iteration}")
        b["next.reward"] = total.float()
        return m

    def _score_episodes(self, ro, s_next: torch.Tensor, m: dict, iteration: int) -> None:
        """Group methods: each episode's outcome score from the model (see the module docstring)."""
        ep = ro.batch["episode_index"]
        n = len(ro.episodes)
        best = torch.full((n,), -float("inf"), dtype=torch.float64).scatter_reduce(0, ep, s_next, "amax")
        if self.model.cfg.kind == "success":
            score = (best > self.cfg.reward_threshold).double()
            self._false_successes(ro, set(torch.nonzero(score > 0).flatten().tolist()), m, iteration)
        else:
            score = best
        ro.batch["score"] = score[ep].float()
        m.update({"reward/model_mean": float(s_next.mean()), "reward/score_mean": float(score.mean())})

    def _false_successes(self, ro, said: set, m: dict, iteration: int) -> None:
        fails = [e for e, d in enumerate(ro.episodes) if not d["success"]]
        false = sum(1 for e in fails if e in said) / len(fails) if fails else 0.0
        m.update({"reward/model_success": len(said) / max(1, len(ro.episodes)), "reward/false_success": false})
        self._watch(false, iteration)

    def _watch(self, false: float, iteration: int) -> None:
        if self.first_false is None:
            self.first_false = false
            return
        if false > max(self.first_false + 0.1, 0.2) and not self.warned:
            self.warned = True
            print(f"rlvla: warning: the reward model's false-success rate rose from {self.first_false:.2f} to {false:.2f} at "
                  f"iteration {iteration}: the policy may be exploiting it (reward hacking); check its rollouts", file=sys.stderr)  # fmt: skip

    def state(self) -> tuple[dict, dict]:
        meta = {"reward_first_false": self.first_false, "reward_warned": self.warned}
        if self.bonus is None:
            return {}, meta
        t, bm = self.bonus.state()
        return {f"bonus.{k}": v for k, v in t.items()}, {**meta, **bm}

    def load_state(self, tensors: dict, meta: dict) -> None:
        self.first_false, self.warned = meta.get("reward_first_false"), bool(meta.get("reward_warned", False))
        if self.bonus is not None:
            self.bonus.load_state({k[6:]: v for k, v in tensors.items() if k.startswith("bonus.")}, meta)


def _rows(obs, k: int, n: int):
    from rlvla.data.schema import Batch

    return Batch({key: (v[k : k + n]) for key, v in obs.items()})
