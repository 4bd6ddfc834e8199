"""Which kernel and initrd to load, the capture command line, and ``crashkernel=`` in the
bootloader configuration.

The capture command line is the first kernel's (``/proc/cmdline``, or ``[load] cmdline``) with
the ``remove`` parameters dropped and the ``append`` ones added — kdumper's "rootfs" capture
boots the machine's own initrd and root filesystem with ``systemd.unit=kdumper-capture.service``
(as Debian's kdump-tools does), so ``root=`` and friends stay.

Bootloader changes go through ``grubby`` where it exists (Fedora/RHEL: every boot entry, as
``kdumpctl reset-crashkernel`` does), else through ``/etc/default/grub`` and ``update-grub`` (or
``grub-mkconfig``/``grub2-mkconfig``). Paths and the command runner are injectable.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from ..config import LoadConfig, default_append
from ..errors import ExitCode, KdumperError, UnsupportedError
from ..handoff import TEST_ID_PARAM, split_cmdline
from .crashkernel import CrashkernelError, parse_cmdline, parse_value
from .paths import HostPaths, read_text


class BootloaderError(KdumperError):
    """Writing the bootloader configuration or running its update command failed."""

    exit_code = ExitCode.IO


# ---------------------------------------------------------------------------------------------
# Kernel and initrd


def _boot_image(cmdline: str | None) -> str | None:
    for param in split_cmdline(cmdline or ""):
        if param.startswith("BOOT_IMAGE="):
            value = param.split("=", 1)[1].strip('"')
            return re.sub(r"^\([^)]*\)", "", value)  # GRUB's "(hd0,gpt2)/vmlinuz-..."
    return None


def kernel_candidates(release: str, paths: HostPaths, cmdline: str | None = None) -> list[str]:
    """Where the running kernel's image may be, most likely first."""
    out = [os.path.join(paths.boot_dir, f"vmlinuz-{release}")]
    image = _boot_image(cmdline)
    if image:
        name = os.path.basename(image)
        out.append(os.path.join(paths.boot_dir, name))
        if os.path.dirname(image) not in ("", "/", "/boot"):
            out.append(os.path.join(paths.boot_dir, image.lstrip("/")))
    out.append(os.path.join(paths.modules_dir, release, "vmlinuz"))  # Fedora, Arch
    out.append(os.path.join(paths.boot_dir, f"Image-{release}"))  # some arm64 distributions
    return list(dict.fromkeys(out))


def initrd_candidates(release: str, paths: HostPaths) -> list[str]:
    """Where the running kernel's initrd may be: Debian, Fedora, SUSE, Arch names."""
    b = paths.boot_dir
    return [
        os.path.join(b, f"initrd.img-{release}"),
        os.path.join(b, f"initramfs-{release}.img"),
        os.path.join(b, f"initrd-{release}"),
        os.path.join(b, f"initrd-{release}.img"),
    ]


def _first_file(candidates: Iterable[str]) -> str | None:
    for path in candidates:
        if os.path.isfile(path):
            return path
    return None


@dataclass(frozen=True)
class LoadPlan:
    """What ``kdumper load`` would load."""

    kernel: str | None  # None: not found
    initrd: str | None  # None: none (not found, or configured off)
    cmdline: str
    release: str
    kernel_candidates: tuple[str, ...] = ()
    initrd_wanted: bool = True  # an initrd is expected (not configured off)
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, object]:
        """JSON-ready."""
        return {
            "kernel": self.kernel,
            "initrd": self.initrd,
            "cmdline": self.cmdline,
            "release": self.release,
            "notes": list(self.notes),
        }


def plan_load(
    cfg: LoadConfig,
    paths: HostPaths,
    *,
    release: str,
    arch: str,
    test_id: str | None = None,
) -> LoadPlan:
    """The kernel, initrd and command line for the capture kernel."""
    proc = read_text(paths.proc_cmdline)
    notes = []
    if cfg.kernel:
        candidates = [cfg.kernel]
        kernel = cfg.kernel if os.path.isfile(cfg.kernel) else None
    else:
        candidates = kernel_candidates(release, paths, proc)
        kernel = _first_file(candidates)
    wanted = cfg.initrd != ""
    if cfg.initrd:
        initrd = cfg.initrd if os.path.isfile(cfg.initrd) else None
    elif wanted:
        initrd = _first_file(initrd_candidates(release, paths))
    else:
        initrd = None
    if cfg.cmdline is not None:
        base = cfg.cmdline
        notes.append("command line base from [load] cmdline")
    elif proc is not None:
        base = proc.strip()
    else:
        base = ""
        notes.append(
            f"{paths.proc_cmdline} is unreadable: the command line has only the appended parameters"
        )
    remove = [*cfg.remove, *cfg.remove_extra]
    append = [*(cfg.append if cfg.append is not None else default_append(arch)), *cfg.append_extra]
    if test_id:
        append.append(f"{TEST_ID_PARAM}={test_id}")
    return LoadPlan(
        kernel=kernel,
        initrd=initrd,
        cmdline=capture_cmdline(base, remove, append),
        release=release,
        kernel_candidates=tuple(candidates),
        initrd_wanted=wanted,
        notes=tuple(notes),
    )


