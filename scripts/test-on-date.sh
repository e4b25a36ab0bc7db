#!/usr/bin/env bash
# The README's test command at another date, under libfaketime (Debian's faketime): the clock
# starts at DATE 09:00 UTC and runs on, for every process of the suite.
#   scripts/test-on-date.sh 2030-12-31 [pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ] || ! [[ "$1" =~ ^[0-9]{4}-[0-9]{2}-[0-9]{2}$ ]]; then
  echo "usage: scripts/test-on-date.sh YYYY-MM-DD [pytest arguments]" >&2
  exit 2
fi
day="$1"
shift
scripts/setup.sh
scripts/test-deps.sh
echo "test-on-date: the suite at $day (faketime)"
exec faketime "$day 09:00:00" scripts/test.sh "$@"
