"""What Anvyl remembers of each model between runs: how it was last started, and its peak memory.

On-demand starts use a model's remembered start options (those of its last explicit
`model start`), and the memory budget uses its measured peak when there is one.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from anvyl.store.db import Store


@dataclass(frozen=True)
class ModelProfile:
    """One model's remembered start options and the most memory a server of it has used."""

    model_id: str
    start_options: dict[str, Any] = field(default_factory=dict)
    peak_memory: int = 0


def get_profile(store: Store, model_id: str) -> ModelProfile:
    """The profile of `model_id` (empty when Anvyl has none)."""
    rows = store.query(
        "SELECT start_options, peak_memory FROM model_profiles WHERE model_id = ?", (model_id,)
    )
    if not rows:
        return ModelProfile(model_id)
    options = json.loads(rows[0]["start_options"] or "{}")
    return ModelProfile(model_id, options, rows[0]["peak_memory"])


def save_start_options(store: Store, model_id: str, options: dict[str, Any]) -> None:
    """Remember how `model_id` was last started explicitly."""
    with store.transaction() as conn:
        conn.execute(
            "INSERT INTO model_profiles (model_id, start_options, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT (model_id) DO UPDATE SET start_options = excluded.start_options, "
            "updated_at = excluded.updated_at",
            (model_id, json.dumps(options, sort_keys=True), time.time()),
        )


def record_peak(store: Store, model_id: str, used: int) -> None:
    """Raise the recorded peak memory of `model_id` to `used` bytes when it is higher."""
    with store.transaction() as conn:
        conn.execute(
            "INSERT INTO model_profiles (model_id, peak_memory, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT (model_id) DO UPDATE SET peak_memory = excluded.peak_memory, "
            "updated_at = excluded.updated_at WHERE excluded.peak_memory > peak_memory",
            (model_id, int(used), time.time()),
        )
