"""torchvision's convolutional classifiers as StagedClassifiers, pretrained or from scratch.

``model=torchvision model.arch=resnet18 model.weights=DEFAULT`` is the usual pretrained setting.
The network is cut into stages where its own forward pass runs module after module (each stage
starts at a module with a convolution); its head becomes StagedClassifier's: its own pooling and
the layers before its last Linear are the "pool" whose output is the penultimate embedding
(Coreset, BADGE), then the protocol's head dropout and a new Linear for the dataset's classes.
The first convolution is adapted to the dataset's channels (a grey image's kernel is the sum of the
RGB kernels), and on small images the first stage keeps the input's resolution (stride 1, no
max-pool), as CIFAR ResNets do, so that LADA's mixing layers see full-size maps.
"""

from __future__ import annotations

import difflib
import http.client
import math
import os
import socket
from pathlib import Path
from typing import Any, Optional, Union, cast
from urllib.error import URLError
from urllib.parse import urlparse

import torch
import torchvision.models as tvm
from torch import nn

from ..errors import ConfigError, DataNotFoundError
from .staged import StagedClassifier

# Below this side the first stage keeps the input's resolution (model.small_input=null).
SMALL_INPUT = 64
# torchvision families that are no sequence of convolutional stages: module -> why
UNSUPPORTED = {
    "vision_transformer": "a transformer (its stages carry tokens, not feature maps)",
    "swin_transformer": "a transformer (its stages carry channels-last windows)",
    "maxvit": "a transformer (its stages carry attention windows)",
    "googlenet": "built around auxiliary heads and its own input transform",
    "inception": "built around auxiliary heads and its own input transform",
    "squeezenet": "its classifier is a convolution, not a Linear layer",
}
Weights = Union[None, tvm.WeightsEnum, Path]


def torchvision_backbone(
    in_channels: int,
    num_classes: int,
    arch: str = "resnet18",
    weights: Optional[str] = None,
    small_input: Optional[bool] = None,
    dropout: float = 0.0,
    image_size: Optional[int] = None,
) -> StagedClassifier:
    """torchvision's ``arch`` with ``weights`` (a torchvision weights name such as DEFAULT, a path
    to a state dict of the torchvision model, or None for a random start), as a StagedClassifier
    for ``in_channels`` x ``image_size``^2 images and ``num_classes`` classes."""
    resolved = check(arch, weights)
    net = _network(arch, resolved)
    stages = _stages(net)
    if small_input or (small_input is None and image_size is not None and image_size < SMALL_INPUT):
        _keep_resolution(stages[0])
    _adapt_input(stages[0], in_channels)
    neck, last = _head(net)
    model = StagedClassifier(stages, last.in_features, num_classes, dropout=dropout)
    model.pool = neck  # type: ignore[assignment]  # its own pooling and pre-logit layers
    if image_size is not None:
        _check_runs(model, arch, in_channels, image_size)
    return model


def check(arch: str, weights: Optional[str] = None, **_: Any) -> Weights:
    """The settings checked before a run starts: a known, supported ``arch``, and ``weights``
    that exist (a torchvision weights file is downloaded into the torch hub cache now, or named
    with where to place it). Returns the weights resolved."""
    available = tvm.list_models(module=tvm)
    if arch not in available:
        close = difflib.get_close_matches(str(arch), available, n=5, cutoff=0.5)
        hint = (
            f"close matches: {', '.join(close)}"
            if close
            else "see torchvision.models.list_models()"
        )
        raise ConfigError(f"model.arch={arch} is not a torchvision classification model; {hint}")
    family = tvm.get_model_builder(arch).__module__.rsplit(".", 1)[-1]
    if family in UNSUPPORTED:
        raise ConfigError(
            f"model.arch={arch} cannot be split into ladarun's stages: {UNSUPPORTED[family]}; "
            "use a convolutional network (resnet*, resnext*, wide_resnet*, regnet_*, vgg*, "
            "densenet*, mobilenet_*, efficientnet_*, convnext_*, mnasnet*, shufflenet_*, alexnet)"
        )
    resolved = _weights(arch, weights)
    if isinstance(resolved, tvm.WeightsEnum):
        _download(arch, resolved, f"model.weights={weights}")
    return resolved


torchvision_backbone.check = check  # type: ignore[attr-defined]  # config.py calls it early


def _weights(arch: str, weights: Optional[str]) -> Weights:
    if weights is None:
        return None
    text = str(weights)
    if os.sep in text or text.endswith((".pt", ".pth", ".bin")) or Path(text).is_file():
        path = Path(text).expanduser()
        if not path.is_file():
            raise ConfigError(f"model.weights={text}: no such file (a state dict of {arch})")
        return path
    enum = tvm.get_model_weights(arch)
    name = text.rsplit(".", 1)[-1]  # ResNet18_Weights.IMAGENET1K_V1 or IMAGENET1K_V1
    if name not in enum.__members__:
        names = list(enum.__members__)
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.3) or names
        raise ConfigError(
            f"model.weights={text} is not a weights name of {arch}; close matches: "
            f"{', '.join(close)} (or a path to a state dict, or null)"
        )
    return enum[name]


