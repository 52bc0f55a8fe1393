"""The fake backend: the agent as a host process, with injectable faults and snapshot semantics
for control-plane tests (``backend.py``). It isolates nothing."""
