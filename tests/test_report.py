"""The comparison report end to end on tiny sampled experiments (`widebayes compare DIR`)."""

import json
import tomllib

import numpy as np
import pytest

from widebayes import plots, report
from widebayes.cli import main
from widebayes.config import resolve
from widebayes.diagnostics import readout as dread
from widebayes.errors import InputError
from widebayes.sampling import sample_experiment

FIGURES = {"readout_samples", "activations", "layer_activations", "code_reordering", "output",
           "readout_posterior", "readout_traces", "preactivations", "code_fractions", "code_stability",
           "kernels", "kernels_test", "kernel_alignment", "predictor_test", "gen_error", "geometry", "drift"}
TOP_KEYS = {"experiment", "theory", "draws", "coding", "readout", "symmetry", "kernels", "predictor",
            "neural_collapse", "geometry", "drift", "convergence", "agreement", "figures", "notes"}


def tiny(network: dict, task: dict | None = None, **sampler) -> dict:
    """A seconds-long toy run (no burn-in: one compiled chunk; the report checks plumbing)."""
    cfg = {
        "task": {"kind": "orthogonal", "num_train": 12, "input_dim": 24, "num_test": 6,
                 "class_ratios": [0.5, 0.25, 0.25], "y_minus": 0.5, **(task or {})},
        "network": {"depth": 1, "width": 16, "activation": "sigmoid", "readout": "nonlazy",
                    "temperature": 0.05, **network},
        "sampler": {"step_size": 0.005, "num_steps": 300, "burn_in": 0, "thin": 20,
                    "num_chains": 2, "seed": 3, "progress": False, **sampler},
    }
    return resolve(cfg)


def raise_input_error(exp):
    raise InputError("the non-lazy theory is not available yet", key="network.readout")


@pytest.fixture(scope="module")
def deep_sigmoid(tmp_path_factory):
    """Two hidden layers, lower layers stored, reported by `widebayes compare` without theory."""
    folder = tmp_path_factory.mktemp("deep_sigmoid")
    sample_experiment(tiny({"depth": 2}, store_all_layers=True), out_dir=folder)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("widebayes.theory.predict.predictions", raise_input_error)
        assert main(["compare", str(folder)]) == 0
    return folder


@pytest.fixture(scope="module")
def lazy_linear(tmp_path_factory):
    """A lazy linear network without a test set: the BPKR theory exists for it."""
    folder = tmp_path_factory.mktemp("lazy_linear")
    sample_experiment(tiny({"activation": "linear", "readout": "lazy", "temperature": 0.01},
                           task={"num_test": 0}, step_size=0.002), out_dir=folder)
    report.write_report(folder)
    return folder


def read_json(folder):
    return json.loads((folder / "report" / "report.json").read_text())  # strict JSON: no NaN


def test_compare_writes_figures_json_and_markdown(deep_sigmoid, capsys):
    out = deep_sigmoid / "report"
    data = read_json(deep_sigmoid)
    assert set(data) == TOP_KEYS
    assert set(data["figures"]) == FIGURES
    for name, fig in data["figures"].items():
        assert (out / fig["file"]).stat().st_size > 1000, name
        assert fig["data"], name
    md = (out / "report.md").read_text()
    assert "**No theory**" in md and "no theory: nothing to compare" in md
    for name in FIGURES:
        assert f"![{name}]({name}.png)" in md
    assert data["theory"]["available"] is False and data["agreement"] == []


