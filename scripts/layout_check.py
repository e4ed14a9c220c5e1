#!/usr/bin/env python3
"""The source layout's two rules (run by scripts/check_deps.sh):

- no file is over 800 lines, its tests aside (counted up to its first `#[cfg(test)]`);
- no import circles between the files of a crate: a file that names another file's
  module (`use super::x`, `crate::a::b::Item`, `child::f()`, …) and is named back by
  it, directly or through others, is a circle. A parent declaring its children
  (`mod x;`) or re-exporting their items (`pub use x::Item;`) is not an import; a
  child reaching an item of its parent is.

Prints every breach and exits 1 when there is one.
"""

import os
import re
import sys

LIMIT = 800
CRATES = ["src", "model/src", "streaming/src", "simulators/src", "processor/src",
          "database/src", "trading/src", "bus/src", "engine/src", "gateway/src"]
PATH = re.compile(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
GROUP = re.compile(r"\b(crate|super|self)((?:::[a-z_][a-z0-9_]*)*)::\{([^}]*)\}")


def module_of(root, path):
    rel = os.path.relpath(path, root)[:-3].split(os.sep)
    if rel[-1] in ("lib", "main", "mod"):
        rel = rel[:-1]
    return tuple(rel)


def code_of(path):
    """The file's code before its tests, comments removed."""
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip().startswith("#[cfg(test)]"):
                break
            out.append(line.split("//", 1)[0])
    # Re-exports are the module's face, not what it depends on.
    return re.sub(r"\bpub(\([a-z]+\))? use [^;]*;", "", "".join(out))


def references(code, here, children):
    """Module paths named in `code`, resolved from the module `here`."""
    refs = []
    found = [(m.group(1), m.group(2)) for m in PATH.finditer(code)]
    for m in GROUP.finditer(code):
        for inner in m.group(3).split(","):
            head = inner.strip().split("::")[0].split(" ")[0]
            if head and head[0].islower() and head != "self":
                found.append((m.group(1), m.group(2) + "::" + head))
    for anchor, rest in found:
        parts = [p for p in rest.split("::") if p]
        if anchor == "crate":
            base = ()
        elif anchor == "self":
            base = here
        else:
            base = here[:-1]
        while parts and parts[0] == "super":
            base = base[:-1]
            parts.pop(0)
        refs.append(base + tuple(parts))
    # A child module named by its bare name (`rest::router`, `use account::*`).
    for c in children:
        if re.search(r"(?<![:\w])" + c + r"::", code):
            refs.append(here + (c,))
    return refs


def crate_graph(root):
    files = {}
    for d, _, names in os.walk(root):
        for n in names:
            if n.endswith(".rs"):
                p = os.path.join(d, n)
                if os.path.relpath(p, root).startswith("bin" + os.sep):
                    continue
                files[module_of(root, p)] = p
    edges = {m: set() for m in files}
    for m, p in files.items():
        children = [k[-1] for k in files if len(k) == len(m) + 1 and k[: len(m)] == m]
        for ref in references(code_of(p), m, children):
            # The longest prefix that is a file's module.
            target = None
            for k in range(len(ref), -1, -1):
                if ref[:k] in files:
                    target = ref[:k]
                    break
            if target is not None and target != m:
                edges[m].add(target)
    return files, edges


def cycles(edges):
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def main():
    os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    failed = False
    for root in CRATES:
        if not os.path.isdir(root):
            continue
        files, edges = crate_graph(root)
        for m, p in sorted(files.items()):
            with open(p, encoding="utf-8") as f:
                n = 0
                for line in f:
                    if line.strip().startswith("#[cfg(test)]"):
                        break
                    n += 1
            if n > LIMIT:
                print(f"layout: {p} has {n} lines before its tests (at most {LIMIT})",
                      file=sys.stderr)
                failed = True
        for comp in cycles(edges):
            names = [files[m] for m in comp]
            print("layout: these files import each other in a circle: " + ", ".join(names),
                  file=sys.stderr)
            failed = True
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
