"""The fine-tuning loop on toy encoders: the closed-form head, budgets in steps, per-phase early stopping."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from torch import nn

from medcl.evaluate.finetune_loop import MIN_STEPS_PER_EPOCH, FineTuneOptions, Trainer, fit_linear_head
from medcl.models.heads import DiagnosisModel


class ToyEncoder(nn.Module):
    """A linear map of flat vectors; ``out_features`` as medcl's encoders have."""

    def __init__(self, d_in: int = 4, d_out: int = 8) -> None:
        super().__init__()
        self.net, self.out_features = nn.Linear(d_in, d_out), d_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))


def toy_data(n: int = 40, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """``n`` 4-vectors whose label is the sign of the first coordinate (noise-free)."""
    x = torch.randn(n, 4, generator=torch.Generator().manual_seed(seed))
    return x, (x[:, 0] > 0).numpy().astype(float)


def batches(x: torch.Tensor, rows: np.ndarray, size: int) -> list[dict[str, torch.Tensor]]:
    return [{"image": x[rows[i:i + size]], "index": torch.as_tensor(rows[i:i + size])}
            for i in range(0, len(rows), size)]


def test_closed_form_binary_head_is_logistic_regression_at_one_common_scale():
    """The head's logits equal scikit-learn's decision function fitted on x / rms(x), and a
    rescaled encoder (x 1000) gets the same predictions, so C means the same for every encoder."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5)) * np.array([1, 3, 0.1, 10, 1])
    y = (x[:, 0] + 0.1 * x[:, 3] + rng.normal(scale=0.5, size=60) > 0).astype(float)
    weight, bias = fit_linear_head("binary", x, y, c=0.1, n_out=1)
    scale = np.sqrt(np.mean(x**2))
    reference = LogisticRegression(C=0.1, max_iter=5000).fit(x / scale, y).decision_function(x / scale)
    np.testing.assert_allclose(x @ weight.T[:, 0] + bias[0], reference, atol=1e-5)
    w2, b2 = fit_linear_head("binary", 1000 * x, y, c=0.1, n_out=1)
    np.testing.assert_allclose((1000 * x) @ w2.T[:, 0] + b2[0], reference, atol=1e-4)


def test_closed_form_heads_multiclass_with_an_absent_class_and_continuous():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(90, 4))
    classes = np.argmax(x[:, :3], axis=1)  # classes 0..2 present; class 3 absent from training
    weight, bias = fit_linear_head("multiclass", x, classes.astype(float), c=10.0, n_out=4)
    probs = torch.softmax(torch.as_tensor(x @ weight.T + bias), dim=1).numpy()
    assert weight.shape == (4, 4) and probs[:, 3].max() < 1e-3
    assert (probs.argmax(1) == classes).mean() > 0.9
    target = x @ np.array([1.0, -2.0, 0.5, 0.0]) + 3.0  # ridge at a tiny alpha recovers a noiseless map
    w, b = fit_linear_head("continuous", x, target, c=1e6, n_out=1)
    np.testing.assert_allclose(w[0], [1.0, -2.0, 0.5, 0.0], atol=1e-3)
    assert b[0] == pytest.approx(3.0, abs=1e-3)


def _trainer(mode: str, lr: float, epochs: int = 3, patience: int = 2, seed: int = 0,
             init: str = "pretrained") -> tuple[Trainer, list, list]:
    torch.manual_seed(seed)
    x, y = toy_data()
    train, val = np.arange(20), np.arange(20, 40)
    model = DiagnosisModel(ToyEncoder(), "binary")
    options = FineTuneOptions(mode=mode, lr=lr, epochs=epochs, patience=patience, batch_size=16, init=init,
                              augmentation="none", device="cpu").check()
    return Trainer(model, "binary", y, train, options), batches(x, train, 16), batches(x, val, 20)


def test_an_epoch_is_at_least_min_steps_in_whole_passes():
    """20 training vectors at batch 16 are 2 steps a pass: an epoch is 5 passes (10 steps)."""
    trainer, train, val = _trainer("full", lr=1e-3, epochs=2, patience=5)
    steps = []
    trainer.model.head.register_full_backward_hook(lambda *a: steps.append(1))
    trainer.fit(train, val)
    assert len(trainer.history) == 2 and trainer._passes == 2 * MIN_STEPS_PER_EPOCH // 2
    assert len(steps) == 2 * MIN_STEPS_PER_EPOCH


def test_linear_phase_fits_the_head_and_a_worse_full_phase_is_not_kept():
    """lp-ft: the closed-form head separates the toy label on val; a full phase at an absurd rate
    (which wrecks the model) stops after its patience and the linear state is what is kept."""
    trainer, train, val = _trainer("lp-ft", lr=50.0, epochs=10, patience=2)
    trainer.fit(train, val)
    phases = [h["phase"] for h in trainer.history]
    assert phases[0] == "linear" and trainer.history[0]["val_score"] > 0.95 and trainer.head_c is not None
    linear_score = trainer.history[0]["val_score"]
    full = [h["val_score"] for h in trainer.history if h["phase"] == "full"]
    assert 3 <= len(full) < 10 and max(full) < linear_score  # stopped on its own patience
    assert trainer.best_epoch == 1
    assert trainer._validate(val)[0] == pytest.approx(linear_score)


def test_full_phase_patience_counts_from_its_own_best():
    """A full phase that never changes the model (tiny rate): its first epoch is its own best, so it
    runs 1 + patience epochs even though it never beats the linear phase's (equal) score."""
    trainer, train, val = _trainer("lp-ft", lr=1e-12, epochs=10, patience=3)
    trainer.fit(train, val)
    assert [h["phase"] for h in trainer.history] == ["linear"] + ["full"] * 4


def test_lp_ft_from_scratch_is_full_fine_tuning():
    """A random encoder has no features to protect: no closed-form head, the full phase only."""
    trainer, train, val = _trainer("lp-ft", lr=1e-3, epochs=2, patience=5, init="scratch")
    head = trainer.model.head.weight.detach().clone()
    trainer.fit(train, val)
    assert [h["phase"] for h in trainer.history] == ["full", "full"] and trainer.head_c is None
    assert not torch.equal(head, trainer.model.head.weight)
