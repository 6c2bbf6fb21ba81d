//! What a flow adds to a task: its arguments recorded as the run's parameters, and (for a flow
//! that can be deployed) `deployment(name)` and its `flowkit::FlowSignature`.

use super::rt;
use super::rt_at;
use crate::parse::{Config, Kind};
use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::spanned::Spanned as _;

/// Sets `__flowkit_site.parameters` to `{"arg": value, ..}` (flows only). Arguments that are
/// not `Serialize` are recorded as a placeholder rather than refused.
pub(crate) fn parameters(config: &Config) -> TokenStream {
    if config.kind != Kind::Flow {
        return TokenStream::new();
    }
    let p = rt();
    let names = config.sig.args.iter().map(|a| &a.param_name);
    let idents = config.sig.args.iter().map(|a| &a.ident);
    quote! {
        __flowkit_site.parameters = ::core::option::Option::Some({
            #[allow(unused_imports)]
            use #p::autoref::*;
            #[allow(unused_mut)]
            let mut __flowkit_params = #p::serde_json::Map::new();
            #(
                __flowkit_params.insert(
                    ::std::string::String::from(#names),
                    (&&&#p::autoref::Param(&#idents)).flowkit_param(),
                );
            )*
            #p::serde_json::Value::Object(__flowkit_params)
        });
    }
}

/// Why a flow cannot be deployed, if it cannot: its parameters must be owned, concrete types
/// that a worker can read from JSON.
pub(crate) fn not_deployable(config: &Config, generics: &syn::Generics) -> Option<&'static str> {
    if config.kind != Kind::Flow {
        return None;
    }
    if !generics.params.is_empty() {
        return Some("it is generic");
    }
    config.sig.not_spawnable
}

/// The type a completed run gives back, and where an error about it belongs: `T` of
/// `Result<T, E>` for a fallible flow, else the return type.
fn output(config: &Config) -> (TokenStream, Span) {
    let sig = &config.sig;
    let out = &sig.output;
    match (sig.fallible, &sig.ok_type) {
        (true, Some(ok)) => (quote!(#ok), ok.span()),
        (true, None) => {
            let p = rt();
            (quote!(<#out as #p::Fallible>::Ok), sig.output_span)
        }
        (false, _) => (quote!(#out), sig.output_span),
    }
}

/// `impl flowkit::FlowSignature for my_flow`, for a flow that can be deployed.
pub(crate) fn signature(
    config: &Config,
    ident: &syn::Ident,
    generics: &syn::Generics,
    cfgs: &[syn::Attribute],
) -> TokenStream {
    if config.kind != Kind::Flow || not_deployable(config, generics).is_some() {
        return TokenStream::new();
    }
    let tys = config.sig.args.iter().map(|a| &a.ty);
    let names = config.sig.args.iter().map(|a| &a.param_name);
    let name = &config.name;
    let (output, _) = output(config);
    quote! {
        #(#cfgs)*
        impl ::flowkit::FlowSignature for #ident {
            type Args = (#(#tys,)*);
            type Output = #output;
            const NAME: &'static str = #name;
            const PARAMETERS: &'static [&'static str] = &[#(#names),*];
        }
    }
}

/// `my_flow::deployment("name")` on the struct beside a free flow that can be deployed.
///
/// What it needs of the types is stated in its where clause, one bound per argument at the
/// argument's type, each under a `for<'__flowkit>` binder: rustc then checks them where
/// `deployment` is called rather than where it is defined, so a flow that is never deployed
/// needs no `JsonSchema`, and one that is gets an error at the call naming the type, with a
/// note at the argument.
pub(crate) fn deployment(
    config: &Config,
    vis: &syn::Visibility,
    generics: &syn::Generics,
    doc: &[syn::Attribute],
) -> TokenStream {
    if config.kind != Kind::Flow || not_deployable(config, generics).is_some() {
        return TokenStream::new();
    }
    let p = rt();
    let args = &config.sig.args;
    let mut bounds = Vec::new();
    for arg in args {
        let ty = &arg.ty;
        let span = ty.span();
        // The trait's path starts at the argument's name and ends at its type: rustc spans the
        // path from its first token to its last, so the note about the bound underlines
        // `name: Type`, naming the argument.
        let start = quote_spanned!(arg.pat.span()=> ::flowkit);
        for bound in ["ParameterSchema", "ParameterDeserialize"] {
            let bound = syn::Ident::new(bound, span);
            bounds.push(quote_spanned!(span=> for<'__flowkit> #ty: #start::__private::#bound));
        }
    }
    let (output, output_span) = output(config);
    let q = rt_at(output_span);
    bounds.push(quote_spanned!(output_span=> for<'__flowkit> #output: #q::OutputSchema));
    bounds.push(quote_spanned!(output_span=> for<'__flowkit> #output: #q::OutputSerialize));

    let docs = doc.iter().filter_map(|a| match &a.meta {
        syn::Meta::NameValue(nv) if a.path().is_ident("doc") => Some(&nv.value),
        _ => None,
    });
    let names: Vec<&String> = args.iter().map(|a| &a.param_name).collect();
    let tys: Vec<&syn::Type> = args.iter().map(|a| &a.ty).collect();
    // Without arguments a `match` would be a lone wildcard (clippy's `match_single_binding`).
    let check = if args.is_empty() {
        quote!(|_, _| ::core::option::Option::None)
    } else {
        quote! {
            |__flowkit_name, __flowkit_value| match __flowkit_name {
                #(#names => ::core::option::Option::Some(#p::check_parameter::<#tys>(__flowkit_value)),)*
                _ => ::core::option::Option::None,
            }
        }
    };
    let idents: Vec<&syn::Ident> = args.iter().map(|a| &a.ident).collect();
    let out_ty = &config.sig.output;
    // `T` of `Result<T, E>` for a fallible flow (`None` for an `Err`), else the whole output.
    let ok_ref = if config.sig.fallible {
        quote!(#p::Fallible::ok_ref(__flowkit_out))
    } else {
        quote!(::core::option::Option::Some(__flowkit_out))
    };
    let fn_doc = format!(
        "A deployment of the flow `{}` named `name`: see `flowkit::Deployment`. Needs every \
         argument to be `serde::de::DeserializeOwned + schemars::JsonSchema` and the output \
         `serde::Serialize + schemars::JsonSchema`.",
        config.name
    );
    quote! {
        #[doc = #fn_doc]
        #vis fn deployment(name: &str) -> ::flowkit::Deployment
        where
            #(#bounds,)*
        {
            #p::deployment(name, Self::__flowkit_spec(), #p::FlowTypes {
                doc: &[#(#docs),*],
                crate_version: ::core::option_env!("CARGO_PKG_VERSION"),
                parameters: &[#(
                    #p::Parameter {
                        name: #names,
                        schema: #p::subschema::<#tys>,
                        nullable: #p::accepts_null::<#tys>,
                    }
                ),*],
                output_schema: #p::output_schema::<#output>,
                check: #check,
                start: |__flowkit_params, __flowkit_site| {
                    let (#(#idents,)*) =
                        <Self as ::flowkit::FlowSignature>::args_from_json(__flowkit_params)?;
                    ::core::result::Result::Ok(::std::boxed::Box::pin(async move {
                        let _ = Self::__flowkit_spawnable(__flowkit_site, #(#idents),*).await;
                    }))
                },
                output: |__flowkit_any| {
                    let __flowkit_out = __flowkit_any.downcast_ref::<#out_ty>()?;
                    #p::output_json(#ok_ref)
                },
            })
        }
    }
}
