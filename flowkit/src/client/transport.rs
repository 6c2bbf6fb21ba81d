//! Sending one request to the server and reading its answer: the URL of a route, the API key,
//! the body, and every way it can fail turned into a [`RunError`].

use super::{Client, REQUEST_TIMEOUT, RunError};
use flowkit_wire::api::error::{ErrorBody, ErrorCode, ErrorDetail};
use reqwest::header::{HeaderName, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::time::Duration;

/// Most characters of an unexpected answer quoted in an error.
const MAX_QUOTED: usize = 200;

/// One request to send.
pub(super) struct Request<'a> {
    method: Method,
    url: Url,
    body: Option<Vec<u8>>,
    headers: Vec<(&'a str, String)>,
    timeout: Duration,
}

/// The server's answer: its status and body.
pub(super) struct Answer {
    pub status: StatusCode,
    pub body: Vec<u8>,
}

impl Client {
    /// The URL of the route made of `segments` (each percent-encoded as needed) under
    /// `{base}/api/v1`, with `query`.
    pub(super) fn route(&self, segments: &[&str], query: &[(&str, String)]) -> Url {
        let mut url = self.api.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (name, value) in query {
                pairs.append_pair(name, value);
            }
        }
        url
    }

    /// A request of `method` to `url`, without a body, that gives up after the client's
    /// request timeout.
    pub(super) fn request(&self, method: Method, url: Url) -> Request<'static> {
        Request {
            method,
            url,
            body: None,
            headers: Vec::new(),
            timeout: REQUEST_TIMEOUT,
        }
    }

    /// Sends `request`; an answer of any status is `Ok`, only no answer at all is an error.
    pub(super) async fn send(&self, request: Request<'_>) -> Result<Answer, RunError> {
        let mut builder = self
            .http
            .request(request.method, request.url)
            .timeout(request.timeout)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(key) = &self.api_key {
            let value =
                HeaderValue::from_str(&format!("Bearer {}", key.expose())).map_err(|_| {
                    RunError::Config(
                        "the API key cannot be sent in a header: it contains a control character"
                            .to_string(),
                    )
                })?;
            builder = builder.header(reqwest::header::AUTHORIZATION, value);
        }
        for (name, value) in request.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| RunError::Config(format!("header {name}: {e}")))?;
            let value = HeaderValue::from_str(&value).map_err(|_| {
                RunError::Config(format!("header {name}: {value:?} is not a header value"))
            })?;
            builder = builder.header(name, value);
        }
        if let Some(body) = request.body {
            builder = builder
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let response = builder.send().await.map_err(|e| self.unreachable(&e))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| self.unreachable(&e))?;
        Ok(Answer {
            status,
            body: body.to_vec(),
        })
    }

    fn unreachable(&self, e: &reqwest::Error) -> RunError {
        RunError::Unreachable {
            url: self.base.clone(),
            reason: crate::http::describe(e),
        }
    }

    /// Sends `request` and reads a successful answer as `T`; any other status is the error
    /// its body says.
    pub(super) async fn call<T: DeserializeOwned>(
        &self,
        request: Request<'_>,
    ) -> Result<T, RunError> {
        let answer = self.send(request).await?;
        if !answer.status.is_success() {
            return Err(answer.error());
        }
        answer.json()
    }
}

impl<'a> Request<'a> {
    /// With `body` as JSON.
    pub(super) fn json(mut self, body: &impl Serialize) -> Result<Request<'a>, RunError> {
        let bytes = serde_json::to_vec(body).map_err(|e| RunError::Decode {
            run_id: None,
            message: format!("cannot write the request as JSON: {e}"),
        })?;
        self.body = Some(bytes);
        Ok(self)
    }

    /// With the header `name: value`.
    pub(super) fn header(mut self, name: &'a str, value: String) -> Request<'a> {
        self.headers.push((name, value));
        self
    }

    /// The server may hold the answer `wait`: give it that long more than usual.
    pub(super) fn held_for(mut self, wait: Duration) -> Request<'a> {
        self.timeout = REQUEST_TIMEOUT + wait;
        self
    }
}

impl Answer {
    /// The body read as `T`.
    pub(super) fn json<T: DeserializeOwned>(&self) -> Result<T, RunError> {
        serde_json::from_slice(&self.body).map_err(|e| RunError::Decode {
            run_id: None,
            message: format!("{e}; got {}", quote(&self.body)),
        })
    }

    /// The error an unsuccessful answer stands for: what its error body says, or, for an
    /// answer that is not one (a proxy's page), its status.
    pub(super) fn error(&self) -> RunError {
        if let Ok(body) = serde_json::from_slice::<ErrorBody>(&self.body) {
            return RunError::from_detail(body.error);
        }
        let code = match self.status {
            StatusCode::UNAUTHORIZED => ErrorCode::Unauthorized,
            StatusCode::FORBIDDEN => ErrorCode::Forbidden,
            StatusCode::NOT_FOUND => ErrorCode::NotFound,
            _ => ErrorCode::Unknown,
        };
        RunError::from_detail(ErrorDetail::new(
            code,
            format!("HTTP {}: {}", self.status, quote(&self.body)),
        ))
    }
}

/// At most [`MAX_QUOTED`] characters of `body`, for a message.
fn quote(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "an empty body".to_string();
    }
    let mut quoted: String = text.chars().take(MAX_QUOTED).collect();
    if text.chars().count() > MAX_QUOTED {
        quoted.push('…');
    }
    format!("{quoted:?}")
}
