"""Does the trunk's action readout say where the object is, inside the training box and beyond it?

    python benchmarks/readout_position_probe.py POLICY [TASK]

Encodes the first frame of 300 training layouts of TASK (default button-press-topdown-v3), fits a ridge regression
from the action readout ``z`` to the object's initial x-y, and scores it (R^2, mean absolute error) on 100 `id` and
100 `ood-position` validation layouts; then lists the eight ood-position layouts farthest outside the training
layouts' box with their true and predicted positions. A frozen trunk whose readout keeps the position beyond the
box leaves extrapolation to the head that RL trains.
"""

import sys

import numpy as np
import torch

from rlvla.envs import make_env
from rlvla.envs.pool import stack_obs
from rlvla.policies import VLAPolicy
torch.set_num_threads(2)
pol = VLAPolicy.from_pretrained(sys.argv[1]).eval()
task = sys.argv[2] if len(sys.argv) > 2 else 'button-press-topdown-v3'
def grab(split, seeds):
    e = make_env(task, split=split, chunk=pol.cfg.chunk, image_size=pol.cfg.image_size, cameras=tuple(pol.cfg.cameras))
    Z, X = [], []
    for s in seeds:
        obs, info = e.reset(seed=s)
        with torch.no_grad():
            Z.append(pol.rl_features(stack_obs([obs]))['z'][0].numpy())
        X.append(np.asarray(info["obj_pos"][:2]))
    e.close()
    return np.array(Z), np.array(X)
Ztr, Xtr = grab('id', range(0, 300))
Zid, Xid = grab('id', range(900000, 900100))
Zood, Xood = grab('ood-position', range(900000, 900100))
mu, sd = Ztr.mean(0), Ztr.std(0) + 1e-6
A = np.c_[(Ztr - mu) / sd, np.ones(len(Ztr))]
for lam in (1.0, 10.0):
    W = np.linalg.solve(A.T @ A + lam * np.eye(A.shape[1]), A.T @ Xtr)
    for name, Z, X in (('id-val', Zid, Xid), ('ood-pos', Zood, Xood)):
        P = np.c_[(Z - mu) / sd, np.ones(len(Z))] @ W
        r2 = 1 - ((P - X) ** 2).sum(0) / ((X - X.mean(0)) ** 2).sum(0)
        err = np.abs(P - X)
        print(f'lam {lam} {name}: R2 x {r2[0]:.3f} y {r2[1]:.3f}; mean abs err x {err[:,0].mean()*100:.2f} cm y {err[:,1].mean()*100:.2f} cm; '
              f'x range {X[:,0].min():.3f}..{X[:,0].max():.3f} y {X[:,1].min():.3f}..{X[:,1].max():.3f}')
# OOD error by how far outside the training box
lo, hi = Xtr.min(0), Xtr.max(0)
W = np.linalg.solve(A.T @ A + 1.0 * np.eye(A.shape[1]), A.T @ Xtr)
P = np.c_[(Zood - mu) / sd, np.ones(len(Zood))] @ W
out = np.maximum(lo - Xood, 0) + np.maximum(Xood - hi, 0)
for i in np.argsort(-out.max(1))[:8]:
    print('true', np.round(Xood[i], 3), 'pred', np.round(P[i], 3), 'outside by', np.round(out[i], 3))
