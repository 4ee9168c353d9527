"""EnvPool: many environments stepped by a few worker processes, each env reset to a chosen seed on demand.

Gymnasium's vector envs run one process per env and reset episodes themselves. Evaluation and group rollouts
need (a) a specific layout seed for every episode and (b) more envs than cores. ``EnvPool`` holds ``n`` envs
spread over ``workers`` ``spawn`` processes (rendering workers must not fork); each command is sent to all
workers at once and each worker steps its envs in turn, so the cores stay busy while the learner waits.
``workers=0`` runs everything in-process (debugging, tests).

The loop it serves::

    pool = EnvPool([dict(name="push-v3", split="id", chunk=4)] * 8, workers=2)
    obs = pool.reset({i: seed_i for i in range(8)})               # {env index: (obs, info)}
    out = pool.step({i: action_i for i in active})                 # {env index: (obs, reward, term, trunc, info)}
    token = pool.step_async({0: a0}); ...; out = pool.step_wait(token)   # overlap stepping with inference
"""

from __future__ import annotations

import multiprocessing as mp
import os
import traceback

from rlvla.envs.suites import suite_module


class EnvWorkerError(RuntimeError):
    """A worker process died or raised; the message names the worker and the cause.

    ``partial`` holds the results of the envs whose workers answered (those envs did advance); ``lost`` lists the
    env indices whose episodes are gone: call :meth:`EnvPool.restart_dead_workers` and reset them.
    """

    def __init__(self, msg: str, partial: dict | None = None, lost: list[int] | None = None) -> None:
        super().__init__(msg)
        self.partial = partial or {}
        self.lost = lost or []


def _worker(conn, specs: dict[int, dict]) -> None:
    from rlvla.envs import make_env

    envs = {}
    try:
        envs = {i: make_env(**spec) for i, spec in specs.items()}
        conn.send(("ok", None))
        while True:
            cmd, payload = conn.recv()
            if cmd == "close":
                break
            if cmd == "respec":  # new envs in this process: no spawn and no imports again
                old, envs = envs, {}  # out of the final clean-up's reach if a new one fails to build
                envs, specs = rebuild_envs(old, specs, payload), payload
                conn.send(("ok", None))
                continue
            out = {}
            for i, arg in payload.items():
                if cmd == "reset":
                    seed, options = arg
                    out[i] = envs[i].reset(seed=seed, options=options)
                elif cmd == "step":
                    out[i] = envs[i].step(arg)
                else:  # ("call", (method, args)): simulator state save/restore, tree search
                    out[i] = getattr(envs[i], arg[0])(*arg[1])
            conn.send(("ok", out))
    except (KeyboardInterrupt, EOFError):
        pass
    except Exception as e:  # report to the parent, which raises with the message
        try:
            conn.send(("error", f"{type(e).__name__}: {e}\n{traceback.format_exc()}"))
        except (BrokenPipeError, OSError):
            pass
    finally:
        for env in envs.values():
            env.close()
        conn.close()


def stack_obs(obs_list: list[dict]) -> dict:
    """Env observation dicts -> one batched dict (arrays stacked on a new axis 0; instructions as a list)."""
    import numpy as np

    out = {}
    for k in obs_list[0]:
        vals = [o[k] for o in obs_list]
        out[k] = vals if k == "instruction" else np.stack(vals)
    return out


def _but_split(spec: dict) -> dict:
    return {k: v for k, v in spec.items() if k != "split"}


