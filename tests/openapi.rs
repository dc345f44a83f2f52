//! The OpenAPI document (`GET /openapi.json`, docs/api.md) against the real server: it lists
//! exactly the routed operations (the access table `ROUTES`, which `tests/auth_matrix.rs` holds
//! equal to the router), its error schema is the shape real errors have, the bad-input answers a
//! client gets are the ones it documents, and `/docs` is served from the binary with nothing
//! fetched from elsewhere. CI also validates it (openapi-spec-validator) and runs schemathesis
//! against a server (scripts/openapi-check.sh).

mod support;

use std::collections::BTreeSet;

use reqwest::StatusCode;
use runyard::auth::access::{Need, QUERY_ROUTES, ROUTES};
use serde_json::{json, Value};
use support::TestServer;

const RUNNERS: &str = r#"
[[runners]]
kind = "service"
types = ["runyard.*"]
"#;

/// `{*file}` (axum's catch-all) is `{file}` in OpenAPI.
fn openapi_path(axum_path: &str) -> String {
    axum_path.replace("{*", "{")
}

/// The document's operations as `METHOD path`.
fn documented(doc: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for m in [
            "get", "put", "post", "delete", "patch", "head", "options", "trace",
        ] {
            if item.get(m).is_some() {
                out.insert(format!("{} {path}", m.to_uppercase()));
            }
        }
    }
    out
}

/// Follows a `$ref` inside the document.
fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let ptr = r.trim_start_matches('#');
            resolve(
                doc,
                doc.pointer(ptr)
                    .unwrap_or_else(|| panic!("dangling $ref {r}")),
            )
        }
        None => v,
    }
}

/// Checks `value` against a (small subset of JSON Schema) `schema`: `type` (one or a list),
/// `enum`, `required`, `properties`, `additionalProperties: false`, `items`, `anyOf`, `oneOf`,
/// `$ref`; enough for the error shape and the pages of jobs.
fn check_against(doc: &Value, schema: &Value, value: &Value, at: &str) {
    if let Err(e) = conforms(doc, schema, value, at) {
        panic!("{e}");
    }
}

/// [`check_against`] as a result: why `value` does not match `schema`.
fn conforms(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    let schema = resolve(doc, schema);
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    let of_type = |t: &str| match t {
        "object" => value.is_object(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "array" => value.is_array(),
        "null" => value.is_null(),
        _ => true,
    };
    if !types.is_empty() && !types.iter().any(|t| of_type(t)) {
        return Err(format!("{at}: {value} is not of type {}", schema["type"]));
    }
    if let Some(values) = schema["enum"].as_array() {
        if !values.contains(value) {
            return Err(format!("{at}: {value} is not one of {}", schema["enum"]));
        }
    }
    if let Some(alts) = schema["anyOf"].as_array() {
        let why: Vec<String> = alts
            .iter()
            .filter_map(|s| conforms(doc, s, value, at).err())
            .collect();
        if why.len() == alts.len() {
            return Err(format!("{at}: matches none of anyOf: {why:?}"));
        }
    }
    if let Some(alts) = schema["oneOf"].as_array() {
        let matched = alts
            .iter()
            .filter(|s| conforms(doc, s, value, at).is_ok())
            .count();
        if matched != 1 {
            return Err(format!("{at}: {value} matches {matched} of oneOf, not 1"));
        }
    }
    if !value.is_object() {
        if let (Some(items), Some(list)) = (schema.get("items"), value.as_array()) {
            for (i, v) in list.iter().enumerate() {
                conforms(doc, items, v, &format!("{at}[{i}]"))?;
            }
        }
        return Ok(());
    }
    for r in schema["required"].as_array().into_iter().flatten() {
        let k = r.as_str().expect("required name");
        if value.get(k).is_none() {
            return Err(format!("{at}: `{k}` missing in {value}"));
        }
    }
    if let Some(props) = schema["properties"].as_object() {
        for (k, s) in props {
            if let Some(v) = value.get(k) {
                conforms(doc, s, v, &format!("{at}.{k}"))?;
            }
        }
        if schema["additionalProperties"] == json!(false) {
            for k in value.as_object().expect("object").keys() {
                if !props.contains_key(k) {
                    return Err(format!("{at}: `{k}` is not in the schema"));
                }
            }
        }
    }
    Ok(())
}

/// The documented answer of `method path` for `status`: its description.
fn documented_answer<'a>(doc: &'a Value, method: &str, path: &str, status: u16) -> &'a Value {
    let op = &doc["paths"][path][method.to_lowercase()];
    assert!(op.is_object(), "{method} {path} is not in the document");
    let r = &op["responses"][status.to_string()];
    assert!(
        r.is_object(),
        "{method} {path} answers {status} but the document does not say so: {}",
        op["responses"]
    );
    r
}

