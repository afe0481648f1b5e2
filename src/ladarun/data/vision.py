"""MNIST, KMNIST, Fashion-MNIST, SVHN, CIFAR-10 and CIFAR-100 read through torchvision's own
dataset classes.

Whole splits are turned into normalised device tensors straight from the datasets'
``.data`` arrays; nothing goes through ``__getitem__``.
"""

from __future__ import annotations

import http.client
import logging
import os
import pickle
import socket
from pathlib import Path
from typing import Any, Optional, Sequence, Union, cast

import numpy as np
import torch
import torchvision
from torchvision.datasets import VisionDataset
from torchvision.datasets.utils import check_integrity

from ladarun.data.base import ActiveDataset, BatchTransform
from ladarun.data.transforms import crop_flip
from ladarun.errors import ConfigError, DamagedFileError, DataNotFoundError

log = logging.getLogger(__name__)

Floats = Union[float, Sequence[float]]


class _SVHN(torchvision.datasets.SVHN):
    # torchvision insists on the official md5 even with download=False; we only require the
    # file to exist and let the source warn about a checksum mismatch instead.
    def _check_integrity(self) -> bool:
        return os.path.isfile(os.path.join(self.root, self.filename))

    def download(self) -> None:
        if not self._check_integrity():  # never re-fetch a present file over its md5
            super().download()


class _PresentCIFAR:
    # Same as _SVHN: presence is required, the md5 check is the source's (a warning).
    base_folder: str
    train_list: list[list[str]]
    test_list: list[list[str]]
    meta: dict[str, str]
    root: str

    def _check_integrity(self) -> bool:
        names = [f for f, _ in self.train_list + self.test_list] + [self.meta["filename"]]
        return all(os.path.isfile(os.path.join(self.root, self.base_folder, f)) for f in names)

    def _load_meta(self) -> None:
        path = os.path.join(self.root, self.base_folder, self.meta["filename"])
        with open(path, "rb") as f:
            self.classes = pickle.load(f, encoding="latin1")[self.meta["key"]]
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}


class _CIFAR10(_PresentCIFAR, torchvision.datasets.CIFAR10):
    pass


class _CIFAR100(_PresentCIFAR, torchvision.datasets.CIFAR100):
    pass


