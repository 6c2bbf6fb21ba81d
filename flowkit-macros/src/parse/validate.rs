//! From options as written to a [`Config`] the code generation only reads: durations parsed,
//! ranges checked, options that need each other checked, and the function's signature
//! understood (fallible or not, its arguments, whether it can be spawned).

use super::options::{CacheArg, Opt, RawOptions};
use proc_macro2::Span;
use syn::spanned::Spanned as _;
use syn::visit_mut::VisitMut;
use syn::{Expr, FnArg, Ident, LitStr, Pat, Path, ReceiverKind, ReturnType, Signature, Type};

/// Task or flow.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Task,
    Flow,
}

impl Kind {
    /// The attribute's name, for messages.
    pub(crate) fn attr(self) -> &'static str {
        match self {
            Kind::Task => "task",
            Kind::Flow => "flow",
        }
    }
}

/// A value with the span errors about it should point at.
pub(crate) struct At<T> {
    pub(crate) value: T,
    pub(crate) span: Span,
}

/// `cache = ..`, validated.
pub(crate) enum Cache {
    Inputs,
    KeyFn(Path),
}

/// Everything the attribute asked for, checked.
pub(crate) struct Config {
    pub(crate) kind: Kind,
    /// Display name of the runs (`name = ..`, else the function's name).
    pub(crate) name: String,
    pub(crate) version: Option<LitStr>,
    /// `Some` only for `retries >= 1`: the body must then be runnable again.
    pub(crate) retries: Option<At<u32>>,
    /// Nanoseconds.
    pub(crate) retry_delay: Option<u64>,
    pub(crate) backoff: Option<f64>,
    pub(crate) jitter: Option<f64>,
    pub(crate) retry_if: Option<Path>,
    /// Nanoseconds, at the option.
    pub(crate) timeout: Option<At<u64>>,
    pub(crate) cache: Option<At<Cache>>,
    pub(crate) cache_ttl: Option<u64>,
    pub(crate) refresh_cache: bool,
    /// At the option.
    pub(crate) persist: Option<Span>,
    pub(crate) tags: Vec<String>,
    pub(crate) on_completion: Vec<Expr>,
    pub(crate) on_failure: Vec<Expr>,
    pub(crate) on_retry: Vec<Expr>,
    pub(crate) sig: FnInfo,
}

/// What the expansion needs to know about the function's signature.
pub(crate) struct FnInfo {
    /// `Err` fails a run (else only a panic does).
    pub(crate) fallible: bool,
    pub(crate) receiver: Option<ReceiverInfo>,
    pub(crate) args: Vec<Arg>,
    /// The declared return type (`()` when there is none).
    pub(crate) output: Type,
    /// The return type's span, or the function name's when there is none.
    pub(crate) output_span: Span,
    /// `O` of a fallible `Result<O, E>` when it is written out.
    pub(crate) ok_type: Option<Type>,
    /// Why `submit`/`map` are not generated, if they are not.
    pub(crate) not_spawnable: Option<&'static str>,
    /// A method or associated fn (rewritten in place; no struct beside it).
    pub(crate) in_impl: bool,
}

/// The `self` of a method.
pub(crate) struct ReceiverInfo {
    /// `&self` / `&'a self`: `Copy`, so the body can simply capture it.
    pub(crate) shared_ref: bool,
    /// `mut self`.
    pub(crate) mutability: Option<syn::Token![mut]>,
    pub(crate) span: Span,
}

/// One typed argument.
pub(crate) struct Arg {
    /// The name it is passed on with: the user's for `name: T`, a generated one for patterns.
    pub(crate) ident: Ident,
    /// The pattern as written (`mut x`, `(a, b)`): bound inside the body.
    pub(crate) pat: Pat,
    pub(crate) ty: Type,
    /// The key of the flow's parameter.
    pub(crate) param_name: String,
}

