"""Log-domain Sinkhorn and the multi-prompt OT score."""

from __future__ import annotations

import pytest
import torch

from zegclip.models.zegot.sinkhorn import log_sinkhorn, prompt_transport_score


def plain_sinkhorn(cost: torch.Tensor, eps: float, iters: int) -> torch.Tensor:
    """Textbook Sinkhorn-Knopp in the linear domain (float64), uniform marginals."""
    k = torch.exp(-cost.double() / eps)
    m, n = cost.shape[-2:]
    a = torch.full(cost.shape[:-1], 1.0 / m, dtype=torch.float64)
    b = torch.full((*cost.shape[:-2], n), 1.0 / n, dtype=torch.float64)
    v = torch.ones_like(b)
    for _ in range(iters):
        u = a / (k @ v.unsqueeze(-1)).squeeze(-1)
        v = b / (k.transpose(-1, -2) @ u.unsqueeze(-1)).squeeze(-1)
    return u.unsqueeze(-1) * k * v.unsqueeze(-2)


def test_plan_marginals_match() -> None:
    torch.manual_seed(0)
    cost = 1.0 - torch.rand(3, 50, 4) * 2  # 1 - cos, cos in [-1, 1]
    plan = log_sinkhorn(cost, eps=0.05, max_iter=1000, tol=1e-9)
    assert plan.shape == (3, 50, 4)
    torch.testing.assert_close(plan.sum(-1), torch.full((3, 50), 1 / 50), atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(plan.sum(-2), torch.full((3, 4), 1 / 4), atol=1e-6, rtol=1e-5)


def test_default_settings_reach_tolerance_on_clip_like_costs() -> None:
    torch.manual_seed(1)
    sim = 0.2 + 0.05 * torch.randn(2, 1024, 4)  # CLIP-like pixel/prompt cosines
    plan = log_sinkhorn(1.0 - sim)  # eps 0.05, 100 iterations, tol 1e-6
    torch.testing.assert_close(plan.sum(-1), torch.full((2, 1024), 1 / 1024), atol=1e-7, rtol=1e-3)


def test_log_domain_equals_plain_sinkhorn() -> None:
    torch.manual_seed(2)
    cost = torch.rand(2, 20, 5)
    eps, iters = 0.5, 30  # well conditioned: exp(-cost/eps) >= exp(-2)
    ours = log_sinkhorn(cost, eps=eps, max_iter=iters, tol=0.0)
    expected = plain_sinkhorn(cost, eps, iters)
    torch.testing.assert_close(ours.double(), expected, atol=1e-7, rtol=1e-4)


def test_no_nan_for_identical_prompts_and_extreme_costs() -> None:
    identical = torch.rand(2, 30, 1).expand(2, 30, 4)  # N prompts with the same similarities
    extreme = torch.tensor([[-500.0, 500.0], [500.0, -500.0], [1e3, -1e3]]).unsqueeze(0)
    for cost in (1.0 - identical, extreme):
        cost = cost.clone().requires_grad_(True)
        plan = log_sinkhorn(cost)
        (plan * cost).sum().backward()
        assert torch.isfinite(plan).all() and torch.isfinite(cost.grad).all()
        torch.testing.assert_close(plan.sum(-2), torch.full(plan.shape[::2], 1 / plan.shape[-1]))


def test_identical_prompts_give_n_times_similarity() -> None:
    sim = torch.rand(3, 40, 1).expand(3, 40, 4) * 2 - 1
    score = prompt_transport_score(sim)
    torch.testing.assert_close(score, 4 * sim[..., 0], atol=1e-5, rtol=1e-5)


def test_score_prefers_each_pixels_matching_prompt() -> None:
    # two prompt "attributes", half the pixels match each: OT sends pixels to their own prompt
    sim = torch.tensor([[0.9, 0.1]] * 5 + [[0.1, 0.9]] * 5).unsqueeze(0)
    score = prompt_transport_score(sim)
    assert score.shape == (1, 10)
    assert bool((score > 1.7).all())  # ~ N * 0.9, far above the uniform-weight 2 * 0.5 = 1.0


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="eps"):
        log_sinkhorn(torch.zeros(1, 2, 2), eps=0.0)
    with pytest.raises(ValueError, match="max_iter"):
        log_sinkhorn(torch.zeros(1, 2, 2), max_iter=0)


def test_tolerance_tested_every_ten_iterations_reads_the_host_ten_times_at_most() -> None:
    from bench.dispatch_count import OpCounter

    torch.manual_seed(3)
    cost = 1.0 - (0.2 + 0.05 * torch.randn(2, 256, 4))
    with OpCounter() as counter:
        plan = log_sinkhorn(cost)  # eps 0.05, 100 iterations, tol 1e-6, tested every 10
    assert 1 <= counter.sync_total <= 9, dict(counter.syncs)
    each = log_sinkhorn(cost, check_every=1)  # OTSeg's test after every iteration
    torch.testing.assert_close(plan, each, atol=1e-7, rtol=1e-3)
    torch.testing.assert_close(plan.sum(-1), torch.full((2, 256), 1 / 256), atol=1e-7, rtol=1e-3)
