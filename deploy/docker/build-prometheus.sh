#!/usr/bin/env bash
# Builds promraft-prometheus:local for deploy/compose.yaml's optional
# Prometheus without pulling anything: Debian's prometheus binary on the
# locally made base (see build-base.sh). Needs the Debian package
# `prometheus` on this machine (apt-get install prometheus).
#
# Usage: deploy/docker/build-prometheus.sh [tag]   (default promraft-prometheus:local)
# Then:  PROMETHEUS_IMAGE=promraft-prometheus:local docker compose \
#          -f deploy/compose.yaml --profile prometheus up -d
set -euo pipefail

repo="$(cd "$(dirname "$0")/../.." && pwd)"
TAG="${1:-promraft-prometheus:local}"
BASE_IMAGE="${PROMRAFT_BASE_IMAGE:-promraft-base:bookworm}"
bin="${PROMETHEUS_BINARY:-$(command -v prometheus || true)}"
[ -n "$bin" ] && [ -x "$bin" ] || {
  echo "build-prometheus: no prometheus binary (apt-get install prometheus)" >&2
  exit 1
}

"$repo/deploy/docker/build-base.sh" "$BASE_IMAGE"

ctx=$(mktemp -d /tmp/promraft-prometheus.XXXXXX)
trap 'rm -rf "$ctx"' EXIT
cp "$bin" "$ctx/prometheus"
DOCKER_BUILDKIT="${DOCKER_BUILDKIT:-0}" docker build \
  -f "$repo/deploy/docker/Dockerfile.prometheus" \
  --build-arg "BASE_IMAGE=$BASE_IMAGE" \
  -t "$TAG" "$ctx"
echo "build-prometheus: built $TAG on $BASE_IMAGE"
