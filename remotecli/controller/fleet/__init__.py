"""The fleet of VMs: the manager (``manager.py``: claims, hooks, teardown), one claim's steps
(``lifecycle.py``), the warm pool, the health monitor, reconcile on start, the golden snapshot,
the backend + image choice (``runtime.py``) and the Vm table (``store.py``)."""
