"""JSON-schema structured output: check the schema before sending, validate the reply after.

``check_schema`` refuses, before any engine is asked, schemas that could never validate a
reply: invalid ones, ``$ref`` to anything outside the schema itself (no URL is ever fetched,
here or by an engine's grammar converter), ``$ref`` to a definition or anchor that does not
exist, and references that loop back to themselves without descending into the value (such
as ``{"$ref": "#"}``), which would recurse forever. It then validates a few trivial values as
a probe, so anything else the validator cannot apply is refused up front too.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

from ..errors import BadInput, OutputInvalid

_REF_KEYS = ("$ref", "$dynamicRef", "$recursiveRef")
#: keywords whose value is data, not a subschema: never searched for references
_DATA_KEYWORDS = frozenset({"const", "enum", "default", "examples"})
#: keywords that apply subschemas to the *same* value (a loop through these never ends)
_SAME_VALUE_LISTS = ("allOf", "anyOf", "oneOf")
_SAME_VALUE_ONE = ("not", "if", "then", "else")
_SAME_VALUE_MAPS = ("dependentSchemas", "dependencies")
#: values validated as a probe: each is cheap, and together they reach every type branch
_PROBES: tuple[Any, ...] = (None, False, 0, 0.5, "", [], {})
REF_HINT = (
    'Keep definitions inside the schema (under "$defs") and refer to them as '
    '"#/$defs/NAME"; a recursive schema must descend into a property or item before it '
    "refers back."
)


def check_schema(schema: Any) -> dict[str, Any]:
    """Refuse a ``json_schema`` argument that is not a usable JSON Schema object."""
    if not isinstance(schema, dict):
        raise BadInput(
            f"json_schema must be a JSON object, got {type(schema).__name__}.",
            hint='Pass a JSON Schema such as {"type": "object", "properties": {...}}.',
        )
    from jsonschema import SchemaError
    from jsonschema.validators import validator_for

    try:
        validator_for(schema).check_schema(schema)
        _check_refs(schema)
    except SchemaError as exc:
        raise BadInput(
            f"json_schema is not a valid JSON Schema: {exc.message}.",
            hint="Fix the schema (see json-schema.org) and retry.",
        ) from exc
    except RecursionError as exc:
        raise BadInput(
            "json_schema is nested too deeply to be checked.",
            hint='Flatten the schema, moving repeated parts under "$defs".',
        ) from exc
    validator = _validator(schema)
    for probe in _PROBES:
        try:
            _errors(validator, probe)
        except Exception as exc:
            raise _unusable(schema, exc) from exc
    return schema


def validate_reply(text: str, schema: dict[str, Any], *, model: str) -> Any:
    """Parse ``text`` as JSON and validate it against ``schema``; ``OutputInvalid`` if not.

    A schema that cannot be applied at all (``BadInput``) is reported as such rather than as
    a failure of the reply.
    """
    snippet = text if len(text) <= 200 else text[:200] + "..."
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise OutputInvalid(
            f"model {model!r} replied with text that is not JSON ({exc}): {snippet!r}.",
            hint="Retry, raise max_tokens if the reply was cut off, or use a larger model.",
            model=model,
        ) from exc
    try:
        validator = _validator(schema)
        errors = _errors(validator, value)
    except Exception as exc:
        raise _unusable(schema, exc) from exc
    if errors:
        error = errors[0]
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        raise OutputInvalid(
            f"model {model!r} replied with JSON that does not satisfy the schema at {where}: "
            f"{error.message}. Reply: {snippet!r}.",
            hint="Retry, simplify the schema, or use a model that follows schemas better.",
            model=model,
        )
    return value


# -- helpers ----------------------------------------------------------------------------------


def _validator(schema: dict[str, Any]) -> Any:
    """A validator for ``schema`` whose registry is empty, so it never retrieves a URL."""
    from jsonschema.validators import validator_for
    from referencing import Registry

    return validator_for(schema)(schema, registry=Registry())


def _errors(validator: Any, value: Any) -> list[Any]:
    """Every validation error of ``value`` (raises what the validator cannot handle)."""
    return list(validator.iter_errors(value))


def _unusable(schema: dict[str, Any], exc: Exception) -> BadInput:
    """``BadInput`` for a schema the validator could not apply (``exc`` says why)."""
    from referencing.exceptions import Unresolvable

    if isinstance(exc, RecursionError):
        reason = "validating with it recurses without end (a $ref loop)"
    elif isinstance(exc, Unresolvable):
        reason = f"a $ref cannot be resolved ({exc})"
    else:
        reason = f"{type(exc).__name__}: {exc}"
    return BadInput(f"json_schema cannot be used to validate a reply: {reason}.", hint=REF_HINT)


def _subschemas(node: Any, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every object inside ``node`` that may be a schema, with its JSON pointer."""
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            if key not in _DATA_KEYWORDS:
                escaped = str(key).replace("~", "~0").replace("/", "~1")
                yield from _subschemas(value, f"{path}/{escaped}")
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from _subschemas(item, f"{path}/{index}")


