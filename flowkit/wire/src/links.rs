//! The URLs of the server's pages, built in one place so that a link a notification carries
//! is the page the server serves.

use uuid::Uuid;

/// The server's route of [`run_page`], in axum's path syntax: the server serves the dashboard
/// there, and the dashboard shows the run named by the path.
pub const RUN_PAGE_ROUTE: &str = "/runs/{id}";

/// The dashboard's page of one run, under the server's base URL (`FLOWKIT_API_URL`):
/// `{base}/runs/{id}`. A trailing `/` of `base` is ignored.
///
/// ```
/// let id = uuid::Uuid::nil();
/// assert_eq!(
///     flowkit_wire::links::run_page("http://127.0.0.1:4200/", id),
///     "http://127.0.0.1:4200/runs/00000000-0000-0000-0000-000000000000"
/// );
/// ```
pub fn run_page(base: &str, id: Uuid) -> String {
    let path = RUN_PAGE_ROUTE.replace("{id}", &id.to_string());
    format!("{}{path}", base.trim_end_matches('/'))
}

/// The URL of an API route of this version under the server's base URL:
/// `{base}/api/v1{route}`. A trailing `/` of `base` is ignored.
///
/// ```
/// assert_eq!(
///     flowkit_wire::links::api("http://127.0.0.1:4200/", "/events"),
///     "http://127.0.0.1:4200/api/v1/events"
/// );
/// ```
pub fn api(base: &str, route: &str) -> String {
    format!(
        "{}{}{route}",
        base.trim_end_matches('/'),
        crate::api::PREFIX
    )
}
