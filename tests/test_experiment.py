"""GridExperiment: a grid of real train + evaluate runs of a bundle, resumable, summarised."""

import csv
import math

import pytest

from mimtl.bundle.experiment import Factor, GridExperiment, summarize_runs


def _experiment(bundle, out, **kwargs):
    factors = {
        "lr": {"id": "optimizer::lr", "values": [0.001, 0.01]},
        "epochs": {"levels": {"one": {"train::trainer::max_epochs": 1}, "two": {"train::trainer::max_epochs": 2}}},
    }
    return GridExperiment(bundle, factors, seeds=[0, 1], metric="val_accuracy", output_dir=out, **kwargs)


def test_grid_runs_every_cell_and_summarises(tiny_bundle, tmp_path):
    exp = _experiment(tiny_bundle, tmp_path / "exp")
    md = exp.run()
    with open(exp.runs_file, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 2 * 2
    assert {(r["lr"], r["epochs"], r["seed"]) for r in rows} == {
        (lr, ep, s) for lr in ("0.001", "0.01") for ep in ("one", "two") for s in ("0", "1")
    }
    assert all(0.0 <= float(r["val_accuracy"]) <= 1.0 for r in rows)
    # each run trained its own checkpoint in its own folder; the bundle's model.pt is untouched
    assert all((tmp_path / "exp" / "runs" / r["run"] / "models" / "model.pt").is_file() for r in rows)
    text = md.read_text()
    assert "| lr | one | two |" in text and "(n=2)" in text
    assert (tmp_path / "exp" / "results.png").stat().st_size > 1000
    assert (tmp_path / "exp" / "results.csv").read_text().count("\n") == 1 + 4


def test_rerun_resumes_instead_of_starting_over(tiny_bundle, tmp_path, monkeypatch):
    exp = _experiment(tiny_bundle, tmp_path / "exp")
    calls, cut = [], [True]
    real = GridExperiment._run_one

    def counting(self, run_dir, overrides):
        calls.append(run_dir.name)
        if cut[0] and len(calls) == 3:
            cut[0] = False
            raise RuntimeError("power cut")
        return real(self, run_dir, overrides)

    monkeypatch.setattr(GridExperiment, "_run_one", counting)
    with pytest.raises(RuntimeError, match="power cut"):
        exp.run()
    done_before = list(exp._done())
    assert len(done_before) == 2  # the two finished runs were kept
    calls.clear()
    exp.run()
    assert len(calls) == 6 and not set(calls) & set(done_before)
    assert len(exp._done()) == 8


def test_unknown_override_id_fails_before_any_run(tiny_bundle, tmp_path):
    from mimtl.bundle import ConfigKeyError

    with pytest.raises(ConfigKeyError, match="optimiser"):
        GridExperiment(tiny_bundle, {"lr": {"id": "optimiser::lr", "values": [0.1]}}, [0], "val_accuracy", tmp_path)


def test_factor_spec_errors():
    with pytest.raises(ValueError, match="needs either"):
        Factor.from_config("x", {"values": [1]})
    assert Factor.from_config("f", {"id": "a", "values": [0.05, 1.0]}).levels == {"0.05": {"a": 0.05}, "1": {"a": 1.0}}


def test_summary_statistics():
    rows = [{"m": "a", "v": "1.0"}, {"m": "a", "v": "3.0"}, {"m": "b", "v": "2.0"}]
    table = summarize_runs(rows, ["m"], "v", [["a", "b", "c"]])
    assert table[("a",)] == (2, 2.0, math.sqrt(2.0))
    assert table[("b",)] == (1, 2.0, 0.0)
    assert ("c",) not in table


def test_extra_metrics_are_tabulated_with_their_own_direction(tiny_bundle, tmp_path):
    factors = {"lr": {"id": "optimizer::lr", "values": [0.001, 0.01]}}
    exp = GridExperiment(
        tiny_bundle,
        factors,
        seeds=[0, 1],
        metric="mre",
        output_dir=tmp_path,
        higher_is_better=False,
        extra_metrics=["sdr_2"],
        higher_is_better_extra=[True],
    )
    with open(exp.runs_file, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["run", "lr", "seed", "mre", "sdr_2", "seconds"])
        for i, (lr, seed, mre, sdr) in enumerate(
            [("0.001", 0, 2.0, 0.5), ("0.001", 1, 4.0, 0.7), ("0.01", 0, 3.0, 0.6)]
        ):
            writer.writerow([f"r{i}", lr, seed, mre, sdr, 1.0])
    text = exp.summarize().read_text()
    assert "mre (mean ± sd over seeds; lower is better)" in text
    assert "sdr_2 (mean ± sd over seeds; higher is better)" in text and "0.600 ± 0.141 (n=2)" in text
    rows = list(csv.DictReader(open(tmp_path / "results.csv")))
    assert rows[0]["mean"] == "3.0000" and rows[0]["sdr_2_mean"] == "0.6000"
    with pytest.raises(ValueError, match="one entry per extra metric"):
        GridExperiment(
            tiny_bundle,
            factors,
            seeds=[0],
            metric="m",
            output_dir=tmp_path,
            extra_metrics=["a", "b"],
            higher_is_better_extra=[True],
        )


def test_prerequisite_runs_once(tiny_bundle, tmp_path):
    from mimtl.bundle.experiment import PrerequisiteRun

    out = tmp_path / "pre" / "models" / "model.pt"
    overrides = {"ckpt_dir": str(out.parent), "train::trainer::max_epochs": 1}
    assert PrerequisiteRun(tiny_bundle, "train", out, overrides).run() == out and out.is_file()
    stamp = out.stat().st_mtime_ns
    PrerequisiteRun(tiny_bundle, "train", out, overrides).run()
    assert out.stat().st_mtime_ns == stamp  # not rerun
    with pytest.raises(FileNotFoundError, match="without writing"):
        PrerequisiteRun(tiny_bundle, "train", tmp_path / "elsewhere.pt", overrides).run()


def test_plot_label_and_log_scale(tiny_bundle, tmp_path):
    """A landmark MRE of 200 mm beside 2 mm: a log axis keeps the small differences readable."""
    factors = {"lr": {"id": "optimizer::lr", "values": [0.001, 0.01]}}
    table = {("0.001",): (3, 200.0, 20.0), ("0.01",): (3, 2.0, 0.5)}
    plain = GridExperiment(tiny_bundle, factors, seeds=[0], metric="mre", output_dir=tmp_path).figure(table)
    assert plain.axes[0].get_yscale() == "linear" and plain.axes[0].get_ylabel() == "mre"
    exp = GridExperiment(
        tiny_bundle, factors, seeds=[0], metric="mre", output_dir=tmp_path, metric_label="MRE (mm)", log_scale=True
    )
    ax = exp.figure(table).axes[0]
    assert ax.get_yscale() == "log" and ax.get_ylabel() == "MRE (mm)"
    exp.plot(table, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").stat().st_size > 1000 and not list(tmp_path.glob("*.tmp.png"))
