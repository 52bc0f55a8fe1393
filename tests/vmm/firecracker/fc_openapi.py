"""The request bodies of Firecracker v1.12.1's API, written down from its OpenAPI description.

Source: ``src/firecracker/swagger/firecracker.yaml`` at tag v1.12.1 (the
version ``vmm/fcbin.py`` pins), read by hand: no package on PyPI or npm
carries that file, and we commit no fetched copy. Each entry below is the
swagger definition of one request body, transcribed field by field (type,
required, enum, minimum/maximum); ``additionalProperties: False`` mirrors
Firecracker's serde ``deny_unknown_fields`` (the real binary answers 400 to
an unknown field, which test_firecracker.py also checks against the
binary itself). Only the definitions our client sends are transcribed.

``validate`` implements the subset of JSON Schema these use.
"""

from __future__ import annotations

from typing import Any

_STR: dict[str, Any] = {"type": "string"}
_BOOL: dict[str, Any] = {"type": "boolean"}
_TOKEN_BUCKET: dict[str, Any] = {
    "type": "object",
    "required": ["refill_time", "size"],
    "properties": {
        "one_time_burst": {"type": "integer", "minimum": 0},
        "refill_time": {"type": "integer", "minimum": 0},
        "size": {"type": "integer", "minimum": 0},
    },
}
_RATE_LIMITER: dict[str, Any] = {
    "type": "object",
    "properties": {"bandwidth": _TOKEN_BUCKET, "ops": _TOKEN_BUCKET},
}

DEFINITIONS: dict[str, dict[str, Any]] = {
    "MachineConfiguration": {
        "type": "object",
        "required": ["mem_size_mib", "vcpu_count"],
        "properties": {
            "cpu_template": {
                "type": "string",
                "enum": ["C3", "T2", "T2S", "T2CL", "T2A", "V1N1", "None"],
            },
            "smt": _BOOL,
            "mem_size_mib": {"type": "integer"},
            "track_dirty_pages": _BOOL,
            "vcpu_count": {"type": "integer", "minimum": 1, "maximum": 32},
            "huge_pages": {"type": "string", "enum": ["None", "2M"]},
        },
    },
    "BootSource": {
        "type": "object",
        "required": ["kernel_image_path"],
        "properties": {"boot_args": _STR, "initrd_path": _STR, "kernel_image_path": _STR},
    },
    "Drive": {
        "type": "object",
        "required": ["drive_id", "is_root_device"],
        "properties": {
            "drive_id": _STR,
            "partuuid": _STR,
            "is_root_device": _BOOL,
            "cache_type": {"type": "string", "enum": ["Unsafe", "Writeback"]},
            "is_read_only": _BOOL,
            "path_on_host": _STR,
            "rate_limiter": _RATE_LIMITER,
            "io_engine": {"type": "string", "enum": ["Sync", "Async"]},
            "socket": _STR,
        },
    },
    "Vsock": {
        "type": "object",
        "required": ["guest_cid", "uds_path"],
        "properties": {
            "guest_cid": {"type": "integer", "minimum": 3},
            "uds_path": _STR,
        },
    },
    "NetworkInterface": {
        "type": "object",
        "required": ["host_dev_name", "iface_id"],
        "properties": {
            "guest_mac": _STR,
            "host_dev_name": _STR,
            "iface_id": _STR,
            "rx_rate_limiter": _RATE_LIMITER,
            "tx_rate_limiter": _RATE_LIMITER,
        },
    },
    "Logger": {
        "type": "object",
        "properties": {
            "level": {
                "type": "string",
                "enum": ["Error", "Warning", "Info", "Debug", "Trace", "Off"],
            },
            "log_path": _STR,
            "show_level": _BOOL,
            "show_log_origin": _BOOL,
            "module": _STR,
        },
    },
    "InstanceActionInfo": {
        "type": "object",
        "required": ["action_type"],
        "properties": {
            "action_type": {
                "type": "string",
                "enum": ["FlushMetrics", "InstanceStart", "SendCtrlAltDel"],
            }
        },
    },
    "Vm": {
        "type": "object",
        "required": ["state"],
        "properties": {"state": {"type": "string", "enum": ["Paused", "Resumed"]}},
    },
    "SnapshotCreateParams": {
        "type": "object",
        "required": ["mem_file_path", "snapshot_path"],
        "properties": {
            "mem_file_path": _STR,
            "snapshot_path": _STR,
            "snapshot_type": {"type": "string", "enum": ["Full", "Diff"]},
        },
    },
    "SnapshotLoadParams": {
        "type": "object",
        "required": ["snapshot_path"],
        "properties": {
            "enable_diff_snapshots": _BOOL,
            "mem_file_path": _STR,
            "mem_backend": {
                "type": "object",
                "required": ["backend_type", "backend_path"],
                "properties": {
                    "backend_type": {"type": "string", "enum": ["File", "Uffd"]},
                    "backend_path": _STR,
                },
            },
            "snapshot_path": _STR,
            "resume_vm": _BOOL,
            "network_overrides": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["iface_id", "host_dev_name"],
                    "properties": {"iface_id": _STR, "host_dev_name": _STR},
                },
            },
        },
    },
}

