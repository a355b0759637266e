//! Text format negotiation: `?format=text` or `Accept: text/plain` turns a successful answer's
//! `data` into plain text (`key: value` lines for objects, one tab-separated line per item for
//! lists), for shell use without jq.

use axum::body::{Body, to_bytes};
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use serde_json::Value;

/// Largest JSON answer converted to text.
const MAX_ANSWER: usize = 4 << 20;

fn wants_text(req: &Request) -> bool {
    let query = req.uri().query().unwrap_or("");
    let accept = req.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    query.split('&').any(|kv| kv == "format=text") || accept.contains("text/plain")
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// Renders `data` as text.
pub(crate) fn render(data: &Value) -> String {
    let mut out = String::new();
    match data {
        Value::Object(map) => {
            for (k, v) in map {
                match v {
                    Value::Array(items) => {
                        out.push_str(&format!("{k}: {}\n", items.len()));
                        for i in items {
                            out.push_str(&format!("  {}\n", scalar(i)));
                        }
                    }
                    Value::Object(sub) if sub.contains_key("grade") => out.push_str(&format!(
                        "{k}: [{}] {} - {}\n",
                        scalar(&sub["grade"]),
                        sub.get("label").map(scalar).unwrap_or_default(),
                        sub.get("description").map(scalar).unwrap_or_default()
                    )),
                    Value::Object(sub) => {
                        for (sk, sv) in sub {
                            out.push_str(&format!("{k}.{sk}: {}\n", scalar(sv)));
                        }
                    }
                    other => out.push_str(&format!("{k}: {}\n", scalar(other))),
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                let line = match item {
                    Value::Object(map) => map.values().map(scalar).collect::<Vec<_>>().join("\t"),
                    other => scalar(other),
                };
                out.push_str(&line);
                out.push('\n');
            }
        }
        other => {
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
    out
}

/// The middleware.
pub(super) async fn negotiate(req: Request, next: Next) -> Response {
    let text = wants_text(&req);
    let resp = next.run(req).await;
    if !text || resp.status() != StatusCode::OK {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = to_bytes(body, MAX_ANSWER).await else {
        return Response::from_parts(parts, Body::empty());
    };
    let Ok(json) = serde_json::from_slice::<Value>(&bytes) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(render(&json["data"])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_objects_and_lists() {
        let obj = serde_json::json!({ "peer_id": "x", "addrs": ["a", "b"], "n": 2, "none": null });
        assert_eq!(render(&obj), "addrs: 2\n  a\n  b\nn: 2\nnone: -\npeer_id: x\n");
        let list =
            serde_json::json!([{ "name": "ssh", "port": 22 }, { "name": "web", "port": 80 }]);
        assert_eq!(render(&list), "ssh\t22\nweb\t80\n");
    }
}
