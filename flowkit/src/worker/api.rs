//! The worker's calls to the server: JSON POSTs under `/api/v1`, with the API key, and the
//! server's error body read back.

use crate::http;
use crate::sink::report::ApiKey;
use flowkit_wire::api::PREFIX;
use flowkit_wire::api::error::{ErrorBody, ErrorCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::time::Duration;

/// A client of the server's worker routes.
#[derive(Clone, Debug)]
pub(crate) struct Api {
    /// `{url}/api/v1`.
    base: String,
    key: Option<ApiKey>,
    client: reqwest::Client,
}

/// A call that failed.
#[derive(Clone, Debug)]
pub(crate) enum CallError {
    /// No answer (connection, timeout) or one that could not be read.
    Network(String),
    /// An error status, with the server's code and message when it sent the usual body.
    Status {
        status: u16,
        code: Option<ErrorCode>,
        message: String,
    },
}

impl CallError {
    /// Whether trying again later may work (no answer, 5xx, 429).
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            CallError::Network(_) => true,
            CallError::Status { status, .. } => *status >= 500 || *status == 429 || *status == 408,
        }
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Network(why) => f.write_str(why),
            CallError::Status {
                status, message, ..
            } => write!(f, "{status}: {message}"),
        }
    }
}

impl Api {
    /// A client of the server at `url` whose every request gives up after `timeout` unless
    /// the call says otherwise.
    pub(crate) fn new(url: &str, key: Option<ApiKey>, timeout: Duration) -> Result<Api, String> {
        let url = url.trim_end_matches('/');
        let client = http::client(timeout, url.starts_with("https:"))?;
        Ok(Api {
            base: format!("{url}{PREFIX}"),
            key,
            client,
        })
    }

    /// `POST {base}{path}` with `body`; the answer read as `R`. `timeout` overrides the
    /// client's (for long-polls).
    pub(crate) async fn post<B: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        timeout: Option<Duration>,
    ) -> Result<R, CallError> {
        let bytes = self.send(path, body, timeout, false).await?;
        serde_json::from_slice(bytes.as_ref()).map_err(|e| {
            CallError::Network(format!("cannot read the server's answer to {path}: {e}"))
        })
    }

    /// `POST {base}{path}` with `body` and `Prefer: return=minimal`, for a call whose answer
    /// the worker does not read (the server then need not build it).
    pub(crate) async fn post_minimal<B: Serialize + ?Sized>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<(), CallError> {
        self.send(path, body, None, true).await.map(drop)
    }

    /// `POST {base}{path}` with `body`: the body of a successful answer, or the error.
    async fn send<B: Serialize + ?Sized>(
        &self,
        path: &str,
        body: &B,
        timeout: Option<Duration>,
        minimal: bool,
    ) -> Result<impl AsRef<[u8]>, CallError> {
        let mut request = self.client.post(format!("{}{path}", self.base)).json(body);
        if let Some(key) = &self.key {
            request = request.bearer_auth(key.expose());
        }
        if let Some(timeout) = timeout {
            request = request.timeout(timeout);
        }
        if minimal {
            request = request.header(
                "prefer",
                flowkit_wire::api::run_actions::PREFER_RETURN_MINIMAL,
            );
        }
        let response = request
            .send()
            .await
            .map_err(|e| CallError::Network(http::describe(&e)))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| CallError::Network(http::describe(&e)))?;
        if status.is_success() {
            return Ok(bytes);
        }
        let (code, message) = match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(body) => (Some(body.error.code), body.error.message),
            Err(_) => {
                let text = String::from_utf8_lossy(&bytes);
                let text: String = text.chars().take(300).collect();
                (None, format!("{status} from {path}: {text}"))
            }
        };
        Err(CallError::Status {
            status: status.as_u16(),
            code,
            message,
        })
    }
}
