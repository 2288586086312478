"""Hold an API answer to the OpenAPI document (rater/data/openapi.json): the status is one
the operation declares, the content type is the declared one, the body validates against
its schema (OpenAPI 3.1 schemas are JSON Schema 2020-12) and declared headers are there."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import orjson
from jsonschema import Draft202012Validator

from rater.shell.api import OPENAPI

DOC: dict[str, Any] = orjson.loads(OPENAPI.read_bytes())
_TEMPLATES = [(re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", path) + "$"), path) for path in DOC["paths"]]


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node and len(node) == 1:
        found: Any = DOC
        for part in node["$ref"].removeprefix("#/").split("/"):
            found = found[part]
        node = found
    return node


def _validate(schema: dict[str, Any], value: Any, where: str) -> None:
    root = {**schema, "components": DOC["components"]}  # "#/components/..." resolves against the document
    errors = sorted(Draft202012Validator(root).iter_errors(value), key=lambda e: list(e.path))
    assert not errors, f"{where}: {errors[0].message} at {list(errors[0].path)}"


def check(method: str, url: str, status: int, headers: dict[str, str], body: Any) -> None:
    """Assert that an answer of the API conforms to the document. A path the document
    does not have (a wrong URL) must be a problem."""
    path = urlsplit(url).path
    content_type = headers.get("Content-Type", "").split(";")[0].strip()
    template = next((t for pattern, t in _TEMPLATES if pattern.match(path)), None)
    where = f"{method} {path} → {status}"
    if template is None:
        assert status >= 400, f"{where}: answered a path the OpenAPI document does not have"
        assert content_type == "application/problem+json", where
        _validate({"$ref": "#/components/schemas/Problem"}, body, where)
        return
    operation = DOC["paths"][template].get(method.lower())
    if operation is None:
        assert status == 405, f"{where}: a method the document does not have"
        _validate({"$ref": "#/components/schemas/Problem"}, body, where)
        return
    declared = operation["responses"].get(str(status))
    assert declared is not None, f"{where}: status not declared (declared: {sorted(operation['responses'])})"
    response = _resolve(declared)
    assert content_type in response["content"], f"{where}: {content_type} (declared: {sorted(response['content'])})"
    _validate(response["content"][content_type]["schema"], body, where)
    for name in response.get("headers", {}):
        assert name in headers, f"{where}: header {name} missing"
