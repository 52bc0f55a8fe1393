"""Re-capture what the real, pinned CLIs print (into tests/fixtures/real_cli/).

Usage (as root, from the repository root):

    python3 -m tools.capture_real_clis            # every scenario
    python3 -m tools.capture_real_clis codex_login claude_auth

The CLIs are installed with ``tests/support/realcli_install.py``. Every CLI runs in a
private network namespace (``unshare --net --mount``) that has only a loopback
interface, so no packet can leave the machine. Inside it ``/etc/resolv.conf``
is bind-mounted to point at a stub DNS server on 127.0.0.1:53 that answers
NXDOMAIN to every query, the way a resolver answers for unknown hosts: the
provider hosts then fail fast with "not found" errors (ENOTFOUND), as they do
on a host without internet access.

Each capture writes ``<name>.raw`` (PTY runs: every byte read from the PTY
master, escape sequences included) or ``<name>.stdout`` / ``<name>.stderr``
(pipe runs), plus ``<name>.json`` (argv, environment, columns, exit code,
duration, a timeline of what was sent and when, HTTP exchanges).
"""
