"""The VM model: pre-copy with a running workload reproduces the image bit for bit."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hosts.vm import (
    MAX_MIB,
    VM,
    StreamInstaller,
    VMError,
    VMNameError,
    ask_service,
    check_name,
    precopy_records,
)


def test_precopy_reproduces_the_image(tmp_path) -> None:
    src = VM(
        "vm1",
        str(tmp_path / "a.mem"),
        2,
        ip="127.0.0.21",
        port=7100,
        dirty_pages_per_s=5000,
        seed=3,
    )
    dst = VM("vm1", str(tmp_path / "b.mem"), 2, ip="127.0.0.22", port=7100, fill=False)
    src.start()
    try:
        before = ask_service("127.0.0.21", 7100)["counter"]
        inst = StreamInstaller(dst)
        stats: dict = {}
        for rec in precopy_records(src, max_rounds=4, min_dirty_pages=8, stats=stats):
            inst.feed(rec)
            time.sleep(0.001)  # let the workload dirty pages between records
        assert src.paused
        inst.finish()
        assert dst.digest() == src.digest()
        assert stats["rounds"] >= 2
        assert stats["pages_per_round"][0] == src.pages
        dst.start()
        after = ask_service("127.0.0.22", 7100)
        assert after["counter"] == before + 1  # no reset
    finally:
        src.stop()
        dst.stop()


def test_a_callable_pause_threshold_is_asked_after_every_round(tmp_path) -> None:
    """The source over cover sets the threshold from what it measured: asked anew each round."""
    src = VM("vm1", str(tmp_path / "a.mem"), 1, ip="127.0.0.24", port=7102,
             dirty_pages_per_s=5000, seed=4)
    asked: list[int] = []

    def few() -> int:
        asked.append(len(asked))
        return -1 if len(asked) == 1 else src.pages  # go on after round 1, pause after round 2

    src.start()
    try:
        stats: dict = {}
        for _ in precopy_records(src, max_rounds=8, min_dirty_pages=few, stats=stats):
            time.sleep(0.001)  # let the workload dirty pages between records
        assert src.paused
        assert asked == [0, 1]
        assert stats["rounds"] == 3  # two pre-copy rounds, then the stop-and-copy
    finally:
        src.stop()


def test_pause_stalls_the_guest(tmp_path) -> None:
    vm = VM("v", str(tmp_path / "v.mem"), 1, ip="127.0.0.23", port=7101, dirty_pages_per_s=1000)
    vm.start()
    try:
        vm.pause()
        ticks = vm.device["ticks"]
        time.sleep(0.1)
        assert vm.device["ticks"] == ticks
        got: dict = {}
        t = threading.Thread(target=lambda: got.update(ask_service("127.0.0.23", 7101)))
        t.start()
        time.sleep(0.2)
        assert not got  # no answer while paused
        vm.resume()
        t.join(3)
        assert got["counter"] == 1
    finally:
        vm.destroy()
    assert not os.path.exists(tmp_path / "v.mem")


def test_installer_rejects_bad_records(tmp_path) -> None:
    vm = VM("v", str(tmp_path / "v.mem"), 1, fill=False)
    with pytest.raises(VMError):
        StreamInstaller(vm).feed(b"Z\0\0\0\1")
    with pytest.raises(VMError):
        StreamInstaller(vm).feed(b"P\0\0\0\1" + (10**6).to_bytes(4, "big") + b"\0" * 4096)
    inst = StreamInstaller(vm)
    inst.feed(b"P\0\0\0\1\0\0")
    with pytest.raises(VMError):
        inst.finish()


def test_incremental_hash_tracks_every_write(tmp_path) -> None:
    vm = VM("v", str(tmp_path / "v.mem"), 3, fill=True, seed=1)
    first = vm.digest()
    assert vm.refresh_hashes() == 0  # nothing written since
    page = vm.read_pages(np.array([300]))
    vm.write_pages(np.array([300]), page[:-1] + bytes([page[-1] ^ 1]))
    assert vm.refresh_hashes() == 1
    assert vm.digest() != first
    vm.write_pages(np.array([300]), page)
    assert vm.digest() == first
    vm.device["counter"] = 5
    assert vm.digest() != first


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=st.one_of(
        st.binary(max_size=3000),
        st.lists(
            st.tuples(
                st.sampled_from([b"P", b"D", b"R", b"X"]),
                st.integers(0, 2000),
                st.binary(max_size=5000),
            ),
            max_size=4,
        ).map(lambda recs: b"".join(k + n.to_bytes(4, "big") + body for k, n, body in recs)),
    )
)
def test_installer_fuzz_raises_only_vmerror(tmp_path, data: bytes) -> None:
    vm = VM("v", str(tmp_path / "fuzz.mem"), 1, fill=False)
    try:
        inst = StreamInstaller(vm)
        inst.feed(data)
        inst.finish()
    except VMError:
        pass
    finally:
        os.close(vm.fd)


@pytest.mark.parametrize("name", ["../../../../tmp/x", "/tmp/x", "a/b", "..", "a..b", "", "x" * 65,
                                  "vm\x00", "vm 1", "vm\u00e91", 7, None])
def test_a_vm_name_that_could_leave_the_folder_is_refused(tmp_path, name) -> None:
    with pytest.raises(VMNameError, match="letters, digits"):
        check_name(name)
    with pytest.raises(VMNameError):
        VM(name, str(tmp_path / "x.mem"), 1)  # type: ignore[arg-type]
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("name", ["vm1", "A-b_c.9", "x" * 64, ".vm", "v.m"])
def test_a_plain_vm_name_is_taken(name: str) -> None:
    assert check_name(name) == name


def test_an_image_beyond_the_model_limit_is_refused(tmp_path) -> None:
    with pytest.raises(VMError, match=f"1 to {MAX_MIB} MiB"):
        VM("vm1", str(tmp_path / "x.mem"), MAX_MIB + 1, fill=False)
    assert os.listdir(tmp_path) == []


def test_the_image_file_is_never_written_through_a_symlink(tmp_path) -> None:
    target = tmp_path / "elsewhere"
    os.symlink(target, tmp_path / "vm1.mem")
    with pytest.raises(OSError):
        VM("vm1", str(tmp_path / "vm1.mem"), 1, fill=False)
    assert not target.exists()
