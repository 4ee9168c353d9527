"""Interval and test statistics against known answers from statsmodels 0.15.0 (not against themselves).

Values computed with::

    from statsmodels.stats.proportion import proportion_confint
    from statsmodels.stats.contingency_tables import mcnemar
    proportion_confint(k, n, alpha=0.05, method="wilson")
    mcnemar([[50, b], [c, 32]], exact=True).pvalue

statsmodels is not a dependency: the numbers are pinned here so the suite needs no extra install.
"""

from __future__ import annotations

import pytest

from rlvla.eval.metrics import mcnemar_exact, wilson_interval

WILSON = [  # (successes, n, low, high) from statsmodels' proportion_confint(method="wilson")
    (0, 10, 0.0, 0.27753279986288926),
    (1, 10, 0.017876213095072924, 0.40415002679523854),
    (5, 10, 0.23659309051256394, 0.7634069094874361),
    (10, 10, 0.7224672001371106, 1.0),
    (62, 100, 0.5220975529551107, 0.7090240074752127),
    (70, 100, 0.6041514536665332, 0.7810511470506724),
    (83, 100, 0.7445199523239887, 0.8910643388594006),
    (1, 1, 0.2065493143772374, 1.0),
    (0, 1, 0.0, 0.7934506856227627),
    (37, 40, 0.8013576647568946, 0.9741639742254119),
    (3, 250, 0.0040893198805342975, 0.034680780427019615),
]

MCNEMAR = [  # (a_only, b_only, exact two-sided p) from statsmodels' mcnemar(exact=True)
    (14, 4, 0.0308837890625),
    (15, 5, 0.04138946533203125),
    (17, 4, 0.007197380065917969),
    (13, 4, 0.049041748046875),
    (0, 3, 0.25),
    (10, 10, 1.0),
]


@pytest.mark.parametrize("k, n, lo, hi", WILSON)
def test_wilson_interval_matches_statsmodels(k, n, lo, hi):
    got = wilson_interval(k, n)
    assert got[0] == pytest.approx(lo, rel=1e-9, abs=1e-15) and got[1] == pytest.approx(hi, rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("a_only, b_only, p", MCNEMAR)
def test_mcnemar_exact_matches_statsmodels(a_only, b_only, p):
    a = [True] * a_only + [False] * b_only + [True] * 50 + [False] * 32
    b = [False] * a_only + [True] * b_only + [True] * 50 + [False] * 32
    r = mcnemar_exact(a, b)
    assert (r["a_only"], r["b_only"]) == (a_only, b_only)
    assert r["p_value"] == pytest.approx(p, rel=1e-12)


def test_metrics_reject_impossible_counts():
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(11, 10)
    with pytest.raises(ValueError, match="equal length"):
        mcnemar_exact([True], [True, False])
