"""The nspawn backend: the golden rootfs booted by systemd-nspawn, systemd as PID 1.

For hosts without usable KVM. Same image, same unit, same agent as a VM;
weaker isolation (the host kernel is shared), which ``doctor`` says plainly.

One instance = one launcher process, started as::

    unshare --mount --propagation private -- sh -c LAUNCHER remotecli-launch \\
        CGROUP_PROCS LOWERDIRS UPPER WORK ROOT \\
        systemd-nspawn --boot --register=no --keep-unit --private-network \\
            --console=read-only --link-journal=no -D ROOT --machine=remotecli-ID \\
            --bind=STATE/run:/run/agent -- systemd.log_target=console \\
            systemd.status_unit_format=name

- The rootfs is our own overlay (golden rootfs + ``spec.layers`` read-only,
  ``STATE/upper`` writable), mounted inside the launcher's private mount
  namespace: the mount is invisible to the host and disappears with the
  last process of that namespace, even if the controller crashes. (nspawn's
  ``--volatile=overlay`` cannot stack extra layers and hides the upper dir
  in a tmpfs; one code path for both is simpler and keeps the guest's
  writes inspectable until destroy.)
- The launcher moves itself into its own cgroup first (see cgroups.py), then
  execs nspawn: the pid we spawn *is* nspawn, and its child is the guest's PID 1.
- No ``--quiet``: nspawn's "Spawning container ..." line is the VMM_STARTED
  marker and its exit line ("Container ... failed") is evidence.
- ``systemd.log_target=console``: PID 1's own messages (a unit's bad setting,
  a main process exit, a restart) reach the console, so most failures are
  diagnosable from the console alone. ``status_unit_format=name``: status
  lines carry full unit names (the default ellipsizes them to 25 chars).
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

from remotecli import proc
from remotecli.errors import VmError
from remotecli.images import layout
from remotecli.vmm import lifecycle, readiness, statedir
from remotecli.vmm.base import InstanceSpec, InstanceState, Phase, Readiness, UnitState
from remotecli.vmm.cgroups import InstanceCgroup
from remotecli.vmm.endpoint import AgentEndpoint
from remotecli.vmm.nspawn.inspect import gather_unit_state
from remotecli.vmm.vmmproc import VmmProcess

STATE_ROOT = Path("/run/remotecli/instances")
MACHINE_PREFIX = "remotecli-"
#: nspawn's per-machine directory on the host (for mounts propagated into the guest).
PROPAGATE_DIR = Path("/run/systemd/nspawn/propagate")
GUEST_ARGS = ("systemd.log_target=console", "systemd.status_unit_format=name")
#: AF_VSOCK is not namespaced: an agent in a container must not bind the host's vsock.
CONTAINER_AGENT_ARGS = "--vsock off"
SKIPPED = {Phase.KERNEL_BOOTED: "a container shares the host kernel"}
MARKERS = {**readiness.DEFAULT_MARKERS, Phase.VMM_STARTED: ("Spawning container ",)}
#: A clean systemd shutdown of the image takes ~1 s; allow for a loaded host.
STOP_SECONDS = 15.0

# $1 cgroup.procs, $2 lowerdir (top:...:bottom), $3 upper, $4 work, $5 mount point,
# then the command to exec. Arguments are positional: no path is ever parsed by sh.
LAUNCHER = """set -eu
procs=$1 lower=$2 upper=$3 work=$4 root=$5
shift 5
mount -t overlay overlay -o "lowerdir=$lower,upperdir=$upper,workdir=$work" "$root"
echo $$ > "$procs"
exec "$@"
"""


class NspawnBackend:
    name = "nspawn"
    isolation = "container"
    supports_snapshots = False

    def __init__(self, state_root: Path = STATE_ROOT, *, stop_seconds: float = STOP_SECONDS):
        self.state_root = state_root
        self.stop_seconds = stop_seconds

    def create(self, spec: InstanceSpec) -> NspawnInstance:
        statedir.check_id(spec.instance_id)
        return NspawnInstance(self, spec)

    async def list_running(self) -> list[str]:
        """Ids of instances found on the host: running, or left behind and needing ``reap``."""
        return [d.instance_id for d in statedir.scan(self.state_root)]

    async def reap(self, instance_id: str) -> None:
        """Destroy an instance we have no handle for (after a controller restart)."""
        spec, meta = lifecycle.adopted(self.state_root, instance_id)
        instance = NspawnInstance(self, spec)
        instance.process.pid = meta.get("pid")
        lifecycle.move(instance, InstanceState.STARTING)
        instance.owns_cgroup = True
        await instance.destroy()


class NspawnInstance:
    def __init__(self, backend: NspawnBackend, spec: InstanceSpec) -> None:
        self.backend = backend
        self.spec = spec
        self.state = InstanceState.CREATED
        self.readiness = Readiness()
        self.dir = statedir.StateDir(backend.state_root / spec.instance_id)
        self.machine = MACHINE_PREFIX + spec.instance_id
        self.cgroup = InstanceCgroup.on_this_host(self.machine)
        self.agent_socket = self.dir.socket
        self.agent_endpoint = AgentEndpoint.unix(self.agent_socket)
        self.console_path = self.dir.console
        #: The launcher (nspawn itself once the launcher has exec'd it).
        self.process = VmmProcess(self.machine)
        #: Only a cgroup we made (or adopted in reap) is ever killed or removed.
        self.owns_cgroup = False
        self.started_at = 0.0

    @property
    def pid(self) -> int | None:
        return self.process.pid

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        lifecycle.begin_start(self)
        lower = self._lowerdirs()
        env = dict(self.spec.agent_env)
        # Ours first: argparse keeps the last of a repeated option, so the caller can override.
        extra = env.get("REMOTECLI_AGENT_ARGS", "")
        env["REMOTECLI_AGENT_ARGS"] = f"{CONTAINER_AGENT_ARGS} {extra}".strip()
        # Outside the try: an existing directory belongs to another instance.
        self.dir.create(self.spec.agent_token, env)
        try:
            for sub in ("upper", "work", "root"):
                (self.dir.path / sub).mkdir(mode=0o755)
            self.cgroup.create()
            self.owns_cgroup = True
            self._write_meta()
            argv = self.launch_argv(lower)
            self.started_at = time.monotonic()
            await self.process.spawn(argv, self.console_path, env=_launcher_env())
            self._write_meta()
        except BaseException:
            await self.destroy()
            lifecycle.move(self, InstanceState.FAILED)
            raise
        lifecycle.move(self, InstanceState.STARTING)

    def launch_argv(self, lowerdirs: str) -> list[str]:
        d = self.dir.path
        nspawn = [
            "systemd-nspawn", "--boot", "--register=no", "--keep-unit", "--private-network",
            "--console=read-only", "--link-journal=no",
            f"--directory={d / 'root'}", f"--machine={self.machine}",
            f"--bind={self.dir.run}:{layout.RUN_DIR}",
            "--", *GUEST_ARGS,
        ]  # fmt: skip
        return [
            "unshare", "--mount", "--propagation", "private", "--",
            "/bin/sh", "-c", LAUNCHER, "remotecli-launch",
            str(self.cgroup.procs_file), lowerdirs, str(d / "upper"), str(d / "work"),
            str(d / "root"), *nspawn,
        ]  # fmt: skip

    async def wait_ready(self) -> Readiness:
        return await lifecycle.wait_ready(self, backend="nspawn", markers=MARKERS, skipped=SKIPPED)

    async def destroy(self) -> None:
        """Stop the container cleanly (SIGTERM = systemd shutdown), then verify nothing is left."""
        if self.process.alive() and not await self.process.terminate(self.backend.stop_seconds):
            # Not process.kill(): the whole cgroup first (the guest's services run in
            # sessions of their own), then the launcher's session, whether or not the
            # launcher outlived the cgroup kill.
            assert self.pid is not None
            self.cgroup.kill()
            proc.kill_group(self.pid)
            await self.process.wait_exit(5.0)
        if self.owns_cgroup and self.cgroup.pids():
            # The launcher is gone but left the guest running: it was killed (and may not
            # have been reaped yet, so it looked alive above and "exited" at once on SIGTERM).
            self.cgroup.kill()
        problems = await self.cgroup.remove() if self.owns_cgroup else []
        self.dir.remove()
        # nspawn removes it when it exits cleanly; a killed launcher leaves it.
        shutil.rmtree(PROPAGATE_DIR / self.machine, ignore_errors=True)
        lifecycle.stopped(self, "nspawn", problems + self._leftovers())

    # -- evidence ---------------------------------------------------------------

    def exit_code(self) -> int | None:
        return self.process.exit_code()

    def console_tail(self, max_chars: int = 4000) -> str:
        return readiness.console_tail(self.console_path, max_chars)

    def container_pid(self) -> int | None:
        """The guest's PID 1 as the host sees it: the child of nspawn that is PID 1 inside."""
        if not self.process.alive():
            return None
        assert self.pid is not None
        try:
            children = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()
        except OSError:
            return None
        for child in children:
            with contextlib.suppress(OSError):
                status = Path(f"/proc/{child}/status").read_text()
                nspid = next(ln for ln in status.splitlines() if ln.startswith("NSpid:"))
                if nspid.split()[-1] == "1" and len(nspid.split()) > 2:
                    return int(child)
        return None

    async def exec_in(
        self, argv: Sequence[str], *, timeout: float = 10.0, check: bool = True
    ) -> proc.Completed:
        """Run ``argv`` inside the container (its namespaces and root), for diagnostics."""
        pid = self.container_pid()
        if pid is None:
            raise VmError(f"instance {self.spec.instance_id} has no running container")
        return await proc.run(
            ["nsenter", "-t", str(pid), "-m", "-u", "-i", "-n", "-p", "-r", "-w", "--", *argv],
            timeout=timeout, check=check, env=GUEST_ENV,
        )  # fmt: skip

    async def unit_state(self) -> UnitState | None:
        if self.container_pid() is None:
            return None
        return await gather_unit_state(self.exec_in, layout.AGENT_UNIT)

    # -- internals --------------------------------------------------------------

    def _lowerdirs(self) -> str:
        dirs = [*reversed(self.spec.layers), self.spec.image]  # overlay wants top first
        for d in dirs:
            if not d.is_absolute() or any(c in str(d) for c in ":,\\\n"):
                raise VmError(f"layer path {d} must be absolute, without ':', ',' or '\\'")
            if not d.is_dir():
                raise VmError(f"layer {d} is not a directory")
        if not (self.spec.image / "usr").is_dir():
            raise VmError(f"{self.spec.image} is not a root filesystem (no usr/)")
        return ":".join(str(d) for d in dirs)

    def _write_meta(self) -> None:
        self.dir.write_meta({
            "backend": "nspawn", "machine": self.machine, "pid": self.pid,
            "image": str(self.spec.image), "layers": [str(p) for p in self.spec.layers],
            "cgroups": [str(self.cgroup.unified), *map(str, self.cgroup.mirrors)],
        })  # fmt: skip

    def _leftovers(self) -> list[str]:
        problems = lifecycle.leftovers("launcher", self.process, self.dir.path)
        if self.owns_cgroup:
            problems += [f"process {pid} still in the cgroup" for pid in self.cgroup.pids()]
            problems += [f"cgroup {d}" for d in self.cgroup.dirs()]
        problems += [f"mount {m}" for m in statedir.mounts_under(self.dir.path)]
        propagate = PROPAGATE_DIR / self.machine
        if propagate.exists():
            problems.append(f"nspawn propagation dir {propagate}")
        return problems


GUEST_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "TERM": "dumb",
    "SYSTEMD_COLORS": "0",
    "SYSTEMD_PAGER": "",
    "COLUMNS": "200",  # systemctl status ellipsizes to the terminal width otherwise
}


def _launcher_env() -> dict[str, str]:
    env = {"PATH": GUEST_ENV["PATH"], "LANG": "C.UTF-8"}
    # systemd 257 in the guest supports only the unified cgroup hierarchy; on a
    # hybrid host nspawn would otherwise hand it the v1 layout and it would fail.
    env["SYSTEMD_NSPAWN_UNIFIED_HIERARCHY"] = "1"
    return env
