"""Anvyl's state: one SQLite database under ANVYL_HOME (WAL mode, versioned schema)."""

from anvyl.store.db import SCHEMA_VERSION, Store, default_db_path
from anvyl.store.hosts import HostRecord

__all__ = ["SCHEMA_VERSION", "HostRecord", "Store", "default_db_path"]
