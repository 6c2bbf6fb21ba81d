//! The function as written: its attributes, visibility and signature parsed, its body kept as
//! tokens. The attribute needs only the signature; leaving the body unparsed means a syntax
//! error in it is rustc's to report, at the body, instead of being blamed on the attribute
//! (tracing-attributes' `MaybeItemFn`).

use proc_macro2::TokenStream;
use quote::{ToTokens, TokenStreamExt as _};
use syn::parse::discouraged::Speculative as _;
use syn::parse::{Parse, ParseStream};
use syn::{AttrStyle, Attribute, Signature, Visibility, token};

/// `#[attrs] vis sig { body }`, as written.
pub(crate) struct Func {
    /// Outer attributes (other than the flowkit attribute being expanded).
    pub(crate) attrs: Vec<Attribute>,
    pub(crate) vis: Visibility,
    pub(crate) sig: Signature,
    pub(crate) body: Body,
}

/// The body: its braces (so the code built from it keeps their span), its inner attributes
/// and its statements as tokens.
pub(crate) struct Body {
    pub(crate) brace: token::Brace,
    /// `#![..]` at the top of the body, turned into outer attributes: the body moves into an
    /// async block, where inner attributes are not allowed, so they go on the function.
    pub(crate) inner_attrs: Vec<Attribute>,
    /// The statements, not parsed.
    pub(crate) stmts: TokenStream,
}

impl Parse for Func {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let attrs = input.call(Attribute::parse_outer)?;
        let vis = input.parse()?;
        let sig = input.parse()?;
        let content;
        let brace = syn::braced!(content in input);
        // A malformed `#![..]` is left in the statements for rustc to report where it is.
        let fork = content.fork();
        let inner_attrs = match fork.call(Attribute::parse_inner) {
            Ok(mut attrs) => {
                content.advance_to(&fork);
                for attr in &mut attrs {
                    attr.style = AttrStyle::Outer;
                }
                attrs
            }
            Err(_) => Vec::new(),
        };
        let stmts = content.parse()?;
        Ok(Func {
            attrs,
            vis,
            sig,
            body: Body {
                brace,
                inner_attrs,
                stmts,
            },
        })
    }
}

impl Body {
    /// `{ prefix stmts }` in the body's own braces: no block is nested inside another (which
    /// rustc would flag as "unnecessary braces" at the user's braces), and an error about the
    /// block as a whole still points at the user's braces.
    pub(crate) fn with_prefix(&self, prefix: TokenStream, stmts: TokenStream) -> TokenStream {
        let mut out = TokenStream::new();
        self.brace.surround(&mut out, |inner| {
            inner.extend(prefix);
            inner.extend(stmts);
        });
        out
    }
}

/// The function as written (inner attributes back inside the body): what the source hash
/// covers.
impl ToTokens for Func {
    fn to_tokens(&self, tokens: &mut TokenStream) {
        tokens.append_all(&self.attrs);
        self.vis.to_tokens(tokens);
        self.sig.to_tokens(tokens);
        self.body.brace.surround(tokens, |inner| {
            for attr in &self.body.inner_attrs {
                let mut attr = attr.clone();
                attr.style = AttrStyle::Inner(Default::default());
                attr.to_tokens(inner);
            }
            self.body.stmts.to_tokens(inner);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    #[test]
    fn a_body_that_does_not_parse_is_kept_as_tokens() {
        let func: Func = syn::parse2(quote!(
            pub async fn f(x: u8) -> u8 {
                let y = x +;
                y
            }
        ))
        .expect("the signature parses");
        assert_eq!(func.sig.ident, "f");
        assert_eq!(func.body.stmts.to_string(), "let y = x + ; y");
    }

    #[test]
    fn inner_attributes_are_taken_out_of_the_body() {
        let func: Func = syn::parse2(quote!(
            async fn f() {
                #![allow(unused)]
                let x = 1;
            }
        ))
        .expect("parses");
        assert_eq!(func.body.inner_attrs.len(), 1);
        assert!(matches!(func.body.inner_attrs[0].style, AttrStyle::Outer));
        assert_eq!(func.body.stmts.to_string(), "let x = 1 ;");
        assert_eq!(
            func.to_token_stream().to_string(),
            "async fn f () { # ! [allow (unused)] let x = 1 ; }"
        );
    }
}
