//! Tag concurrency limits of the server (`/concurrency-limits`): at most `limit` deployed runs
//! carrying a tag are leased to workers at once, across every worker and server replica.
//! Reading them needs the `read` scope; setting and deleting them, `admin`.
//!
//! A tag is one path segment, percent-encoded here in full: a tag may hold `/`, `:`, `%`,
//! spaces, tabs or any other character (the URL parser would drop tabs and newlines).

use super::{Client, RunError};
use flowkit_wire::api::concurrency_limits::{
    ConcurrencyLimit, ConcurrencyLimits, SetLimit, check_tag,
};
use flowkit_wire::api::error::{ErrorCode, ErrorDetail};
use reqwest::{Method, Url};
use std::fmt::Write as _;

impl Client {
    /// Every tag's limit, by tag, with the runs holding a slot now
    /// (`GET /concurrency-limits`, at most
    /// [`MAX_LIMITS`](flowkit_wire::api::concurrency_limits::MAX_LIMITS)).
    pub async fn concurrency_limits(&self) -> Result<ConcurrencyLimits, RunError> {
        let url = self.route(&["concurrency-limits"], &[]);
        self.call(self.request(Method::GET, url)).await
    }

    /// The limit of `tag` (`GET /concurrency-limits/{tag}`); a tag without one is
    /// [`RunError::NotFound`].
    pub async fn concurrency_limit(&self, tag: &str) -> Result<ConcurrencyLimit, RunError> {
        let url = self.limit_url(tag)?;
        self.call(self.request(Method::GET, url)).await
    }

    /// Sets the limit of `tag` to `limit` runs at once, creating or replacing it
    /// (`PUT /concurrency-limits/{tag}`); the limit as the server keeps it. A `limit` of 0 or
    /// above [`MAX_LIMIT`](flowkit_wire::api::concurrency_limits::MAX_LIMIT) is
    /// [`RunError::Api`] with the code `invalid_body` (delete the limit to lift it); one more
    /// than [`MAX_LIMITS`](flowkit_wire::api::concurrency_limits::MAX_LIMITS) limits,
    /// `conflict`; a blank tag, `invalid_parameter`. Lowering a limit below the runs leased
    /// now stops none of them.
    pub async fn set_concurrency_limit(
        &self,
        tag: &str,
        limit: u32,
    ) -> Result<ConcurrencyLimit, RunError> {
        let url = self.limit_url(tag)?;
        let body = SetLimit { limit };
        self.call(self.request(Method::PUT, url).json(&body)?).await
    }

    /// Deletes the limit of `tag` (`DELETE /concurrency-limits/{tag}`): its runs are no longer
    /// bounded by the server. A tag without one is [`RunError::NotFound`].
    pub async fn delete_concurrency_limit(&self, tag: &str) -> Result<(), RunError> {
        let url = self.limit_url(tag)?;
        // An empty JSON object: the server wants a JSON content type on every request that
        // changes something.
        let request = self
            .request(Method::DELETE, url)
            .json(&serde_json::Map::new())?;
        let answer = self.send(request).await?;
        if answer.status.is_success() {
            Ok(())
        } else {
            Err(answer.error())
        }
    }

    /// The URL of `tag`'s limit, `{api}/concurrency-limits/{tag}` with every byte of `tag` but
    /// `A-Z a-z 0-9 - . _ ~` percent-encoded. A tag that cannot be a limit's (blank, too long),
    /// or that no URL can hold (`.` and `..`, which URLs resolve as "this" and "the parent"
    /// path), is refused before anything is sent, as the server refuses a bad tag:
    /// [`RunError::Api`] with the code `invalid_parameter`.
    fn limit_url(&self, tag: &str) -> Result<Url, RunError> {
        let refuse = |message: String| {
            RunError::from_detail(ErrorDetail::new(
                ErrorCode::InvalidParameter,
                format!("parameter `tag`: {message}"),
            ))
        };
        check_tag(tag).map_err(refuse)?;
        if matches!(tag, "." | "..") {
            return Err(refuse(
                "`.` and `..` cannot be sent in a URL's path: use another tag".to_string(),
            ));
        }
        let mut url = self.route(&["concurrency-limits"], &[]);
        let path = format!("{}/{}", url.path(), encode_segment(tag));
        url.set_path(&path);
        Ok(url)
    }
}

/// `segment` with every byte but the unreserved characters of RFC 3986 (`A-Z a-z 0-9 - . _ ~`)
/// percent-encoded: it stays one path segment whatever it holds, and the URL parser keeps it
/// as it is (it drops raw tabs and newlines, and reads a raw `/`, `\`, `?` or `#`).
fn encode_segment(segment: &str) -> String {
    let mut encoded = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            let _ = write!(encoded, "%{byte:02X}");
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> Client {
        Client::new("http://127.0.0.1:4200/prefix").expect("client")
    }

    #[test]
    fn a_tag_is_one_percent_encoded_segment() {
        let url = client().limit_url("team/a:gpu 1").expect("url");
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:4200/prefix/api/v1/concurrency-limits/team%2Fa%3Agpu%201"
        );
        let url = client().limit_url("a\tb%2F?#\\é..").expect("url");
        assert_eq!(
            url.path(),
            "/prefix/api/v1/concurrency-limits/a%09b%252F%3F%23%5C%C3%A9.."
        );
        assert_eq!(url.query(), None);
        assert_eq!(url.fragment(), None);
    }

    #[test]
    fn tags_no_url_can_hold_are_refused_before_sending() {
        for tag in ["", "  ", ".", ".."] {
            match client().limit_url(tag) {
                Err(RunError::Api(detail)) => {
                    assert_eq!(detail.code, ErrorCode::InvalidParameter, "{tag:?}");
                }
                other => panic!("{tag:?}: {other:?}"),
            }
        }
        assert!(client().limit_url("...").is_ok());
    }
}