def _check_refs(schema: dict[str, Any]) -> None:
    """Refuse references outside the schema, to nothing, or in a loop that never descends."""
    nodes = list(_subschemas(schema, "#"))
    anchors: dict[str, dict[str, Any]] = {}
    for _, node in nodes:
        for key in ("$anchor", "$dynamicAnchor"):
            if isinstance(node.get(key), str):
                anchors.setdefault(node[key], node)
        if isinstance(node.get("$id"), str) and node["$id"].startswith("#"):
            anchors.setdefault(node["$id"][1:], node)  # draft 4-7 plain-name fragments
    targets: dict[int, list[tuple[str, dict[str, Any]]]] = {}
    for path, node in nodes:
        for key in _REF_KEYS:
            if key not in node:
                continue
            ref = node[key]
            if isinstance(ref, dict | bool):
                continue  # a property *named* "$ref" inside a "properties" mapping
            if not isinstance(ref, str):
                raise BadInput(
                    f"json_schema has a {key} at {path} that is not a string: {ref!r}.",
                    hint=REF_HINT,
                )
            if not ref.startswith("#"):
                raise BadInput(
                    f"json_schema refers to {ref!r} at {path}, which is not inside the schema; "
                    "references to other documents or URLs are not followed.",
                    hint=REF_HINT,
                )
            target = _resolve(schema, ref, anchors)
            if target is None:
                raise BadInput(
                    f"json_schema refers to {ref!r} at {path}, which does not exist in the schema.",
                    hint=REF_HINT,
                )
            targets.setdefault(id(node), []).append((ref, target))
    _refuse_loops(nodes, targets)


def _resolve(
    root: dict[str, Any], ref: str, anchors: dict[str, dict[str, Any]]
) -> dict[str, Any] | None:
    """The schema object a local reference points at, or None (booleans count as found)."""
    fragment = unquote(ref[1:])
    if fragment and not fragment.startswith("/"):
        return anchors.get(fragment)
    node: Any = root
    for raw in fragment.split("/")[1:]:
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    if isinstance(node, bool):
        return {}  # true / false schemas: valid targets that refer to nothing
    return node if isinstance(node, dict) else None


def _same_value_children(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Subschemas applied to the same value as ``node`` (not to a property or item)."""
    for key in _SAME_VALUE_LISTS:
        if isinstance(node.get(key), list):
            yield from (item for item in node[key] if isinstance(item, dict))
    for key in _SAME_VALUE_ONE:
        if isinstance(node.get(key), dict):
            yield node[key]
    for key in _SAME_VALUE_MAPS:
        if isinstance(node.get(key), dict):
            yield from (item for item in node[key].values() if isinstance(item, dict))


def _refuse_loops(
    nodes: list[tuple[str, dict[str, Any]]], targets: dict[int, list[tuple[str, dict[str, Any]]]]
) -> None:
    """``BadInput`` when references lead from a schema back to itself on the same value."""

    def edges(node: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
        yield from targets.get(id(node), [])
        yield from (("", child) for child in _same_value_children(node))

    done: set[int] = set()
    for _, start in nodes:
        if id(start) in done:
            continue
        # Iterative depth-first search, so a deeply nested schema cannot exhaust the stack.
        stack = [(start, edges(start), "")]
        on_path = {id(start): 0}
        while stack:
            node, pending, _ = stack[-1]
            step = next(pending, None)
            if step is None:
                stack.pop()
                del on_path[id(node)]
                done.add(id(node))
                continue
            ref, child = step
            if id(child) in on_path:
                refs = [label for _, _, label in stack[on_path[id(child)] + 1 :]] + [ref]
                chain = " -> ".join(r for r in refs if r) or "a loop of allOf/anyOf/oneOf/not"
                raise BadInput(
                    f"json_schema loops back to itself ({chain}), never descending into a "
                    "property or item, so validating a reply would never end.",
                    hint=REF_HINT,
                )
            if id(child) not in done:
                on_path[id(child)] = len(stack)
                stack.append((child, edges(child), ref))
