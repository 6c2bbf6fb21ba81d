//! The result cache: a task with `cache = inputs` (or a key function) looks its result up by a
//! key made of the task's identity, the hash of its source and the hash of its inputs, in
//! memory first, then on disk under `FLOWKIT_HOME`; a result kept with `persist = true` is
//! stored by run id instead.
//!
//! The cache can only ever make a run faster: an entry that is missing, expired, truncated,
//! corrupt or unreadable is a miss (with a warning naming the file and the reason), and a
//! failed write (read-only directory, full disk) is a warning. Neither is an error for the run.
//!
//! ```text
//! <home>/cache/ab/ab12…ef.entry   a cached result, named by its key and sharded by its first
//!                                 two hex digits: one JSON header line, then the output's JSON
//! <home>/results/<run id>.entry   the kept result of a run (`persist = true`)
//! ```
//!
//! | file | one idea |
//! |---|---|
//! | `key` | keys: BLAKE3 of task identity, source hash and inputs ([`hash_inputs`]) |
//! | `memory` | the bounded in-memory layer, evicted with CLOCK |
//! | `disk` | the entry format and the layout on disk |
//! | `store` | memory in front of disk, with disk I/O off the async workers |

mod disk;
mod key;
mod memory;
mod store;

#[cfg(feature = "test-util")]
pub(crate) use disk::gate;
pub use key::hash_inputs;
pub(crate) use key::{CacheKey, cache_key};
pub(crate) use store::store;
