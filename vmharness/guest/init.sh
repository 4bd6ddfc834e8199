#!/bin/busybox sh
# /init of the vmharness guest initramfs (busybox sh).
#
# First kernel: load the virtio modules, arm the capture kernel with kexec, run the workload of
# kdumper.scenario, print /proc counters between markers and crash with kdumper.trigger.
# Capture kernel (/proc/vmcore exists): save the kernel log, makedumpfile outputs and the raw
# /proc/vmcore to the ext4 dump disk /dev/vda, then power off.
#
# Lines starting with "KDUMPER:" are read by the host (vmharness.vmcore); keep them stable.

export PATH=/bin:/sbin
export LD_LIBRARY_PATH=/lib/x86_64-linux-gnu
/bin/busybox mkdir -p /proc /sys /dev /tmp /run /mnt
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s /bin
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/shm /dump /mnt/work
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null

say() { echo "KDUMPER: $*"; }

fail() {
	say "FAIL $*"
	sync
	poweroff -f
	sleep 100000
}

# param NAME DEFAULT: the value of kdumper.NAME= on the kernel command line
param() {
	for w in $(cat /proc/cmdline); do
		case "$w" in
		kdumper.$1=*)
			echo "${w#*=}"
			return
			;;
		esac
	done
	echo "$2"
}

uptime_s() { cut -d' ' -f1 /proc/uptime; }

load_modules() {
	for m in $(cat /lib/modules/kdumper/order); do
		insmod "/lib/modules/kdumper/$m.ko" || say "insmod $m failed"
	done
}

wait_dev() {
	i=0
	while [ ! -b "$1" ]; do
		i=$((i + 1))
		[ $i -gt 200 ] && return 1
		sleep 0.05
	done
}

# section NAME FILE: print FILE between markers the host cuts out of the serial log
section() {
	say "BEGIN $1"
	cat "$2"
	say "END $1"
}

mem_mb() { echo $(($(sed -n 's/^MemTotal: *\([0-9]*\) kB/\1/p' /proc/meminfo) / 1024)); }

workload_minimal() {
	mount -t tmpfs -o size=64m tmpfs /dev/shm
	kdload hog 8 random >/dev/null || fail "kdload hog"
}

workload_busy() {
	mb=$(mem_mb)
	mount -t tmpfs -o size=40% tmpfs /dev/shm
	# keep written file pages dirty until the crash
	echo 360000 >/proc/sys/vm/dirty_expire_centisecs
	echo 360000 >/proc/sys/vm/dirty_writeback_centisecs
	echo 80 >/proc/sys/vm/dirty_background_ratio
	echo 90 >/proc/sys/vm/dirty_ratio
	wait_dev /dev/vdb || fail "no work disk"
	mount -t ext4 /dev/vdb /mnt/work || fail "mount work disk"
	# page cache: a clean file (written, synced, read back) and a dirty one
	kdload fill /mnt/work/clean.bin $((mb * 8 / 100)) 1 || fail "fill clean"
	sync
	kdload read /mnt/work/clean.bin || fail "read clean"
	kdload fill /mnt/work/mapped.bin $((mb * 3 / 100)) 4 || fail "fill mapped"
	kdload map /mnt/work/mapped.bin || fail "map"
	kdload fill /mnt/work/dirty.bin $((mb * 6 / 100)) 2 || fail "fill dirty"
	# anonymous memory: incompressible, zero-filled and compressible
	kdload hog $((mb * 12 / 100)) random || fail "hog random"
	kdload hog $((mb * 5 / 100)) zero || fail "hog zero"
	kdload hog $((mb * 4 / 100)) repeat || fail "hog repeat"
	# shared memory: a tmpfs file and a SysV segment
	kdload fill /dev/shm/shm.bin $((mb * 8 / 100)) 3 || fail "fill shm"
	kdload shm $((mb * 3 / 100)) || fail "shm"
	# slab: inodes and dentries on tmpfs and ext4
	kdload files /dev/shm/many 20000 || fail "files shm"
	kdload files /mnt/work/many 5000 || fail "files ext4"
	# many processes
	i=0
	while [ $i -lt 64 ]; do
		sleep 100000 &
		i=$((i + 1))
	done
	say "processes $(ls -d /proc/[0-9]* | wc -l)"
}

