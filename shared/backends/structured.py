"""JSON-schema structured output: check the schema before sending, validate the reply after."""

from __future__ import annotations

import json
from typing import Any

from ..errors import BadInput, OutputInvalid


def check_schema(schema: Any) -> dict[str, Any]:
    """Refuse a ``json_schema`` argument that is not a valid JSON Schema object."""
    if not isinstance(schema, dict):
        raise BadInput(
            f"json_schema must be a JSON object, got {type(schema).__name__}.",
            hint='Pass a JSON Schema such as {"type": "object", "properties": {...}}.',
        )
    from jsonschema import SchemaError
    from jsonschema.validators import validator_for

    try:
        validator_for(schema).check_schema(schema)
    except SchemaError as exc:
        raise BadInput(
            f"json_schema is not a valid JSON Schema: {exc.message}.",
            hint="Fix the schema (see json-schema.org) and retry.",
        ) from exc
    return schema


def validate_reply(text: str, schema: dict[str, Any], *, model: str) -> Any:
    """Parse ``text`` as JSON and validate it against ``schema``; ``OutputInvalid`` if not."""
    from jsonschema import ValidationError
    from jsonschema.validators import validator_for

    snippet = text if len(text) <= 200 else text[:200] + "..."
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise OutputInvalid(
            f"model {model!r} replied with text that is not JSON ({exc}): {snippet!r}.",
            hint="Retry, raise max_tokens if the reply was cut off, or use a larger model.",
            model=model,
        ) from exc
    validator = validator_for(schema)(schema)
    try:
        validator.validate(value)
    except ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(root)"
        raise OutputInvalid(
            f"model {model!r} replied with JSON that does not satisfy the schema at {where}: "
            f"{exc.message}. Reply: {snippet!r}.",
            hint="Retry, simplify the schema, or use a model that follows schemas better.",
            model=model,
        ) from exc
    return value
