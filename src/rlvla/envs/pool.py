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
"""

from __future__ import annotations

import multiprocessing as mp
import os
import traceback


class EnvWorkerError(RuntimeError):
    """A worker process died or raised; the message names the env and the cause."""


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
            out = {}
            for i, arg in payload.items():
                if cmd == "reset":
                    seed, options = arg
                    out[i] = envs[i].reset(seed=seed, options=options)
                elif cmd == "step":
                    out[i] = envs[i].step(arg)
                elif cmd == "call":
                    name, args = arg
                    out[i] = getattr(envs[i], name)(*args)
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


class EnvPool:
    def __init__(self, specs: list[dict], workers: int | None = None) -> None:
        from rlvla.envs.render import ensure_gl_backend

        if not specs:
            raise ValueError("EnvPool needs at least one env spec")
        self.specs = [dict(s) for s in specs]
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
        for w in range(self.workers):
            self._start(ctx, w)
        for w in range(self.workers):
            self._recv(w)

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

    def _recv(self, w: int):
        try:
            status, payload = self._conns[w].recv()
        except (EOFError, ConnectionResetError, BrokenPipeError):
            code = self._procs[w].exitcode
            raise EnvWorkerError(f"env worker {w} died (exit code {code}); its envs' episodes are lost") from None
        if status == "error":
            raise EnvWorkerError(f"env worker {w} failed: {payload}")
        return payload

    def __len__(self) -> int:
        return len(self.specs)

    def _run(self, cmd: str, payload: dict[int, object]) -> dict[int, object]:
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
            return out
        per: dict[int, dict] = {}
        for i, arg in payload.items():
            per.setdefault(self.owner[i], {})[i] = arg
        for w, sub in per.items():
            try:
                self._conns[w].send((cmd, sub))
            except (BrokenPipeError, OSError):
                raise EnvWorkerError(f"env worker {w} died (exit code {self._procs[w].exitcode})") from None
        out = {}
        for w in per:
            out.update(self._recv(w))
        return out

    def reset(self, seeds: dict[int, int | None], options: dict[int, dict] | None = None):
        options = options or {}
        return self._run("reset", {i: (s, options.get(i)) for i, s in seeds.items()})

    def step(self, actions: dict[int, object]):
        return self._run("step", actions)

    def call(self, name: str, envs, *args):
        return self._run("call", {i: (name, args) for i in envs})

    def restart_dead_workers(self) -> list[int]:
        """Restart workers that died; returns the env indices that were lost (their episodes must be rerun)."""
        if self._local is not None:
            return []
        lost = []
        ctx = mp.get_context("spawn")
        for w, p in enumerate(self._procs):
            if not p.is_alive():
                self._start(ctx, w)
                self._recv(w)
                lost += [i for i in range(len(self.specs)) if self.owner[i] == w]
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
