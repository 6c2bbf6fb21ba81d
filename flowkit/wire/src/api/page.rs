//! Pages of every list: newest first (logs: oldest first), keyset-paginated by an opaque
//! cursor.
//!
//! ```
//! use flowkit_wire::api::page::Page;
//! let page: Page<u32> = serde_json::from_str(r#"{"items":[1,2],"next_cursor":"abc"}"#).unwrap();
//! assert_eq!(page.next_cursor.as_deref(), Some("abc"));
//! ```

use serde::{Deserialize, Serialize};

/// Items of a page when the request does not say.
pub const DEFAULT_PAGE_SIZE: u32 = 50;
/// Most items of one page; a larger `limit` is refused with `invalid_parameter`.
pub const MAX_PAGE_SIZE: u32 = 500;

/// One page of a list, and the cursor of the next page.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; absent (null) on the last page.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// A page without a next one.
    pub fn last(items: Vec<T>) -> Page<T> {
        Page {
            items,
            next_cursor: None,
        }
    }
}
