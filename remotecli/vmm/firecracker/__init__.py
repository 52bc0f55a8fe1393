"""The Firecracker backend: ``backend.py`` (the Backend), its API client (``api.py``), boot
config (``boot.py``), jailer (``jail.py``), unjailed launch (``launch.py``), snapshots
(``snapshot.py``), per-VM network namespace + TAP (``netns.py``) and the pinned binaries
(``binaries.py``; ``python -m remotecli.vmm.firecracker install``)."""