def test_report_numbers(deep_sigmoid):
    data = read_json(deep_sigmoid)
    coding = data["coding"]
    assert set(coding["layers"]) == {"layer_1", "layer_2"}
    assert set(coding["layers"]["layer_2"]) == {"threshold", "train", "test"}
    assert set(coding["layers"]["layer_1"]) == {"threshold", "train", "test"}  # every layer, test too
    train = coding["layers"]["layer_2"]["train"]
    assert sum(train["fraction"]) == pytest.approx(1.0)
    assert all(len(code) == 3 for code in train["codes"])
    assert len(train["readout"]) == len(train["codes"]) and len(train["readout"][0]) == 3
    assert coding["scheme"]["scheme"] in {"analog", "redundant", "sparse"}
    kept = data["symmetry"]["code_kept_fraction"]
    assert set(kept) == {"layer_1", "layer_2"} and all(0 <= v <= 1 for v in kept.values())
    sym = data["symmetry"]  # change rates per paper time: per draw pair / (thin x the layer's step time)
    import arviz as az

    attrs = az.from_netcdf(deep_sigmoid / "posterior.nc").attrs
    thin = tomllib.loads(attrs["config"])["sampler"]["thin"]
    for layer, key in ((1, "paper_time_per_step"), (2, "paper_time_per_step_W2")):
        rate = sym["mean_code_change_rate"][f"layer_{layer}"]
        per_time = sym["code_change_rate_per_paper_time"][f"layer_{layer}"]
        assert per_time == pytest.approx(rate / (thin * attrs[key]))
        assert 0 <= sym["first_last_agreement"][f"layer_{layer}"] <= 1
    assert "last code = first" in (deep_sigmoid / "report" / "report.md").read_text()
    assert len(data["kernels"]["alignment_with_targets"]["samples"]) == 3  # layers 0, 1, 2
    test = data["predictor"]["test"]
    assert set(test["gen_error"]) >= {"bias", "variance", "total"}
    assert len(test["gen_error_gp"]["total"]) == 3
    table = data["convergence"]["table"]
    assert {"loss", "readout_norm[0]", "kernel_alignment"} <= set(table)
    assert isinstance(data["convergence"]["warnings"], list)
    drift = data["drift"]
    assert drift["rho_u"][0] == pytest.approx(1.0) and drift["rho_v"][0] == pytest.approx(1.0)
    assert 0 < drift["baseline_v"] < 1 and len(drift["lag_prior_time"]) == len(drift["rho_u"])
    geometry = data["geometry"]
    assert {"samples, train inputs", "NNGP, train inputs", "samples, test inputs"} <= set(geometry)
    assert len(geometry["samples, train inputs"]["signal"]) == 3  # layers 0, 1, 2
    np.testing.assert_allclose(geometry["samples, train inputs"]["signal"][0],
                               geometry["NNGP, train inputs"]["signal"][0])  # same input kernel
    pairs = np.array(geometry["NNGP, train inputs"]["signal_pairs"], dtype=float)  # null -> nan
    assert pairs.shape == (3, 3, 3) and np.all(np.isnan(np.diagonal(pairs, axis1=1, axis2=2)))
    for source in ("samples, train inputs", "NNGP, train inputs"):
        assert len(geometry[source]["capacity"]) == 3 and all(c > 0 for c in geometry[source]["capacity"])
    assert geometry["samples, train inputs"]["capacity"][0] == pytest.approx(  # float32 kernel vs exact
        geometry["NNGP, train inputs"]["capacity"][0], rel=0.05)
    assert geometry["fewshot_m"] == 2  # classes of 3 training inputs: 2 shots, one held out
    rep = geometry["representations"]
    assert rep["layers"] == [0, 1, 2] and rep["chains"] == 2
    assert all(0 <= e <= 1 for e in rep["fewshot_error_simulated"]) and all(c > 0 for c in rep["capacity"])
    # the inputs are the same points either way: the capacity of the raw inputs equals the capacity
    # computed from their kernel, within the Monte Carlo spread of the anchor-point average (about 1%
    # with 1000 Gaussian vectors: degenerate class axes make the two draws differ)
    assert rep["capacity"][0] == pytest.approx(geometry["NNGP, train inputs"]["capacity"][0], rel=0.05)
    md = (deep_sigmoid / "report" / "report.md").read_text()
    assert "## Geometry across layers" in md and "## Drift" in md and "| sampled representations |" in md
    heatmap = data["figures"]["activations"]["data"]
    assert np.asarray(heatmap["train"]["phi"]).shape == (16, 12)  # every number plotted is stored


def test_compare_without_posterior_is_one_line_error(tmp_path, capsys):
    assert main(["compare", str(tmp_path)]) == 2
    assert "no posterior.nc" in capsys.readouterr().err


def planted_theory(run):
    """What theory/nonlazy provides, planted: agreements and dashed curves must appear."""
    second = dread.readout_second_moment(run.a)
    return {"regime": "nonlazy", "method": "planted", "readout_second_moment": second * 1.05,
            "kernel_train": run.kernel,
            "codes": [{"code": "110", "fraction": 0.3, "readout": [1.6, 1.4, -0.3]},
                      {"code": [0, 1, 1], "fraction": 0.7, "readout": [-0.3, 1.5, 1.5]}],
            "f_test_mean": np.full((6, 3), 0.6), "f_test_var": np.zeros(6),
            "gen_error": {"bias": [0.1] * 3, "variance": [0.0] * 3, "total": [0.1] * 3, "total_sum": 0.3},
            "num_outliers": 0, "outlier_mass": [0.0, 0.0, 0.0]}


