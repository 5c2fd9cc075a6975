#!/usr/bin/env bash
# Fails when docs/parameters.md differs from what fm_paramdoc generates from the schema table.
# Usage: test_paramdoc.sh FM_PARAMDOC DOCS_FILE
set -euo pipefail
gen=$1 doc=$2
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
"$gen" >"$tmp"
if ! [ -s "$tmp" ]; then
  echo "FAIL: $gen printed nothing" >&2
  exit 1
fi
if ! cmp -s "$tmp" "$doc"; then
  echo "FAIL: $doc is out of date with the schema table in src/config/config.c. Differences:" >&2
  diff -u "$doc" "$tmp" | head -n 60 >&2 || true
  echo "Regenerate it with:  $gen > $doc" >&2
  exit 1
fi
echo "ok: $doc matches the schema ($(wc -l <"$doc") lines)"
