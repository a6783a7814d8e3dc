"""Landmark metrics (radial error, SDR, summary, MONAI metrics + ignite handlers) and conformal radii."""

import json
import math
import warnings

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from monai.handlers import from_engine

from mimtl.metrics import (
    MeanRadialError,
    MeanRadialErrorHandler,
    SuccessDetectionRate,
    SuccessDetectionRateHandler,
    conformal_radius,
    empirical_coverage,
    landmark_summary,
    min_calibration_size,
    radial_errors,
    success_detection_rate,
)

NAN, INF = float("nan"), float("inf")


# ---------------------------------------------------------------- radial errors


def test_radial_error_hand_computed():
    pred = torch.tensor([[[0.0, 0.0]]])
    true = torch.tensor([[[3.0, 4.0]]])
    assert radial_errors(pred, true).item() == pytest.approx(5.0)
    assert radial_errors(pred, true, torch.tensor([1.0, 1.0])).item() == pytest.approx(5.0)
    assert radial_errors(pred, true, [0.1, 0.2]).item() == pytest.approx(math.sqrt(0.09 + 0.64))
    # per-item spacing (B, D)
    pred2, true2 = pred.repeat(2, 3, 1), true.repeat(2, 3, 1)
    e = radial_errors(pred2, true2, torch.tensor([[1.0, 1.0], [0.1, 0.2]]))
    assert e.shape == (2, 3)
    assert torch.allclose(e[0], torch.full((3,), 5.0)) and torch.allclose(e[1], torch.full((3,), math.sqrt(0.73)))
    # numpy in, 3D points
    assert radial_errors(np.zeros((1, 1, 3)), np.array([[[1.0, 2.0, 2.0]]])).item() == pytest.approx(3.0)


def test_radial_error_missing_target_is_nan_missing_prediction_is_inf():
    pred = torch.tensor([[[0.0, 0.0], [NAN, NAN], [NAN, NAN], [1.0, 1.0]]])
    true = torch.tensor([[[NAN, NAN], [1.0, 1.0], [NAN, NAN], [1.0, 1.0]]])
    e = radial_errors(pred, true, [0.1, 0.1])
    assert math.isnan(e[0, 0]) and math.isinf(e[0, 1]) and math.isnan(e[0, 2]) and e[0, 3] == 0
    with pytest.raises(ValueError, match="pred and target"):
        radial_errors(pred, true[:, :2])
    with pytest.raises(ValueError, match="spacing"):
        radial_errors(pred, true, [1.0, 1.0, 1.0])


# ---------------------------------------------------------------- SDR and summary


def test_success_detection_rate_on_known_errors():
    errors = [1.0, 2.0, 2.4, 2.6, 3.5, 5.0, INF, NAN]  # 7 scored (NaN out), the inf one a failure
    sdr = success_detection_rate(errors)
    assert sdr == pytest.approx({2.0: 2 / 7, 2.5: 3 / 7, 3.0: 4 / 7, 4.0: 5 / 7})
    assert math.isnan(success_detection_rate([NAN, NAN], [2.0])[2.0])