def test_report_with_a_theory_states_agreements(deep_sigmoid):
    idata = report.load_posterior(deep_sigmoid)
    rep = report.build_report(idata, planted_theory(report.Run(idata)), "planted")
    quantities = [row["quantity"] for row in rep["agreement"]]
    assert "<a_0^2> (readout second moment, class 0)" in quantities
    assert "P_gamma, code 011" in quantities and "generalization error, class 2" in quantities
    row = next(r for r in rep["agreement"] if r["quantity"].startswith("<a_1^2>"))
    assert row["relative_difference"] == pytest.approx(0.05 / 1.05)
    kernel_rows = [r for r in rep["agreement"] if r["quantity"].startswith("kernel K_")]
    assert len(kernel_rows) == 2 and all(r["relative_difference"] < 1e-12 for r in kernel_rows)
    posterior = rep["figures"]["readout_posterior"]["data"]
    assert posterior["classes"][0]["theory_density"] is not None
    panels = {p["title"]: p for p in rep["figures"]["code_fractions"]["data"]["panels"]}
    assert panels["layer 2, train inputs"]["theory"] is not None
    assert len(plots.to_png(plots.draw("readout_posterior", posterior))) > 1000
    md = report.markdown(rep)
    assert "| quantity | theory | samples | relative difference |" in md
    assert md.count("\n| P_gamma, code") == 2
    json.dumps(report.jsonable(rep), allow_nan=False)


def test_lower_layer_codes_are_compared_per_layer(deep_sigmoid):
    """A deep theory's ``layers`` records: each code of the layers below the feature layer gets a
    P_gamma row and a class-means row against that layer's sampled codes (planted here from the
    samples themselves, one fraction raised by 10%)."""
    idata = report.load_posterior(deep_sigmoid)
    run = report.Run(idata)
    plain = report.build_report(idata, planted_theory(run), "planted")
    first = plain["coding"]["layers"]["layer_1"]["train"]
    codes = [{"code": c, "fraction": f * (1.1 if i == 0 else 1.0), "class_means": m}
             for i, (c, f, m) in enumerate(zip(first["codes"], first["fraction"], first["class_means"]))]
    theory = {**planted_theory(run), "layers": [{"layer": 1, "codes": codes}, {"layer": 2, "codes": []}]}
    rows = {r["quantity"]: r for r in report.build_report(idata, theory, "planted")["agreement"]}
    assert not any("layer 2" in q for q in rows)
    top = rows[f"P_gamma, layer 1, code {first['codes'][0]}"]
    assert top["relative_difference"] == pytest.approx(0.1 / 1.1)
    for c in first["codes"][1:]:
        assert rows[f"P_gamma, layer 1, code {c}"]["relative_difference"] < 1e-12
        assert rows[f"class means s_gamma, layer 1, code {c} (vector)"]["relative_difference"] < 1e-12


def test_failing_theory_gives_a_samples_only_report(deep_sigmoid, monkeypatch):
    def broken(exp):
        raise FloatingPointError("solver diverged")

    monkeypatch.setattr("widebayes.theory.predict.predictions", broken)
    theory, note = report.theory_for(report.load_posterior(deep_sigmoid))
    assert theory is None and "FloatingPointError: solver diverged" in note


def test_lazy_report_uses_the_real_theory(lazy_linear):
    data = read_json(lazy_linear)
    assert data["theory"]["available"] is True and data["theory"]["regime"] == "lazy"
    assert data["predictor"]["test"] is None
    assert {"predictor_test", "gen_error", "kernels_test", "layer_activations"}.isdisjoint(data["figures"])
    quantities = [row["quantity"] for row in data["agreement"]]
    assert "kernel K_1 on training inputs (Frobenius)" in quantities
    assert any(q.startswith("<a_0^2>") for q in quantities)
    assert data["figures"]["preactivations"]["data"]["codes"]  # linear: z = phi
    assert "## Theory against samples" in (lazy_linear / "report" / "report.md").read_text()
    adaptation = data["kernels"]["kernel_adaptation"]  # linear: the closed-form saddle
    assert adaptation["method"] == "saddle"
    assert set(adaptation["alignment_with_targets"]) == {"nngp", "samples", "theory", "kernel adaptation"}
    assert len(adaptation["samples_vs_kernel_adaptation_relative_difference"]) == 2  # layers 0, 1
    assert adaptation["samples_vs_kernel_adaptation_relative_difference"][0] < 1e-5  # input kernel
    assert (lazy_linear / "report" / "kernel_adaptation.png").exists()
    collapse = data["neural_collapse"]  # lazy: kernel-level rows only, each labelled
    sources = [row["source"] for row in collapse["layers"]["layer_1"]]
    assert "kernel-level" in collapse["note"] and not any(s.startswith("theory codes") for s in sources)
    assert any(s.startswith("theory mean kernel [BPKR") for s in sources)


