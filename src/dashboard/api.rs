//! `/api/v1/errors` (the error view's filters and paging, as JSON) and the OpenAPI document
//! of `/api/v1` (`/api/v1/openapi.json`, written by hand: the API is small and its shapes are
//! the status files' of SPEC §3).

use serde_json::{Value, json};

use crate::errors::Exported;
use crate::state::ErrorRecord;

use super::filter::ErrorParams;

/// The body of `/api/v1/errors`: `matched` counts every record the filter selects (all
/// pages); `next` is the URL of the next (older) page, absent on the last.
pub(crate) fn errors(
    params: &ErrorParams,
    matched: u64,
    records: &[ErrorRecord],
    next: Option<i64>,
) -> Value {
    let mut doc = json!({
        "formatVersion": 1,
        "matched": matched,
        "shown": records.len(),
        "errors": records.iter().map(Exported::of).collect::<Vec<_>>(),
    });
    if let Some(next) = next {
        doc["next"] = json!(format!("/api/v1/errors{}", params.link(Some(next))));
    }
    doc
}

fn string_param(name: &str, description: &str, values: &[&str]) -> Value {
    let mut schema = json!({ "type": "string" });
    if !values.is_empty() {
        schema["enum"] = json!(values);
    }
    json!({ "name": name, "in": "query", "required": false, "description": description, "schema": schema })
}

fn path_param(name: &str) -> Value {
    json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } })
}

fn status_list(kind: &str, description: &str) -> Value {
    json!({ "get": { "summary": description, "responses": { "200": {
        "description": format!("a list of {kind} documents (apiVersion, kind, metadata, status)"),
        "content": { "application/json": { "schema": { "type": "array", "items": { "$ref": "#/components/schemas/StatusFile" } } } }
    } } } })
}

fn status_one(kind: &str, description: &str, param: &str) -> Value {
    json!({ "get": { "summary": description, "parameters": [path_param(param)], "responses": {
        "200": { "description": format!("the {kind} document"), "content": { "application/json": { "schema": { "$ref": "#/components/schemas/StatusFile" } } } },
        "404": { "description": "no such name", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Problem" } } } }
    } } })
}

/// The OpenAPI 3.1 document of `/api/v1`.
pub(crate) fn openapi() -> Value {
    let filters = vec![
        string_param("map", "only this map", &[]),
        string_param(
            "type",
            "the error type",
            &[
                "ApplicationError",
                "NetworkError",
                "TransformError",
                "SchemaError",
                "ConflictError",
            ],
        ),
        string_param(
            "direction",
            "the data source",
            &["SourceToDestination", "DestinationToSource"],
        ),
        string_param(
            "phase",
            "the phase the record failed in",
            &["InitialSync", "Live", "CatchUp"],
        ),
        string_param(
            "from",
            "latest failure at or after: RFC 3339 or an age (15m, 1h, 1d)",
            &[],
        ),
        string_param("to", "latest failure before: RFC 3339 or an age", &[]),
        string_param(
            "state",
            "records in this state (default Open)",
            &["Open", "Superseded", "Retried", "all"],
        ),
        string_param(
            "before",
            "only ids below this one: the next page (see `next`)",
            &[],
        ),
        string_param("limit", "records per page, 1 to 500 (default 50)", &[]),
    ];
    json!({
        "openapi": "3.1.0",
        "info": { "title": "dualwrite", "version": "v1", "description": "The JSON API of `dualwrite run` and `dualwrite dashboard`. Read-only." },
        "paths": {
            "/api/v1/errors": { "get": {
                "summary": "Errored records, newest first, paged by id (keyset)",
                "parameters": filters,
                "responses": {
                    "200": { "description": "a page", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/ErrorPage" } } } },
                    "400": { "description": "a filter that does not parse", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Problem" } } } }
                }
            } },
            "/api/v1/maps": status_list("TableMapStatus", "every map's status"),
            "/api/v1/maps/{name}": status_one("TableMapStatus", "one map's status", "name"),
            "/api/v1/alerts": status_list("AlertRuleStatus", "every alert rule's status"),
            "/api/v1/alerts/{name}": status_one("AlertRuleStatus", "one alert rule's status", "name"),
            "/api/v1/requests": status_list("ErrorRequestStatus", "every ErrorRequest's status"),
            "/api/v1/requests/{name}": status_one("ErrorRequestStatus", "one ErrorRequest's status", "name"),
            "/api/v1/service": { "get": { "summary": "revision, config validity, last pass error, leases held (dualwrite run only)", "responses": { "200": { "description": "the service", "content": { "application/json": { "schema": { "type": "object" } } } } } } }
        },
        "components": { "schemas": {
            "Problem": { "type": "object", "required": ["error"], "properties": { "error": { "type": "string" } } },
            "StatusFile": { "type": "object", "required": ["apiVersion", "kind", "metadata", "status"], "properties": {
                "apiVersion": { "type": "string" }, "kind": { "type": "string" },
                "metadata": { "type": "object", "properties": { "name": { "type": "string" } } },
                "status": { "type": "object" } } },
            "ErrorRecord": { "type": "object", "required": ["id", "scope", "map", "phase", "direction", "type", "key", "message", "firstAt", "lastAt", "attempts", "state"], "properties": {
                "id": { "type": "integer" }, "scope": { "enum": ["Record", "Map"] }, "map": { "type": "string" },
                "phase": { "enum": ["InitialSync", "Live", "CatchUp"] }, "direction": { "type": "string" },
                "type": { "type": "string" }, "key": {}, "row": {}, "message": { "type": "string" },
                "code": { "type": "string" }, "firstAt": { "type": "string" }, "lastAt": { "type": "string" },
                "attempts": { "type": "integer" }, "state": { "enum": ["Open", "Superseded", "Retried"] } } },
            "ErrorPage": { "type": "object", "required": ["formatVersion", "matched", "shown", "errors"], "properties": {
                "formatVersion": { "const": 1 }, "matched": { "type": "integer" }, "shown": { "type": "integer" },
                "errors": { "type": "array", "items": { "$ref": "#/components/schemas/ErrorRecord" } },
                "next": { "type": "string", "description": "the URL of the next (older) page; absent on the last" } } }
        } }
    })
}
