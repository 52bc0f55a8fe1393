"""A network namespace per VM with one TAP device in it (Firecracker's optional network).

The TAP lives inside the VM's own namespace, so every VM's TAP can have the
same name (``tap0``): a snapshot records the TAP name, and a clone restored in
its own namespace finds the same name there. Firecracker runs inside the
namespace (``nsenter --net``) and opens the TAP by name. Nothing routes the
namespace anywhere yet: connecting it (veth + NAT) is the controller's
policy, not the backend's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from remotecli import proc

NETNS_DIR = Path("/run/netns")
TAP_NAME = "tap0"
IP_TIMEOUT = 10.0


@dataclass(frozen=True)
class VmNetwork:
    netns: str
    tap: str = TAP_NAME

    @property
    def handle(self) -> Path:
        """The bind-mounted namespace file ``nsenter --net=`` and the jailer's ``--netns`` take."""
        return NETNS_DIR / self.netns

    def exists(self) -> bool:
        return self.handle.exists()

    async def create(self) -> None:
        """``ip netns add`` + a TAP (up) inside it; removes the namespace again on failure."""
        await proc.run(["ip", "netns", "add", self.netns], timeout=IP_TIMEOUT)
        try:
            await proc.run(
                ["ip", "-n", self.netns, "tuntap", "add", "dev", self.tap, "mode", "tap"],
                timeout=IP_TIMEOUT,
            )
            await proc.run(
                ["ip", "-n", self.netns, "link", "set", self.tap, "up"], timeout=IP_TIMEOUT
            )
        except BaseException:
            await self.delete()
            raise

    async def delete(self) -> None:
        """Remove the namespace (its TAP goes with it). Idempotent."""
        if self.exists():
            await proc.run(["ip", "netns", "delete", self.netns], timeout=IP_TIMEOUT, check=False)

    async def links(self) -> list[str]:
        """Interface names inside the namespace (for leftover checks and tests)."""
        if not self.exists():
            return []
        done = await proc.run(
            ["ip", "-n", self.netns, "-o", "link"], timeout=IP_TIMEOUT, check=False
        )
        return [
            line.split(":")[1].strip().split("@")[0]
            for line in done.stdout.splitlines()
            if ":" in line
        ]
