"""Speed switches: bf16 autocast, channels_last and torch.compile, all off by default.

Each trades bit-exactness against the official code's float32 NCHW eager execution for
speed, so each is a config switch (``speed.*``) and the benchmark measures it on and off.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator, Optional

import torch

from .errors import ConfigError
from .models.staged import StagedClassifier


@dataclass
class SpeedOptions:
    autocast: Optional[str] = None  # None or "bf16": torch.autocast for every forward pass
    channels_last: bool = False  # NHWC model weights and image tensors (faster convolutions on tensor cores)
    compile: bool = False  # torch.compile each stage of the classifier in place (state_dict keys unchanged)
    compile_mode: Optional[str] = None  # torch.compile's mode, e.g. "max-autotune-no-cudagraphs"

    def __post_init__(self) -> None:
        if self.autocast not in (None, "none", "bf16"):
            raise ConfigError(f"speed.autocast must be null or bf16, got {self.autocast!r}")
        if self.autocast == "none":
            self.autocast = None

    def prepare_model(self, model: StagedClassifier) -> StagedClassifier:
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if self.compile:
            # Module.compile works in place, so checkpoints keep their plain parameter names.
            for stage in model.stages:
                stage.compile(mode=self.compile_mode, dynamic=None)
        return model

    def prepare_images(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x

    @contextlib.contextmanager
    def autocast_on(self, device: torch.device) -> Iterator[None]:
        if self.autocast is None:
            yield
            return
        # cache_enabled=False: the cache keeps the bf16 copy of each weight until the block
        # exits, and a block spans many optimizer steps here, so the forward passes would keep
        # using the first step's weights.
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, cache_enabled=False):
            yield
