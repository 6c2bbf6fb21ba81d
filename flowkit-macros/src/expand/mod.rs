//! Writing the code. Everything here reads a validated [`crate::parse::Config`]; nothing
//! re-parses options.
//!
//! - [`task`]: the rewritten function, the body handed to the runtime, and (for a free
//!   function) the struct of the same name with `submit`, `map`, `with_options`, `call`.
//! - [`flow`]: what flows add: their arguments as the run's parameters, `deployment`.
//! - [`checks`]: trait requirements of the options, spanned at the user's tokens.

mod checks;
mod flow;
mod task;

use crate::parse::{Func, Kind, RawOptions, validate};
use proc_macro2::TokenStream;
use quote::ToTokens as _;

/// `#[task(..)]`.
pub(crate) fn task(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(Kind::Task, attr, item)
}

/// `#[flow(..)]`.
pub(crate) fn flow(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(Kind::Flow, attr, item)
}

fn expand(kind: Kind, attr: TokenStream, item: TokenStream) -> TokenStream {
    let func = match syn::parse2::<Func>(item.clone()) {
        Ok(func) => func,
        Err(e) => {
            let msg = format!("#[{}] goes on an `async fn` ({e})", kind.attr());
            return with_error(item, syn::Error::new(e.span(), msg));
        }
    };
    // Options that do not parse are reported, and the signature is still checked on its own.
    let (raw, parse_error) = match RawOptions::parse(kind.attr(), attr) {
        Ok(raw) => (raw, None),
        Err(e) => (RawOptions::default(), Some(e)),
    };
    let error = match (parse_error, validate(kind, raw, &func.sig)) {
        (None, Ok(config)) => return task::expand(&config, func),
        (None, Err(e)) | (Some(e), Ok(_)) => e,
        (Some(mut e), Err(more)) => {
            e.combine(more);
            e
        }
    };
    // An option is wrong but the function is fine: expand it as if it had no options, so the
    // struct beside it (`submit`, `map`, `deployment`, ..) still exists and its call sites
    // neither fail a second time nor go dark in rust-analyzer. The error is the only one.
    match validate(kind, RawOptions::default(), &func.sig) {
        Ok(defaults) => {
            let mut out = task::expand(&defaults, func);
            out.extend(error.into_compile_error());
            out
        }
        // The signature itself is wrong (not `async`, ..): nothing sound can be generated.
        Err(_) => with_error(item, error),
    }
}

/// The user's item unchanged next to the error, so the rest of the crate (and
/// rust-analyzer) still sees the function.
fn with_error(mut item: TokenStream, error: syn::Error) -> TokenStream {
    item.extend(error.into_compile_error());
    item
}

/// BLAKE3 (hex) of the function as written, attribute excluded: editing the body changes it,
/// and with it the task's cache keys.
fn source_hash(func: &Func) -> String {
    blake3::hash(func.to_token_stream().to_string().as_bytes())
        .to_hex()
        .to_string()
}

/// The path the generated code reaches the runtime through.
fn rt() -> TokenStream {
    quote::quote!(::flowkit::__private)
}

