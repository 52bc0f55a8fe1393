"""The dashboard: server-rendered pages (Jinja2) with small vanilla JS modules, no build step.

``routes.py`` serves the pages under ``/remote-cli/`` and their static files;
the pages' scripts call the same public API as every other client, signed in
by the session cookie (``POST /api/session``; see controller/security.py).
"""
