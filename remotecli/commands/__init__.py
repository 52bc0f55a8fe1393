"""The ``remotecli`` commands that talk to a running controller over its HTTP API."""
