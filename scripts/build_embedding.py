"""Build (or read) the self-supervised embedding of TypiClust and ProbCover once, and say how good it is.

    python scripts/build_embedding.py dataset=fashion data_dir=../shared/data embedding_cache=/writable/folder
    python scripts/build_embedding.py ... --quality          # also measure it on the test set
    python scripts/build_embedding.py ... acquisition.embedding.epochs=5   # other settings

The config is composed as ``ladarun`` composes a run's (``acquisition=probcover``, the overrides
given), so the embedding built here is the one the runs read from ``embedding_cache``: build it
once before a parallel sweep, so that the sweep's first runs do not all wait on one build.
ProbCover's δ (the purity rule) is computed and kept beside it too.

``--quality`` reports, on the test set and against the same measures on raw pixels:
- 20-NN accuracy: the majority label of a test image's 20 nearest training images (cosine);
- linear probe: scikit-learn's LogisticRegression on all training embeddings;
- 20-NN label agreement: how often a training image's 20 nearest neighbours share its label,
  the property TypiClust's typicality and ProbCover's balls rely on;
- ProbCover's δ by the purity rule and the mean number of training points in a δ-ball.
"""

from __future__ import annotations

import argparse
import logging
import time

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from sklearn.linear_model import LogisticRegression

from ladarun.acquisition.probcover import delta_key, purity_delta
from ladarun.conf import CONF_DIR
from ladarun.config import build
from ladarun.embedding import EmbeddingCache


def nearest(queries: torch.Tensor, keys: torch.Tensor, k: int, skip_self: bool) -> torch.Tensor:
    """Indices of the ``k`` nearest ``keys`` (cosine on L2-normalised rows) of every query."""
    out = []
    for chunk in queries.split(2000):
        idx = (chunk @ keys.T).topk(k + int(skip_self), dim=1).indices
        out.append(idx[:, 1:] if skip_self else idx)
    return torch.cat(out)


def measures(train: torch.Tensor, test: torch.Tensor, y_train, y_test, k: int = 20) -> dict:
    votes = y_train[nearest(test, train, k, skip_self=False)]
    knn = (votes.mode(dim=1).values == y_test).float().mean().item()
    agree = (y_train[nearest(train, train, k, skip_self=True)] == y_train[:, None]).float().mean()
    probe = LogisticRegression(max_iter=1000).fit(train.numpy(), y_train.numpy())
    return {
        "knn": 100 * knn,
        "agreement": 100 * agree.item(),
        "probe": 100 * probe.score(test.numpy(), y_test.numpy()),
    }


def quality(spec, record, data, delta: float) -> None:
    train, test = record["features"], spec.embed(record["encoder"], data.x_test)
    flat = lambda x: F.normalize(x.flatten(1), dim=1)  # noqa: E731
    rows = {
        "embedding": measures(train, test, data.y_train, data.y_test),
        "pixels": measures(flat(data.x_train), flat(data.x_test), data.y_train, data.y_test),
    }
    # unit vectors: ||a - b|| < delta  <=>  a.b > 1 - delta^2 / 2
    sizes = [((c @ train.T) > 1 - delta**2 / 2).sum(1).float() for c in train.split(1000)]
    print("| features | 20-NN test accuracy | linear probe | 20-NN label agreement |")
    print("|---|---|---|---|")
    for name, m in rows.items():
        print(f"| {name} | {m['knn']:.2f} | {m['probe']:.2f} | {m['agreement']:.2f} |")
    print(f"mean ProbCover δ-ball: {torch.cat(sizes).mean():.1f} training points")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quality", action="store_true", help="also measure it on the test set")
    parser.add_argument("overrides", nargs="*", help="config overrides, as for ladarun")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["acquisition=probcover", *args.overrides])
    probcover = build(cfg.acquisition)
    spec = probcover.spec
    data = build(cfg.dataset, name=cfg.dataset.name).load(cfg.data_dir, torch.device("cpu"))
    cache = EmbeddingCache(cfg.embedding_cache)
    cache.check_writable()
    t0 = time.perf_counter()
    record = cache.record(spec, cfg.dataset.name, data.x_train)
    print(f"{record['path']}: {spec.settings()}")
    print(
        f"built in {record['build_s']:.0f} s ({record.get('build_cpu_s', float('nan')):.0f} CPU s) "
        f"on {record['threads']} thread(s); "
        f"read or built here in {time.perf_counter() - t0:.0f} s"
    )
    t0, cpu0 = time.perf_counter(), time.process_time()
    delta = cache.derived(
        record["path"],
        delta_key(data.num_classes, probcover.purity),
        lambda: purity_delta(record["features"], data.num_classes, probcover.purity, spec.seed),
    )
    print(
        f"ProbCover δ (purity {probcover.purity}): {delta:.4f}, read or computed in "
        f"{time.perf_counter() - t0:.0f} s ({time.process_time() - cpu0:.0f} CPU s)"
    )
    if args.quality:
        quality(spec, record, data, delta)


if __name__ == "__main__":
    main()
