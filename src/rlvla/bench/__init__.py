"""``rlvla bench ...``: benchmarks, kept apart from training and evaluation code.

- :mod:`.env`: env throughput (render settings, vector modes);
- :mod:`.policy`: policy inference latency and the SFT success of every head;
- :mod:`.rl`: RL rollout throughput against env-only stepping, and PPO against stable-baselines3;
- :mod:`.offline`: offline-RL memory when streaming a dataset larger than RAM.

Benchmarks sit beside ``runners`` (both under ``cli``); neither imports the other. Long ones run with ``make bench``.
"""
