#!/usr/bin/env bash
# Builds the runtime base image promraft-base:bookworm WITHOUT pulling anything:
# a minimal Debian bookworm root filesystem made by debootstrap from the Debian
# mirror apt is already configured with, then `docker import`ed. The Dockerfile's
# runtime stage names this tag through its BASE_IMAGE build argument, so the
# same Dockerfile serves machines that cannot reach a container registry.
#
# Usage: deploy/docker/build-base.sh [tag]      (default promraft-base:bookworm)
# Needs root (debootstrap chroots) and the `debootstrap` package.
# An existing image with the tag is reused: debootstrap takes minutes.
set -euo pipefail

TAG="${1:-promraft-base:bookworm}"
SUITE=bookworm

if docker image inspect "$TAG" >/dev/null 2>&1; then
  echo "build-base: $TAG already present, reusing it"
  exit 0
fi

command -v debootstrap >/dev/null 2>&1 || {
  echo "build-base: debootstrap is missing (apt-get install -y debootstrap)" >&2
  exit 1
}

# The mirror apt already uses (deb822 sources first, then one-line sources);
# deb.debian.org otherwise. Only http(s) mirrors are usable by debootstrap.
mirror=""
if [ -r /etc/apt/sources.list.d/debian.sources ]; then
  mirror=$(awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i !~ /security/) { print $i; exit } }' \
    /etc/apt/sources.list.d/debian.sources)
fi
if [ -z "$mirror" ] && [ -r /etc/apt/sources.list ]; then
  mirror=$(awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { print $i; exit } }' \
    /etc/apt/sources.list)
fi
mirror="${mirror:-http://deb.debian.org/debian}"
mirror="${PROMRAFT_DEBIAN_MIRROR:-$mirror}"

root=$(mktemp -d /tmp/promraft-rootfs.XXXXXX)
# The root filesystem is only a staging area: always removed, even on failure.
trap 'rm -rf "$root"' EXIT

echo "build-base: debootstrap $SUITE from $mirror (minbase; takes a few minutes)"
debootstrap --variant=minbase "$SUITE" "$root" "$mirror" >"$root.log" 2>&1 || {
  tail -n 30 "$root.log" >&2
  rm -f "$root.log"
  exit 1
}
rm -f "$root.log"

# Keep the image small: package caches and lists are of no use at run time.
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
  "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/*

tar --numeric-owner -C "$root" -c . |
  docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/bash"]' \
    - "$TAG" >/dev/null
echo "build-base: imported $TAG"
