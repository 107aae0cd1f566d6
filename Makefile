# Two entry points for a fresh Debian/Ubuntu machine (run as root, e.g. with sudo):
#   make run    set up if needed, then run the main experiment
#   make test   set up if needed, then run the whole test suite
VENV    := .venv
PYTHON  := $(VENV)/bin/python
SYSPY   := /usr/bin/python3
APT_PACKAGES := mininet iperf3 iputils-ping nftables tshark tcpdump bridge-utils ethtool \
                iproute2 procps radvd python3-venv python3-pip make

.PHONY: install system-packages venv sshd run test unit bench clean-results clean-net

install: system-packages venv

system-packages:
	@scripts/install-system-packages $(APT_PACKAGES)

venv: $(VENV)/.installed

$(VENV)/.installed: setup.py
	@test -x $(SYSPY) || { echo "error: $(SYSPY) is missing; run 'make system-packages' first" >&2; exit 1; }
	$(SYSPY) -m venv --system-site-packages $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -e '.[test]'
	@touch $@

# OpenSSH's server for the tests' second "server" on this machine (docs/scaling.md); unpacked, not installed.
sshd: $(VENV)/opt/openssh-server/usr/sbin/sshd

$(VENV)/opt/openssh-server/usr/sbin/sshd: | $(VENV)/.installed
	@scripts/install-sshd $(VENV)/opt/openssh-server

run: install
	$(PYTHON) experiments/handover.py

test: install sshd
	$(PYTHON) -m pytest

unit: venv
	$(PYTHON) -m pytest tests/unit

# What a crashed lab (kill -9) left: its processes, namespaces, bridges and run directories; nothing else.
clean-net: venv
	$(PYTHON) -m topologies.runs

clean-results:
	find results -mindepth 1 -not -name README.md -not -name .gitkeep -delete
