#!/usr/bin/env bash
# test_shellcheck.sh — runs shellcheck (default severity: style and above) on every *.sh and *.sbatch
# file of the project: in a git checkout the files git tracks or would track (untracked files that
# .gitignore does not ignore: a new script is checked before its first commit, a scratch folder listed
# in .gitignore is not); elsewhere every such file outside build directories and .git. Sourced files are followed (-x),
# with `source` paths relative to the sourcing script (-P SCRIPTDIR). Prints each file's verdict;
# fails when any file has a finding. Skips (77) when shellcheck is not installed
# (apt-get install shellcheck).
set -uo pipefail
src=${FMTRAIN_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
if ! command -v shellcheck >/dev/null 2>&1; then
  echo "SKIP: shellcheck is not installed (apt-get install shellcheck)"
  exit 77
fi
shellcheck --version | sed -n 2p
files=()
if git -C "$src" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  while IFS= read -r -d '' f; do [ -f "$src/$f" ] && files+=("$src/$f"); done < <(
    git -C "$src" ls-files -z --cached --others --exclude-standard -- '*.sh' '*.sbatch' | sort -z)
else
  while IFS= read -r -d '' f; do files+=("$f"); done < <(
    find "$src" \( -name .git -o -name 'build' -o -name 'build-*' -o -name '_deps' \) -prune -o \
         -type f \( -name '*.sh' -o -name '*.sbatch' \) -print0 | sort -z)
fi
if [ ${#files[@]} -lt 5 ]; then
  echo "FAIL: found only ${#files[@]} scripts under $src (expected the job scripts and tests)"
  exit 1
fi
fail=0
for f in "${files[@]}"; do
  rel=${f#"$src"/}
  if out=$(shellcheck -x -P SCRIPTDIR "$f" 2>&1); then
    echo "ok:   $rel"
  else
    echo "FAIL: $rel"
    echo "$out"
    fail=1
  fi
done
echo "${#files[@]} scripts checked"
exit $fail
