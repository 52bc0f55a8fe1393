"""The agent's systemd unit and the other boot decisions baked into the image.

Measured on Debian trixie (systemd 257); each choice below says why.
"""

from __future__ import annotations

from remotecli.images import layout

#: Units masked at build time (a symlink to /dev/null in /etc/systemd/system,
#: which also beats the getty generator's links in /run):
#: - the gettys: nobody logs in on a VM's console; a getty on the console
#:   interleaves a login prompt with the readiness markers, and on the seed's
#:   images serial-getty@ttyS0 was where a boot hung and power-off was ignored.
#:   The readiness code reads the console; only systemd and the agent write it.
#: - apt's timers: instances must not reach the network on their own
#:   (the image carries no apt lists on purpose; updates come from a rebuild).
MASKED_UNITS: tuple[str, ...] = (
    "serial-getty@ttyS0.service",
    "serial-getty@hvc0.service",
    "console-getty.service",
    "getty@tty1.service",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
)
#: graphical.target is Debian's default; nothing in the image needs it.
DEFAULT_TARGET = "multi-user.target"
#: Debian's presets say ``enable systemd-networkd-wait-online.service``: had we
#: run ``systemctl preset-all`` (we do not) the agent's boot would wait up to
#: two minutes for a network nobody configured. The build refuses an image in
#: which anything wants network-online.target.
FORBIDDEN_WANTS_DIR = "/etc/systemd/system/network-online.target.wants"


def agent_unit() -> str:
    """The unit text, installed at ``layout.AGENT_UNIT_PATH`` and enabled."""
    return f"""\
# remote-cli agent: installed by `remotecli image build`; instances never edit it.
[Unit]
Description=remote-cli agent
# network.target only: the agent listens on vsock, a Unix socket and 0.0.0.0,
# none of which needs a configured network. Never network-online.target: a
# wait-online service holds it until its timeout (minutes).
After=network.target

[Service]
# exec: the unit fails at once (with the errno) when python3 cannot be run,
# instead of "started" then dead.
Type=exec
Environment=PYTHONPATH={layout.PACKAGE_ROOT} PYTHONDONTWRITEBYTECODE=1
# Unset variables in ExecStart make systemd log a warning; default to empty.
Environment=REMOTECLI_AGENT_ARGS=
# Written by the backend per instance; "-": the file is optional.
EnvironmentFile=-{layout.AGENT_ENV_FILE}
# $REMOTECLI_AGENT_ARGS as its own word is split at whitespace into zero or
# more arguments (quotes inside the value are not interpreted).
ExecStart=/usr/bin/python3 -m remotecli.agent --token-file {layout.TOKEN_FILE} \
--unix {layout.AGENT_SOCKET} --run-as {layout.CLI_USER} $REMOTECLI_AGENT_ARGS
# The console carries the agent's "agent.listening" line: the readiness marker.
StandardOutput=journal+console
StandardError=journal+console
# Restart a crash after 1 s; systemd's default start limit (5 in 10 s) then
# leaves a crash-looping agent "failed", which the readiness code reports.
Restart=on-failure
RestartSec=1

[Install]
WantedBy=multi-user.target
"""


#: Where ``systemctl enable`` puts the link (relative to the image root).
AGENT_WANTS_LINK = f"/etc/systemd/system/multi-user.target.wants/{layout.AGENT_UNIT}"
