#!/bin/sh
# Run the recycle storm and the reload storm of tests/test_faults.py N times
# each (default 20), one after the other, and count per run the connections
# failed, the retirements taken for crashes and the boot failures.  Not in
# CI: it takes about 4 minutes per 10 runs.
#
#   sh bench/storms.sh [N]      (from the checkout, with .venv linked)
set -u
N=${1:-20}
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
for test in test_recycle_storm test_reload_storm; do
    passed=0
    i=1
    while [ "$i" -le "$N" ]; do
        out=$("$PY" -m pytest -q -p no:cacheprovider -s "tests/test_faults.py::$test" 2>&1)
        line=$(printf '%s\n' "$out" | grep -E '^\[[12] ' | tail -1)
        if printf '%s\n' "$out" | grep -qE '^1 passed'; then
            passed=$((passed + 1))
            echo "$test run $i: passed: $line"
        else
            echo "$test run $i: FAILED: $line"
            printf '%s\n' "$out" | grep -E 'assert|Error' | head -5
        fi
        i=$((i + 1))
    done
    echo "$test: $passed of $N runs passed"
done