def test_landmark_summary_values_and_keys():
    errors = np.array(
        [
            [1.0, 3.0, NAN],
            [2.0, INF, 0.5],
            [4.5, 1.0, 2.5],
        ]
    )
    summary = landmark_summary(torch.as_tensor(errors), (2.0, 2.5), ["sella", "nasion", "orbitale"], unit="mm")
    json.dumps(summary)  # plain Python numbers only
    assert summary["unit"] == "mm" and summary["thresholds"] == [2.0, 2.5]
    overall = summary["overall"]
    finite = np.array([1.0, 2.0, 4.5, 3.0, 1.0, 0.5, 2.5])
    assert overall["mre"] == pytest.approx(finite.mean())
    assert overall["mre_sd"] == pytest.approx(finite.std())
    assert overall["mre_median"] == pytest.approx(2.0)
    assert overall["sdr_2"] == pytest.approx(4 / 8)  # 1, 2, 1, 0.5 of 8 annotated points
    assert overall["sdr_2.5"] == pytest.approx(5 / 8)
    assert (overall["n_points"], overall["n_missing"], overall["n_failed"]) == (8, 1, 1)
    per = summary["per_landmark"]
    assert [p["name"] for p in per] == ["sella", "nasion", "orbitale"]
    assert per[0]["mre"] == pytest.approx(2.5) and per[0]["sd"] == pytest.approx(np.std([1.0, 2.0, 4.5]))
    assert per[0]["sdr_2"] == pytest.approx(2 / 3) and per[0]["n"] == 3
    assert per[1]["mre"] == pytest.approx(2.0) and per[1]["n_failed"] == 1 and per[1]["sdr_2"] == pytest.approx(1 / 3)
    assert per[2]["n"] == 2 and per[2]["n_missing"] == 1 and per[2]["sdr_2.5"] == pytest.approx(1.0)
    default = landmark_summary(errors)
    assert default["per_landmark"][2]["name"] == "landmark_2" and "sdr_4" in default["overall"]
    with pytest.raises(ValueError, match="names"):
        landmark_summary(errors, landmark_names=["a"])
    with pytest.raises(ValueError, match="n_images"):
        landmark_summary(errors[0])


# ---------------------------------------------------------------- MONAI metrics and ignite handlers


def _random_points(seed):
    g = torch.Generator().manual_seed(seed)
    true = torch.rand(3, 4, 2, generator=g) * 100
    pred = true + torch.randn(3, 4, 2, generator=g) * 2
    true[0, 1] = NAN  # not annotated
    pred[2, 3] = NAN  # annotated, not found
    return pred, true


def test_monai_metrics_batch_and_list_inputs():
    batches = [_random_points(0), _random_points(1)]
    errors = torch.cat([radial_errors(p, t) for p, t in batches]).numpy()
    finite = errors[np.isfinite(errors)]
    scored = errors[~np.isnan(errors)]

    mre, sdr = MeanRadialError(), SuccessDetectionRate(2.0)
    for pred, true in batches[:1]:  # batch-first tensors
        mre(pred, true)
        sdr(pred, true)
    for pred, true in batches[1:]:  # lists of decollated (N, D) items
        mre(list(pred), list(true))
        sdr(list(pred), list(true))
    assert mre.aggregate().item() == pytest.approx(finite.mean(), rel=1e-6)
    assert sdr.aggregate().item() == pytest.approx(np.mean(scored <= 2.0))
    per_landmark = mre.aggregate("mean_batch")
    assert per_landmark.shape == (4,)
    assert per_landmark[1].item() == pytest.approx(np.nanmean(np.where(np.isinf(errors), NAN, errors)[:, 1]), rel=1e-6)
    assert mre.get_buffer().shape == (6, 4)
    assert mre.aggregate("mean_channel").shape == (6,) and mre.aggregate("none").shape == (6, 4)
    assert torch.isnan(mre.aggregate("none")[5, 3])  # the failure is kept out of the mean ...
    assert sdr.aggregate("none")[5, 3] == 0  # ... and counted as a miss by the SDR
    assert torch.isnan(sdr.aggregate("none")[3, 1])  # not annotated: not scored
    with pytest.raises(ValueError, match="no data"):
        MeanRadialError().aggregate()
    with pytest.raises(ValueError, match="reduction"):
        MeanRadialError(reduction="median")
    with pytest.raises(ValueError, match="threshold"):
        SuccessDetectionRate(-1.0)


def test_monai_metric_not_nans():
    pred, true = _random_points(0)
    metric = MeanRadialError(get_not_nans=True)
    metric(pred, true)
    value, count = metric.aggregate()
    assert count.item() == 10  # 12 - one not annotated - one not found
    assert value.item() == pytest.approx(np.nanmean(np.where(np.isinf(e := radial_errors(pred, true).numpy()), NAN, e)))


