//! The option names of `#[task(..)]` and `#[flow(..)]`, declared once.

syn::custom_keyword!(name);
syn::custom_keyword!(version);
syn::custom_keyword!(retries);
syn::custom_keyword!(retry_delay);
syn::custom_keyword!(backoff);
syn::custom_keyword!(jitter);
syn::custom_keyword!(retry_if);
syn::custom_keyword!(timeout);
syn::custom_keyword!(cache);
syn::custom_keyword!(cache_ttl);
syn::custom_keyword!(refresh_cache);
syn::custom_keyword!(tags);
syn::custom_keyword!(on_completion);
syn::custom_keyword!(on_failure);
syn::custom_keyword!(on_retry);
syn::custom_keyword!(persist);
syn::custom_keyword!(fallible);
syn::custom_keyword!(infallible);

// Not an option: the value of `cache = inputs`.
syn::custom_keyword!(inputs);

/// Every option, in the order the error messages list them.
pub(crate) const ALL: &[&str] = &[
    "name",
    "version",
    "retries",
    "retry_delay",
    "backoff",
    "jitter",
    "retry_if",
    "timeout",
    "cache",
    "cache_ttl",
    "refresh_cache",
    "tags",
    "on_completion",
    "on_failure",
    "on_retry",
    "persist",
    "fallible",
    "infallible",
];