def test_lazy_nonlinear_report_has_the_perturbative_kernel_adaptation(tmp_path):
    """ReLU, lazy: the theory adds the O(1/N) kernel-adaptation kernels; the report compares them."""
    sample_experiment(tiny({"activation": "relu", "readout": "lazy", "temperature": 0.01},
                           num_steps=200, step_size=0.002), out_dir=tmp_path)
    report.write_report(tmp_path)
    data = read_json(tmp_path)
    adaptation = data["kernels"]["kernel_adaptation"]
    assert adaptation["method"] == "O(1/N)"
    learned = adaptation["learned_part_relative_norm"]["kernel adaptation"]
    assert learned[0] == 0.0 and 0 < learned[1] < 1  # a correction to the NNGP, small at N = 16
    fig = data["figures"]["kernel_adaptation"]["data"]
    assert set(fig["learned"]) == {"samples", "kernel adaptation", "theory"}
    assert (tmp_path / "report" / "kernel_adaptation.png").exists()


def test_usable_draws_drop_stopped_chains():
    a = np.ones((3, 10, 4, 2))
    a[1, 3:] = np.nan  # stopped early: left out
    a[2, 8:] = np.nan  # stopped late: kept, every chain truncated to 8 draws
    chains, num, notes = report.usable_draws(a)
    assert chains == [0, 2] and num == 8 and len(notes) == 2
    with pytest.raises(InputError, match="no finite draw"):
        report.usable_draws(np.full((2, 5, 4, 2), np.nan))


def test_toy_size_keeps_the_physics_and_shrinks_the_run():
    from widebayes.models.presets import preset

    cfg = report.toy_size(preset("coding-relu"))
    assert cfg["network"]["activation"] == "relu" and cfg["network"]["width"] == 16
    assert cfg["task"]["num_train"] == 12 and cfg["task"]["num_test"] == 0
    assert cfg["sampler"]["num_steps"] == 300
    resolve(cfg)


# ---------------------------------------------------------------------------------- honest labels
@pytest.fixture(scope="module")
def lazy_relu_deep(tmp_path_factory):
    """A lazy ReLU network of depth 2: the theory's layer-1 kernel is the NNGP (BPKR heuristic)."""
    folder = tmp_path_factory.mktemp("lazy_relu_deep")
    sample_experiment(tiny({"activation": "relu", "readout": "lazy", "temperature": 0.01, "depth": 2},
                           num_steps=200, step_size=0.002), out_dir=folder)
    report.write_report(folder)
    return folder


def test_lazy_relu_lower_layer_kernel_is_labelled_by_what_it_is(lazy_relu_deep):
    """Layer 1 of a lazy nonlinear network: the theory's kernel there is the NNGP, replaced by the
    O(1/N) kernel-adaptation kernel that the theory also gives; never called plain "theory"."""
    from widebayes.report.kernels import KERNEL_ADAPTATION

    data = read_json(lazy_relu_deep)
    sources = data["kernels"]["theory_sources"]
    assert len(sources) == 3 and sources[0] == "input kernel"
    assert sources[1] in {"NNGP", KERNEL_ADAPTATION} and "theory" not in sources
    assert sources[1] == KERNEL_ADAPTATION  # the lazy nonlinear theory gives kernel_train_perturbative
    assert "heuristic" in sources[2]  # the feature layer: the BPKR heuristic (THEORY.md 2.6)
    assert data["figures"]["kernels"]["data"]["theory_sources"] == sources[1:]
    assert data["kernels"]["kernel_adaptation"]["theory_sources"] == sources
    assert data["geometry"]["theory, train inputs"]["kernel_sources"] == sources
    row = next(r for r in data["agreement"] if r["quantity"].startswith("kernel K_1"))
    assert row["source"] == KERNEL_ADAPTATION
    # the theory's layer-1 kernel is the kernel-adaptation kernel itself: no learned difference
    adaptation = data["kernels"]["kernel_adaptation"]["learned_part_relative_norm"]
    assert adaptation["theory"][1] == pytest.approx(adaptation["kernel adaptation"][1], rel=1e-12)
    md = (lazy_relu_deep / "report" / "report.md").read_text()
    assert f"| kernel K_1 on training inputs (Frobenius) [{KERNEL_ADAPTATION}] |" in md
    assert f"| theory, train inputs [{KERNEL_ADAPTATION}] | 1 |" in md


