"""The worker's RocksDB store (rater/shell/store.py ``LocalStore``): a real RocksDB."""

from __future__ import annotations

from pathlib import Path

import pytest

from rater.shell.settings import Settings, SettingsError
from rater.shell.store import LocalStore, StoreMemory
from rater.shell.task import PARTITION_KEY, id_key


def test_the_store_applies_changelog_records_tombstones_included_with_the_offset_they_reach(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "p" / "tenants-0.db")  # the parent is made too
    assert store.next_offset() == 0
    ids = [id_key("acme", f"u/2026-11/call-{n}") for n in range(5)]
    store.write([*((k, b"digest") for k in ids), (b"acme", b"{state}"), (PARTITION_KEY, b"{record}")], 7)
    assert store.next_offset() == 7
    assert store.get(ids[0]) == b"digest"
    store.write([(ids[0], None), (ids[1], None), (PARTITION_KEY, b"{record 2}")], 10)
    assert (store.get(ids[0]), store.get(ids[2]), store.next_offset()) == (None, b"digest", 10)


def test_keys_by_prefix_and_tenants_by_range_never_mix_id_records_and_states(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "tenants-0.db")
    records: list[tuple[bytes, bytes | None]] = [(id_key(t, f"u/2026-11/{n}"), b"d") for t in ("a", "a.b", "b")
                                                 for n in range(3)]
    records += [(id_key("a", "a/cmd-1"), b"d"), (b"-dash", b"{s1}"), (b"a", b"{s2}"), (b"zz", b"{s3}"),
                (PARTITION_KEY, b"{p}")]
    store.write(records, 1)
    assert store.keys(id_key("a", "u/2026-11/"), 10) == [id_key("a", f"u/2026-11/{n}") for n in range(3)]
    assert store.keys(id_key("a", "u/2026-11/"), 2) == [id_key("a", f"u/2026-11/{n}") for n in range(2)]
    assert store.keys(id_key("c", "u/"), 10) == []
    after = id_key("a", "u/2026-11/0")  # a cursor: the scan goes on after it
    assert store.keys(id_key("a", "u/2026-11/"), 10, after=after) == [id_key("a", f"u/2026-11/{n}") for n in (1, 2)]
    store.write([(id_key("a", "u/2026-11/"), b"d")], 1)  # a key equal to the prefix: only "after" skips it
    prefix = id_key("a", "u/2026-11/")
    assert store.keys(prefix, 10, after=prefix) == [id_key("a", f"u/2026-11/{n}") for n in range(3)]
    assert store.keys(prefix, 10)[0] == prefix
    assert list(store.tenants()) == [("-dash", b"{s1}"), ("a", b"{s2}"), ("zz", b"{s3}")]


def test_clearing_the_store_forgets_everything_even_the_offset(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "tenants-0.db")
    store.write([(b"acme", b"{state}"), (PARTITION_KEY, b"{p}")], 42)
    store.clear()
    assert (store.get(b"acme"), store.get(PARTITION_KEY), store.next_offset()) == (None, None, 0)
    assert list(store.tenants()) == []
    store.close()
    reopened = LocalStore(tmp_path / "tenants-0.db")
    assert reopened.next_offset() == 0


def test_a_write_made_in_slices_changes_nothing_until_its_end_then_all_of_it(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "tenants-0.db")
    store.write([(b"acme", b"{old}"), (PARTITION_KEY, b"{p}")], 3)
    work = store.writing([(id_key("acme", f"u/2026-11/{n}"), b"d") for n in range(5)] + [(b"acme", b"{new}")], 9,
                         0.0)  # a slice of no time: it yields before every record
    for _ in range(6):
        next(work)
        assert (store.get(b"acme"), store.next_offset()) == (b"{old}", 3)  # what a request reads meanwhile
    assert next(work, "ended") == "ended"
    assert (store.get(b"acme"), store.next_offset(), len(store.keys(id_key("acme", "u/"), 10))) == (b"{new}", 9, 5)


def test_a_worker_s_stores_share_one_memory_budget_their_memtables_flush_within_it(tmp_path: Path) -> None:
    # issue 15: each store had a 64 MiB block cache and 64 MiB memtables of its own, so a
    # worker's memory grew with its partitions and their data, past 1 GiB on 8 of them
    memory = StoreMemory(cache_bytes=16 * 2**20, memtable_bytes=4 * 2**20)
    stores = [LocalStore(tmp_path / f"tenants-{p}.db", memory) for p in range(2)]
    value = b"x" * 1000
    for n in range(10):  # 20 MiB into two stores, far over the memtables' 4 MiB
        for p, store in enumerate(stores):
            store.write([(b"%d/%d/%06d" % (p, n, k), value) for k in range(1024)], n + 1)
        assert memory.usage() <= 16 * 2**20
    assert all(list((tmp_path / f"tenants-{p}.db").glob("*.sst")) for p in range(2))  # flushed, not all held
    assert [store.get(b"%d/9/001023" % p) for p, store in enumerate(stores)] == [value, value]
    for store in stores:
        store.close()


def test_the_stores_memory_is_a_setting_a_third_of_it_memtables() -> None:
    assert Settings.from_env({}).store_cache_mib == 96
    assert Settings.from_env({"RATER_STORE_CACHE_MIB": "512"}).store_cache_mib == 512
    with pytest.raises(SettingsError, match="RATER_STORE_CACHE_MIB"):
        Settings.from_env({"RATER_STORE_CACHE_MIB": "0"})
    memory = StoreMemory(96 * 2**20)
    assert memory.memtable_bytes == 32 * 2**20
    assert memory.write_buffers.get_buffer_size() == 32 * 2**20
