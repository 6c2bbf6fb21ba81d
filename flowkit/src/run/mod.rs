//! One task or flow run: the executor (cache, then per attempt limits and timeout, then retry;
//! see `executor`), background handles and fan-out with `map`.

pub(crate) mod body;
pub(crate) mod deployed;
pub(crate) mod emit;
pub(crate) mod executor;
pub(crate) mod handle;
pub(crate) mod map;
pub(crate) mod spec;

/// The message of a panic payload (`&str` or `String`), or a placeholder.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic payload that is not a string)".to_string()
    }
}
