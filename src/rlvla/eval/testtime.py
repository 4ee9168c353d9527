"""Test-time methods: improve a frozen policy at deployment (``rlvla eval CKPT --test-time METHOD``).

Each method is a *selector* the evaluator calls once per decision for all running envs::

    sel = make_selector(policy, TestTimeConfig(method="vgps", critic=...))
    sel.begin(env_id)                                  # a new episode starts in env_id
    actions = sel.act(batch, ids, pool)                # (B, K, A) numpy, one chunk per env of ``ids``

========  =====================================================================================================
none      the policy's deterministic chunk (the base every method is compared with)
vgps      value-guided policy steering (V-GPS, Nakamoto et al. 2024): N chunks sampled from the policy, scored
          by a separately trained Q ensemble (``critic``: a checkpoint trained by iql / cql / calql, its own
          trunk); argmax, or a softmax draw at ``temperature``
bestofn   best-of-N with the policy's own value head (Hume style): the checkpoint's Q ensemble scores N of its
          own samples from one trunk pass (needs a checkpoint trained with a critic)
mcts      tree search over chunks (VLAPS style): the policy proposes N children per node, the simulator is
          branched from saved states (``branch``), leaves are scored by success (1) or the critic's V(s), PUCT
          selection; the most-visited root child is executed
retry     progress-monitoring retries (BGR style): a value estimate V(s) tracks progress; when it has not risen by
          ``stall_tol`` over ``stall_window`` decisions, the next decisions are resampled (N candidates, best by Q
          when a critic is given, else a random draw) instead of repeating the stalled deterministic choice
========  =====================================================================================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

METHODS = ("none", "vgps", "bestofn", "mcts", "retry")


@dataclass
class TestTimeConfig:
    __test__ = False  # not a pytest class

    method: str = "none"
    samples: int = 8
    """Candidate chunks per decision (vgps, bestofn, retry) or children per node (mcts)."""
    temperature: float = 0.0
    """vgps / bestofn: 0 = argmax of Q, > 0 = sample from softmax(Q / temperature)."""
    critic: str = ""
    """vgps (required), mcts and retry (optional): a checkpoint with a Q ensemble and value head."""
    simulations: int = 8
    depth: int = 2
    c_puct: float = 1.0
    gamma: float = 0.99
    """mcts: per-step discount of the backed-up values (a chunk of K steps: gamma^K)."""
    stall_window: int = 4
    stall_tol: float = 0.01
    retry_decisions: int = 2
    """retry: decisions resampled after a stall is detected."""

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown test-time method {self.method!r}; valid: {', '.join(METHODS)}")
        if self.samples < 1 or self.simulations < 1 or self.depth < 1 or self.stall_window < 1 or self.retry_decisions < 1:
            raise ValueError("samples, simulations, depth, stall_window and retry_decisions must be >= 1")
        if self.temperature < 0 or self.c_puct < 0 or not 0 < self.gamma <= 1:
            raise ValueError("temperature and c_puct must be >= 0 and gamma in (0, 1]")
        if self.method == "vgps" and not self.critic:
            raise ValueError("vgps needs --critic CHECKPOINT (a run trained with algo=iql, cql or calql)")


def load_critic(path):
    from rlvla.checkpoints import resolve_checkpoint
    from rlvla.policies import VLAPolicy

    critic = VLAPolicy.from_pretrained(resolve_checkpoint(path)).eval()
    if critic.q_head is None:
        raise ValueError(f"{path} has no Q ensemble (policy.critic = 0); train a critic with algo=iql, cql or calql")
    return critic


def _repeat(batch: dict, n: int) -> dict:
    out = {}
    for k, v in batch.items():
        if k == "instruction":
            out[k] = [s for s in v for _ in range(n)]
        else:
            out[k] = np.repeat(np.asarray(v), n, axis=0)
    return out


class Selector:
    """The base: the policy's deterministic chunk."""

    name = "none"
    uses_pool = False  # True: act() steps or branches the env pool itself (search), so no step may be in flight

    def __init__(self, policy, cfg: TestTimeConfig) -> None:
        self.policy, self.cfg = policy, cfg
        self.stats = {"decisions": 0}

    def begin(self, env_id: int) -> None:
        pass

    deterministic = True

    def act(self, batch: dict, ids: list[int], pool=None) -> np.ndarray:
        self.stats["decisions"] += len(ids)
        return self.policy.act(batch, deterministic=self.deterministic, with_log_prob=False).actions.cpu().numpy()

    def _judge(self):
        """The value estimate V(s): the critic's, else the policy's own when it was trained with a critic (its value
        head is then trained), else None (an SFT policy's value head is untrained)."""
        if getattr(self, "critic", None) is not None:
            return self.critic
        return self.policy if self.policy.cfg.value_target else None

    def _sample(self, batch: dict, n: int):
        """N stochastic chunks per observation: (B, N, K, A) tensor."""
        b = len(batch["instruction"])
        a = self.policy.act(_repeat(batch, n), deterministic=False, with_log_prob=False).actions
        return a.reshape(b, n, *a.shape[1:])

    def _choose(self, q: torch.Tensor) -> torch.Tensor:
        """q: (B, N) -> chosen index per row."""
        if self.cfg.temperature > 0:
            return torch.multinomial(torch.softmax(q / self.cfg.temperature, -1), 1)[:, 0]
        return q.argmax(-1)


