"""The VM artifacts an instance boots, loaded from its golden image (``images/vm.py``).

``golden_artifacts`` is the loader the runtime hands the VM backends
(``controller/fleet/runtime.py``); tests and benches that construct a
backend directly get it by default or pass their own ``ArtifactsFor``.
"""

from __future__ import annotations

from remotecli.images import store, vm
from remotecli.vmm.base import InstanceSpec, VmArtifacts


async def golden_artifacts(spec: InstanceSpec) -> VmArtifacts:
    """The VM artifacts of ``spec.image``'s image: built on first use (~30 s), then cached."""
    return await vm.ensure_vm_artifacts(store.load_image(spec.image.parent))
