#!/usr/bin/env bash
# Overload benchmark (bench/results/load.json): the real `facepipe serve` on loopback with
# 2 inference slots and 2 queue places, under 4x more concurrent heavy requests than it
# admits (solid 6000x6000 PNGs: 36 megapixels to decode each), beside baselines in the
# same run:
#   admitted  - the same heavy load at concurrency = slots (nothing to shed)
#   overload  - 16 concurrent heavy clients against 2 slots + 2 queue places
#   unbounded - the same 16 clients against a server whose limits are set so high that
#               it admits everything (the behaviour before admission control)
#   small     - 32 concurrent clients sending a 640x480 one-face photo to 2 slots
# For each: admitted req/s, p50/p99 latency of admitted requests, 503 share, and the
# server's peak RSS (VmHWM). Shed clients wait 100 ms before retrying.
#
#   scripts/bench/load.sh                       # full run (release build; a few minutes)
#   SECONDS_PER_RUN=5 scripts/bench/load.sh     # shorter runs
#   SKIP_BUILD=1 scripts/bench/load.sh          # reuse the release binaries already built
#   PROFILE=debug SECONDS_PER_RUN=3 scripts/bench/load.sh   # check the script (no figures)
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/env.sh

secs="${SECONDS_PER_RUN:-20}"
out=bench/results/load.json
work="$(mktemp -d)"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p bench/results

profile="${PROFILE:-release}"
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  echo "==> $profile build (facepipe, load_gen)"
  if [ "$profile" = release ]; then
    cargo build --release -q --workspace --all-features --bin facepipe --example load_gen
  else
    cargo build -q --workspace --all-features --bin facepipe --example load_gen
  fi
fi
bin="$CARGO_TARGET_DIR/$profile/facepipe"
gen="$CARGO_TARGET_DIR/$profile/examples/load_gen"

echo "==> deployment of the fixture gallery"
"$bin" -q deploy --no-serve --model pretrained --gallery tests/fixtures/serving/gallery --registry "$work/registry"
photo=tests/fixtures/serving/gallery/Barack_Obama/Barack_Obama_0004.jpg

# start_server NAME FLAGS...: serve on a free port, wait until ready; sets $url.
start_server() {
  local name="$1"; shift
  "$bin" -q serve --registry "$work/registry" --listen 127.0.0.1:0 --poll-interval 0 "$@" \
    > "$work/$name.out" 2> "$work/$name.err" &
  server_pid=$!
  url=""
  for _ in $(seq 1 600); do
    url="$(sed -n 's/.*API at \(http:\/\/[0-9.:]*\).*/\1/p' "$work/$name.out" | head -1)"
    [ -n "$url" ] && curl -sf "$url/readyz" >/dev/null 2>&1 && break
    sleep 0.2
  done
  [ -n "$url" ] || { cat "$work/$name.err"; exit 1; }
}

stop_server() {
  kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=""
}

peak_rss_mib() {
  awk '/^VmHWM:/ { printf "%d", $2 / 1024 }' "/proc/$server_pid/status"
}

runs=()
# run NAME CONCURRENCY LOAD_GEN_ARGS -- SERVER_FLAGS
run() {
  local name="$1" conc="$2"; shift 2
  local gen_args=()
  while [ "$1" != "--" ]; do gen_args+=("$1"); shift; done
  shift
  echo "==> $name: concurrency $conc, server $*"
  start_server "$name" "$@"
  local res
  res="$("$gen" "$url" "${gen_args[@]}" --concurrency "$conc" --seconds "$secs")"
  local rss; rss="$(peak_rss_mib)"
  echo "   $res (peak RSS $rss MiB)"
  runs+=("{\"name\": \"$name\", \"server_flags\": \"$*\", \"peak_rss_mib\": $rss, \"result\": $res}")
  stop_server
}

bounded=(--max-inflight 2 --max-queue 2 --queue-timeout 10 --timeout 60)
unbounded=(--max-inflight 64 --max-queue 4096 --memory-budget-mb 1000000 --queue-timeout 600 --timeout 600)
heavy=(unused --solid-png 6000)
run admitted 2 "${heavy[@]}" -- "${bounded[@]}"
run overload 16 "${heavy[@]}" -- "${bounded[@]}"
run unbounded 16 "${heavy[@]}" -- "${unbounded[@]}"
run small 32 "$photo" --resize 640x480 -- "${bounded[@]}"

python3 - "$out" "$secs" "${runs[@]}" <<'PY'
import json, sys, platform, datetime, os
out, secs, *runs = sys.argv[1:]
doc = {
    "benchmark": "load",
    "what": "facepipe serve under overload: admitted req/s, p50/p99 ms of admitted "
            "requests, 503 share and the server's peak RSS; heavy = solid 6000x6000 PNG",
    "command": "scripts/bench/load.sh",
    "seconds_per_run": float(secs),
    "profile": os.environ.get("PROFILE", "release"),
    "when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
    "runs": [],
}
for r in runs:
    r = json.loads(r)
    res = r["result"]
    doc["runs"].append({
        "name": r["name"],
        "server_flags": r["server_flags"],
        "concurrency": res["concurrency"],
        "admitted_req_per_s": res["req_per_s"],
        "admitted_p50_ms": res["p50_ms"],
        "admitted_p99_ms": res["p99_ms"],
        "shed_503_share": res["shed_share"],
        "other_errors": res["errors"],
        "peak_rss_mib": r["peak_rss_mib"],
        "load_gen": res,
    })
json.dump(doc, open(out, "w"), indent=2)
print(json.dumps(doc, indent=2))
PY
echo "wrote $out"
