#!/usr/bin/env python3
"""Rewrites the library's own includes as paths relative to the including file.

    #include "core/tensor.h"   in ops/conv2d.h      becomes  #include "../core/tensor.h"
    #include "ops/conv2d.h"   in ops/conv2d.cpp    becomes  #include "conv2d.h"

A quoted include resolves first against the directory of the file that contains it, so installed
headers (<prefix>/include/tapegrad/...) always find each other and never a consumer's file of the
same name. Only quoted includes whose target is a file of the library (under one of LIBRARY_DIRS,
or tapegrad.h) are rewritten; system, third-party and already relative includes are left alone, so
running the script again changes nothing.

Usage: scripts/fix_includes.py [--check] [ROOT]   (ROOT: the repository, default: this script's)
--check changes nothing and exits 1 when some file would change (for CI).
"""
import argparse
import os
import re
import sys

LIBRARY_DIRS = ["core", "ops", "nn", "optim", "io", "dist", "train"]
EXTENSIONS = (".h", ".hpp", ".cuh", ".cpp", ".cc", ".cu")
INCLUDE = re.compile(r'^(\s*#\s*include\s*)"([^"]+)"', re.MULTILINE)


def library_files(root):
    """The library's sources and headers (relative paths), and tapegrad.h."""
    files = []
    for top in LIBRARY_DIRS:
        for dirpath, dirnames, filenames in os.walk(os.path.join(root, top)):
            dirnames.sort()
            for name in sorted(filenames):
                if name.endswith(EXTENSIONS):
                    files.append(os.path.relpath(os.path.join(dirpath, name), root))
    if os.path.exists(os.path.join(root, "tapegrad.h")):
        files.append("tapegrad.h")
    return files


def rewrite(root, path, text):
    """text with each include of a library file relative to path's folder; the unknown targets."""
    here = os.path.dirname(path)
    unknown = []

    def fix(m):
        target = m.group(2)
        first = target.split("/", 1)[0]
        if first not in LIBRARY_DIRS and target != "tapegrad.h":
            return m.group(0)  # relative already, or not ours
        if not os.path.isfile(os.path.join(root, target)):
            unknown.append(target)
            return m.group(0)
        rel = os.path.relpath(target, here or ".").replace(os.sep, "/")
        return f'{m.group(1)}"{rel}"'

    return INCLUDE.sub(fix, text), unknown


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", nargs="?", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    ap.add_argument("--check", action="store_true", help="report files that would change; change none")
    args = ap.parse_args()
    root = os.path.abspath(args.root)

    changed, problems = [], []
    for path in library_files(root):
        full = os.path.join(root, path)
        with open(full, encoding="utf-8") as f:
            text = f.read()
        new, unknown = rewrite(root, path, text)
        problems += [f"{path}: includes \"{u}\", which is no file of the library" for u in unknown]
        if new != text:
            changed.append(path)
            if not args.check:
                with open(full, "w", encoding="utf-8") as f:
                    f.write(new)
    for p in problems:
        print("warning:", p, file=sys.stderr)
    verb = "would change" if args.check else "changed"
    print(f"fix_includes: {verb} {len(changed)} file(s)" + "".join(f"\n  {p}" for p in changed))
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
