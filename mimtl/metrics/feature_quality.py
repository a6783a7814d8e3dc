"""Are generated feature vectors any good? Per-class checks of a generated set against real features.

* :func:`mmd_rbf`: squared maximum mean discrepancy (unbiased, Gaussian kernel, median-distance
  bandwidth) between real and generated vectors;
* :func:`precision_recall_knn`: improved precision and recall (Kynkäänniemi et al. 2019): the
  share of generated vectors inside the real k-NN manifold, and of real vectors inside the
  generated one;
* :func:`memorisation`: each generated vector's distance to its nearest training vector, against
  the real training vectors' leave-one-out nearest-neighbour distances (a ratio well below 1 means
  copies);
* :func:`train_synthetic_test_real`: balanced accuracy of a classifier trained on generated
  vectors only and tested on held-out real ones;
* :func:`real_vs_fake_auc`: cross-validated ROC AUC of a classifier telling real from generated
  (0.5: indistinguishable);
* :func:`feature_quality_report` runs them all per class, :func:`pca_plot` draws both sets on the
  real data's first two principal components.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = [
    "feature_quality_report",
    "memorisation",
    "mmd_rbf",
    "pca_plot",
    "precision_recall_knn",
    "real_vs_fake_auc",
    "train_synthetic_test_real",
]


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.maximum((a**2).sum(1)[:, None] + (b**2).sum(1)[None, :] - 2 * a @ b.T, 0.0)


def mmd_rbf(x: np.ndarray, y: np.ndarray, bandwidth: float | None = None) -> float:
    """Unbiased squared MMD between samples ``x`` (n, d) and ``y`` (m, d) with a Gaussian kernel.

    ``bandwidth`` (sigma) defaults to the median pairwise distance of the pooled samples.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 2 or len(y) < 2:
        raise ValueError(f"mmd_rbf needs at least 2 vectors on each side, got {len(x)} and {len(y)}")
    if bandwidth is None:
        pooled = np.vstack([x, y])
        d = _sq_dists(pooled, pooled)
        bandwidth = float(np.sqrt(np.median(d[np.triu_indices(len(pooled), 1)]))) or 1.0
    gamma = 1.0 / (2 * bandwidth**2)
    kxx, kyy, kxy = (np.exp(-gamma * _sq_dists(a, b)) for a, b in ((x, x), (y, y), (x, y)))
    n, m = len(x), len(y)
    return float(
        (kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean()
    )


def _knn_radii(a: np.ndarray, k: int) -> np.ndarray:
    d = np.sqrt(_sq_dists(a, a))
    np.fill_diagonal(d, np.inf)
    k = min(k, len(a) - 1)
    return np.sort(d, axis=1)[:, k - 1]


def precision_recall_knn(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """(precision, recall): generated vectors within some real vector's k-NN ball, and vice versa."""
    real, fake = np.asarray(real, float), np.asarray(fake, float)
    r_real, r_fake = _knn_radii(real, k), _knn_radii(fake, k)
    d = np.sqrt(_sq_dists(fake, real))  # (fake, real)
    precision = float((d <= r_real[None, :]).any(axis=1).mean())
    recall = float((d.T <= r_fake[None, :]).any(axis=1).mean())
    return precision, recall


def memorisation(train: np.ndarray, fake: np.ndarray) -> dict[str, float]:
    """Median nearest-training-vector distance of generated vectors, of real ones (leave-one-out), their ratio."""
    train, fake = np.asarray(train, float), np.asarray(fake, float)
    fake_nn = np.sqrt(_sq_dists(fake, train)).min(axis=1)
    d = np.sqrt(_sq_dists(train, train))
    np.fill_diagonal(d, np.inf)
    real_nn = d.min(axis=1)
    ratio = float(np.median(fake_nn) / np.median(real_nn)) if np.median(real_nn) > 0 else float("nan")
    return {
        "fake_to_train_median": float(np.median(fake_nn)),
        "real_to_real_median": float(np.median(real_nn)),
        "ratio": ratio,
    }


def train_synthetic_test_real(
    fake: np.ndarray, fake_labels: np.ndarray, real: np.ndarray, real_labels: np.ndarray
) -> float:
    """Balanced accuracy on real vectors of a logistic regression trained on generated ones only."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(fake, fake_labels)
    return float(balanced_accuracy_score(real_labels, model.predict(real)))


def real_vs_fake_auc(real: np.ndarray, fake: np.ndarray, seed: int = 0) -> float:
    """Cross-validated (5-fold, or fewer for small sets) ROC AUC of logistic regression on real vs generated."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.vstack([real, fake])
    y = np.r_[np.zeros(len(real)), np.ones(len(fake))]
    folds = int(min(5, len(real), len(fake)))
    if folds < 2:
        raise ValueError("real_vs_fake_auc needs at least 2 real and 2 generated vectors")
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
    scores = cross_val_predict(
        model, x, y, cv=StratifiedKFold(folds, shuffle=True, random_state=seed), method="predict_proba"
    )[:, 1]
    return float(roc_auc_score(y, scores))


def feature_quality_report(
    train: np.ndarray,
    train_labels: np.ndarray,
    fake: np.ndarray,
    fake_labels: np.ndarray,
    test: np.ndarray | None = None,
    test_labels: np.ndarray | None = None,
    k: int = 3,
) -> dict:
    """Every check per class (``per_class[c]``) and train-on-synthetic/test-on-real over all classes.

    ``train`` are the real vectors the generator learned from; ``test`` real vectors it never saw
    (TSTR uses them; without them TSTR is measured on ``train``).
    """
    report: dict = {"per_class": {}}
    for c in np.unique(train_labels):
        r, f = train[train_labels == c], fake[fake_labels == c]
        if len(r) < 2 or len(f) < 2:
            continue
        precision, recall = precision_recall_knn(r, f, k)
        report["per_class"][str(c)] = {
            "n_real": int(len(r)),
            "n_generated": int(len(f)),
            "mmd2": mmd_rbf(r, f),
            "precision": precision,
            "recall": recall,
            "memorisation": memorisation(r, f),
            "real_vs_fake_auc": real_vs_fake_auc(r, f),
        }
    if test is None:
        test, test_labels = train, train_labels
    if len(np.unique(fake_labels)) > 1:
        report["train_synthetic_test_real"] = train_synthetic_test_real(fake, fake_labels, test, test_labels)
    return report


def pca_plot(
    real: np.ndarray,
    real_labels: np.ndarray,
    fake: np.ndarray,
    fake_labels: np.ndarray,
    path: str | os.PathLike,
    title: str = "",
) -> Path:
    """Real (dots) and generated (crosses) vectors per class on the real data's first two principal components."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA

    from mimtl.utils import replace_atomic

    pca = PCA(n_components=2).fit(real)
    pr, pf = pca.transform(real), pca.transform(fake)
    fig, ax = plt.subplots(figsize=(5, 4))
    for i, c in enumerate(np.unique(np.r_[real_labels, fake_labels])):
        colour = f"C{i}"
        ax.scatter(*pr[real_labels == c].T, s=12, c=colour, marker="o", label=f"{c} real")
        ax.scatter(*pf[fake_labels == c].T, s=12, c=colour, marker="x", alpha=0.6, label=f"{c} generated")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title(title or "real vs generated features (PCA of the real)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    out = replace_atomic(Path(path), lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return out
