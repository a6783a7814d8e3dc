"""Stage 3 of the ACGAN method: the MLP, the samplers, the CV protocol (no leakage), feature tables,
grading metrics and the quality checks of generated features."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mimtl.data.feature_table import FeatureTableError, load_feature_table
from mimtl.engines.acgan_sampler import ACGANOverSampler, ratio_strategy
from mimtl.engines.feature_classifier import FeatureMLPClassifier, balanced_class_weights
from mimtl.engines.feature_cv import (
    BASELINE,
    FoldResult,
    VariantSpec,
    check_class_sizes,
    cross_validate_variants,
    make_pipeline,
    summarise,
    summary_table,
)
from mimtl.metrics.feature_quality import (
    feature_quality_report,
    memorisation,
    mmd_rbf,
    pca_plot,
    precision_recall_knn,
    real_vs_fake_auc,
)
from mimtl.metrics.grading import expected_calibration_error, grading_metrics

FAST_MLP = {"epochs": 30, "hidden": (16,), "batch_size": 32}
FAST_GAN = {"epochs": 40, "hidden": (32,), "latent_size": 8, "lr": 2e-3}


def _separable(n_major=30, n_minor=12, dim=6, shift=3.0, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_major + n_minor, dim))
    y = np.r_[np.zeros(n_major, int), np.ones(n_minor, int)]
    x[y == 1] += shift
    return x, y


# ---------------------------------------------------------------------------------------- metrics
def test_grading_metrics_by_hand():
    y = np.array([0, 0, 0, 1])
    proba = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.3, 0.7]])
    m = grading_metrics(y, proba, ["LGG", "HGG"])
    assert m["recall_LGG"] == pytest.approx(2 / 3) and m["recall_HGG"] == 1.0
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1) / 2)
    assert m["roc_auc"] == pytest.approx(2 / 3)  # 1 of 3 negatives scores above the positive's 0.7
    # ECE, 10 bins: confidences 0.9 (right), 0.6 (right), 0.8 (wrong), 0.7 (right), one per bin
    assert expected_calibration_error(y, proba) == pytest.approx((0.1 + 0.4 + 0.8 + 0.3) / 4)
    assert np.isnan(grading_metrics(np.zeros(4, int), proba)["roc_auc"])


# ---------------------------------------------------------------------------------------- classifier
@pytest.mark.parametrize("loss", ["ce", "weighted", "focal"])
def test_mlp_learns_separable_features(loss):
    x, y = _separable()
    clf = FeatureMLPClassifier(loss=loss, **FAST_MLP).fit(x, y)
    xt, yt = _separable(seed=1)
    assert (clf.predict(xt) == yt).mean() > 0.9
    p = clf.predict_proba(xt)
    np.testing.assert_allclose(p.sum(1), 1, rtol=1e-5)


def test_mlp_bad_input_and_class_weights():
    x, y = _separable()
    with pytest.raises(ValueError, match="loss must be one of"):
        FeatureMLPClassifier(loss="hinge", **FAST_MLP).fit(x, y)
    with pytest.raises(ValueError, match="one class"):
        FeatureMLPClassifier(**FAST_MLP).fit(x, np.zeros(len(y)))
    clf = FeatureMLPClassifier(**FAST_MLP).fit(x, y)
    with pytest.raises(ValueError, match="expected 6 features"):
        clf.predict(x[:, :5])
    np.testing.assert_allclose(balanced_class_weights(np.array([0, 0, 0, 1]), 2), [4 / 6, 2.0])


def test_classifier_exports_to_torchscript(tmp_path):
    x, y = _separable()
    clf = FeatureMLPClassifier(**FAST_MLP).fit(x, y)
    path = tmp_path / "classifier.ts"
    torch.jit.save(torch.jit.script(clf.network_), str(path))
    loaded = torch.jit.load(str(path))
    xt = torch.as_tensor(x[:5], dtype=torch.float32)
    torch.testing.assert_close(loaded(xt), clf.network_(xt))


# ---------------------------------------------------------------------------------------- samplers
def test_ratio_strategy_counts():
    y = np.array([0] * 20 + [1] * 5 + [2] * 15)
    assert ratio_strategy(1.0)(y) == {1: 20, 2: 20}
    assert ratio_strategy(0.5)(y) == {1: 10}
    with pytest.raises(ValueError, match="ratio"):
        ratio_strategy(0)


def test_acgan_sampler_generates_class_conditional_features():
    x, y = _separable(n_major=40, n_minor=10)
    sampler = ACGANOverSampler(sampling_strategy=ratio_strategy(1.0), random_state=0, **FAST_GAN)
    xr, yr = sampler.fit_resample(x, y)
    assert np.bincount(yr).tolist() == [40, 40] and sampler.n_generated_ == {1: 30}
    np.testing.assert_array_equal(xr[:50], x)  # the real rows come first, unchanged
    fake = xr[50:]
    # the generated minority vectors sit with the minority (mean +3), not the majority (mean 0)
    assert np.linalg.norm(fake.mean(0) - x[y == 1].mean(0)) < np.linalg.norm(fake.mean(0) - x[y == 0].mean(0))
    again = ACGANOverSampler(sampling_strategy=ratio_strategy(1.0), random_state=0, **FAST_GAN).fit_resample(x, y)[0]
    np.testing.assert_array_equal(again, xr)  # same seed, same vectors
    with pytest.raises(ValueError, match="variant must be one of"):
        ACGANOverSampler(variant="bigGAN", **FAST_GAN).fit_resample(x, y)


# ---------------------------------------------------------------------------------------- CV protocol
class _Spy:
    """Records what a sampler is given (after the pipeline's imputer and scaler)."""

    def __init__(self):
        self.calls = []


def _spy_factory(spy, sampler_cls):
    class Recording(sampler_cls):
        def _fit_resample(self, X, y):
            spy.calls.append(np.array(X))
            return super()._fit_resample(X, y)

    return Recording


def test_cv_never_lets_a_test_fold_case_reach_the_sampler_or_the_gan(monkeypatch):
    """Column 0 of X is the case id; the rows a sampler saw, mapped back through the fold's scaler,
    are exactly the fold's training ids and none of its test ids."""
    from imblearn.over_sampling import SMOTE

    import mimtl.engines.feature_cv as cv

    x, y = _separable(n_major=20, n_minor=10, dim=4)
    ids = [f"case{i:03d}" for i in range(len(y))]
    x[:, 0] = np.arange(len(y))  # the id, as a feature
    spy, pipelines = _Spy(), []
    monkeypatch.setattr(cv, "ACGANOverSampler", _spy_factory(spy, ACGANOverSampler))
    import imblearn.over_sampling

    monkeypatch.setattr(imblearn.over_sampling, "SMOTE", _spy_factory(spy, SMOTE))

    def factory(spec, seed):
        pipe = make_pipeline(spec, seed, k_neighbors=3, classifier_defaults=FAST_MLP)
        pipelines.append(pipe)
        return pipe

    variants = {"smote": VariantSpec(sampler="smote"), "acgan": VariantSpec(sampler="acgan", sampler_args=FAST_GAN)}
    results = cross_validate_variants(
        x, y, variants, ids=ids, n_splits=3, n_repeats=2, k_neighbors=3, progress=False, pipeline_factory=factory
    )
    assert len(results) == len(spy.calls) == len(pipelines) == 12
    for result, seen, pipe in zip(results, spy.calls, pipelines):
        rows = np.rint(pipe.named_steps["scale"].inverse_transform(seen)[:, 0]).astype(int)
        seen_ids = {ids[i] for i in rows}
        assert seen_ids == set(result.train_ids)
        assert not seen_ids & set(result.test_ids)
        assert sorted(result.train_ids + result.test_ids) == sorted(ids)


def test_cv_compares_variants_and_nested_search_records_its_choice():
    x, y = _separable(n_major=24, n_minor=12, dim=4, shift=2.5)
    variants = {
        BASELINE: VariantSpec(),
        "random": VariantSpec(sampler="random"),
        "smote-nested": VariantSpec(sampler="smote", param_grid={"sampler__k_neighbors": [2, 3]}),
    }
    results = cross_validate_variants(
        x, y, variants, n_splits=3, n_repeats=1, k_neighbors=3, classifier=FAST_MLP, progress=False
    )
    assert [r.variant for r in results[:3]] == list(variants)
    assert all(r.metrics["balanced_accuracy"] > 0.8 for r in results)  # separable: every variant learns
    assert all(r.params["sampler__k_neighbors"] in (2, 3) for r in results if r.variant == "smote-nested")
    rows = summarise(results, n_splits=3)
    table = summary_table(rows)
    assert table.count("\n") == 2 + len(variants) - 1 and "smote-nested" in table


def test_summary_statistics_by_hand():
    """Nadeau-Bengio corrected paired t: se = sqrt((1/J + 1/(k-1)) s^2)."""
    from scipy import stats

    base = [0.6, 0.7, 0.65, 0.62]
    better = [0.7, 0.75, 0.72, 0.73]
    results = [FoldResult(BASELINE, 0, i, {"balanced_accuracy": v}, [], []) for i, v in enumerate(base)]
    results += [FoldResult("x", 0, i, {"balanced_accuracy": v}, [], []) for i, v in enumerate(better)]
    row = summarise(results, n_splits=4)[1]
    d = np.array(better) - np.array(base)
    se = np.sqrt((1 / 4 + 1 / 3) * d.var(ddof=1))
    assert row["diff_vs_none"] == pytest.approx(d.mean())
    assert row["p_vs_none"] == pytest.approx(2 * stats.t.sf(d.mean() / se, 3))
    assert row["mean"] == pytest.approx(np.mean(better)) and row["ci_low"] < row["mean"] < row["ci_high"]


def test_class_size_errors_name_the_key_and_class():
    smote = {"smote": VariantSpec(sampler="smote")}
    with pytest.raises(ValueError, match="'grade' holds one class"):
        check_class_sizes(np.zeros(10), 5, 5, {}, label="grade")
    with pytest.raises(ValueError, match=r"'label': class 1\.0 has 1 case\(s\); stratified 2-fold CV needs at least 2"):
        check_class_sizes(np.r_[np.zeros(10), 1], 2, 5, {})
    with pytest.raises(
        ValueError, match=r"class 1 has 6 cases, 4 in a training fold; smote need at least k_neighbors \+ 1 = 6"
    ):
        check_class_sizes(np.r_[np.zeros(20), np.ones(6)].astype(int), 5, 5, smote)
    check_class_sizes(np.r_[np.zeros(20), np.ones(6)], 5, 3, smote)


# ---------------------------------------------------------------------------------------- feature tables
def test_csv_table_one_hot_and_missing(tmp_path):
    path = tmp_path / "features.csv"
    path.write_text("case_id,age,site,grade,f1\nA,50,x,HGG,0.1\nB,,y,LGG,0.2\nC,61,,HGG,NA\nD,40,x,LGG,0.4\n")
    t = load_feature_table(path, label="grade")
    assert t.case_ids == ["A", "B", "C", "D"] and t.labels.tolist() == ["HGG", "LGG", "HGG", "LGG"]
    assert t.feature_names == ["age", "site=x", "site=y", "f1"]
    assert t.missing == {"age": 1, "site": 1, "f1": 1}
    assert t.one_hot == {"site": ["x", "y"]}
    np.testing.assert_array_equal(t.features[0], [50, 1, 0, 0.1])
    assert np.isnan(t.features[1, 0]) and np.isnan(t.features[2, 1:3]).all()


def test_npz_table_and_bad_tables(tmp_path):
    npz = tmp_path / "f.npz"
    np.savez(npz, features=np.ones((4, 3)), grade=np.array([0, 1, 0, 1]), case_ids=np.array(["a", "b", "c", "d"]))
    t = load_feature_table(npz, label="grade")
    assert t.features.shape == (4, 3) and t.case_ids == ["a", "b", "c", "d"]
    with pytest.raises(FeatureTableError, match=r"f\.npz: 3 features per case, but the other stage was built on 64"):
        load_feature_table(npz, label="grade", expected_features=64)
    with pytest.raises(FeatureTableError, match="no label array 'label'"):
        load_feature_table(npz)
    one = tmp_path / "one.csv"
    one.write_text("f,grade\n1,HGG\n2,HGG\n")
    with pytest.raises(FeatureTableError, match=r"one\.csv: the label column 'grade' holds one class only"):
        load_feature_table(one, label="grade")
    with pytest.raises(FeatureTableError, match="no label column 'y'"):
        load_feature_table(one, label="y")
    with pytest.raises(FeatureTableError, match="not found"):
        load_feature_table(tmp_path / "missing.csv")


# ---------------------------------------------------------------------------------------- feature quality
def test_feature_quality_checks_tell_good_from_bad(tmp_path):
    rng = np.random.default_rng(0)
    real = rng.normal(size=(60, 5))
    same = rng.normal(size=(60, 5))
    shifted = rng.normal(size=(60, 5)) + 3.0
    assert abs(mmd_rbf(real, same)) < 0.05 < mmd_rbf(real, shifted)
    p_same, r_same = precision_recall_knn(real, same)
    p_shift, _ = precision_recall_knn(real, shifted)
    assert p_same > 0.7 and r_same > 0.7 and p_shift < 0.3
    assert memorisation(real, real[:20] + 1e-6)["ratio"] < 0.01  # copies
    assert memorisation(real, same)["ratio"] > 0.5
    assert real_vs_fake_auc(real, same) < 0.75 and real_vs_fake_auc(real, shifted) > 0.95
    labels = np.r_[np.zeros(30, int), np.ones(30, int)]
    report = feature_quality_report(real, labels, shifted, labels)
    assert set(report["per_class"]) == {"0", "1"} and "train_synthetic_test_real" in report
    json.dumps(report)  # plain numbers, writable as JSON
    png = pca_plot(real, labels, same, labels, tmp_path / "pca.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


# ---------------------------------------------------------------------------------------- compare, end to end
def test_compare_on_a_users_table_writes_the_tables(tmp_path):
    """A CSV the pipeline never saw (a categorical column, missing values) -> comparison.md/csv, folds.csv, quality."""
    from mimtl.engines.feature_compare import compare_feature_table

    x, y = _separable(n_major=18, n_minor=9, dim=3, shift=3.0)
    lines = ["case_id,site,grade," + ",".join(f"f{j}" for j in range(3))]
    for i, (row, label) in enumerate(zip(x, y)):
        cells = ["" if (i == 4 and j == 1) else f"{v:.4f}" for j, v in enumerate(row)]
        lines.append(f"c{i},{'ab'[i % 2]},{'HGG' if label else 'LGG'}," + ",".join(cells))
    table = tmp_path / "mine.csv"
    table.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    variants = {
        BASELINE: VariantSpec(),
        "smote": VariantSpec(sampler="smote"),
        "acgan@1": VariantSpec(sampler="acgan", sampler_args=FAST_GAN),
    }
    text = compare_feature_table(
        table,
        "grade",
        out,
        n_splits=3,
        n_repeats=1,
        k_neighbors=3,
        classifier=FAST_MLP,
        gan=("acgan",),
        gan_args=FAST_GAN,
        variants=variants,
        progress=False,
    )
    assert "## balanced_accuracy" in text and "## recall_HGG" in text and '{"f1": 1}' in text
    assert (out / "comparison.md").read_text() == text
    csv_rows = (out / "comparison.csv").read_text().splitlines()
    assert csv_rows[0].startswith("variant,metric,n,mean") and len(csv_rows) == 1 + 3 * 6  # 3 variants x 6 metrics
    assert len((out / "folds.csv").read_text().splitlines()) == 1 + 3 * 3
    quality = json.loads((out / "feature_quality.json").read_text())
    assert set(quality["acgan"]["per_class"]) == {"0", "1"} and (out / "feature_pca_acgan.png").is_file()


def test_compare_command_exits_2_on_a_bad_table(tmp_path, capsys):
    from mimtl.engines.feature_compare import main

    one = tmp_path / "one.csv"
    one.write_text("f,grade\n1,HGG\n2,HGG\n3,HGG\n")
    assert main([str(one), "--label", "grade", "--output-dir", str(tmp_path / "o")]) == 2
    assert "one.csv: the label column 'grade' holds one class only" in capsys.readouterr().err


def test_minority_sweep_subsamples_the_minority_only():
    from mimtl.engines.feature_cv import minority_sweep

    x, y = _separable(n_major=20, n_minor=12, dim=3, shift=3.0)
    rows = minority_sweep(
        x,
        y,
        {BASELINE: VariantSpec()},
        minority_sizes=(6, 12),
        seeds=(0, 1),
        n_splits=3,
        classifier=FAST_MLP,
        progress=False,
    )
    assert len(rows) == 2 * 2 * 3  # sizes x seeds x folds
    assert {(r["minority_size"], r["seed"]) for r in rows} == {(6, 0), (6, 1), (12, 0), (12, 1)}
    assert np.mean([r["balanced_accuracy"] for r in rows]) > 0.75  # separable, though 4 training cases of 6 are few
    with pytest.raises(ValueError, match="minority size 13 exceeds the 12 cases of class 1"):
        minority_sweep(x, y, {BASELINE: VariantSpec()}, minority_sizes=(13,), seeds=(0,))


@pytest.mark.parametrize("variant", ["tac-gan", "projection", "wgan-gp"])
def test_every_gan_variant_resamples(variant, tmp_path):
    x, y = _separable(n_major=20, n_minor=8, dim=4)
    sampler = ACGANOverSampler(variant=variant, random_state=0, loss_curves=str(tmp_path), **{**FAST_GAN, "epochs": 5})
    xr, yr = sampler.fit_resample(x, y)
    assert np.bincount(yr).tolist() == [20, 20] and np.isfinite(xr).all()
    assert (tmp_path / "loss_curves.png").is_file()
