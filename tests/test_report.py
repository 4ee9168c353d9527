"""The SFT-vs-RL report: the comparison rows are computed right, and the page renders in headless Chromium."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from rlvla.eval.metrics import mcnemar_exact, wilson_interval
from rlvla.eval.report import comparison_rows, write_report


def _eval(successes: dict[str, list[bool]]) -> dict:
    splits = {}
    for split, ok in successes.items():
        n, s = len(ok), sum(ok)
        per = [["reach-v3" if i % 2 else "push-v3", 1_000_000 + i // 2, bool(v)] for i, v in enumerate(ok)]
        splits[split] = {
            "success_rate": s / n, "ci95": list(wilson_interval(s, n)), "episodes": n,
            "tasks": {t: {"success_rate": float(np.mean([p[2] for p in per if p[0] == t])), "episodes": n // 2}
                      for t in ("push-v3", "reach-v3")},
            "per_episode": per,
        }  # fmt: skip
    return {"checkpoint": "x/policy", "splits": splits}


def _summary():
    rng = np.random.default_rng(0)
    sft_id = list(rng.random(40) < 0.4)
    rl_id = [a or (rng.random() < 0.5) for a in sft_id]  # RL keeps SFT's successes and adds some
    sft_ood = list(rng.random(40) < 0.5)
    rl_ood = [a and (rng.random() < 0.8) for a in sft_ood]  # and loses some out of distribution
    sft, rl = _eval({"id": sft_id, "ood-visual": sft_ood}), _eval({"id": rl_id, "ood-visual": rl_ood})
    return {"sft": sft, "rl": rl, "wall_s": 12.0, "peak_rss_mb": 900.0, "config": {"algo": "grpo"}}, (sft_id, rl_id, sft_ood, rl_ood)


def test_comparison_rows_are_paired_mcnemar_and_wilson():
    summary, (sft_id, rl_id, sft_ood, rl_ood) = _summary()
    rows = {r["split"]: r for r in comparison_rows(summary["sft"], summary["rl"])}
    only_rl = sum(b and not a for a, b in zip(sft_id, rl_id))
    assert only_rl > 0 and rows["id"]["test"].startswith(f"{only_rl} / 0,")
    assert rows["id"]["p"] == pytest.approx(mcnemar_exact(rl_id, sft_id)["p_value"]) and rows["id"]["p"] < 0.01
    assert rows["id"]["delta_points"] == pytest.approx(100 * (sum(rl_id) - sum(sft_id)) / 40)
    assert rows["ood-visual"]["delta_points"] < 0 and rows["ood-visual"]["cls"] == "down"
    lo, hi = wilson_interval(sum(sft_id), 40)
    assert rows["id"]["sft"] == f"{sum(sft_id) / 40:.2f} [{lo:.2f}, {hi:.2f}]"


def _gif(path):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    frames = [Image.fromarray(np.full((32, 32, 3), c, np.uint8)) for c in (0, 128, 255)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100)
    return path


def test_report_renders_in_headless_chromium(tmp_path):
    summary, _ = _summary()
    metrics = [{"step": i + 1, "env_steps": 1000 * (i + 1), "rollout/success": 0.4 + 0.05 * i, "rollout/success/push-v3": 0.1 * i,
                "train/approx_kl": 0.01, "train/clip_fraction": 0.1, "rollout/groups_kept": 8, "rollout/groups_dropped": 2,
                "rollout/env_steps_per_s": 250.0} for i in range(5)]  # fmt: skip
    gifs = {"SFT (id)": [_gif(tmp_path / "videos" / "sft" / "id_push-v3_1000000_failure.gif")],
            "RL (id)": [_gif(tmp_path / "videos" / "rl" / "id_push-v3_1000000_success.gif")]}  # fmt: skip
    report = write_report(tmp_path, summary, metrics, gifs)
    text = report.read_text()
    assert 'id="success-table"' in text and "videos/rl/id_push-v3_1000000_success.gif" in text
    assert (tmp_path / "report_files" / "learning_curves.png").stat().st_size > 5000
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("headless Chromium is not installed; `make test` installs it when run as root (apt-get install chromium)")
    common = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--user-data-dir=" + str(tmp_path / "chrome")]
    dom = subprocess.run([*common, "--dump-dom", report.as_uri()], capture_output=True, text=True, timeout=120).stdout
    # the table came out of the browser's parser with one row per split, and the numbers in its cells
    assert dom.count('class="split-row"') == 2, dom[:2000]
    assert "<td>id</td>" in dom and "<td>ood-visual</td>" in dom
    assert summary["sft"]["splits"]["id"]["success_rate"] != summary["rl"]["splits"]["id"]["success_rate"]
    assert f"{summary['rl']['splits']['id']['success_rate']:.2f} [" in dom
    shot = tmp_path / "shot.png"
    subprocess.run([*common, "--window-size=1100,700", f"--screenshot={shot}", report.as_uri()], capture_output=True, timeout=120)
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("L"))
    dark = (img < 100).mean(1)  # rows of the page holding text or table borders
    assert img.shape[1] == 1100 and (dark > 0.01).sum() > 50, "the rendered page is (nearly) blank"
