"""The systemd-nspawn backend: containers over an overlay of the golden rootfs (``backend.py``)
and asking systemd inside one (``inspect.py``)."""