def _name(param: str) -> str:
    return param.split("=", 1)[0]


def capture_cmdline(base: str, remove: Iterable[str], append: Iterable[str]) -> str:
    """``base`` minus the ``remove`` parameters, plus ``append``.

    A remove entry drops ``name`` and ``name=...``. An appended ``name=value`` replaces earlier
    ones of that name; an appended flag is not repeated. Parameters after ``--`` belong to init
    and stay last.
    """
    params = split_cmdline(base)
    init_args: list[str] = []
    if "--" in params:
        i = params.index("--")
        params, init_args = params[:i], params[i:]
    drop = set(remove)
    kept = [p for p in params if _name(p) not in drop]
    for param in append:
        if "=" in param:
            kept = [p for p in kept if _name(p) != _name(param)]
            kept.append(param)
        elif param not in kept:
            kept.append(param)
    return " ".join(kept + init_args)


# ---------------------------------------------------------------------------------------------
# crashkernel= in the bootloader configuration

Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]
Which = Callable[[str], str | None]


def _run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=False)


@dataclass(frozen=True)
class BootloaderChange:
    """A change of ``crashkernel=`` in the bootloader configuration."""

    tool: str  # "grub" (/etc/default/grub) or "grubby"
    file: str | None
    variable: str | None
    before: str  # the old value of the variable (grub) or the running kernel's parameters
    after: str
    commands: tuple[tuple[str, ...], ...]
    warnings: tuple[str, ...] = ()
    new_text: str | None = field(default=None, repr=False)

    @property
    def changed(self) -> bool:
        """Whether anything changes."""
        return self.before != self.after

    def diff(self) -> list[str]:
        """``- old`` / ``+ new`` lines."""
        if self.tool == "grub":
            return [f'- {self.variable}="{self.before}"', f'+ {self.variable}="{self.after}"']
        return [f"- {self.before or '(no crashkernel=)'}", f"+ {self.after or '(none)'}"]

    def to_dict(self) -> dict[str, object]:
        """JSON-ready."""
        return {
            "tool": self.tool,
            "file": self.file,
            "variable": self.variable,
            "before": self.before,
            "after": self.after,
            "changed": self.changed,
            "commands": [list(c) for c in self.commands],
            "warnings": list(self.warnings),
        }


def crashkernel_params(value: str) -> list[str]:
    """``"256M"`` or ``"1G,high 256M,low"`` → checked ``crashkernel=...`` parameters;
    ``none`` → none."""
    if value.strip() in ("none", ""):
        return []
    params = []
    for part in value.split():
        part = part.removeprefix("crashkernel=")
        parse_value(part)
        params.append(f"crashkernel={part}")
    args = parse_cmdline(params)
    if args.main is not None and args.high is not None:
        raise CrashkernelError("give either a plain size/ranges or ,high (+ ,low), not both", value)
    return params


_ASSIGN = re.compile(r"^(\s*(?:export\s+)?(GRUB_CMDLINE_LINUX(?:_DEFAULT)?)=)(.*)$")


def _shell_value(raw: str) -> tuple[str, str]:
    """A shell assignment's value → (text, quote char). Handles "..." '...' and bare words."""
    raw = raw.rstrip()
    comment = re.search(r"\s+#.*$", raw) if not raw.startswith(("'", '"')) else None
    if comment:
        raw = raw[: comment.start()]
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'":
        return raw[1:-1], raw[0]
    return raw, '"'


def _replace_params(value: str, new: list[str], *, add: bool) -> str:
    params = value.split()
    kept = [p for p in params if not p.startswith("crashkernel=")]
    if add:
        first = next((i for i, p in enumerate(params) if p.startswith("crashkernel=")), None)
        if first is None:
            kept += new
        else:
            pos = sum(1 for p in params[:first] if not p.startswith("crashkernel="))
            kept[pos:pos] = new
    return " ".join(kept)


