"""The supervised upper bound's loss: cross-entropy (or regression) on every augmented view."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from medcl.errors import MedclInputError
from medcl.losses import SupervisedLoss, build_loss, view_cross_entropy, view_regression


def test_cross_entropy_by_hand_on_two_subjects_two_views():
    logits = torch.tensor([[[2.0, 0.0], [0.0, 0.0]],
                           [[1.0, 3.0], [0.0, math.log(3.0)]]], dtype=torch.float64)
    labels = torch.tensor([0, 1])
    # -log softmax of the true class, view by view: log(1 + e^-2), log 2, log(1 + e^-2), log(4/3)
    by_hand = (math.log(1 + math.exp(-2)) + math.log(2) + math.log(1 + math.exp(-2)) + math.log(4 / 3)) / 4
    got = view_cross_entropy(logits, labels)
    assert float(got) == pytest.approx(by_hand, abs=1e-12)
    torch.testing.assert_close(got, F.cross_entropy(logits.reshape(4, 2), torch.tensor([0, 0, 1, 1])))


def test_every_view_gets_the_loss_multiclass():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 3, 4, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 3, 2, 1, 3])
    per_view = [F.cross_entropy(logits[:, v], labels) for v in range(3)]
    torch.testing.assert_close(view_cross_entropy(logits, labels), torch.stack(per_view).mean())
    module = build_loss("supervised", classes=4)
    torch.testing.assert_close(module(logits, labels=labels.double()), view_cross_entropy(logits, labels))


def test_regression_is_the_squared_error_on_the_standardised_target():
    prediction = torch.tensor([[[0.0], [1.0]], [[-1.0], [0.5]]], dtype=torch.float64)
    age = torch.tensor([60.0, 40.0], dtype=torch.float64)  # standardised with mean 50, std 10: +1, -1
    by_hand = ((0 - 1) ** 2 + (1 - 1) ** 2 + (-1 + 1) ** 2 + (0.5 + 1) ** 2) / 4
    assert float(view_regression(prediction, age, target_mean=50.0, target_std=10.0)) == pytest.approx(by_hand)
    module = build_loss("supervised", classes=None, target_mean=50.0, target_std=10.0)
    assert module.outputs == 1 and "regression" in repr(module)
    assert float(module(prediction, labels=age[:, None])) == pytest.approx(by_hand)


@pytest.mark.parametrize("classes", [2, 3, 5])
def test_collapse_value_is_what_a_constant_uniform_prediction_scores(classes):
    loss = SupervisedLoss(classes=classes)
    uniform = torch.zeros(6, 2, classes)
    value = loss(uniform, labels=torch.arange(6) % classes)
    assert loss.collapse_value(6, 2) == pytest.approx(math.log(classes))
    assert float(value) == pytest.approx(math.log(classes))
    regression = SupervisedLoss(classes=None, target_mean=1.0, target_std=2.0)
    target = torch.tensor([-1.0, 3.0, 3.0, -1.0])  # standardised: -1, 1, 1, -1 (mean 0, variance 1)
    assert float(regression(torch.zeros(4, 2, 1), labels=target)) == pytest.approx(regression.collapse_value(4, 2))


def test_the_loss_trains_a_linear_head_on_separable_features():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(32) % 3
    features = torch.randn(3, 8, generator=g)[labels][:, None] + 0.3 * torch.randn(32, 2, 8, generator=g)
    head = torch.nn.Linear(8, 3)
    opt = torch.optim.SGD(head.parameters(), lr=0.5)
    first = None
    for _ in range(50):
        loss = view_cross_entropy(head(features), labels)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert first > 0.9 and loss.item() < 0.1 * first


@pytest.mark.parametrize(("call", "message"), [
    (lambda: view_cross_entropy(torch.randn(3, 2, 2), torch.tensor([0, 2, 1])), "class codes in [0, 2)"),
    (lambda: view_cross_entropy(torch.randn(3, 2, 1), torch.tensor([0, 0, 0])), "at least 2 classes"),
    (lambda: view_regression(torch.randn(3, 2, 2), torch.zeros(3)), "one output per view"),
    (lambda: view_regression(torch.randn(2, 2, 1), torch.tensor([1.0, float("nan")])), "target: expected finite"),
    (lambda: SupervisedLoss(classes=1), "classes: expected an integer >= 2"),
    (lambda: SupervisedLoss(classes=3)(torch.randn(3, 2, 3)), "labels: supervised needs"),
    (lambda: SupervisedLoss(classes=3)(torch.randn(3, 2, 4), labels=torch.zeros(3)), "expected 3 output(s)"),
    (lambda: SupervisedLoss(classes=2)(torch.randn(2, 2, 2), labels=torch.tensor([0.0, 0.5])), "integer class"),
])
def test_bad_input_names_the_argument(call, message):
    with pytest.raises(MedclInputError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        call()
