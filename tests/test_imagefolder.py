"""dataset=imagefolder on PNG folders the tests write: both layouts, sizes, channels, and every
bad folder refused in one line when the source is built (before a run writes anything)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import CPU
from ladarun.data import ImageFolderSource
from ladarun.errors import ConfigError, DataNotFoundError


def write_png(path: Path, value: int, size: tuple[int, int] = (12, 12), mode: str = "RGB") -> None:
    """A flat image of ``value`` with one bright pixel at row 1, column 2 (to catch a transpose)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = 3 if mode == "RGB" else 1
    pixels = np.full((size[1], size[0], channels), value, dtype=np.uint8)
    pixels[1, 2] = 255
    Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode).save(path)


def write_classes(root: Path, counts: dict[str, int], size: tuple[int, int] = (12, 12)) -> None:
    for k, (name, n) in enumerate(counts.items()):
        for i in range(n):
            write_png(root / name / f"{i}.png", 40 * k + i, size)


def test_train_and_test_subfolders(tmp_path) -> None:
    write_classes(tmp_path / "train", {"cat": 3, "dog": 2, "emu": 2})
    write_classes(tmp_path / "test", {"cat": 1, "dog": 1, "emu": 1})
    source = ImageFolderSource(root=str(tmp_path), mean=0.0, std=1.0)
    assert source.classes == ["cat", "dog", "emu"]  # sorted folder names, as torchvision's
    ds = source.load(None, CPU)
    assert ds.x_train.shape == (7, 3, 12, 12) and ds.x_test.shape == (3, 3, 12, 12)
    assert ds.y_train.tolist() == [0, 0, 0, 1, 1, 2, 2] and ds.y_test.tolist() == [0, 1, 2]
    assert ds.num_classes == 3 and ds.train_transform is None
    # dog's second image: value 41 everywhere but the bright pixel at row 1, column 2
    assert ds.x_train[4, :, 0, 0].tolist() == pytest.approx([41 / 255] * 3)
    assert ds.x_train[4, :, 1, 2].tolist() == pytest.approx([1.0] * 3)
    assert ds.x_train[4, :, 2, 1].tolist() == pytest.approx([41 / 255] * 3)


def test_one_folder_split_by_test_fraction_grey_normalised_by_its_training_split(tmp_path) -> None:
    write_classes(tmp_path, {"a": 10, "b": 10})
    source = ImageFolderSource(root=str(tmp_path), channels=1, test_fraction=0.2, split_seed=1)
    ds = source.load("ignored", CPU)
    assert ds.x_train.shape == (16, 1, 12, 12) and ds.x_test.shape == (4, 1, 12, 12)
    assert torch.bincount(ds.y_test).tolist() == [2, 2]  # stratified
    assert ds.x_train.mean().item() == pytest.approx(0.0, abs=1e-5)  # its own statistics
    assert ds.x_train.std().item() == pytest.approx(1.0, abs=1e-3)
    train_files = {p for p, _ in source.train}
    assert not train_files & {p for p, _ in source.test}
    again = ImageFolderSource(root=str(tmp_path), channels=1, test_fraction=0.2, split_seed=1)
    assert again.test == source.test  # the split is seeded
    other = ImageFolderSource(root=str(tmp_path), channels=1, test_fraction=0.2, split_seed=2)
    assert other.test != source.test


def test_image_size_resizes_and_crops_mixed_sizes(tmp_path) -> None:
    write_classes(tmp_path / "train", {"a": 2, "b": 2}, size=(20, 16))
    write_classes(tmp_path / "test", {"a": 1, "b": 1}, size=(8, 8))
    ds = ImageFolderSource(root=str(tmp_path), image_size=10, augment=True).load(None, CPU)
    assert ds.x_train.shape == (4, 3, 10, 10) and ds.x_test.shape == (2, 3, 10, 10)
    assert ds.train_transform is not None


@pytest.mark.parametrize(
    "layout, match",
    [
        ({"train/a": 2, "test/a": 1}, "1 class folder"),
        ({"a": 2}, "1 class folder"),
        ({"a": 2, "b": 0}, "holds no images"),
        (
            {"train/a": 2, "train/b": 2, "test/a": 1, "test/c": 1},
            "classes the training split lacks: c",
        ),
        ({"train/a": 2, "train/b": 2}, "no test/"),
        ({"a": 1, "b": 1}, "cannot split off"),
    ],
)
def test_bad_folders_are_one_line(tmp_path, layout, match) -> None:
    for folder, n in layout.items():
        (tmp_path / folder).mkdir(parents=True)
        for i in range(n):
            write_png(tmp_path / folder / f"{i}.png", i)
    with pytest.raises(ConfigError, match=match) as info:
        ImageFolderSource(root=str(tmp_path))
    assert "\n" not in str(info.value)


def test_mixed_sizes_without_image_size_name_two_files_and_the_fix(tmp_path) -> None:
    write_classes(tmp_path, {"a": 3, "b": 3})
    write_png(tmp_path / "b" / "big.png", 0, size=(14, 14))
    with pytest.raises(
        ConfigError, match=r"mixed sizes .*big\.png is 14x14.*dataset\.image_size=N"
    ):
        ImageFolderSource(root=str(tmp_path))
    write_classes(tmp_path / "wide", {"a": 3, "b": 3}, size=(12, 10))
    with pytest.raises(ConfigError, match="12x10, not square"):
        ImageFolderSource(root=str(tmp_path / "wide"))


def test_no_root_or_a_missing_one(tmp_path) -> None:
    with pytest.raises(ConfigError, match="dataset.root=/path"):
        ImageFolderSource()
    with pytest.raises(DataNotFoundError, match="no folder"):
        ImageFolderSource(root=str(tmp_path / "absent"))
    with pytest.raises(ConfigError, match="channels must be 1"):
        ImageFolderSource(root=str(tmp_path), channels=4)


def test_a_run_on_a_bad_folder_stops_before_writing(tmp_path, compose_cfg) -> None:
    from ladarun.runner import run_from_config

    write_classes(tmp_path / "images", {"only": 4})
    cfg = compose_cfg(
        ["dataset=imagefolder", f"dataset.root={tmp_path / 'images'}", "protocol=smoke"]
    )
    with pytest.raises(ConfigError, match="at least two"):
        run_from_config(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()
