"""Distillation: KL with temperature and SquareHead against brute-force formulas."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from sparse_ast import AdaptiveSparseTrainer, kl_distillation_loss, squarehead_loss

from ._helpers import tiny_gpt2, tiny_llama, tokens

torch.set_num_threads(1)


def _brute_kl(student: torch.Tensor, teacher: torch.Tensor, temp: float) -> float:
    s = student.reshape(-1, student.shape[-1]).double() / temp
    t = teacher.reshape(-1, teacher.shape[-1]).double() / temp
    total = 0.0
    for row_s, row_t in zip(s, t, strict=True):
        p_t = torch.softmax(row_t, -1)
        total += float((p_t * (torch.log_softmax(row_t, -1) - torch.log_softmax(row_s, -1))).sum())
    return total / s.shape[0] * temp**2


def test_kl_is_zero_for_identical_logits_and_matches_brute_force() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 11)
    assert kl_distillation_loss(logits, logits.clone(), 2.0).item() == pytest.approx(0, abs=1e-6)
    other = torch.randn(2, 5, 11)
    for temp in (1.0, 2.0, 4.0):
        got = kl_distillation_loss(logits, other, temp).item()
        assert got == pytest.approx(_brute_kl(logits, other, temp), rel=1e-5)
        assert got > 0


def test_squarehead_matches_formula_and_vanishes_for_equal_states() -> None:
    torch.manual_seed(1)
    h_t = [torch.randn(2, 3, 4) for _ in range(2)]
    h_s = [h + 0.1 * torch.randn_like(h) for h in h_t]
    eps = torch.finfo(torch.bfloat16).eps
    want = sum(
        float(((a - b) ** 2).mean() / ((b**2).mean() + eps)) for a, b in zip(h_s, h_t, strict=True)
    )
    assert squarehead_loss(h_s, h_t).item() == pytest.approx(want, rel=1e-5)
    assert squarehead_loss(h_t, h_t).item() == 0.0


def test_regularization_is_zero_when_student_equals_teacher() -> None:
    model = tiny_llama(0)
    method = AdaptiveSparseTrainer(slorb=False, alpha_squarehead=1.0)
    method.with_teacher(copy.deepcopy(model))
    method.setup(model, torch.optim.SGD(model.parameters(), lr=0.1))
    for mask in method.masks.masks().values():  # make the student equal its dense teacher
        mask.fill_(True)
    x = tokens(0)
    model(x, labels=x)
    assert method.regularization().item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("build", [tiny_gpt2, tiny_llama])
def test_regularization_equals_weighted_kl_and_squarehead(build) -> None:
    model = build(1)
    teacher = build(1)
    method = AdaptiveSparseTrainer(
        slorb=False, temperature=3.0, alpha_kl=0.7, alpha_squarehead=0.2
    ).setup(model, torch.optim.SGD(model.parameters(), lr=0.1))
    x = tokens(1)
    out = model(x, labels=x)
    assert out.hidden_states is not None  # requested by the method for SquareHead
    reg = method.regularization()
    with torch.no_grad():
        t_out = teacher(x, output_hidden_states=True)
    want = 0.7 * _brute_kl(out.logits.detach(), t_out.logits, 3.0)
    want += 0.2 * float(squarehead_loss(out.hidden_states[1:], t_out.hidden_states[1:]))
    assert reg.item() == pytest.approx(want, rel=1e-4)
    assert reg.requires_grad
    assert method.regularization().item() == 0.0  # the record is consumed
    assert method.loss(out.loss).item() == pytest.approx(0.33 * out.loss.item())


def test_teacher_stays_frozen_and_dense() -> None:
    model = tiny_gpt2(2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    method = AdaptiveSparseTrainer(slorb_k=8).setup(model, opt)
    teacher_state = {k: v.clone() for k, v in method.teacher.state_dict().items()}
    for step in range(3):
        x = tokens(step)
        loss = method.loss(model(x, labels=x).loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(torch.equal(v, teacher_state[k]) for k, v in method.teacher.state_dict().items())
    assert not any(k.endswith("_mask") for k in method.teacher.state_dict())
    assert not any(p.requires_grad for p in method.teacher.parameters())


def test_eval_forwards_are_not_recorded() -> None:
    model = nn.Sequential(nn.Linear(8, 4))
    method = AdaptiveSparseTrainer(slorb=False).setup(model)
    model.eval()
    model(torch.randn(2, 8))
    assert method.regularization().item() == 0.0
