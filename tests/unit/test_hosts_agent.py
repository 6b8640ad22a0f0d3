"""The agent refuses a bad prepare with an error reply that names the field, and lives on."""

from __future__ import annotations

import pytest

from hosts.agent import Agent, main
from hosts.protocol import auth
from hosts.protocol.mgmt import MgmtServer
from hosts.protocol.plan import Endpoint, MigrationPlan
from hosts.vm import VM


def _plan() -> MigrationPlan:
    ep = lambda h, i: Endpoint(h, f"127.0.0.{i}", f"/run/{h}.sock", 0, f"{i:02x}" * 32)  # noqa: E731
    return MigrationPlan(migration="m1", mode="stealth", source=ep("h1", 1),
                         destination=ep("h6", 6), intermediates=[ep("h2", 2), ep("h3", 3)],
                         leader=ep("h5", 5), k=2)


@pytest.fixture()
def agent(tmp_path) -> Agent:
    return Agent("h2", "127.0.0.2", str(tmp_path / "h2.sock"), str(tmp_path / "h2"))


@pytest.mark.parametrize("edit,error", [
    (lambda d: d.__setitem__("k", "two"),
     "PlanError: source view: field 'k' must be an int, got 'two'"),
    (lambda d: d.pop("dest_pubkey"), "PlanError: source view: field 'dest_pubkey' is missing"),
    (lambda d: d["me"].pop("host"), "PlanError: source view: field 'me.host' is missing"),
    (lambda d: d.__setitem__("role", "teleporter"),
     "PlanError: view: field 'role' must be one of source, intermediate, leader, destination, "
     "got 'teleporter'"),
])
def test_a_bad_view_is_an_error_reply_naming_the_field(agent: Agent, edit, error: str) -> None:
    p = _plan()
    view = p.view_for("source", p.source).to_dict()
    edit(view)
    reply = agent.handle({"op": "prepare", "view": view})
    assert reply == {"ok": False, "error": error}
    assert agent.roles == {}
    assert agent.handle({"op": "status"})["host"] == "h2"


def test_prepare_without_a_view(agent: Agent) -> None:
    reply = agent.handle({"op": "prepare"})
    assert reply["ok"] is False and reply["error"].startswith("PlanError: prepare needs a view")


@pytest.mark.parametrize("name", ["../../../../tmp/x", "a/b", "..", ""])
def test_the_agent_refuses_a_vm_name_that_could_leave_its_folder(tmp_path, capsys, name) -> None:
    keys = tmp_path / "h1.keys"
    auth.KeyRing.for_agent(auth.new_secret(), "h1").save(keys)
    argv = ["--host", "h1", "--ip", "127.0.0.1", "--sock", str(tmp_path / "h1.sock"),
            "--keys", str(keys), "--workdir", str(tmp_path / "w"), "--vm", name, "--vm-mib", "1"]
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert "letters, digits" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


def test_the_agent_registers_its_vm_size(tmp_path) -> None:
    sent: list[dict] = []
    secret = auth.new_secret()
    ctl = MgmtServer(str(tmp_path / "ctl.sock"), lambda msg, caller: sent.append(msg) or {},
                     auth.Verifier.from_secret(auth.CONTROLLER, secret))
    ctl.start()
    try:
        a = Agent("h1", "127.0.0.1", str(tmp_path / "h1.sock"), str(tmp_path / "w"),
                  mgmt=str(tmp_path / "ctl.sock"), keys=auth.KeyRing.for_agent(secret, "h1"))
        a.vm = VM("vm1", str(tmp_path / "w" / "vm1.mem"), 2, fill=False)
        a.register()
    finally:
        ctl.close()
    assert sent[0]["vm"] == "vm1" and sent[0]["vm_bytes"] == 2 << 20
