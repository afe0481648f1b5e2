import pytest
import torch

from ladarun.errors import ConfigError
from ladarun.models import cnn, resnet18


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_resnet18_parameter_counts_match_the_cifar_resnet():
    # docs/methods.md §2: the kuangliu CIFAR ResNet-18.
    assert n_params(resnet18(in_channels=3, num_classes=10)) == 11_173_962
    assert n_params(resnet18(in_channels=1, num_classes=10)) == 11_172_810
    assert n_params(resnet18(in_channels=3, num_classes=100)) == 11_220_132


def test_resnet18_stage_shapes_follow_code_indexing():
    model = resnet18(in_channels=3, num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    expected = {
        0: (3, 32, 32),
        1: (64, 32, 32),
        2: (64, 32, 32),
        3: (128, 16, 16),
        4: (256, 8, 8),
        5: (512, 4, 4),
    }
    for k, shape in expected.items():
        assert tuple(model.features(x, k).shape[1:]) == shape
    assert model.embed(x).shape == (2, 512)


@pytest.mark.parametrize(
    "build,shape",
    [
        (lambda: resnet18(in_channels=1, num_classes=10), (3, 1, 28, 28)),
        (lambda: resnet18(in_channels=3, num_classes=10), (3, 3, 32, 32)),
        (lambda: cnn(in_channels=1, num_classes=10), (3, 1, 28, 28)),
        (lambda: cnn(in_channels=1, num_classes=10), (3, 1, 8, 8)),
        (lambda: cnn(in_channels=3, num_classes=7, dropout=0.5), (3, 3, 32, 32)),
    ],
)
def test_forward_from_features_equals_forward_for_every_stage(build, shape):
    torch.manual_seed(0)
    model = build().eval()
    x = torch.randn(*shape)
    full = model(x)
    assert full.shape == (shape[0], model.num_classes)
    for k in range(model.num_stages + 1):
        torch.testing.assert_close(model.forward_from(model.features(x, k), k), full)
    # embed is the input of the head
    torch.testing.assert_close(model.fc(model.embed(x)), full)


def test_stage_index_out_of_range_is_an_error():
    model = cnn(in_channels=1, num_classes=10)
    with pytest.raises(ValueError, match="0..5"):
        model.features(torch.zeros(2, 1, 8, 8), 6)


def test_cnn_stages_and_pool_grid_options():
    """The CPU learner (5 stages, 2x2 pooling grid) and the pre-0.3 CNN (4 stages, global pool)."""
    x = torch.randn(2, 1, 28, 28)
    new = cnn(in_channels=1, num_classes=10).eval()
    assert new.num_stages == 5 and tuple(new.features(x, 5).shape[1:]) == (128, 4, 4)
    assert new.embed_dim == 512 and new.embed(x).shape == (2, 512)
    # LADA's mixing layers keep full-size maps
    assert tuple(new.features(x, 2).shape[1:]) == (
        16,
        28,
        28,
    )
    old = cnn(in_channels=1, num_classes=10, stages=4, pool_grid=1).eval()
    assert old.num_stages == 4 and old.embed_dim == 64 and old.embed(x).shape == (2, 64)
    assert n_params(old) == 26_394  # the CNN of results committed before the learner changed
    # the grid's cells are the averages of the map's quadrants (the global pool would be their mean)
    h = new.features(x, 5)
    cells = new.embed(x).view(2, 128, 2, 2)
    torch.testing.assert_close(cells[..., 0, 0], h[..., :2, :2].mean((-1, -2)))
    # never below 2x2: on 8x8 digits the fifth stage keeps stride 1, and a batch of one trains
    small = cnn(in_channels=1, num_classes=10, image_size=8).train()
    assert tuple(small.features(torch.randn(1, 1, 8, 8), 5).shape[1:]) == (128, 2, 2)
    small(torch.randn(1, 1, 8, 8)).sum().backward()
    with pytest.raises(ConfigError, match="model.stages"):
        cnn(in_channels=1, num_classes=10, stages=2)
    with pytest.raises(ValueError, match="pool_grid"):
        cnn(in_channels=1, num_classes=10, pool_grid=0)


def test_dropout_option_only_changes_training_mode_outputs():
    torch.manual_seed(0)
    model = cnn(in_channels=1, num_classes=10, dropout=0.5)
    x = torch.randn(4, 1, 8, 8)
    model.eval()
    torch.testing.assert_close(model(x), model(x))
    model.train()
    model.stages.eval()  # keep BatchNorm fixed: only dropout is stochastic
    assert not torch.allclose(model(x), model(x))


def test_embed_from_stage_k_is_the_input_of_the_head():
    torch.manual_seed(0)
    model = cnn(in_channels=1, num_classes=5, dropout=0.5).eval()
    x = torch.randn(3, 1, 8, 8)
    for k in range(model.num_stages + 1):
        pooled = model.embed_from(model.features(x, k), k)
        torch.testing.assert_close(pooled, model.embed(x))
        torch.testing.assert_close(model.fc(pooled), model(x))
