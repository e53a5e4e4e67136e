//! What every service's OpenAPI document says about failures.
//!
//! Handlers describe their own answers with utoipa. The answers the kit gives on every
//! handler's behalf are added here: a JSON body that does not parse (`400`), is too large
//! (`413`), is not declared `application/json` (`415`) or has a field of the wrong type
//! (`422`). Every failure is then described as what it is on the wire, a [`Problem`]
//! document (`application/problem+json`), so a client, and a contract test, can rely on
//! its shape. [`camel_case_links`] mends what utoipa itself writes wrong.
//!
//! [`Problem`]: crate::Problem

use serde_json::{Map, Value, json};

use crate::errors::PROBLEM_JSON;

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Every operation of an OpenAPI document, mutably.
pub fn operations_mut(doc: &mut Value) -> impl Iterator<Item = &mut Map<String, Value>> {
    doc["paths"]
        .as_object_mut()
        .into_iter()
        .flat_map(|paths| paths.values_mut())
        .filter_map(Value::as_object_mut)
        .flat_map(|item| {
            item.iter_mut()
                .filter(|(method, _)| METHODS.contains(&method.as_str()))
                .filter_map(|(_, op)| op.as_object_mut())
        })
}

/// Adds the answer `status` to `operation`, unless the operation describes it already.
pub fn add_response(operation: &mut Map<String, Value>, status: u16, description: &str) {
    let responses = operation
        .entry("responses")
        .or_insert_with(|| json!({}))
        .as_object_mut();
    if let Some(responses) = responses {
        responses
            .entry(status.to_string())
            .or_insert_with(|| json!({ "description": description }));
    }
}

/// Adds the kit's own answers to each operation with a request body, and describes every
/// `4xx`/`5xx` answer without content as a problem document (with the `Problem` and
/// `FieldError` schemas in `components`). Applying it twice changes nothing.
pub fn document_problems(doc: &mut Value) {
    for op in operations_mut(doc) {
        if op.contains_key("requestBody") {
            add_response(op, 400, "The body is not JSON (problem document)");
            add_response(
                op,
                413,
                "The body is larger than this route accepts (problem document)",
            );
            add_response(
                op,
                415,
                "The body is not declared `application/json` (problem document)",
            );
            add_response(
                op,
                422,
                "A field is missing, of the wrong type or invalid, named in `errors` (problem document)",
            );
        }
        let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else {
            continue;
        };
        for (status, response) in responses.iter_mut() {
            let failure = status.starts_with('4') || status.starts_with('5');
            if let Some(response) = response.as_object_mut()
                && failure
                && !response.contains_key("content")
            {
                let mut content = Map::new();
                content.insert(
                    PROBLEM_JSON.to_owned(),
                    json!({"schema": {"$ref": "#/components/schemas/Problem"}}),
                );
                response.insert("content".to_owned(), Value::Object(content));
            }
        }
    }
    if !doc["components"].is_object() {
        doc["components"] = json!({});
    }
    if !doc["components"]["schemas"].is_object() {
        doc["components"]["schemas"] = json!({});
    }
    if let Some(schemas) = doc["components"]["schemas"].as_object_mut() {
        schemas.insert("Problem".to_owned(), problem_schema());
        schemas.insert("FieldError".to_owned(), field_error_schema());
    }
}

/// Renames the members of response links to the names OpenAPI gives them: utoipa 5.5
/// writes `operation_id`, `operation_ref` and `request_body`, which no client reads.
pub fn camel_case_links(doc: &mut Value) {
    for op in operations_mut(doc) {
        let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else {
            continue;
        };
        let links = responses
            .values_mut()
            .filter_map(|r| r.get_mut("links").and_then(Value::as_object_mut))
            .flat_map(|links| links.values_mut())
            .filter_map(Value::as_object_mut);
        for link in links {
            for (from, to) in [
                ("operation_id", "operationId"),
                ("operation_ref", "operationRef"),
                ("request_body", "requestBody"),
            ] {
                if let Some(value) = link.remove(from) {
                    link.insert(to.to_owned(), value);
                }
            }
        }
    }
}

fn problem_schema() -> Value {
    json!({
        "type": "object",
        "description": "An RFC 9457 problem document.",
        "required": ["type", "title", "status"],
        "properties": {
            "type": {"type": "string", "description": "Stable machine-readable kind, `urn:flotilla:problem:<slug>`."},
            "title": {"type": "string", "description": "Short human summary, the same for every problem of this kind."},
            "status": {"type": "integer", "minimum": 400, "maximum": 599, "description": "The HTTP status code."},
            "detail": {"type": "string", "description": "What happened this time, for a human."},
            "instance": {"type": "string", "description": "The request path this problem answers."},
            "errors": {
                "type": "array",
                "description": "The invalid fields, for validation failures.",
                "items": {"$ref": "#/components/schemas/FieldError"},
            },
        },
    })
}

fn field_error_schema() -> Value {
    json!({
        "type": "object",
        "description": "One invalid input field.",
        "required": ["field", "message"],
        "properties": {
            "field": {"type": "string", "description": "The field's path in the request (`items[0].quantity`, `limit`)."},
            "message": {"type": "string", "description": "What is wrong with it, for a human."},
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> Value {
        json!({"openapi": "3.1.0", "paths": {
            "/api/products": {
                "get": {"responses": {"200": {"description": "page", "content": {"application/json": {}}}}},
                "post": {
                    "requestBody": {"content": {"application/json": {}}},
                    "responses": {
                        "201": {"description": "created"},
                        "409": {"description": "exists"},
                        "422": {"description": "invalid, the handler's words"},
                    },
                },
                "parameters": [],
            },
        }})
    }

    #[test]
    fn bodies_get_the_extractors_answers_and_failures_are_problems() {
        let mut doc = doc();
        document_problems(&mut doc);
        let post = &doc["paths"]["/api/products"]["post"]["responses"];
        for status in ["400", "409", "413", "415", "422"] {
            assert_eq!(
                post[status]["content"][PROBLEM_JSON]["schema"]["$ref"],
                "#/components/schemas/Problem",
                "{status}: {post}"
            );
        }
        assert_eq!(post["422"]["description"], "invalid, the handler's words");
        assert!(post["201"].get("content").is_none());
        let get = &doc["paths"]["/api/products"]["get"]["responses"];
        assert!(get.get("415").is_none(), "no body, no 415: {get}");
        assert_eq!(
            doc["components"]["schemas"]["Problem"]["required"],
            json!(["type", "title", "status"])
        );
        assert!(doc["components"]["schemas"]["FieldError"].is_object());
    }

    #[test]
    fn links_use_openapi_names() {
        let mut doc = json!({"paths": {"/api/orders": {"post": {"responses": {"202": {
            "description": "accepted",
            "links": {"GetOrder": {
                "operation_id": "get_order",
                "parameters": {"id": "$response.body#/order_id"},
            }},
        }}}}}});
        camel_case_links(&mut doc);
        let link = &doc["paths"]["/api/orders"]["post"]["responses"]["202"]["links"]["GetOrder"];
        assert_eq!(link["operationId"], "get_order");
        assert!(link.get("operation_id").is_none());
        assert_eq!(link["parameters"]["id"], "$response.body#/order_id");
    }

    #[test]
    fn documenting_twice_changes_nothing() {
        let mut once = doc();
        document_problems(&mut once);
        let mut twice = once.clone();
        document_problems(&mut twice);
        assert_eq!(once, twice);
    }
}
