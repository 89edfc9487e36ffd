"""Query parameters read as one pydantic model.

FastAPI resolves each declared query parameter on its own, through several layers of Python per
parameter and request: on the incident list's sixteen parameters that was ~250 µs of every
request (bench/README.md). A `QueryModel` dependency reads the query string once and validates
it with one model: the same rules, the same 422 answers (`loc` starts with `"query"`), and the
same parameters in the OpenAPI document (`document`, called before a router is included: it
declares the `openapi_parameters` of every dependency that has them, `QueryModel`s and the
write dependency's Idempotency-Key header).
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from fastapi import APIRouter
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.requests import Request

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


def _is_list(annotation: Any) -> bool:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(_is_list(arg) for arg in typing.get_args(annotation))
    return typing.get_origin(annotation) is list


def _inline(schema: Any, definitions: dict[str, Any]) -> Any:
    """The schema with every `#/$defs/...` reference replaced by its definition."""
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline(definitions[ref.removeprefix("#/$defs/")], definitions)
        return {key: _inline(value, definitions) for key, value in schema.items()}
    if isinstance(schema, list):
        return [_inline(item, definitions) for item in schema]
    return schema


class QueryModel(Generic[M, T]):
    """A dependency: the request's query parameters validated as `model`, then `build` makes
    what the handler gets of it. Repeat a parameter for a list field (`state=new&state=closed`);
    for any other field the last value counts, as with FastAPI's own parameters. Unknown
    parameters are ignored.

    Declare it after the caller's dependency (`CurrentCall`, a role): dependencies are
    resolved in order, so a request without a key then gets its 401 before any 422. Its 422
    names the errors of this model only, not those of parameters FastAPI checks itself on the
    same route (FastAPI would gather them into one answer)."""

    def __init__(self, model: type[M], build: Callable[[M], T]) -> None:
        self.model = model
        self.build = build
        self._lists = frozenset(
            name for name, field in model.model_fields.items() if _is_list(field.annotation)
        )
        schema = model.model_json_schema()
        definitions = schema.get("$defs", {})
        self.openapi_parameters = [
            {
                "name": name,
                "in": "query",
                "required": field.is_required(),
                "schema": _inline(schema["properties"][name], definitions),
                **({"description": field.description} if field.description else {}),
            }
            for name, field in model.model_fields.items()
        ]

    async def __call__(self, request: Request) -> T:
        query = request.query_params
        lists = self._lists
        data = {name: query.getlist(name) if name in lists else query[name] for name in query}
        try:
            value = self.model.model_validate(data)
        except ValidationError as exc:
            raise RequestValidationError(
                [{**e, "loc": ("query", *e["loc"])} for e in exc.errors(include_url=False)]
            ) from None
        return self.build(value)


def query_names(route: object) -> frozenset[str]:
    """The query parameters a route knows: its `QueryModel`s' and FastAPI's own (others are
    ignored). Worked out once per route."""
    names: frozenset[str] | None = getattr(route, "_sdms_query_names", None)
    if names is None:
        names = frozenset()
        if isinstance(route, APIRoute):
            dependant = route.dependant
            names = frozenset(
                {*_declared_query(dependant)}
                | {p["name"] for p in _documented(dependant) if p["in"] == "query"}
            )
        if route is not None:
            route._sdms_query_names = names  # type: ignore[attr-defined]
    return names


def _declared_query(dependant: Dependant) -> Iterator[str]:
    """The query parameters FastAPI itself reads for a route, depth first."""
    for parameter in dependant.query_params:
        yield parameter.alias
    for dependency in dependant.dependencies:
        yield from _declared_query(dependency)


def _documented(dependant: Dependant) -> Iterator[dict[str, Any]]:
    """The `openapi_parameters` of the dependencies of a route, depth first."""
    for dependency in dependant.dependencies:
        yield from getattr(dependency.call, "openapi_parameters", ())
        yield from _documented(dependency)


def document(router: APIRouter) -> None:
    """Declare the `openapi_parameters` of the dependencies of the router's routes in their
    OpenAPI operations (before the router is included in the app)."""
    for route in router.routes:
        if isinstance(route, APIRoute):
            extra = route.openapi_extra or {}
            declared = extra.get("parameters", [])
            names = {p["name"] for p in declared}  # apps made again (tests) find them there
            parameters = []
            for parameter in _documented(route.dependant):
                if parameter["name"] not in names:
                    names.add(parameter["name"])
                    parameters.append(parameter)
            if parameters:
                route.openapi_extra = {**extra, "parameters": [*declared, *parameters]}
