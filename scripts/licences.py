#!/usr/bin/env python3
"""Offline licence check of every crate the build resolves (what `cargo
deny check licenses` does, without its network-bound advisory database).

Reads `cargo metadata --locked` and accepts a crate when its SPDX licence
expression is satisfiable with the permissive licences below (OR: one
alternative suffices; AND and WITH: all parts). A crate with no licence
field, or one that needs anything else (GPL, LGPL-only, AGPL, SSPL, ...),
fails the check with its name and expression.

    scripts/licences.py            # exit 0: all acceptable
"""
import json
import re
import subprocess
import sys

# Licences compatible with shipping shardfs under Apache-2.0.
ALLOWED = {
    "MIT", "MIT-0", "Apache-2.0", "BSD-2-Clause", "BSD-3-Clause", "ISC",
    "Zlib", "Unicode-3.0", "Unicode-DFS-2016", "CC0-1.0", "Unlicense",
    "BSL-1.0", "0BSD",
}
EXCEPTIONS = {"LLVM-exception"}


def tokens(expr):
    return re.findall(r"\(|\)|[A-Za-z0-9.+-]+", expr.replace("/", " OR "))


def parse(toks):
    """expr := term (OR term)*; term := factor (AND factor)*;
    factor := '(' expr ')' | ID [WITH ID]. Returns True if acceptable."""
    pos = 0

    def expr():
        nonlocal pos
        ok = term()
        while pos < len(toks) and toks[pos] == "OR":
            pos += 1
            ok = term() or ok
        return ok

    def term():
        nonlocal pos
        ok = factor()
        while pos < len(toks) and toks[pos] == "AND":
            pos += 1
            ok = factor() and ok
        return ok

    def factor():
        nonlocal pos
        if toks[pos] == "(":
            pos += 1
            ok = expr()
            if pos >= len(toks) or toks[pos] != ")":
                raise ValueError("unbalanced parentheses")
            pos += 1
            return ok
        lic = toks[pos]
        pos += 1
        ok = lic in ALLOWED
        if pos < len(toks) and toks[pos] == "WITH":
            ok = ok and toks[pos + 1] in EXCEPTIONS
            pos += 2
        return ok

    ok = expr()
    if pos != len(toks):
        raise ValueError("trailing tokens")
    return ok


def main():
    meta = json.loads(subprocess.check_output(
        ["cargo", "metadata", "--format-version", "1", "--locked"]))
    used = {n["id"] for n in meta["resolve"]["nodes"]}
    bad = []
    count = 0
    for p in meta["packages"]:
        if p["id"] not in used:
            continue
        count += 1
        lic = p.get("license")
        if not lic:
            bad.append(f"{p['name']} {p['version']}: no licence field")
            continue
        try:
            if not parse(tokens(lic)):
                bad.append(f"{p['name']} {p['version']}: {lic}")
        except (ValueError, IndexError) as e:
            bad.append(f"{p['name']} {p['version']}: unparsable {lic!r} ({e})")
    for b in bad:
        print("licence not accepted:", b, file=sys.stderr)
    print(f"licences: {count} crates checked, {len(bad)} not accepted")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
