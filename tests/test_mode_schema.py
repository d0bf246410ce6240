"""The per-mode tables (server/mode_schema.py): the OpenAPI spec's discriminated variants
and the resolver's 400s say the same thing about every (mode, field) pair."""

from __future__ import annotations

import typing

import jsonschema
import pytest

from vsteer.plugins.control_registry import installed_controls
from vsteer.server.errors import APIError
from vsteer.server.openapi_bodies import ChatCompletionBody, json_body

# every control with modes brings its own table (Control.modes)
TABLES = {n: c.modes for n, c in installed_controls().items() if c.modes is not None}
MODELS = {n: c.schema for n, c in installed_controls().items() if c.modes is not None}
# a value each field accepts (the schema's own constraints hold for it)
SAMPLE = {"direction": "d", "controller": "c", "scale": 0.5, "threshold": 0.5,
          "layers": [1], "probe": "p", "max_error": 0.2, "per_token": True,
          "predictor": "x", "target_agreement": 0.9}


def _variants(name: str) -> dict:
    body = json_body(ChatCompletionBody)["requestBody"]["content"]["application/json"]
    control = body["schema"]["properties"]["control"]["anyOf"][0]
    node = control["properties"][name]
    return node["anyOf"][0] if "anyOf" in node else node  # built-ins: [the object, null]


def _required(name: str) -> dict:
    return {"probe": "p"} if name == "hallucination" else {}


def test_every_control_with_modes_brings_its_own_table():
    assert {"refusal", "hallucination", "early_exit"} <= set(TABLES)


@pytest.mark.parametrize("name", sorted(TABLES))
def test_every_mode_of_the_model_has_a_row(name):
    table, model = TABLES[name], MODELS[name]
    modes = typing.get_args(model.model_fields[table.key].annotation)
    assert set(table.applies) == set(modes)
    assert model.model_fields[table.key].default == table.default
    for mode in modes:
        assert table.fields(mode) <= set(model.model_fields) - {table.key}


@pytest.mark.parametrize("name", sorted(TABLES))
def test_spec_and_resolver_agree_on_every_field(name):
    table, model = TABLES[name], MODELS[name]
    schema = _variants(name)
    assert len(schema["oneOf"]) == len(table.applies)
    checked = 0
    for mode in table.applies:
        for field in sorted(set(model.model_fields) - {table.key}):
            body = {**_required(name), table.key: mode, field: SAMPLE[field]}
            spec_ok = jsonschema.Draft202012Validator(schema).is_valid(body)
            try:
                table.check(set(model.model_validate(body).model_fields_set), mode,
                            f"control.{name}")
                server_ok = True
            except APIError as e:
                assert e.status == 400 and e.code == "field_not_applicable"
                assert e.param == f"control.{name}.{field}"
                server_ok = False
            assert spec_ok == server_ok == (field in table.fields(mode)), (mode, field)
            checked += 1
    assert checked == len(table.applies) * (len(model.model_fields) - 1)


@pytest.mark.parametrize("name", sorted(TABLES))
def test_a_body_without_the_mode_matches_only_the_default(name):
    table = TABLES[name]
    schema = _variants(name)
    body = _required(name)
    matches = [v["title"] for v in schema["oneOf"]
               if jsonschema.Draft202012Validator(v).is_valid(body)]
    assert matches == [f"{table.key}: {table.default}"]
    assert jsonschema.Draft202012Validator(schema).is_valid(body)
    assert not jsonschema.Draft202012Validator(schema).is_valid({**body, "nonsense": 1})
