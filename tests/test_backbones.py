"""model=torchvision: torchvision's classifiers as StagedClassifiers, loaded offline from state
dicts the tests write (a file path, and the torch hub cache file a weights name reads)."""

from __future__ import annotations

import pytest
import torch
import torchvision.models as tvm
from torch import nn

from helpers import SMOKE
from ladarun.errors import ConfigError, DataNotFoundError
from ladarun.models import StagedClassifier, torchvision_backbone
from ladarun.models.backbones import _cached


def test_resnet18_interface_and_parameter_count() -> None:
    torch.manual_seed(0)
    model = torchvision_backbone(3, 10, arch="resnet18", dropout=0.5, image_size=32)
    assert isinstance(model, StagedClassifier) and model.num_stages == 5
    # torchvision's 11,689,512 parameters less its 1000-class fc (513,000), plus 10 classes (5,130)
    assert sum(p.numel() for p in model.parameters()) == 11_181_642
    assert isinstance(model.dropout, nn.Dropout) and model.dropout.p == 0.5
    x = torch.randn(3, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        assert model.features(x, 1).shape == (3, 64, 32, 32)  # small input: stem at full size
        assert model.features(x, 2).shape == (3, 64, 32, 32)
        assert model.embed(x).shape == (3, 512)
        h = model.features(x, 2)
        assert torch.allclose(model.forward_from(h, 2), model(x), atol=1e-5)
        assert torch.allclose(model.fc(model.embed(x)), model(x), atol=1e-5)  # eval: no dropout
    large = torchvision_backbone(3, 10, arch="resnet18", image_size=64)
    assert large.features(torch.randn(1, 3, 64, 64), 1).shape == (1, 64, 16, 16)  # ImageNet stem


@pytest.mark.parametrize(
    "arch, embed",
    [
        ("mobilenet_v3_small", 1024),
        ("efficientnet_b0", 1280),
        ("densenet121", 1024),
        ("alexnet", 4096),
    ],
)
def test_other_families_fit_the_interface(arch, embed) -> None:
    model = torchvision_backbone(1, 7, arch=arch, image_size=28).eval()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert model(x).shape == (2, 7) and model.embed(x).shape == (2, embed)
        for k in range(model.num_stages + 1):
            assert torch.allclose(model.forward_from(model.features(x, k), k), model(x), atol=1e-4)


def write_resnet18_state(path, seed=1) -> dict:
    torch.manual_seed(seed)
    state = tvm.resnet18(num_classes=1000).state_dict()
    torch.save(state, path)
    return state


def test_weights_from_a_state_dict_file(tmp_path) -> None:
    state = write_resnet18_state(tmp_path / "r18.pt")
    grey = torchvision_backbone(
        1, 10, arch="resnet18", weights=str(tmp_path / "r18.pt"), image_size=28
    )
    rgb = torchvision_backbone(
        3, 10, arch="resnet18", weights=str(tmp_path / "r18.pt"), image_size=28
    )
    conv1 = state["conv1.weight"]
    assert torch.equal(rgb.stages[0][0].weight, conv1)
    assert torch.allclose(grey.stages[0][0].weight, conv1.sum(1, keepdim=True))  # grey: RGB summed
    assert torch.equal(rgb.stages[4][0][1].conv2.weight, state["layer4.1.conv2.weight"])
    assert torch.equal(rgb.stages[1][0][0].bn1.running_mean, state["layer1.0.bn1.running_mean"])
    assert rgb.fc.out_features == 10  # a new classifier for the dataset's classes
    with pytest.raises(ConfigError, match="not a state dict of torchvision's resnet34"):
        torchvision_backbone(3, 10, arch="resnet34", weights=str(tmp_path / "r18.pt"))
    with pytest.raises(ConfigError, match="no such file"):
        torchvision_backbone(3, 10, arch="resnet18", weights=str(tmp_path / "none.pt"))


def test_a_weights_name_reads_the_hub_cache_or_says_where_to_place_it(
    tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(url, dst, progress=True):
        raise OSError("network unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    expected = tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    with pytest.raises(DataNotFoundError) as info:
        torchvision_backbone(3, 10, arch="resnet18", weights="DEFAULT")
    message = str(info.value)
    assert str(expected) in message and "network unreachable" in message and "\n" not in message
    assert _cached(tvm.ResNet18_Weights.DEFAULT) == expected
    expected.parent.mkdir(parents=True, exist_ok=True)
    state = write_resnet18_state(expected, seed=2)
    model = torchvision_backbone(3, 10, arch="resnet18", weights="IMAGENET1K_V1", image_size=32)
    assert torch.equal(model.stages[2][0][0].conv1.weight, state["layer2.0.conv1.weight"])


@pytest.mark.parametrize(
    "arch, weights, match",
    [
        ("resnet81", None, "close matches: resnet18"),
        ("vit_b_16", None, "a transformer"),
        ("squeezenet1_0", None, "classifier is a convolution"),
        ("resnet18", "IMAGENET", "close matches: IMAGENET1K_V1"),
    ],
)
def test_bad_arch_or_weights_before_a_run_writes_anything(
    compose_cfg, tmp_path, arch, weights, match
) -> None:
    from ladarun.runner import run_from_config

    overrides = [*SMOKE, "model=torchvision", f"model.arch={arch}"]
    if weights:
        overrides.append(f"model.weights={weights}")
    with pytest.raises(ConfigError, match=match) as info:
        run_from_config(compose_cfg(overrides), tmp_path / "run")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "run").exists()


def test_images_too_small_for_the_network_are_one_line() -> None:
    with pytest.raises(ConfigError, match="cannot run on 8x8 images"):
        torchvision_backbone(1, 10, arch="alexnet", image_size=8)
