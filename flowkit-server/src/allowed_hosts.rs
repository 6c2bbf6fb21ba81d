//! Which `Host` a request may name: the defence against DNS rebinding.
//!
//! A server without API keys answers whoever reaches it, and it listens on loopback for that
//! reason. A web page cannot reach loopback under its own origin, except by *DNS rebinding*:
//! it points its own name (`evil.example`) at 127.0.0.1, and the browser, believing it talks to
//! `evil.example`, lets the page read the answers. Such a request still says
//! `Host: evil.example`; so, without keys, the server answers only the names that mean this
//! machine — `localhost`, loopback addresses (`127.0.0.1`, `[::1]`), with any port — its bind
//! address, and the names the operator allows (`--allowed-host`, `FLOWKIT_ALLOWED_HOSTS`).
//! Any other `Host` is refused with 403 `forbidden_host` before the request reaches a route.
//!
//! When the server listens on every interface (`0.0.0.0` or `[::]`, with `--insecure-open`),
//! any IP address is accepted as `Host`: a page can only send an IP address as `Host` when it
//! was itself loaded from that address, so it is the server's own origin, not a rebound name.
//!
//! With API keys the check is off (a rebound page has no key), unless `--allowed-host` is given:
//! then the same list is enforced. `--allowed-host '*'` accepts every host.
//!
//! A request without `Host` (HTTP/1.0, in-process calls) is not from a browser and passes.

use crate::AppState;
use crate::error::{ApiError, ErrorCode};
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::{IpAddr, SocketAddr};

/// The hosts a request may name, besides the loopback names; see the module documentation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowedHosts {
    /// Lower-case names, each `NAME` (any port) or `NAME:PORT`.
    names: Vec<String>,
    /// `*` was given: every host passes.
    any: bool,
    /// The address the server listens on, once known.
    bind: Option<SocketAddr>,
}

impl AllowedHosts {
    /// The hosts of `--allowed-host` values: `NAME`, `NAME:PORT`, an IP address (IPv6 in
    /// brackets, with an optional port) or `*`. Fails on an empty or malformed entry.
    pub fn parse(entries: &[impl AsRef<str>]) -> Result<AllowedHosts, String> {
        let mut hosts = AllowedHosts::default();
        for entry in entries {
            let entry = entry.as_ref().trim();
            if entry.is_empty() {
                continue;
            }
            if entry == "*" {
                hosts.any = true;
                continue;
            }
            let Some((name, port)) = split_host(entry) else {
                return Err(format!(
                    "--allowed-host {entry:?}: expected a host name such as flowkit.internal, \
                     NAME:PORT, an IP address or `*`"
                ));
            };
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-._:".contains(c))
            {
                return Err(format!(
                    "--allowed-host {entry:?}: a host name has letters, digits, `-` and `.` only"
                ));
            }
            let name = match port {
                Some(port) => format!("{name}:{port}"),
                None => name,
            };
            if !hosts.names.contains(&name) {
                hosts.names.push(name);
            }
        }
        Ok(hosts)
    }

    /// The same list, also accepting the address the server listens on.
    pub fn with_bind(mut self, bind: SocketAddr) -> AllowedHosts {
        self.bind = Some(bind);
        self
    }

    /// Whether the operator gave hosts explicitly (then they are enforced even with API keys).
    pub fn is_configured(&self) -> bool {
        self.any || !self.names.is_empty()
    }

    /// Whether a request with this `Host` value may be answered.
    pub fn allows(&self, host: &str) -> bool {
        if self.any {
            return true;
        }
        let Some((name, port)) = split_host(host.trim()) else {
            return false;
        };
        if name == "localhost" {
            return true;
        }
        if let Ok(ip) = name.parse::<IpAddr>() {
            if ip.is_loopback() {
                return true;
            }
            if let Some(bind) = self.bind
                && (bind.ip().is_unspecified() || bind.ip() == ip)
            {
                return true;
            }
        }
        self.names.iter().any(|allowed| {
            *allowed == name || port.is_some_and(|port| *allowed == format!("{name}:{port}"))
        })
    }
}

