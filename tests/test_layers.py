"""The dependency direction of docs/ARCHITECTURE.md, checked from the imports themselves.

Every ``import`` and ``from ... import`` in ``remotecli/`` counts: at module level, inside
functions, and under ``if TYPE_CHECKING:`` (a circle the type checker sees is still a circle
for a reader). The one exemption is named below with its reason.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import remotecli

PACKAGE = Path(remotecli.__file__).parent

#: Each top-level part of ``remotecli`` and the parts it may import (besides itself and the
#: package root, which only holds ``__version__``). Read it bottom-up: nothing imports upward.
LAYERS: dict[str, frozenset[str]] = {
    "providers": frozenset(),
    "agent": frozenset({"providers"}),
    "testbed": frozenset(),
    "errors": frozenset(),
    "states": frozenset({"errors"}),
    "proc": frozenset({"errors"}),
    "images": frozenset({"errors", "proc", "providers"}),
    "vmm": frozenset({"errors", "states", "proc", "images", "providers"}),
    "validation": frozenset({"errors", "proc", "images", "vmm", "providers"}),
    "controller": frozenset({"errors", "states", "proc", "images", "vmm", "providers"}),
    "web": frozenset({"errors", "controller", "providers"}),
    "server": frozenset({"errors", "controller", "web", "testbed", "vmm", "images", "providers"}),
    "commands": frozenset(
        {"errors", "proc", "server", "controller", "images", "vmm", "validation", "providers"}
    ),
    "cli": frozenset(
        {"errors", "proc", "commands", "images", "vmm", "validation", "providers", "controller"}
    ),
}

#: The agent's typed wire (stdlib only, so it ships in the guest beside the agent) is the one
#: piece of the agent the host imports: the parts that speak to an agent share its dataclasses.
WIRE = frozenset({"remotecli.agent.wire", "remotecli.agent.codec"})
SPEAKS_TO_THE_AGENT = frozenset({"vmm", "validation", "controller"})

#: Inside the controller: each wing (or shared module) and its rank; a module may import only
#: ranks below its own, and its own wing. Siblings (auth, prompts) do not import each other.
#: Each wing's ``states.py`` (its enums beside their transition tables) ranks as ``states``:
#: the tables (``db/models.py``'s columns among them) read them, they read nothing above.
CONTROLLER_RANKS: dict[str, int] = {
    # shared by every wing, importing no wing
    "settings": 0, "errors": 0, "logs": 0, "metrics": 0, "sse": 0, "apimodel": 0,
    "states": 1,
    "db": 2,
    "security": 3, "vault": 3,
    "context": 4,
    "fleet": 5,
    "auth": 6, "prompts": 6,
    "services": 7,
    "api": 8,
}  # fmt: skip
#: Ranks that are not a folder or module of ``controller/`` but a kind of module in each wing.
PER_WING = {"states"}

#: ``AppContext`` names each wing's service class for the type checker only: it is the one
#: registry that knows them all, and no wing reaches another through it at run time.
TYPE_ONLY_EXEMPT = {"remotecli.controller.context"}

#: What the guest's bare python3 has: the agent and the providers import nothing else.
STDLIB_ONLY = ("agent", "providers", "testbed")


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, dotted
    target: str  # the imported module, dotted (resolved to a module that exists)
    line: int
    type_only: bool

    def where(self) -> str:
        return f"{self.module}:{self.line} imports {self.target}"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def exists(dotted: str) -> bool:
    path = PACKAGE.parent.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def resolve(dotted: str) -> str:
    """``remotecli.a.b.Name`` -> the longest prefix that is a module of ours."""
    parts = dotted.split(".")
    while parts and not exists(".".join(parts)):
        parts.pop()
    return ".".join(parts)


def type_checking_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imports_of(path: Path) -> Iterator[tuple[str, int, bool]]:
    """(dotted target, line, under TYPE_CHECKING) for every import in the file."""
    tree = ast.parse(path.read_text(), str(path))
    typed = type_checking_lines(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno, node.lineno in typed
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: relative import"
            assert node.module is not None
            for alias in node.names:
                yield f"{node.module}.{alias.name}", node.lineno, node.lineno in typed


def our_imports() -> list[Import]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = module_name(path)
        for target, line, type_only in imports_of(path):
            if target.split(".")[0] == "remotecli":
                found.append(Import(module, resolve(target), line, type_only))
    return found


def part(dotted: str) -> str:
    """``remotecli.vmm.qemu.backend`` -> ``vmm``; the package root -> ``remotecli``."""
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 else "remotecli"


def wing(dotted: str) -> str:
    """``remotecli.controller.fleet.pool`` -> ``fleet``; ``remotecli.controller.sse`` -> ``sse``;
    ``remotecli.controller.fleet.states`` -> ``states``."""
    parts = dotted.split(".")
    return parts[3] if len(parts) > 3 and parts[3] in PER_WING else parts[2]


def test_every_part_of_the_package_has_a_layer() -> None:
    parts = {
        p.stem if p.is_file() else p.name
        for p in PACKAGE.iterdir()
        if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()
    }
    assert sorted(parts) == sorted(LAYERS)
    wings = {
        p.stem if p.is_file() else p.name
        for p in (PACKAGE / "controller").iterdir()
        if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()
    }
    assert sorted(wings) == sorted(set(CONTROLLER_RANKS) - PER_WING)


def test_no_part_imports_upward() -> None:
    wrong = [
        i.where()
        for i in our_imports()
        if part(i.target) not in {part(i.module), "remotecli", *LAYERS[part(i.module)]}
        and not (i.target in WIRE and part(i.module) in SPEAKS_TO_THE_AGENT)
    ]
    assert wrong == []


def test_controller_wings_import_only_downward() -> None:
    wrong = []
    for i in our_imports():
        if part(i.module) != "controller" or part(i.target) != "controller":
            continue
        if i.module == "remotecli.controller" or i.target == "remotecli.controller":
            continue
        if i.type_only and i.module in TYPE_ONLY_EXEMPT:
            continue
        mine, theirs = wing(i.module), wing(i.target)
        if mine != theirs and CONTROLLER_RANKS[theirs] >= CONTROLLER_RANKS[mine]:
            wrong.append(i.where())
    assert wrong == []


def test_the_guest_side_imports_only_the_stdlib() -> None:
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = module_name(path)
        if part(module) not in STDLIB_ONLY:
            continue
        for target, line, _ in imports_of(path):
            top = target.split(".")[0]
            if top == "remotecli":
                ok = part(resolve(target)) in {part(module), "remotecli", *LAYERS[part(module)]}
            else:
                ok = top in sys.stdlib_module_names or top == "__future__"
            if not ok:
                wrong.append(f"{module}:{line} imports {target}")
    assert wrong == []


def test_the_checker_sees_a_wrong_import() -> None:
    """The rules above are not vacuous: the resolver and the layer table catch a known case."""
    assert resolve("remotecli.controller.fleet.manager.VmManager") == (
        "remotecli.controller.fleet.manager"
    )
    assert part("remotecli.web.routes") not in LAYERS["controller"]
    assert CONTROLLER_RANKS["api"] > CONTROLLER_RANKS["auth"] > CONTROLLER_RANKS["db"]
    assert "remotecli.agent.logins" not in WIRE and "web" not in SPEAKS_TO_THE_AGENT
