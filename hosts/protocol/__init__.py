"""The shared protocol contract: everything that crosses a process boundary.

The management transport (``mgmt``), who may speak on it (``auth``: run secret, identities,
request MACs, the private run folder; ``policy``: the one op × caller table), the op names and
message types (``ops``), the migration plan with one typed view per role and the one set of
``Defaults`` (``plan``). The controller, the role agents, the monitors and the runner all speak
through this package; it imports nothing else of the project (an import-linter contract checks
it).
"""
