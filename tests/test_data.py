"""Data layer: torchvision-format loaders on tiny files, missing data, digits, synthetic, crop+flip."""

from __future__ import annotations

import logging
import pickle
import socket
from collections import Counter
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import scipy.io
import torch
import torchvision
from hydra.utils import instantiate
from omegaconf import OmegaConf
from sklearn.datasets import load_digits
from torchvision.datasets.utils import calculate_md5

from helpers import CPU, SHARED_DATA
from ladarun.conf import CONF_DIR
from ladarun.data import (
    ActiveDataset,
    CIFAR10Source,
    CIFAR100Source,
    DigitsSource,
    FashionMNISTSource,
    KMNISTSource,
    MNISTSource,
    SVHNSource,
    SyntheticSource,
    random_crop_flip,
)
from ladarun.errors import ConfigError, DamagedFileError, DataNotFoundError

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)


# --- tiny files in torchvision's on-disk formats ---------------------------------------------

SVHN_TRAIN_LABELS = [1, 2, 10, 5, 10]  # SVHN stores digit 0 as label 10
SVHN_TEST_LABELS = [10, 3, 9]


def write_svhn(root: Path) -> None:
    """``{train,test}_32x32.mat`` with X (H, W, C, N) uint8 and y (N, 1) as in the real files."""
    for split, labels in (("train", SVHN_TRAIN_LABELS), ("test", SVHN_TEST_LABELS)):
        n = len(labels)
        x = np.zeros((32, 32, 3, n), dtype=np.uint8)
        x[1, 2, 0, 0] = 255  # sample 0, channel 0, row 1, column 2
        x[:, :, 2, 1] = 51  # sample 1, channel 2 all 0.2
        y = np.array(labels, dtype=np.uint8).reshape(n, 1)
        scipy.io.savemat(root / f"{split}_32x32.mat", {"X": x, "y": y})


def cifar_batch(labels: list[int], first: bool) -> dict:
    data = np.zeros((len(labels), 3072), dtype=np.uint8)  # rows: 1024 R, 1024 G, 1024 B, row-major
    if first:
        data[0, 1 * 1024 + 3 * 32 + 5] = 255  # sample 0, channel 1, row 3, column 5
        data[1, :1024] = 255  # sample 1, channel 0 all white
    # Real batches are Python 2 pickles; torchvision reads them with encoding="latin1", which
    # turns their keys into str. (b"data" is what encoding="bytes" would show.)
    return {
        "batch_label": "tiny",
        "data": data,
        "labels": labels,
        "filenames": [f"{i}.png" for i in labels],
    }


CIFAR_TRAIN_LABELS = [[b, 9 - b] for b in range(5)]  # batch b holds labels b and 9 - b
CIFAR_TEST_LABELS = [7, 0, 3]


def write_cifar10(root: Path) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = {f"data_batch_{b + 1}": cifar_batch(CIFAR_TRAIN_LABELS[b], b == 0) for b in range(5)}
    batches["test_batch"] = cifar_batch(CIFAR_TEST_LABELS, True)
    batches["batches.meta"] = {
        "label_names": [f"class{i}" for i in range(10)],
        "num_cases_per_batch": 2,
        "num_vis": 3072,
    }
    for name, content in batches.items():
        with open(folder / name, "wb") as f:
            pickle.dump(content, f, protocol=2)


