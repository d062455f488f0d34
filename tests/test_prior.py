"""The service's prior (search/prior.py): the shipped designs scaled to a study's budget, earlier
studies' best trials (--warm-start), and where a study's start points came from."""
import dataclasses

import optuna
import pytest

from search.prior import load_prior, prior_points, scale_to_budget, warm_points
from space.searchspace import Choice, Fixed, SearchSpace
from space.spec import count_params

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _count(space, point):
    return count_params(space.sample(optuna.trial.FixedTrial(point))[0])


@pytest.mark.parametrize("budget", [2500, 3000, 3600, 5000, 8000])
def test_every_shipped_design_is_scaled_to_fit_the_budget_with_its_recipe_kept(budget):
    space = SearchSpace.default()
    entries = {e["name"]: e for e in load_prior()}
    points = prior_points(space, budget, lessons=())
    assert {p.source for p in points} == set(entries)  # the default space builds every shipped family
    for p in points:
        assert space.outside(p.point) == [] and p.params == _count(space, p.point) < budget
        entry = entries[p.source]["point"]
        for key in ("max_lr", "ema", "batch_size", "rotation", "separable", "blocks", "order", "activation"):
            if key in p.point:
                assert p.point[key] == {**SearchSpace.ABSENT_MEANS, **entry}[key], key  # widths scale, the recipe and the shape stay
        # grown or shrunk "until the count fits": the next width step up would not fit
        if p.scale < 3.9:
            bigger = scale_to_budget(space, entry, budget + 400)
            assert bigger is None or bigger[1] >= p.params
    assert points == sorted(points, key=lambda p: abs(1 - p.scale))  # the least-scaled first


def test_the_lessons_start_each_shipped_design_with_what_was_learnt_first_where_the_space_draws_it():
    entries = load_prior()
    assert all(e["point"].get("activation", "relu") == "relu" for e in entries)  # else nothing is taught
    points = prior_points(SearchSpace.default(), 3600, lessons=({"activation": "silu"},))
    names = [e["name"] for e in entries]
    taught, shipped = points[:len(names)], points[len(names):]
    assert {p.source for p in taught} == {n + "+silu" for n in names} and {p.source for p in shipped} == set(names)
    assert all(p.point["activation"] == "silu" for p in taught) and all(p.point["activation"] == "relu" for p in shipped)
    by_name = {p.source: p for p in points}
    for n in names:  # the lesson changes the unit, not the design: same widths, same count
        a, b = by_name[n + "+silu"], by_name[n]
        assert {k: v for k, v in a.point.items() if k != "activation"} == {k: v for k, v in b.point.items() if k != "activation"}
        assert a.params == b.params
    relu = dataclasses.replace(SearchSpace.default(), activation=Fixed("relu"))
    assert {p.source for p in prior_points(relu, 3600, lessons=({"activation": "silu"},))} == set(names)
    silu = dataclasses.replace(SearchSpace.default(), activation=Fixed("silu"))
    assert {p.source for p in prior_points(silu, 3600, lessons=({"activation": "silu"},))} == {n + "+silu" for n in names}
    # a design that already has the lesson is started once, as shipped
    has = [{**entries[0], "point": {**entries[0]["point"], "activation": "silu"}}]
    assert [p.source for p in prior_points(SearchSpace.default(), 3600, entries=has, lessons=({"activation": "silu"},))] \
        == [entries[0]["name"]]


def test_below_every_shipped_model_the_prior_scales_down_and_a_space_that_cannot_build_a_family_skips_it():
    points = prior_points(SearchSpace.default(), 3600)  # 3,600 is below every shipped model
    assert all(p.scale < 1 for p in points if p.source in ("under3762", "under4k", "under5k", "under8k"))
    plain = SearchSpace.from_dict({"arch": {"separable": False}})
    names = {p.source for p in prior_points(plain, 3600, lessons=())}
    assert names == {"under5k", "under8k-plain"}  # the separable designs are not in that space


def test_a_dimension_newer_than_the_prior_reads_as_off_in_its_points():
    # prior.json's points were written before arch.factorized_depthwise existed: a space that draws
    # it still builds every shipped family (as drawn: not factorized), and one that fixes it on
    # cannot build the separable ones, so they are skipped rather than built as something else
    entries = load_prior()
    assert all("factorized_depthwise" not in e["point"] for e in entries)  # else this test checks nothing
    drawn = dataclasses.replace(SearchSpace.default(), factorized_depthwise=Choice((False, True)))
    points = prior_points(drawn, 3600, lessons=())
    assert {p.source for p in points} == {e["name"] for e in entries}
    assert all(p.point.get("factorized_depthwise", False) is False for p in points)
    assert all(not any(l.op == "fconv" for l in drawn.sample(optuna.trial.FixedTrial(p.point))[0].layers)
               for p in points)
    on = dataclasses.replace(SearchSpace.default(), factorized_depthwise=Fixed(True))
    assert {p.source for p in prior_points(on, 3600, lessons=())} == {"under5k", "under8k-plain"}  # the plain ones


