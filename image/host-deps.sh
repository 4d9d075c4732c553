#!/bin/bash
# Install the Debian packages that `make image` (build) or `make test` (test) needs on this machine.
# Idempotent and non-interactive: when everything is present it only checks, in about a second.
# Errors are one line with a hint; exit 3 means "the machine is not ready".
set -euo pipefail
what=${1:?usage: host-deps.sh build|test}
here=$(cd "$(dirname "$0")/.." && pwd)

die() { echo "host-deps: error: $1" >&2; [ -z "${2:-}" ] || echo "host-deps: hint: $2" >&2; exit 3; }

[ "$(id -u)" = 0 ] || die "installing build tools needs root" "run as root, e.g. sudo make $what"
command -v apt-get >/dev/null || die "no apt-get: Quantix builds on Debian 12 (bookworm) or 13 (trixie)" ""
. /etc/os-release
case "${VERSION_CODENAME:-}" in
    bookworm|trixie) ;;
    *) die "unsupported host '${PRETTY_NAME:-unknown}'" "build on Debian 12 (bookworm) or 13 (trixie)";;
esac

build_pkgs=(mkosi python3-pefile sbsigntool zstd xz-utils erofs-utils squashfs-tools dosfstools mtools e2fsprogs
            cryptsetup-bin debian-archive-keyring uidmap systemd-boot systemd-boot-efi kmod cpio fdisk
            xorriso qemu-system-x86 qemu-utils ovmf python3-venv python3-dev libvirt-dev pkg-config gcc)
pkgs=("${build_pkgs[@]}")
if [ "$what" = test ]; then
    mapfile -t extra < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' "$here/tests/host-packages.txt" | grep -v '^$')
    pkgs+=("${extra[@]}")
fi

missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null | grep -qx installed || missing+=("$p")
done
# mkosi must be 24.3 or newer (bookworm's own 14 is too old: it comes from bookworm-backports there).
if command -v mkosi >/dev/null; then
    mver=$(mkosi --version | grep -oE '[0-9]+(\.[0-9]+)?' | head -n1)
    [ "${mver%%.*}" -ge 24 ] || missing+=(mkosi)
fi
if [ ${#missing[@]} -eq 0 ]; then
    echo "host-deps ($what): all ${#pkgs[@]} packages present"
    exit 0
fi

echo "host-deps ($what): installing ${#missing[@]} packages: ${missing[*]}"
target=()
if [ "$VERSION_CODENAME" = bookworm ]; then
    src=/etc/apt/sources.list.d/quantix-bookworm-backports.sources
    if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
        printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' > "$src"
    fi
    target=(-t bookworm-backports)
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/tmp/quantix-apt-update.log 2>&1 || {
    tail -n 5 /tmp/quantix-apt-update.log >&2
    die "apt-get update failed: the Debian mirror is unreachable or refused" "check the network or proxy, then retry"
}
apt-get install -y -q --no-install-recommends "${target[@]}" "${missing[@]}" >/tmp/quantix-apt-install.log 2>&1 || {
    tail -n 15 /tmp/quantix-apt-install.log >&2
    die "apt-get install failed (full log: /tmp/quantix-apt-install.log)" "fix the error above, then retry"
}
echo "host-deps ($what): done"