def _q(critic, batch: dict, chunks: torch.Tensor) -> torch.Tensor:
    """min over the ensemble of Q(s, chunk) for chunks (B, N, K, A) -> (B, N)."""
    b, n = chunks.shape[:2]
    _, zv = critic.encode(batch)
    return critic.q_values(zv.repeat_interleave(n, 0), chunks.flatten(0, 1)).min(0).values.reshape(b, n)


class VGPS(Selector):
    name = "vgps"

    def __init__(self, policy, cfg: TestTimeConfig) -> None:
        super().__init__(policy, cfg)
        self.critic = load_critic(cfg.critic)

    @torch.no_grad()
    def act(self, batch, ids, pool=None):
        self.stats["decisions"] += len(ids)
        cand = self._sample(batch, self.cfg.samples)
        pick = self._choose(_q(self.critic, batch, cand))
        return cand[torch.arange(len(pick)), pick].cpu().numpy()


class BestOfN(Selector):
    name = "bestofn"

    def __init__(self, policy, cfg: TestTimeConfig) -> None:
        super().__init__(policy, cfg)
        if policy.q_head is None:
            raise ValueError("bestofn scores candidates with the checkpoint's own Q ensemble, and this one has none; "
                             "use a checkpoint trained with algo=iql, cql or calql, or vgps with --critic")  # fmt: skip

    @torch.no_grad()
    def act(self, batch, ids, pool=None):
        self.stats["decisions"] += len(ids)
        p, n = self.policy, self.cfg.samples
        z, zv = p.encode(batch)  # one trunk pass for sampling and scoring
        a, _, _ = p.head.sample(z.repeat_interleave(n, 0), with_log_prob=False)
        q = p.q_values(zv.repeat_interleave(n, 0), a).min(0).values.reshape(-1, n)
        pick = self._choose(q)
        return a.reshape(-1, n, *a.shape[1:])[torch.arange(len(pick)), pick].cpu().numpy()


class Retry(Selector):
    name = "retry"

    def __init__(self, policy, cfg: TestTimeConfig) -> None:
        super().__init__(policy, cfg)
        self.critic = load_critic(cfg.critic) if cfg.critic else None
        self.history: dict[int, list[float]] = {}
        self.left: dict[int, int] = {}
        self.stats.update(retries=0, resampled=0)
        if self._judge() is None:
            raise ValueError("retry needs a progress estimate: pass --critic CHECKPOINT, or use a checkpoint whose value head "
                             "was trained (an offline run: awr, iql, cql, calql, recap, arfm)")  # fmt: skip

    def begin(self, env_id: int) -> None:
        self.history[env_id], self.left[env_id] = [], 0

    @torch.no_grad()
    def act(self, batch, ids, pool=None):
        self.stats["decisions"] += len(ids)
        c = self.cfg
        v = self._judge().value(batch).cpu().numpy()
        out = self.policy.act(batch, deterministic=True, with_log_prob=False).actions.clone()
        redo = []
        for j, i in enumerate(ids):
            h = self.history.setdefault(i, [])
            h.append(float(v[j]))
            if self.left.get(i, 0) == 0 and len(h) > c.stall_window and max(h[-c.stall_window:]) - h[-c.stall_window - 1] < c.stall_tol:
                self.left[i] = c.retry_decisions
                self.stats["retries"] += 1
                h.clear()  # judge progress afresh after the retry
            if self.left.get(i, 0) > 0:
                self.left[i] -= 1
                redo.append(j)
        if redo:
            self.stats["resampled"] += len(redo)
            sub = {k: ([x[j] for j in redo] if k == "instruction" else np.asarray(x)[redo]) for k, x in batch.items()}
            cand = self._sample(sub, c.samples)
            if self.critic is not None:
                pick = self._choose(_q(self.critic, sub, cand))
            else:
                pick = torch.zeros(len(redo), dtype=torch.long)  # a random draw (the first of N i.i.d. samples)
            out[redo] = cand[torch.arange(len(redo)), pick]
        return out.cpu().numpy()


