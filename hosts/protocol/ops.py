"""Op names of the management plane, one constant each, grouped by who serves them.

Every request is ``{"op": NAME, ...}`` (``hosts.protocol.mgmt``). The controller serves the
``CONTROLLER_OPS``; each role agent serves the ``AGENT_OPS``; roles report ``REPORTS`` to the
controller. Use the constants instead of string literals so a typo is an import error. Who may
call each op is the table in ``hosts.protocol.policy``.
"""

from __future__ import annotations

# served by the controller
STATUS = "status"
REGISTER = "register"
RELAY = "relay"
RELAY_REMOVE = "relay_remove"
FLOWS = "flows"
DEFAULTS = "defaults"
ANOMALY = "anomaly"
MIGRATE = "migrate"
MIGRATION_STATUS = "migration_status"
MIGRATIONS_ACTIVE = "migrations_active"
RESET_TRIAL = "reset_trial"  # a reused testbed between trials: the VM back at the source, counters
# served by the controller (from the runner: every agent's mux) and by each agent (from the
# controller: its own mux); see hosts.protocol.cover
COVER_START = "cover_start"
COVER_STOP = "cover_stop"

# reports from the roles to the controller
MIGRATION_DONE = "migration_done"
MIGRATION_FAILED = "migration_failed"
REPORTS = (MIGRATION_DONE, MIGRATION_FAILED)

# served by a role agent
PREPARE = "prepare"
START = "start"
RELEASE = "release"
ABORT = "abort"
FORGET = "forget"
RESET_PEAK = "reset_peak"
SHUTDOWN = "shutdown"
VM_RESET = "vm_reset"  # a reused testbed: drop the VM and finished roles, maybe start a fresh VM
AGENT_OPS = (STATUS, PREPARE, START, RELEASE, ABORT, FORGET, RESET_PEAK, SHUTDOWN, COVER_START,
             COVER_STOP, VM_RESET)
