# Two commands do everything on a fresh Debian 12 machine, as root:
#   make demo   set up, then run the kit's main job on the built-in lab
#   make test   set up, then run the whole test suite
# Both are idempotent: `setup` installs only what is missing.

SHELL := /bin/bash
VENV ?= $(CURDIR)/.venv
PY := $(VENV)/bin/python
APT_PACKAGES := bpftool python3-bpfcc linux-headers-amd64 clang llvm libbpf-dev \
	iptables nftables conntrack iproute2 iputils-ping openssh-server openssh-client \
	bpftrace tcpdump curl python3-venv procps kmod chromium \
	qemu-system-x86 busybox-static
KREL := $(shell uname -r)

.PHONY: setup demo test lint bench clean-machine

setup: $(VENV)/.netlab-installed

$(VENV)/.netlab-installed: pyproject.toml Makefile
	@missing=""; for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "apt: installing$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	@# BCC compiles against kernel headers. When the running kernel has none, point it at
	@# the distribution's headers: safe for programs that use only UAPI contexts, and
	@# `netlab doctor` reports the mismatch.
	@if [ ! -e /lib/modules/$(KREL)/build ]; then \
		hdr=$$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -n1); \
		common=$$(ls -d /usr/src/linux-headers-*-common 2>/dev/null | sort -V | tail -n1); \
		if [ -n "$$hdr" ]; then \
			mkdir -p /lib/modules/$(KREL); \
			ln -sfn "$$hdr" /lib/modules/$(KREL)/build; \
			ln -sfn "$$common" /lib/modules/$(KREL)/source; \
			echo "headers: linked $$hdr for kernel $(KREL) (mismatched; see netlab doctor)"; \
		fi; \
	fi
	@# The guest node (`netlab lab guest`) boots Debian's kernel image whose headers are
	@# installed: the ABI that linux-headers-amd64 depends on, e.g. 6.1.0-56-amd64.
	@abi=$$(dpkg-query -W -f='$${Depends}' linux-headers-amd64 | sed -n 's/^linux-headers-\([^ ,]*\).*/\1/p'); \
	if [ -n "$$abi" ] && ! dpkg-query -W -f='$${Status}' linux-image-$$abi 2>/dev/null | grep -q 'ok installed'; then \
		echo "apt: installing linux-image-$$abi (the guest node's kernel)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-image-$$abi >/dev/null; \
	fi
	@test -x $(PY) || /usr/bin/python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@# Let the virtualenv import BCC from the OS package, and only BCC.
	@site=$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'); \
	mkdir -p "$$site/../netlab-os-bcc"; \
	ln -sfn /usr/lib/python3/dist-packages/bcc "$$site/../netlab-os-bcc/bcc"; \
	realpath "$$site/../netlab-os-bcc" > "$$site/netlab-os-bcc.pth"
	@# netlab on PATH: batch runs start one `netlab run` per node by name.
	ln -sfn $(VENV)/bin/netlab /usr/local/bin/netlab
	$(PY) -m ipykernel install --name python3 --sys-prefix >/dev/null
	@touch $@

demo: setup
	$(VENV)/bin/netlab demo

test: setup
	$(VENV)/bin/python -m pytest

lint: setup
	$(VENV)/bin/ruff check netlab tests notebooks bench
	$(VENV)/bin/ruff format --check netlab tests notebooks bench
	$(VENV)/bin/mypy

bench: setup
	$(VENV)/bin/python bench/run.py

clean-machine: setup
	$(VENV)/bin/netlab cleanup
