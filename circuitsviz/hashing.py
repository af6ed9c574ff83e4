"""The one configuration hash: activation caches, SAE checkpoints, mining jobs and run steps use it.

>>> config_hash({"b": 1, "a": [1, 2]}) == config_hash({"a": [1, 2], "b": 1})
True
"""

from __future__ import annotations

import hashlib
import json


def config_hash(config, length: int = 16) -> str:
    """A short, stable SHA-256 of a JSON-able configuration: key order does not matter, and values
    JSON cannot hold are hashed by their ``str`` (so the same configuration always names the same file)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:length]
