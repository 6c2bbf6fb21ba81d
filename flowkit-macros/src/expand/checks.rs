//! Trait requirements of the options, checked where the user can fix them: each assertion is
//! spanned at the argument's type (or the return type), so the compiler's "trait bound not
//! satisfied" lands on that type rather than inside generated code.

use super::rt_at;
use crate::parse::{Cache, Config};
use proc_macro2::{Ident, Span, TokenStream};
use quote::quote_spanned;
use syn::spanned::Spanned as _;

/// `retries`: every attempt gets its own copy of the arguments, so they must be `Clone`.
pub(crate) fn clone_args(config: &Config) -> TokenStream {
    if config.retries.is_none() {
        return TokenStream::new();
    }
    let mut out = TokenStream::new();
    if let Some(receiver) = config.sig.receiver.as_ref().filter(|r| !r.shared_ref) {
        let p = rt_at(receiver.span);
        out.extend(quote_spanned! {receiver.span=> #p::assert_clone(&self); });
    }
    for arg in &config.sig.args {
        let span = arg.ty.span();
        let (p, ident) = (rt_at(span), respan(&arg.ident, span));
        out.extend(quote_spanned! {span=> #p::assert_clone(&#ident); });
    }
    out
}

/// `cache = inputs` and `persist`: the arguments are hashed, so they must be `Serialize`.
pub(crate) fn serialize_args(config: &Config) -> TokenStream {
    let hashes_inputs = matches!(config.cache.as_ref().map(|c| &c.value), Some(Cache::Inputs))
        || (config.persist.is_some() && config.cache.is_none());
    if !hashes_inputs {
        return TokenStream::new();
    }
    let mut out = TokenStream::new();
    if let Some(receiver) = &config.sig.receiver {
        let p = rt_at(receiver.span);
        out.extend(quote_spanned! {receiver.span=> #p::assert_serialize(&self); });
    }
    for arg in &config.sig.args {
        let span = arg.ty.span();
        let (p, ident) = (rt_at(span), respan(&arg.ident, span));
        out.extend(quote_spanned! {span=> #p::assert_serialize(&#ident); });
    }
    out
}

/// `cache` and `persist`: the output is stored and read back, so what is kept (the whole
/// output, or `O` of `Result<O, E>`) must be `Serialize + DeserializeOwned`. The codec states
/// the bound; it is built at the kept type so that is where an error shows.
pub(crate) fn codec(config: &Config) -> Option<TokenStream> {
    if config.cache.is_none() && config.persist.is_none() {
        return None;
    }
    let sig = &config.sig;
    let span = match (&sig.ok_type, sig.fallible) {
        (Some(ok), true) => ok.span(),
        _ => sig.output_span,
    };
    let p = rt_at(span);
    Some(if sig.fallible {
        quote_spanned!(span=> #p::Codec::result())
    } else {
        quote_spanned!(span=> #p::Codec::plain())
    })
}

/// The same identifier, reported at `span`. Call-site hygiene is unchanged, so it still
/// names the argument.
fn respan(ident: &Ident, span: Span) -> Ident {
    let mut ident = ident.clone();
    ident.set_span(span);
    ident
}
