"""Alg 1, the monitor: watch one VM's host from inside its network namespace, report anomalies.

One process per host (``python -m hosts.monitor``, see ``__main__``): ``procfs`` reads the
host's signals from ``/proc``, ``features`` turns two samples into one feature row,
``detector`` judges each row (rules plus an IsolationForest trained on the VM's normal
behaviour), ``daemon`` is the loop that reports alarms to the controller and knows which
migrations run.
"""
