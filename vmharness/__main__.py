"""Command line: ``python -m vmharness vmcore|vmcores|kernels|kernel|rootfs|cache|clean``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from .cache import cache_root, dir_size
from .errors import HarnessError
from .kernels import cached_kernels, get_kernel, get_vmlinux
from .rootfs import CRASHES, TARGETS
from .vmcore import SCENARIOS, TRIGGERS, cached_vmcores, clean_cache, get_vmcore


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m vmharness", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("vmcore", help="crash a kernel in QEMU (cached) and print artifact paths")
    p.add_argument("--kernel", default="6.1", help="6.1, 6.12, 5.10 or a linux-image package")
    p.add_argument("--scenario", default="busy", choices=SCENARIOS)
    p.add_argument("--trigger", default="sysrq", choices=sorted(TRIGGERS))
    p.add_argument("--mem", default="1G", help="guest memory, e.g. 1G, 2G, 1536M")
    p.add_argument("--dbg", action="store_true", help="also fetch the -dbg vmlinux (~300 MB)")
    p.add_argument("--makedumpfile", choices=["1.7.2", "1.7.6"], default=None)
    p.add_argument("--zstd", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--crashkernel", default="256M")
    p.add_argument("--accel", choices=["auto", "tcg", "kvm"], default="auto")
    p.add_argument("--rebuild", action="store_true", help="ignore a cached result")

    sub.add_parser("vmcores", help="list vmcores in the cache")
    sub.add_parser("kernels", help="list kernels in the cache")
    k = sub.add_parser("kernel", help="download a kernel and print its files")
    k.add_argument("name", nargs="?", default="6.1")
    k.add_argument("--dbg", action="store_true", help="also fetch the -dbg vmlinux")
    r = sub.add_parser("rootfs", help="a real Debian guest with kdumper (debootstrap, systemd)")
    rsub = r.add_subparsers(dest="rootfs_command", required=True)
    rb = rsub.add_parser("build", help="build (or find in the cache) the guest tree for a kernel")
    rc = rsub.add_parser(
        "cycle", help="boot the guest, arm with kdumper.service, crash, capture, come back"
    )
    for q in (rb, rc):
        q.add_argument("--kernel", default="6.1", help="6.1, 6.12 or a linux-image package")
        q.add_argument("--suite", default="bookworm", help="the guest's Debian suite")
    rb.add_argument("--rebuild", action="store_true", help="rebuild the kernel layer")
    rc.add_argument("--target", choices=TARGETS, default="local")
    rc.add_argument("--config", help="kdumper.toml for the guest (default: one for --target)")
    rc.add_argument("--crash", choices=CRASHES, default="sysrq", help="none: boot and power off")
    rc.add_argument("--mem", default="1G")
    rc.add_argument("--crashkernel", default="256M")
    rc.add_argument("--accel", choices=["auto", "tcg", "kvm"], default="auto")
    rc.add_argument("--timeout", type=float, default=900.0)
    rc.add_argument("--append", default="", help="more first-kernel command line parameters")
    rc.add_argument("--workdir", help="default: <cache>/rootfs-runs/<release>-<target>-<crash>")
    rc.add_argument("--keep-disks", action="store_true", help="keep the root and dump images")
    rsub.add_parser("list", help="list the guest trees in the cache")

    sub.add_parser("cache", help="print the cache location and size")
    sub.add_parser(
        "clean", help="remove stale vmcores, initramfs images and guests; failure logs; runs"
    )

    args = parser.parse_args(argv)
    try:
        if args.command == "vmcore":
            art = get_vmcore(
                kernel=args.kernel,
                scenario=args.scenario,
                trigger=args.trigger,
                mem=args.mem,
                dbg=args.dbg,
                makedumpfile=args.makedumpfile,
                zstd=args.zstd,
                crashkernel=args.crashkernel,
                accel=args.accel,
                rebuild=args.rebuild,
            )
            data = art.to_json()
            data.pop("info")
            print(json.dumps(data, indent=2))
        elif args.command == "vmcores":
            print(json.dumps(cached_vmcores(), indent=2))
        elif args.command == "clean":
            from .rootfs import clean_rootfs

            removed = clean_cache() + clean_rootfs()
            print(json.dumps([str(p) for p in removed], indent=2))
        elif args.command == "kernels":
            print(json.dumps(cached_kernels(), indent=2))
        elif args.command == "kernel":
            kern = get_kernel(args.name)
            out = {
                "package": kern.package.name,
                "version": kern.package.version,
                "release": kern.release,
                "vmlinuz": str(kern.vmlinuz),
                "modules_dir": str(kern.modules_dir),
            }
            if args.dbg:
                out["vmlinux"] = str(get_vmlinux(kern))
            print(json.dumps(out, indent=2))
        elif args.command == "rootfs":
            return _rootfs(args)
        elif args.command == "cache":
            root = cache_root()
            print(json.dumps({"path": str(root), "bytes": dir_size(root)}, indent=2))
    except HarnessError as exc:
        print(f"vmharness: error: {exc}", file=sys.stderr)
        return 1
    return 0


def _rootfs(args: argparse.Namespace) -> int:
    """``rootfs build|cycle|list``; a cycle that did not complete exits 1 (JSON still printed)."""
    from pathlib import Path

    from .rootfs import boot_cycle, build_rootfs, cached_rootfs, rootfs_summary

    if args.rootfs_command == "list":
        print(json.dumps(cached_rootfs(), indent=2))
        return 0
    image = build_rootfs(args.kernel, args.suite, rebuild=getattr(args, "rebuild", False))
    if args.rootfs_command == "build":
        print(json.dumps(rootfs_summary(image), indent=2))
        return 0
    config = Path(args.config).read_text() if args.config else None
    result = boot_cycle(
        image,
        Path(args.workdir) if args.workdir else None,
        config=config,
        target=args.target,
        crash=args.crash,
        mem=args.mem,
        crashkernel=args.crashkernel,
        accel=args.accel,
        timeout=args.timeout,
        append=args.append,
        keep_disks=args.keep_disks,
    )
    data = result.to_json()
    data["rootfs"] = {"tree": str(image.tree), "timings": image.timings, "cached": image.cached}
    print(json.dumps(data, indent=2))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
