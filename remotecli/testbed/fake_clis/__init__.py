"""Fake ``claude``, ``codex`` and ``gemini`` CLIs (see ``remotecli/testbed/bin``)."""