def test_warm_start_takes_an_earlier_studys_best_trials_scaled_to_the_budget(tmp_path):
    from space.searchspace import MODEL6_POINT
    space = SearchSpace.default()
    study = optuna.create_study(study_name="old", storage=f"sqlite:///{tmp_path}/old.db", direction="maximize")
    study.set_user_attr("space", space.to_dict())
    for score, w in ((98.0, 8), (99.0, 10), (97.0, 6)):
        params = {**MODEL6_POINT, "b1_w0": w}
        dists = {k: optuna.distributions.CategoricalDistribution([v]) for k, v in params.items()}
        dists["b1_w0"] = optuna.distributions.IntDistribution(4, 24)
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=score,
            user_attrs={"params": _count(space, params)}))
    pts = warm_points(space, 4000, [study])
    assert [p.source for p in pts] == ["study old trial 1", "study old trial 0", "study old trial 2"]
    assert all(p.params < 4000 and p.scale < 1 for p in pts)


def _config(tmp_path, **kw):
    from search.config import SearchConfig
    return SearchConfig(**{"study_name": "p", "storage": f"sqlite:///{tmp_path}/p.db", "data_dir": str(tmp_path),
                           "max_params": 3600, "n_trials": 10, "enqueue": False, **kw})


def test_a_new_study_starts_from_the_prior_and_says_so(tmp_path, capsys):
    from search.runner import create_or_resume
    from storage.notes import describe_prior
    study = create_or_resume(_config(tmp_path))
    waiting = study.get_trials(states=[optuna.trial.TrialState.WAITING])
    prior = study.user_attrs["prior"]
    assert len(waiting) == len(prior["points"]) == 5  # every shipped design, within half the budget of 10
    assert all("scaled" in t.user_attrs["start_point"] for t in waiting)
    first = prior_points(SearchSpace.default(), 3600)[0]  # the lessons decide its name: derived, not copied
    assert f"{first.source} x{first.scale:.2f} -> {first.params:,} params" in describe_prior(prior)
    assert "start points: 5" in capsys.readouterr().out
    (tmp_path / "cold").mkdir()
    cold = create_or_resume(_config(tmp_path / "cold", warm_start=False))
    assert not cold.trials and "prior" not in cold.user_attrs
    assert "none from the prior" in describe_prior(cold.user_attrs.get("prior"))


@pytest.mark.parametrize("budget, first", [(8000, "model6"), (7416, "the prior")])
def test_model6_is_the_first_trial_only_where_it_fits_the_budget(tmp_path, capsys, budget, first):
    # model6 has 7,416 parameters: under 8,000 it runs first; at 7,416 ("fewer than") it is not
    # enqueued at all (it was, and was refused as trial 0 after Optuna warned, when the trial ran,
    # that its widths were outside the budget-capped ranges), and the prior's first point leads.
    # That point is read from prior_points, not copied: a lesson renames it (CI at 042f450).
    from search.runner import create_or_resume
    from space.searchspace import MODEL6_POINT
    space = SearchSpace.default()
    assert space.params_of(MODEL6_POINT) == 7416
    study = create_or_resume(_config(tmp_path, max_params=budget, enqueue=True))
    waiting = study.get_trials(states=[optuna.trial.TrialState.WAITING])
    assert (waiting[0].system_attrs["fixed_params"] == MODEL6_POINT) == (first == "model6")
    expected = "model6" if first == "model6" else prior_points(space, budget)[0].describe()
    assert (waiting[0].user_attrs.get("start_point") or "model6") == expected
    assert ("model6 (7,416 params) is not enqueued" in capsys.readouterr().out) == (first != "model6")


def test_a_bad_warm_start_is_refused_before_any_study_file_exists(tmp_path):
    from search.runner import create_or_resume
    from storage.db import StudyError
    with pytest.raises(StudyError, match="--warm-start sqlite:///nowhere/x.db"):
        create_or_resume(_config(tmp_path, warm_from=("sqlite:///nowhere/x.db",)))
    assert not (tmp_path / "p.db").exists()


def test_the_cli_starts_warm_cold_or_refuses_a_bad_warm_start_in_one_line(cli, tmp_path):
    from tests.conftest import make_tiny_mnist
    make_tiny_mnist(tmp_path / "data")
    bad = cli("search", "--study-name", "w", "--warm-start", "sqlite:///nowhere/x.db", "--data-dir", "data",
              cwd=tmp_path, check=False)
    assert bad.returncode == 2 and bad.stderr.startswith("error: --warm-start sqlite:///nowhere/x.db")
    assert "Traceback" not in bad.stderr and not (tmp_path / "studies" / "w.db").exists()
    args = ["--data-dir", "data", "--epochs", "1", "--n-trials", "2", "--workers", "1", "--train-limit", "40",
            "--max-params", "3600", "--no-enqueue"]
    warm = cli("search", "--study-name", "warm", *args, cwd=tmp_path)
    assert "start points: 1 from what earlier studies learnt" in warm.stdout  # half the budget of 2
    report = cli("report", "--study-name", "warm", cwd=tmp_path).stdout
    first = prior_points(SearchSpace.default(), 3600)[0]
    assert f"start points: 1 from what earlier studies learnt, scaled to the budget: {first.source} x{first.scale:.2f}" in report
    cold = cli("search", "--study-name", "cold", "--no-warm-start", *args, cwd=tmp_path)
    assert "start points" not in cold.stdout