def plan_grub(text: str, params: list[str]) -> tuple[str, str, str, str]:
    """Change ``crashkernel=`` in /etc/default/grub text → (new text, variable, before, after).

    Where a ``crashkernel=`` is already set (GRUB_CMDLINE_LINUX_DEFAULT or GRUB_CMDLINE_LINUX),
    it is replaced there and dropped from the other; otherwise it goes to
    GRUB_CMDLINE_LINUX_DEFAULT (normal boots only, as Debian's kdump-tools does). The last
    assignment of each variable is the one the shell keeps, so that is the one edited.
    """
    lines = text.splitlines(keepends=True)
    found: dict[str, tuple[int, str, str, str]] = {}  # var -> (line index, prefix, value, quote)
    for i, line in enumerate(lines):
        m = _ASSIGN.match(line.rstrip("\n"))
        if m:
            value, quote = _shell_value(m.group(3))
            found[m.group(2)] = (i, m.group(1), value, quote)
    holders = [
        v
        for v in ("GRUB_CMDLINE_LINUX_DEFAULT", "GRUB_CMDLINE_LINUX")
        if v in found and "crashkernel=" in found[v][2]
    ]
    target = holders[0] if holders else "GRUB_CMDLINE_LINUX_DEFAULT"
    before = after = ""
    for var, (i, prefix, value, quote) in found.items():
        if var != target and var not in holders:
            continue
        new_value = _replace_params(value, params, add=var == target)
        if var == target:
            before, after = value, new_value
        if quote == "'" and "'" in new_value:
            quote = '"'
        newline = "\n" if lines[i].endswith("\n") else ""
        lines[i] = f"{prefix}{quote}{new_value}{quote}{newline}"
    if target not in found:
        after = " ".join(params)
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        lines.append(f'{target}="{after}"\n')
    return "".join(lines), target, before, after


def _grub_d_warnings(paths: HostPaths) -> list[str]:
    out: list[str] = []
    try:
        names = sorted(os.listdir(paths.default_grub_d))
    except OSError:
        return out
    for name in names:
        if not name.endswith(".cfg"):
            continue
        full = os.path.join(paths.default_grub_d, name)
        text = read_text(full) or ""
        if "crashkernel=" in text:
            out.append(
                f"{full} also sets crashkernel= and is read after {paths.default_grub}; the "
                "kernel uses the last one, so remove it there (kdump-tools installs such a file)"
            )
    return out


def _grub_update_command(which: Which, paths: HostPaths) -> tuple[str, ...] | None:
    if which("update-grub"):
        return ("update-grub",)
    for tool, cfg in (("grub2-mkconfig", "grub2/grub.cfg"), ("grub-mkconfig", "grub/grub.cfg")):
        if which(tool):
            return (tool, "-o", os.path.join(paths.boot_dir, cfg))
    return None


def plan_crashkernel_change(
    value: str, paths: HostPaths, *, which: Which = shutil.which
) -> BootloaderChange:
    """What ``kdumper crashkernel --set VALUE`` would change (nothing is written)."""
    params = crashkernel_params(value)
    warnings: list[str] = []
    if which("grubby"):
        current = parse_cmdline(read_text(paths.proc_cmdline) or "")
        before = " ".join(f"crashkernel={v}" for v in current.all_values)
        cmds: list[tuple[str, ...]] = [
            ("grubby", "--update-kernel=ALL", "--remove-args=crashkernel")
        ]
        if params:
            cmds.append(("grubby", "--update-kernel=ALL", f"--args={' '.join(params)}"))
        return BootloaderChange("grubby", None, None, before, " ".join(params), tuple(cmds))
    text = read_text(paths.default_grub)
    if text is None:
        raise UnsupportedError(
            f"no bootloader configuration found (no grubby, no {paths.default_grub}); add "
            f"{' '.join(params) or 'the crashkernel= change'} to the kernel command line "
            "yourself (systemd-boot: /etc/kernel/cmdline; s390x: /etc/zipl.conf)"
        )
    new_text, var, before, after = plan_grub(text, params)
    warnings += _grub_d_warnings(paths)
    update = _grub_update_command(which, paths)
    if update is None:
        warnings.append("no update-grub or grub-mkconfig found: regenerate grub.cfg yourself")
    return BootloaderChange(
        "grub",
        paths.default_grub,
        var,
        before,
        after,
        (update,) if update else (),
        tuple(warnings),
        new_text,
    )


def _write_atomic(path: str, text: str) -> None:
    directory = os.path.dirname(path) or "."
    mode = os.stat(path).st_mode & 0o7777 if os.path.exists(path) else 0o644
    fd, tmp = tempfile.mkstemp(prefix=".kdumper-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def apply_crashkernel_change(change: BootloaderChange, *, run: Runner = _run) -> None:
    """Write the change and run the bootloader commands; raises on the first failure."""
    if change.tool == "grub" and change.file and change.new_text is not None and change.changed:
        try:
            _write_atomic(change.file, change.new_text)
        except OSError as e:
            raise BootloaderError(f"{change.file}: cannot write: {e.strerror}") from None
    if not change.changed:
        return
    for argv in change.commands:
        try:
            result = run(argv)
        except OSError as e:
            raise BootloaderError(f"{argv[0]}: cannot run: {e.strerror}") from None
        if result.returncode != 0:
            tail = (result.stderr or result.stdout or "").strip().splitlines()
            detail = f": {tail[-1]}" if tail else ""
            raise BootloaderError(
                f"{' '.join(argv)} failed with exit code {result.returncode}{detail}"
            )