/// `NAME[:PORT]` or `[IPV6][:PORT]` as a lower-case name (brackets and one trailing dot
/// removed) and its port; `None` when malformed.
fn split_host(host: &str) -> Option<(String, Option<u16>)> {
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        inside.parse::<std::net::Ipv6Addr>().ok()?;
        let port = match after {
            "" => None,
            after => Some(after.strip_prefix(':')?),
        };
        (inside, port)
    } else {
        match host.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        }
    };
    let port = match port {
        Some(port) => Some(port.parse::<u16>().ok()?),
        None => None,
    };
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    Some((name, port))
}

/// The longest part of a refused `Host` quoted back in the error.
const SHOWN_HOST_CHARS: usize = 100;

/// Middleware over every route: refuses a request whose `Host` is not allowed (403
/// `forbidden_host`) on a server without API keys, or with `--allowed-host` given.
pub async fn check_host(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let settings = state.settings();
    // Stored keys require keys as much as startup ones (a store that cannot be read counts
    // as none: the `Host` is checked).
    let keyed = !settings.api_keys.is_empty()
        || state
            .key_ring()
            .keys(state.store())
            .await
            .is_ok_and(|keys| !keys.is_empty());
    if keyed && !settings.allowed_hosts.is_configured() {
        return next.run(request).await;
    }
    let host = match request.headers().get(header::HOST) {
        Some(value) => value.to_str().ok().map(str::to_string),
        None => match request.uri().authority() {
            Some(authority) => Some(authority.as_str().to_string()),
            None => return next.run(request).await,
        },
    };
    match host {
        Some(host) if settings.allowed_hosts.allows(&host) => next.run(request).await,
        host => {
            let shown: String = host
                .as_deref()
                .unwrap_or("(not text)")
                .chars()
                .take(SHOWN_HOST_CHARS)
                .collect();
            ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::ForbiddenHost,
                format!(
                    "this server answers requests for localhost, 127.0.0.1, [::1], its bind \
                     address and the hosts of --allowed-host only, not `Host: {shown}` (a web \
                     page may be trying DNS rebinding). If you reach the server by this name, \
                     start it with --allowed-host {} (or FLOWKIT_ALLOWED_HOSTS)",
                    split_host(&shown).map_or(shown.clone(), |(name, _)| name)
                ),
            )
            .closing_connection()
            .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_names_pass_with_any_port() {
        let hosts = AllowedHosts::default();
        for ok in [
            "localhost",
            "localhost:4200",
            "LOCALHOST.:80",
            "127.0.0.1",
            "127.0.0.1:4200",
            "127.9.9.9:1",
            "[::1]",
            "[::1]:4200",
        ] {
            assert!(hosts.allows(ok), "{ok}");
        }
        for refused in [
            "evil.example",
            "evil.example:4200",
            "localhost.evil.example",
            "192.168.1.5:4200",
            "[::2]:4200",
            "::1",
            "localhost:port",
            "[::1]x",
            "",
        ] {
            assert!(!hosts.allows(refused), "{refused}");
        }
    }

    #[test]
    fn allowed_names_and_the_bind_address() {
        let hosts = AllowedHosts::parse(&["Flowkit.Internal", "ci.example:8080", " "])
            .expect("parse")
            .with_bind("10.0.0.7:4200".parse().expect("addr"));
        assert!(hosts.is_configured());
        assert!(hosts.allows("flowkit.internal"));
        assert!(hosts.allows("flowkit.internal:4200"));
        assert!(hosts.allows("ci.example:8080"));
        assert!(!hosts.allows("ci.example:8081"));
        assert!(!hosts.allows("ci.example"));
        assert!(hosts.allows("10.0.0.7:4200"));
        assert!(!hosts.allows("10.0.0.8:4200"));
        let everywhere = AllowedHosts::default().with_bind("0.0.0.0:4200".parse().expect("addr"));
        assert!(!everywhere.is_configured());
        assert!(everywhere.allows("192.168.1.5:4200"));
        assert!(everywhere.allows("[fe80::1]:4200"));
        assert!(!everywhere.allows("evil.example:4200"));
        let any = AllowedHosts::parse(&["*"]).expect("parse");
        assert!(any.allows("evil.example"));
        for bad in ["a b", "x:notaport", "[zz]", "a/b"] {
            assert!(AllowedHosts::parse(&[bad]).is_err(), "{bad}");
        }
    }
}
