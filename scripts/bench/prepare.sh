#!/usr/bin/env bash
# `facepipe prepare` benchmark (release build), written to bench/results/prepare.json:
#   1. 1 and 2 local workers → images/s, speed-up, scaling efficiency, for warm workers (the
#      default) and, as the baseline in the same run, a fresh process per task
#      (--process-per-task, the earlier design)
#   2. task-size sweep at 2 warm local workers (justifies the default --task-size)
#   3. S3 (SeaweedFS) + Lambda emulator (cargo lambda watch) at 2 workers vs local wall time
#   4. peak resident memory per worker (each worker reports its own VmHWM)
# Every configuration runs REPEATS times on a fresh output, interleaved; medians are reported.
# The machine may be shared: the load average before and after is recorded, and so is the
# speed-up computed from measured per-task busy time (task seconds / wall), which is less
# sensitive to other load than the wall-time ratio.
#   scripts/bench/prepare.sh            # people/ + ORL s1..s10 (170 photos)
#   REPEATS=5 BENCH_INPUT=/data/lfw scripts/bench/prepare.sh
#   SWEEP="" SKIP_S3=1 scripts/bench/prepare.sh   # local scaling only
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/env.sh
ROOT="$PWD"
DATA="${FACEPIPE_SAMPLE_DATA:-$ROOT/assets/sample}"
REPEATS="${REPEATS:-3}"
SWEEP_REPEATS="${SWEEP_REPEATS:-2}"
SWEEP="${SWEEP:-4 8 16 32}"
WORK="$(mktemp -d /tmp/facepipe-bench-prepare.XXXXXX)"
RUNS="$WORK/runs.jsonl"
: > "$RUNS"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  sleep 1
  for pid in "${PIDS[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "== release build"
cargo build --release -p facepipe
cargo build --release -p facepipe-pipeline --features lambda --bin facepipe-lambda-worker
# After the build, so it is the load of whatever else runs on the machine.
LOAD_BEFORE="$(cat /proc/loadavg)"
echo "== load average before the timed runs: $LOAD_BEFORE"
BIN="$CARGO_TARGET_DIR/release/facepipe"

if [ -n "${BENCH_INPUT:-}" ]; then
  INPUT="$BENCH_INPUT"
else
  INPUT="$WORK/input"
  mkdir -p "$INPUT"
  cp -r "$DATA/people/." "$INPUT/"
  for i in $(seq 1 10); do cp -r "$DATA/orl/s$i" "$INPUT/orl_s$i"; done
fi
IMAGES=$(find "$INPUT" -mindepth 2 -maxdepth 2 -type f | wc -l)
echo "== input: $INPUT ($IMAGES photos), $REPEATS repeats, $(nproc) cores"

# run LABEL WORKERS TASK_SIZE OUTPUT [extra args...]: one timed job, its report appended to RUNS.
run() {
  local label="$1" workers="$2" k="$3" out="$4"; shift 4
  local src="${RUN_INPUT:-$INPUT}"
  case "$out" in s3://*) ;; *) rm -rf "$out" ;; esac
  local t0 t1
  t0=$(date +%s.%N)
  "$BIN" -q prepare "$src" "$out" --workers "$workers" --task-size "$k" --json "$@" > "$WORK/report.json"
  t1=$(date +%s.%N)
  "$PYTHON" - "$label" "$workers" "$k" "$t0" "$t1" "$WORK/report.json" >> "$RUNS" <<'PY'
import json, sys
label, workers, k, t0, t1, path = sys.argv[1:]
r = json.load(open(path))
r.update(label=label, workers=int(workers), task_size=int(k), process_wall_s=float(t1) - float(t0))
print(json.dumps(r))
PY
  tail -n1 "$RUNS" | "$PYTHON" -c '
import json, sys
r = json.loads(sys.stdin.read())
print("  %-20s workers=%d K=%-3d wall %7.2f s  %6.2f img/s  in-run speed-up %.2fx  task p50 %.2f s  peak %.0f MiB" % (
    r["label"], r["workers"], r["task_size"], r["wall_s"], r["throughput_img_s"],
    r["speedup_vs_one_worker"], r["task_p50_s"], r.get("worker_peak_rss_mib") or 0))'
}

