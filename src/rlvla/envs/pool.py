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
        try:
            for w in range(self.workers):
                self._start(ctx, w)
            self._gather(range(self.workers))
        except BaseException:
            self.close()
            raise

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

    def _gather(self, workers) -> dict:
        """Read one reply from each of ``workers`` (all of them, so no stale reply is left in a pipe), then raise
        the first failure, if any."""
        out, errors = {}, []
        for w in workers:
            try:
                status, payload = self._conns[w].recv()
            except (EOFError, ConnectionResetError, BrokenPipeError):
                self._procs[w].join(timeout=1)
                errors.append(f"env worker {w} died (exit code {self._procs[w].exitcode}); its envs' episodes are lost")
                continue
            if status == "error":
                errors.append(f"env worker {w} failed: {payload}")
            elif payload:
                out.update(payload)
        if errors:
            raise EnvWorkerError(errors[0])
        return out

    def __len__(self) -> int:
        return len(self.specs)

    def _run(self, cmd: str, payload: dict[int, object]) -> dict[int, object]:
        if self._local is not None:
            out = {}
            for i, arg in payload.items():
                env = self._local[i]
                out[i] = env.reset(seed=arg[0], options=arg[1]) if cmd == "reset" else env.step(arg)
            return out
        per: dict[int, dict] = {}
        for i, arg in payload.items():
            per.setdefault(self.owner[i], {})[i] = arg
        sent = []
        for w, sub in per.items():
            try:
                self._conns[w].send((cmd, sub))
                sent.append(w)
            except (BrokenPipeError, OSError):
                try:
                    self._gather(sent)  # drain the workers already sent to
                finally:
                    raise EnvWorkerError(f"env worker {w} died (exit code {self._procs[w].exitcode})") from None
        return self._gather(sent)

    def reset(self, seeds: dict[int, int | None], options: dict[int, dict] | None = None):
        options = options or {}
        return self._run("reset", {i: (s, options.get(i)) for i, s in seeds.items()})

    def step(self, actions: dict[int, object]):
        return self._run("step", actions)

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
