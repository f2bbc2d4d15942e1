#!/usr/bin/env python3
"""Write the key reference of docs/configuration.md from schema/config.schema.json.

Every key of the config file, as a dotted path (`issuers[].jwks.url`), with its type,
default and the first paragraph of its description, between the `keys:begin` and
`keys:end` markers. Run it after `sluis schema --write schema`; the test
`docs_reference::every_config_key_is_documented` fails when a key is missing.
"""
import json
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCHEMA = json.loads((ROOT / "schema/config.schema.json").read_text())
DOC = ROOT / "docs/configuration.md"


def deref(node):
    seen = 0
    while "$ref" in node and seen < 20:
        name = node["$ref"].rsplit("/", 1)[-1]
        extra = {k: v for k, v in node.items() if k != "$ref"}
        node = {**SCHEMA["$defs"][name], **extra}
        seen += 1
    return node


def variants(node):
    """The non-null alternatives of a node (Option<T>, untagged enums)."""
    node = deref(node)
    alts = node.get("anyOf") or node.get("oneOf")
    if not alts:
        return [node]
    out = []
    for alt in alts:
        alt = deref(alt)
        if alt.get("type") == "null":
            continue
        out.extend(variants(alt))
    return out


def type_of(node):
    names = []
    for v in variants(node):
        t = v.get("type")
        if "enum" in v:
            names.append(" \\| ".join(f"`{e}`" for e in v["enum"] if e is not None))
        elif "const" in v:
            names.append(f"`{v['const']}`")
        elif isinstance(t, list):
            names.extend(x for x in t if x != "null")
        elif t == "array":
            names.append("list")
        elif t == "object" and "properties" not in v:
            names.append("map")
        elif t:
            names.append(t)
    out = []
    for n in names:
        if n not in out:
            out.append(n)
    return " or ".join(out) or "any"


def first_paragraph(text):
    para = (text or "").strip().split("\n\n")[0]
    return " ".join(para.split()).replace("|", "\\|")


def walk(node, path, rows, depth=0):
    if depth > 12:
        return
    for v in variants(node):
        props = v.get("properties") or {}
        for key in sorted(props):
            child = props[key]
            full = f"{path}.{key}" if path else key
            desc = child.get("description") or deref(child).get("description")
            default = child.get("default", deref(child).get("default"))
            shown = "" if default is None else f"`{json.dumps(default)}`"
            if not any(r[0] == full for r in rows):
                rows.append((full, type_of(child), shown, first_paragraph(desc)))
            walk(child, full, rows, depth + 1)
        if v.get("type") == "array" and "items" in v:
            walk(v["items"], f"{path}[]", rows, depth + 1)
        extra = v.get("additionalProperties")
        if isinstance(extra, dict) and extra:
            walk(extra, f"{path}.<name>", rows, depth + 1)


def table():
    rows = []
    walk(SCHEMA, "", rows)
    lines = ["| key | type | default | what |", "|---|---|---|---|"]
    lines += [f"| `{k}` | {t} | {d} | {w} |" for k, t, d, w in rows]
    return "\n".join(lines)


def main():
    doc = DOC.read_text()
    new = re.sub(
        r"<!-- keys:begin -->.*<!-- keys:end -->",
        lambda _: "<!-- keys:begin -->\n" + table() + "\n<!-- keys:end -->",
        doc,
        flags=re.S,
    )
    if "--check" in sys.argv:
        if new != doc:
            sys.exit("docs/configuration.md is out of date: run scripts/config-doc.py")
        return
    DOC.write_text(new)


if __name__ == "__main__":
    main()
