"""The `deep` family's estimators: a PyTorch tabular MLP (core.deep_net) trained by skorch.

Importing this module never imports torch: an unpickled model imports it on its first call, so the
service starts without it and needs it (the `deep` extra) only when it loads a deep model.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.validation import check_is_fitted, validate_data

INSTALL_HINT = "pip install torch==2.13.0 'servewatch[deep]'"
MIN_ROWS_FOR_EARLY_STOPPING = 100
"""Below this many rows the whole set trains for `max_epochs` (a validation split would be a
handful of rows, too noisy to stop on)."""


def missing_packages() -> list[str]:
    """The packages the `deep` family needs that are not installed (empty when it can run)."""
    from importlib.util import find_spec

    return [name for name in ("torch", "skorch") if find_spec(name) is None]


@contextmanager
def torch_settings(threads: int, deterministic: bool) -> Iterator[Any]:
    """torch with `threads` intra-op threads (and deterministic algorithms), restored after."""
    import torch

    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    if old_threads != max(1, threads):  # setting it costs more than a small model's call
        torch.set_num_threads(max(1, threads))
    if deterministic and not old_det:
        torch.use_deterministic_algorithms(True)
    try:
        yield torch
    finally:
        if torch.get_num_threads() != old_threads:
            torch.set_num_threads(old_threads)
        if deterministic and not old_det:
            torch.use_deterministic_algorithms(False)


def float_rows(est: Any, X: Any) -> np.ndarray[Any, Any]:
    """X as float32 rows for a fitted estimator: a plain 2-D array of finite numbers with the
    fitted width (what a Pipeline hands over) is checked by hand, since scikit-learn's
    validate_data costs more than a small network's call; anything else goes through it."""
    if (
        type(X) is np.ndarray
        and X.ndim == 2
        and X.shape[1] == est.n_features_in_
        and X.dtype.kind == "f"
        and np.isfinite(X).all()
    ):
        return np.ascontiguousarray(X, dtype=np.float32)
    out: np.ndarray[Any, Any] = validate_data(est, X, dtype=np.float32, reset=False)
    return out


def use_threads(threads: int) -> Any:
    """torch, with its intra-op threads set to `threads` for the process (once: setting and
    restoring them on every call cost more than a small network's call). Left at torch's default
    (every core), a 32-row call on a loaded 2-core machine took 500 ms instead of 1."""
    import torch

    if torch.get_num_threads() != max(1, threads):
        torch.set_num_threads(max(1, threads))
    return torch