#: (method, path pattern) -> the body's definition; ``{x}`` matches one path segment.
OPERATIONS: dict[tuple[str, str], str] = {
    ("PUT", "/machine-config"): "MachineConfiguration",
    ("PUT", "/boot-source"): "BootSource",
    ("PUT", "/drives/{drive_id}"): "Drive",
    ("PUT", "/vsock"): "Vsock",
    ("PUT", "/network-interfaces/{iface_id}"): "NetworkInterface",
    ("PUT", "/logger"): "Logger",
    ("PUT", "/actions"): "InstanceActionInfo",
    ("PATCH", "/vm"): "Vm",
    ("PUT", "/snapshot/create"): "SnapshotCreateParams",
    ("PUT", "/snapshot/load"): "SnapshotLoadParams",
}


def operation(method: str, path: str) -> str:
    """The body definition of ``method path``; KeyError for a request the API does not have."""
    parts = path.strip("/").split("/")
    for (m, pattern), name in OPERATIONS.items():
        want = pattern.strip("/").split("/")
        if (m, len(want)) == (method, len(parts)) and all(
            w == p or (w.startswith("{") and p) for w, p in zip(want, parts, strict=True)
        ):
            return name
    raise KeyError(f"{method} {path} is not an operation of the API description")


def validate(value: Any, schema: dict[str, Any], where: str = "body") -> list[str]:
    """Problems of ``value`` against ``schema`` (the subset of JSON Schema above)."""
    kind = schema.get("type")
    checks = {
        "object": lambda v: isinstance(v, dict),
        "array": lambda v: isinstance(v, list),
        "string": lambda v: isinstance(v, str),
        "boolean": lambda v: isinstance(v, bool),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    }
    if kind and not checks[kind](value):
        return [f"{where}: {value!r} is not a {kind}"]
    problems = []
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{where}: {value!r} is not one of {schema['enum']}")
    if "minimum" in schema and value < schema["minimum"]:
        problems.append(f"{where}: {value} < minimum {schema['minimum']}")
    if "maximum" in schema and value > schema["maximum"]:
        problems.append(f"{where}: {value} > maximum {schema['maximum']}")
    if kind == "object":
        props = schema.get("properties", {})
        problems += [
            f"{where}: missing {k!r}" for k in schema.get("required", ()) if k not in value
        ]
        for key, item in value.items():
            if key not in props:
                problems.append(f"{where}: unknown field {key!r}")
            else:
                problems += validate(item, props[key], f"{where}.{key}")
    if kind == "array":
        for n, item in enumerate(value):
            problems += validate(item, schema.get("items", {}), f"{where}[{n}]")
    return problems


def check_request(method: str, path: str, body: Any) -> list[str]:
    """Problems of one request we sent (GETs carry no body)."""
    if method == "GET":
        return [] if body is None else [f"GET {path} with a body"]
    name = operation(method, path)
    return [f"{method} {path} ({name}) {p}" for p in validate(body, DEFINITIONS[name])]
