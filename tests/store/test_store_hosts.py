"""The hosts table: a stable local host id, unique names."""

from __future__ import annotations

from pathlib import Path

import pytest

from anvyl.errors import AlreadyExists
from anvyl.store import Store
from anvyl.store import hosts as host_table


def test_local_host_keeps_its_id_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    store = Store(path)
    first = host_table.ensure_local_host(store, address="unix:///var/run/docker.sock")
    store.close()
    store = Store(path)
    again = host_table.ensure_local_host(store, address="unix:///var/run/docker.sock")
    assert again.id == first.id and again.local
    moved = host_table.ensure_local_host(store, address="unix:///other.sock")
    assert moved.id == first.id and moved.address == "unix:///other.sock"
    assert [h.id for h in host_table.list_hosts(store)] == [first.id]
    assert host_table.get_local_host(store) == moved
    store.close()


def test_host_names_are_unique(tmp_path: Path) -> None:
    store = Store(tmp_path / "u.db")
    local = host_table.ensure_local_host(store, address="unix:///a.sock", name="box")
    other = host_table.add_host(store, name="remote-1", address="tcp://10.0.0.2:2376")
    assert host_table.get_host(store, other.id) == other
    assert host_table.get_host(store, "h-nope") is None
    with pytest.raises(AlreadyExists):
        host_table.add_host(store, name="box", address="tcp://10.0.0.3:2376")
    assert [h.id for h in host_table.list_hosts(store)] == [local.id, other.id]
    store.close()