def rebuild_envs(envs: dict, specs: dict, new: dict) -> dict:
    """Envs for ``new`` ({index: spec}) from ``envs`` (built from ``specs``, same keys). An env whose spec differs
    from a new one in its split only is kept and switched to that split (``set_split``): building one costs ~0.9 s
    (its simulator and GL context) and an evaluation changes split four times per policy. The rest are closed and
    new ones made."""
    from rlvla.envs import make_env

    spare = [(specs[i], env) for i, env in envs.items()]
    out = {}
    try:
        for i, spec in new.items():
            k = next((k for k, (s, env) in enumerate(spare) if _but_split(s) == _but_split(spec) and hasattr(env, "set_split")), None)
            if k is not None:
                env = spare.pop(k)[1]
                env.set_split(spec.get("split", "id"))
                out[i] = env
        for _, env in spare:
            env.close()
        spare = []
        for i, spec in new.items():
            if i not in out:
                out[i] = make_env(**spec)
    except BaseException:
        for env in [*out.values(), *(e for _, e in spare)]:
            env.close()
        raise
    return out


def _with_suite(specs: list[dict]) -> list[dict]:
    if not specs:
        raise ValueError("EnvPool needs at least one env spec")
    specs = [dict(s) for s in specs]
    for s in specs:  # a worker process imports a suite registered outside rlvla before making its envs
        if "name" in s and "suite_module" not in s:
            s["suite_module"] = suite_module(s["name"])
    return specs


