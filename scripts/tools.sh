#!/usr/bin/env bash
# Install the reference tools the tests compare kdumper against.
#
#   bash scripts/tools.sh apt            Debian packages (makedumpfile 1.7.2, crash, libkdumpfile, ...)
#   bash scripts/tools.sh makedumpfile   trixie's makedumpfile 1.7.6, unpacked (never installed) into
#                                        ${KDUMPER_CACHE:-~/.cache/kdumper}/tools/makedumpfile-1.7.6/
#   bash scripts/tools.sh all            both (the default)
#
# Idempotent: packages already installed and tools already unpacked are left alone, so a second run
# takes about a second. The system's APT configuration is never changed: the trixie download uses a
# throw-away sources list, list directory and cache passed with -o options.
set -euo pipefail

CACHE="${KDUMPER_CACHE:-$HOME/.cache/kdumper}"
TOOLS="$CACHE/tools"
export DEBIAN_FRONTEND=noninteractive

# Everything the tests use from Debian. makedumpfile 1.7.6 (trixie) links against liblzo2, libdw,
# libelf, libzstd, libbz2 and liblzma; bookworm's versions of those work.
APT_PACKAGES=(
    makedumpfile crash python3-libkdumpfile kexec-tools
    busybox-static qemu-system-x86 cpio zstd e2fsprogs xz-utils gzip
    gcc make libc6-dev binutils
    liblzo2-2 libdw1 libelf1 libzstd1 libbz2-1.0 liblzma5 zlib1g
    ca-certificates
    chromium systemd
)

log() { printf 'tools: %s\n' "$*" >&2; }

. "$(dirname "${BASH_SOURCE[0]}")/apt-lib.sh"

install_apt() {
    local missing
    mapfile -t missing < <(missing_packages "${APT_PACKAGES[@]}")
    if ((${#missing[@]} == 0)); then
        log "Debian packages: all ${#APT_PACKAGES[@]} already installed"
        return 0
    fi
    log "Debian packages to install: ${missing[*]}"
    if [[ ${KDUMPER_APT_UPDATED:-0} != 1 ]]; then
        apt-get update -qq
        export KDUMPER_APT_UPDATED=1
    fi
    apt-get install -y -qq --no-install-recommends -o Dpkg::Use-Pty=0 "${missing[@]}" >/dev/null
    mapfile -t missing < <(missing_packages "${APT_PACKAGES[@]}")
    if ((${#missing[@]})); then
        log "still missing after apt-get install: ${missing[*]}"
        return 1
    fi
}

# The URI of the system's own Debian archive (whatever mirror it is configured with).
debian_mirror() {
    local codename
    codename=$(. /etc/os-release && printf '%s' "${VERSION_CODENAME:-bookworm}")
    apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 'Created-By: Packages' 2>/dev/null |
        awk -v rel="$codename" '$2 == rel { print $1; exit }'
}

# fetch_deb SUITE PACKAGE DEST_DIR: apt-get download PACKAGE from SUITE into DEST_DIR.
fetch_deb() {
    local suite=$1 pkg=$2 dest=$3 mirror tmp
    mirror=$(debian_mirror)
    if [[ -z $mirror ]]; then
        log "cannot find the system's Debian mirror in the APT configuration"
        return 1
    fi
    tmp=$(mktemp -d)
    mkdir -p "$tmp/lists/partial" "$tmp/parts" "$tmp/prefs" "$tmp/cache/archives/partial"
    printf 'deb %s %s main\n' "$mirror" "$suite" >"$tmp/sources.list"
    : >"$tmp/status"
    local opts=(
        -o "Dir::Etc::SourceList=$tmp/sources.list"
        -o "Dir::Etc::SourceParts=$tmp/parts"
        -o "Dir::Etc::Preferences=$tmp/preferences"
        -o "Dir::Etc::PreferencesParts=$tmp/prefs"
        -o "Dir::State::Lists=$tmp/lists"
        -o "Dir::State::status=$tmp/status"
        -o "Dir::Cache=$tmp/cache"
        -o "Dir::Cache::pkgcache="
        -o "Dir::Cache::srcpkgcache="
        -o "APT::Sandbox::User=root"
        -o "Acquire::Languages=none"
    )
    local rc=0
    apt-get "${opts[@]}" -qq update && (cd "$dest" && apt-get "${opts[@]}" -qq download "$pkg") || rc=$?
    rm -rf "$tmp"
    return $rc
}

install_makedumpfile_176() {
    local want=1.7.6 dir="$TOOLS/makedumpfile-1.7.6" bin
    for bin in "$dir/usr/sbin/makedumpfile" "$dir/usr/bin/makedumpfile"; do
        if [[ -x $bin ]] && "$bin" -v 2>&1 | grep -q "version $want"; then
            log "makedumpfile $want: cached at $bin"
            return 0
        fi
    done
    mkdir -p "$TOOLS"
    local work
    work=$(mktemp -d "$TOOLS/.makedumpfile-$want.XXXXXX")
    fetch_deb trixie makedumpfile "$work"
    local deb
    deb=$(find "$work" -maxdepth 1 -name "makedumpfile_*${want}*_amd64.deb" | head -n1)
    if [[ -z $deb ]]; then
        log "trixie has no makedumpfile $want any more: $(ls "$work")"
        rm -rf "$work"
        return 1
    fi
    dpkg-deb -x "$deb" "$work/root"
    bin=$(find "$work/root" -name makedumpfile -type f -perm -u+x | head -n1)
    if ldd "$bin" | grep -q 'not found'; then
        log "makedumpfile $want lacks libraries on this system:"
        ldd "$bin" | grep 'not found' >&2
        rm -rf "$work"
        return 1
    fi
    "$bin" -v 2>&1 | grep -q "version $want" || {
        log "unpacked makedumpfile does not report version $want"
        rm -rf "$work"
        return 1
    }
    rm -rf "$dir"
    mv "$work/root" "$dir"
    rm -rf "$work"
    log "makedumpfile $want: unpacked into $dir"
}

case "${1:-all}" in
apt) install_apt ;;
makedumpfile) install_makedumpfile_176 ;;
all)
    install_apt
    install_makedumpfile_176
    ;;
*)
    echo "usage: $0 [apt|makedumpfile|all]" >&2
    exit 2
    ;;
esac
