"""Virtual addresses (one per hidden destination, never two migrations on one) and the relay
book, which installs and removes relays through a push callback, here into a fake flow table."""

from __future__ import annotations

import pytest

from controllers import paths as P
from controllers import rules as R
from controllers.addresses import POOL_SIZE, PoolExhausted, VirtualPool, address
from controllers.relays import RelayBook, RequestError
from tests.unit.fakeoftable import FakeFabric
from topologies.base import describe
from topologies.fattree import FatTreeTopo


def test_300_allocations_give_300_distinct_addresses():
    pool = VirtualPool()
    got = [pool.allocate() for _ in range(300)]
    assert len({v.ip for v in got}) == 300 and len({v.mac for v in got}) == 300
    assert got[255] != got[256]  # migrations 256 and 257 once shared 10.255.1.1
    assert got[0] == address(1) and got[0].ip == "10.255.0.1"
    assert got[0].mac == "02:ff:00:00:00:01"
    assert all(pool.lookup(v.ip) == v for v in got) and len(pool) == 300


def test_every_address_is_unicast_in_its_own_pool():
    first, last = address(1), address(POOL_SIZE)
    assert (first.ip, last.ip) == ("10.255.0.1", "10.255.255.254")
    with pytest.raises(ValueError):
        address(0)
    with pytest.raises(ValueError):
        address(POOL_SIZE + 1)


def test_freed_addresses_come_back_but_not_at_once():
    pool = VirtualPool(size=4)
    a, b, c = pool.allocate(), pool.allocate(), pool.allocate()
    pool.free(b)
    assert pool.lookup(b.ip) is None
    d = pool.allocate()  # round-robin: the next free one after c, not b again
    assert d not in (a, b, c)
    assert pool.allocate() == b  # the pool wraps around to the freed one
    with pytest.raises(PoolExhausted, match="all 4 virtual addresses are in use"):
        pool.allocate()
    pool.free(c)
    assert pool.allocate() == c


def test_exhausted_pool_in_use_addresses_stay_distinct():
    pool = VirtualPool(size=300)
    held = {pool.allocate().ip for _ in range(300)}
    with pytest.raises(PoolExhausted):
        pool.allocate()
    assert len(held) == 300


@pytest.fixture()
def fattree():
    topo = describe(FatTreeTopo(4))
    return topo, P.build_graph(topo)


def book_on(fab: FakeFabric, topo, g, pool=None, fail: set[str] = frozenset()) -> RelayBook:
    def push(by_switch, *, connected_only=False):
        if fail & set(by_switch) and not connected_only:
            raise RequestError(f"switch {sorted(fail & set(by_switch))[0]} is not connected")
        fab.apply(by_switch)

    return RelayBook(g, topo, push, seed=3, pool=pool)


def test_300_hidden_relays_get_distinct_addresses_freed_on_removal(fattree):
    topo, g = fattree
    fab = FakeFabric(topo)
    book = book_on(fab, topo, g)
    vips = []
    for i in range(300):
        r = book.install(f"m{i}", [{"from": "h13", "to": "h1", "port": 9200, "hidden": True}])
        vips.append(r["paths"][0]["virtual_ip"])
    assert len(set(vips)) == 300 and len(book.pool) == 300
    assert book.virtual(vips[256]).ip == vips[256]
    for i in range(300):
        book.remove(f"m{i}")
    assert len(book.pool) == 0 and book.virtual(vips[0]) is None
    assert not any(c & R.RELAY_COOKIE_TAG for s in fab.switches.values() for c in s.cookies())


def test_install_and_remove_through_the_push_callback(fattree):
    topo, g = fattree
    fab = FakeFabric(topo)
    for sw in topo["switches"]:
        fab.switches[sw].apply(R.delete_all() + R.base_rules(g, topo, sw))
    book = book_on(fab, topo, g)
    r = book.install("m1", [{"from": "h1", "to": "h16", "port": 9001}], seed=5)
    assert "m1" in book and book.names() == ["m1"]
    assert book.summary() == {"m1": {"cookie": r["cookie"], "switches": r["switches"]}}
    assert {sw for sw, s in fab.switches.items() if r["cookie"] in s.cookies()} == \
        set(r["paths"][0]["switches"])
    with pytest.raises(RequestError, match="already has a relay"):
        book.install("m1", [{"from": "h1", "to": "h16", "port": 9001}])
    assert book.remove("m1")["removed"]
    assert not any(r["cookie"] in s.cookies() for s in fab.switches.values())
    with pytest.raises(RequestError, match="no relay for migration m1"):
        book.remove("m1")


@pytest.mark.parametrize("hops,error,match", [
    ([], RequestError, "non-empty list"),
    ([{"from": "h1", "to": "h2", "port": 0}], RequestError, "bad TCP port 0"),
    ([{"from": "h1", "to": "h99", "port": 9001, "hidden": True}], P.UnknownHost, "h99"),
])
def test_bad_relays_leave_nothing_behind(fattree, hops, error, match):
    topo, g = fattree
    book = book_on(FakeFabric(topo), topo, g)
    with pytest.raises(error, match=match):
        book.install("bad", hops)
    assert "bad" not in book and len(book.pool) == 0


def test_a_switch_that_fails_undoes_the_relay_and_frees_its_address(fattree):
    topo, g = fattree
    fab = FakeFabric(topo)
    edge = P.host(topo, "h1")["switch"]
    book = book_on(fab, topo, g, fail={edge})
    with pytest.raises(RequestError, match="not connected"):
        book.install("m1", [{"from": "h13", "to": "h1", "port": 9200, "hidden": True}])
    assert "m1" not in book and len(book.pool) == 0


def test_a_full_pool_refuses_a_hidden_relay_with_a_clear_error(fattree):
    topo, g = fattree
    book = book_on(FakeFabric(topo), topo, g, pool=VirtualPool(size=1))
    book.install("m1", [{"from": "h13", "to": "h1", "port": 9200, "hidden": True}])
    with pytest.raises(PoolExhausted, match="in use"):
        book.install("m2", [{"from": "h13", "to": "h1", "port": 9200, "hidden": True}])
    assert "m2" not in book
    book.install("m3", [{"from": "h13", "to": "h1", "port": 9200}])  # not hidden: fine
    book.remove("m1")
    book.install("m4", [{"from": "h13", "to": "h1", "port": 9200, "hidden": True}])