/// Checks the options against each other and the function's signature.
pub(crate) fn validate(kind: Kind, raw: RawOptions, signature: &Signature) -> syn::Result<Config> {
    let mut errors = Errors::default();
    let attr = kind.attr();
    let fn_name = signature.ident.to_string();

    if signature.asyncness.is_none() {
        errors.push(syn::Error::new(
            signature.fn_token.span,
            format!("#[{attr}] needs an `async fn`: write `async fn {fn_name}(..)`"),
        ));
    }
    if let Some(variadic) = &signature.variadic {
        errors.push(syn::Error::new(
            variadic.dots.spans[0],
            format!("#[{attr}] does not support variadic functions"),
        ));
    }

    let fallible = match (&raw.fallible, &raw.infallible) {
        (Some(_), Some(second)) => {
            errors.push(syn::Error::new(
                second.key,
                "`fallible` and `infallible` contradict each other: keep one",
            ));
            true
        }
        (Some(_), None) => true,
        (None, Some(_)) => false,
        (None, None) => returns_result(&signature.output),
    };
    let sig = fn_info(signature, fallible, &mut errors);

    let retries = match raw.retries {
        Some(Opt { key, value }) => match value.base10_parse::<u32>() {
            Ok(0) => None,
            Ok(n) => Some(At {
                value: n,
                span: key.join(value.span()).unwrap_or(key),
            }),
            Err(_) => {
                errors.push(syn::Error::new(
                    value.span(),
                    "`retries` is the number of extra attempts: a whole number such as `retries = 3`",
                ));
                None
            }
        },
        None => None,
    };
    if let (Some(retries), Some(FnArg::Receiver(r))) = (&retries, signature.inputs.first())
        && matches!(r.kind, ReceiverKind::Reference(_, _, Some(_)))
    {
        errors.push(syn::Error::new(
                retries.span,
                "`retries` cannot retry a `&mut self` method: each attempt would need its own `&mut self`. \
                 Take `&self` (with interior mutability) or `self`, or remove `retries`",
            ));
    }
    let needs_retries = |errors: &mut Errors, key: Span, option: &str| {
        if retries.is_none() {
            errors.push(syn::Error::new(
                key,
                format!("`{option}` has no effect without retries: add `retries = N` (N >= 1) or remove `{option}`"),
            ));
        }
    };

    let retry_delay = raw.retry_delay.and_then(|o| {
        needs_retries(&mut errors, o.key, "retry_delay");
        errors.keep(duration(&o.value, "retry_delay", true))
    });
    let backoff = raw.backoff.and_then(|o| {
        needs_retries(&mut errors, o.key, "backoff");
        let n = o.value;
        if !(n.value.is_finite() && n.value >= 1.0) {
            errors.push(syn::Error::new(
                n.span,
                "`backoff` multiplies the delay after each retry and must be at least 1.0: write `backoff = 1.0` for a constant delay or `backoff = 2.0` to double it",
            ));
            return None;
        }
        Some(n.value)
    });
    let jitter = raw.jitter.and_then(|o| {
        needs_retries(&mut errors, o.key, "jitter");
        let n = o.value;
        if !(0.0..=1.0).contains(&n.value) {
            errors.push(syn::Error::new(
                n.span,
                "`jitter` is the fraction of the delay to randomize and must be between 0.0 and 1.0, e.g. `jitter = 0.1`",
            ));
            return None;
        }
        Some(n.value)
    });
    let retry_if = raw.retry_if.map(|o| {
        needs_retries(&mut errors, o.key, "retry_if");
        if !sig.fallible {
            errors.push(syn::Error::new(
                o.key,
                format!(
                    "`retry_if` decides from the error whether to retry, but `{fn_name}` does not return a `Result`: \
                     return `Result<_, E>` (or add `fallible` if the type is a `Result` under another name), or remove `retry_if`"
                ),
            ));
        }
        o.value
    });

    let timeout = raw.timeout.and_then(|o| {
        if !sig.fallible {
            errors.push(syn::Error::new(
                o.key,
                format!(
                    "`timeout` makes a timed-out attempt return `Err(flowkit::TimedOut.into())`, but `{fn_name}` does not return a `Result`: \
                     return `Result<_, E>` where `E: From<flowkit::TimedOut>` (`anyhow::Error` is), or remove `timeout`"
                ),
            ));
        }
        let nanos = errors.keep(duration(&o.value, "timeout", false))?;
        Some(At {
            value: nanos,
            span: o.key,
        })
    });

    let cache = raw.cache.map(|o| At {
        value: match o.value {
            CacheArg::Inputs => Cache::Inputs,
            CacheArg::KeyFn(path) => Cache::KeyFn(path),
        },
        span: o.key,
    });
    let needs_cache = |errors: &mut Errors, key: Span, option: &str| {
        if cache.is_none() {
            errors.push(syn::Error::new(
                key,
                format!("`{option}` has no effect without a cache: add `cache = inputs` (or `cache = my_key_fn`), or remove `{option}`"),
            ));
        }
    };
    let cache_ttl = raw.cache_ttl.and_then(|o| {
        needs_cache(&mut errors, o.key, "cache_ttl");
        errors.keep(duration(&o.value, "cache_ttl", false))
    });
    let refresh_cache = raw.refresh_cache.is_some_and(|o| {
        needs_cache(&mut errors, o.key, "refresh_cache");
        o.value.value
    });
    let persist = raw.persist.and_then(|o| o.value.value.then_some(o.key));

    let name = raw.name.map_or_else(
        || signature.ident.unraw_string(),
        |o| {
            let name = o.value.value();
            if name.trim().is_empty() {
                errors.push(syn::Error::new(
                    o.value.span(),
                    "`name` is shown in run lists and must not be empty",
                ));
            }
            name
        },
    );
    let tags = raw
        .tags
        .map(|o| o.value.0.iter().map(LitStr::value).collect())
        .unwrap_or_default();
    let hooks = |h: Option<Opt<super::options::Hooks>>| h.map(|o| o.value.0).unwrap_or_default();

    let config = Config {
        kind,
        name,
        version: raw.version.map(|o| o.value),
        retries,
        retry_delay,
        backoff,
        jitter,
        retry_if,
        timeout,
        cache,
        cache_ttl,
        refresh_cache,
        persist,
        tags,
        on_completion: hooks(raw.on_completion),
        on_failure: hooks(raw.on_failure),
        on_retry: hooks(raw.on_retry),
        sig,
    };
    errors.finish()?;
    Ok(config)
}

