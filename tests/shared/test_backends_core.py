"""Pure pieces of the backends: SSE framing, deadlines, think tags, pooling, schema checks."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator

import anyio
import pytest

from localmcp.shared.backends.pooling import is_per_token, l2_normalise, mean_pool
from localmcp.shared.backends.streaming import ThinkSplitter, sse_data, within_deadline
from localmcp.shared.backends.structured import check_schema, validate_reply
from localmcp.shared.errors import BackendTimeout, BadInput, OutputInvalid


async def _lines(*lines: str) -> AsyncIterator[str]:
    for line in lines:
        yield line


async def _all(stream: AsyncIterator[str]) -> list[str]:
    return [item async for item in stream]


async def test_sse_skips_comments_and_non_data_fields_and_stops_at_done() -> None:
    events = await _all(
        sse_data(
            _lines(
                ": ping",
                "",
                "event: message",
                'data: {"a": 1}',
                "",
                "id: 7",
                'data:{"b": 2}',
                "",
                "data: [DONE]",
                "",
                'data: {"after": "done"}',
                "",
            )
        )
    )
    assert events == ['{"a": 1}', '{"b": 2}']


async def test_sse_joins_multi_line_data_and_flushes_last_event_without_blank_line() -> None:
    events = await _all(sse_data(_lines("data: first", "data: second", "", 'data: {"x": 1}\r')))
    assert events == ["first\nsecond", '{"x": 1}']


async def test_within_deadline_raises_the_given_error_when_the_source_stalls() -> None:
    async def slow() -> AsyncIterator[int]:
        yield 1
        await anyio.sleep(5)
        yield 2

    got: list[int] = []
    deadline = anyio.current_time() + 0.2
    with pytest.raises(BackendTimeout, match="too slow"):
        async for item in within_deadline(slow(), deadline, lambda: BackendTimeout("too slow")):
            got.append(item)
    assert got == [1]


@pytest.mark.parametrize(
    ("pieces", "thinking", "answer"),
    [
        (["<think>plan", " it</think>", "Answer"], "plan it", "Answer"),
        (["<thi", "nk>a", "b</th", "ink>\n", "c"], "ab", "c"),
        (["  <think>x</think>y"], "x", "y"),
        (["No tags <think> here"], "", "No tags <think> here"),
        (["<", "b>bold</b>"], "", "<b>bold</b>"),
        (["<think>never closed"], "never closed", ""),
        (["你好 🚀"], "", "你好 🚀"),
    ],
)
def test_think_splitter_separates_leading_reasoning_even_across_chunks(
    pieces: list[str], thinking: str, answer: str
) -> None:
    splitter = ThinkSplitter()
    got_thinking, got_answer = "", ""
    for piece in pieces:
        t, a = splitter.feed(piece)
        got_thinking += t
        got_answer += a
    t, a = splitter.flush()
    assert (got_thinking + t, got_answer + a) == (thinking, answer)


def test_mean_pool_averages_tokens_then_normalises_to_unit_length() -> None:
    pooled = mean_pool([[1.0, 0.0, 2.0], [3.0, 0.0, 2.0]])
    # mean is (2, 0, 2); unit length divides by sqrt(8)
    assert pooled == pytest.approx([1 / math.sqrt(2), 0.0, 1 / math.sqrt(2)])
    assert math.fsum(x * x for x in pooled) == pytest.approx(1.0)


def test_mean_pool_refuses_ragged_or_empty_input() -> None:
    with pytest.raises(ValueError, match="differ"):
        mean_pool([[1.0, 2.0], [1.0]])
    with pytest.raises(ValueError, match="no token"):
        mean_pool([])


def test_per_token_detection_and_zero_vector_normalisation() -> None:
    assert is_per_token([[0.1, 0.2], [0.3, 0.4]])
    assert not is_per_token([0.1, 0.2])
    assert not is_per_token([])
    assert l2_normalise([0.0, 0.0]) == [0.0, 0.0]


SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
    "required": ["city", "population"],
}


def test_validate_reply_returns_the_parsed_value_when_it_satisfies_the_schema() -> None:
    assert validate_reply('{"city": "東京", "population": 14}', SCHEMA, model="m") == {
        "city": "東京",
        "population": 14,
    }


def test_validate_reply_names_the_failing_field_and_the_rule() -> None:
    with pytest.raises(OutputInvalid) as info:
        validate_reply('{"city": "Oslo", "population": "many"}', SCHEMA, model="m")
    assert "population" in str(info.value)
    assert "'many' is not of type 'integer'" in str(info.value)


def test_validate_reply_refuses_text_that_is_not_json() -> None:
    with pytest.raises(OutputInvalid, match="not JSON"):
        validate_reply("Sure! Here is the JSON you asked for", SCHEMA, model="m")


def test_check_schema_refuses_non_objects_and_invalid_schemas() -> None:
    with pytest.raises(BadInput, match="must be a JSON object"):
        check_schema(["type", "object"])
    with pytest.raises(BadInput, match="not a valid JSON Schema"):
        check_schema({"type": "no-such-type"})
    assert check_schema(SCHEMA) is SCHEMA


CYCLE = {
    "$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"allOf": [{"$ref": "#/$defs/a"}]}},
    "type": "object",
    "properties": {"x": {"$ref": "#/$defs/a"}},
}


@pytest.mark.parametrize(
    ("schema", "needle"),
    [
        ({"$ref": "#"}, "never descending"),
        (CYCLE, "never descending"),
        ({"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}, "never descending"),
        ({"properties": {"x": {"$ref": "#/$defs/missing"}}}, "#/$defs/missing"),
        ({"$ref": "#nowhere"}, "#nowhere"),
        ({"$ref": "https://example.com/schema.json"}, "not inside the schema"),
        ({"items": {"$ref": "other.json#/x"}}, "not inside the schema"),
        ({"$ref": 7}, "7 is not of type 'string'"),
    ],
    ids=[
        "self",
        "cycle",
        "self-def",
        "missing-def",
        "missing-anchor",
        "remote",
        "relative",
        "non-string",
    ],
)
def test_check_schema_refuses_unusable_refs_up_front(
    schema: dict[str, object], needle: str
) -> None:
    with pytest.raises(BadInput) as info:
        check_schema(schema)
    assert needle in str(info.value)
    assert info.value.hint


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "properties": {"kids": {"type": "array", "items": {"$ref": "#"}}}},
        {
            "$defs": {"node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/node"}}}},
            "$ref": "#/$defs/node",
        },
        {"$defs": {"a b": {"$anchor": "item", "type": "string"}}, "items": {"$ref": "#item"}},
        {"$defs": {"x/y": {"type": "integer"}}, "properties": {"v": {"$ref": "#/$defs/x~1y"}}},
        {"definitions": {"n": {"type": "number"}}, "anyOf": [{"$ref": "#/definitions/n"}]},
    ],
    ids=["tree", "linked-list", "anchor", "escaped-pointer", "draft7-definitions"],
)
def test_check_schema_keeps_recursive_schemas_that_descend(schema: dict[str, object]) -> None:
    assert check_schema(schema) is schema


@pytest.mark.parametrize(
    "schema",
    [{"$ref": "#"}, {"$ref": "#/$defs/missing"}, {"$ref": "https://example.com/s.json"}],
    ids=["self", "missing", "remote"],
)
def test_validate_reply_turns_unusable_schemas_into_bad_input(schema: dict[str, object]) -> None:
    with pytest.raises(BadInput, match="json_schema cannot be used"):
        validate_reply('{"a": 1}', schema, model="m")


async def test_sse_keep_done_yields_the_marker_so_a_cut_stream_can_be_told_apart() -> None:
    finished = await _all(
        sse_data(_lines('data: {"a": 1}', "", "data: [DONE]", ""), keep_done=True)
    )
    assert finished == ['{"a": 1}', "[DONE]"]
    unterminated = await _all(sse_data(_lines("data: [DONE]"), keep_done=True))
    assert unterminated == ["[DONE]"]
    cut = await _all(sse_data(_lines('data: {"a": 1}', ""), keep_done=True))
    assert cut == ['{"a": 1}']


def test_pooling_huge_components_stays_finite() -> None:
    assert l2_normalise([1e200, 1e200]) == pytest.approx([math.sqrt(0.5)] * 2)
    assert mean_pool([[1e308, 0.0], [1e308, 0.0]]) == pytest.approx([1.0, 0.0])
