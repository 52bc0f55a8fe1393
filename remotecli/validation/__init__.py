"""Validation of a booted instance: the seed's checklist (``checklist.py``) and its printed
report (``report.py``). Above ``images`` and ``vmm``: it boots what they make."""
