"""The rows beyond the paper as whole runs on digits (smoke protocol), their resume, their Table 1
group and the beyond_budget preset; the embedding cache as a run sees it (docs/methods.md §16-§19)."""

import json
import math

import pytest
import torch

from helpers import crash_at_evaluation, group_options, read_csv, without_timings
from ladarun.acquisition import ALFAMix, ProbCover, TypiClust
from ladarun.embedding import SimCLR
from ladarun.errors import ConfigError
from ladarun.report.rows import GROUPS, rows
from ladarun.rundir.identity import comparable, run_variant
from ladarun.runner import run_from_config

pytestmark = pytest.mark.usefixtures("one_thread")

TAU = ("mix_layer", "tau_mean", "tau_std", "tau_min", "tau_max")
BEYOND = {
    "margin": (),
    "typiclust": ("typiclust_clusters", "typiclust_uncovered", "typiclust_typicality"),
    "probcover": ("probcover_delta", "probcover_coverage", "probcover_gain"),
    "alfamix": ("alfamix_inconsistent", "alfamix_cap", "alfamix_random"),
    "margin_infomixup_fixed": ("mix_layer", "tau_mean", "virtual_score"),
    "margin_infomixup": TAU + ("virtual_score", "policy_loss"),
}
DIGITS = ["dataset=digits", "protocol=smoke", "progress=false"]
# a 2-epoch embedding keeps the tests fast; the settings are the same for every embedding row
SHORT = ["acquisition.embedding.epochs=2"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One embedding folder for the module: the digits embedding is built by the first row only."""
    return tmp_path_factory.mktemp("embeddings")


@pytest.mark.parametrize("method", sorted(BEYOND))
def test_each_new_row_runs_on_digits_with_the_smoke_protocol(compose_cfg, tmp_path, cache, method):
    short = SHORT if method in ("typiclust", "probcover") else []
    cfg = compose_cfg(DIGITS + [f"method={method}", f"embedding_cache={cache}", *short])
    run_from_config(cfg, tmp_path)
    metrics = read_csv(tmp_path / "metrics.csv")
    assert [int(r["n_labeled"]) for r in metrics] == [20, 24, 28]
    columns = BEYOND[method]
    assert list(metrics[0])[len(metrics[0]) - len(columns) :] == list(columns)
    for r in metrics[1:]:
        assert all(math.isfinite(float(r[c])) for c in columns)
    picks = read_csv(tmp_path / "queries.csv")
    assert len({p["index"] for p in picks}) == len(picks) == 28  # 20 initial + 2 x 4, all distinct


def test_the_digits_embedding_was_built_once_for_every_row_and_seed(compose_cfg, tmp_path, cache):
    for method in ("typiclust", "probcover"):
        run_from_config(
            compose_cfg(
                DIGITS + [f"method={method}", f"embedding_cache={cache}", "seed=1", *SHORT]
            ),
            tmp_path / method,
        )
    assert len(list(cache.glob("digits-simclr-*.pt"))) == 1


def _toy(acquisition, out_dir, cache_dir, **kw):
    from helpers import toy_run

    acquisition.use_cache(cache_dir)
    return toy_run(out_dir, acquisition=acquisition, seed=1, **kw)


@pytest.mark.parametrize(
    "make",
    [
        lambda: TypiClust(SimCLR(epochs=1, batch_size=16, width=4), min_cluster_size=1),
        lambda: ProbCover(SimCLR(epochs=1, batch_size=16, width=4), purity=0.5),
        lambda: ALFAMix(),
    ],
    ids=["typiclust", "probcover", "alfamix"],
)
def test_an_interrupted_run_resumes_exactly(tmp_path, monkeypatch, make):
    _toy(make(), tmp_path / "straight", tmp_path / "cache")
    with monkeypatch.context() as m:
        crash_at_evaluation(m, 3, KeyboardInterrupt)  # iteration 2 trains, then dies
        with pytest.raises(KeyboardInterrupt):
            _toy(make(), tmp_path / "resumed", tmp_path / "cache")
    _toy(make(), tmp_path / "resumed", tmp_path / "cache")
    straight, resumed = (read_csv(tmp_path / d / "metrics.csv") for d in ("straight", "resumed"))
    assert without_timings(resumed) == without_timings(straight)
    assert json.loads((tmp_path / "resumed" / "summary.json").read_text())["resumed_at"] == [2]


def test_a_resumed_run_refuses_an_embedding_other_than_the_one_it_started_with(
    tmp_path, monkeypatch
):
    spec = SimCLR(epochs=1, batch_size=16, width=4)
    with monkeypatch.context() as m:
        crash_at_evaluation(m, 3, KeyboardInterrupt)
        with pytest.raises(KeyboardInterrupt):
            _toy(TypiClust(spec, min_cluster_size=1), tmp_path / "run", tmp_path / "cache")
    (path,) = (tmp_path / "cache").glob("*.pt")
    record = torch.load(path, weights_only=True)
    record["features"] = torch.nn.functional.normalize(torch.randn_like(record["features"]), dim=1)
    torch.save(record, path)  # the cache replaced by another embedding of the same settings
    with pytest.raises(ConfigError, match="not the one this run started with"):
        _toy(TypiClust(spec, min_cluster_size=1), tmp_path / "run", tmp_path / "cache")


def test_an_unwritable_embedding_cache_stops_the_run_before_anything_is_written(
    compose_cfg, tmp_path
):
    locked = tmp_path / "data"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        cfg = compose_cfg(DIGITS + ["method=typiclust", f"data_dir={locked}"])
        with pytest.raises(
            ConfigError, match=r"embedding_cache=.*/data/embeddings is not writable"
        ):
            run_from_config(cfg, tmp_path / "run")
    finally:
        locked.chmod(0o755)
    assert not (tmp_path / "run").exists()


def test_the_cache_location_is_operational_like_data_dir():
    assert (
        run_variant(["embedding_cache=/somewhere", "seed=1", "protocol.lr=0.01"])
        == "protocol.lr=0.01/"
    )
    assert comparable({"seed": 0, "embedding_cache": "/a"}) == comparable(
        {"seed": 0, "embedding_cache": "/b"}
    )


def test_beyond_rows_come_after_the_papers_with_no_paper_values():
    beyond = [r for r in rows() if r.group == "Beyond the paper"]
    assert [r.key for r in rows()][-len(beyond) :] == [r.key for r in beyond]
    assert [r.label for r in beyond] == [
        "Margin",
        "TypiClust",
        "ProbCover",
        "ALFA-Mix",
        "LADA_MarginMix^fixed",
        "LADA_MarginMix",
    ]
    assert all(r.paper_acc == {} and r.paper_time is None for r in beyond)
    assert GROUPS[-1] == "Beyond the paper" and {r.key for r in beyond} == set(BEYOND)
    assert (beyond[-1].acquisition, beyond[-1].augment) == ("margin", "infomixup")


def test_the_beyond_budget_preset_runs_the_new_rows_and_references_cheapest_first(compose_hydra):
    cfg = compose_hydra(["experiment=beyond_budget"])
    budget = compose_hydra(["experiment=table1_budget"])
    params = cfg.hydra.sweeper.params
    methods = params.method.split(",")
    assert set(methods) == set(BEYOND) | {"random", "badge"} and methods[-1] == "margin_infomixup"
    assert all(m in group_options("method") for m in methods)
    assert (params.seed, params.dataset) == ("range(0,5)", "fashion")
    # the same settings as table1_budget's rows
    for key in ("protocol", "model", "dataset", "aux"):
        assert cfg[key] == budget[key], key


def test_a_config_saved_before_the_embedding_cache_key_still_builds(compose_cfg):
    """A run's .hydra/config.yaml from before 0.4.0 has no embedding_cache (rerun_check.py and
    ladarun.run read such files); only the rows that choose in an embedding need it."""
    from omegaconf import OmegaConf

    from ladarun.config import check_settings

    cfg = compose_cfg(DIGITS + ["method=margin"])
    OmegaConf.set_struct(cfg, False)
    del cfg["embedding_cache"]
    assert type(check_settings(cfg).acquisition).__name__ == "Margin"


def test_the_beyond_preset_declares_its_primary_family_without_self_comparisons():
    from ladarun.report.family import declared

    spec = declared("beyond_budget")
    assert spec is not None and spec.metrics == ("final", "area")
    pairs = spec.pairs()
    assert ("margin", "margin") not in pairs and all(a != b for a, b in pairs)
    for baseline in ("margin", "typiclust", "probcover", "alfamix"):
        assert [o for r, o in pairs if r == baseline] == ["random", "badge"]
    for lada in ("margin_infomixup_fixed", "margin_infomixup"):
        assert [o for r, o in pairs if r == lada] == ["random", "badge", "margin"]
    assert len(pairs) * len(spec.metrics) == 28  # the family Holm corrects over
