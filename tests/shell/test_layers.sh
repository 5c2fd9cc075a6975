#!/usr/bin/env bash
# test_layers.sh — the layering of src/README.md is true of the code: every `#include "<folder>/..."`
# (and "kernels.h", "cpu/...", "cuda/...", which are the kernels/ layer) in a file of src/<folder>/ or
# kernels/ names a folder that the "may call" column of that folder's row in src/README.md lists.
# A new dependency between layers therefore needs a line in the map, or the test fails.
set -euo pipefail
src=${FMTRAIN_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
/usr/bin/env python3 - "$src" <<'PY'
import os, re, sys
src = sys.argv[1]
readme = open(os.path.join(src, "src", "README.md")).read()
rows = re.findall(r"^\| `(\.\./)?([a-z]+)/` \|.*\| ([^|]+) \|\s*$", readme, re.M)
folders = {name for _, name, _ in rows}
allowed = {}
for _, name, may in rows:
    may = may.strip()
    if may.startswith("all of the above"):
        allowed[name] = set(folders) - {name}
    else:
        allowed[name] = {w for w in re.findall(r"[a-z]+", may.split("(")[0]) if w in folders}
# every folder of src/ (a new layer needs its row) and the kernels/ layer
need = {d for d in os.listdir(os.path.join(src, "src")) if os.path.isdir(os.path.join(src, "src", d))}
need.add("kernels")
if set(allowed) != need:
    sys.exit("FAIL: src/README.md's table has rows %s, expected %s" % (sorted(allowed), sorted(need)))
inc = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)
bad, files = [], 0
def layer_of(path):
    if path == "kernels.h" or path.startswith(("cpu/", "cuda/", "../kernels")):
        return "kernels"
    head = path.split("/")[0]
    return head if "/" in path and head in folders else None
for name in sorted(allowed):
    root = os.path.join(src, "kernels") if name == "kernels" else os.path.join(src, "src", name)
    for dp, _, fn in os.walk(root):
        for f in fn:
            if not f.endswith((".c", ".h", ".cu", ".cuh")):
                continue
            files += 1
            text = open(os.path.join(dp, f), errors="replace").read()
            for target in inc.findall(text):
                lay = layer_of(target)
                if lay and lay != name and lay not in allowed[name]:
                    bad.append("%s: includes \"%s\" (layer %s), but src/README.md lets %s call only: %s"
                               % (os.path.relpath(os.path.join(dp, f), src), target, lay, name,
                                  ", ".join(sorted(allowed[name])) or "nothing"))
if files < 50:
    sys.exit("FAIL: only %d source files found under %s" % (files, src))
if bad:
    print("\n".join("FAIL: " + b for b in bad))
    sys.exit(1)
print("layers ok: %d files, %d layers, every include within src/README.md's map" % (files, len(allowed)))
PY