trait Unraw {
    fn unraw_string(&self) -> String;
}

impl Unraw for Ident {
    fn unraw_string(&self) -> String {
        let s = self.to_string();
        s.strip_prefix("r#").map(str::to_owned).unwrap_or(s)
    }
}

/// Parses a humantime literal into nanoseconds.
pub(crate) fn duration(lit: &LitStr, option: &str, zero_ok: bool) -> syn::Result<u64> {
    let text = lit.value();
    let parsed = humantime::parse_duration(text.trim()).map_err(|e| {
        syn::Error::new(
            lit.span(),
            format!(
                "`{option}` = {text:?} is not a duration ({e}): write a number and a unit, such as \"500ms\", \"30s\", \"1h 30m\" or \"1d\""
            ),
        )
    })?;
    if parsed.is_zero() && !zero_ok {
        return Err(syn::Error::new(
            lit.span(),
            format!("`{option}` must be longer than zero, e.g. \"30s\""),
        ));
    }
    u64::try_from(parsed.as_nanos()).map_err(|_| {
        syn::Error::new(
            lit.span(),
            format!("`{option}` = {text:?} is too long: at most about 584 years"),
        )
    })
}

/// Whether the last segment of the return type's path is `Result`.
fn returns_result(output: &ReturnType) -> bool {
    match output {
        ReturnType::Type(_, ty) => result_args(ty).is_some(),
        ReturnType::Default => false,
    }
}

/// The generic arguments of a `..::Result<..>` type.
fn result_args(ty: &Type) -> Option<&syn::PathArguments> {
    match ty {
        Type::Path(p) if p.qself.is_none() => {
            let last = p.path.segments.last()?;
            (last.ident == "Result").then_some(&last.arguments)
        }
        Type::Group(g) => result_args(&g.elem),
        Type::Paren(p) => result_args(&p.elem),
        _ => None,
    }
}

fn fn_info(sig: &Signature, fallible: bool, errors: &mut Errors) -> FnInfo {
    let (output, output_span) = match &sig.output {
        ReturnType::Type(_, ty) => ((**ty).clone(), ty.span()),
        ReturnType::Default => (syn::parse_quote!(()), sig.ident.span()),
    };
    if let Some(span) = find_impl_trait(&output) {
        errors.push(syn::Error::new(
            span,
            "#[task] and #[flow] cannot return `impl Trait`: name the type, or box it (`Box<dyn Trait + Send>`)",
        ));
    }
    let ok_type = if fallible {
        match result_args(&output) {
            Some(syn::PathArguments::AngleBracketed(args)) => {
                args.args.iter().find_map(|a| match a {
                    syn::GenericArgument::Type(t) => Some(t.clone()),
                    _ => None,
                })
            }
            _ => None,
        }
    } else {
        None
    };

    let mut receiver = None;
    let mut args = Vec::new();
    for (i, input) in sig.inputs.iter().enumerate() {
        match input {
            FnArg::Receiver(r) => {
                receiver = Some(ReceiverInfo {
                    shared_ref: matches!(r.kind, ReceiverKind::Reference(_, _, None)),
                    mutability: r.mutability,
                    span: r.self_token.span,
                });
            }
            FnArg::Typed(t) => {
                let (ident, param_name) = match &*t.pat {
                    Pat::Ident(p) if p.by_ref.is_none() && p.subpat.is_none() => {
                        (p.ident.clone(), p.ident.unraw_string())
                    }
                    _ => (
                        quote::format_ident!("__flowkit_arg{}", i),
                        format!("arg{i}"),
                    ),
                };
                args.push(Arg {
                    ident,
                    pat: (*t.pat).clone(),
                    ty: (*t.ty).clone(),
                    param_name,
                });
            }
        }
    }

    // Inside an `impl` there can be no struct beside the fn; a receiver or `Self` in the
    // signature is how an attribute can tell it is there.
    let in_impl = receiver.is_some() || mentions_self(sig);

    let not_spawnable = if in_impl {
        Some("it is a method")
    } else if sig.generics.lifetimes().next().is_some() {
        Some("it has lifetime parameters")
    } else if args.iter().any(|a| find_impl_trait(&a.ty).is_some()) {
        Some("it takes `impl Trait` arguments")
    } else if args.iter().any(|a| borrows(&a.ty)) || borrows(&output) {
        Some("it takes or returns borrowed data")
    } else {
        None
    };

    FnInfo {
        fallible,
        receiver,
        args,
        output,
        output_span,
        ok_type,
        not_spawnable,
        in_impl,
    }
}

