"""VLA policies: encoders, fusion backbone, action heads (``heads/``) and value head."""

from rlvla.policies.backbone import Inputs
from rlvla.policies.config import BackboneConfig, LanguageConfig, PolicyConfig, VisionConfig
from rlvla.policies.heads import available_heads, head_config
from rlvla.policies.policy import LEVELS, Act, CheckpointError, VLAPolicy, make_policy

__all__ = [
    "LEVELS", "Act", "BackboneConfig", "CheckpointError", "Inputs", "LanguageConfig", "PolicyConfig",
    "VLAPolicy", "VisionConfig", "available_heads", "head_config", "make_policy",
]  # fmt: skip
