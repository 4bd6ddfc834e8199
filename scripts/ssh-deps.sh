#!/usr/bin/env bash
# Install what the ssh target tests (tests/sshd.py, tests/test_ssh_target.py,
# tests/test_propagate.py) need on a Debian 12 machine, as root. Idempotent: when everything is
# present it only checks (well under a second).
#
#   openssh-client   ssh, ssh-keygen, ssh-keyscan: kdumper's ssh target calls the system binaries
#   openssh-server   /usr/sbin/sshd: the tests start their own server on 127.0.0.1
#
# The package's own sshd service is NOT wanted on a test machine: when this script installs the
# server it stops and disables ssh.service again, unless it was already running before (the tests
# start a private sshd with their own config and never touch the system one).
set -euo pipefail

PACKAGES=(openssh-client openssh-server)

. "$(dirname "${BASH_SOURCE[0]}")/apt-lib.sh"
mapfile -t missing < <(missing_packages "${PACKAGES[@]}")

if [ "${#missing[@]}" -gt 0 ]; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "ssh-deps: need root to install: ${missing[*]}" >&2
		exit 1
	fi
	was_active=0
	if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet ssh 2>/dev/null; then
		was_active=1
	fi
	echo "ssh-deps: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	# no service start from the maintainer scripts (containers have no init; CI does not want one)
	policy=/usr/sbin/policy-rc.d
	created_policy=0
	if [ ! -e "$policy" ]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy"
		chmod 0755 "$policy"
		created_policy=1
	fi
	trap 'if [ "$created_policy" = 1 ]; then rm -f "$policy"; fi' EXIT
	apt-get update -q
	apt-get install -y -q --no-install-recommends "${missing[@]}"
	if [ "$was_active" = 0 ] && command -v systemctl >/dev/null 2>&1; then
		systemctl disable --now ssh.service ssh.socket >/dev/null 2>&1 || true
	fi
fi

for tool in /usr/bin/ssh /usr/bin/ssh-keygen /usr/bin/ssh-keyscan /usr/sbin/sshd; do
	if [ ! -x "$tool" ]; then
		echo "ssh-deps: $tool is missing after the install" >&2
		exit 1
	fi
done
# sshd refuses to start without its privilege-separation directory
[ -d /run/sshd ] || { [ "$(id -u)" -eq 0 ] && install -d -m 0755 /run/sshd; } || true

echo "ssh-deps: ok"
