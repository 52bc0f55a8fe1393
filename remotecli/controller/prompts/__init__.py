"""The prompt wing: the service holding the runs in flight (``service.py``), one run from claim
to stream to sync-back (``run.py``) and what a run ends as (``outcome.py``)."""