fn find_impl_trait(ty: &Type) -> Option<Span> {
    struct Finder(Option<Span>);
    impl VisitMut for Finder {
        fn visit_type_impl_trait_mut(&mut self, t: &mut syn::TypeImplTrait) {
            self.0.get_or_insert(t.impl_token.span);
        }
    }
    let mut finder = Finder(None);
    finder.visit_type_mut(&mut ty.clone());
    finder.0
}

/// Whether a type holds a reference or a lifetime other than `'static`.
fn borrows(ty: &Type) -> bool {
    struct Finder(bool);
    impl VisitMut for Finder {
        fn visit_type_reference_mut(&mut self, r: &mut syn::TypeReference) {
            match &r.lifetime {
                Some(l) if l.ident == "static" => syn::visit_mut::visit_type_reference_mut(self, r),
                _ => self.0 = true,
            }
        }
        fn visit_lifetime_mut(&mut self, l: &mut syn::Lifetime) {
            if l.ident != "static" {
                self.0 = true;
            }
        }
    }
    let mut finder = Finder(false);
    finder.visit_type_mut(&mut ty.clone());
    finder.0
}

fn mentions_self(sig: &syn::Signature) -> bool {
    struct Finder(bool);
    impl VisitMut for Finder {
        fn visit_ident_mut(&mut self, i: &mut Ident) {
            if i == "Self" {
                self.0 = true;
            }
        }
    }
    let mut finder = Finder(false);
    finder.visit_signature_mut(&mut sig.clone());
    finder.0
}

/// Collects every error so one build shows them all.
#[derive(Default)]
struct Errors(Option<syn::Error>);