def write_idx(folder: Path, prefix: str, images: np.ndarray, labels: list[int]) -> None:
    """``<prefix>-images-idx3-ubyte`` and ``<prefix>-labels-idx1-ubyte``: big-endian magic
    (2051 images, 2049 labels), the sizes, then one byte per pixel or label."""
    folder.mkdir(parents=True, exist_ok=True)
    n, h, w = images.shape
    header = np.array([2051, n, h, w], dtype=">u4").tobytes()
    (folder / f"{prefix}-images-idx3-ubyte").write_bytes(header + images.astype(np.uint8).tobytes())
    header = np.array([2049, n], dtype=">u4").tobytes()
    (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(header + bytes(labels))


def write_mnist_family(root: Path, folder: str) -> None:
    """5 training and 3 test images in ``<root>/<folder>/raw/``, with known pixels."""
    train = np.zeros((5, 28, 28), dtype=np.uint8)
    train[0, 3, 5] = 255  # image 0, row 3, column 5
    train[2] = 51  # image 2 all 0.2
    write_idx(root / folder / "raw", "train", train, [7, 2, 1, 0, 9])
    write_idx(root / folder / "raw", "t10k", np.zeros((3, 28, 28), dtype=np.uint8), [4, 4, 8])


def write_cifar100(root: Path) -> None:
    """``cifar-100-python/{train,test,meta}``: pickles with fine and coarse labels, as the real ones."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for split, fine in (("train", [0, 99, 42, 5]), ("test", [17, 3])):
        data = np.zeros((len(fine), 3072), dtype=np.uint8)
        data[0, 2 * 1024 + 4 * 32 + 6] = 255  # sample 0, channel 2, row 4, column 6
        content = {"data": data, "fine_labels": fine, "coarse_labels": [c // 5 for c in fine]}
        with open(folder / split, "wb") as f:
            pickle.dump(content, f, protocol=2)
    meta = {
        "fine_label_names": [f"f{i}" for i in range(100)],
        "coarse_label_names": list("abcdefghijklmnopqrst"),
    }
    with open(folder / "meta", "wb") as f:
        pickle.dump(meta, f, protocol=2)


def check_common(
    ds: ActiveDataset, n_train: int, n_test: int, shape: tuple[int, ...], classes: int = 10
) -> None:
    assert ds.x_train.shape == (n_train, *shape) and ds.x_test.shape == (n_test, *shape)
    assert ds.x_train.dtype == ds.x_test.dtype == torch.float32
    assert ds.y_train.dtype == ds.y_test.dtype == torch.int64
    assert ds.x_train.is_contiguous() and ds.num_classes == classes


# --- MNIST, KMNIST, CIFAR-100 -------------------------------------------------------------------


@pytest.mark.parametrize(
    "source, folder, mean, std",
    [(MNISTSource, "MNIST", 0.1307, 0.3081), (KMNISTSource, "KMNIST", 0.1918, 0.3483)],
)
def test_mnist_and_kmnist_load_tiny_idx_files(tmp_path, source, folder, mean, std) -> None:
    write_mnist_family(tmp_path, folder)
    ds = source(download=False).load(tmp_path, CPU)  # the conf file's statistics by default
    check_common(ds, 5, 3, (1, 28, 28))
    assert ds.y_train.tolist() == [7, 2, 1, 0, 9] and ds.y_test.tolist() == [4, 4, 8]
    assert ds.x_train[0, 0, 3, 5].item() == pytest.approx((1 - mean) / std, rel=1e-5)
    assert ds.x_train[0, 0, 5, 3].item() == pytest.approx(-mean / std, rel=1e-5)  # not transposed
    assert torch.allclose(ds.x_train[2], torch.full((1, 28, 28), (0.2 - mean) / std))
    assert ds.train_transform is None
    # in the other's folder they are not found
    other = KMNISTSource if source is MNISTSource else MNISTSource
    with pytest.raises(DataNotFoundError):
        other(download=False).load(tmp_path, CPU)


def test_cifar100_loads_tiny_pickles_with_fine_labels(tmp_path) -> None:
    write_cifar100(tmp_path)
    ds = CIFAR100Source(download=False).load(tmp_path, CPU)
    check_common(ds, 4, 2, (3, 32, 32), classes=100)
    assert ds.y_train.tolist() == [0, 99, 42, 5] and ds.y_test.tolist() == [17, 3]
    mean, std = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
    assert ds.x_train[0, 2, 4, 6].item() == pytest.approx((1 - mean[2]) / std[2], rel=1e-5)
    assert ds.x_train[0, 2, 6, 4].item() == pytest.approx(-mean[2] / std[2], rel=1e-5)
    assert ds.train_transform is not None  # crops and flips, as CIFAR-10
    plain = CIFAR100Source(augment=False, download=False).load(tmp_path, CPU)
    assert plain.train_transform is None


@pytest.mark.parametrize(
    "option",
    ["digits", "synthetic", "fashion", "mnist", "kmnist", "svhn", "cifar10", "cifar100"],
)
def test_every_dataset_takes_augment(compose_cfg, option, caplog) -> None:
    """experiment=table1_quick sets dataset.augment=true: every dataset builds with it (no
    TypeError), and one whose images mirror into other classes crops only, saying so once."""
    cfg = compose_cfg(["experiment=table1_quick", f"dataset={option}"])
    assert cfg.dataset.augment is True
    node = OmegaConf.to_container(cfg.dataset)
    with caplog.at_level(logging.WARNING, logger="ladarun.data.transforms"):
        source = instantiate(node)
    warned = [r for r in caplog.records if "no flips" in r.getMessage()]
    assert len(warned) == (0 if cfg.dataset.flip else 1)
    x = torch.randn(2048, 1, 8, 8)
    torch.manual_seed(0)
    out = source.transform(x)[:, :, 2:-2, 2:-2]
    inner = x[:, :, 2:-2, 2:-2]
    mirrored = [torch.equal(out[i], inner[i].flip(-1)) for i in range(2048)]
    kept = [torch.equal(out[i], inner[i]) for i in range(2048)]
    assert sum(kept) > 0  # some crops are unshifted: padding >= 1, so shifts are 0 too
    assert (sum(mirrored) > 0) == bool(cfg.dataset.flip)


# --- SVHN and CIFAR-10 --------------------------------------------------------------------------


def test_svhn_loads_tiny_mat_files(tmp_path: Path) -> None:
    write_svhn(tmp_path)
    ds = SVHNSource(name="svhn", mean=[0.5] * 3, std=[0.5] * 3, download=False).load(tmp_path, CPU)
    check_common(ds, 5, 3, (3, 32, 32))
    assert ds.name == "svhn"
    assert ds.y_train.tolist() == [1, 2, 0, 5, 0] and ds.y_test.tolist() == [0, 3, 9]
    # (v / 255 - 0.5) / 0.5 at known pixels; the transposed position catches an H/W swap.
    assert ds.x_train[0, 0, 1, 2].item() == pytest.approx(1.0)
    assert ds.x_train[0, 0, 2, 1].item() == pytest.approx(-1.0)
    assert torch.allclose(ds.x_train[1, 2], torch.full((32, 32), -0.6))
    assert torch.allclose(ds.x_train[1, :2], torch.full((2, 32, 32), -1.0))
    assert ds.train_transform is None


def test_cifar10_loads_tiny_batches(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    ds = CIFAR10Source(name="cifar10", mean=CIFAR_MEAN, std=CIFAR_STD, download=False).load(
        tmp_path, CPU
    )
    check_common(ds, 10, 3, (3, 32, 32))
    assert ds.y_train.tolist() == sum(CIFAR_TRAIN_LABELS, [])  # batches 1..5 in order
    assert ds.y_test.tolist() == CIFAR_TEST_LABELS
    black = [(0 - m) / s for m, s in zip(CIFAR_MEAN, CIFAR_STD)]
    assert ds.x_train[0, 1, 3, 5].item() == pytest.approx(
        (1 - CIFAR_MEAN[1]) / CIFAR_STD[1], rel=1e-5
    )
    assert ds.x_train[0, 1, 5, 3].item() == pytest.approx(black[1], rel=1e-5)
    assert torch.allclose(
        ds.x_train[1, 0], torch.full((32, 32), (1 - CIFAR_MEAN[0]) / CIFAR_STD[0])
    )
    assert torch.allclose(ds.x_train[2, 2], torch.full((32, 32), black[2]))  # batch 2 is all black
    torch.manual_seed(3)
    shifted = ds.train_transform(ds.x_train)
    torch.manual_seed(3)
    assert torch.equal(shifted, random_crop_flip(ds.x_train, padding=4))  # CIFAR's crop and flip
    plain = CIFAR10Source(name="cifar10", augment=False, download=False).load(tmp_path, CPU)
    assert plain.train_transform is None


@pytest.mark.parametrize(
    "source, writer", [(SVHNSource, write_svhn), (CIFAR10Source, write_cifar10)]
)
def test_files_failing_torchvision_md5_load_with_one_warning(
    tmp_path, caplog, source, writer
) -> None:
    writer(tmp_path)
    with caplog.at_level(logging.WARNING, logger="ladarun.data.vision"):
        source(name="x", download=False).load(tmp_path, CPU)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "checksums" in warnings[0].getMessage()


def test_files_matching_torchvision_md5_load_silently(tmp_path, caplog, monkeypatch) -> None:
    write_svhn(tmp_path)
    # Pretend torchvision's official md5s are those of the tiny files.
    official = {s: list(v) for s, v in torchvision.datasets.SVHN.split_list.items()}
    for split in ("train", "test"):
        official[split][2] = calculate_md5(tmp_path / f"{split}_32x32.mat")
    monkeypatch.setattr(torchvision.datasets.SVHN, "split_list", official)
    with caplog.at_level(logging.DEBUG, logger="ladarun.data.vision"):
        SVHNSource(name="svhn", download=False).load(tmp_path, CPU)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


# --- missing data ------------------------------------------------------------------------------

MISSING = [
    (
        FashionMNISTSource,
        "FashionMNIST/raw",
        [
            "train-images-idx3-ubyte",
            "train-labels-idx1-ubyte",
            "t10k-images-idx3-ubyte",
            "t10k-labels-idx1-ubyte",
        ],
    ),
    (SVHNSource, ".", ["train_32x32.mat", "test_32x32.mat"]),
    (
        CIFAR10Source,
        "cifar-10-batches-py",
        [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"],
    ),
    (MNISTSource, "MNIST/raw", ["train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]),
    (KMNISTSource, "KMNIST/raw", ["train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]),
    (CIFAR100Source, "cifar-100-python", ["train", "test", "meta"]),
]


@pytest.mark.parametrize("source, subfolder, files", MISSING)
def test_missing_data_names_absolute_folder_and_files(
    tmp_path, monkeypatch, source, subfolder, files
) -> None:
    (tmp_path / "empty").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataNotFoundError) as info:
        source(name="x", download=False).load("empty", CPU)  # relative on purpose
    message = str(info.value)
    assert str((tmp_path / "empty" / subfolder).resolve()) in message
    assert all(f in message for f in files)
    assert "data_dir=" in message and "LADARUN_DATA" in message and "download is off" in message
    assert info.value.__cause__ is None and info.value.__suppress_context__


@pytest.mark.parametrize(
    "source, dataset_class",
    [
        (FashionMNISTSource, torchvision.datasets.FashionMNIST),
        (SVHNSource, torchvision.datasets.SVHN),
        (CIFAR10Source, torchvision.datasets.CIFAR10),
        (MNISTSource, torchvision.datasets.MNIST),
        (KMNISTSource, torchvision.datasets.KMNIST),
        (CIFAR100Source, torchvision.datasets.CIFAR100),
    ],
)
def test_failed_download_is_bounded_and_reported(
    tmp_path, monkeypatch, source, dataset_class
) -> None:
    seen_timeouts = []

    def offline(self) -> None:
        seen_timeouts.append(socket.getdefaulttimeout())
        raise URLError("no route to the mirror")

    monkeypatch.setattr(dataset_class, "download", offline)
    previous = socket.getdefaulttimeout()
    with pytest.raises(DataNotFoundError, match="no route to the mirror") as info:
        source(name="x", download=True, download_timeout=7.0).load(tmp_path, CPU)
    assert seen_timeouts and seen_timeouts[0] == 7.0
    assert socket.getdefaulttimeout() == previous
    assert str(tmp_path) in str(info.value) and info.value.__cause__ is None


# --- real Fashion-MNIST ------------------------------------------------------------------------


@pytest.mark.skipif(
    not (SHARED_DATA / "FashionMNIST" / "raw").is_dir(), reason="no Fashion-MNIST in shared/data"
)
def test_fashion_mnist_real_data() -> None:
    ds = FashionMNISTSource(name="fashion", mean=0.1307, std=0.3081, download=False).load(
        SHARED_DATA, CPU
    )
    check_common(ds, 60000, 10000, (1, 28, 28))
    assert torch.bincount(ds.y_train).tolist() == [6000] * 10
    assert torch.bincount(ds.y_test).tolist() == [1000] * 10
    assert ds.train_transform is None
    # First image straight from the idx file (16-byte header), normalised by hand.
    raw = np.fromfile(
        SHARED_DATA / "FashionMNIST" / "raw" / "train-images-idx3-ubyte", np.uint8, 784, offset=16
    )
    expected = (torch.from_numpy(raw.reshape(28, 28)).float() / 255 - 0.1307) / 0.3081
    assert torch.allclose(ds.x_train[0, 0], expected, atol=1e-6)


# --- digits and synthetic ----------------------------------------------------------------------


def test_digits_fixed_stratified_split_normalised_by_train_stats() -> None:
    a = DigitsSource(name="digits").load(None, CPU)
    b = DigitsSource(name="digits").load("/nonexistent", CPU)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    check_common(a, 1347, 450, (1, 8, 8))
    per_class = np.bincount(load_digits().target)
    assert np.all(np.abs(torch.bincount(a.y_test).numpy() - 0.25 * per_class) <= 1)  # stratified
    assert a.x_train.mean().item() == pytest.approx(0.0, abs=1e-5)
    assert a.x_train.std().item() == pytest.approx(1.0, abs=1e-3)
    # Undo the affine map (pixels 0 and 16 both occur): the splits together are the 1,797 digits.
    x = torch.cat([a.x_train, a.x_test])
    pixels = ((x - x.min()) / (x.max() - x.min()) * 16).flatten(1)
    assert torch.allclose(pixels, pixels.round(), atol=1e-3)
    ours = Counter(tuple(row) for row in pixels.round().int().tolist())
    sklearn = Counter(
        tuple(row) for row in load_digits().images.reshape(-1, 64).astype(int).tolist()
    )
    assert ours == sklearn
    other = DigitsSource(name="digits", split_seed=1).load(None, CPU)
    assert not torch.equal(other.y_test, a.y_test)


def test_synthetic_is_deterministic_balanced_and_learnable() -> None:
    torch.manual_seed(0)
    state = torch.get_rng_state()
    a = SyntheticSource(name="synthetic").load(None, CPU)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is left alone
    torch.manual_seed(1)
    b = SyntheticSource(name="synthetic").load(None, CPU)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert a.x_train.shape == (200, 1, 8, 8) and a.x_test.shape == (100, 1, 8, 8)
    assert (
        a.x_train.dtype == torch.float32 and a.y_train.dtype == torch.int64 and a.num_classes == 4
    )
    assert (
        torch.bincount(a.y_train).tolist() == [50] * 4
        and torch.bincount(a.y_test).tolist() == [25] * 4
    )
    odd = SyntheticSource(
        name="s", n_train=10, n_test=7, num_classes=4, channels=3, image_size=5
    ).load(None, CPU)
    assert odd.x_train.shape == (10, 3, 5, 5)
    assert sorted(torch.bincount(odd.y_train).tolist()) == [2, 2, 3, 3]
    assert sorted(torch.bincount(odd.y_test).tolist()) == [1, 2, 2, 2]
    assert not torch.equal(SyntheticSource(name="s", seed=99).load(None, CPU).x_train, a.x_train)
    # Learnable: nearest class mean of the training split classifies the test split well.
    centroids = torch.stack([a.x_train[a.y_train == c].mean(0) for c in range(4)]).flatten(1)
    predicted = torch.cdist(a.x_test.flatten(1), centroids).argmin(1)
    assert (predicted == a.y_test).float().mean().item() > 0.9


# --- random_crop_flip --------------------------------------------------------------------------


def test_crop_flip_with_no_padding_is_identity_or_flip() -> None:
    x = torch.randn(200, 3, 6, 6)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        out = random_crop_flip(x, padding=0)
    assert out.shape == x.shape and out.dtype == x.dtype
    same = (out == x).flatten(1).all(1)
    flipped = (out == x.flip(-1)).flatten(1).all(1)
    assert torch.all(same | flipped)
    assert 0.3 < flipped.float().mean().item() < 0.7


def test_crop_flip_draws_a_crop_per_sample() -> None:
    x = torch.randn(1, 3, 8, 8).expand(64, -1, -1, -1).contiguous()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        out = random_crop_flip(x, padding=4)
    assert out.shape == x.shape
    assert len({tuple(row) for row in out.flatten(1).tolist()}) > 20


def test_crop_flip_is_a_shifted_window_of_the_zero_padded_input() -> None:
    n, p, h, w = 48, 2, 5, 7
    x = torch.randn(n, 2, h, w)
    with torch.random.fork_rng():
        torch.manual_seed(3)
        out = random_crop_flip(x, padding=p)
        torch.manual_seed(3)
        again = random_crop_flip(x, padding=p)
    assert torch.equal(out, again)  # draws only from the global RNG
    padded = torch.zeros(n, 2, h + 2 * p, w + 2 * p)
    padded[:, :, p : p + h, p : p + w] = x
    found = []
    for i in range(n):
        matches = [
            (dy, dx, flip)
            for dy in range(2 * p + 1)
            for dx in range(2 * p + 1)
            for flip in (False, True)
            if torch.equal(
                out[i],
                (lambda c: c.flip(-1) if flip else c)(padded[i, :, dy : dy + h, dx : dx + w]),
            )
        ]
        assert len(matches) == 1, f"sample {i} is not a window of the padded input"
        found.append(matches[0])
    assert len({(dy, dx) for dy, dx, _ in found}) > 5 and {f for *_, f in found} == {False, True}


# --- configs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "option", ["fashion", "mnist", "kmnist", "svhn", "cifar10", "cifar100", "digits", "synthetic"]
)
def test_dataset_configs_instantiate(option: str) -> None:
    path = CONF_DIR / "dataset" / f"{option}.yaml"
    assert path.read_text().startswith("# ")
    cfg = OmegaConf.load(path)
    assert cfg.name == option
    source = instantiate(cfg)
    assert source.name == option and callable(source.load)
    if option in ("digits", "synthetic"):
        assert source.load(None, CPU).name == option


def test_fashion_augment_option_crops_with_its_padding_and_flips() -> None:
    """Off by default (the paper); on, each image is shifted by at most crop_padding pixels or mirrored."""
    assert FashionMNISTSource()._train_transform() is None
    transform = FashionMNISTSource(augment=True, crop_padding=2)._train_transform()
    torch.manual_seed(0)
    x = torch.randn(64, 1, 28, 28)
    out = transform(x)
    assert out.shape == x.shape and not torch.equal(out, x)
    # every crop of a 2-pixel padding still holds some shift of the centre
    inner = x[:, :, 2:-2, 2:-2]
    for i in range(64):
        found = any(
            torch.equal(img[:, 2 + dy : 26 + dy, 2 + dx : 26 + dx], inner[i])
            for img in (out[i], out[i].flip(-1))
            for dy in range(-2, 3)
            for dx in range(-2, 3)
        )
        assert found, i
    with pytest.raises(ConfigError, match="crop_padding"):
        FashionMNISTSource(augment=True, crop_padding=-1)


def test_the_cpu_table1_preset_trains_fashion_with_crops_and_flips(compose_cfg) -> None:
    cfg = compose_cfg(["experiment=table1_quick"])
    assert cfg.dataset.name == "fashion" and cfg.dataset.augment is True
    # the paper's Fashion: no augmentation
    assert compose_cfg(["dataset=fashion"]).dataset.augment is False


# --- damaged files: named before a run starts, with the fix -----------------------------------

FASHION_RAW = SHARED_DATA / "FashionMNIST" / "raw"
needs_fashion = pytest.mark.skipif(
    not FASHION_RAW.is_dir(), reason="no Fashion-MNIST in shared/data"
)


def fashion_copy(root: Path, damage: dict[str, bytes]) -> Path:
    """A Fashion-MNIST folder: the real training files linked, the test files copied, and the
    files in ``damage`` replaced by the given bytes."""
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        (raw / name).symlink_to(FASHION_RAW / name)
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (raw / name).write_bytes(damage.get(name, (FASHION_RAW / name).read_bytes()))
    return raw


def t10k(name: str) -> bytes:
    return (FASHION_RAW / name).read_bytes()


def relabel(data: bytes, position: int, label: int) -> bytes:
    return data[: 8 + position] + bytes([label]) + data[8 + position + 1 :]


FASHION_DAMAGE = [
    ("t10k-images-idx3-ubyte", lambda: b"", "it is empty"),
    (
        "t10k-images-idx3-ubyte",
        lambda: t10k("t10k-images-idx3-ubyte")[:100_000],
        "100000 bytes where its header says 7840016",
    ),
    (
        "t10k-images-idx3-ubyte",
        lambda: b"\x00\x00\x08\x01" + t10k("t10k-images-idx3-ubyte")[4:],
        "its idx header starts with 2049, not 2051",
    ),
    (
        "t10k-labels-idx1-ubyte",
        lambda: t10k("t10k-labels-idx1-ubyte")[:5],
        "5 bytes, shorter than its header",
    ),
    (
        "t10k-labels-idx1-ubyte",
        lambda: relabel(t10k("t10k-labels-idx1-ubyte"), 17, 12),
        "labels range over 0..12, not 0..9",
    ),
    # A consistent file of 9,999 labels for 10,000 images.
    (
        "t10k-labels-idx1-ubyte",
        lambda: (
            t10k("t10k-labels-idx1-ubyte")[:4]
            + (9999).to_bytes(4, "big")
            + t10k("t10k-labels-idx1-ubyte")[8:-1]
        ),
        "10000 images but 9999 labels",
    ),
]


@needs_fashion
@pytest.mark.parametrize("name, damaged, why", FASHION_DAMAGE)
def test_a_damaged_fashion_file_is_named_with_the_fix(tmp_path, name, damaged, why) -> None:
    raw = fashion_copy(tmp_path, {name: damaged()})
    with pytest.raises(DamagedFileError) as info:
        FashionMNISTSource(download=False).load(tmp_path, CPU)
    message = str(info.value)
    assert why in message and "copy it again" in message
    # The file named is the damaged one (the label check names the split's files).
    assert str(raw / name) in message
    assert "\n" not in message and info.value.__cause__ is None


def test_damaged_svhn_and_cifar_files_are_named(tmp_path) -> None:
    write_svhn(tmp_path)
    (tmp_path / "test_32x32.mat").write_bytes(b"MATLAB 5.0 but cut short")
    with pytest.raises(DamagedFileError, match=r"test_32x32\.mat cannot be used .*copy it again"):
        SVHNSource(download=False).load(tmp_path, CPU)
    write_svhn(tmp_path)
    x = np.zeros((32, 32, 3, 2), dtype=np.uint8)
    scipy.io.savemat(
        tmp_path / "train_32x32.mat", {"X": x, "y": np.array([[3], [11]], dtype=np.uint8)}
    )
    with pytest.raises(
        DamagedFileError, match=r"train_32x32\.mat cannot be used \(labels range over 3\.\.11"
    ):
        SVHNSource(download=False).load(tmp_path, CPU)

    write_cifar10(tmp_path / "c")
    batch = tmp_path / "c" / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:40])
    with pytest.raises(
        DamagedFileError, match=r"data_batch_3.* cannot be used \((EOFError|UnpicklingError)"
    ):
        CIFAR10Source(download=False).load(tmp_path / "c", CPU)
    with open(batch, "wb") as f:
        pickle.dump(cifar_batch([4, 10], False), f, protocol=2)
    with pytest.raises(DamagedFileError, match=r"labels range over 0\.\.10, not 0\.\.9"):
        CIFAR10Source(download=False).load(tmp_path / "c", CPU)


def test_a_failed_download_leaves_no_empty_folders(tmp_path, monkeypatch) -> None:
    def offline(self) -> None:
        Path(self.raw_folder).mkdir(parents=True, exist_ok=True)  # as torchvision does first
        raise URLError("no route to the mirror")

    monkeypatch.setattr(torchvision.datasets.FashionMNIST, "download", offline)
    data_dir = tmp_path / "not-yet"
    with pytest.raises(DataNotFoundError):
        FashionMNISTSource(download=True).load(data_dir, CPU)
    assert not data_dir.exists()
    (tmp_path / "kept").mkdir()
    with pytest.raises(DataNotFoundError):
        FashionMNISTSource(download=True).load(tmp_path / "kept", CPU)
    assert (tmp_path / "kept").is_dir() and not any((tmp_path / "kept").iterdir())
