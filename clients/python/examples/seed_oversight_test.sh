#!/bin/sh
# The seed scenario of seed_oversight_test.py as `oversight ask` calls: six requests,
# three with one figure over a default threshold (memory pressure 85 > 80, delegation
# depth 5 > 4, circular references 4 > 3) that wait for a person, three under (one
# exactly at every threshold: the rules compare strictly) that the policy approves.
#
#   export OVERSIGHT_URL=http://127.0.0.1:8000
#   export OVERSIGHT_API_KEY=...      # python manage.py create_agent seed-check
#   export OVERSIGHT_MANAGE="python manage.py"   # optional: also print the monthly report line
#   sh clients/python/examples/seed_oversight_test.sh
#
# Exits 0 when the server routed every request as expected, 1 otherwise.
set -u
OVERSIGHT=${OVERSIGHT:-oversight}
run=$(date +%s)
approved=0 waiting=0 problems=0

# ask OPERATION SUMMARY EXPECTED_EXIT METRIC...  (--wait 0: never block on a person here)
ask() {
    operation=$1 summary=$2 expected=$3
    shift 3
    metrics=""
    for m in "$@"; do metrics="$metrics --metric $m"; done
    # shellcheck disable=SC2086  # the metrics are NAME=VALUE words
    $OVERSIGHT ask "$operation" --summary "$summary (seed run $run)" $metrics --wait 0 >/dev/null
    status=$?
    case $status in
        0) approved=$((approved + 1)); outcome="approved by policy" ;;
        3) waiting=$((waiting + 1)); outcome="waiting for a human" ;;
        *) outcome="exit status $status" ;;
    esac
    printf '%-16s %s\n' "$operation" "$outcome"
    if [ "$status" -ne "$expected" ]; then
        echo "UNEXPECTED $operation: exit status $status, expected $expected" >&2
        problems=$((problems + 1))
    fi
}

ask seed.memory     "Memory pressure over the threshold"          3 memory_pressure=85 delegation_depth=1 circular_refs=0
ask seed.delegation "Delegation deeper than the threshold"        3 memory_pressure=40 delegation_depth=5 circular_refs=0
ask seed.cycles     "More circular references than the threshold" 3 memory_pressure=40 delegation_depth=1 circular_refs=4
ask seed.calm       "Everything well under the thresholds"        0 memory_pressure=20 delegation_depth=1 circular_refs=0
ask seed.boundary   "Exactly at every threshold"                  0 memory_pressure=80 delegation_depth=4 circular_refs=3
ask seed.idle       "An idle agent"                               0 memory_pressure=5 delegation_depth=0 circular_refs=0

total=$((approved + waiting))
echo
echo "$approved approved by policy, $waiting waiting for a human (coverage $((total ? 100 * waiting / total : 0))%)"
if [ -n "${OVERSIGHT_MANAGE:-}" ]; then
    # The monthly review's headline: the share of this month's requests that needed a human.
    $OVERSIGHT_MANAGE report "$(date -u +%Y-%m)" --live | grep "critical share"
fi
[ "$problems" -eq 0 ]