def test_ignite_handlers_over_two_iterations_match_numpy():
    batches = [_random_points(2), _random_points(3)]
    # the evaluator's output after decollation: one dict per item
    data = [[{"pred_coords": p, "label_coords": t} for p, t in zip(pred, true)] for pred, true in batches]
    engine = Engine(lambda e, batch: batch)
    select = from_engine(["pred_coords", "label_coords"])
    MeanRadialErrorHandler(output_transform=select).attach(engine, "mre")
    for t in (2.0, 4.0):
        SuccessDetectionRateHandler(t, output_transform=select).attach(engine, f"sdr_{t:g}")
    batched = Engine(lambda e, batch: batch)  # batch-first tensors straight from the output
    MeanRadialErrorHandler(output_transform=lambda out: (out[0], out[1])).attach(batched, "mre")

    state = engine.run(data, max_epochs=1)
    assert state.iteration == 2
    errors = torch.cat([radial_errors(p, t) for p, t in batches]).numpy()
    assert state.metrics["mre"] == pytest.approx(errors[np.isfinite(errors)].mean(), rel=1e-6)
    for t in (2.0, 4.0):
        assert state.metrics[f"sdr_{t:g}"] == pytest.approx(np.mean(errors[~np.isnan(errors)] <= t))
    assert state.metric_details["mre"].shape == (6, 4)
    assert batched.run(batches, max_epochs=1).metrics["mre"] == pytest.approx(state.metrics["mre"])


# ---------------------------------------------------------------- conformal


def test_conformal_coverage_on_fresh_samples():
    rng = np.random.default_rng(0)
    scales = np.array([0.5, 1.0, 2.0])  # per landmark: 2D Gaussian errors -> Rayleigh radial errors
    calib = np.linalg.norm(rng.normal(size=(2000, 3, 2)), axis=-1) * scales
    radius = conformal_radius(calib, coverage=0.9)
    assert radius.shape == (3,) and np.all(np.isfinite(radius))
    # the Rayleigh 90 % quantile is scale * sqrt(2 ln 10)
    assert radius == pytest.approx(scales * math.sqrt(2 * math.log(10)), rel=0.06)
    fresh = np.linalg.norm(rng.normal(size=(20000, 3, 2)), axis=-1) * scales
    cov = empirical_coverage(fresh, radius)
    assert abs(cov["overall"] - 0.9) < 0.02
    assert all(abs(c - 0.9) < 0.02 for c in cov["per_landmark"])
    assert cov["n_points"] == 60000
    json.dumps(cov)


def test_conformal_finite_sample_rank_and_small_n():
    scores = np.arange(1.0, 10.0)[:, None]  # n = 9: rank ceil(10 * 0.9) = 9 -> the maximum
    assert conformal_radius(scores, 0.9).tolist() == [9.0]
    assert conformal_radius(torch.as_tensor(scores), 0.5).tolist() == [5.0]  # ceil(10 * 0.5) = 5
    assert min_calibration_size(0.9) == 9 and min_calibration_size(0.95) == 19
    with pytest.warns(UserWarning, match="too few"):
        radius = conformal_radius(np.arange(1.0, 6.0)[:, None], 0.9)  # n = 5
    assert radius.tolist() == [INF]


def test_conformal_nan_ignored_inf_kept_and_validation():
    scores = np.column_stack([np.arange(1.0, 11.0), np.r_[np.arange(1.0, 10.0), NAN], np.r_[np.arange(1.0, 10.0), INF]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        radius = conformal_radius(scores, 0.8)  # ranks: ceil(11 * .8) = 9, ceil(10 * .8) = 8, 9
    assert radius.tolist() == [9.0, 8.0, 9.0]
    with pytest.warns(UserWarning, match="fewer than 19"):
        assert conformal_radius(scores, 0.95)[2] == INF  # rank 11 > 10 scores
    errors = np.array([[0.5, NAN], [2.0, INF], [1.0, 0.1]])
    cov = empirical_coverage(errors, np.array([1.0, INF]))
    assert cov["per_landmark"] == [pytest.approx(2 / 3), 0.5] and cov["overall"] == pytest.approx(3 / 5)
    assert cov["n_points"] == 5
    for bad in (0.0, 1.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="coverage"):
            conformal_radius(scores, bad)
    with pytest.raises(ValueError, match="radii"):
        empirical_coverage(errors, [1.0])
