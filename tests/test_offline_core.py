"""Offline-RL math: known answers on tiny inputs, and the properties each loss exists for."""

from __future__ import annotations

import math

import pytest
import torch

from rlvla.algos.offline.core import (
    advantage_indicator,
    awr_weights,
    calql_lower_bound,
    cql_penalty,
    dpo_loss,
    expectile_loss,
    mc_returns,
)


def test_mc_returns_stop_at_episode_boundaries():
    # two episodes in one env: rewards (1, 2 | 3), gamma 0.5
    r = torch.tensor([[1.0], [2.0], [3.0]], dtype=torch.float64)
    done = torch.tensor([[False], [True], [True]])
    assert mc_returns(r, done, 0.5)[:, 0].tolist() == [2.0, 2.0, 3.0]


def test_expectile_known_values_and_asymmetry():
    diff = torch.tensor([2.0, -2.0])
    assert expectile_loss(diff, 0.5).item() == pytest.approx(0.5 * 4)  # tau 0.5: half the MSE
    assert expectile_loss(diff, 0.9).item() == pytest.approx((0.9 * 4 + 0.1 * 4) / 2)
    # the minimiser of the expectile loss over a constant v is the tau-expectile: above the mean for tau > 0.5
    q = torch.tensor([0.0, 0.0, 0.0, 10.0])
    v = torch.zeros((), requires_grad=True)
    opt = torch.optim.SGD([v], lr=0.1)
    for _ in range(2000):
        opt.zero_grad()
        expectile_loss(q - v, 0.9).backward()
        opt.step()
    # the 0.9-expectile of {0, 0, 0, 10}: 0.9 * (10 - v) = 0.1 * 3 * v  ->  v = 9 / 1.2 = 7.5
    assert v.item() == pytest.approx(7.5, abs=1e-3)
    with pytest.raises(ValueError, match="tau"):
        expectile_loss(diff, 1.0)


def test_awr_weights_are_exponential_and_clipped():
    a = torch.tensor([0.0, 1.0, 10.0], requires_grad=True)
    w = awr_weights(a, beta=0.5, max_weight=20.0)
    assert w.tolist() == pytest.approx([1.0, math.exp(2.0), 20.0])
    assert not w.requires_grad


def test_cql_penalty_rises_for_out_of_data_actions():
    q_data = torch.tensor([1.0, 1.0])
    low = cql_penalty(q_data, torch.tensor([[1.0, 0.0], [1.0, 0.0]]))
    high = cql_penalty(q_data, torch.tensor([[1.0, 5.0], [1.0, 5.0]]))  # an unseen action overestimated
    assert high > low
    assert low.item() == pytest.approx(math.log(math.exp(1) + 1) - 1)
    # its gradient pushes the out-of-data Q down and the data Q up
    qs = torch.tensor([[1.0, 5.0]], requires_grad=True)
    qd = torch.tensor([1.0], requires_grad=True)
    cql_penalty(qd, qs).backward()
    assert qs.grad[0, 1] > 0 and qd.grad[0] < 0


def test_calql_values_respect_the_monte_carlo_bound():
    q = torch.tensor([[-3.0, 0.5, 2.0], [1.0, -1.0, 0.0]])
    mc = torch.tensor([0.0, 0.5])
    out = calql_lower_bound(q, mc)
    assert (out >= mc[:, None]).all()
    assert out.tolist() == [[0.0, 0.5, 2.0], [1.0, 0.5, 0.5]]


def test_advantage_indicator_binarises():
    assert advantage_indicator(torch.tensor([-1.0, 0.0, 0.3]), 0.1).tolist() == [False, False, True]


def test_dpo_known_value_and_direction():
    zero = torch.zeros(1)
    loss, info = dpo_loss(zero, zero, zero, zero, beta=0.1)
    assert loss.item() == pytest.approx(math.log(2))  # no preference yet: -log sigmoid(0)
    lc = torch.tensor([0.0], requires_grad=True)
    lr = torch.tensor([0.0], requires_grad=True)
    loss, _ = dpo_loss(lc, lr, zero, zero, beta=0.5)
    loss.backward()
    assert lc.grad[0] < 0 and lr.grad[0] > 0  # raise the chosen, lower the rejected
    loss, info = dpo_loss(torch.tensor([2.0]), torch.tensor([0.0]), zero, zero, beta=0.5)
    assert loss.item() == pytest.approx(-math.log(1 / (1 + math.exp(-1.0)))) and info["accuracy"] == 1.0
