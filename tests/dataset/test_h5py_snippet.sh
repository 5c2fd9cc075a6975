#!/usr/bin/env bash
# Runs the five-line h5py snippet of docs/dataset-format.md (extracted between its markers) on a
# freshly prepared dataset and checks that it prints the start of the input text.
set -euo pipefail
: "${FMTRAIN_EXE:?}" "${FMTRAIN_SOURCE_DIR:?}"
PY=/usr/bin/python3
work=$(mktemp -d /tmp/fm_h5py_snippet.XXXXXX)
trap 'rm -rf "$work"' EXIT
doc="$FMTRAIN_SOURCE_DIR/docs/dataset-format.md"
# shellcheck disable=SC2016 # the backticks are Markdown, not shell
sed -n '/<!-- h5py-snippet-begin -->/,/<!-- h5py-snippet-end -->/p' "$doc" | sed -n '/^```python$/,/^```$/p' |
  sed '1d;$d' >"$work/snippet.py"
lines=$(wc -l <"$work/snippet.py")
echo "snippet ($lines lines):"
cat "$work/snippet.py"
[ "$lines" -eq 5 ] || { echo "FAIL: the documented snippet has $lines lines, not 5" >&2; exit 1; }
# a corpus: the docs themselves, several times (enough pairs for 400 ids)
for _ in 1 2 3; do cat "$FMTRAIN_SOURCE_DIR"/docs/dataset-format.md; done >"$work/text.txt"
"$FMTRAIN_EXE" prepare --input "$work/text.txt" --output "$work/DATA.h5" --vocab-size 400 --val-fraction 0 --quiet
(cd "$work" && "$PY" snippet.py) >"$work/out.txt"
"$PY" - "$work/out.txt" "$work/text.txt" <<'PYEOF'
import sys
out = open(sys.argv[1], "rb").read().decode("utf-8")[:-1]  # print() added one newline
out = out.rstrip("\ufffd")  # 100 tokens may end inside a UTF-8 sequence
text = open(sys.argv[2], "rb").read().decode("utf-8")
assert len(out) > 100, out
assert text.startswith(out), (out[:80], text[:80])
print(f"ok: the snippet printed the first {len(out)} bytes of the input")
PYEOF
