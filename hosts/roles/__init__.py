"""The roles of a migration (Algs 3–6, and the direct baseline), one module each.

- ``source`` (VM_anomalous, Alg 3): shares the key, pre-copies and seals the VM into chunks;
- ``intermediate`` (VM_available, Alg 4): relays chunks to the leader, never sees the key;
- ``leader`` (Alg 5): rebuilds the key from k shares, opens and forwards to the destination;
- ``destination`` (Alg 6): installs the stream, checks the hash and runs the VM.

``base`` holds what they share (``Role``, ``AgentContext``, ``RoleError``, the accept loop),
``faults`` the test-only fault injection. Every hop is a ``hosts.channel.Channel``: one TCP
connection bound to the sender's IP, or, when the view's ``transport`` is ``cover``, one stream of
the agent's cover mux (``hosts.cover``). ``ROLES`` maps a view's ``role`` to the class that
plays it.
"""

from __future__ import annotations

from hosts.roles.base import Role
from hosts.roles.destination import Destination
from hosts.roles.intermediate import Intermediate
from hosts.roles.leader import Leader
from hosts.roles.source import Source

ROLES: dict[str, type[Role]] = {
    "source": Source,
    "intermediate": Intermediate,
    "leader": Leader,
    "destination": Destination,
}
