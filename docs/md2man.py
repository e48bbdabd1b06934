#!/usr/bin/env python3
"""Turn one of our man-page sources (docs/NAME.SECTION.md) into roff.

Why not pandoc: on Debian it is ~180 MB of Haskell for two pages, and our
pages use a small, fixed subset of Markdown, which this handles:

  # name(N) — what it is        title line (.TH and the NAME section)
  ## SECTION / ### Subsection   .SH / .SS
  ``` fenced ``` and 4-space-indented blocks   literal (.nf)
  `term` line + ": text" lines  a definition list (.TP)
  - item                        bullet list
  `code`, **bold**, *emphasis*, [text](link)   inline

usage: md2man.py INPUT.md OUTPUT VERSION
"""

import datetime
import os
import re
import sys


def escape(text):
    """Escape roff's special characters in running text."""
    return text.replace("\\", "\\e").replace("-", "\\-")


def inline(text):
    """Inline Markdown -> roff font changes."""
    out = []
    for i, part in enumerate(re.split(r"(`[^`]*`)", text)):
        if i % 2:
            out.append("\\fB" + escape(part[1:-1]) + "\\fR")
            continue
        part = re.sub(r"\[([^\]]+)\]\(([^)]+)\)", r"\1", part)
        part = escape(part)
        part = re.sub(r"\*\*([^*]+)\*\*", r"\\fB\1\\fR", part)
        part = re.sub(r"(?<![\w*])\*([^*\s][^*]*)\*(?!\w)", r"\\fI\1\\fR", part)
        out.append(part)
    line = "".join(out)
    if line.startswith((".", "'")):
        line = "\\&" + line
    return line


def literal(line):
    """A line inside .nf: escape, and keep leading dots from being requests."""
    line = line.replace("\\", "\\e")
    if line.startswith((".", "'")):
        line = "\\&" + line
    return line


def convert(lines, version):
    out = []
    i = 0
    title = lines[0].strip()
    m = re.match(r"#\s+([\w.-]+)\((\d)\)\s+[—-]+\s+(.*)", title)
    if not m:
        raise SystemExit(f"md2man: first line must be '# name(N) — text', got {title!r}")
    name, section, what = m.groups()
    stamp = os.environ.get("SOURCE_DATE_EPOCH")
    date = (datetime.datetime.utcfromtimestamp(int(stamp)) if stamp
            else datetime.datetime.utcnow()).strftime("%Y-%m-%d")
    out.append(f'.TH "{name.upper()}" "{section}" "{date}" "diskshelf {version}" "diskshelf"')
    out.append(".SH NAME")
    out.append(f"{escape(name)} \\- {inline(what)}")
    i = 1
    in_para = False
    while i < len(lines):
        line = lines[i].rstrip("\n")
        stripped = line.strip()
        if stripped.startswith("```"):
            out.append(".PP")
            out.append(".nf")
            i += 1
            while i < len(lines) and not lines[i].strip().startswith("```"):
                out.append(literal(lines[i].rstrip("\n")))
                i += 1
            out.append(".fi")
            in_para = False
            i += 1
            continue
        if line.startswith("## "):
            out.append(".SH " + escape(line[3:].strip()))
            in_para = False
        elif line.startswith("### "):
            out.append(".SS " + escape(line[4:].strip()))
            in_para = False
        elif stripped == "":
            in_para = False
        elif line.startswith("    ") and not in_para:
            out.append(".RS 4")
            out.append(".nf")
            while i < len(lines) and (lines[i].startswith("    ") or lines[i].strip() == ""):
                if lines[i].strip() == "" and not (i + 1 < len(lines)
                                                   and lines[i + 1].startswith("    ")):
                    break
                out.append(literal(lines[i].rstrip("\n")[4:]))
                i += 1
            out.append(".fi")
            out.append(".RE")
            continue
        elif i + 1 < len(lines) and lines[i + 1].startswith(": "):
            out.append(".TP")
            out.append(inline(stripped))
            i += 1
            first = True
            while i < len(lines) and (lines[i].startswith(": ") or
                                      (lines[i].startswith("  ") and lines[i].strip())):
                text = lines[i][2:].strip()
                out.append(inline(text) if first or not lines[i].startswith(": ")
                           else ".br\n" + inline(text))
                first = False
                i += 1
            in_para = False
            continue
        elif stripped.startswith("- "):
            out.append(".IP \\(bu 2")
            out.append(inline(stripped[2:]))
            in_para = True
        elif stripped.startswith("|"):
            cells = [c.strip() for c in stripped.strip("|").split("|")]
            if all(re.fullmatch(r":?-+:?", c) for c in cells):
                i += 1
                continue
            out.append(".TP")
            out.append(inline(cells[0]))
            out.append(inline(" \u2014 ".join(cells[1:])))
            in_para = False
        else:
            if not in_para:
                out.append(".PP")
                in_para = True
            out.append(inline(stripped))
        i += 1
    return "\n".join(out) + "\n"


def main():
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    with open(sys.argv[1], encoding="utf-8") as f:
        lines = f.readlines()
    text = convert(lines, sys.argv[3])
    with open(sys.argv[2], "w", encoding="utf-8") as f:
        f.write(text)


if __name__ == "__main__":
    main()