impl Errors {
    fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(error),
            None => self.0 = Some(error),
        }
    }

    fn keep<T>(&mut self, result: syn::Result<T>) -> Option<T> {
        result.map_err(|e| self.push(e)).ok()
    }

    fn finish(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn config(
        attr: proc_macro2::TokenStream,
        item: proc_macro2::TokenStream,
    ) -> syn::Result<Config> {
        let raw = RawOptions::parse("task", attr)?;
        let func: crate::parse::Func = syn::parse2(item).unwrap();
        validate(Kind::Task, raw, &func.sig)
    }

    fn error(attr: proc_macro2::TokenStream, item: proc_macro2::TokenStream) -> String {
        match config(attr, item) {
            Ok(_) => panic!("expected an error"),
            Err(e) => e
                .into_iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }

    fn lit(s: &str) -> LitStr {
        LitStr::new(s, Span::call_site())
    }

    #[test]
    fn durations_parse_to_nanos() {
        assert_eq!(duration(&lit("500ms"), "t", false).unwrap(), 500_000_000);
        assert_eq!(
            duration(&lit("1h 30m"), "t", false).unwrap(),
            5_400 * 1_000_000_000
        );
        assert_eq!(
            duration(&lit("1d"), "t", false).unwrap(),
            86_400 * 1_000_000_000
        );
        assert_eq!(duration(&lit("0s"), "t", true).unwrap(), 0);
    }

    #[test]
    fn bad_durations_say_the_format() {
        let msg = duration(&lit("thirty seconds"), "timeout", false)
            .unwrap_err()
            .to_string();
        assert!(
            msg.starts_with("`timeout` = \"thirty seconds\" is not a duration"),
            "{msg}"
        );
        assert!(msg.contains("\"500ms\", \"30s\", \"1h 30m\""), "{msg}");
        let msg = duration(&lit("30"), "timeout", false)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("time unit needed"), "{msg}");
        let msg = duration(&lit("0s"), "timeout", false)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("longer than zero"), "{msg}");
    }

    #[test]
    fn fallibility_follows_the_last_segment() {
        let c = config(
            quote!(),
            quote!(
                async fn f() -> anyhow::Result<u8> {
                    Ok(1)
                }
            ),
        )
        .unwrap();
        assert!(c.sig.fallible);
        assert!(c.sig.ok_type.is_some());
        let c = config(
            quote!(),
            quote!(
                async fn f() -> u8 {
                    1
                }
            ),
        )
        .unwrap();
        assert!(!c.sig.fallible);
        let c = config(
            quote!(infallible),
            quote!(
                async fn f() -> Result<u8, ()> {
                    Ok(1)
                }
            ),
        )
        .unwrap();
        assert!(!c.sig.fallible);
        let c = config(
            quote!(fallible),
            quote!(
                async fn f() -> Res {
                    Ok(1)
                }
            ),
        )
        .unwrap();
        assert!(c.sig.fallible && c.sig.ok_type.is_none());
    }

    #[test]
    fn non_async_is_rejected() {
        let msg = error(
            quote!(),
            quote!(
                fn fetch() {}
            ),
        );
        assert_eq!(
            msg,
            "#[task] needs an `async fn`: write `async fn fetch(..)`"
        );
    }

    #[test]
    fn options_that_need_others_say_so() {
        let msg = error(
            quote!(retry_delay = "1s"),
            quote!(
                async fn f() {}
            ),
        );
        assert!(
            msg.starts_with("`retry_delay` has no effect without retries"),
            "{msg}"
        );
        let msg = error(
            quote!(cache_ttl = "1d"),
            quote!(
                async fn f() {}
            ),
        );
        assert!(
            msg.starts_with("`cache_ttl` has no effect without a cache"),
            "{msg}"
        );
        let msg = error(
            quote!(timeout = "1s"),
            quote!(
                async fn f() -> u8 {
                    1
                }
            ),
        );
        assert!(msg.contains("does not return a `Result`"), "{msg}");
        let msg = error(
            quote!(retries = 0, jitter = 0.5),
            quote!(
                async fn f() {}
            ),
        );
        assert!(
            msg.starts_with("`jitter` has no effect without retries"),
            "{msg}"
        );
    }

    #[test]
    fn ranges_are_checked() {
        let msg = error(
            quote!(retries = 1, jitter = 1.5),
            quote!(
                async fn f() {}
            ),
        );
        assert!(msg.contains("between 0.0 and 1.0"), "{msg}");
        let msg = error(
            quote!(retries = 1, backoff = 0.5),
            quote!(
                async fn f() {}
            ),
        );
        assert!(msg.contains("at least 1.0"), "{msg}");
        let msg = error(
            quote!(retries = -1),
            quote!(
                async fn f() {}
            ),
        );
        assert!(msg.contains("whole number"), "{msg}");
    }

    #[test]
    fn every_error_is_reported_at_once() {
        let msg = error(
            quote!(retry_delay = "1s", cache_ttl = "nope"),
            quote!(
                fn f() {}
            ),
        );
        assert_eq!(msg.lines().count(), 4, "{msg}");
    }

    #[test]
    fn spawnability() {
        let c = config(
            quote!(),
            quote!(
                async fn f(x: &str) {}
            ),
        )
        .unwrap();
        assert!(c.sig.not_spawnable.is_some());
        let c = config(
            quote!(),
            quote!(
                async fn f(x: Vec<&'static str>) {}
            ),
        )
        .unwrap();
        assert!(c.sig.not_spawnable.is_none());
        let c = config(
            quote!(),
            quote!(
                async fn f(x: impl Send) {}
            ),
        )
        .unwrap();
        assert!(c.sig.not_spawnable.is_some());
        let c = config(
            quote!(),
            quote!(
                async fn f(&self) {}
            ),
        )
        .unwrap();
        assert!(c.sig.in_impl && c.sig.not_spawnable.is_some());
        let c = config(
            quote!(),
            quote!(
                async fn new() -> Self {
                    Self::default()
                }
            ),
        )
        .unwrap();
        assert!(c.sig.in_impl);
    }

    #[test]
    fn patterns_get_generated_names() {
        let c = config(
            quote!(),
            quote!(
                async fn f(mut a: u8, (b, c): (u8, u8)) {}
            ),
        )
        .unwrap();
        assert_eq!(c.sig.args[0].ident, "a");
        assert_eq!(c.sig.args[1].ident, "__flowkit_arg1");
        assert_eq!(c.sig.args[1].param_name, "arg1");
    }
}