class _DeepBase(BaseEstimator):  # type: ignore[misc]
    """An MLP for tabular rows: embeddings for the first `n_categorical` columns (ordinal codes),
    batch normalisation, dropout, AdamW with weight decay, a cosine learning-rate schedule, and
    early stopping on a validation split (`validation_fraction`) restoring the best epoch.

    Reproducible for a `random_state` on the CPU (seeded torch, deterministic algorithms,
    `threads` intra-op threads). Only the fitted module is kept (`module_`): skorch is needed
    to train, torch alone to predict.
    """

    def __init__(
        self,
        n_categorical: int = 0,
        hidden_units: int = 64,
        depth: int = 2,
        dropout: float = 0.2,
        weight_decay: float = 1e-4,
        learning_rate: float = 3e-3,
        batch_size: int = 256,
        max_epochs: int = 60,
        patience: int = 8,
        validation_fraction: float = 0.15,
        embedding_max_dim: int = 16,
        random_state: int = 0,
        threads: int = 1,
    ) -> None:
        self.n_categorical = n_categorical
        self.hidden_units = hidden_units
        self.depth = depth
        self.dropout = dropout
        self.weight_decay = weight_decay
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.embedding_max_dim = embedding_max_dim
        self.random_state = random_state
        self.threads = threads

    _classifier = False

    def _train(self, x: np.ndarray[Any, Any], target: np.ndarray[Any, Any], n_out: int) -> None:
        missing = missing_packages()
        if missing:
            raise ImportError(
                f"the deep family needs {', '.join(missing)}, not installed here: {INSTALL_HINT}"
            )
        from skorch import NeuralNet
        from skorch.callbacks import EarlyStopping, LRScheduler
        from skorch.dataset import ValidSplit
        from torch import nn
        from torch.optim import AdamW
        from torch.optim.lr_scheduler import CosineAnnealingLR

        from core.deep_net import TabularNet

        k = int(self.n_categorical)
        if not 0 <= k <= x.shape[1]:
            raise ValueError(f"n_categorical={k} but the rows have {x.shape[1]} columns")
        codes = x[:, :k]
        self.cardinalities_ = [int(max(codes[:, j].max(), -1)) + 2 for j in range(k)]
        n = len(x)
        split = n >= MIN_ROWS_FOR_EARLY_STOPPING
        callbacks: list[Any] = [
            ("schedule", LRScheduler(policy=CosineAnnealingLR, T_max=self.max_epochs))
        ]
        train_split = None
        if split:
            counts = np.unique(target, return_counts=True)[1] if self._classifier else None
            stratified = counts is not None and int(counts.min()) >= 10
            train_split = ValidSplit(
                self.validation_fraction, stratified=stratified, random_state=self.random_state
            )
            callbacks.append(
                ("early_stopping", EarlyStopping(patience=self.patience, load_best=True))
            )
        n_fit = int(n * (1 - self.validation_fraction)) if split else n
        # whole batches only (a batch of one row cannot be batch-normalised), at least two
        batch = max(2, min(self.batch_size, n_fit // 2))
        with torch_settings(self.threads, deterministic=True) as torch:
            torch.manual_seed(self.random_state)
            net = NeuralNet(
                module=TabularNet,
                module__n_numeric=x.shape[1] - k,
                module__cardinalities=self.cardinalities_,
                module__n_out=n_out,
                module__hidden_units=self.hidden_units,
                module__depth=self.depth,
                module__dropout=self.dropout,
                module__embedding_max_dim=self.embedding_max_dim,
                criterion=nn.CrossEntropyLoss if self._classifier else nn.MSELoss,
                optimizer=AdamW,
                optimizer__weight_decay=self.weight_decay,
                lr=self.learning_rate,
                max_epochs=self.max_epochs,
                batch_size=batch,
                iterator_train__shuffle=True,
                iterator_train__drop_last=True,
                train_split=train_split,
                callbacks=callbacks,
                device="cpu",
                verbose=0,
            )
            net.fit(x, target)
        self.module_ = net.module_.eval()
        self.epochs_ = len(net.history)

    def _output(self, X: Any) -> np.ndarray[Any, Any]:
        check_is_fitted(self, "module_")
        x = float_rows(self, X)
        torch = use_threads(self.threads)
        with torch.no_grad():
            out = self.module_(torch.from_numpy(np.ascontiguousarray(x)))
            if self._classifier:
                out = torch.softmax(out, dim=1)
            result: np.ndarray[Any, Any] = out.numpy().astype(np.float64)
        return result


class DeepClassifier(ClassifierMixin, _DeepBase):  # type: ignore[misc]
    """`_DeepBase` for classes (cross-entropy; probabilities by softmax)."""

    _classifier = True

    def fit(self, X: Any, y: Any) -> DeepClassifier:
        x = validate_data(self, X, dtype=np.float32)
        self._encoder = LabelEncoder().fit(y)
        self.classes_ = self._encoder.classes_
        self._train(x, self._encoder.transform(y).astype(np.int64), len(self.classes_))
        return self

    def predict_proba(self, X: Any) -> np.ndarray[Any, Any]:
        return self._output(X)

    def predict(self, X: Any) -> np.ndarray[Any, Any]:
        picked: np.ndarray[Any, Any] = self.classes_[np.argmax(self._output(X), axis=1)]
        return picked


class DeepRegressor(RegressorMixin, _DeepBase):  # type: ignore[misc]
    """`_DeepBase` for a number (squared error on the standardised target)."""

    def fit(self, X: Any, y: Any) -> DeepRegressor:
        x = validate_data(self, X, dtype=np.float32)
        yv = np.asarray(y, dtype=np.float64)
        self.y_mean_ = float(yv.mean())
        self.y_scale_ = float(yv.std()) or 1.0
        scaled = ((yv - self.y_mean_) / self.y_scale_).astype(np.float32).reshape(-1, 1)
        self._train(x, scaled, 1)
        return self

    def predict(self, X: Any) -> np.ndarray[Any, Any]:
        out: np.ndarray[Any, Any] = self._output(X)[:, 0] * self.y_scale_ + self.y_mean_
        return out
