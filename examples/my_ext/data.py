from pathlib import Path

import numpy as np
import torch

from ladarun.data import ActiveDataset
from ladarun.errors import ConfigError, DataNotFoundError


class NpzSource:
    """Images and labels from one .npz file: x_train, y_train, x_test, y_test, with uint8
    images of shape (N, H, W) or (N, H, W, C) and integer labels 0..C-1."""

    def __init__(self, name: str = "npz", file: str = "my_data.npz") -> None:
        self.name, self.file = name, file

    def load(self, data_dir, device) -> ActiveDataset:
        path = Path(data_dir) / self.file
        if not path.is_file():
            raise DataNotFoundError(
                f"dataset {self.name}: no {path}; set data_dir=... to its folder"
            )
        with np.load(path) as arrays:
            missing = {"x_train", "y_train", "x_test", "y_test"} - set(arrays.files)
            if missing:
                raise ConfigError(f"{path} lacks the arrays {sorted(missing)}")
            x_train, x_test = (self._images(arrays[k]) for k in ("x_train", "x_test"))
            y_train, y_test = (
                torch.as_tensor(arrays[k], dtype=torch.int64) for k in ("y_train", "y_test")
            )
        mean, std = x_train.mean(), x_train.std()  # the training split's, never the test split's
        x_train, x_test = ((x - mean) / std for x in (x_train, x_test))
        classes = int(y_train.max()) + 1
        tensors = (t.to(device) for t in (x_train, y_train, x_test, y_test))
        return ActiveDataset(self.name, *tensors, num_classes=classes)

    @staticmethod
    def _images(x: np.ndarray) -> torch.Tensor:
        x = x[..., None] if x.ndim == 3 else x  # (N, H, W) -> (N, H, W, 1)
        return torch.from_numpy(x).permute(0, 3, 1, 2).float().div(255)
