#!/usr/bin/env bash
# kdumper's main job, on a fresh Debian 12 machine (root): crash a real Debian kernel in QEMU,
# let its capture kernel save /proc/vmcore, then read, triage and convert that dump with kdumper.
#   bash scripts/demo.sh [KERNEL] [TRIGGER]      (defaults: 6.12 null; kernels 6.1, 6.12;
#                                                 triggers sysrq null bug warn softlockup panic)
set -euo pipefail
cd "$(dirname "$0")/.."
kernel=${1:-6.12}
trigger=${2:-null}
out=${KDUMPER_DEMO_OUT:-demo-out}

bash scripts/vm-deps.sh
python3 -m pip install -q -e . >/dev/null

echo "== crashing Debian $kernel ($trigger) in QEMU; the capture kernel saves /proc/vmcore"
art=$(python3 -m vmharness vmcore --kernel "$kernel" --scenario busy --trigger "$trigger" --mem 1G)
vmcore=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["elf"])' <<<"$art")
mkdir -p -m 0700 "$out"

echo; echo "== kdumper info $vmcore"
kdumper info "$vmcore"

echo; echo "== kdumper dmesg (last lines)"
kdumper dmesg "$vmcore" | tail -n 25

echo; echo "== kdumper report: what crashed, where, and what to run next"
kdumper report "$vmcore" --html "$out/report.html"
kdumper report "$vmcore"
echo "(HTML version: $out/report.html)"

echo; echo "== kdumper convert → kdump-compressed (zstd), then info on the result"
kdumper convert "$vmcore" "$out/vmcore.kdump" --format kdump --codec zstd --force
kdumper info "$out/vmcore.kdump"
ls -l "$vmcore" "$out/vmcore.kdump"
