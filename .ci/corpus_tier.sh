#!/usr/bin/env bash
# Corpus tier: a stratified sample of the shipped real-world corpus (python, make, cmake and
# npm tasks) must fail broken and pass fixed, in the local sandbox (bubblewrap) and, when the
# Docker daemon that .ci/docker_up.sh starts answers, in the Docker sandbox.
#
# Exit status: non-zero when any sampled task does not fail broken and pass fixed, when the
# sample cannot be fetched, or when the local sandbox's tools are missing. A Docker daemon
# that is not up skips the Docker half with a banner (non-zero only with
# JAXREPAIR_CORPUS_TIER_REQUIRE_DOCKER=1).
#
# Sources are fetched from PyPI, the npm registry and Debian on first use (the only step that
# needs the network); every build runs with no network. Settings (environment):
#   JAXREPAIR_CORPUS_TIER_SAMPLE   tasks in the sample (default 40: 10 per build system)
#   JAXREPAIR_CORPUS_TIER_SEED     the sample's seed (default 0)
#   JAXREPAIR_CORPUS_TIER_WORKERS  parallel builds (default 2)
#   JAXREPAIR_CORPUS_TIER_BACKENDS "local docker" (default), "local" or "docker"
#   JAXREPAIR_CORPUS_TIER_OUT      where the JSON reports go (default: a new temp folder)
#   JAXREPAIR_CORPUS_TIER_REQUIRE_DOCKER=1  fail when the Docker half cannot run
set -uo pipefail
cd "$(dirname "$0")/.."

SAMPLE="${JAXREPAIR_CORPUS_TIER_SAMPLE:-40}"
SEED="${JAXREPAIR_CORPUS_TIER_SEED:-0}"
WORKERS="${JAXREPAIR_CORPUS_TIER_WORKERS:-2}"
BACKENDS="${JAXREPAIR_CORPUS_TIER_BACKENDS:-local docker}"
OUT="${JAXREPAIR_CORPUS_TIER_OUT:-$(mktemp -d -t jaxrepair-corpus-tier.XXXXXX)}"
REQUIRE_DOCKER="${JAXREPAIR_CORPUS_TIER_REQUIRE_DOCKER:-0}"
mkdir -p "$OUT"
PY="${PYTHON:-python}"
SOURCES=(
  --tasks jaxrepair/data/corpus_pypi.jsonl
  --tasks jaxrepair/data/corpus_c.jsonl
  --tasks jaxrepair/data/corpus_npm.jsonl
)
T0=$(date +%s)
say() { echo "corpus-tier: $*"; }
banner() { echo "corpus-tier: ================================================================"; say "$@"; echo "corpus-tier: ================================================================"; }

# 1. The sample, fetched and materialised once (network); the validations below reuse it.
say "sample of $SAMPLE (seed $SEED) from the python, C (make, cmake) and npm manifests"
if ! "$PY" - "$SAMPLE" "$SEED" <<'EOF'
import sys, time
from collections import Counter
from jaxrepair.envs.corpus_validate import load_for_validation
t0 = time.monotonic()
tasks = load_for_validation(
    ["jaxrepair/data/corpus_pypi.jsonl", "jaxrepair/data/corpus_c.jsonl",
     "jaxrepair/data/corpus_npm.jsonl"],
    sample=int(sys.argv[1]), seed=int(sys.argv[2]),
)
per = Counter(t.build_system for t in tasks)
print(f"corpus-tier: fetched and materialised {len(tasks)} tasks in {time.monotonic() - t0:.1f}s:",
      ", ".join(f"{bs} {n}" for bs, n in sorted(per.items())))
missing = {"python", "make", "cmake", "npm"} - set(per)
if missing:
    sys.exit(f"corpus-tier: the sample has no {', '.join(sorted(missing))} task")
EOF
then
  banner "FAILED: could not fetch or materialise the sample (see above)"
  exit 1
fi
T_FETCH=$(( $(date +%s) - T0 ))

