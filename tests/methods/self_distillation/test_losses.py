"""TEMI (Eq. 1) and SCANv2 (Eq. 2): reference values, hand-computed cases, DDP averaging."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from clusterbench.methods.self_distillation.losses import (
    batch_mean_probs,
    distributed_mean,
    scan_loss,
    temi_instance_weight,
    temi_loss,
    update_prior,
)
from tests.helpers import FIXTURES

FIXTURE = FIXTURES / "loss_cases.npz"
TEMPERATURE = 0.1  # student and teacher temperature of the reference cases


def _log_probs(logits: np.ndarray) -> torch.Tensor:
    """(H, 2B, C) reference logits, anchors first -> (H, 2, B, C) log-probabilities."""
    z = torch.from_numpy(logits)
    h, m, c = z.shape
    return torch.log_softmax(z / TEMPERATURE, dim=-1).view(h, 2, m // 2, c)


def _temi_step(prior, student, teacher, beta):
    """One TEMI step as in training: update the prior, then the loss of the same batch."""
    prior = update_prior(prior, batch_mean_probs(teacher.exp()), momentum=0.9)
    return prior, temi_loss(student, teacher, prior, beta=beta)


@pytest.mark.parametrize("case", ["temi_b06", "temi_b1"])
def test_temi_matches_reference_over_two_calls(case):
    cases = np.load(FIXTURE)
    beta = float(cases[f"{case}/beta"])
    heads, clusters = cases[f"{case}/prior_after"].shape
    prior = torch.full((heads, clusters), 1.0 / clusters)
    for call in (1, 2):
        prior, loss = _temi_step(
            prior,
            _log_probs(cases[f"{case}/student{call}"]),
            _log_probs(cases[f"{case}/teacher{call}"]),
            beta,
        )
        np.testing.assert_allclose(loss.numpy(), cases[f"{case}/loss{call}"], rtol=1e-5)
    np.testing.assert_allclose(prior.numpy(), cases[f"{case}/prior_after"], rtol=1e-5)


def test_scan_matches_reference():
    cases = np.load(FIXTURE)
    loss = scan_loss(
        _log_probs(cases["scan_a5/student1"]),
        _log_probs(cases["scan_a5/teacher1"]),
        alpha=float(cases["scan_a5/alpha"]),
    )
    np.testing.assert_allclose(loss.numpy(), cases["scan_a5/loss1"], rtol=1e-5)


def _uniform_log_probs(heads: int, batch: int, clusters: int) -> torch.Tensor:
    return torch.full((heads, 2, batch, clusters), -math.log(clusters))


def test_temi_uniform_closed_form():
    # q_s = q_t = prior = 1/C: weight = 1/C and sum_c (1/C^2)^beta / (1/C) = C^(2 - 2 beta).
    c, beta = 4, 0.6
    uniform = _uniform_log_probs(3, 5, c)
    loss = temi_loss(uniform, uniform, torch.full((3, c), 1 / c), beta=beta)
    expected = -(1 / c) * (2 - 2 * beta) * math.log(c)
    torch.testing.assert_close(loss, torch.full((3,), expected))


def test_scan_uniform_closed_form():
    # -log sum_c 1/C^2 = log C; the negative entropy of a uniform marginal is -log C.
    c, alpha = 4, 5.0
    uniform = _uniform_log_probs(2, 3, c)
    loss = scan_loss(uniform, uniform, alpha=alpha)
    torch.testing.assert_close(loss, torch.full((2,), (1 - alpha) * math.log(c)))


def test_temi_hand_computed_prior_updated_before_loss():
    # One head, one pair, two clusters, beta = 0.6.
    ps = torch.tensor([[[[0.9, 0.1]], [[0.3, 0.7]]]])  # student on x, x'
    pt = torch.tensor([[[[0.8, 0.2]], [[0.6, 0.4]]]])  # teacher on x, x'
    prior = update_prior(torch.tensor([[0.5, 0.5]]), batch_mean_probs(pt), momentum=0.9)
    torch.testing.assert_close(prior, torch.tensor([[0.52, 0.48]]))  # 0.9*0.5 + 0.1*[0.7, 0.3]

    weight = 0.8 * 0.6 + 0.2 * 0.4
    forward = (0.9 * 0.6) ** 0.6 / 0.52 + (0.1 * 0.4) ** 0.6 / 0.48  # student x, teacher x'
    backward = (0.3 * 0.8) ** 0.6 / 0.52 + (0.7 * 0.2) ** 0.6 / 0.48  # student x', teacher x
    expected = -weight * 0.5 * (math.log(forward) + math.log(backward))

    loss = temi_loss(ps.log(), pt.log(), prior, beta=0.6)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    stale = temi_loss(ps.log(), pt.log(), torch.tensor([[0.5, 0.5]]), beta=0.6)
    assert abs(stale.item() - expected) > 1e-3  # the order of update and loss matters


def test_temi_instance_weight_is_shared_across_heads():
    # Head 0's loss depends on head 1's teacher only through the pair weight (a mean over heads).
    gen = torch.Generator().manual_seed(0)
    ps = torch.log_softmax(torch.randn(2, 2, 3, 4, generator=gen), dim=-1)
    pt = torch.log_softmax(torch.randn(2, 2, 3, 4, generator=gen), dim=-1)
    prior = torch.full((2, 4), 0.25)
    pt_other = pt.clone()
    pt_other[1] = torch.log_softmax(torch.randn(2, 3, 4, generator=gen), dim=-1)

    def weight(log_pt):  # written out per pair and head
        p = log_pt.exp()
        return torch.stack(
            [sum((p[j, 0, i] * p[j, 1, i]).sum() for j in range(2)) / 2 for i in range(3)]
        )

    torch.testing.assert_close(temi_instance_weight(pt.exp()), weight(pt))
    assert not torch.allclose(weight(pt), weight(pt_other))
    # Swapping head 1's teacher changes head 0's loss exactly as swapping the weight does.
    with_other = temi_loss(ps, pt_other, prior)[0]
    reweighted = temi_loss(ps, pt, prior, weight=weight(pt_other))[0]
    torch.testing.assert_close(with_other, reweighted)
    assert not torch.allclose(with_other, temi_loss(ps, pt, prior)[0])


def test_teacher_receives_no_gradient_and_student_does():
    gen = torch.Generator().manual_seed(1)
    student = torch.randn(3, 2, 5, 6, generator=gen, requires_grad=True)
    teacher = torch.randn(3, 2, 5, 6, generator=gen, requires_grad=True)
    prior = torch.full((3, 6), 1 / 6)
    for loss in (
        temi_loss(student.log_softmax(-1), teacher.log_softmax(-1), prior).sum(),
        scan_loss(student.log_softmax(-1), teacher.log_softmax(-1)).sum(),
    ):
        student.grad = teacher.grad = None
        loss.backward()
        assert teacher.grad is None
        assert torch.isfinite(student.grad).all() and student.grad.abs().sum() > 0


def test_temi_is_finite_for_near_one_hot_teacher():
    logits = torch.zeros(1, 2, 2, 3)
    logits[..., 0] = 200.0  # exp underflows to exactly zero for the other clusters
    loss = temi_loss(
        torch.log_softmax(logits, -1), torch.log_softmax(logits, -1), torch.ones(1, 3) / 3
    )
    assert torch.isfinite(loss).all()


def _global_case():
    """A batch of 8 pairs for 2 heads and 3 clusters, identical in every process."""
    gen = torch.Generator().manual_seed(0)
    student = torch.randn(2, 2, 8, 3, generator=gen)
    teacher = torch.randn(2, 2, 8, 3, generator=gen).log_softmax(-1)
    return student, teacher


def _losses(student, teacher, prior):
    """Prior update, TEMI and SCAN losses, and their gradients w.r.t. the student logits."""
    student = student.clone().requires_grad_(True)
    prior = update_prior(prior, batch_mean_probs(teacher.exp()), momentum=0.9)
    log_ps = student.log_softmax(-1)
    temi = temi_loss(log_ps, teacher, prior, beta=0.6)
    scan = scan_loss(log_ps, teacher, alpha=5.0)
    (temi_grad,) = torch.autograd.grad(temi.sum(), student, retain_graph=True)
    (scan_grad,) = torch.autograd.grad(scan.sum(), student)
    return prior, temi.detach(), scan.detach(), temi_grad, scan_grad


def _ddp_worker(rank: int, world: int, init_file: str, result_file: str) -> None:
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world
    )
    student, teacher = _global_case()
    share = slice(rank * 4, (rank + 1) * 4)  # each process holds half of the pairs
    prior, temi, scan, temi_grad, scan_grad = _losses(
        student[:, :, share], teacher[:, :, share], torch.full((2, 3), 1 / 3)
    )
    # The reported loss is the average over processes.
    for value in (temi, scan):
        torch.distributed.all_reduce(value)
        value /= world
    # Each process has gradients for its own pairs only; collect them side by side.
    full = [torch.zeros_like(temi_grad) for _ in range(world)]
    torch.distributed.all_gather(full, temi_grad)
    temi_grad = torch.cat(full, dim=2)
    torch.distributed.all_gather(full, scan_grad)
    scan_grad = torch.cat(full, dim=2)
    if rank == 0:
        torch.save((prior, temi, scan, temi_grad, scan_grad), result_file)
    torch.distributed.destroy_process_group()


def test_two_processes_equal_one_process_with_the_global_batch(tmp_path):
    """Prior, TEMI and SCAN losses and gradients: 2 gloo processes x 4 pairs == 1 x 8 pairs.

    The gradient each process sees for its own pairs, once averaged as DDP does, equals the
    single-process gradient; SCAN needs the global batch marginal for that.
    """
    result = tmp_path / "result.pt"
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(result)), nprocs=2, join=True)
    distributed = torch.load(result)
    student, teacher = _global_case()
    single = _losses(student, teacher, torch.full((2, 3), 1 / 3))
    names = ("prior", "temi", "scan", "temi_grad", "scan_grad")
    for name, got, expected in zip(names, distributed, single, strict=True):
        if name.endswith("grad"):
            got = got / 2  # DDP averages gradients over 2 processes (the other one adds 0 here)
        torch.testing.assert_close(got, expected, msg=name)


def test_distributed_mean_without_process_group_is_plain_mean():
    total = torch.tensor([2.0, 4.0])
    torch.testing.assert_close(distributed_mean(total, 4), torch.tensor([0.5, 1.0]))


def _agreement_worker(rank: int, world: int, init_file: str, values: list[int]) -> None:
    from clusterbench.core.distributed import check_same_on_every_rank
    from clusterbench.core.errors import ConfigError

    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world
    )
    check_same_on_every_rank(10, "method.num_clusters")  # the same K on both: passes
    try:
        check_same_on_every_rank(values[rank], "method.num_clusters")
    except ConfigError as exc:
        assert "disagree on method.num_clusters: [10, 12]" in str(exc)
    else:
        raise AssertionError("ranks with different K were not stopped")
    finally:
        torch.distributed.destroy_process_group()


def test_ranks_that_estimated_different_k_stop_with_one_line(tmp_path):
    """Every rank estimates K alone; different estimates fail before DDP's broadcast."""
    mp.spawn(_agreement_worker, args=(2, str(tmp_path / "init"), [10, 12]), nprocs=2, join=True)
