"""The composition root: the controller's app with the dashboard, the offline demo and the test
bed wired in (``app.py``). The only package that knows all of them: ``controller/`` imports
neither ``web`` nor ``testbed``."""
