"""Your own images: a folder with one subfolder per class, torchvision's ImageFolder layout.

Either ``<root>/train/<class>/...`` and ``<root>/test/<class>/...``, or ``<root>/<class>/...``
split into train and test by ``test_fraction`` (stratified, seeded). Everything a bad folder can
be wrong in (no folder, one class, an empty class, images of mixed sizes) is found when the source
is built, before a run writes anything; the pixels are read once, by ``load``.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator, Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from sklearn.model_selection import train_test_split
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from ladarun.data.base import ActiveDataset
from ladarun.data.transforms import crop_flip
from ladarun.errors import ConfigError, DataNotFoundError

Samples = list[tuple[str, int]]  # (image path, class index), as torchvision's make_dataset
MODES = {1: "L", 3: "RGB"}  # dataset.channels -> the PIL mode images are converted to


class ImageFolderSource:
    """Images from ``root``, converted to ``channels`` (1: grey, 3: RGB) and, with ``image_size``
    set, resized and centre-cropped to ``image_size`` x ``image_size`` (null: every image must
    already have one square size). ``mean`` and ``std`` (per channel; null: the training split's
    own) normalise them; ``augment`` trains with random crops and flips."""

    def __init__(
        self,
        name: str = "imagefolder",
        root: Optional[str] = None,
        image_size: Optional[int] = None,
        channels: int = 3,
        test_fraction: float = 0.2,
        split_seed: int = 0,
        mean: Optional[Union[float, Sequence[float]]] = None,
        std: Optional[Union[float, Sequence[float]]] = None,
        augment: bool = False,
        crop_padding: int = 4,
        flip: bool = True,
    ) -> None:
        self.name = name
        if channels not in MODES:
            raise ConfigError(f"dataset.channels must be 1 (grey) or 3 (RGB), got {channels!r}")
        if image_size is not None and (not isinstance(image_size, int) or image_size < 1):
            raise ConfigError(
                f"dataset.image_size must be a positive integer or null, got {image_size!r}"
            )
        self.image_size, self.channels = image_size, int(channels)
        self.mean, self.std = mean, std
        self.transform = crop_flip(name, augment, crop_padding, flip)
        self.root = self._root(root)
        self.classes, self.train, self.test = self._splits(float(test_fraction), int(split_seed))
        if image_size is None:
            self._check_sizes(self.train + self.test)

    def _root(self, root: Optional[str]) -> Path:
        if root is None:
            raise ConfigError(
                "dataset=imagefolder needs its folder: set dataset.root=/path/to/images "
                "(one subfolder per class)"
            )
        path = Path(root).expanduser().resolve()
        if not path.is_dir():
            raise DataNotFoundError(f"dataset.root={root}: no folder {path}")
        return path

    def _splits(self, test_fraction: float, seed: int) -> tuple[list[str], Samples, Samples]:
        """The class names and the (path, class) samples of the train and test splits."""
        train_dir, test_dir = self.root / "train", self.root / "test"
        if train_dir.is_dir() != test_dir.is_dir():
            have, lack = (train_dir, test_dir) if train_dir.is_dir() else (test_dir, train_dir)
            raise ConfigError(
                f"dataset.root={self.root} has {have.name}/ but no {lack.name}/: add {lack}, or put "
                f"the class folders directly in {self.root} and set dataset.test_fraction"
            )
        if train_dir.is_dir():
            classes, train = self._scan(train_dir, None)
            return classes, train, self._scan(test_dir, classes)[1]
        if not 0.0 < test_fraction < 1.0:
            raise ConfigError(f"dataset.test_fraction must be in (0, 1), got {test_fraction}")
        classes, samples = self._scan(self.root, None)
        try:
            train, test = train_test_split(
                samples,
                test_size=test_fraction,
                random_state=seed,
                stratify=[c for _, c in samples],
            )
        except ValueError as err:  # a class too small to be in both splits
            raise ConfigError(
                f"dataset.root={self.root}: cannot split off a test_fraction of "
                f"{test_fraction} of every class ({err}); add images or give train/ and test/"
            ) from None
        return classes, sorted(train), sorted(test)

    def _scan(self, folder: Path, classes: Optional[list[str]]) -> tuple[list[str], Samples]:
        """One split's class folders (those of ``classes`` when given) and their images."""
        try:
            found, _ = find_classes(str(folder))
        except FileNotFoundError:
            found = []
        if classes is None and len(found) < 2:
            raise ConfigError(
                f"dataset.root: {folder} has {len(found)} class folder(s) ({', '.join(found) or 'none'}); "
                "it needs one subfolder per class, at least two"
            )
        names = classes if classes is not None else found
        unknown = sorted(set(found) - set(names))
        if unknown:
            raise ConfigError(
                f"dataset.root: {folder} has classes the training split lacks: {', '.join(unknown)}"
            )
        samples = make_dataset(
            str(folder), {c: i for i, c in enumerate(names)}, IMG_EXTENSIONS, allow_empty=True
        )
        counts = np.bincount([c for _, c in samples], minlength=len(names))
        empty = [names[i] for i in np.flatnonzero(counts == 0) if names[i] in found]
        if empty:
            raise ConfigError(
                f"dataset.root: class folder {folder / empty[0]} holds no images "
                f"({', '.join(IMG_EXTENSIONS[:4])}, ...); add images or remove the folder"
            )
        return names, samples

    def _check_sizes(self, samples: Samples) -> None:
        """One square size for every image (PIL reads only the headers here)."""
        first: Optional[tuple[str, tuple[int, int]]] = None
        for path, _ in samples:
            with _opened(path) as image:
                size = image.size
            if first is None:
                first = (path, size)
            if size != first[1] or size[0] != size[1]:
                what = (
                    f"{path} is {size[0]}x{size[1]}, {first[0]} {first[1][0]}x{first[1][1]}"
                    if size != first[1]
                    else f"{path} is {size[0]}x{size[1]}, not square"
                )
                raise ConfigError(
                    f"dataset.root: images of mixed sizes ({what}); set dataset.image_size=N to "
                    "resize and centre-crop them all to N x N"
                )

    def load(self, data_dir: Union[str, os.PathLike, None], device: torch.device) -> ActiveDataset:
        """Decode both splits into normalised device tensors; ``data_dir`` is not used (``root``)."""
        x_train, x_test = self._pixels(self.train), self._pixels(self.test)
        dims = (0, 2, 3)
        mean = x_train.mean(dims) if self.mean is None else torch.tensor(self.mean).flatten()
        std = x_train.std(dims) if self.std is None else torch.tensor(self.std).flatten()
        if std.numel() not in (1, self.channels) or (std <= 0).any():
            raise ConfigError(
                f"dataset.std must be positive, 1 or {self.channels} values, got {std.tolist()}"
            )

        def normalised(x: torch.Tensor) -> torch.Tensor:
            return ((x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)).to(device)

        def labels(samples: Samples) -> torch.Tensor:
            return torch.tensor([c for _, c in samples], dtype=torch.int64, device=device)

        return ActiveDataset(
            self.name,
            normalised(x_train),
            labels(self.train),
            normalised(x_test),
            labels(self.test),
            len(self.classes),
            self.transform,
        )

    def _pixels(self, samples: Samples) -> torch.Tensor:
        """float32 (N, C, H, W) in [0, 1]."""
        mode, side = MODES[self.channels], self.image_size
        arrays = []
        for path, _ in samples:
            with _opened(path) as opened:
                image = opened.convert(mode)
            if side is not None:
                image = ImageOps.fit(image, (side, side))  # resize the short side, crop the centre
            arrays.append(np.asarray(image, dtype=np.uint8).reshape(image.height, image.width, -1))
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div_(255)


@contextlib.contextmanager
def _opened(path: str) -> Iterator[Image.Image]:
    try:
        with Image.open(path) as image:
            yield image
    except (UnidentifiedImageError, OSError) as err:
        raise ConfigError(
            f"dataset.root: {path} cannot be read as an image ({err}); remove it"
        ) from None
