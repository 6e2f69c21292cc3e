"""The node_engines table: one row per Swarm node, replaced in place, forgotten on request."""

from __future__ import annotations

from pathlib import Path

from anvyl.store import Store
from anvyl.store import node_engines as engines
from anvyl.store.node_engines import NodeEngineRecord


def test_put_replace_list_delete(tmp_path: Path) -> None:
    store = Store(tmp_path / "e.db")
    first = engines.put_node_engine(
        store, NodeEngineRecord(node_id="n2", hostname="b", url="tcp://10.0.0.2:2375")
    )
    assert first.created_at > 0 and not first.tls
    other = engines.put_node_engine(
        store,
        NodeEngineRecord(
            node_id="n1",
            hostname="a",
            url="tcp://10.0.0.1:2376",
            tls_ca="/ca.pem",
            tls_cert="/cert.pem",
            tls_key="/key.pem",
        ),
    )
    assert other.tls
    assert [r.node_id for r in engines.list_node_engines(store)] == ["n1", "n2"]
    moved = engines.put_node_engine(
        store, NodeEngineRecord(node_id="n2", hostname="b", url="ssh://me@b")
    )
    assert moved.url == "ssh://me@b" and moved.created_at == first.created_at
    assert engines.get_node_engine(store, "n2") == moved
    assert engines.delete_node_engine(store, "n2")
    assert not engines.delete_node_engine(store, "n2")
    assert engines.get_node_engine(store, "n2") is None
    store.close()
