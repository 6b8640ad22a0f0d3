"""The manifest fields of a QEMU guest (no QEMU needed): ``kind`` and ``dirty_kib`` are read and
checked like every other field; the model stays the default kind."""

from __future__ import annotations

import json

import pytest

from hosts.roles.destination import ManifestError, read_manifest


def _m(**kw) -> bytes:
    return json.dumps({"vm": "vm1", "mib": 96, **kw}).encode()


def test_kind_defaults_to_the_model() -> None:
    m = read_manifest(_m(), 0)
    assert m.kind == "model" and m.dirty_kib == 0


def test_qemu_kind_and_dirty_rate_are_read() -> None:
    m = read_manifest(_m(kind="qemu", dirty_kib=80), 96 << 20)
    assert m.kind == "qemu" and m.dirty_kib == 80


@pytest.mark.parametrize("fields,match", [
    ({"kind": "xen"}, "'kind'"),
    ({"kind": 1}, "'kind'"),
    ({"kind": "qemu", "dirty_kib": -1}, "'dirty_kib'"),
    ({"kind": "qemu", "dirty_kib": True}, "'dirty_kib'"),
    ({"kind": "qemu", "dirty_kib": 1 << 20}, "'dirty_kib'"),
    ({"kind": "qemu", "mib": 64}, "'mib' must be 96..1024 for a QEMU guest"),
    ({"kind": "qemu", "mib": 4096}, "'mib' must be 96..1024 for a QEMU guest"),
])
def test_bad_fields_are_named(fields, match) -> None:
    with pytest.raises(ManifestError, match=match):
        read_manifest(_m(**fields), 0)


def test_a_qemu_guest_larger_than_vouched_is_refused() -> None:
    with pytest.raises(ManifestError, match="vouched"):
        read_manifest(_m(kind="qemu"), 64 << 20)