class EnvPool:
    def __init__(self, specs: list[dict], workers: int | None = None) -> None:
        from rlvla.envs.render import ensure_gl_backend

        self.specs = _with_suite(specs)
        n = len(self.specs)
        if workers is None:
            workers = min(n, os.cpu_count() or 1) if n > 1 else 0
        self.workers = min(int(workers), n)
        ensure_gl_backend()
        self._local = None
        self._procs: list = []
        self._conns: list = []
        self.owner: list[int] = []
        if self.workers <= 0:
            from rlvla.envs import make_env

            self._local = {i: make_env(**s) for i, s in enumerate(self.specs)}
            self.owner = [0] * n
            return
        self.owner = [i % self.workers for i in range(n)]
        ctx = mp.get_context("spawn")
        try:
            for w in range(self.workers):
                self._start(ctx, w)
            self._gather(range(self.workers))
        except BaseException:
            self.close()
            raise

    def respec(self, specs: list[dict]) -> None:
        """Replace every env with one made from ``specs`` (any number), in the same worker processes: another
        split or task list without starting processes again (a ``spawn`` start costs ~5 s, mostly imports).
        Episodes in progress are dropped: reset the envs before stepping them."""
        old_specs, self.specs = self.specs, _with_suite(specs)
        if self._local is not None:
            old, self._local = self._local, {}
            self._local = rebuild_envs(old, dict(enumerate(old_specs)), dict(enumerate(self.specs)))
            self.owner = [0] * len(self.specs)
            return
        self.owner = [i % self.workers for i in range(len(self.specs))]
        sent, dead = [], []
        for w in range(self.workers):
            try:
                self._conns[w].send(("respec", {i: s for i, s in enumerate(self.specs) if self.owner[i] == w}))
                sent.append(w)
            except (BrokenPipeError, OSError):
                dead.append(w)
        self._gather(sent, dead)

    def _start(self, ctx, w: int) -> None:
        parent, child = ctx.Pipe()
        specs = {i: s for i, s in enumerate(self.specs) if self.owner[i] == w}
        p = ctx.Process(target=_worker, args=(child, specs), daemon=True)
        p.start()
        child.close()
        if w < len(self._procs):
            self._procs[w], self._conns[w] = p, parent
        else:
            self._procs.append(p)
            self._conns.append(parent)

    def _gather(self, workers, dead=()) -> dict:
        """Read one reply from each of ``workers`` (all of them, so no stale reply is left in a pipe), then raise
        the first failure, if any (``dead``: workers already found dead while sending)."""
        out, errors, failed = {}, [], list(dead)
        for w in dead:
            self._procs[w].join(timeout=1)
            errors.append(f"env worker {w} died (exit code {self._procs[w].exitcode}); its envs' episodes are lost")
        for w in workers:
            try:
                status, payload = self._conns[w].recv()
            except (EOFError, ConnectionResetError, BrokenPipeError, OSError):
                self._procs[w].join(timeout=1)
                errors.append(f"env worker {w} died (exit code {self._procs[w].exitcode}); its envs' episodes are lost")
                failed.append(w)
                continue
            if status == "error":
                errors.append(f"env worker {w} failed: {payload}")
                failed.append(w)
            elif payload:
                out.update(payload)
        if errors:
            lost = [i for i, w in enumerate(self.owner) if w in failed]
            raise EnvWorkerError(errors[0], partial=out, lost=lost)
        return out

    def __len__(self) -> int:
        return len(self.specs)

    def _send(self, cmd: str, payload: dict[int, object]):
        """Send ``cmd`` to the workers owning ``payload``'s envs; -> a token for :meth:`_wait`."""
        if self._local is not None:
            out = {}
            for i, arg in payload.items():
                env = self._local[i]
                if cmd == "reset":
                    out[i] = env.reset(seed=arg[0], options=arg[1])
                elif cmd == "step":
                    out[i] = env.step(arg)
                else:
                    out[i] = getattr(env, arg[0])(*arg[1])
            return ("done", out)
        per: dict[int, dict] = {}
        for i, arg in payload.items():
            per.setdefault(self.owner[i], {})[i] = arg
        sent, dead = [], []
        for w, sub in per.items():
            try:
                self._conns[w].send((cmd, sub))
                sent.append(w)
            except (BrokenPipeError, OSError):
                dead.append(w)
        return ("sent", sent, dead)

    def _wait(self, token) -> dict[int, object]:
        return token[1] if token[0] == "done" else self._gather(token[1], token[2])

    def _run(self, cmd: str, payload: dict[int, object]) -> dict[int, object]:
        return self._wait(self._send(cmd, payload))

    def reset(self, seeds: dict[int, int | None], options: dict[int, dict] | None = None):
        options = options or {}
        return self._run("reset", {i: (s, options.get(i)) for i, s in seeds.items()})

    def step(self, actions: dict[int, object]):
        return self._run("step", actions)

    def call(self, method: str, args: dict[int, tuple]) -> dict:
        """Call ``env.method(*args[i])`` on each env ``i`` of ``args`` (workers in parallel): simulator state
        save/restore (``get_sim_state``, ``set_sim_state``, ``branch``) for tree search."""
        return self._run("call", {i: (method, tuple(a)) for i, a in args.items()})

    def step_async(self, actions: dict[int, object]):
        """Start stepping ``actions``' envs and return at once (a token for :meth:`step_wait`): the learner can
        compute other envs' actions meanwhile. Envs of one worker must not have two steps in flight; other
        workers can be reset or stepped in between."""
        return self._send("step", actions)

    def step_wait(self, token) -> dict:
        """The results of :meth:`step_async` (``EnvWorkerError`` as in :meth:`step`)."""
        return self._wait(token)

    def restart_dead_workers(self, workers=None) -> list[int]:
        """Start a fresh worker in place of each one that exited (of ``workers``, default all); returns the indices
        of the envs it holds (their episodes were lost: reset them before stepping). Pass the failed workers when
        other workers have steps in flight (``step_async``): a restarted worker's pending reply is gone."""
        if self._local is not None:
            return []
        lost, ctx = [], mp.get_context("spawn")
        for w, p in enumerate(self._procs):
            if p.is_alive() or (workers is not None and w not in workers):
                continue
            self._conns[w].close()
            self._start(ctx, w)
            self._gather([w])
            lost += [i for i, o in enumerate(self.owner) if o == w]
        return lost

    def close(self) -> None:
        if self._local is not None:
            for env in self._local.values():
                env.close()
            self._local = {}
            return
        for c in self._conns:
            try:
                c.send(("close", None))
            except (BrokenPipeError, OSError):
                pass
        for p in self._procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
        self._procs, self._conns = [], []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
