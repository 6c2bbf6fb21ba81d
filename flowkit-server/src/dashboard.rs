//! The dashboard: three static files embedded in the binary (no separate web server, no Node
//! to build or run it). The page talks to the JSON API and follows `/api/v1/stream`.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use uuid::Uuid;

const INDEX_HTML: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const STYLE_CSS: &str = include_str!("../assets/style.css");

/// The dashboard's routes: `/`, `/runs/{id}` (the page of one run, the link notifications
/// carry: [`flowkit_wire::links::run_page`]) and `/assets/{file}`.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route(flowkit_wire::links::RUN_PAGE_ROUTE, get(run_page))
        .route(
            "/assets/app.js",
            get(|| async { asset(APP_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/assets/style.css",
            get(|| async { asset(STYLE_CSS, "text/css; charset=utf-8") }),
        )
}

/// The dashboard page.
#[utoipa::path(
    get,
    path = "/",
    tag = "dashboard",
    responses((status = 200, description = "The dashboard (HTML; its data comes from the API)", content_type = "text/html"))
)]
pub async fn index() -> Response {
    asset(INDEX_HTML, "text/html; charset=utf-8")
}

/// The dashboard page showing one flow run: the same page as `/`, which routes on its path.
#[utoipa::path(
    get,
    path = "/runs/{id}",
    tag = "dashboard",
    params(("id" = Uuid, Path, description = "The flow run")),
    responses(
        (status = 200, description = "The dashboard, showing the run (HTML; its data comes from the API)", content_type = "text/html"),
        (status = 400, description = "The id is not a UUID", body = crate::error::ErrorBody),
    )
)]
pub async fn run_page(Path(_id): Path<Uuid>) -> Response {
    // Whether the run exists is the page's to say (it loads it from the API, with the key
    // the user gives it): the HTML is the same for every run.
    asset(INDEX_HTML, "text/html; charset=utf-8")
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // The page builds everything from API data with textContent; forbid inline scripts and
    // foreign origins so that even a missed escape could not run injected code.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn get(uri: &str) -> (StatusCode, String, String) {
        let response = routes::<()>()
            .oneshot(Request::get(uri).body(Body::empty()).expect("request"))
            .await
            .expect("infallible");
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        (
            status,
            content_type,
            String::from_utf8_lossy(&body).into_owned(),
        )
    }

    #[tokio::test]
    async fn a_run_link_serves_the_dashboard() {
        let id = Uuid::now_v7();
        let link = flowkit_wire::links::run_page("http://127.0.0.1:4200", id);
        let path = link.trim_start_matches("http://127.0.0.1:4200");
        let (status, content_type, body) = get(path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(content_type.starts_with("text/html"), "{content_type}");
        assert_eq!(body, INDEX_HTML);
        let (status, _, _) = get("/runs/not-a-run").await;
        assert!(status.is_client_error(), "{status}");
    }

    #[test]
    fn the_page_works_from_a_nested_path() {
        // Served at /runs/{id} too, so a relative URL would resolve under /runs/.
        for attr in ["src=\"", "href=\""] {
            for (at, _) in INDEX_HTML.match_indices(attr) {
                let url = &INDEX_HTML[at + attr.len()..];
                assert!(
                    url.starts_with('/'),
                    "relative URL in index.html: {}",
                    url.split('"').next().unwrap_or_default()
                );
            }
        }
    }
}
