"""Learned dynamics as environments: a latent world model (:mod:`.model`) and the imagined envs that run it behind
the simulators' face (:mod:`.env`): ``make_env("wm/<task>", world_model=DIR)`` for one env, and
:class:`~rlvla.worldmodels.env.ImaginedPool` for batched rollouts (online RL in imagination)."""

from rlvla.worldmodels.model import WorldModel, WorldModelConfig, WorldModelTrainConfig, WorldModelTrainer, psnr, rollout_loss

__all__ = ["WorldModel", "WorldModelConfig", "WorldModelTrainConfig", "WorldModelTrainer", "psnr", "rollout_loss"]