def _cached(weights: tvm.WeightsEnum) -> Path:
    """Where torch.hub keeps (and looks for) a torchvision weights file."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)


def _download(arch: str, weights: tvm.WeightsEnum, setting: str, timeout: float = 20.0) -> None:
    path = _cached(weights)
    if path.is_file():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)  # an offline machine must fail fast
    try:
        torch.hub.download_url_to_file(weights.url, str(path), progress=False)
    except (OSError, URLError, http.client.HTTPException) as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        raise DataNotFoundError(
            f"{setting}: {arch}'s weights {weights} are not in the torch hub cache and could not "
            f"be downloaded ({reason}); place the file {path.name} ({weights.url}) at {path} "
            "(TORCH_HOME moves the cache), or set model.weights=<path to a state dict>"
        ) from None
    finally:
        socket.setdefaulttimeout(previous)


def _network(arch: str, weights: Weights) -> nn.Module:
    """torchvision's network with its own classifier, the weights loaded (all but its last Linear's,
    which is replaced)."""
    if weights is None:
        return tvm.get_model(arch, weights=None)
    if isinstance(weights, tvm.WeightsEnum):
        net = tvm.get_model(arch, weights=None, num_classes=len(weights.meta["categories"]))
        path = _cached(weights)
    else:
        net, path = tvm.get_model(arch, weights=None), weights
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle, zip and torch errors alike
        raise ConfigError(f"model.weights: {path} is not a readable state dict ({err})") from None
    last = _last_linear_name(net)
    state = {k: v for k, v in state.items() if not k.startswith(f"{last}.")}
    missing, unexpected = net.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(f"{last}.")]
    if missing or unexpected:
        raise ConfigError(
            f"model.weights: {path} is not a state dict of torchvision's {arch} "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    return net


def _classifier(net: nn.Module) -> list[nn.Module]:
    head = cast(nn.Module, net.fc if hasattr(net, "fc") else net.classifier)
    return list(head) if isinstance(head, nn.Sequential) else [head]


def _last_linear_name(net: nn.Module) -> str:
    last = _classifier(net)[-1]
    return next(name for name, module in net.named_modules() if module is last)


def _stages(net: nn.Module) -> list[nn.Module]:
    """The body in forward order, cut before every module that holds a convolution."""
    body: list[nn.Module]
    if isinstance(net, tvm.RegNet):
        body = [net.stem, *net.trunk_output]
    elif isinstance(net, tvm.MNASNet):
        body = list(net.layers)
    elif isinstance(net, (tvm.ResNet, tvm.ShuffleNetV2)):
        body = [m for name, m in net.named_children() if name not in ("avgpool", "fc")]
    else:  # VGG, AlexNet, DenseNet, MobileNet, EfficientNet, ConvNeXt
        body = list(cast(nn.Sequential, net.features))
    groups: list[list[nn.Module]] = []
    for module in body:
        convolves = any(isinstance(m, nn.Conv2d) for m in module.modules())
        if convolves or not groups:
            groups.append([module])
        else:  # a norm, activation or pooling ends the stage before it
            groups[-1].append(module)
    return [nn.Sequential(*g) for g in groups]


def _head(net: nn.Module) -> tuple[nn.Module, nn.Linear]:
    """The network's pooling and pre-logit layers (its trailing dropout left to the protocol's),
    and its last Linear."""
    *prefix, last = _classifier(net)
    if not isinstance(last, nn.Linear):
        raise ConfigError(f"{type(net).__name__}'s classifier does not end in a Linear layer")
    while prefix and isinstance(prefix[-1], nn.Dropout):
        prefix.pop()
    pool = cast(nn.Module, net.avgpool) if hasattr(net, "avgpool") else nn.AdaptiveAvgPool2d(1)
    # DenseNet applies its last ReLU in forward(), after its features
    before = [nn.ReLU()] if isinstance(net, tvm.DenseNet) else []
    flatten = [] if any(isinstance(m, nn.Flatten) for m in prefix) else [nn.Flatten(1)]
    return nn.Sequential(*before, pool, *flatten, *prefix), last


def _keep_resolution(stage: nn.Module) -> None:
    """Stride 1 and no max-pool in the first stage (in place)."""
    for parent in list(stage.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.MaxPool2d):
                setattr(parent, name, nn.Identity())
            elif isinstance(child, nn.Conv2d):
                child.stride = (1, 1)


def _adapt_input(stage: nn.Module, in_channels: int) -> None:
    """The first convolution for ``in_channels``: its RGB kernels summed (grey) or repeated and
    rescaled, so a pretrained filter keeps its response to the same pattern."""
    for parent in list(stage.modules()):
        for name, conv in parent.named_children():
            if not isinstance(conv, nn.Conv2d):
                continue
            if conv.in_channels == in_channels:
                return
            new = nn.Conv2d(
                in_channels,
                conv.out_channels,
                conv.kernel_size,  # type: ignore[arg-type]
                conv.stride,  # type: ignore[arg-type]
                conv.padding,  # type: ignore[arg-type]
                bias=conv.bias is not None,
            )
            with torch.no_grad():
                w = conv.weight
                if in_channels == 1:
                    new.weight.copy_(w.sum(1, keepdim=True))
                else:
                    repeats = math.ceil(in_channels / w.shape[1])
                    new.weight.copy_(
                        w.repeat(1, repeats, 1, 1)[:, :in_channels] * w.shape[1] / in_channels
                    )
                if conv.bias is not None:
                    new.bias.copy_(conv.bias)  # type: ignore[union-attr]
            setattr(parent, name, new)
            return


def _check_runs(model: StagedClassifier, arch: str, in_channels: int, image_size: int) -> None:
    """One forward pass in eval mode: a network that shrinks these images to nothing fails here,
    with the fix, rather than in the first training batch."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, in_channels, image_size, image_size))
    except RuntimeError as err:
        raise ConfigError(
            f"model.arch={arch} cannot run on {image_size}x{image_size} images "
            f"({' '.join(str(err).split())[:200]}); resize them (dataset.image_size=...), "
            "set model.small_input=true, or choose another arch"
        ) from None
    finally:
        model.train(was_training)
