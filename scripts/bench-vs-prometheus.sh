#!/usr/bin/env bash
# Runs the same node_exporter-like workload (default 10,000 series, 2 hours
# at 15 s) into one promraft node and into Debian's Prometheus with its
# remote-write receiver, in the same run, then times the same PromQL queries
# on both. Prints the figures recorded in docs/benchmarks.md.
#
# Usage: scripts/bench-vs-prometheus.sh [series] [duration] [concurrency]
# PROMRAFT_NODES=3 runs a three-node promraft cluster on this machine
# instead of one node (every write is then acknowledged only once a
# majority has it on disk); its resources are the sum over the nodes.
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
nodes=${PROMRAFT_NODES:-1}
prom_port=$(free_port)
http_ports=(); raft_ports=(); initial=""
for i in $(seq 1 "$nodes"); do
  http_ports+=("$(free_port)"); raft_ports+=("$(free_port)")
  initial+="${initial:+,}$i=127.0.0.1:${raft_ports[$((i-1))]}"
done
pr_port=${http_ports[0]}

cat > "$work/promraft.yaml" <<YAML
storage:
  checkpoint_interval: 5s
YAML
pr_pids=()
for i in $(seq 1 "$nodes"); do
  cluster=()
  [ "$nodes" -gt 1 ] && cluster=(--initial-cluster "$initial")
  "$bin" serve --node-id "$i" --data-dir "$work/promraft$i" --http-addr "127.0.0.1:${http_ports[$((i-1))]}" \
    --raft-addr "127.0.0.1:${raft_ports[$((i-1))]}" "${cluster[@]}" --config "$work/promraft.yaml" \
    --log-level warn 2>"$work/promraft$i.log" &
  pids+=($!); pr_pids+=($!)
done
cat > "$work/prometheus.yml" <<YAML
global:
  scrape_interval: 15s
YAML
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/prometheus" \
  --web.listen-address="127.0.0.1:$prom_port" --web.enable-remote-write-receiver \
  --log.level=warn 2>"$work/prometheus.log" &
pids+=($!); prom_pid=$!

wait_ready() { for _ in $(seq 1 300); do curl -sf "$1/-/ready" >/dev/null && return 0; sleep 0.1; done; echo "$1 not ready" >&2; return 1; }
for p in "${http_ports[@]}"; do wait_ready "http://127.0.0.1:$p"; done
wait_ready "http://127.0.0.1:$prom_port"
if [ "$nodes" -gt 1 ]; then
  # Write to the leader, as a load balancer in front of /api/v1/write would
  # mostly do (a follower forwards, one hop more).
  for p in "${http_ports[@]}"; do
    if curl -s "http://127.0.0.1:$p/metrics" | grep -q '^promraft_raft_is_leader 1'; then pr_port=$p; fi
  done
fi

dur_s=$(python3 -c "import re,sys; s='$duration'; m={'s':1,'m':60,'h':3600,'d':86400}; print(sum(int(n)*m[u] for n,u in re.findall(r'(\d+)([smhd])', s)))")
now_ms=$(date +%s%3N)
start_ms=$(( (now_ms - dur_s*1000) / 15000 * 15000 ))
end_s=$(python3 -c "print(($start_ms + $dur_s*1000)/1000)")

rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

echo "== remote write: $series series, $duration at 15s, concurrency $conc"
echo "-- promraft ($nodes node(s), writes to 127.0.0.1:$pr_port)"
"$bin" bench write --url "http://127.0.0.1:$pr_port/api/v1/write" --series "$series" --interval 15s \
  --duration "$duration" --concurrency "$conc" --start "$start_ms" | tee "$work/w1"
if [ "$nodes" -gt 1 ]; then
  # Elections during the write phase explain any 503 above.
  for p in "${http_ports[@]}"; do
    curl -s "http://127.0.0.1:$p/metrics" | awk -v p="$p" '/^promraft_raft_term /{t=$2} /^promraft_raft_leader_changes_total /{c=$2} /^promraft_raft_leader_lease_expired /{e=$2} END {print "node :" p ": term " t ", leader changes seen " c ", lease expired now " e}'
  done
fi
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
pr_dirs=(); for i in $(seq 1 "$nodes"); do pr_dirs+=("$work/promraft$i"); done
sum_du() { du -sbc "$@" | tail -1 | cut -f1; }
pr_disk=$(sum_du "${pr_dirs[@]}")
pr_tsdb=$(sum_du "${pr_dirs[@]/%//tsdb}")
pr_log=$(sum_du "${pr_dirs[@]/%//log}")
prom_disk=$(du -sb "$work/prometheus" | cut -f1)
pr_content=$(curl -s "http://127.0.0.1:$pr_port/metrics" | awk '/^promraft_head_memory_bytes/ {print $2}')
echo "== resources after the run ($samples samples)"
pr_rss=0; for p in "${pr_pids[@]}"; do pr_rss=$(( pr_rss + $(rss_kb "$p") )); done
echo "promraft:   rss $pr_rss KiB ($(( pr_rss * 1024 / series )) B/series, $nodes node(s)), data dir $pr_disk B ($(python3 -c "print(round($pr_disk/$samples,3))") B/sample): tsdb $pr_tsdb B ($(python3 -c "print(round($pr_tsdb/$samples,3))") B/sample), raft log $pr_log B; head heap $pr_content B"
echo "prometheus: rss $(rss_kb $prom_pid) KiB ($(( $(rss_kb $prom_pid) * 1024 / series )) B/series), data dir $prom_disk B ($(python3 -c "print(round($prom_disk/$samples,3))") B/sample, WAL + head chunks, not yet compacted)"