/// Sends a raw body to `path` and checks the answer is `status` with `code`, in the documented
/// error shape, and documented for the operation; returns the message.
async fn refused(
    ts: &TestServer,
    doc: &Value,
    (method, path, url): (&str, &str, &str),
    (content_type, body): (&str, &str),
    (status, code): (u16, &str),
) -> String {
    let res = reqwest::Client::new()
        .request(method.parse().expect("method"), ts.at(url))
        .header("content-type", content_type)
        .body(body.to_string())
        .send()
        .await
        .expect("send");
    assert_eq!(res.status().as_u16(), status, "{method} {url} with {body}");
    let v: Value = res.json().await.expect("an error body is JSON");
    assert_eq!(v["error"]["code"], code, "{method} {url} with {body}: {v}");
    let answer = documented_answer(doc, method, path, status);
    let schema = &answer["content"]["application/json"]["schema"];
    assert_eq!(
        schema["$ref"], "#/components/schemas/ErrorBody",
        "{method} {path} {status}"
    );
    check_against(doc, schema, &v, "error answer");
    let said = answer["description"].as_str().unwrap_or("");
    assert!(
        said.contains(&format!("`{code}`")),
        "{method} {path} {status} does not name `{code}`: {said}"
    );
    v["error"]["message"].as_str().unwrap_or("").to_string()
}

