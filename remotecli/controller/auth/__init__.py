"""The login wing: one task per login (``flow.py``) driving the agent (``driver.py``), the
live state of a login and its rows (``session.py``), what the API shows (``view.py``,
``schemas.py``) and the checks on what a caller sends (``checks.py``)."""