class _TorchvisionSource:
    """Shared loading, download and error handling; subclasses say where the files are.

    A subclass's ``defaults`` are its conf/dataset file's values, for calls from Python that
    leave them out: ``name``, ``mean``, ``std``, and the training augmentation: ``augment``
    (random crops of ``crop_padding`` pixels, and horizontal flips unless ``flip`` is false).
    """

    title = ""
    channels = 1
    num_classes = 10
    defaults: dict[str, Any] = {}

    def __init__(
        self,
        name: Optional[str] = None,
        mean: Optional[Floats] = None,
        std: Optional[Floats] = None,
        augment: Optional[bool] = None,
        crop_padding: Optional[int] = None,
        flip: Optional[bool] = None,
        download: bool = True,
        download_timeout: float = 20.0,
    ) -> None:
        given = dict(name=name, mean=mean, std=std, augment=augment, crop_padding=crop_padding)
        given["flip"] = flip
        settings: dict[str, Any] = {
            k: self.defaults[k] if v is None else v for k, v in given.items()
        }
        self.name = str(settings["name"])
        self.mean = self._per_channel("mean", settings["mean"])
        self.std = self._per_channel("std", settings["std"])
        self.augment = bool(settings["augment"])
        self.crop_padding, self.flip = settings["crop_padding"], bool(settings["flip"])
        self.transform = crop_flip(self.name, self.augment, self.crop_padding, self.flip)
        self.download = bool(download)
        self.download_timeout = float(download_timeout)

    def _per_channel(self, key: str, value: Floats) -> tuple[float, ...]:
        # Accepts a scalar or a list (an OmegaConf ListConfig when built by Hydra).
        values = (
            (float(value),) if isinstance(value, (int, float)) else tuple(float(v) for v in value)
        )
        if len(values) not in (1, self.channels):
            raise ConfigError(
                f"dataset {self.name}: {key} needs 1 or {self.channels} values, got {list(values)}"
            )
        if key == "std" and min(values) <= 0:
            raise ConfigError(f"dataset {self.name}: std must be positive, got {list(values)}")
        return values

    # --- what subclasses provide -------------------------------------------------------
    def _folder(self, root: Path) -> Path:
        """Where torchvision expects the files under ``root``."""
        raise NotImplementedError

    def _expected_files(self) -> dict[str, Optional[str]]:
        """The files torchvision reads from ``_folder``, each with its official md5 (None if it has none)."""
        raise NotImplementedError

    def _open(self, root: Path, train: bool, download: bool) -> VisionDataset:
        raise NotImplementedError

    def _arrays(self, ds: VisionDataset) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images ``(N, C, H, W)`` (any strides) and int64 labels, on the CPU."""
        raise NotImplementedError

    def _train_transform(self) -> Optional[BatchTransform]:
        return self.transform

    # --- loading ------------------------------------------------------------------------
    def load(self, data_dir: Union[str, os.PathLike], device: torch.device) -> ActiveDataset:
        """Read both splits into normalised device tensors, downloading if allowed."""
        if data_dir is None:
            raise ConfigError(f"dataset {self.name}: data_dir is not set")
        root = Path(data_dir).expanduser().resolve()
        folder = self._folder(root)
        if all((folder / f).is_file() for f in self._expected_files()):
            self._check_files(folder)
            self._warn_on_checksums(folder)
            train, test = self._read(root, True), self._read(root, False)
        else:
            train, test = self._fetch(root, folder)
        x_train, y_train = self._arrays(train)
        x_test, y_test = self._arrays(test)
        self._check_labels(folder, True, x_train, y_train)
        self._check_labels(folder, False, x_test, y_test)
        return ActiveDataset(
            name=self.name,
            x_train=self._normalise(x_train, device),
            y_train=y_train.to(device),
            x_test=self._normalise(x_test, device),
            y_test=y_test.to(device),
            num_classes=self.num_classes,
            train_transform=self._train_transform(),
        )

    # --- damaged files: found before a run starts, named with the fix ----------------------
    def _split_files(self, train: bool) -> list[str]:
        """The files of ``_expected_files`` that hold one split (all of them by default)."""
        return list(self._expected_files())

    def _damaged(self, folder: Path, files: Sequence[str], why: str) -> DamagedFileError:
        names = ", ".join(str(folder / f) for f in files)
        return DamagedFileError(
            f"{self.title} file{'s' if len(files) > 1 else ''} {names} cannot be used ({why}); "
            "the file is truncated, damaged or not in torchvision's format: copy it again from a "
            "good copy (or delete it and load once with download=true on a machine with network access)"
        )

    def _check_files(self, folder: Path) -> None:
        """Check what can be checked cheaply (headers, sizes) before reading; subclasses add to it."""
        for f in self._expected_files():
            if (folder / f).stat().st_size == 0:
                raise self._damaged(folder, [f], "it is empty")

    def _read(self, root: Path, train: bool) -> VisionDataset:
        """``_open`` on files that are present, any reading error named with its files."""
        try:
            return self._open(root, train, False)
        except Exception as err:  # pickle, scipy.io, numpy and torchvision errors alike
            why = " ".join(f"{type(err).__name__}: {err}".split())[:300]
            raise self._damaged(self._folder(root), self._split_files(train), why) from None

    def _check_labels(
        self, folder: Path, train: bool, images: torch.Tensor, labels: torch.Tensor
    ) -> None:
        """Every label a class index, one per image: a wrong file fails here, not mid-run."""
        files = self._split_files(train)
        if labels.numel() != images.shape[0]:
            raise self._damaged(
                folder, files, f"{images.shape[0]} images but {labels.numel()} labels"
            )
        if labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise self._damaged(
                folder,
                files,
                f"labels range over {int(labels.min())}..{int(labels.max())}, "
                f"not 0..{self.num_classes - 1}",
            )

    def _normalise(self, images: torch.Tensor, device: torch.device) -> torch.Tensor:
        # Move uint8 first: a quarter of the bytes of float32 cross to the device.
        x = images.to(device).to(torch.float32, memory_format=torch.contiguous_format).div_(255)
        mean = torch.tensor(self.mean, device=device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=device).view(1, -1, 1, 1)
        return x.sub_(mean).div_(std)

    def _fetch(self, root: Path, folder: Path) -> tuple[VisionDataset, VisionDataset]:
        reason = "download is off"
        existed = {p for p in [folder, *folder.parents] if p.exists()}
        if self.download:
            previous = socket.getdefaulttimeout()
            socket.setdefaulttimeout(self.download_timeout)  # an offline machine must fail fast
            try:
                return self._open(root, True, True), self._open(root, False, True)
            except (OSError, RuntimeError, http.client.HTTPException) as e:
                # torchvision's messages span lines; the CLI shows ours as one.
                reason = f"download failed: {' '.join(str(e).split()) or type(e).__name__}"
            finally:
                socket.setdefaulttimeout(previous)
            # torchvision made the folders before it tried: leave no empty tree behind.
            for p in [folder, *folder.parents]:
                if p in existed:
                    break
                try:
                    p.rmdir()
                except OSError:  # not empty: something was written there
                    break
        expected = ", ".join(self._expected_files())
        subfolder = folder.relative_to(root)
        inside = (
            "" if subfolder == Path(".") else f" (files go in <data_dir>/{subfolder.as_posix()}/)"
        )
        raise DataNotFoundError(
            f"{self.title} data not found: {folder} should contain {expected} ({reason}). "
            f"Put the files there, or set data_dir=... or the LADARUN_DATA environment variable "
            f"to a data folder that has them{inside}. To get them, load once with download=true "
            f"on a machine with network access and copy the folder over."
        ) from None

    def _warn_on_checksums(self, folder: Path) -> None:
        wrong = [
            f
            for f, md5 in self._expected_files().items()
            if md5 and not check_integrity(folder / f, md5)
        ]
        if wrong:
            log.warning(
                "%s files in %s do not match torchvision's checksums (%s); loading them anyway.",
                self.title,
                folder,
                ", ".join(wrong),
            )


class _IdxSource(_TorchvisionSource):
    """The MNIST family: four idx files in ``<data_dir>/<torchvision class name>/raw/``."""

    dataset_class: type[torchvision.datasets.MNIST] = torchvision.datasets.MNIST

    def _folder(self, root: Path) -> Path:
        return root / self.dataset_class.__name__ / "raw"

    def _expected_files(self) -> dict[str, Optional[str]]:
        # torchvision only knows the md5s of the .gz archives, not of the idx files it reads.
        return {os.path.splitext(gz)[0]: None for gz, _ in self.dataset_class.resources}

    def _split_files(self, train: bool) -> list[str]:
        prefix = "train" if train else "t10k"
        return [f for f in self._expected_files() if f.startswith(prefix)]

    def _check_files(self, folder: Path) -> None:
        super()._check_files(folder)
        # idx format: a big-endian magic (2051 images, 2049 labels), the sizes, then one byte each.
        for f in self._expected_files():
            path = folder / f
            with open(path, "rb") as fh:
                header = fh.read(16)
            images = "images" in f
            size = 16 if images else 8
            if len(header) < size:
                raise self._damaged(
                    folder, [f], f"{path.stat().st_size} bytes, shorter than its header"
                )
            dims = np.frombuffer(header[:size], dtype=">u4")
            magic = 2051 if images else 2049
            if dims[0] != magic:
                raise self._damaged(
                    folder, [f], f"its idx header starts with {int(dims[0])}, not {magic}"
                )
            expected = size + int(np.prod(dims[1:].astype(np.int64)))
            if path.stat().st_size != expected:
                raise self._damaged(
                    folder,
                    [f],
                    f"{path.stat().st_size} bytes where its header says {expected}",
                )

    def _open(self, root: Path, train: bool, download: bool) -> VisionDataset:
        return self.dataset_class(root=str(root), train=train, download=download)

    def _arrays(self, ds: VisionDataset) -> tuple[torch.Tensor, torch.Tensor]:
        return ds.data.unsqueeze(1), ds.targets.to(torch.int64)


class FashionMNISTSource(_IdxSource):
    """Fashion-MNIST, 1x28x28, 60k/10k; files in ``<data_dir>/FashionMNIST/raw/``.

    ``augment``: a per-sample random crop (``crop_padding`` pixels) and horizontal flip while
    training. Off by default, as in the paper; the CPU Table 1 preset turns it on
    (docs/methods.md §1).
    """

    title = "Fashion-MNIST"
    dataset_class = torchvision.datasets.FashionMNIST
    # the official code's (MNIST) statistics, kept for fidelity
    defaults = dict(
        name="fashion", mean=0.1307, std=0.3081, augment=False, crop_padding=2, flip=True
    )


class MNISTSource(_IdxSource):
    """MNIST handwritten digits, 1x28x28, 60k/10k; files in ``<data_dir>/MNIST/raw/``.
    No flips with ``augment`` (a mirrored digit is another digit, or none)."""

    title = "MNIST"
    dataset_class = torchvision.datasets.MNIST
    defaults = dict(
        name="mnist", mean=0.1307, std=0.3081, augment=False, crop_padding=2, flip=False
    )


class KMNISTSource(_IdxSource):
    """Kuzushiji-MNIST, 10 classes of cursive Japanese characters, 1x28x28, 60k/10k; files in
    ``<data_dir>/KMNIST/raw/``. No flips with ``augment``, as for digits."""

    title = "KMNIST"
    dataset_class = torchvision.datasets.KMNIST
    defaults = dict(
        name="kmnist", mean=0.1918, std=0.3483, augment=False, crop_padding=2, flip=False
    )


class SVHNSource(_TorchvisionSource):
    """SVHN cropped digits, 3x32x32, 73,257/26,032; ``<data_dir>/{train,test}_32x32.mat``."""

    title = "SVHN"
    channels = 3
    # no flips with augment: house numbers are digits
    defaults = dict(name="svhn", mean=(0.5,) * 3, std=(0.5,) * 3, augment=False, crop_padding=2)
    defaults["flip"] = False

    def _folder(self, root: Path) -> Path:
        return root

    def _expected_files(self) -> dict[str, Optional[str]]:
        splits = torchvision.datasets.SVHN.split_list
        return {splits[s][1]: splits[s][2] for s in ("train", "test")}

    def _split_files(self, train: bool) -> list[str]:
        return [torchvision.datasets.SVHN.split_list["train" if train else "test"][1]]

    def _open(self, root: Path, train: bool, download: bool) -> VisionDataset:
        return _SVHN(root=str(root), split="train" if train else "test", download=download)

    def _arrays(self, ds: VisionDataset) -> tuple[torch.Tensor, torch.Tensor]:
        # torchvision has already mapped label 10 to digit 0 and transposed to (N, C, H, W).
        return torch.from_numpy(ds.data), torch.from_numpy(np.asarray(ds.labels, dtype=np.int64))


class CIFAR10Source(_TorchvisionSource):
    """CIFAR-10, 3x32x32, 50k/10k; ``<data_dir>/cifar-10-batches-py/``. Trains with crop+flip."""

    title = "CIFAR-10"
    channels = 3
    dataset_class: type[_PresentCIFAR] = _CIFAR10
    defaults = dict(name="cifar10", mean=(0.4914, 0.4822, 0.4465), std=(0.2023, 0.1994, 0.2010))
    defaults.update(augment=True, crop_padding=4, flip=True)

    def _folder(self, root: Path) -> Path:
        return root / self.dataset_class.base_folder

    def _expected_files(self) -> dict[str, Optional[str]]:
        cls = self.dataset_class
        files: dict[str, Optional[str]] = {f: md5 for f, md5 in cls.train_list + cls.test_list}
        files[cls.meta["filename"]] = cls.meta["md5"]
        return files

    def _split_files(self, train: bool) -> list[str]:
        cls = self.dataset_class
        return [f for f, _ in (cls.train_list if train else cls.test_list)] + [cls.meta["filename"]]

    def _open(self, root: Path, train: bool, download: bool) -> VisionDataset:
        opened = self.dataset_class(root=str(root), train=train, download=download)  # type: ignore[call-arg]
        return cast(VisionDataset, opened)

    def _arrays(self, ds: VisionDataset) -> tuple[torch.Tensor, torch.Tensor]:
        images = torch.from_numpy(ds.data).permute(0, 3, 1, 2)  # torchvision keeps CIFAR as NHWC
        return images, torch.as_tensor(ds.targets, dtype=torch.int64)


class CIFAR100Source(CIFAR10Source):
    """CIFAR-100, 3x32x32, 50k/10k, 100 classes (the fine labels); ``<data_dir>/cifar-100-python/``."""

    title = "CIFAR-100"
    num_classes = 100
    dataset_class = _CIFAR100
    defaults = dict(name="cifar100", mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762))
    defaults.update(augment=True, crop_padding=4, flip=True)