/// The same path, spanned so that an error about the call it starts lands at `span`.
fn rt_at(span: proc_macro2::Span) -> TokenStream {
    quote::quote_spanned!(span=> ::flowkit::__private)
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    #[test]
    fn hash_changes_with_the_body() {
        let a: Func = syn::parse2(quote!(
            async fn f() -> u8 {
                1
            }
        ))
        .unwrap();
        let b: Func = syn::parse2(quote!(
            async fn f() -> u8 {
                2
            }
        ))
        .unwrap();
        let a2: Func = syn::parse2(quote!(
            async fn f() -> u8 {
                1
            }
        ))
        .unwrap();
        assert_ne!(source_hash(&a), source_hash(&b));
        assert_eq!(source_hash(&a), source_hash(&a2));
        assert_eq!(source_hash(&a).len(), 64);
    }

    #[test]
    fn errors_keep_the_function() {
        // The signature is wrong: nothing is generated but the function as written.
        let out = task(
            quote!(),
            quote!(
                fn f() {}
            ),
        )
        .to_string();
        assert!(out.starts_with("fn f () { }"), "{out}");
        assert!(out.contains("compile_error"), "{out}");
    }

    #[test]
    fn a_bad_option_keeps_the_whole_expansion() {
        for (attr, extra) in [
            (quote!(retries = "x"), None),
            (quote!(retry = 3), None),
            (quote!(timeout = "soon"), Some("fn deployment")),
            (quote!(retries = 1, retries = 2), None),
        ] {
            for (out, extra) in [
                (task(attr.clone(), item()), None),
                (flow(attr, item()), extra),
            ] {
                let out = out.to_string();
                assert_eq!(out.matches("compile_error").count(), 1, "{out}");
                for needed in ["struct f", "fn submit", "fn map", "fn with_options"]
                    .into_iter()
                    .chain(extra)
                {
                    assert!(out.contains(needed), "no `{needed}` in {out}");
                }
                let file = syn::parse2::<syn::File>(out.parse().unwrap());
                file.unwrap_or_else(|e| panic!("{e}: {out}"));
            }
        }

        fn item() -> TokenStream {
            quote!(
                async fn f(x: u8) -> anyhow::Result<u8> {
                    Ok(x)
                }
            )
        }
    }

    #[test]
    fn only_flows_with_owned_concrete_arguments_can_be_deployed() {
        let deployable = |item: TokenStream| {
            let out = flow(quote!(), item).to_string();
            let (deployment, signature) = (
                out.contains("fn deployment"),
                out.contains(":: flowkit :: FlowSignature for"),
            );
            assert_eq!(deployment, signature, "{out}");
            deployment
        };
        assert!(deployable(quote!(
            async fn f(x: u8, (a, b): (u8, u8)) -> anyhow::Result<u8> {
                Ok(x + a + b)
            }
        )));
        assert!(!deployable(quote!(
            async fn f<T: Clone>(x: T) -> T {
                x
            }
        )));
        assert!(!deployable(quote!(
            async fn f(x: &str) -> usize {
                x.len()
            }
        )));
        let task = task(
            quote!(),
            quote!(
                async fn f(x: u8) -> u8 {
                    x
                }
            ),
        )
        .to_string();
        assert!(!task.contains("FlowSignature"), "{task}");
    }

    #[test]
    fn a_body_that_does_not_parse_is_expanded_as_is() {
        let out = task(
            quote!(retries = 1),
            quote!(
                async fn f(x: u8) -> u8 {
                    let y = x +;
                    y
                }
            ),
        )
        .to_string();
        assert!(!out.contains("compile_error"), "{out}");
        assert!(out.contains("let y = x + ; y"), "{out}");
        assert!(out.contains("fn map"), "{out}");
    }

    #[test]
    fn generated_code_parses() {
        for (attr, item) in [
            (
                quote!(),
                quote!(
                    pub async fn f(x: u8) -> u8 {
                        x
                    }
                ),
            ),
            (
                quote!(
                    retries = 2,
                    cache = inputs,
                    timeout = "1s",
                    on_failure = [a, b(1)]
                ),
                quote!(
                    async fn f<T: Clone>(x: T, (a, b): (u8, u8)) -> anyhow::Result<T> {
                        Ok(x)
                    }
                ),
            ),
            (
                quote!(retries = 1),
                quote!(
                    async fn m(mut self, y: u8) -> u8 {
                        self.0 + y
                    }
                ),
            ),
            (
                quote!(persist = true),
                quote!(
                    async fn m(&self, s: &str) -> String {
                        s.into()
                    }
                ),
            ),
        ] {
            let out = task(attr.clone(), item.clone());
            assert!(!out.to_string().contains("compile_error"), "{out}");
            syn::parse2::<syn::File>(out.clone()).unwrap_or_else(|e| panic!("{e}: {out}"));
            let out = flow(attr, item);
            syn::parse2::<syn::File>(out.clone()).unwrap_or_else(|e| panic!("{e}: {out}"));
        }
    }
}
