#!/usr/bin/env bash
# Builds the promraft image on a machine that can pull no image:
#   1. the base promraft-base:bookworm from Debian packages (build-base.sh,
#      reused when present);
#   2. the release binary with cargo (or the one named by PROMRAFT_BINARY);
#   3. deploy/Dockerfile's `prebuilt` stage on that base, from a small
#      staging context holding only the binary and the image's config file.
#
# Usage: deploy/docker/build-image.sh [tag]      (default promraft:latest,
# the image deploy/compose.yaml runs)
set -euo pipefail

repo="$(cd "$(dirname "$0")/../.." && pwd)"
TAG="${1:-promraft:latest}"
BASE_IMAGE="${PROMRAFT_BASE_IMAGE:-promraft-base:bookworm}"

"$repo/deploy/docker/build-base.sh" "$BASE_IMAGE"

bin="${PROMRAFT_BINARY:-}"
if [ -z "$bin" ]; then
  (cd "$repo" && cargo build --release --bin promraft)
  bin="$repo/target/release/promraft"
fi
[ -x "$bin" ] || { echo "build-image: $bin is not an executable" >&2; exit 1; }

ctx=$(mktemp -d /tmp/promraft-image.XXXXXX)
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/target/release" "$ctx/deploy/docker"
# Debug info is most of the release binary's size (profile.release has
# debug = 1); symbols stay, so backtraces still name functions.
if command -v strip >/dev/null 2>&1; then
  strip --strip-debug -o "$ctx/target/release/promraft" "$bin"
else
  cp "$bin" "$ctx/target/release/promraft"
fi
cp "$repo/deploy/docker/promraft.yaml" "$ctx/deploy/docker/promraft.yaml"

# DOCKER_BUILDKIT=0: the legacy builder needs no frontend image, and with
# --target it stops before the stages that name registry images.
DOCKER_BUILDKIT="${DOCKER_BUILDKIT:-0}" docker build \
  -f "$repo/deploy/Dockerfile" \
  --target prebuilt \
  --build-arg "BASE_IMAGE=$BASE_IMAGE" \
  -t "$TAG" \
  "$ctx"
echo "build-image: built $TAG on $BASE_IMAGE"
