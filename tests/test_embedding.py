"""The self-supervised embedding and its cache (docs/methods.md §19): built once, reused, rebuilt
when its settings or data change; a damaged or foreign file and an unwritable folder get one line."""

import os

import pytest
import torch

from ladarun.embedding import EmbeddingCache, SimCLR, nt_xent, random_views
from ladarun.embedding.simclr import SimCLR as SimCLRClass
from ladarun.errors import ConfigError, DamagedFileError

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = SimCLR(epochs=1, batch_size=8, width=4)


def images(n=24, seed=0):
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def trainings(monkeypatch):
    """Counts the embeddings actually trained."""
    calls = []
    real = SimCLRClass.train
    monkeypatch.setattr(SimCLRClass, "train", lambda self, x: calls.append(self) or real(self, x))
    return calls


def test_nt_xent_of_aligned_views_with_orthogonal_negatives():
    # two views identical, other images orthogonal: -log(e^(1/T) / (e^(1/T) + 2B - 2))
    z = torch.eye(3).repeat(2, 1)
    expected = -torch.log(torch.exp(torch.tensor(2.0)) / (torch.exp(torch.tensor(2.0)) + 4))
    torch.testing.assert_close(nt_xent(z, 0.5), expected)


def test_views_are_random_per_image_and_reproducible():
    x = images(4)
    a1, _ = random_views(x, torch.Generator().manual_seed(1), 0.3, 0.4)
    a2, _ = random_views(x, torch.Generator().manual_seed(1), 0.3, 0.4)
    torch.testing.assert_close(a1, a2)
    same = random_views(x[:1].repeat(4, 1, 1, 1), torch.Generator().manual_seed(1), 0.3, 0.4)[0]
    assert not torch.allclose(same[0], same[1])  # the same image, two different crops
    # crops resample inside the image: a flat image stays flat without jitter, shifts with it
    flat = torch.full((4, 1, 8, 8), 0.7)
    torch.testing.assert_close(random_views(flat, torch.Generator(), 0.3, 0.0)[0], flat)
    shifted = random_views(flat, torch.Generator().manual_seed(2), 0.3, 0.4)[0]
    assert (shifted.amax(dim=(1, 2, 3)) - shifted.amin(dim=(1, 2, 3)) < 1e-5).all()
    assert (shifted - 0.7).abs().max() > 0.01


def test_training_is_seeded_and_leaves_the_callers_random_state_alone():
    torch.manual_seed(5)
    expected_next = torch.rand(3)
    torch.manual_seed(5)
    first, _ = TINY.train(images())
    torch.testing.assert_close(torch.rand(3), expected_next)
    second, _ = TINY.train(images())
    torch.testing.assert_close(first, second)
    assert first.shape == (24, 32) and torch.allclose(first.norm(dim=1), torch.ones(24))


def test_the_cache_is_reused_and_rebuilt_when_settings_or_data_change(tmp_path, trainings):
    cache = EmbeddingCache(tmp_path)
    first = cache.features(TINY, "toy", images())
    again = EmbeddingCache(tmp_path).features(TINY, "toy", images())  # another run, same settings
    assert len(trainings) == 1
    torch.testing.assert_close(first, again)
    longer = SimCLR(epochs=2, batch_size=8, width=4)
    other = cache.features(longer, "toy", images())  # a setting changed: another embedding
    assert len(trainings) == 2 and not torch.allclose(first, other)
    cache.features(TINY, "toy", images(seed=1))  # other images: another embedding
    assert len(trainings) == 3
    assert len(list(tmp_path.glob("toy-simclr-*.pt"))) == 3  # all kept, each under its fingerprint
    cache.features(longer, "toy", images())
    assert len(trainings) == 3


def test_a_damaged_or_foreign_cache_file_is_one_line_naming_the_fix(tmp_path):
    cache = EmbeddingCache(tmp_path)
    cache.features(TINY, "toy", images())
    (path,) = tmp_path.glob("*.pt")
    other = SimCLR(epochs=2, batch_size=8, width=4)
    foreign = cache.path(
        other, "toy", __import__("ladarun.embedding.cache", fromlist=["x"]).data_digest(images())
    )
    foreign.write_bytes(path.read_bytes())  # a file copied under another settings' name
    with pytest.raises(DamagedFileError, match=r"built with other settings .*delete it"):
        cache.features(other, "toy", images())
    path.write_bytes(path.read_bytes()[:100])  # truncated
    with pytest.raises(
        DamagedFileError, match=r"is damaged .*delete it and the next run rebuilds it"
    ) as err:
        cache.features(TINY, "toy", images())
    assert "\n" not in str(err.value)
    path.unlink()
    cache.features(TINY, "toy", images())  # deleted: rebuilt


def test_an_unwritable_cache_folder_is_refused_naming_the_key(tmp_path):
    locked = tmp_path / "shared"
    locked.mkdir()
    locked.chmod(0o555)  # like the shared data folder: no write bit, even for root
    try:
        cache = EmbeddingCache(locked / "embeddings")
        with pytest.raises(
            ConfigError, match=r"^embedding_cache=.*is not writable.*set embedding_cache="
        ):
            cache.check_writable()
        with pytest.raises(ConfigError, match="embedding_cache="):
            EmbeddingCache(locked).features(TINY, "toy", images())
    finally:
        locked.chmod(0o755)
    EmbeddingCache(tmp_path / "new" / "folder").check_writable()  # creatable: fine
    assert not (tmp_path / "new").exists()  # and the check wrote nothing


def test_a_derived_value_is_computed_once_per_embedding(tmp_path):
    cache = EmbeddingCache(tmp_path)
    record = cache.record(TINY, "toy", images())
    calls = []
    for _ in range(2):
        assert cache.derived(record["path"], "delta", lambda: calls.append(1) or 0.25) == 0.25
    assert calls == [1]
    side = record["path"].with_name(record["path"].name + ".derived.json")
    side.write_text("{not json")
    with pytest.raises(DamagedFileError, match="derived.json is damaged"):
        cache.derived(record["path"], "delta", lambda: 0.25)
    assert os.access(side, os.R_OK)
