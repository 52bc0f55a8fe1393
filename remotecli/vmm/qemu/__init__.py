"""The QEMU backend: ``-M microvm`` (KVM or TCG) over QMP (``backend.py``, ``qmp.py``) with
migration-file golden snapshots (``snapshot.py``)."""
