"""The label-free estimate tracks realised performance, also under covariate shift."""

import numpy as np
from sklearn.linear_model import LogisticRegression

from monitoring.estimate import estimate, expected_roc_auc
from training.evaluate import classification_metrics


def population(n: int, shift: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    x = rng.normal(shift, 1.0, size=(n, 1))
    p = 1 / (1 + np.exp(-(1.5 * x[:, 0] - 1.0)))  # p(y|x) is the same before and after shift
    y = (rng.uniform(size=n) < p).astype(int)
    return x, y


def test_estimate_tracks_realised_accuracy_and_auc_under_covariate_shift() -> None:
    rng = np.random.default_rng(0)
    x, y = population(20_000, 0.0, rng)
    model = LogisticRegression().fit(x, y)  # well calibrated on its own population
    seen = []
    for shift in (0.0, 0.6, 1.2, -0.8):
        xs, ys = population(20_000, shift, rng)
        proba = model.predict_proba(xs)
        est = estimate(proba, ["0", "1"])
        real = classification_metrics(ys.astype(str), proba, ["0", "1"])
        assert abs(est["accuracy"] - real["accuracy"]) < 0.03, (shift, est, real)
        assert abs(est["roc_auc"] - real["roc_auc"]) < 0.04, (shift, est, real)
        seen.append((est["accuracy"], real["accuracy"]))
    # the shifts move realised accuracy, and the estimate moves the same way
    est_order = np.argsort([e for e, _ in seen])
    real_order = np.argsort([r for _, r in seen])
    assert list(est_order) == list(real_order)


def test_expected_auc_edges() -> None:
    assert np.isnan(expected_roc_auc(np.array([0.5])))
    assert np.isnan(expected_roc_auc(np.array([0.0, 0.0])))
    # by hand: rows .9/.5/.1 step TPR by .9,.5,.1 (/1.5) and FPR by .1,.5,.9 (/1.5): area 77/90
    assert abs(expected_roc_auc(np.array([0.1, 0.9, 0.5])) - 77 / 90) < 1e-12


def test_estimate_at_the_threshold_tracks_realised_f1_under_covariate_shift() -> None:
    """With a decision threshold the estimate decides classes as the service does: its expected
    precision, recall and F1 track the realised ones at the same threshold (issue 19)."""
    rng = np.random.default_rng(1)
    x, y = population(20_000, -1.0, rng)  # imbalanced: about 15% positive
    model = LogisticRegression().fit(x, y)
    for shift in (-1.0, -0.4, 0.3):
        xs, ys = population(20_000, shift, rng)
        proba = model.predict_proba(xs)
        est = estimate(proba, ["0", "1"], 0.3, 1)
        real = classification_metrics(ys.astype(str), proba, ["0", "1"], 0.3, 1)
        for name in ("accuracy", "precision", "recall", "f1"):
            assert abs(est[name] - real[name]) < 0.03, (shift, name, est, real)
        argmax = classification_metrics(ys.astype(str), proba, ["0", "1"])
        assert real["recall"] > argmax["recall"]  # the threshold, not argmax, was used
    # the positive class may be the first column: the same figures with the columns swapped
    swapped = estimate(proba[:, ::-1], ["1", "0"], 0.3, 0)
    assert swapped == estimate(proba, ["0", "1"], 0.3, 1)
