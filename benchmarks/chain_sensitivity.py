"""How far a small change of a chain head's weights moves its deterministic action.

    python benchmarks/chain_sensitivity.py DATASET POLICY [POLICY ...]

For each policy (flow or diffusion head), 256 frames of DATASET are encoded, the deterministic sampler is run from
fixed starting noise, every head weight is moved by a random direction of relative size r (r = 1e-3, 3e-3, 1e-2; 4
directions), and the change of every action element is summarised: median, 99th percentile and the fraction above
0.15 (the quickstart's exploration std). For a diffusion head it also prints, per sampling step, the fraction of
elements whose clean-action estimate is clipped to +-1. An RL update is a small weight change: a heavy tail here is
a few samples whose action (and log-prob under output-mode exploration) jumps, which the KL stop then sees.
"""

import sys

import numpy as np
import torch

from rlvla.data.chunks import ChunkDataset
from rlvla.data.lerobot import LeRobotDataset
from rlvla.policies import VLAPolicy
from rlvla.policies.heads.diffusion import clean_estimate

N, RELATIVE, DIRECTIONS = 256, (1e-3, 3e-3, 1e-2), 4


def moved(head, z, x0, det, rel: float) -> torch.Tensor:
    params = list(head.parameters())
    saved = [q.detach().clone() for q in params]
    out = []
    for rep in range(DIRECTIONS):
        g = torch.Generator().manual_seed(rep)
        for q, s in zip(params, saved):
            d = torch.randn(s.shape, generator=g)
            q.copy_(s + rel * d * s.norm() / d.norm())
        out.append((head._deterministic_path(z, x0) - det).abs().flatten())
        for q, s in zip(params, saved):
            q.copy_(s)
    return torch.cat(out)


def clipped_per_step(head, z, x0) -> list[float]:
    x, frac = x0, []
    for i in range(head.cfg.steps):
        idx = torch.full((len(z),), i)
        out = head._eps(x, head.timesteps[idx], z)
        est = clean_estimate(x, out, head.ab_t[i], head.cfg.prediction)
        frac.append(float((est.abs() > 1).float().mean()))
        x = head._step_moments(x, idx, z, eps=out, eta=0.0)[0]
    return frac


@torch.no_grad()
def main(dataset: str, policies: list[str]) -> None:
    torch.set_num_threads(1)
    ds = LeRobotDataset(dataset)
    for path in policies:
        p = VLAPolicy.from_pretrained(path).eval()
        data = ChunkDataset(ds, p.cfg.chunk, p.cfg.cameras, 0, image_size=p.cfg.image_size)
        batch = data.batch(np.random.default_rng(0).choice(len(data), N, replace=False))
        z, _ = p.encode(batch)
        x0 = torch.randn(N, p.cfg.chunk, p.cfg.action_dim, generator=torch.Generator().manual_seed(0))
        det = p.head._deterministic_path(z, x0)
        head = p.cfg.head.name + (f" ({p.cfg.head.prediction})" if p.cfg.head.name == "diffusion" else "")
        print(f"{path}: {head} head, {p.head.cfg.steps} sampling steps")
        for rel in RELATIVE:
            da = moved(p.head, z, x0, det, rel)
            print(f"  r = {rel:g}: |change| median {float(da.median()):.4f}, 99th percentile {float(da.quantile(0.99)):.4f}, "
                  f"> 0.15 {float((da > 0.15).float().mean()):.4f}")  # fmt: skip
        if p.cfg.head.name == "diffusion":
            print("  clean-action estimate clipped, per step: " + " ".join(f"{f:.2f}" for f in clipped_per_step(p.head, z, x0)))


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2:])
