//! OpenAPI 3.1 document of the admin API, built from the route table and the body types and
//! served at `/openapi.json`.

use serde_json::{Map, Value, json};

use super::routes::{Access, ROUTES, Route};
use super::views::ErrorBody;

/// Builds the OpenAPI document of every route in [`ROUTES`].
pub fn document() -> Value {
    let mut schemas = Vec::new();
    let mut paths = Map::new();
    for route in ROUTES.iter() {
        for body in route.request.iter().chain(route.response.iter()) {
            (body.schemas)(&mut schemas);
        }
        let item = paths
            .entry(route.path.to_owned())
            .or_insert_with(|| json!({}));
        item[route.method.as_str().to_lowercase()] = operation(route);
    }

    <ErrorBody as utoipa::ToSchema>::schemas(&mut schemas);
    schemas.push((
        <ErrorBody as utoipa::ToSchema>::name().into_owned(),
        <ErrorBody as utoipa::PartialSchema>::schema(),
    ));

    let mut components = Map::new();
    for (name, schema) in schemas {
        let value = serde_json::to_value(schema).unwrap_or(Value::Null);
        components.insert(name, value);
    }

    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Keyhold admin API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Domains, SigV4 credentials, keys and their lifecycle, policies, \
                principals and tokens, external key stores, self-service key creation and \
                audit records. Every call needs `Authorization: Bearer <token>`. Errors are \
                `{\"error\": {\"code\", \"message\"}}` with a stable code.",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": { "type": "http", "scheme": "bearer", "bearerFormat": "khat_<id>_<secret>" },
            },
        },
        "security": [{ "bearer": [] }],
    })
}

/// Builds the operation object of one route.
fn operation(route: &Route) -> Value {
    let mut operation = json!({
        "operationId": route.operation_id,
        "summary": route.summary,
        "description": access_text(route.access),
        "parameters": parameters(route),
        "responses": responses(route),
    });
    if let Some(body) = route.request {
        operation["requestBody"] = json!({
            "required": true,
            "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{}", (body.name)()) } } },
        });
    }
    operation
}

/// Builds the path parameters of a route, and the `limit` query parameter of the audit routes.
fn parameters(route: &Route) -> Vec<Value> {
    let mut parameters = Vec::new();
    for part in route.path.split('/') {
        if let Some(name) = part
            .strip_prefix('{')
            .and_then(|inner| inner.strip_suffix('}'))
        {
            let schema = if name == "version" {
                json!({ "type": "integer", "minimum": 1, "maximum": u32::MAX })
            } else {
                json!({ "type": "string", "minLength": 1 })
            };
            parameters
                .push(json!({ "name": name, "in": "path", "required": true, "schema": schema }));
        }
    }
    if route.operation_id.ends_with("Audit") {
        parameters.push(json!({
            "name": "limit", "in": "query", "required": false,
            "description": "Maximum number of records to return, the most recent ones, oldest first",
            "schema": { "type": "integer", "minimum": 1, "maximum": 1000, "default": 100 },
        }));
    }
    parameters
}

/// Builds the success response and every documented error response of a route.
fn responses(route: &Route) -> Map<String, Value> {
    let error = |description: &str| {
        json!({
            "description": description,
            "content": { "application/json": { "schema": { "$ref": "#/components/schemas/ErrorBody" } } },
        })
    };

    let mut responses = Map::new();
    let success = match route.response {
        Some(body) => json!({
            "description": route.summary,
            "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{}", (body.name)()) } } },
        }),
        None => json!({ "description": route.summary }),
    };
    responses.insert(route.status.as_u16().to_string(), success);

    responses.insert("400".to_owned(), error("The request is invalid"));
    responses.insert(
        "401".to_owned(),
        error("The token is missing, unknown, expired or revoked"),
    );
    responses.insert("403".to_owned(), error("The caller lacks the role"));
    responses.insert(
        "404".to_owned(),
        error("Something named in the path does not exist"),
    );
    responses.insert(
        "405".to_owned(),
        error("The path does not support this method"),
    );
    responses.insert(
        "409".to_owned(),
        error("The change conflicts with the current state"),
    );
    responses.insert("413".to_owned(), error("The body is too large"));
    responses.insert("415".to_owned(), error("The body is not JSON"));
    responses.insert("500".to_owned(), error("The server failed"));
    responses.insert(
        "503".to_owned(),
        error("The store, the HSM or the audit log is unavailable"),
    );
    responses
}

fn access_text(access: Access) -> String {
    match access {
        Access::Anyone => "Any principal.".to_owned(),
        Access::Operator => "Operators only.".to_owned(),
        Access::Domain(roles) => {
            let names: Vec<&str> = roles.iter().map(|role| role.as_str()).collect();
            format!(
                "Roles in the path's domain: {}; operators always.",
                names.join(", ")
            )
        }
        Access::Principal => "Operators, and domain admins for principals whose roles are all \
                              in their domains. A principal may also read itself and manage \
                              its own tokens, but not delete itself."
            .to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_maximum_matches_the_store() {
        let document = document();
        let maximum = &document["components"]["schemas"]["CreateDomainRequest"]["properties"]["quotaRps"]
            ["maximum"];
        assert_eq!(
            maximum.as_u64(),
            Some(u64::from(crate::keystore::MAX_QUOTA_RPS)),
            "{maximum}"
        );
    }

    #[test]
    fn document_covers_routes_and_schemas() {
        let document = document();
        assert_eq!(document["openapi"], "3.1.0");
        for route in ROUTES.iter() {
            let operation = &document["paths"][route.path][route.method.as_str().to_lowercase()];
            assert_eq!(
                operation["operationId"], route.operation_id,
                "{} {} missing",
                route.method, route.path
            );
        }
        let text = document.to_string();
        let schemas = document["components"]["schemas"]
            .as_object()
            .expect("schemas");
        for reference in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = &reference[..reference.find('"').expect("closing quote")];
            assert!(
                schemas.contains_key(name),
                "schema {name} is referenced but missing"
            );
        }
    }
}
