#!/usr/bin/env bash
# kdumper's main job, on a fresh Debian 12 machine (root). In QEMU, a real Debian guest (debootstrap
# root filesystem with systemd, Python and kdumper installed from this working tree) boots with
# crashkernel=; kdumper.service arms it with kexec_file_load; the kernel is crashed; the capture
# kernel boots the same root filesystem with systemd.unit=kdumper-capture.service, which saves the
# kernel log and the filtered, compressed dump; the machine reboots and comes back. Then kdumper
# reads, triages and converts the dump it saved.
#   bash scripts/demo.sh [KERNEL] [TARGET]     KERNEL: 6.12 (default) or 6.1; TARGET: local or raw
set -euo pipefail
cd "$(dirname "$0")/.."
kernel=${1:-6.12}
target=${2:-local}
out=${KDUMPER_DEMO_OUT:-demo-out}

bash scripts/vm-deps.sh
python3 -m pip install -q -e . >/dev/null
mkdir -p -m 0700 "$out"

echo "== Debian $kernel guest in QEMU: boot, arm (kdumper.service), crash (sysrq), capture"
echo "   (kdumper-capture.service in the capture kernel), reboot, back — about 1-2 minutes"
python3 -m vmharness rootfs cycle --kernel "$kernel" --target "$target" >"$out/cycle.json"
python3 - "$out/cycle.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
t = r["timings"]
saved = t["crash_to_capture_kernel"] + t["capture_kernel_boot"] + t["capture"]
print(f"   armed: {r['armed']}   back after the crash: {r['back']}   problems: {r['problems'] or 'none'}")
print(f"   boot {t['boot']:.1f} s, arm {t['arm']:.1f} s; crash -> dump saved {saved:.1f} s, "
      f"crash -> machine back {saved + t['reboot'] + t['back']:.1f} s")
print("   saved on the guest's /var/crash:", ", ".join(r["dump_files"]))
PY
vmcore=$(python3 -c 'import json,sys,os; r=json.load(open(sys.argv[1])); print(os.path.join(r["dump_dir"], next(f for f in r["dump_files"] if f.endswith("/vmcore"))))' "$out/cycle.json")

echo; echo "== kdumper info $vmcore"
kdumper info "$vmcore"

echo; echo "== kdumper report: what crashed, where, and what to run next"
kdumper report "$vmcore" --html "$out/report.html"
kdumper report "$vmcore" --lines 15
echo "(HTML version: $out/report.html)"

echo; echo "== kdumper convert → ELF (what gdb-style tools read), then info on the result"
kdumper convert "$vmcore" "$out/vmcore.elf" --format elf --force
kdumper info "$out/vmcore.elf" | head -8