class _Node:
    __slots__ = ("chunk", "prior", "state", "obs", "visits", "value_sum", "children", "terminal", "leaf_value")

    def __init__(self, chunk, prior: float) -> None:
        self.chunk, self.prior = chunk, prior
        self.state = self.obs = self.children = None
        self.visits, self.value_sum, self.terminal, self.leaf_value = 0, 0.0, False, 0.0

    def q(self) -> float:
        return self.value_sum / self.visits if self.visits else 0.0


class MCTS(Selector):
    name = "mcts"
    uses_pool = True

    def __init__(self, policy, cfg: TestTimeConfig) -> None:
        super().__init__(policy, cfg)
        self.critic = load_critic(cfg.critic) if cfg.critic else None
        self.stats.update(simulated_chunks=0)

    def _children(self, obs_list: list[dict]) -> list[list[_Node]]:
        """N policy samples (the first is the deterministic chunk) per observation, uniform prior."""
        from rlvla.envs.pool import stack_obs

        batch = stack_obs(obs_list)
        n = self.cfg.samples
        det = self.policy.act(batch, deterministic=True, with_log_prob=False).actions.cpu().numpy()
        rnd = self._sample(batch, n - 1).cpu().numpy() if n > 1 else np.zeros((len(obs_list), 0, *det.shape[1:]))
        return [[_Node(det[b], 1.0 / n)] + [_Node(rnd[b, k], 1.0 / n) for k in range(n - 1)] for b in range(len(obs_list))]

    def _values(self, obs_list: list[dict]) -> np.ndarray:
        from rlvla.envs.pool import stack_obs

        judge = self._judge()
        if judge is None:  # no value estimate: only reaching success counts
            return np.zeros(len(obs_list))
        return judge.value(stack_obs(obs_list)).cpu().numpy()

    def _select(self, root: _Node) -> list[_Node]:
        path, node = [root], root
        while node.children is not None and not node.terminal:
            total = math.sqrt(max(node.visits, 1))
            node = max(node.children, key=lambda ch: ch.q() + self.cfg.c_puct * ch.prior * total / (1 + ch.visits))
            path.append(node)
            if node.state is None:
                break
        return path

    @torch.no_grad()
    def act(self, batch, ids, pool=None):
        if pool is None:
            raise ValueError("mcts needs the simulator (an EnvPool) to branch from saved states")
        self.stats["decisions"] += len(ids)
        c = self.cfg
        disc = c.gamma ** self.policy.cfg.chunk
        states = pool.call("get_sim_state", {i: () for i in ids})
        roots = {}
        obs0 = [{k: v[j] for k, v in batch.items()} for j in range(len(ids))]
        for j, (i, kids) in enumerate(zip(ids, self._children(obs0))):
            r = _Node(None, 1.0)
            r.state, r.obs, r.children, r.visits = states[i], obs0[j], kids, 1
            roots[i] = r
        for _ in range(c.simulations):
            paths = {i: self._select(roots[i]) for i in ids}
            todo = {i: p for i, p in paths.items() if p[-1].state is None}
            if todo:
                one = self.policy.cfg.chunk == 1  # such envs take one action, not a (1, A) chunk
                res = pool.call("branch", {i: (p[-2].state, p[-1].chunk[0] if one else p[-1].chunk) for i, p in todo.items()})
                self.stats["simulated_chunks"] += len(todo)
                expand = []
                for i, p in todo.items():
                    ob, _, term, trunc, info, st = res[i]
                    leaf = p[-1]
                    leaf.state, leaf.obs = st, ob
                    leaf.terminal = bool(term or trunc)
                    if info["success"]:
                        leaf.leaf_value = 1.0
                    elif leaf.terminal:
                        leaf.leaf_value = 0.0
                    else:
                        expand.append(i)
                if expand:
                    vals = self._values([todo[i][-1].obs for i in expand])
                    deep = [i for i in expand if len(todo[i]) - 1 < c.depth]
                    kids = self._children([todo[i][-1].obs for i in deep]) if deep else []
                    for k, i in enumerate(expand):
                        todo[i][-1].leaf_value = float(vals[k])
                    for i, ch in zip(deep, kids):
                        todo[i][-1].children = ch
            for i, p in paths.items():  # back up: each level discounts by gamma^K
                val = p[-1].leaf_value
                for node in reversed(p[1:]):
                    node.visits += 1
                    node.value_sum += val
                    val = disc * val
                p[0].visits += 1
        pool.call("set_sim_state", {i: (states[i],) for i in ids})  # the real step starts from the root again
        out = []
        for i in ids:
            best = max(roots[i].children, key=lambda ch: (ch.visits, ch.q()))
            out.append(best.chunk)
        return np.stack(out).astype(np.float32)


SELECTORS = {"none": Selector, "vgps": VGPS, "bestofn": BestOfN, "mcts": MCTS, "retry": Retry}


def make_selector(policy, cfg: TestTimeConfig) -> Selector:
    return SELECTORS[cfg.method](policy, cfg)
