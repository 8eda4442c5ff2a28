"""Tests of the frame-model losses (models/losses.py)."""
from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from models.losses import FrameLoss, contrastive_pair_loss

torch.set_num_threads(1)


def _unit(*rows: list[float]) -> torch.Tensor:
    return F.normalize(torch.tensor(rows, dtype=torch.float32), dim=1)


def test_zero_for_identical_same_class_pairs() -> None:
    emb = torch.randn(1, 16).repeat(4, 1)
    loss = contrastive_pair_loss(emb, torch.tensor([1, 1, 1, 1]))
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


def test_zero_for_different_classes_beyond_the_margin() -> None:
    emb = _unit([1.0, 0.0], [-1.0, 0.0])  # distance 2
    assert contrastive_pair_loss(emb, torch.tensor([0, 1]), margin=1.5).item() == 0.0
    raw = torch.tensor([[0.0, 0.0], [3.0, 4.0]])  # distance 5
    assert contrastive_pair_loss(raw, torch.tensor([0, 1]), 4.0, normalize=False).item() == 0.0


def test_positive_within_the_margin_and_for_distinct_same_class_pairs() -> None:
    emb = _unit([1.0, 0.0], [0.0, 1.0])  # distance sqrt(2)
    different = contrastive_pair_loss(emb, torch.tensor([0, 1]), margin=2.0)
    same = contrastive_pair_loss(emb, torch.tensor([1, 1]), margin=2.0)
    assert different.item() == pytest.approx((2.0 - math.sqrt(2.0)) ** 2, rel=1e-5)
    assert same.item() == pytest.approx(2.0, rel=1e-5)


def test_matches_a_hand_computed_three_sample_value() -> None:
    emb = torch.tensor([[0.0, 0.0], [0.6, 0.8], [0.0, 0.5]])
    labels = torch.tensor([0, 0, 1])
    # (0,1) same, d^2 = 1; (0,2) different, d = 0.5 -> 0.5^2; (1,2) different, d = sqrt(0.45).
    expected = (1.0 + 0.25 + (1.0 - math.sqrt(0.45)) ** 2) / 3.0
    loss = contrastive_pair_loss(emb, labels, margin=1.0, normalize=False)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_normalisation_makes_the_loss_scale_free() -> None:
    emb, labels = torch.randn(6, 8), torch.tensor([0, 1, 0, 1, 1, 0])
    loss = contrastive_pair_loss(emb, labels)
    assert contrastive_pair_loss(emb * 50.0, labels).item() == pytest.approx(loss.item(), rel=1e-4)
    assert contrastive_pair_loss(emb * 50.0, labels, normalize=False).item() > 10 * loss.item()


@pytest.mark.parametrize("normalize", [True, False])
def test_gradients_are_finite_for_identical_embeddings(normalize: bool) -> None:
    emb = torch.ones(4, 8).requires_grad_()
    loss = contrastive_pair_loss(emb, torch.tensor([0, 1, 0, 1]), normalize=normalize)
    loss.backward()
    assert loss.item() > 0  # different-class pairs at distance 0 cost margin^2
    assert torch.isfinite(emb.grad).all()


def test_fewer_than_two_samples_give_zero_with_a_graph() -> None:
    emb = torch.randn(1, 4, requires_grad=True)
    loss = contrastive_pair_loss(emb, torch.tensor([1]))
    assert loss.item() == 0.0 and loss.requires_grad
    assert contrastive_pair_loss(torch.zeros(0, 4), torch.zeros(0)).item() == 0.0


def test_gradient_pulls_same_class_together_and_pushes_classes_apart() -> None:
    for labels, sign in ((torch.tensor([0, 0]), 1.0), (torch.tensor([0, 1]), -1.0)):
        emb = torch.tensor([[0.0, 0.0], [0.5, 0.0]], requires_grad=True)
        contrastive_pair_loss(emb, labels, normalize=False).backward()
        # Gradient descent moves sample 1 (at +x) towards sample 0 only for the same class.
        assert sign * emb.grad[1, 0] > 0 and sign * emb.grad[0, 0] < 0


def test_frame_loss_with_weight_zero_is_cross_entropy() -> None:
    logits, labels = torch.randn(8, 2), torch.randint(0, 2, (8,))
    out = FrameLoss()(logits, torch.randn(8, 4), labels)
    assert set(out) == {"loss", "ce", "contrastive"}
    torch.testing.assert_close(out["loss"], F.cross_entropy(logits, labels))
    assert out["contrastive"].item() == 0.0
    # The embedding is not needed when the term is off.
    torch.testing.assert_close(FrameLoss()(logits, None, labels)["loss"], out["loss"])


def test_frame_loss_adds_the_weighted_contrastive_term() -> None:
    logits, emb = torch.randn(6, 2, requires_grad=True), torch.randn(6, 5, requires_grad=True)
    labels = torch.tensor([0, 1, 1, 0, 1, 0])
    loss_fn = FrameLoss(contrastive_weight=0.5, margin=1.2)
    out = loss_fn(logits, emb, labels)
    expected = F.cross_entropy(logits, labels) + 0.5 * contrastive_pair_loss(emb, labels, 1.2)
    torch.testing.assert_close(out["loss"], expected)
    out["loss"].backward()
    assert emb.grad.abs().sum() > 0 and logits.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="embeddings"):
        FrameLoss(contrastive_weight=1.0)(logits, None, labels)


def test_frame_loss_label_smoothing_and_single_logit() -> None:
    logits, labels = torch.randn(8, 2), torch.randint(0, 2, (8,))
    smooth = FrameLoss(label_smoothing=0.1)(logits, None, labels)["ce"]
    torch.testing.assert_close(smooth, F.cross_entropy(logits, labels, label_smoothing=0.1))
    fake_logit = torch.randn(8, 1)
    ce = FrameLoss(label_smoothing=0.2)(fake_logit, None, labels)["ce"]
    target = labels.float() * 0.8 + 0.1
    torch.testing.assert_close(ce, F.binary_cross_entropy_with_logits(fake_logit[:, 0], target))


@pytest.mark.parametrize("kwargs", [dict(contrastive_weight=-1.0), dict(margin=-0.5),
                                    dict(label_smoothing=1.0)])
def test_frame_loss_validates(kwargs: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        FrameLoss(**kwargs)
