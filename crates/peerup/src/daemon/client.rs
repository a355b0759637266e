//! A minimal HTTP/1.1 client over the daemon's Unix socket.

use anyhow::{Context, Result, bail};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::UnixStream;

use super::ApiPaths;

/// Sends one request and returns the `data` of a successful response.
pub async fn call(
    paths: &ApiPaths,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Result<Value> {
    let token = std::fs::read_to_string(&paths.cookie)
        .with_context(|| format!("daemon not running (no cookie at {})", paths.cookie.display()))?;
    let stream = UnixStream::connect(&paths.socket)
        .await
        .with_context(|| format!("daemon not running: {}", paths.socket.display()))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let driver = tokio::spawn(conn);
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "daemon")
        .header("authorization", format!("Bearer {}", token.trim()))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(payload)))?;
    let resp = sender.send_request(req).await.context("daemon request failed")?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await?.to_bytes();
    driver.abort();
    let value: Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("daemon returned HTTP {status} with a non-JSON body"))?;
    if !status.is_success() {
        match value.get("error").and_then(Value::as_str) {
            Some(msg) => bail!("daemon: {msg}"),
            None => bail!("daemon returned HTTP {status}"),
        }
    }
    Ok(value.get("data").cloned().unwrap_or(Value::Null))
}

/// Calls the daemon of the config in `dir` if one runs: `None` when there is none, so the caller can
/// do the work itself ("daemon first").
pub fn call_if_running(
    dir: &std::path::Path,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Result<Option<Value>> {
    let paths = ApiPaths::in_dir(dir);
    if !paths.socket.exists() || !paths.cookie.exists() {
        return Ok(None);
    }
    match crate::runtime::block_on_value(call(&paths, method, path, body)) {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.to_string().contains("daemon not running") => Ok(None),
        Err(e) => Err(e),
    }
}