crash() {
	case "$1" in
	sysrq)
		echo 1 >/proc/sys/kernel/sysrq
		echo c >/proc/sysrq-trigger
		;;
	null | bug | warn | softlockup | panic)
		echo "$1" >/proc/kdumper_crash
		;;
	*) fail "unknown trigger $1" ;;
	esac
	sleep 120
	fail "still alive after trigger $1"
}

first_kernel() {
	say "init-start $(uptime_s)"
	scenario=$(param scenario minimal)
	trigger=$(param trigger sysrq)
	mdf=$(param mdf 1.7.2)
	load_modules
	if [ "$(param mode run)" = probe ]; then
		say "PROBE-OK"
		poweroff -f
	fi
	if [ "$trigger" != sysrq ]; then
		insmod /lib/modules/kdumper/extra/kdumper_crash.ko || fail "insmod kdumper_crash"
	fi
	append="console=ttyS0 reset_devices nr_cpus=1 irqpoll nousb panic=5"
	append="$append kdumper.mode=capture kdumper.mdf=$mdf kdumper.zstd=$(param zstd 0)"
	if ! kexec -s -p /boot/vmlinuz --initrd=/boot/initrd.img --append="$append"; then
		say "kexec_file_load failed, trying kexec_load"
		kexec -p /boot/vmlinuz --initrd=/boot/initrd.img --append="$append" || fail "kexec -p"
	fi
	[ "$(cat /sys/kernel/kexec_crash_loaded)" = 1 ] || fail "capture kernel not loaded"
	say "capture-kernel-loaded $(uptime_s)"
	say "workload-start $scenario"
	"workload_$scenario"
	say "workload-done $(uptime_s)"
	# quiet console while the counters are printed so kernel messages do not interleave
	echo 1 >/proc/sys/kernel/printk
	section meminfo /proc/meminfo
	section vmstat /proc/vmstat
	section buddyinfo /proc/buddyinfo
	section zoneinfo /proc/zoneinfo
	section slabinfo /proc/slabinfo
	echo 8 >/proc/sys/kernel/printk
	# the marker goes to the kernel log too (so into the dump's dmesg); the pause lets the
	# serial port drain before the crash stops the machine
	echo "kdumper: crash trigger=$trigger scenario=$scenario" >/dev/kmsg
	say "crash $trigger $(uptime_s)"
	sleep 0.3
	crash "$trigger"
}

capture_kernel() {
	say "capture-start $(uptime_s)"
	load_modules
	wait_dev /dev/vda || fail "no dump disk"
	mount -t ext4 /dev/vda /dump || fail "mount dump disk"
	mdf=/sbin/makedumpfile-$(param mdf 1.7.2)
	$mdf -v >/dump/makedumpfile-version.txt 2>&1
	$mdf --dump-dmesg /proc/vmcore /dump/dmesg.txt >/dump/makedumpfile-dmesg.log 2>&1
	say "step dmesg rc=$? $(uptime_s)"
	$mdf -d 31 -c /proc/vmcore /dump/vmcore.d31c >/dump/makedumpfile-d31c.log 2>&1
	say "step d31c rc=$? $(uptime_s)"
	if [ "$(param zstd 0)" = 1 ]; then
		$mdf -d 31 -z /proc/vmcore /dump/vmcore.d31z >/dump/makedumpfile-d31z.log 2>&1
		say "step d31z rc=$? $(uptime_s)"
	fi
	dd if=/proc/vmcore of=/dump/vmcore.elf bs=1M 2>/dump/dd.log
	say "step elf rc=$? $(uptime_s)"
	cp /proc/cmdline /dump/capture-cmdline.txt
	sync
	umount /dump
	say "capture-done $(uptime_s)"
	sleep 0.2
	poweroff -f
	sleep 100000
}

if [ -e /proc/vmcore ] || [ "$(param mode run)" = capture ]; then
	capture_kernel
else
	first_kernel
fi
