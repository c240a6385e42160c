import math

import torch

from diffbalance.classify.losses import balanced_softmax_loss, build_loss, cross_entropy, log_class_prior


def _ce_by_hand(z, q):  # −Σ_k q_k log softmax(z)_k, averaged over rows
    return -(q * (z - z.exp().sum(1, keepdim=True).log())).sum(1).mean()


def test_balanced_softmax_is_ce_on_logits_plus_log_prior():
    z = torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, 3.0]])
    counts = [100, 30, 10]
    prior = log_class_prior(counts)
    torch.testing.assert_close(prior, torch.tensor([math.log(100 / 140), math.log(30 / 140), math.log(10 / 140)]))
    shifted = z + prior
    hard = torch.tensor([0, 2])
    torch.testing.assert_close(balanced_softmax_loss(z, hard, prior), _ce_by_hand(shifted, torch.eye(3)[hard]))
    soft = torch.tensor([[0.7, 0.3, 0.0], [0.0, 0.4, 0.6]])
    torch.testing.assert_close(balanced_softmax_loss(z, soft, prior), _ce_by_hand(shifted, soft))
    # the shift raises the loss of a rare true class relative to plain CE
    assert balanced_softmax_loss(z, torch.tensor([2, 2]), prior) > cross_entropy(z, torch.tensor([2, 2]))


def test_cross_entropy_soft_equals_hard_and_smoothing():
    z = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 3, 0])
    torch.testing.assert_close(cross_entropy(z, y), cross_entropy(z, torch.eye(4)[y]))
    smoothed = 0.9 * torch.eye(4)[y] + 0.1 / 4
    torch.testing.assert_close(cross_entropy(z, y, label_smoothing=0.1), _ce_by_hand(z, smoothed))


def test_build_loss_and_empty_class():
    z = torch.zeros(2, 3)
    y = torch.tensor([0, 1])
    assert torch.isfinite(log_class_prior([5, 0, 5])).all()
    plain = build_loss("ce", [5, 0, 5], 0.0, torch.device("cpu"))
    bal = build_loss("balanced_softmax", [5, 0, 5], 0.1, torch.device("cpu"))
    torch.testing.assert_close(plain(z, y), torch.tensor(math.log(3)))
    assert torch.isfinite(bal(z, y))
