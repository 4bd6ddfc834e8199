#!/usr/bin/env bash
# Install what the VM harness (vmharness/, tests/vm/) needs on a Debian 12 machine, as root.
# Idempotent: when everything is present it only checks (well under a second).
#
#   qemu-system-x86      the guests (TCG; KVM only where a probe shows it works)
#   e2fsprogs            mkfs.ext4 -d and debugfs: dump disks without mounting
#   gcc make libc6-dev   the static workload program and the crash test module
#   kexec-tools makedumpfile
#                        their shared libraries are copied into the guest initramfs (the
#                        binaries themselves come from Debian packages unpacked in the cache)
#   debian-archive-keyring
#                        verifies the bookworm/trixie/bullseye lists the harness downloads
#   zstd cpio xz-utils   inspecting initramfs images and compressed modules by hand
#   debootstrap          the real Debian guest of vmharness.rootfs (systemd, Python, kdumper);
#                        it runs in a private mount namespace (unshare, util-linux)
#   drgn (PyPI)          the tests open the vmcores with it
set -euo pipefail

PACKAGES=(
	qemu-system-x86
	e2fsprogs
	gcc
	make
	libc6-dev
	kexec-tools
	makedumpfile
	debian-archive-keyring
	zstd
	cpio
	xz-utils
	util-linux
	dpkg
	apt
	debootstrap
)

. "$(dirname "${BASH_SOURCE[0]}")/apt-lib.sh"
mapfile -t missing < <(missing_packages "${PACKAGES[@]}")

if [ "${#missing[@]}" -gt 0 ]; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "vm-deps: need root to install: ${missing[*]}" >&2
		exit 1
	fi
	echo "vm-deps: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	# kexec-tools asks whether it should handle reboots: no
	echo "kexec-tools kexec-tools/load_kexec boolean false" | debconf-set-selections
	apt-get update -q
	apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import drgn' 2>/dev/null; then
	echo "vm-deps: installing drgn for $PYTHON"
	"$PYTHON" -m pip install -q 'drgn>=0.0.30'
fi

echo "vm-deps: ok"
