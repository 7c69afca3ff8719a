"""The probabilistic finite-state machine over 2-D primitives."""

from __future__ import annotations

import pytest
import torch
from scenarios import z_critical

from bayesnets.pvrnn import DEFAULT_TRANSITIONS, PFSMTrajectories


def test_shapes_origin_and_smoothness():
    data = PFSMTrajectories(period=10)
    x, states = data.sample(6, 47, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert x.shape == (6, 47, 2) and x.dtype == torch.float64
    assert states.shape == (6, 47) and states.dtype == torch.long
    # every primitive ends at the origin, so steps 9, 19, ... are the origin and segments join smoothly
    torch.testing.assert_close(x[:, 9::10], torch.zeros_like(x[:, 9::10]), atol=1e-12, rtol=0)
    # a primitive holds for a whole period
    assert (states[:, :40].reshape(6, 4, 10) == states[:, :40:10, None]).all()
    # no jumps: a step moves at most amplitude * (the curves' largest speed, 2 pi * 2 for the
    # figure-eight's vertical) / period
    step = (x[:, 1:] - x[:, :-1]).norm(dim=-1)
    assert step.max() <= data.amplitude * 4 * torch.pi / data.period
    same = PFSMTrajectories(period=10).sample(6, 47, generator=torch.Generator().manual_seed(0),
                                              dtype=torch.float64)[0]
    assert torch.equal(x, same)


def test_transition_frequencies_match_the_matrix():
    data = PFSMTrajectories(period=2)
    _, states = data.sample(400, 2 * 60, generator=torch.Generator().manual_seed(1))
    seg = states[:, ::2]
    prev, nxt = seg[:, :-1].reshape(-1), seg[:, 1:].reshape(-1)
    p = data.transition_matrix()
    z_star = z_critical(num_tests=9)  # Bonferroni over the 9 entries: family-wise false-failure rate 1e-3
    for i in range(3):
        n = int((prev == i).sum())
        for j in range(3):
            freq = float((nxt[prev == i] == j).sum()) / n
            se = (p[i, j] * (1 - p[i, j]) / n).sqrt()
            assert abs(freq - p[i, j]) <= z_star * se, (i, j, freq, float(p[i, j]))


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"transitions must have shape \[3, 3\]"):
        PFSMTrajectories(transitions=((0.5, 0.5), (0.5, 0.5)))
    with pytest.raises(ValueError, match="rows summing to 1"):
        PFSMTrajectories(transitions=tuple((0.5, 0.5, 0.5) for _ in DEFAULT_TRANSITIONS))
    with pytest.raises(ValueError, match="primitives must be"):
        PFSMTrajectories(primitives=("spiral",), transitions=((1.0,),))
    with pytest.raises(ValueError, match="num_steps must be a positive int"):
        PFSMTrajectories().sample(2, 0)