echo "== local workers, local folders (warm workers vs a process per task)"
for rep in $(seq 1 "$REPEATS"); do
  run per_task_1_worker 1 16 "$WORK/out-p1" --process-per-task
  run local_1_worker 1 16 "$WORK/out-l1"
  run per_task_2_workers 2 16 "$WORK/out-p2" --process-per-task
  run local_2_workers 2 16 "$WORK/out-l2"
done

echo "== task-size sweep (2 local workers)"
for k in $SWEEP; do
  [ "$k" = 16 ] && continue   # measured above
  for rep in $(seq 1 "$SWEEP_REPEATS"); do run "sweep_k$k" 2 "$k" "$WORK/out-k$k"; done
done

if [ -z "${SKIP_S3:-}" ]; then
echo "== S3 (SeaweedFS) + Lambda emulator, 2 workers"
free_port() { "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
export AWS_ACCESS_KEY_ID=facepipe-bench AWS_SECRET_ACCESS_KEY=facepipe-bench-secret AWS_REGION=us-east-1
# filer.copy reaches the filer's gRPC at its HTTP port + 10000: pick a pair that is free.
FILERP=$("$PYTHON" -c '
import socket
for p in range(23100, 25000):
    try:
        for q in (p, p + 10000):
            s = socket.socket(); s.bind(("127.0.0.1", q)); s.close()
        print(p); break
    except OSError:
        pass')
S3P=$(free_port)
WEED_ARGS=(-dir="$WORK/weed" -ip=127.0.0.1 -ip.bind=127.0.0.1 -webdav=false -bucket=bench
  -s3.port="$S3P" -filer.port="$FILERP")
for f in master.port master.port.grpc volume.port volume.port.grpc s3.port.grpc admin.port \
         admin.port.grpc debug.port s3.debug.port metricsPort s3.metricsPort s3.port.iceberg s3.port.lance; do
  WEED_ARGS+=("-$f=$(free_port)")
done
mkdir -p "$WORK/weed"
setsid weed mini "${WEED_ARGS[@]}" > "$WORK/weed.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 120); do
  curl -s -o /dev/null "http://127.0.0.1:$S3P" && curl -s -o /dev/null "http://127.0.0.1:$FILERP" && break
  sleep 0.5
done
sleep 2
# Upload the input through the filer (SeaweedFS serves /buckets/<b>/… as S3 objects).
weed filer.copy "$INPUT"/* "http://127.0.0.1:$FILERP/buckets/bench/input/" > "$WORK/copy.log" 2>&1 \
  || { echo "filer.copy failed:"; tail "$WORK/copy.log"; exit 1; }
LP=$(free_port)
# One thread per worker, as the local executor gives its children.
( cd pipeline && RAYON_NUM_THREADS=1 MATMUL_NUM_THREADS=1 RUST_LOG=warn exec setsid cargo lambda watch --release \
    --invoke-address 127.0.0.1 --invoke-port "$LP" --concurrency 2 \
    --features lambda --bin facepipe-lambda-worker --ignore-changes > "$WORK/lambda.log" 2>&1 ) &
PIDS+=($!)
for _ in $(seq 1 240); do curl -s -o /dev/null "http://127.0.0.1:$LP" && break; sleep 0.5; done
S3=(--s3-endpoint "http://127.0.0.1:$S3P")
LAMBDA=(--executor lambda --lambda-endpoint "http://127.0.0.1:$LP")
# Warm up: start both function instances and upload the weights once (not timed).
RUN_INPUT=s3://bench/input run warmup_lambda 2 100 s3://bench/warmup "${S3[@]}" "${LAMBDA[@]}" --models-location s3://bench/models
for rep in $(seq 1 "$REPEATS"); do
  RUN_INPUT=s3://bench/input run s3_local_2_workers 2 16 "s3://bench/out-s3l-$rep" "${S3[@]}"
  RUN_INPUT=s3://bench/input run s3_lambda_2_workers 2 16 "s3://bench/out-s3lambda-$rep" "${S3[@]}" "${LAMBDA[@]}" --models-location s3://bench/models
done
fi
LOAD_AFTER="$(cat /proc/loadavg)"
echo "== load average after: $LOAD_AFTER"

mkdir -p bench/results
"$PYTHON" - "$RUNS" "$IMAGES" "$(nproc)" "$REPEATS" "$LOAD_BEFORE" "$LOAD_AFTER" > bench/results/prepare.json <<'PY'
import json, statistics, sys, time, platform
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
images, cores, repeats = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
load = {"before": sys.argv[5], "after": sys.argv[6]}
by = {}
for r in runs:
    if r["label"].startswith("warmup"):
        continue
    by.setdefault(r["label"], []).append(r)
def med(label, key):
    return statistics.median(r[key] for r in by[label])
summary = {}
for label, rs in by.items():
    summary[label] = {
        "workers": rs[0]["workers"], "task_size": rs[0]["task_size"], "runs": len(rs),
        "wall_s_median": med(label, "wall_s"),
        "throughput_img_s_median": med(label, "throughput_img_s"),
        "task_p50_s_median": med(label, "task_p50_s"),
        "task_p95_s_median": med(label, "task_p95_s"),
        "in_run_speedup_median": med(label, "speedup_vs_one_worker"),
        "engine_load_s_median": med(label, "engine_load_mean_s"),
        "worker_peak_rss_mib_max": max((r.get("worker_peak_rss_mib") or 0) for r in rs),
    }
def wall(label):
    return summary[label]["wall_s_median"]
w1, w2 = wall("local_1_worker"), wall("local_2_workers")
p1, p2 = wall("per_task_1_worker"), wall("per_task_2_workers")
speedup = w1 / w2
sweep = {str(s["task_size"]): s["wall_s_median"] for k, s in summary.items() if k.startswith("sweep_") or k == "local_2_workers"}
ratios = {
    "speedup_2_vs_1_local_workers": speedup,
    "scaling_efficiency_2_workers": speedup / 2,
    "busy_time_speedup_2_workers": summary["local_2_workers"]["in_run_speedup_median"],
    "busy_time_efficiency_2_workers": summary["local_2_workers"]["in_run_speedup_median"] / 2,
    "images_per_s_per_worker_1": images / w1,
    "per_task_baseline_speedup_2_vs_1": p1 / p2,
    "per_task_baseline_scaling_efficiency_2_workers": p1 / p2 / 2,
    "per_task_baseline_busy_time_speedup_2_workers": summary["per_task_2_workers"]["in_run_speedup_median"],
    "warm_over_per_task_wall_1_worker": w1 / p1,
    "warm_over_per_task_wall_2_workers": w2 / p2,
}
if "s3_lambda_2_workers" in summary:
    ratios.update({
        "lambda_s3_wall_over_local_wall": wall("s3_lambda_2_workers") / w2,
        "local_s3_wall_over_local_wall": wall("s3_local_2_workers") / w2,
        "lambda_s3_wall_over_local_s3_wall": wall("s3_lambda_2_workers") / wall("s3_local_2_workers"),
    })
out = {
    "benchmark": "facepipe prepare", "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "machine": {"cores": cores, "platform": platform.platform(), "loadavg": load},
    "images": images, "repeats": repeats,
    "baseline": "per_task_* (a fresh worker process per task, same run) and local_1_worker",
    "summary": summary,
    "ratios": ratios,
    "task_size_sweep_wall_s_median": dict(sorted(sweep.items(), key=lambda kv: int(kv[0]))),
    "runs": runs,
}
json.dump(out, open(1, "w"), indent=2)
print(json.dumps({k: out[k] for k in ("images", "ratios", "task_size_sweep_wall_s_median")}, indent=2), file=sys.stderr)
print("%-20s %8s %8s %8s %8s %8s" % ("config", "wall_s", "img/s", "busy_x", "p50_s", "rss_MiB"), file=sys.stderr)
for label, s in summary.items():
    print("%-20s %8.2f %8.2f %8.2f %8.2f %8.0f" % (label, s["wall_s_median"], s["throughput_img_s_median"],
          s["in_run_speedup_median"], s["task_p50_s_median"], s["worker_peak_rss_mib_max"]), file=sys.stderr)
print("load average before: %s; after: %s" % (load["before"], load["after"]), file=sys.stderr)
PY
echo "== wrote bench/results/prepare.json"