#[tokio::test]
async fn the_document_lists_exactly_the_routed_operations() {
    let ts = TestServer::start(RUNNERS).await;
    let (st, doc) = ts.get("/openapi.json").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    let listed = documented(&doc);
    let routed: BTreeSet<String> = ROUTES
        .iter()
        .map(|r| format!("{} {}", r.method, openapi_path(r.path)))
        .collect();
    let missing: Vec<_> = routed.difference(&listed).collect();
    assert!(
        missing.is_empty(),
        "routes missing from /openapi.json (add their #[utoipa::path] and a line in \
         src/api/openapi/mod.rs `paths(...)`): {missing:?}"
    );
    let extra: Vec<_> = listed.difference(&routed).collect();
    assert!(extra.is_empty(), "documented but not routed: {extra:?}");

    // Security from the access table: a client route needs the bearer, a hook the job's
    // signature headers, an open route nothing.
    let op = |m: &str, p: &str| doc["paths"][p][m].clone();
    assert_eq!(
        op("post", "/async/jobs")["security"],
        json!([{"bearer": []}])
    );
    assert_eq!(op("post", "/async/jobs")["x-runyard-scope"], "jobs:submit");
    assert_eq!(
        op("post", "/async/status")["security"],
        json!([{"jobId": [], "jobTime": [], "jobHash": []}])
    );
    assert_eq!(op("get", "/health")["security"], json!([{}]));
    assert!(doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer");
    for code in ["401", "403"] {
        assert!(op("get", "/async/jobs/{id}")["responses"][code].is_object());
    }
    // Request bodies and query parameters come from the handlers' own types.
    let submit = resolve(
        &doc,
        &op("post", "/async/jobs")["requestBody"]["content"]["application/json"]["schema"],
    )
    .clone();
    assert_eq!(submit["required"], json!(["type"]), "{submit}");
    assert_eq!(submit["additionalProperties"], json!(false), "{submit}");
    let params: BTreeSet<String> = op("get", "/async/jobs")["parameters"]
        .as_array()
        .expect("parameters")
        .iter()
        .map(|p| {
            format!(
                "{} {}",
                p["in"].as_str().unwrap(),
                p["name"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        params,
        [
            "query channel",
            "query created_after",
            "query created_before",
            "query cursor",
            "query dead",
            "query fields",
            "query limit",
            "query runner",
            "query schedule",
            "query status",
            "query text",
            "query type"
        ]
        .map(String::from)
        .into()
    );
    // `fields` documents the names it takes.
    let fields = op("get", "/async/jobs")["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "fields")
        .expect("fields")
        .clone();
    let said = fields["description"].as_str().unwrap_or_default();
    assert!(
        said.contains("max_attempts") && said.contains("400 bad_query"),
        "{fields}"
    );
}

/// Review of `GET /async/jobs?fields=`: the items of `JobPage.jobs` were `JobView`, whose members
/// are required, so a lean job (`fields=type`) broke the documented 200 and a typed client
/// refused it. A real page with `fields`, and one of whole jobs, both match the document.
#[tokio::test]
async fn a_page_with_fields_matches_the_documented_answer() {
    let ts = TestServer::start(RUNNERS).await;
    let (_, doc) = ts.get("/openapi.json").await;
    for i in 0..3 {
        ts.submit_ok(json!({"type": "runyard.noop", "args": {"i": i}}))
            .await;
    }
    let schema = documented_answer(&doc, "GET", "/async/jobs", 200)["content"]["application/json"]
        ["schema"]
        .clone();
    for (query, jobs) in [
        ("", 3),
        ("?fields=type", 3),
        ("?fields=status,args", 3),
        ("?fields=id", 3),
        ("?fields=worker,emits,wait&limit=2", 2),
        // `notify` is null without a webhook: the `NotifyView` schema allows it (probe s53c F4).
        ("?fields=notify", 3),
    ] {
        let (st, page) = ts.get(&format!("/async/jobs{query}")).await;
        assert_eq!(st, StatusCode::OK, "{query}: {page}");
        assert_eq!(page["jobs"].as_array().map(Vec::len), Some(jobs), "{page}");
        check_against(&doc, &schema, &page, &format!("GET /async/jobs{query}"));
    }
    // A lean job is still checked: a member of the wrong type does not match.
    let lean = json!({"jobs": [{"id": "6d1a6a2e-9d1f-4b43-8f0e-2d7a1c1f1e01", "type": 5}], "next_cursor": null});
    assert!(conforms(&doc, &schema, &lean, "lean").is_err());
    let no_id = json!({"jobs": [{"type": "runyard.noop"}], "next_cursor": null});
    assert!(conforms(&doc, &schema, &no_id, "no id").is_err());
}

/// Review of the hook API: the report's schema named `status_details` and `error_message`, the
/// names the hook refuses, and let any other field through, unlike every other request body. Its
/// properties are the fields the hook takes (`StatusReport::FIELDS`), and no other.
#[tokio::test]
async fn the_report_schema_has_the_fields_the_hook_takes() {
    let ts = TestServer::start(RUNNERS).await;
    let (st, doc) = ts.get("/openapi.json").await;
    assert_eq!(st, StatusCode::OK);
    let report = resolve(&doc, &doc["components"]["schemas"]["StatusReport"]).clone();
    let props: BTreeSet<String> = report["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("no properties: {report}"))
        .keys()
        .cloned()
        .collect();
    let fields: BTreeSet<String> = runyard_hooks::wire::StatusReport::FIELDS
        .map(String::from)
        .into();
    assert_eq!(props, fields, "{report}");
    assert_eq!(report["additionalProperties"], json!(false), "{report}");
    // The route's request body is that schema.
    let body = doc["paths"]["/async/status"]["post"]["requestBody"].to_string();
    assert!(body.contains("#/components/schemas/StatusReport"), "{body}");
    // So is the upload request's.
    let upload = resolve(&doc, &doc["components"]["schemas"]["UploadRequest"]).clone();
    let props: BTreeSet<String> = upload["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("no properties: {upload}"))
        .keys()
        .cloned()
        .collect();
    let fields: BTreeSet<String> = runyard_hooks::wire::UploadRequest::FIELDS
        .map(String::from)
        .into();
    assert_eq!(props, fields, "{upload}");
    assert_eq!(upload["additionalProperties"], json!(false), "{upload}");
}

#[tokio::test]
async fn every_operation_that_takes_a_body_documents_its_413() {
    let ts = TestServer::start(RUNNERS).await;
    let (_, doc) = ts.get("/openapi.json").await;
    let mut with_body = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (m, op) in item.as_object().expect("path item") {
            if op.get("requestBody").is_some() {
                with_body += 1;
                assert!(
                    op["responses"]["413"].is_object(),
                    "{} {path} takes a body but documents no 413",
                    m.to_uppercase()
                );
            }
        }
    }
    assert!(with_body >= 10, "{with_body}");
    // The schedule routes among them answer it (a body over `api.max_body_bytes`, 1 MiB).
    let big = format!(
        r#"{{"name": "n", "cron": "* * * * *", "job": {{"type": "runyard.noop", "args": {{"x": "{}"}}}}}}"#,
        "x".repeat(1_100_000)
    );
    let (st, v) = ts.post_raw("/async/schedules", big).await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert_eq!(v["error"]["code"], "too_large", "{v}");
}

#[tokio::test]
async fn the_routes_that_read_a_query_are_the_documented_ones() {
    let ts = TestServer::start(RUNNERS).await;
    let (_, doc) = ts.get("/openapi.json").await;
    // Open pages and `/metrics` pass any query (a probe's or a scraper's), a job's hooks are
    // bound by their signature; every other route reads one only when its operation documents
    // query parameters.
    let checked = |n: Need| !matches!(n, Need::Open | Need::Metrics | Need::Hook);
    let documented: BTreeSet<String> = ROUTES
        .iter()
        .filter(|r| checked(r.need))
        .filter(|r| {
            doc["paths"][openapi_path(r.path)][r.method.to_lowercase()]["parameters"]
                .as_array()
                .is_some_and(|ps| ps.iter().any(|p| p["in"] == "query"))
        })
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    let allowed: BTreeSet<String> = QUERY_ROUTES
        .iter()
        .filter(|(m, p)| {
            ROUTES
                .iter()
                .any(|r| r.method == *m && r.path == *p && checked(r.need))
        })
        .map(|(m, p)| format!("{m} {p}"))
        .collect();
    assert_eq!(documented, allowed);
    // Every line of QUERY_ROUTES is a route.
    for (m, p) in QUERY_ROUTES {
        assert!(
            ROUTES.iter().any(|r| r.method == *m && r.path == *p),
            "{m} {p} is in QUERY_ROUTES but not in ROUTES"
        );
    }
}

#[tokio::test]
async fn bad_input_gets_the_documented_answer_in_the_documented_shape() {
    let ts = TestServer::start(RUNNERS).await;
    let (_, doc) = ts.get("/openapi.json").await;
    let submit = ("POST", "/async/jobs", "/async/jobs");
    let json_ct = "application/json";
    // A body that does not match the schema: 422 naming the field.
    let m = refused(
        &ts,
        &doc,
        submit,
        (json_ct, r#"{"type": 5}"#),
        (422, "invalid_request"),
    )
    .await;
    assert!(m.contains("type"), "{m}");
    let m = refused(
        &ts,
        &doc,
        submit,
        (json_ct, r#"{"type": "runyard.noop", "colour": 1}"#),
        (422, "invalid_request"),
    )
    .await;
    assert!(m.contains("colour"), "{m}");
    refused(
        &ts,
        &doc,
        submit,
        (json_ct, r#"{"type": "#),
        (400, "bad_json"),
    )
    .await;
    refused(
        &ts,
        &doc,
        submit,
        ("text/plain", "{}"),
        (415, "unsupported_media_type"),
    )
    .await;
    refused(
        &ts,
        &doc,
        submit,
        (json_ct, r#"{"type": "no.such.type"}"#),
        (422, "unknown_type"),
    )
    .await;
    let backfill = (
        "POST",
        "/async/schedules/{name}/backfill",
        "/async/schedules/nightly/backfill",
    );
    refused(
        &ts,
        &doc,
        backfill,
        (json_ct, r#"{"from": 1}"#),
        (422, "invalid_request"),
    )
    .await;
    let m = refused(
        &ts,
        &doc,
        ("GET", "/async/jobs/{id}", "/async/jobs/not-a-uuid"),
        (json_ct, ""),
        (400, "bad_id"),
    )
    .await;
    assert!(m.contains("not-a-uuid"), "{m}");
    refused(
        &ts,
        &doc,
        ("GET", "/async/jobs", "/async/jobs?colour=red"),
        (json_ct, ""),
        (400, "bad_query"),
    )
    .await;
    // A query string on a route that reads none: 400 naming it, and no job (options go in the
    // body: an ignored `?idempotency_key=` would let a client's retry run the job twice).
    let m = refused(
        &ts,
        &doc,
        ("POST", "/async/jobs", "/async/jobs?idempotency_key=k1"),
        (json_ct, r#"{"type": "runyard.noop"}"#),
        (400, "bad_query"),
    )
    .await;
    assert!(m.contains("idempotency_key"), "{m}");
    refused(
        &ts,
        &doc,
        ("GET", "/async/schedules", "/async/schedules?paused=true"),
        (json_ct, ""),
        (400, "bad_query"),
    )
    .await;
    // A body on a route that reads none: refused, nothing done (a trigger's `args` would look
    // applied); `{}` passes, as no body does.
    let body = json!({"name": "nightly", "cron": "0 1 * * *", "job": {"type": "runyard.noop"}});
    let (st, v) = ts.post("/async/schedules", Some(&body)).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let trigger = (
        "POST",
        "/async/schedules/{name}/trigger",
        "/async/schedules/nightly/trigger",
    );
    let m = refused(
        &ts,
        &doc,
        trigger,
        (json_ct, r#"{"args": {"day": "2026-12-01"}}"#),
        (422, "invalid_request"),
    )
    .await;
    assert!(m.contains("reads no body"), "{m}");
    let (_, page) = ts.get("/async/jobs").await;
    assert_eq!(page["jobs"], json!([]), "{page}");
    let (st, v) = ts.post_raw("/async/schedules/nightly/pause", "{ }").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, v) = ts.post("/async/schedules/nightly/resume", None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let r = ts
        .client
        .delete(ts.at("/async/schedules/nightly"))
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    // A plain GET on the WebSocket route: the API's error shape too, not axum's plain text.
    refused(
        &ts,
        &doc,
        ("GET", "/async/events/ws", "/async/events/ws"),
        (json_ct, ""),
        (400, "not_websocket"),
    )
    .await;
    // Nothing was stored by any of these.
    let (_, page) = ts.get("/async/jobs").await;
    assert_eq!(page["jobs"], json!([]), "{page}");
}

#[tokio::test]
async fn docs_page_is_served_from_the_binary() {
    let ts = TestServer::start(RUNNERS).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let res = http.get(ts.at("/docs")).send().await.expect("GET /docs");
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(res.headers()["location"], "docs/");
    let res = http.get(ts.at("/docs/")).send().await.expect("GET /docs/");
    assert_eq!(res.status(), StatusCode::OK);
    // Not to be framed (clickjacking of "Try it out"), nor sniffed.
    assert_eq!(res.headers()["x-frame-options"], "DENY");
    assert_eq!(res.headers()["x-content-type-options"], "nosniff");
    assert!(res.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("frame-ancestors 'none'"));
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let page = res.text().await.expect("page");
    assert!(page.contains("swagger-ui"), "{page}");
    // Every script and style the page loads is served here (nothing from a CDN).
    let mut assets = Vec::new();
    for attr in ["src=\"", "href=\""] {
        for part in page.split(attr).skip(1) {
            let url = &part[..part.find('"').expect("closing quote")];
            assert!(
                !url.contains("://") && !url.starts_with("//"),
                "the page loads {url} from elsewhere"
            );
            assets.push(url.trim_start_matches("./").to_string());
        }
    }
    assert!(assets.iter().any(|a| a.ends_with(".js")), "{assets:?}");
    for a in &assets {
        let res = http
            .get(ts.at(&format!("/docs/{a}")))
            .send()
            .await
            .expect("asset");
        assert_eq!(res.status(), StatusCode::OK, "/docs/{a}");
    }
    // The page reads the document next to it (relative: a proxy's path prefix is kept).
    let init = http
        .get(ts.at("/docs/swagger-initializer.js"))
        .send()
        .await
        .expect("initializer")
        .text()
        .await
        .expect("text");
    assert!(init.contains("\"../openapi.json\""), "{init}");
    // A file that is not there: 404 in the API's error shape.
    let (st, v) = ts.get("/docs/no-such-file.js").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(v["error"]["code"], "not_found", "{v}");
}

/// Each documented bound of a `limit` is the server's. The probe saw `minimum: 0` and no maximum
/// on the job listing and the signal pages, whose server refuses 0 and more than its page
/// (`api.max_page`, here configured to 50; 1,000 keys; 10,000 records): a client made from the
/// document sent what the server refuses. A bound the document gives is taken at its ends and
/// refused past them; a route that documents none takes any count (it reads it into its range).
#[tokio::test]
async fn every_documented_limit_bound_is_the_servers() {
    let ts = TestServer::builder(RUNNERS)
        .config("[api]\nmax_page = 50\n")
        .start()
        .await;
    let (_, doc) = ts.get("/openapi.json").await;
    let id = ts.submit_ok(json!({"type": "runyard.noop"})).await;
    let (st, _) = ts
        .post("/async/signals/k", Some(&json!({"payload": {}})))
        .await;
    assert!(st.is_success(), "{st}");
    let mut checked = BTreeSet::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        let Some(params) = ops["get"]["parameters"].as_array() else {
            continue;
        };
        let Some(limit) = params.iter().find(|p| p["name"] == "limit") else {
            continue;
        };
        let url = path.replace("{id}", &id).replace("{key}", "k") + "?";
        let at = |n: u64| {
            let u = format!("{url}limit={n}");
            let ts = &ts;
            async move { (ts.get(&u).await.0, u) }
        };
        let (min, max) = (&limit["schema"]["minimum"], &limit["schema"]["maximum"]);
        let min = min
            .as_u64()
            .unwrap_or_else(|| panic!("{path}: no minimum: {limit}"));
        let (st, u) = at(min).await;
        assert!(st.is_success(), "{u}: {st} at the documented minimum");
        if min > 0 {
            let (st, u) = at(min - 1).await;
            assert_eq!(
                st,
                StatusCode::BAD_REQUEST,
                "{u}: below the documented minimum"
            );
        }
        match max.as_u64() {
            Some(max) => {
                let (st, u) = at(max).await;
                assert!(st.is_success(), "{u}: {st} at the documented maximum");
                let (st, u) = at(max + 1).await;
                assert_eq!(
                    st,
                    StatusCode::BAD_REQUEST,
                    "{u}: past the documented maximum"
                );
            }
            None => {
                let (st, u) = at(1 << 40).await;
                assert!(
                    st.is_success(),
                    "{u}: {st}, but the document gives no maximum"
                );
            }
        }
        checked.insert(path.clone());
    }
    assert_eq!(
        doc["paths"]["/async/jobs"]["get"]["parameters"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == "limit"))
            .map(|p| p["schema"]["maximum"].clone()),
        Some(json!(50)),
        "the listing's maximum is this server's api.max_page"
    );
    assert!(checked.len() >= 6, "{checked:?}");
    // Patched in the typed document, which keeps its order (review: patched as a JSON value, the
    // members came out in alphabetical order, and so did /docs' operations).
    let text = reqwest::get(ts.at("/openapi.json"))
        .await
        .expect("get")
        .text()
        .await
        .expect("text");
    assert!(
        text.starts_with(r#"{"openapi":"3.1.0","info":"#),
        "{}",
        &text[..80]
    );
}