summarise() {  # $1: report JSON; prints one line per build system and the failures
  "$PY" - "$1" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
for row in r["by_build_system"]:
    print(f"corpus-tier: {r['sandbox']:6s} {row['build_system']:6s} {row['ok']:3d}/{row['count']:<3d} ok"
          f"  median {row['median_run_s']:6.2f}s a run, {row['median_task_s']:6.2f}s a task"
          f" (broken + fixed), {row['total_run_s']:7.1f}s of builds")
print(f"corpus-tier: {r['sandbox']:6s} all    {sum(t['ok'] for t in r['tasks']):3d}/{len(r['tasks']):<3d} ok"
      f"  wall {r['wall_s']:.1f}s")
for t in r["tasks"]:
    if not t["ok"]:
        print(f"corpus-tier: {r['sandbox']} FAILED {t['id']}: broken={t['broken']} fixed={t['fixed']}"
              f" guards={t['fixed_guards']}")
        for p in t["problems"][:2]:
            print("    " + p.replace("\n", "\n    ")[-1500:])
EOF
}

validate() {  # $1: backend
  local t=$(date +%s) rc
  jaxrepair envs validate "${SOURCES[@]}" --sample "$SAMPLE" --seed "$SEED" \
    --backend "$1" --repeats 1 --workers "$WORKERS" --json "$OUT/$1.json"
  rc=$?
  say "$1 sandbox: exit $rc in $(( $(date +%s) - t ))s"
  if [ -f "$OUT/$1.json" ]; then summarise "$OUT/$1.json"; fi
  return $rc
}

STATUS=0
VERDICT=()
for backend in $BACKENDS; do
  case "$backend" in
    local)
      missing=()
      for tool in bwrap gcc g++ make cmake node; do
        command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
      done
      if [ "${#missing[@]}" != 0 ]; then
        banner "LOCAL SANDBOX FAILED: missing ${missing[*]} (apt-get install bubblewrap gcc g++ make cmake nodejs)"
        STATUS=1; VERDICT+=("local: FAILED (missing ${missing[*]})"); continue
      fi
      # the local sandbox runs the host's node (it binds /usr): the npm corpus needs >= 20.15
      # (process-warning's tests call node:test's TestContext.plan)
      say "host tools: node $(node --version), $(gcc -dumpfullversion 2>/dev/null | sed 's/^/gcc /'), $(cmake --version | head -1)"
      if ! node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 15) ? 0 : 1)'; then
        banner "LOCAL SANDBOX FAILED: host node $(node --version) is older than 20.15, which the npm corpus's tests need"
        STATUS=1; VERDICT+=("local: FAILED (node older than 20.15)"); continue
      fi
      if validate local; then VERDICT+=("local: ok"); else STATUS=1; VERDICT+=("local: FAILED"); fi
      ;;
    docker)
      why=""
      if ! command -v docker >/dev/null 2>&1; then
        why="no docker command"
      elif ! docker info >/dev/null 2>&1; then
        why="no Docker daemon answering (.ci/docker_up.sh did not start one)"
      else
        for tag in $("$PY" -c 'from jaxrepair.envs.sandbox.images import IMAGES; print(" ".join(t for t, _ in IMAGES.values()))'); do
          docker image inspect "$tag" >/dev/null 2>&1 || why="${why:+$why, }image $tag missing"
        done
      fi
      if [ -n "$why" ]; then
        banner "DOCKER SANDBOX NOT VALIDATED: $why"
        if [ "$REQUIRE_DOCKER" = 1 ]; then
          STATUS=1; VERDICT+=("docker: FAILED (not run: $why)")
        else
          VERDICT+=("docker: SKIPPED ($why)")
        fi
        continue
      fi
      if validate docker; then VERDICT+=("docker: ok"); else STATUS=1; VERDICT+=("docker: FAILED"); fi
      ;;
    *) say "unknown backend $backend"; STATUS=1 ;;
  esac
done

say "reports in $OUT; fetch ${T_FETCH}s, total $(( $(date +%s) - T0 ))s"
for v in "${VERDICT[@]}"; do say "$v"; done
if [ "$STATUS" != 0 ]; then
  banner "FAILED"
elif [[ " ${VERDICT[*]}" == *SKIPPED* ]]; then
  say "PASSED, but the Docker sandbox was NOT validated (see the banner above)"
else
  say "PASSED"
fi
exit "$STATUS"
