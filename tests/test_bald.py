"""BALD with MC dropout (docs/methods.md §3)."""

import pytest
import torch
import torch.nn.functional as F

from helpers import SMOKE, LookAhead, check_smoke_run, make_ctx
from ladarun.acquisition import BALD, mutual_information_bits
from ladarun.acquisition.bald import mutual_information_from_logits
from ladarun.config import build
from ladarun.errors import ConfigError
from ladarun.runner import run_from_config

pytestmark = pytest.mark.usefixtures("one_thread")


def test_bald_is_zero_for_agreeing_samples_and_positive_for_disagreeing_ones():
    # T = 2 MC samples of 3 points over 3 classes.
    probs = torch.tensor(
        [
            [[0.7, 0.2, 0.1], [1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3]],
            [[0.7, 0.2, 0.1], [0.0, 1.0, 0.0], [1 / 3, 1 / 3, 1 / 3]],
        ]
    )
    mi = mutual_information_bits(probs)
    # identical samples: 0, however uncertain each is (the uniform row has entropy log2 3)
    torch.testing.assert_close(mi[0], torch.tensor(0.0))
    torch.testing.assert_close(mi[2], torch.tensor(0.0), atol=1e-6, rtol=0)
    # two confident samples that disagree: H[mean] = 1 bit, mean H = 0
    torch.testing.assert_close(mi[1], torch.tensor(1.0))
    logits = torch.randn(20, 9, 4) * 3
    torch.testing.assert_close(
        mutual_information_from_logits(logits), mutual_information_bits(torch.softmax(logits, -1))
    )
    assert (mutual_information_from_logits(logits) > 0).all()


def _fixed_dropout(monkeypatch, masks):
    """Replace dropout by known masks: a (T, B, D) input gets all T, the t-th (B, D) call the t-th."""
    calls = {"n": 0}

    def dropout(x, p=0.5, training=True, inplace=False):
        if not training:
            return x
        if x.dim() == 3:
            return x * masks / (1 - p)
        mask = masks[calls["n"]]
        calls["n"] += 1
        return x * mask / (1 - p)

    monkeypatch.setattr(F, "dropout", dropout)
    return calls


def test_bald_trunk_once_equals_t_full_passes_with_only_dropout_stochastic(monkeypatch):
    ctx = make_ctx(dropout=0.5)
    model, acq = ctx.model, BALD(samples=5)
    model.train()
    for _ in range(3):  # give BatchNorm running statistics that differ from batch statistics
        model(ctx.data.x_train[:20] * 3 + 1)
    candidates = torch.arange(10, 17)  # one batch of 7
    masks = (
        torch.rand(5, 7, model.embed_dim, generator=torch.Generator().manual_seed(1)) > 0.5
    ).float()
    bn_before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    trunk_calls = []
    hook = model.stages[0].register_forward_hook(lambda *a: trunk_calls.append(1))
    calls = _fixed_dropout(monkeypatch, masks)
    fast = acq.scores(ctx, candidates)
    hook.remove()
    assert len(trunk_calls) == 1 and calls["n"] == 0  # one trunk pass, the T masks in one go
    assert model.training  # the mode it found
    for k, v in model.state_dict().items():
        if "running" in k:
            assert torch.equal(v, bn_before[k])  # BatchNorm never ran in training mode
    # The reference: T full forward passes, BatchNorm in eval mode, only the Dropout module on.
    model.eval()
    model.dropout.train()
    with torch.no_grad():
        logits = torch.stack([model(ctx.data.x_train[candidates]) for _ in range(5)])
    model.train()
    torch.testing.assert_close(fast, mutual_information_bits(torch.softmax(logits, -1)))
    assert (fast > 0).all()


def test_bald_without_dropout_is_a_configuration_error(compose_cfg, tmp_path):
    ctx = make_ctx(dropout=0.0)
    with pytest.raises(ConfigError, match="drop the model.dropout=0 override"):
        BALD().select(ctx, torch.arange(10, 30), 3)
    with pytest.raises(ConfigError, match="needs MC dropout"):
        BALD(model_dropout=0.0)
    cfg = compose_cfg(SMOKE + ["acquisition=bald", "model.dropout=0"])
    with pytest.raises(ConfigError, match="needs MC dropout"):
        run_from_config(cfg, tmp_path)
    assert not (tmp_path / "metrics.csv").exists()  # refused before any training


@pytest.mark.parametrize("protocol", ["paper", "paper_budget", "quick", "smoke"])
@pytest.mark.parametrize("model", [None, "cnn", "resnet18"])
def test_bald_uses_the_dropout_every_row_of_the_protocol_has(compose_cfg, protocol, model):
    overrides = [f"protocol={protocol}"] + ([f"model={model}"] if model else [])
    cfg = compose_cfg(overrides + ["acquisition=bald"])
    assert cfg.acquisition.name == "bald" and cfg.model.dropout == 0.5
    assert build(cfg.acquisition).samples == 20
    net = build(cfg.model, _partial_=True)(in_channels=1, num_classes=10)
    assert isinstance(net.dropout, torch.nn.Dropout) and net.dropout.p == 0.5
    # the same classifier as every row
    assert compose_cfg(overrides + ["acquisition=ent"]).model == cfg.model
    # command line wins
    assert compose_cfg(overrides + ["acquisition=bald", "model.dropout=0.3"]).model.dropout == 0.3


def test_bald_pair_scorer_mixes_at_stage_k_and_passes_gradients_to_lambda():
    ctx = make_ctx(dropout=0.5)
    model, acq = ctx.model.eval(), BALD(samples=6)
    first, second, k = torch.arange(10, 14), torch.arange(20, 24), 1
    with torch.no_grad():
        h1, h2 = (
            model.features(ctx.data.x_train[first], k),
            model.features(ctx.data.x_train[second], k),
        )
    scorer = acq.pair_scorer(ctx, first, second, k, h1, h2)
    rows = torch.tensor([0, 2, 3])
    torch.manual_seed(5)
    at_one = scorer.mixed(torch.ones(1, 3), rows)  # lam = 1 is the first member itself
    torch.manual_seed(5)
    with torch.no_grad():
        single = acq.score_inputs(ctx, ctx.data.x_train[first[rows]])
    torch.testing.assert_close(at_one[0], single)
    lam = torch.full((2, 3), 0.4, requires_grad=True)  # (S, B): 2 samples of 3 pairs
    out = scorer.mixed(lam, rows)
    assert out.shape == (2, 3)
    out.sum().backward()
    assert torch.isfinite(lam.grad).all() and lam.grad.abs().sum() > 0
    assert scorer.base().shape == (4,) and (scorer.base() >= 0).all()


def test_bald_drives_look_ahead_augmentations():
    LookAhead().check_compatible(BALD(), "bald")  # per_instance: no error


def test_a_query_larger_than_the_candidates_is_a_clear_error():
    with pytest.raises(
        ConfigError, match="acquisition=bald must select 4 points but has only 3 candidates"
    ):
        BALD().select(make_ctx(dropout=0.5), torch.arange(10, 13), 4)


def test_smoke_run_writes_its_csv(compose_cfg, tmp_path):
    check_smoke_run(compose_cfg, tmp_path, "bald", ["bald_mi_selected", "bald_mi_candidates"])
