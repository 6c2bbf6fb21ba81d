//! The rewritten function and the body the runtime runs.
//!
//! A free function becomes three items: the function itself (same signature; a plain call is a
//! run), a hidden `__flowkit_<name>` that takes the call's `CallSite` first and holds the body,
//! and a struct of the same name (type namespace only) with the other entry points. A method
//! is rewritten in place.

use super::{checks, flow, rt, rt_at, source_hash};
use crate::parse::{Body, Cache, Config, Func, Kind};
use proc_macro2::{Ident, Literal, Span, TokenStream, TokenTree};
use quote::{format_ident, quote, quote_spanned};
use syn::parse::Parser as _;
use syn::spanned::Spanned as _;
use syn::visit_mut::VisitMut;
use syn::{Attribute, Block, FnArg, Pat};

pub(crate) fn expand(config: &Config, func: Func) -> TokenStream {
    let hash = source_hash(&func);
    if config.sig.in_impl {
        method(config, func, &hash)
    } else {
        free_fn(config, func, &hash)
    }
}

/// A free function: the function, its hidden body, and the struct of the same name.
fn free_fn(config: &Config, func: Func, hash: &str) -> TokenStream {
    let p = rt();
    let Func {
        attrs: outer_attrs,
        vis,
        sig,
        body,
    } = func;
    let inner_attrs = body.inner_attrs.iter().cloned();
    let cfgs: Vec<Attribute> = outer_attrs
        .iter()
        .filter(|a| a.path().is_ident("cfg"))
        .cloned()
        .collect();
    let lints: Vec<Attribute> = outer_attrs
        .iter()
        .filter_map(lint_as_allow)
        .chain(inner_attrs)
        .collect();
    let outer_attrs: Vec<Attribute> = outer_attrs
        .into_iter()
        .map(|a| lint_as_allow(&a).unwrap_or(a))
        .collect();

    let ident = &sig.ident;
    let inner = format_ident!("__flowkit_{}", ident.to_string().trim_start_matches("r#"));
    let asyncness = &sig.asyncness;
    let generics = &sig.generics;
    let where_clause = &sig.generics.where_clause;
    let output = &sig.output;
    let out_ty = &config.sig.output;
    let idents: Vec<&Ident> = config.sig.args.iter().map(|a| &a.ident).collect();
    let typed: Vec<TokenStream> = config
        .sig
        .args
        .iter()
        .map(|a| {
            let (ident, ty) = (&a.ident, &a.ty);
            quote!(#ident: #ty)
        })
        .collect();
    let turbofish = turbofish(config, generics);
    let call_inner = |site: TokenStream| quote!(#inner #turbofish(#site, #(#idents),*));

    let body = run_body(
        config,
        &body,
        quote!(#ident::__flowkit_spec()),
        quote!(__flowkit_site),
        flow::not_deployable(config, generics).is_none(),
    );
    let spec = spec(config, hash, ident);

    let default_site = quote!(::core::default::Default::default());
    let plain_call = call_inner(default_site.clone());
    let with_site = call_inner(quote!(__flowkit_site));

    let what = if config.kind == Kind::Flow {
        "flow"
    } else {
        "task"
    };
    let name = &config.name;
    let mut doc = format!(
        "The {what} `{name}`'s entry points besides the plain call.\n\n\
         `{ident}(..).await` runs it; `{ident}::with_options(options).call(..)` runs it with \
         per-call options"
    );
    let spawning = match config.sig.not_spawnable {
        None => {
            doc.push_str(
                "; `submit(..)` starts a run in the background and returns a handle; \
                 `map(items)` runs it once per item.",
            );
            // Spawned runs move to another thread and outlive the caller: generic types
            // must allow that (the bounds only constrain `submit` and `map`, not the fn).
            let mut sgenerics = generics.clone();
            if !generics.params.is_empty() {
                let preds = &mut sgenerics.make_where_clause().predicates;
                for t in generics.type_params() {
                    let t = &t.ident;
                    preds.push(syn::parse_quote!(
                        #t: ::core::marker::Send + ::core::marker::Sync + 'static
                    ));
                }
                for ty in config.sig.args.iter().map(|a| &a.ty).chain([out_ty]) {
                    preds.push(syn::parse_quote!(#ty: ::core::marker::Send + 'static));
                }
            }
            let swhere = &sgenerics.where_clause;
            let mut mgenerics = sgenerics.clone();
            mgenerics.params.push(syn::parse_quote!(__FlowkitItems));
            let (item_ty, item_pat) = match config.sig.args.as_slice() {
                [one] => {
                    let (ty, ident) = (&one.ty, &one.ident);
                    (quote!(#ty), quote!(#ident))
                }
                args => {
                    let tys = args.iter().map(|a| &a.ty);
                    (quote!((#(#tys,)*)), quote!((#(#idents,)*)))
                }
            };
            mgenerics.make_where_clause().predicates.extend::<[syn::WherePredicate; 2]>([
                syn::parse_quote!(__FlowkitItems: ::core::iter::IntoIterator<Item = #item_ty>),
                syn::parse_quote!(<__FlowkitItems as ::core::iter::IntoIterator>::IntoIter: ::core::marker::Send + 'static),
            ]);
            let mwhere = &mgenerics.where_clause;
            // The future must be `Send` to be spawned. One function states it, at the
            // function's name, so a body holding an `Rc` across an `.await` gets one error.
            let send_future = quote_spanned! {ident.span()=>
                impl ::core::future::Future<Output = #out_ty> + ::core::marker::Send + 'static
            };
            let spawnable =
                quote!(Self::__flowkit_spawnable #turbofish(__flowkit_site, #(#idents),*));
            let spawnable_default = quote!(Self::__flowkit_spawnable #turbofish(::core::default::Default::default(), #(#idents),*));
            quote! {
                #[doc(hidden)]
                fn __flowkit_spawnable #sgenerics (__flowkit_site: #p::CallSite, #(#typed),*) -> #send_future #swhere {
                    #with_site
                }

                /// Starts a run in the background (in the current flow's context) and returns
                /// its handle: await it for the output, or pass it to another task to record
                /// the dependency.
                #vis fn submit #sgenerics (#(#typed),*) -> ::flowkit::TaskHandle<#out_ty> #swhere {
                    #p::submit(move |__flowkit_site| #spawnable)
                }

                /// Like `submit`, with the options given to `with_options`.
                #vis fn submit_with #sgenerics (self, #(#typed),*) -> ::flowkit::TaskHandle<#out_ty> #swhere {
                    #p::submit_with(self.__flowkit_options, move |__flowkit_site| #spawnable)
                }

                /// Runs once per item, concurrently (bounded with `.concurrency(n)`); awaiting
                /// the result gives the outputs in input order. Items are the argument itself
                /// for a one-argument function, else tuples of the arguments.
                #vis fn map #mgenerics (items: __FlowkitItems) -> ::flowkit::Map<#out_ty> #mwhere {
                    #p::map(items, |#item_pat| #spawnable_default)
                }
            }
        }
        Some(why) => {
            doc.push_str(&format!(
                ".\n\nThere is no `submit` or `map`: {why}, and spawned runs must own their \
                 arguments (no references, lifetimes or `impl Trait`)."
            ));
            TokenStream::new()
        }
    };
    if let Some(why) = flow::not_deployable(config, generics) {
        doc.push_str(&format!(
            "\n\nThere is no `deployment`: {why}, and a deployed flow's arguments must be \
             owned, concrete types read from JSON."
        ));
    }
    let deployment = flow::deployment(config, &vis, generics, &outer_attrs);
    let signature = flow::signature(config, ident, generics, &cfgs);

    quote! {
        #(#outer_attrs)*
        #vis #asyncness fn #ident #generics (#(#typed),*) #output #where_clause {
            #plain_call.await
        }

        #(#cfgs)*
        #(#lints)*
        #[doc(hidden)]
        #asyncness fn #inner #generics (__flowkit_site: #p::CallSite, #(#typed),*) #output #where_clause
        #body

        #(#cfgs)*
        #[doc = #doc]
        #[allow(non_camel_case_types)]
        #vis struct #ident {
            __flowkit_options: ::flowkit::CallOptions,
        }

        #(#cfgs)*
        #[allow(dead_code, clippy::too_many_arguments, clippy::multiple_bound_locations)]
        impl #ident {
            #[doc(hidden)]
            fn __flowkit_spec() -> &'static #p::TaskSpec {
                #spec
            }

            /// Per-call options (retries, timeout, tags, `wait_for`, ..) for the next call.
            #vis fn with_options(options: ::flowkit::CallOptions) -> Self {
                Self { __flowkit_options: options }
            }

            /// Runs with the options given to `with_options`.
            #vis #asyncness fn call #generics (self, #(#typed),*) #output #where_clause {
                #p::call_with(self.__flowkit_options, move |__flowkit_site| #with_site).await
            }

            #spawning

            #deployment
        }

        #signature
    }
}

/// A method (or associated fn) inside an `impl`: rewritten in place, the spec in a `static`
/// inside it.
fn method(config: &Config, func: Func, hash: &str) -> TokenStream {
    let Func {
        mut attrs,
        vis,
        mut sig,
        body,
    } = func;
    attrs.extend(body.inner_attrs.iter().cloned());
    let moves_self = moves_self(config);
    // Arguments are passed on by name; patterns are bound inside the body.
    for (input, arg) in sig
        .inputs
        .iter_mut()
        .filter(|i| matches!(i, FnArg::Typed(_)))
        .zip(&config.sig.args)
    {
        if let FnArg::Typed(t) = input {
            let ident = &arg.ident;
            *t.pat = syn::parse_quote!(#ident);
        }
    }
    if let (true, Some(FnArg::Receiver(r))) = (moves_self, sig.inputs.first_mut()) {
        r.mutability = None;
    }
    let spec = spec(config, hash, &sig.ident);
    let site = quote!(::core::default::Default::default());
    let body = run_body(config, &body, spec, site, false);
    quote! {
        #(#attrs)*
        #vis #sig #body
    }
}

/// Whether the receiver travels with the arguments (renamed `__flowkit_self` in the body): a
/// non-`&self` receiver of a function with retries, which each attempt gets a clone of.
fn moves_self(config: &Config) -> bool {
    config.retries.is_some() && config.sig.receiver.as_ref().is_some_and(|r| !r.shared_ref)
}

/// The body: the call's site filled in (inputs, upstream runs, parameters), then the user's
/// block handed to the runtime. A flow that can be deployed lets a deployed run see its output
/// (`Shape::with_any`).
fn run_body(
    config: &Config,
    body: &Body,
    spec: TokenStream,
    site: TokenStream,
    deployable: bool,
) -> TokenStream {
    let p = rt();
    let sig = &config.sig;
    let idents: Vec<&Ident> = sig.args.iter().map(|a| &a.ident).collect();

    let clone_checks = checks::clone_args(config);
    let serialize_checks = checks::serialize_args(config);

    // What the cache key and the store's key hash: a key function's value, or the arguments
    // themselves (and `self`).
    let hashed: Vec<TokenStream> = sig
        .receiver
        .iter()
        .map(|r| quote_spanned!(r.span=> self))
        .chain(idents.iter().map(|i| quote!(#i)))
        .collect();
    let inputs = match config.cache.as_ref().map(|c| &c.value) {
        Some(Cache::KeyFn(key)) => {
            let span = key.span();
            let p = rt_at(span);
            quote_spanned! {span=>
                __flowkit_site.inputs = ::core::option::Option::Some(#p::hash_inputs(&#key(#(&#hashed),*)));
            }
        }
        Some(Cache::Inputs) | None if config.cache.is_some() || config.persist.is_some() => {
            let span = config
                .cache
                .as_ref()
                .map(|c| c.span)
                .or(config.persist)
                .unwrap_or_else(Span::call_site);
            let p = rt_at(span);
            quote_spanned! {span=>
                __flowkit_site.inputs = ::core::option::Option::Some(#p::hash_inputs(&(#(&#hashed,)*)));
            }
        }
        _ => TokenStream::new(),
    };
    let upstream = if idents.is_empty() {
        TokenStream::new()
    } else {
        quote! {
            {
                #[allow(unused_imports)]
                use #p::autoref::*;
                #(
                    if let ::core::option::Option::Some(__flowkit_id) = (&&&#p::autoref::Upstream(&#idents)).flowkit_upstream() {
                        __flowkit_site.upstream.push(__flowkit_id);
                    }
                )*
            }
        }
    };
    let parameters = flow::parameters(config);
    let name = Literal::string(&config.name);
    let mut shape = shape(config);
    if deployable && config.kind == Kind::Flow {
        shape = quote!(#shape.with_any());
    }
    let attempt = attempt(config, body);

    quote! {
        {
            #[allow(unused_mut)]
            let mut __flowkit_site: #p::CallSite = #site;
            #clone_checks
            #serialize_checks
            #inputs
            #upstream
            #parameters
            let __flowkit_span = #p::tracing::info_span!(#name);
            let __flowkit_shape = #shape;
            #p::run(#spec, __flowkit_shape, __flowkit_site, __flowkit_span, #attempt).await
        }
    }
}

/// `once(args, |args| async move { body })`, or `repeat(..)` when the body may run again.
fn attempt(config: &Config, body: &Body) -> TokenStream {
    let p = rt();
    let sig = &config.sig;
    let mut stmts = body.stmts.clone();
    let mut args: Vec<TokenStream> = Vec::new();
    let mut pats: Vec<TokenStream> = Vec::new();
    if moves_self(config) {
        stmts = rename_self(stmts);
        args.push(quote!(self));
        // `mut self` stays mutable in the body.
        let mutability = sig.receiver.as_ref().and_then(|r| r.mutability);
        pats.push(quote!(#mutability __flowkit_self));
    }
    for arg in &sig.args {
        let (ident, pat) = (&arg.ident, &arg.pat);
        args.push(quote!(#ident));
        pats.push(strip_attrs(pat));
    }
    // With retries the arguments must be `Clone`: besides each argument's type, the
    // compiler points at `retries` as the call that needs it.
    let run = match &config.retries {
        Some(retries) => {
            let p = rt_at(retries.span);
            quote_spanned!(retries.span=> #p::repeat)
        }
        None => quote!(#p::once),
    };
    // The statements go straight into the async block, which takes the user's braces: a
    // block nested in it would be flagged as "unnecessary braces" on a one-line body.
    let block = body.with_prefix(fake_return_edge(config), stmts);
    quote! {
        #run((#(#args,)*), move |(#(#pats,)*)| async move #block)
    }
}

/// An unreachable `return` of the declared type, first in the body: the async block's output
/// type is then the declared one, so `?` converts errors and `return` type-checks as in the
/// original function (and type errors stay on the user's lines).
fn fake_return_edge(config: &Config) -> TokenStream {
    let ty = &config.sig.output;
    quote_spanned! {config.sig.output_span=>
        #[allow(
            unknown_lints,
            unreachable_code,
            clippy::diverging_sub_expression,
            clippy::empty_loop,
            clippy::let_unit_value,
            clippy::let_with_type_underscore,
            clippy::needless_return,
            clippy::unreachable
        )]
        if false {
            let __flowkit_fake_return: #ty = loop {};
            return __flowkit_fake_return;
        }
    }
}

/// How the runtime tells success from failure, and what the options need of the output.
fn shape(config: &Config) -> TokenStream {
    let p = rt();
    let sig = &config.sig;
    let out = &sig.output;
    let mut shape = if sig.fallible {
        quote! {
            #p::Shape::<#out>::fallible(|__flowkit_r| {
                #[allow(unused_imports)]
                use #p::autoref::*;
                __flowkit_r
                    .as_ref()
                    .err()
                    .map(|__flowkit_e| (&&&#p::autoref::Describe(__flowkit_e)).flowkit_describe())
            })
        }
    } else {
        quote!(#p::Shape::<#out>::infallible())
    };
    if let Some(retry_if) = &config.retry_if {
        let span = retry_if.span();
        shape = quote_spanned! {span=>
            #shape.with_retry_if(|__flowkit_r| match __flowkit_r {
                ::core::result::Result::Err(__flowkit_e) => #retry_if(__flowkit_e),
                ::core::result::Result::Ok(_) => false,
            })
        };
    }
    if let Some(timeout) = &config.timeout {
        // Needs `E: From<TimedOut>`: the error, if any, is at the option.
        let with_timeout = quote_spanned!(timeout.span=> with_timeout);
        shape = quote!(#shape.#with_timeout());
    }
    if let Some(codec) = checks::codec(config) {
        shape = quote!(#shape.with_codec(#codec));
    }
    shape
}

/// The `&'static TaskSpec` of the function: a `static` built on first use.
fn spec(config: &Config, hash: &str, ident: &Ident) -> TokenStream {
    let p = rt();
    let kind = match config.kind {
        Kind::Task => quote!(#p::RunKind::Task),
        Kind::Flow => quote!(#p::RunKind::Flow),
    };
    let name = Literal::string(&config.name);
    let key = Literal::string(ident.to_string().trim_start_matches("r#"));
    let duration = |nanos: u64| {
        let nanos = Literal::u64_unsuffixed(nanos);
        quote!(#p::Duration::from_nanos(#nanos))
    };
    let mut calls = TokenStream::new();
    if let Some(version) = &config.version {
        calls.extend(quote!(.version(#version)));
    }
    if let Some(retries) = &config.retries {
        let n = Literal::u32_unsuffixed(retries.value);
        calls.extend(quote!(.retries(#n)));
    }
    if let Some(delay) = config.retry_delay {
        let d = duration(delay);
        calls.extend(quote!(.retry_delay(#d)));
    }
    if let Some(backoff) = config.backoff {
        let f = Literal::f64_unsuffixed(backoff);
        calls.extend(quote!(.backoff(#f)));
    }
    if let Some(jitter) = config.jitter {
        let f = Literal::f64_unsuffixed(jitter);
        calls.extend(quote!(.jitter(#f)));
    }
    if let Some(timeout) = &config.timeout {
        let d = duration(timeout.value);
        calls.extend(quote!(.timeout(#d)));
    }
    match config.cache.as_ref().map(|c| &c.value) {
        Some(Cache::Inputs) => calls.extend(quote!(.cache(#p::CacheMode::Inputs))),
        Some(Cache::KeyFn(_)) => calls.extend(quote!(.cache(#p::CacheMode::KeyFn))),
        None => {}
    }
    if let Some(ttl) = config.cache_ttl {
        let d = duration(ttl);
        calls.extend(quote!(.cache_ttl(#d)));
    }
    if config.refresh_cache {
        calls.extend(quote!(.refresh_cache(true)));
    }
    if config.persist.is_some() {
        calls.extend(quote!(.persist(true)));
    }
    if !config.tags.is_empty() {
        let tags = config.tags.iter().map(|t| Literal::string(t));
        calls.extend(quote!(.tags(&[#(#tags),*])));
    }
    for (method, hooks) in [
        ("on_completion", &config.on_completion),
        ("on_failure", &config.on_failure),
        ("on_retry", &config.on_retry),
    ] {
        for hook in hooks {
            // A hook that is not a `flowkit::hooks::Hook` is reported at the hook.
            let method = Ident::new(method, hook.span());
            calls.extend(quote!(.#method(#hook)));
        }
    }
    quote! {{
        static __FLOWKIT_SPEC: #p::LazyLock<#p::TaskSpec> = #p::LazyLock::new(|| {
            #p::TaskSpec::new(
                #kind,
                #name,
                ::core::concat!(::core::module_path!(), "::", #key),
                #hash,
            )
            #calls
        });
        &*__FLOWKIT_SPEC
    }}
}

/// Explicit type and const arguments for calling the hidden function, so parameters that
/// appear only in the return type are still known. Lifetimes are left to inference (they may
/// be late-bound), and `impl Trait` arguments forbid explicit arguments altogether.
fn turbofish(config: &Config, generics: &syn::Generics) -> TokenStream {
    let params: Vec<&Ident> = generics
        .params
        .iter()
        .filter_map(|g| match g {
            syn::GenericParam::Type(t) => Some(&t.ident),
            syn::GenericParam::Const(c) => Some(&c.ident),
            syn::GenericParam::Lifetime(_) => None,
        })
        .collect();
    let impl_trait_args = config.sig.args.iter().any(|a| contains_impl(&a.ty));
    if params.is_empty() || impl_trait_args {
        TokenStream::new()
    } else {
        quote!(::<#(#params),*>)
    }
}

fn contains_impl(ty: &syn::Type) -> bool {
    quote!(#ty)
        .into_iter()
        .any(|t| matches!(&t, TokenTree::Ident(i) if i == "impl"))
}

/// A lint attribute, with `expect` turned into `allow`: it goes on two functions and only one
/// of them would fulfil the expectation.
fn lint_as_allow(attr: &Attribute) -> Option<Attribute> {
    let path = attr.path();
    if path.is_ident("expect") {
        let mut attr = attr.clone();
        if let syn::Meta::List(list) = &mut attr.meta {
            list.path = syn::parse_quote_spanned!(list.path.span()=> allow);
        }
        return Some(attr);
    }
    ["allow", "warn", "deny", "forbid"]
        .iter()
        .any(|l| path.is_ident(l))
        .then(|| attr.clone())
}

/// The pattern without attributes on its bindings (they stay in the signature).
fn strip_attrs(pat: &Pat) -> TokenStream {
    match pat {
        Pat::Ident(p) => {
            let mut p = p.clone();
            p.attrs.clear();
            quote!(#p)
        }
        other => quote!(#other),
    }
}

/// `self` → `__flowkit_self` in the statements of a body that gets its receiver as an
/// argument. When they parse, nested items (which have their own `self`) are left alone; when
/// they do not, rustc reports the syntax error and the renaming is token by token.
fn rename_self(stmts: TokenStream) -> TokenStream {
    match Block::parse_within.parse2(stmts.clone()) {
        Ok(mut parsed) => {
            for stmt in &mut parsed {
                RenameSelf.visit_stmt_mut(stmt);
            }
            quote!(#(#parsed)*)
        }
        Err(_) => rename_self_tokens(stmts),
    }
}

/// The renaming in parsed code. Macro arguments are renamed token by token.
struct RenameSelf;

impl VisitMut for RenameSelf {
    fn visit_item_mut(&mut self, _: &mut syn::Item) {}

    fn visit_path_mut(&mut self, path: &mut syn::Path) {
        if path.leading_colon.is_none() && path.segments.len() == 1 {
            let segment = &mut path.segments[0];
            if segment.ident == "self" {
                segment.ident = Ident::new("__flowkit_self", segment.ident.span());
            }
        }
        syn::visit_mut::visit_path_mut(self, path);
    }

    fn visit_macro_mut(&mut self, mac: &mut syn::Macro) {
        mac.tokens = rename_self_tokens(std::mem::take(&mut mac.tokens));
    }
}

fn rename_self_tokens(tokens: TokenStream) -> TokenStream {
    let tokens: Vec<TokenTree> = tokens.into_iter().collect();
    let mut out = Vec::with_capacity(tokens.len());
    for (i, token) in tokens.iter().enumerate() {
        let token = match token {
            TokenTree::Ident(ident) if ident == "self" => {
                let path =
                    matches!(tokens.get(i + 1), Some(TokenTree::Punct(p)) if p.as_char() == ':');
                if path {
                    token.clone()
                } else {
                    TokenTree::Ident(Ident::new("__flowkit_self", ident.span()))
                }
            }
            TokenTree::Group(g) => {
                let mut group =
                    proc_macro2::Group::new(g.delimiter(), rename_self_tokens(g.stream()));
                group.set_span(g.span());
                TokenTree::Group(group)
            }
            other => other.clone(),
        };
        out.push(token);
    }
    out.into_iter().collect()
}
