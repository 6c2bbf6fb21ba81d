//! The URLs of the server's pages, built in one place so that a link a notification carries
//! is the page the server serves.

use uuid::Uuid;

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
    format!("{}/runs/{id}", base.trim_end_matches('/'))
}
