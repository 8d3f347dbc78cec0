"""Validation of answers against OpenAI's OpenAPI response schemas (vendored in openai_schemas.yaml).

`errors("CreateChatCompletionResponse", answer)` lists what in `answer` breaks the named schema (empty when it
validates); `assert_valid` fails the test with that list. OpenAPI 3.0's `nullable: true` is turned into JSON
Schema (a `null` type, or `null` among the enum values) before validating.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SCHEMA_FILE = Path(__file__).with_name("openai_schemas.yaml")


def errors(name: str, instance: Any) -> list[str]:
    """Every way `instance` breaks the schema `name`, as "path: message" lines."""
    validator = _validator(name)
    return [
        f"{'/'.join(str(part) for part in error.absolute_path) or '<root>'}: {error.message}"
        for error in sorted(validator.iter_errors(instance), key=lambda error: list(map(str, error.absolute_path)))
    ]


def assert_valid(name: str, instance: Any) -> None:
    found = errors(name, instance)
    assert not found, f"not a valid {name}: {found}\n{instance}"


@cache
def _components() -> dict[str, Any]:
    document = yaml.safe_load(SCHEMA_FILE.read_text())
    converted: dict[str, Any] = _json_schema(document["components"])
    return converted


@cache
def _validator(name: str) -> jsonschema.Draft202012Validator:
    components = _components()
    if name not in components["schemas"]:
        raise KeyError(f"no vendored schema {name!r}")
    schema = {"$ref": f"#/components/schemas/{name}", "components": components}
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _json_schema(node: Any) -> Any:
    if isinstance(node, list):
        return [_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {key: _json_schema(value) for key, value in node.items() if key != "nullable"}
    if node.get("nullable") is not True:
        return converted
    if "type" in converted:
        converted["type"] = [converted["type"], "null"]
        if "enum" in converted:
            converted["enum"] = [*converted["enum"], None]
        return converted
    return {"anyOf": [converted, {"type": "null"}]}
