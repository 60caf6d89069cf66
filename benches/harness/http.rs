//! A keep-alive HTTP/JSON client for Tally's `/api/v1` (hyper's pooled client): what the
//! end-to-end tests and `tally-bench --http` speak, as an SDK would.

use std::net::SocketAddr;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{HeaderMap, Method, Request};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// One answer: status, headers and the JSON body (`Value::Null` when the body is not JSON).
#[derive(Debug, Clone)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// Response headers.
    pub headers: HeaderMap,
    /// The parsed body.
    pub body: Value,
}

impl Answer {
    /// `body.data` of a success envelope.
    pub fn data(&self) -> &Value {
        &self.body["data"]
    }

    /// `body.error.code` of an error envelope.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or_default()
    }
}

/// A pooled client for one daemon and one key.
#[derive(Clone)]
pub struct HttpClient {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
    key: Option<String>,
}

impl HttpClient {
    /// HTTP/1.1 with keep-alive to `addr`, sending `key` as `x-api-key`.
    pub fn new(addr: SocketAddr, key: Option<String>) -> Self {
        Self::build(addr, key, false)
    }

    /// HTTP/2 without TLS (h2c, prior knowledge).
    pub fn http2(addr: SocketAddr, key: Option<String>) -> Self {
        Self::build(addr, key, true)
    }

    fn build(addr: SocketAddr, key: Option<String>, http2: bool) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .http2_only(http2)
            .pool_max_idle_per_host(usize::MAX)
            .build(connector);
        Self {
            client,
            base: format!("http://{addr}"),
            key,
        }
    }

    /// Sends `body` (raw bytes) with `headers`; `path` starts with `/`.
    pub async fn send_raw(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Answer> {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("content-type", "application/json");
        if let Some(key) = &self.key {
            request = request.header("x-api-key", key);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = self
            .client
            .request(request.body(Full::new(Bytes::from(body)))?)
            .await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await?.to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    /// Sends `body` as JSON.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Answer> {
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        self.send_raw(method, path, bytes, headers).await
    }

    /// `GET /api/v1{path}`.
    pub async fn get(&self, path: &str) -> anyhow::Result<Answer> {
        self.send(Method::GET, &format!("/api/v1{path}"), None, &[])
            .await
    }

    /// `POST /api/v1{path}` with a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Answer> {
        self.send(Method::POST, &format!("/api/v1{path}"), Some(body), &[])
            .await
    }

    /// `POST /api/v1{path}` with an `Idempotency-Key`.
    pub async fn post_keyed(&self, path: &str, body: &Value, key: &str) -> anyhow::Result<Answer> {
        self.send(
            Method::POST,
            &format!("/api/v1{path}"),
            Some(body),
            &[("idempotency-key", key)],
        )
        .await
    }
}
