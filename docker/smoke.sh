#!/usr/bin/env bash
# Build bnncli's image and use it as its users would (README.md, "Docker"): PASS / FAIL lines,
# exit 1 if any check failed. Needs Docker and a reachable registry (python:3.11-slim, the pip
# index); not run in CI (the build alone takes minutes and pulls gigabytes).
#
#   bash docker/smoke.sh              # the CPU variant (torch from PyTorch's CPU index), tag bnncli:smoke
#   bash docker/smoke.sh --cuda       # the CUDA variant (torch from PyPI), tag bnncli:smoke-cuda
#   bash docker/smoke.sh --no-build   # check an image built before (TAG=...)
# Env: TAG, TORCH_INDEX (overrides the variant's index), SHM_CHECK=0 (skip the 1-3 minute
# shared-memory check), DOCKER_BUILD_ARGS (more arguments for docker build, e.g. --network host).
set -uo pipefail

cd "$(dirname "$0")/.." || exit 2
VARIANT=cpu BUILD=1
for a in "$@"; do
  case $a in
    --cuda) VARIANT=cuda ;;
    --no-build) BUILD=0 ;;
    *) echo "usage: bash docker/smoke.sh [--cuda] [--no-build]"; exit 2 ;;
  esac
done
if [ "$VARIANT" = cuda ]; then TAG=${TAG:-bnncli:smoke-cuda}; INDEX=${TORCH_INDEX:-https://pypi.org/simple}
else TAG=${TAG:-bnncli:smoke}; INDEX=${TORCH_INDEX:-}; fi
command -v docker >/dev/null || { echo "no docker on the PATH"; exit 2; }

FAILS=0
pass() { echo "PASS $*"; }
fail() { echo "FAIL $*"; FAILS=$((FAILS + 1)); }
note() { echo "NOTE $*"; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/bnncli-smoke.XXXXXX")
VOL=bnncli-smoke-numba-$$
cleanup() {
  docker rm -f "bnncli-smoke-shm-$$" >/dev/null 2>&1
  docker volume rm "$VOL" >/dev/null 2>&1
  # what uid 12345 wrote: removed as root, inside a container
  [ -d "$TMP/other" ] && docker run --rm --network none -v "$TMP:/t" --entrypoint rm "$TAG" -rf /t/other
  rm -rf "$TMP"
  echo "== $FAILS check(s) failed"
}
trap cleanup EXIT

if [ "$BUILD" = 1 ]; then
  args=()
  [ -n "$INDEX" ] && args+=(--build-arg "TORCH_INDEX=$INDEX")
  s=$SECONDS
  # shellcheck disable=SC2086
  if docker build ${DOCKER_BUILD_ARGS:-} "${args[@]}" -t "$TAG" . >"$TMP/build.log" 2>&1; then
    pass "docker build ($VARIANT) in $((SECONDS - s)) s"
  else
    tail -30 "$TMP/build.log"; fail "docker build ($VARIANT)"; exit 1
  fi
fi
note "image $TAG: $(( $(docker image inspect -f '{{.Size}}' "$TAG") / 1000000 )) MB"
R=(docker run --rm --network none)
note "in the image: $("${R[@]}" --entrypoint python "$TAG" -c 'import torch, torchvision, numba; print("torch", torch.__version__, "cuda", torch.version.cuda, "torchvision", torchvision.__version__, "numba", numba.__version__)' 2>&1 | tail -1)"
"${R[@]}" --entrypoint pip "$TAG" check >"$TMP/pip.txt" 2>&1 && pass "pip check" || { cat "$TMP/pip.txt"; fail "pip check"; }

for args in "--help" "models" "train --help" "predict --help"; do
  # shellcheck disable=SC2086
  if "${R[@]}" "$TAG" $args >"$TMP/help.txt" 2>&1; then
    # characters, not bytes (the tables' box drawing is 3 bytes a character): the image's Python counts
    w=$(docker run --rm -i --network none --entrypoint python "$TAG" -c \
        'import sys; print(max([len(l) for l in sys.stdin.read().splitlines()] or [0]))' <"$TMP/help.txt")
    [ "$w" -le 80 ] && pass "bnn $args (widest line $w)" || fail "bnn $args: widest line $w columns"
  else
    fail "bnn $args: $(tail -1 "$TMP/help.txt")"
  fi
done

ME="$(id -u):$(id -g)"
RUNS=$TMP/runs IMG=$TMP/img
mkdir -p "$RUNS" "$IMG"
V=(-v "$RUNS:/home/bnn/runs" -v "$IMG:/home/bnn/img:ro")
TRAIN=(train --arch binarydensenet_tiny --data builtin:shapes-mini --epochs 1)
LOG=
ok() {   # NAME ARGS...: docker run ARGS must succeed; its output (stdout and stderr) in $LOG
  local name=$1 s=$SECONDS; shift
  LOG=$TMP/log-$(printf %s "$name" | tr -c 'A-Za-z0-9_.-' _).txt
  if "${R[@]}" "$@" >"$LOG" 2>&1; then pass "$name ($((SECONDS - s)) s)"; return 0; fi
  fail "$name: $(tail -1 "$LOG")"; return 1
}

# Whose files: the owner of runs/ (no -u), or the user given with -u.
ok "train into runs/ (no -u)" "${V[@]}" "$TAG" "${TRAIN[@]}" -o runs/demo
owner=$(stat -c %u:%g "$RUNS/demo/best.pt" 2>/dev/null)
[ "$owner" = "$ME" ] && pass "runs/demo/best.pt belongs to the host user ($owner)" \
  || fail "runs/demo/best.pt belongs to ${owner:-nobody}, not to the host user $ME"
ok "train with -u $ME" -u "$ME" "${V[@]}" "$TAG" "${TRAIN[@]}" -o runs/mine
mkdir -p "$TMP/other" && chmod 777 "$TMP/other"
ok "train with -u 12345:12345 (a uid not in the image)" -u 12345:12345 -v "$TMP/other:/home/bnn/runs" "$TAG" \
  "${TRAIN[@]}" -o runs/demo \
  && { grep -qi "matplotlib" "$LOG" \
       && fail "a matplotlib warning for uid 12345" || pass "no matplotlib warning for uid 12345"; }
if "${R[@]}" -v "$RUNS:/home/bnn/runs:ro" "$TAG" "${TRAIN[@]}" -o runs/ro >"$TMP/ro_runs.txt" 2>&1; then
  fail "train into a read-only runs/ succeeded"
else
  [ "$(grep -c . "$TMP/ro_runs.txt")" = 1 ] && grep -q "mount it without :ro" "$TMP/ro_runs.txt" \
    && pass "a read-only runs/: one line naming the fix" || { cat "$TMP/ro_runs.txt"; fail "a read-only runs/"; }
fi

# eval as a CI step, export, pack, predict
"${R[@]}" "${V[@]}" "$TAG" eval runs/demo --data builtin:shapes-mini --json --min-top1 0 >"$TMP/eval.json" 2>"$TMP/eval.err" \
  && python3 -c 'import json, sys; print("top-1", json.load(open(sys.argv[1]))["top1"])' "$TMP/eval.json" >"$TMP/eval.txt" \
  && pass "eval --json --min-top1 0: JSON on stdout, $(cat "$TMP/eval.txt")" || fail "eval --json: $(tail -1 "$TMP/eval.err")"
"${R[@]}" "${V[@]}" "$TAG" eval runs/demo --data builtin:shapes-mini --min-top1 1.0 >/dev/null 2>&1
rc=$?; [ "$rc" = 1 ] && pass "eval --min-top1 1.0 fails the gate with exit 1" || fail "eval gate: exit $rc, not 1"
ok "export" "${V[@]}" "$TAG" export runs/demo -o runs/demo.onnx
ok "pack" "${V[@]}" "$TAG" pack runs/demo -o runs/demo.bnn
"${R[@]}" -u "$ME" -v "$IMG:/out" --entrypoint python "$TAG" -c '
from PIL import Image, ImageDraw
im = Image.new("RGB", (32, 32), (30, 60, 90)); ImageDraw.Draw(im).ellipse((6, 6, 26, 26), fill=(230, 200, 40))
im.save("/out/circle.png")' || fail "drawing a test image"
for m in runs/demo.bnn runs/demo.onnx runs/demo; do ok "predict --model $m" "${V[@]}" "$TAG" predict --model "$m" img/circle.png; done
ok "predict a folder, newest run" "${V[@]}" "$TAG" predict img
ok "predict --json" "${V[@]}" "$TAG" predict --model runs/demo.bnn img/circle.png --json

# The compiled kernels: warm in a fresh container; compiled per run (and said so) where nothing is writable.
ok "predict --backend numba in a fresh container" "${V[@]}" "$TAG" predict --model runs/demo.bnn --backend numba img/circle.png \
  && { grep -q "compiling\|cannot write its cache" "$LOG" \
       && fail "a fresh container compiles the kernels" || pass "a fresh container loads the kernels compiled at build time"; }
ok "predict in a --read-only container" --read-only "${V[@]}" "$TAG" predict --model runs/demo.bnn --backend numba img/circle.png \
  && { grep -q "numba cannot write its cache" "$LOG" \
       && pass "--read-only: one line says the kernels compile in every run" || fail "--read-only: no line about compiling"; }
ok "predict, --read-only, a volume on the cache" --read-only -v "$VOL:/opt/bnncli/numba-cache" "${V[@]}" "$TAG" \
  predict --model runs/demo.bnn --backend numba img/circle.png \
  && { grep -q "compiling\|cannot write its cache" "$LOG" \
       && fail "the cache volume does not start warm" || pass "a new volume on the cache starts warm"; }

# Shared memory: docker's 64 MB cannot hold 2 workers' batches of 128 images at 224 px.
if [ "${SHM_CHECK:-1}" = 1 ]; then
  c=bnncli-smoke-shm-$$
  docker run -d --name "$c" --network none -v "$RUNS:/home/bnn/runs" "$TAG" train --arch binarydensenet_tiny \
    --data builtin:shapes --image-size 224 --batch-size 128 --workers 2 --epochs 1 -o runs/shm >/dev/null
  verdict=
  for _ in $(seq 60); do
    sleep 5  # progress lines come every few steps
    docker logs "$c" 2>&1 | grep -qE 'step [0-9]+/' && { verdict=step; break; }
    [ "$(docker inspect -f '{{.State.Running}}' "$c")" = true ] || { verdict=exited; break; }
  done
  docker logs "$c" >"$TMP/shm.txt" 2>&1
  docker rm -f "$c" >/dev/null
  grep -q -- "--shm-size" "$TMP/shm.txt" && pass "train says what to pass for shared memory before training" \
    || fail "train with 64 MB of /dev/shm: no line about --shm-size"
  case $verdict in
    step) pass "train with 64 MB of /dev/shm reached its first step" ;;
    exited) grep -q '^done: ' "$TMP/shm.txt" && pass "train with 64 MB of /dev/shm finished" \
              || fail "train with 64 MB of /dev/shm exited: $(tail -1 "$TMP/shm.txt")" ;;
    *) fail "train with 64 MB of /dev/shm: no step in 300 s" ;;
  esac
fi
[ "$FAILS" = 0 ]