def test_theory_kernels_equal_to_the_nngp_are_called_nngp():
    """Unit: a layer where kernel_train is the theory's own NNGP is "NNGP" (without an O(1/N) kernel),
    or the O(1/N) kernel where the theory gives one; other layers name the theory's method."""
    from widebayes.report.kernels import KERNEL_ADAPTATION, NNGP, theory_layer_kernels

    rng = np.random.default_rng(0)
    nngp = rng.standard_normal((3, 4, 4))
    mean = nngp.copy()
    mean[2] += 0.1  # the heuristic's learned correction, feature layer only
    theory = {"regime": "lazy", "method": "bpkr-heuristic", "kernel_train": mean, "kernel_train_nngp": nngp}
    th = theory_layer_kernels(theory, mean)
    assert th.sources[:2] == ["input kernel", NNGP] and "heuristic" in th.sources[2]
    np.testing.assert_array_equal(th.kernels, mean)
    adapted = nngp + 0.05
    th = theory_layer_kernels({**theory, "kernel_train_perturbative": adapted}, mean)
    assert th.sources[1] == KERNEL_ADAPTATION
    np.testing.assert_array_equal(th.kernels[1], adapted[1])
    np.testing.assert_array_equal(th.kernels[[0, 2]], mean[[0, 2]])
    assert theory_layer_kernels({"method": "x"}, mean) is None


def test_capacity_of_few_classes_is_a_per_manifold_descriptor(deep_sigmoid):
    data = read_json(deep_sigmoid)
    meaning = data["geometry"]["capacity_meaning"]
    assert meaning["kind"] == "per-manifold descriptor" and meaning["num_manifolds"] == 3
    assert "mean of all points" in meaning["origin"] and "6.2b" in meaning["note"]
    assert data["figures"]["geometry"]["data"]["capacity_meaning"] == meaning
    md = (deep_sigmoid / "report" / "report.md").read_text()
    assert "| alpha_M (per-manifold descriptor) |" in md and "| capacity |" not in md
    assert "origin at the mean of all points" in md


def _drift_view(sigma_w2: float):
    """A stand-in PosteriorView for the drift section: a fixed DC mode (raw top pair) plus fresh noise
    per draw (what the centred measures see); sigma_w2 and the time attributes as given."""
    from types import SimpleNamespace

    rng = np.random.default_rng(1)
    N, P = 20, 10
    b = rng.uniform(0.5, 1.5, N)
    phi = 5.0 * b[:, None] * np.ones(P) + 0.3 * rng.standard_normal((2, 12, N, P))
    return SimpleNamespace(phi={1: phi}, depth=1, Y_train=np.ones((P, 1)), sigma_w2=np.array([sigma_w2]),
                           config={"sampler": {"thin": 5, "step_size": 0.003}},
                           attrs={"paper_time_per_step": 0.04, "T_eff": 0.05})


def test_drift_section_reports_raw_and_centred_with_one_lag_rule():
    from widebayes.report.common import as_dict
    from widebayes.report.geometry import drift_section

    section = as_dict(drift_section(_drift_view(sigma_w2=2.0)))
    lags = np.asarray(section["lag_draws"])
    np.testing.assert_allclose(section["lag_paper_time"], lags * 5 * 0.04)  # lag steps x paper_time_per_step
    np.testing.assert_allclose(section["lag_prior_time"], np.asarray(section["lag_paper_time"]) * 0.05 / 2.0)
    assert not np.allclose(section["lag_prior_time"], lags * 5 * 0.003 / 2.0)  # not step_size / sigma_w2
    raw = section["raw"]
    assert set(raw) == {"rho_u", "rho_v", "rho_uY"}
    assert np.all(np.asarray(raw["rho_u"]) > 0.999) and raw["rho_uY"] > 0.999  # the DC mode: u uniform
    assert np.all(np.asarray(section["rho_u"][1:]) < 0.9)  # centred: noise only, decorrelated
    assert section["rho_uY"] < 0.9 and section["rho_u"][0] == pytest.approx(1.0)


def test_every_read_of_posterior_nc_goes_through_read_netcdf(deep_sigmoid, monkeypatch):
    from widebayes import posterior

    calls = []
    original = posterior.read_netcdf
    monkeypatch.setattr(posterior, "read_netcdf", lambda path: calls.append(path) or original(path))
    idata = report.load_posterior(deep_sigmoid)
    assert calls == [deep_sigmoid / "posterior.nc"]
    assert report.Run is posterior.PosteriorView and report.Run(idata).depth == 2
    with pytest.raises(InputError, match="no posterior.nc"):
        posterior.load(deep_sigmoid / "nowhere")
