//! What a flow adds to a task: its arguments recorded as the run's parameters, and
//! `deployment(name)`, which describes a deployment of the flow.

use super::rt;
use crate::parse::{Config, Kind};
use proc_macro2::TokenStream;
use quote::quote;

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

/// `my_flow::deployment("name")` on the struct beside a free flow.
pub(crate) fn deployment(config: &Config, vis: &syn::Visibility) -> TokenStream {
    if config.kind != Kind::Flow {
        return TokenStream::new();
    }
    let p = rt();
    let doc = format!(
        "A deployment of the flow `{}` named `name`: see `flowkit::Deployment`.",
        config.name
    );
    quote! {
        #[doc = #doc]
        #vis fn deployment(name: &str) -> ::flowkit::Deployment {
            #p::deployment(name, Self::__flowkit_spec())
        }
    }
}
