#!/usr/bin/env bash
# Runs the same node_exporter-like workload (default 10,000 series, 2 hours
# at 15 s) into one promraft node and into Debian's Prometheus with its
# remote-write receiver, in the same run, then times the same PromQL queries
# on both. Prints the figures recorded in docs/benchmarks.md.
#
# Usage: scripts/bench-vs-prometheus.sh [series] [duration] [concurrency]
# Needs: a release build (cargo build --release) and /usr/bin/prometheus.
set -euo pipefail
series=${1:-10000}
duration=${2:-2h}
conc=${3:-4}
root=$(cd "$(dirname "$0")/.." && pwd)
bin="$root/target/release/promraft"
[ -x "$bin" ] || { echo "build first: cargo build --release" >&2; exit 1; }
command -v prometheus >/dev/null || { echo "prometheus not installed (apt-get install prometheus)" >&2; exit 1; }

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
pr_port=$(free_port); pr_raft=$(free_port); prom_port=$(free_port)

cat > "$work/promraft.yaml" <<YAML
storage:
  checkpoint_interval: 5s
YAML
"$bin" serve --node-id 1 --data-dir "$work/promraft" --http-addr "127.0.0.1:$pr_port" \
  --raft-addr "127.0.0.1:$pr_raft" --config "$work/promraft.yaml" --log-level warn 2>"$work/promraft.log" &
pids+=($!); pr_pid=$!
cat > "$work/prometheus.yml" <<YAML
global:
  scrape_interval: 15s
YAML
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/prometheus" \
  --web.listen-address="127.0.0.1:$prom_port" --web.enable-remote-write-receiver \
  --log.level=warn 2>"$work/prometheus.log" &
pids+=($!); prom_pid=$!

wait_ready() { for _ in $(seq 1 300); do curl -sf "$1/-/ready" >/dev/null && return 0; sleep 0.1; done; echo "$1 not ready" >&2; return 1; }
wait_ready "http://127.0.0.1:$pr_port"; wait_ready "http://127.0.0.1:$prom_port"

dur_s=$(python3 -c "import re,sys; s='$duration'; m={'s':1,'m':60,'h':3600,'d':86400}; print(sum(int(n)*m[u] for n,u in re.findall(r'(\d+)([smhd])', s)))")
now_ms=$(date +%s%3N)
start_ms=$(( (now_ms - dur_s*1000) / 15000 * 15000 ))
end_s=$(python3 -c "print(($start_ms + $dur_s*1000)/1000)")

rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

echo "== remote write: $series series, $duration at 15s, concurrency $conc"
echo "-- promraft"
"$bin" bench write --url "http://127.0.0.1:$pr_port/api/v1/write" --series "$series" --interval 15s \
  --duration "$duration" --concurrency "$conc" --start "$start_ms" | tee "$work/w1"
echo "-- prometheus"
"$bin" bench write --url "http://127.0.0.1:$prom_port/api/v1/write" --series "$series" --interval 15s \
  --duration "$duration" --concurrency "$conc" --start "$start_ms" | tee "$work/w2"

queries=(
  'sum(rate(node_cpu_seconds_total[5m]))'
  'sum by (instance) (rate(node_cpu_seconds_total[5m]))'
  'histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket[5m])))'
  'topk(10, node_cpu_seconds_total)'
)
range_q='sum by (instance) (rate(node_cpu_seconds_total[5m]))'
qargs=()
for q in "${queries[@]}"; do qargs+=(--query "$q"); done
echo "== queries at t=$end_s (median of 20 runs after 2 warm-ups; range: 2h at 15s)"
"$bin" bench query --url "http://127.0.0.1:$pr_port" "${qargs[@]}" --range-query "$range_q" --time "$end_s" > "$work/q1"
"$bin" bench query --url "http://127.0.0.1:$prom_port" "${qargs[@]}" --range-query "$range_q" --time "$end_s" > "$work/q2"
python3 - "$work/q1" "$work/q2" <<'PY'
import sys
def load(p):
    out = {}
    for line in open(p):
        parts = line.rstrip("\n").split("\t")
        out[parts[1]] = float(parts[2].split("=")[1])
    return out
a, b = load(sys.argv[1]), load(sys.argv[2])
print(f"{'query':<95} {'promraft ms':>12} {'prometheus ms':>14} {'ratio':>7}")
for q in a:
    print(f"{q:<95} {a[q]:>12.2f} {b[q]:>14.2f} {a[q]/b[q]:>7.2f}")
PY

sleep 6  # one checkpoint interval, so the head is checkpointed and the log purged
samples=$(python3 -c "print($series * $dur_s // 15)")
pr_disk=$(du -sb "$work/promraft" | cut -f1)
pr_tsdb=$(du -sb "$work/promraft/tsdb" | cut -f1)
pr_log=$(du -sb "$work/promraft/log" | cut -f1)
prom_disk=$(du -sb "$work/prometheus" | cut -f1)
pr_content=$(curl -s "http://127.0.0.1:$pr_port/metrics" | awk '/^promraft_head_memory_bytes/ {print $2}')
echo "== resources after the run ($samples samples)"
echo "promraft:   rss $(rss_kb $pr_pid) KiB ($(( $(rss_kb $pr_pid) * 1024 / series )) B/series), data dir $pr_disk B ($(python3 -c "print(round($pr_disk/$samples,3))") B/sample): tsdb $pr_tsdb B ($(python3 -c "print(round($pr_tsdb/$samples,3))") B/sample), raft log $pr_log B; head heap $pr_content B"
echo "prometheus: rss $(rss_kb $prom_pid) KiB ($(( $(rss_kb $prom_pid) * 1024 / series )) B/series), data dir $prom_disk B ($(python3 -c "print(round($prom_disk/$samples,3))") B/sample, WAL + head chunks, not yet compacted)"
