"""openapi/openapi.json is the app's own document: regenerate it with
`sdms export-openapi --output openapi/openapi.json` when the API changes."""

from __future__ import annotations

import json
from pathlib import Path

from app.cli import openapi_document

EXPORTED = Path(__file__).resolve().parents[1] / "openapi" / "openapi.json"


def test_the_exported_document_is_fresh() -> None:
    assert EXPORTED.read_text(encoding="utf-8") == openapi_document(), (
        "openapi/openapi.json is stale: run `sdms export-openapi --output openapi/openapi.json`"
    )


def test_the_contracts_paths_are_documented() -> None:
    paths = json.loads(EXPORTED.read_text(encoding="utf-8"))["paths"]
    for path in (
        "/api/v1/incidents",
        "/api/v1/incidents/{incident_id}/transitions",
        "/api/v1/incidents/{incident_id}/confirm",
        "/api/v1/incidents/{incident_id}/reject",
        "/api/v1/incidents/{incident_id}/journal",
        "/api/v1/incidents/{incident_id}/escalations",
        "/api/v1/incidents/{incident_id}/sla/rebuild",
        "/api/v1/organizations",
        "/api/v1/users/{user_id}/api-keys/{key_id}",
        "/api/v1/me",
        "/api/v1/slm/calendars/{calendar_id}/add",
        "/api/v1/slm/metrics",
        "/healthz",
        "/readyz",
        "/metrics",
    ):
        assert path in paths, path


def test_the_api_key_is_the_documented_security_scheme() -> None:
    document = json.loads(EXPORTED.read_text(encoding="utf-8"))
    scheme = document["components"]["securitySchemes"]["apiKey"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    assert document["security"] == [{"apiKey": []}]
    assert document["paths"]["/api/v1/incidents"]["post"].get("security") is None  # the default
    for path in ("/healthz", "/readyz", "/metrics"):  # operations' probes need no key
        assert document["paths"][path]["get"]["security"] == []


def test_list_and_report_parameters_are_documented() -> None:
    """Filters and paging are read as one model per request (app/core/queryparams.py); the
    document still lists every parameter, once."""
    paths = json.loads(EXPORTED.read_text(encoding="utf-8"))["paths"]
    filters = {"state", "priority", "organization_id", "assignee_id", "group_id", "service_id"}
    filters |= {"region", "request_type", "channel", "major", "created_after", "created_before"}
    filters |= {"q"}
    paging = {"limit", "cursor", "sort"}
    for path, expected in (
        ("/api/v1/incidents", filters | paging),
        ("/api/v1/slm/metrics", filters | {"from", "to", "group_by"}),
        ("/api/v1/users", paging),
    ):
        names = [p["name"] for p in paths[path]["get"]["parameters"]]
        assert sorted(names) == sorted(set(names)), f"{path}: a parameter twice"
        assert expected <= set(names), f"{path}: {expected - set(names)} missing"
    state = {p["name"]: p for p in paths["/api/v1/incidents"]["get"]["parameters"]}["state"]
    assert state["in"] == "query"
    assert state["schema"]["type"] == "array"
    assert set(state["schema"]["items"]["enum"]) == {
        "new",
        "in_progress",
        "on_hold",
        "resolved",
        "closed",
        "cancelled",
    }


def test_the_idempotency_key_header_is_documented_on_writes() -> None:
    paths = json.loads(EXPORTED.read_text(encoding="utf-8"))["paths"]
    for path in ("/api/v1/incidents", "/api/v1/incidents/{incident_id}/comments"):
        parameters = paths[path]["post"]["parameters"]
        keys = [p for p in parameters if p["name"] == "Idempotency-Key"]
        assert len(keys) == 1 and keys[0]["in"] == "header", parameters
        assert keys[0]["schema"]["maxLength"] == 255
