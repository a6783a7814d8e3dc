"""Stage 3 of the ACGAN method: an MLP grading classifier on feature vectors, as a scikit-learn estimator.

:class:`FeatureMLPClassifier` trains MONAI's :class:`~monai.networks.nets.FullyConnectedNet` with
MONAI's :class:`~monai.engines.SupervisedTrainer`, and follows scikit-learn's estimator API so that
imbalanced-learn's samplers (``RandomOverSampler``, ``SMOTE``, ``BorderlineSMOTE``, ``ADASYN``) and
:class:`~mimtl.engines.acgan_sampler.ACGANOverSampler` chain in front of it in an
``imblearn.pipeline.Pipeline``: the sampler then sees the training fold only.

Losses: ``"ce"`` (cross-entropy on logits), ``"weighted"`` (cross-entropy with class weights
``n / (C * n_c)``) and ``"focal"`` (MONAI's ``FocalLoss`` on logits with softmax, optionally weighted).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from torch import nn

__all__ = ["CLASSIFIER_LOSSES", "FeatureMLPClassifier", "balanced_class_weights", "quiet_logger"]

CLASSIFIER_LOSSES = ("ce", "weighted", "focal")


def quiet_logger() -> logging.Logger:
    """The logger of the small inner fits (a fold's MLP, a fold's GAN): warnings only."""
    logger = logging.getLogger("mimtl.engines.inner_fit")
    logger.setLevel(logging.WARNING)
    return logger


def balanced_class_weights(y: np.ndarray, n_classes: int) -> np.ndarray:
    """``n / (C * n_c)`` per class (scikit-learn's "balanced"); a class absent from ``y`` gets weight 0."""
    counts = np.bincount(np.asarray(y, dtype=int), minlength=n_classes).astype(float)
    return np.where(counts > 0, counts.sum() / (n_classes * np.maximum(counts, 1)), 0.0)


class _FocalOnLabels(nn.Module):
    """MONAI's FocalLoss (softmax on logits) taking class indices ``(B,)``."""

    def __init__(self, gamma: float, weight: torch.Tensor | None) -> None:
        super().__init__()
        from monai.losses import FocalLoss

        self.focal = FocalLoss(use_softmax=True, to_onehot_y=True, gamma=gamma, weight=weight)

    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.focal(logits, y.view(-1, 1))


class FeatureMLPClassifier(ClassifierMixin, BaseEstimator):
    """An MLP on feature vectors (FullyConnectedNet + SupervisedTrainer), scikit-learn style.

    Args:
        hidden: widths of the hidden layers.
        dropout: dropout of the hidden layers.
        epochs: training epochs over the (resampled) training set.
        batch_size: mini-batch size (the last batch may be partial).
        lr, weight_decay: AdamW's.
        loss: ``"ce"``, ``"weighted"`` or ``"focal"``.
        gamma: the focal loss's focusing parameter.
        focal_weighted: weight the focal loss by class as ``"weighted"`` does.
        random_state: seed of the initial weights and the batch order.
        device: ``"cpu"`` or ``"cuda"``.

    After ``fit``: ``classes_`` (sorted labels), ``network_`` (the trained FullyConnectedNet, eval mode).
    """

    def __init__(
        self,
        hidden: Sequence[int] = (64,),
        dropout: float = 0.2,
        epochs: int = 100,
        batch_size: int = 32,
        lr: float = 3e-3,
        weight_decay: float = 1e-3,
        loss: str = "ce",
        gamma: float = 2.0,
        focal_weighted: bool = False,
        random_state: int | None = 0,
        device: str = "cpu",
    ) -> None:
        self.hidden = hidden
        self.dropout = dropout
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.loss = loss
        self.gamma = gamma
        self.focal_weighted = focal_weighted
        self.random_state = random_state
        self.device = device

    def _loss(self, y: np.ndarray, n_classes: int) -> nn.Module:
        if self.loss not in CLASSIFIER_LOSSES:
            raise ValueError(f"FeatureMLPClassifier: loss must be one of {CLASSIFIER_LOSSES}, got {self.loss!r}")
        weight = torch.as_tensor(balanced_class_weights(y, n_classes), dtype=torch.float, device=self.device)
        if self.loss == "ce":
            return nn.CrossEntropyLoss()
        if self.loss == "weighted":
            return nn.CrossEntropyLoss(weight=weight)
        return _FocalOnLabels(self.gamma, weight if self.focal_weighted else None)

    def fit(self, X: np.ndarray, y: np.ndarray) -> FeatureMLPClassifier:
        from monai.engines import SupervisedTrainer
        from monai.networks.nets import FullyConnectedNet
        from torch.utils.data import DataLoader, TensorDataset

        X = np.asarray(X, dtype=np.float32)
        self.classes_, y_idx = np.unique(np.asarray(y), return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(
                f"FeatureMLPClassifier: the training labels hold one class only ({self.classes_.tolist()})"
            )
        seed = 0 if self.random_state is None else int(self.random_state)
        torch.manual_seed(seed)
        net = FullyConnectedNet(X.shape[1], len(self.classes_), list(self.hidden), dropout=self.dropout).to(self.device)
        data = TensorDataset(torch.from_numpy(X), torch.from_numpy(y_idx.astype(np.int64)))
        loader = DataLoader(
            data, batch_size=int(self.batch_size), shuffle=True, generator=torch.Generator().manual_seed(seed)
        )
        trainer = SupervisedTrainer(
            device=torch.device(self.device),
            max_epochs=int(self.epochs),
            train_data_loader=loader,
            network=net,
            optimizer=torch.optim.AdamW(net.parameters(), lr=self.lr, weight_decay=self.weight_decay),
            loss_function=self._loss(y_idx, len(self.classes_)),
            decollate=False,
        )
        # thousands of such fits run in one comparison: their per-epoch lines would bury the run's log
        trainer.logger = quiet_logger()
        trainer.run()
        self.network_ = net.eval()
        self.n_features_in_ = X.shape[1]
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"FeatureMLPClassifier: expected {self.n_features_in_} features per row, got shape {X.shape}"
            )
        with torch.no_grad():
            logits = self.network_(torch.from_numpy(X).to(self.device))
        return torch.softmax(logits, dim=1).cpu().numpy()

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(axis=1)]
