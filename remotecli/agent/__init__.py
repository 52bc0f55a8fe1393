"""The in-VM agent: drives the coding CLIs and brokers their logins.

Runs inside every VM (and every container of the nspawn backend) from a bare
``python3``: it imports nothing outside the standard library, ``agent/`` and
``providers/``. Entry point: ``python3 -m remotecli.agent``.
"""
