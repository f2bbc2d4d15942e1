#!/usr/bin/env python3
"""Checks the layering of sluis-core's top-level modules (docs/architecture.md): each may
import only modules below it in LAYERS, so no two modules import each other, directly or
round a loop. Reads `crate::`/`super::` paths in code and in doc links alike. Prints the
module graph; exits 1 on an import that runs upward.

Usage: scripts/import-graph.py [--dot]
"""
import pathlib
import re
import sys

# Bottom first. Modules on one line may not import each other.
LAYERS = [
    ["json", "mask", "metrics", "secret"],
    ["decision"],
    ["request"],
    ["fhir"],
    ["graphql"],
    ["authn"],
    ["flows"],
    ["response"],
    ["sources"],
    ["policy"],
    ["audit"],
    ["engine"],
]
RANK = {m: i for i, layer in enumerate(LAYERS) for m in layer}
ROOT = pathlib.Path(__file__).resolve().parent.parent / "crates/sluis-core/src"
PATH = re.compile(r"\b(?:crate|super)::([a-z_]+)")


def module_of(path: pathlib.Path) -> str:
    return path.relative_to(ROOT).parts[0].removesuffix(".rs")


def main() -> int:
    edges: dict[tuple[str, str], str] = {}
    for path in sorted(ROOT.rglob("*.rs")):
        if path.name == "lib.rs" and path.parent == ROOT:
            continue
        source = module_of(path)
        if source not in RANK:
            print(f"{path}: module `{source}` is in no layer of {__file__}")
            return 1
        for number, line in enumerate(path.read_text().splitlines(), 1):
            # `super::` from a submodule's own file names its parent's children.
            for target in PATH.findall(line):
                if target in RANK and target != source:
                    edges.setdefault((source, target), f"{path.relative_to(ROOT)}:{number}")
    if "--dot" in sys.argv:
        print("digraph core {")
        for source, target in sorted(edges):
            print(f'  "{source}" -> "{target}";')
        print("}")
        return 0
    upward = [(s, t, at) for (s, t), at in sorted(edges.items()) if RANK[t] >= RANK[s]]
    for layer in reversed(LAYERS):
        for module in layer:
            imports = sorted({t for (s, t) in edges if s == module}, key=lambda m: -RANK[m])
            print(f"{module:>9} -> {', '.join(imports) or '-'}")
    for source, target, at in upward:
        print(f"error: `{source}` imports `{target}`, which is not below it ({at})")
    return 1 if upward else 0


if __name__ == "__main__":
    sys.exit(main())
