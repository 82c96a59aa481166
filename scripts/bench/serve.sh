#!/usr/bin/env bash
# Serving benchmark: the real `facepipe serve` on loopback under a load generator
# (bench/results/serve.json), and gallery search, exact scan against the two-stage search,
# at 1k/100k/1M rows on 1 and 2 threads (bench/results/gallery.json).
#
#   scripts/bench/serve.sh                # full run (release build; several minutes)
#   SECONDS_PER_RUN=5 scripts/bench/serve.sh
#   SKIP_BUILD=1 scripts/bench/serve.sh    # reuse the release binaries already built
#   ONLY=gallery scripts/bench/serve.sh    # only the gallery search part
#
# Identify: one 640x480 photo with one face (tests/fixtures/serving/gallery/Barack_Obama/
# Barack_Obama_0004.jpg, centre-cropped to 4:3 and scaled), server pinned with taskset to
# 1 core and to 2 cores (the load generator shares the machine; on a 2-core machine it runs
# on core 1 in the 1-core case and on both in the 2-core case), once with each detector
# (DETECTORS="ssd tiny" by default). Concurrency 1 gives the latency; concurrency 4 the
# throughput.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/env.sh

secs="${SECONDS_PER_RUN:-20}"
out=bench/results/serve.json
gallery_out=bench/results/gallery.json
only="${ONLY:-all}"
work="$(mktemp -d)"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p bench/results

echo "==> release build (facepipe, load_gen, gallery_bench)"
# SKIP_BUILD=1 reuses binaries already built (the shared target dir may be busy).
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  if [ "$only" = gallery ]; then
    cargo build --release -q -p facepipe-serving --example gallery_bench
  else
    cargo build --release -q -p facepipe -p facepipe-serving --bin facepipe --example load_gen --example gallery_bench
  fi
fi
bin="$CARGO_TARGET_DIR/release/facepipe"
ex="$CARGO_TARGET_DIR/release/examples"
ncpu="$(nproc)"

if [ "$only" != gallery ]; then
echo "==> deployment of the fixture gallery"
"$bin" -q deploy --no-serve --model pretrained --gallery tests/fixtures/serving/gallery --registry "$work/registry"

photo=tests/fixtures/serving/gallery/Barack_Obama/Barack_Obama_0004.jpg
runs=()
for detector in ${DETECTORS:-ssd tiny}; do
for cores in 1 2; do
  if [ "$cores" -gt "$ncpu" ]; then echo "skip $cores cores: only $ncpu here"; continue; fi
  cpus="0"; [ "$cores" = 2 ] && cpus="0,1"
  client_cpus="$cpus"; [ "$cores" = 1 ] && [ "$ncpu" -ge 2 ] && client_cpus="1"
  port=$((18080 + cores))
  echo "==> $detector detector, server on $cores core(s) (cpus $cpus), port $port"
  OMP_NUM_THREADS="$cores" RAYON_NUM_THREADS="$cores" taskset -c "$cpus" \
    "$bin" -q serve --registry "$work/registry" --listen "127.0.0.1:$port" --poll-interval 0 \
    --detector "$detector" \
    > "$work/server-$cores.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 1 300); do
    curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
    sleep 0.2
  done
  curl -sf "http://127.0.0.1:$port/readyz" >/dev/null || { cat "$work/server-$cores.log"; exit 1; }
  for conc in 1 4; do
    res="$(taskset -c "$client_cpus" "$ex/load_gen" "http://127.0.0.1:$port" "$photo" \
      --resize 640x480 --concurrency "$conc" --seconds "$secs")"
    echo "   concurrency $conc: $res"
    runs+=("{\"detector\": \"$detector\", \"server_cores\": $cores, \"result\": $res}")
  done
  kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=""
done
done

fi

echo "==> gallery search (1k, 100k, 1M x 128): exact scan vs two-stage, 1 and 2 threads"
g1="$(RAYON_NUM_THREADS=1 taskset -c 0 "$ex/gallery_bench" | tail -1)"
g2="$(RAYON_NUM_THREADS=2 "$ex/gallery_bench" | tail -1)"
python3 - "$gallery_out" "$g1" "$g2" <<'PY'
import json, sys, platform, datetime, os
out, g1, g2 = sys.argv[1:]
doc = {
    "benchmark": "gallery",
    "what": "top-5 search, 128-d synthetic embeddings, one per person; exact f32 scan vs "
            "two-stage (int8 scan + exact rerank), per-query median and p95 in ms, same run",
    "command": "ONLY=gallery scripts/bench/serve.sh",
    "when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
    "one_thread": json.loads(g1),
    "two_threads": json.loads(g2),
}
rows = {r["rows"]: r for r in doc["two_threads"]["gallery_search"]}
if 100000 in rows:
    doc["memory_per_100k_people_mib"] = rows[100000]["mib_per_100k_people"]
json.dump(doc, open(out, "w"), indent=2)
print(json.dumps(doc, indent=2))
PY
echo "wrote $gallery_out"
[ "$only" = gallery ] && exit 0

python3 - "$out" "${runs[@]}" <<'PY'
import json, sys, platform, datetime, os
out, *runs = sys.argv[1:]
doc = {
    "benchmark": "serve",
    "when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
    "identify": [json.loads(r) for r in runs],
    "gallery_search": "see bench/results/gallery.json",
}
json.dump(doc, open(out, "w"), indent=2)
print(json.dumps(doc, indent=2))
PY
echo "wrote $out"
