"""Structural CustomResourceDefinitions for Strimzi's Kafka, KafkaNodePool, KafkaTopic and
KafkaUser, made from the chart's own JSON Schema subsets in deploy/schemas/strimzi (Strimzi's CRD
YAML is in no registry this project reaches). The API server then checks our resources against
the subset: types, enums, patterns, required fields, and unknown fields under `--validate=strict`.

    python3 tools/k8s/strimzi_crds.py deploy/schemas/strimzi > crds.json   # a v1 List
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

GROUP = "kafka.strimzi.io"
KINDS = ("Kafka", "KafkaNodePool", "KafkaTopic", "KafkaUser")
# Keywords a CRD schema takes as they are (OpenAPI v3 as Kubernetes reads it).
KEPT = ("description", "pattern", "minimum", "maximum", "maxLength", "minLength", "minItems")
Schema = dict[str, Any]


def json_type(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return "string"


def is_int_or_string(alternatives: list[Schema]) -> bool:
    types = {branch.get("type") for branch in alternatives}
    return all(set(branch) == {"type"} for branch in alternatives) and types in (
        {"string", "number"},
        {"string", "integer"},
    )


def allowed_values(schema: Schema) -> list[object] | None:
    if "const" in schema:
        return [schema["const"]]
    return list(schema["enum"]) if "enum" in schema else None


def merge_alternatives(alternatives: list[Schema]) -> Schema:
    """oneOf between object shapes: one object with every property (the values of an enum that
    differs between shapes joined), requiring what all require (a structural schema allows no
    types inside oneOf)."""
    merged: Schema = {"type": "object", "properties": {}}
    required: set[str] | None = None
    for branch in alternatives:
        for name, schema in branch.get("properties", {}).items():
            known = merged["properties"].setdefault(name, schema)
            values, more = allowed_values(known), allowed_values(schema)
            if values is not None and more is not None:
                joined = values + [value for value in more if value not in values]
                rest = {k: v for k, v in known.items() if k not in ("const", "enum")}
                merged["properties"][name] = {**rest, "enum": joined}
        mine = set(branch.get("required", []))
        required = mine if required is None else required & mine
    if required:
        merged["required"] = sorted(required)
    return merged


def structural(node: Schema) -> Schema:
    """One JSON Schema node as a structural OpenAPI v3 node."""
    if "oneOf" in node:
        node = merge_alternatives(node["oneOf"])
    if "anyOf" in node and is_int_or_string(node["anyOf"]):
        return {"x-kubernetes-int-or-string": True}
    out: Schema = {key: node[key] for key in KEPT if key in node}
    if "const" in node:
        out["enum"] = [node["const"]]
    if "enum" in node:
        out["enum"] = node["enum"]
    kind = node.get("type")
    if kind is None and "enum" in out:
        kind = json_type(out["enum"][0])
    if kind is None and ("properties" in node or "additionalProperties" in node):
        kind = "object"
    if not isinstance(kind, str):
        raise ValueError(f"no single type for {json.dumps(node)[:120]}")
    out["type"] = kind
    if kind == "array":
        out["items"] = structural(node["items"])
        if node.get("uniqueItems"):
            out["x-kubernetes-list-type"] = "set"
    if kind == "object":
        out.update(object_fields(node))
    if node.get("exclusiveMinimum") is not None:
        out["minimum"], out["exclusiveMinimum"] = node["exclusiveMinimum"], True
    return out


def object_fields(node: Schema) -> Schema:
    out: Schema = {}
    if "properties" in node:
        out["properties"] = {name: structural(s) for name, s in node["properties"].items()}
        if "required" in node:
            out["required"] = node["required"]
        return out  # additionalProperties: false is the default: unknown fields are refused
    values = node.get("additionalProperties")
    if isinstance(values, dict) and isinstance(values.get("type"), str):
        out["additionalProperties"] = structural(values)
    else:  # free-form (a `config` map of mixed types, or a field our subset leaves open)
        out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def crd(kind: str, schema: Schema) -> Schema:
    spec = structural(schema["properties"]["spec"])
    plural = kind.lower() + "s"
    root: Schema = {
        "type": "object",
        "description": schema.get("description", ""),
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        },
        "required": ["spec"],
    }
    version = schema["properties"]["apiVersion"]["const"].split("/")[1]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}", "labels": {"app": "weathertweets-test"}},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "categories": ["strimzi"],
            },
            "versions": [
                {
                    "name": version,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": root},
                    "subresources": {"status": {}},
                }
            ],
        },
    }


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: strimzi_crds.py SCHEMA_DIR", file=sys.stderr)
        return 2
    folder = Path(argv[1])
    items = [
        crd(kind, json.loads((folder / f"{kind.lower()}.v1.schema.json").read_text()))
        for kind in KINDS
    ]
    json.dump({"apiVersion": "v1", "kind": "List", "items": items}, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
