#!/usr/bin/python3
"""gen_errors.py — the list of every error message fmtrain can print, generated from the sources.

Scans src/**/*.c and kernels/**/*.c for FM_ERR(<code>, "<format>", ...) calls and main.c's direct
"fmtrain: ..." prints, and writes them as Markdown tables (one per source file: the message with
printf conversions shown as <...>, the class printed before it, the exit code, and the function)
between the markers
    <!-- BEGIN GENERATED ERROR LIST (tests/shell/gen_errors.py) -->
    <!-- END GENERATED ERROR LIST -->
of docs/troubleshooting.md, so that the list stays true as the code changes.

    /usr/bin/python3 tests/shell/gen_errors.py --write   # regenerate docs/troubleshooting.md
    /usr/bin/python3 tests/shell/gen_errors.py --check   # exit 1 when the file is out of date
(paths relative to the source tree, found from this file's location or FMTRAIN_SOURCE_DIR)
"""
import os
import re
import sys

BEGIN = "<!-- BEGIN GENERATED ERROR LIST (tests/shell/gen_errors.py) -->"
END = "<!-- END GENERATED ERROR LIST -->"

# fm_code -> (class printed by fm_status_print, exit code); mirrors src/core/status.c
CLASSES = {
    "FM_ERR_USAGE": ("usage error", 2),
    "FM_ERR_CONFIG": ("configuration error", 2),
    "FM_ERR_INPUT": ("input error", 3),
    "FM_ERR_IO": ("I/O error", 1),
    "FM_ERR_NOMEM": ("out of memory", 1),
    "FM_ERR_MPI": ("MPI error", 1),
    "FM_ERR_DEVICE": ("device error", 1),
    "FM_ERR_NUMERIC": ("numerical error", 4),
    "FM_ERR_INTERNAL": ("internal error", 1),
    "FM_ERR_STOPPED": ("stopped", 75),
}

CONV = re.compile(r"%[-+ #0']*(\*|\d+)?(\.(\*|\d+))?(hh|h|ll|l|j|z|t|L)?[diouxXeEfFgGaAcspn%]")
FUNC = re.compile(r"^(?:static\s+|inline\s+|const\s+)*[A-Za-z_][\w\s\*]*?\b([A-Za-z_]\w*)\s*\([^;]*$")


