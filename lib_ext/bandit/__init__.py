"""Seed-sweep bandit: prompts × seeds, Thompson sampling over like/dislike ratings, a durable SQLite store.

Entry point for the host (tab, HTTP routes): `BanditService`. Pure Python/numpy + sqlite3 (no torch, no scipy).
Modules: betafn (Beta CDF/quantile), posterior (Beta–Bernoulli per arm), policy (TS / top-two TS / uniform
rounds), templates (`{a|b}` slots and their logistic model), store (SQLite), export (kohya / negative set / stats),
service (the facade).
"""

from .service import BanditService, ImageResult, Job, bandit_ref_from_infotext, generator_from_host
from .store import NotFoundError, StoreCorruptError, StoreError, StoreQuarantinedError, StoreVersionError

__all__ = [
    "BanditService",
    "ImageResult",
    "Job",
    "NotFoundError",
    "StoreCorruptError",
    "StoreError",
    "StoreQuarantinedError",
    "StoreVersionError",
    "bandit_ref_from_infotext",
    "generator_from_host",
]