def strip_comments(text):
    """Blanks out comments but keeps string literals and line structure."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if c == '"' or c == "'":
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if text[j] == "\\" else 1
            out.append(text[i:j + 1])
            i = j + 1
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        else:
            out.append(c)
            i += 1
    return "".join(out)


def call_args(text, start):
    """The top-level arguments of the call whose '(' is at text[start]."""
    depth, i, args, cur = 0, start, [], []
    while i < len(text):
        c = text[i]
        if c == '"' or c == "'":
            j = i + 1
            while j < len(text) and text[j] != c:
                j += 2 if text[j] == "\\" else 1
            cur.append(text[i:j + 1])
            i = j + 1
            continue
        if c == "(":
            depth += 1
            if depth == 1:
                i += 1
                continue
        elif c == ")":
            depth -= 1
            if depth == 0:
                args.append("".join(cur).strip())
                return args
        elif c == "," and depth == 1:
            args.append("".join(cur).strip())
            cur = []
            i += 1
            continue
        cur.append(c)
        i += 1
    return args


def literal_text(expr):
    """Concatenated C string literals of expr, or None when expr is not only literals."""
    parts = re.findall(r'"((?:[^"\\]|\\.)*)"', expr)
    rest = re.sub(r'"((?:[^"\\]|\\.)*)"', "", expr).strip()
    if not parts or rest:
        return None
    s = "".join(parts)
    s = s.replace("\\n", " ").replace('\\"', '"').replace("\\t", " ").replace("\\\\", "\\")
    return s


def readable(fmt):
    def conv(m):
        t = m.group(0)
        if t == "%%":
            return "%"
        return {"s": "<text>", "c": "<char>", "p": "<address>"}.get(t[-1], "<number>")
    return re.sub(r"\s+", " ", CONV.sub(conv, fmt)).strip()


def function_at(lines, lineno):
    for k in range(lineno - 1, -1, -1):
        line = lines[k]
        if line and not line[0].isspace() and line[0] not in "#}/*":
            m = FUNC.match(line)
            if m:
                return m.group(1)
    return "?"


def scan(src):
    files = []
    for sub in ("src", "kernels"):
        for root, _, names in os.walk(os.path.join(src, sub)):
            files += [os.path.join(root, f) for f in names if f.endswith(".c")]
    entries = {}
    for path in sorted(files):
        rel = os.path.relpath(path, src)
        text = strip_comments(open(path, encoding="utf-8").read())
        lines = text.split("\n")
        found = []
        for m in re.finditer(r"\bFM_ERR\s*\(", text):
            if text[max(0, m.start() - 8):m.start()].endswith("define "):
                continue
            args = call_args(text, m.end() - 1)
            if len(args) < 2:
                continue
            code = args[0]
            fmt = literal_text(args[1])
            lineno = text.count("\n", 0, m.start()) + 1
            if code not in CLASSES:
                cls, rc = ("(the class of the error it reports)", None)
            else:
                cls, rc = CLASSES[code]
            msg = readable(fmt) if fmt is not None else "<message composed at run time>"
            found.append((msg, cls, rc, function_at(lines, lineno)))
        if rel == os.path.join("src", "cli", "main.c"):
            for m in re.finditer(r'fprintf\s*\(\s*stderr\s*,\s*((?:"(?:[^"\\]|\\.)*"\s*)+)', text):
                fmt = literal_text(m.group(1))
                if fmt and fmt.startswith("fmtrain: "):
                    body = fmt[len("fmtrain: "):]
                    cls, _, msg = body.partition(": ")
                    if cls not in {c for c, _ in CLASSES.values()}:
                        continue  # not an error report ("fmtrain: <class>: ..."), e.g. a note
                    rc = next((r for c, r in CLASSES.values() if c == cls), None)
                    lineno = text.count("\n", 0, m.start()) + 1
                    found.append((readable(msg), cls, rc, function_at(lines, lineno)))
        if found:
            seen, uniq = set(), []
            for e in found:
                if e not in seen:
                    seen.add(e)
                    uniq.append(e)
            entries[rel] = uniq
    return entries


def render(entries):
    total = sum(len(v) for v in entries.values())
    out = [BEGIN, "",
           f"{total} messages in {len(entries)} source files. fmtrain prints each as "
           "`fmtrain: <class>: <message>`; `<text>` and `<number>` stand for the values filled in at "
           "run time (a path, a key, a size). The exit code follows from the class. For the cause "
           "and the fix, see the section on the same source file above.", ""]
    for rel, items in entries.items():
        out += [f"#### `{rel}`", "", "| Message | Class | Exit | Function |", "|---|---|---|---|"]
        for msg, cls, rc, func in items:
            cell = msg.replace("|", "\\|").replace("`", "'")
            out.append(f"| {cell} | {cls} | {'' if rc is None else rc} | `{func}` |")
        out.append("")
    out.append(END)
    return "\n".join(out)


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else "--print"
    src = os.environ.get("FMTRAIN_SOURCE_DIR") or os.path.abspath(
        os.path.join(os.path.dirname(__file__), "..", ".."))
    doc = os.path.join(src, "docs", "troubleshooting.md")
    block = render(scan(src))
    if mode == "--print":
        print(block)
        return 0
    text = open(doc, encoding="utf-8").read()
    a, b = text.find(BEGIN), text.find(END)
    if a < 0 or b < 0:
        print(f"{doc}: the markers {BEGIN!r} ... {END!r} are missing", file=sys.stderr)
        return 1
    new = text[:a] + block + text[b + len(END):]
    if mode == "--write":
        if new != text:
            open(doc, "w", encoding="utf-8").write(new)
        print(f"{doc}: error list written")
        return 0
    if mode == "--check":
        if new != text:
            print(f"{doc} is out of date with the sources' error messages; run "
                  f"/usr/bin/python3 tests/shell/gen_errors.py --write", file=sys.stderr)
            return 1
        print(f"{doc}: error list is up to date")
        return 0
    print("usage: gen_errors.py [--print|--write|--check]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
