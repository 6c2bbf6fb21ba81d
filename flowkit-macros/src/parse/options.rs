//! The options as written: each value with the span of its name, nothing checked beyond
//! syntax and duplicates. [`super::validate`] turns them into a [`super::Config`].
//!
//! Every option is declared once, in the table below: its keyword, its type and the example
//! the errors show. The table makes the keyword, the list of names the errors show, the field
//! of [`RawOptions`] and the parse arm, so adding an option is one line here (and reading it
//! in `validate`).

use proc_macro2::Span;
use syn::ext::IdentExt as _;
use syn::parse::{Parse, ParseStream, Parser as _};
use syn::punctuated::Punctuated;
use syn::{Expr, Ident, LitBool, LitInt, LitStr, Path, Token};

declare_options! {
    name: LitStr = "name = \"download\"",
    version: LitStr = "version = \"1.2.0\"",
    retries: LitInt = "retries = 3",
    retry_delay: LitStr = "retry_delay = \"500ms\"",
    backoff: Number = "backoff = 2.0",
    jitter: Number = "jitter = 0.1",
    retry_if: Path = "retry_if = is_transient",
    timeout: LitStr = "timeout = \"30s\"",
    cache: CacheArg = "cache = inputs",
    cache_ttl: LitStr = "cache_ttl = \"1d\"",
    refresh_cache: LitBool = "refresh_cache = true",
    tags: Tags = "tags = [\"db\", \"gpu\"]",
    on_completion: Hooks = "on_completion = my_hook",
    on_failure: Hooks = "on_failure = [my_hook, flowkit::notify::slack(url)]",
    on_retry: Hooks = "on_retry = my_hook",
    persist: LitBool = "persist = true",
    fallible: Flag = "fallible",
    infallible: Flag = "infallible",
}

/// Expands the table: one line `name: Type = "example"` per option, in the order the errors
/// list them. `Type` says how the value is written ([`OptionValue`]).
macro_rules! declare_options {
    ($($name:ident: $ty:ty = $example:literal,)*) => {
        /// The options' names as keywords, so `input.peek(kw::retries)` reads as what it is.
        mod kw {
            $(syn::custom_keyword!($name);)*
        }

        /// Every option, in the order the error messages list them.
        const ALL: &[&str] = &[$(stringify!($name)),*];

        /// Every option of `#[task(..)]` / `#[flow(..)]`, as written.
        #[derive(Default)]
        pub(crate) struct RawOptions {
            $(pub(crate) $name: Option<Opt<$ty>>,)*
        }

        impl RawOptions {
            /// Parses the option the input starts with, if it is one; `false` if it is none.
            fn parse_known(&mut self, input: ParseStream) -> syn::Result<bool> {
                $(
                    if input.peek(kw::$name) {
                        let key = input.parse::<kw::$name>()?.span;
                        let value = <$ty as OptionValue>::parse_value(input, $example)?;
                        set_once(&mut self.$name, stringify!($name), $example, Opt { key, value })?;
                        return Ok(true);
                    }
                )*
                Ok(false)
            }
        }
    };
}
use declare_options;

/// Not an option: the value of `cache = inputs`.
mod value_kw {
    syn::custom_keyword!(inputs);
}

/// One option: where its name is (errors about the option point there) and its value.
pub(crate) struct Opt<T> {
    pub(crate) key: Span,
    pub(crate) value: T,
}

/// A number written as `2`, `2.0` or `-0.5`, kept with its span for range errors.
pub(crate) struct Number {
    pub(crate) value: f64,
    pub(crate) span: Span,
}

/// The value of `cache = ..`.
pub(crate) enum CacheArg {
    /// `cache = inputs`.
    Inputs,
    /// `cache = path::to_key_fn`.
    KeyFn(Path),
}

/// The value of a bare flag such as `fallible`: its presence.
pub(crate) struct Flag;

/// How an option's value is written: `= VALUE` for any value that parses, nothing for a
/// [`Flag`]. Errors show `example`, the option written correctly.
trait OptionValue: Sized {
    fn parse_value(input: ParseStream, example: &str) -> syn::Result<Self>;
}

impl<T: Parse> OptionValue for T {
    fn parse_value(input: ParseStream, example: &str) -> syn::Result<Self> {
        let hint = |e: syn::Error| syn::Error::new(e.span(), format!("{e}: write `{example}`"));
        input.parse::<Token![=]>().map_err(hint)?;
        input.parse::<T>().map_err(hint)
    }
}

impl OptionValue for Flag {
    fn parse_value(input: ParseStream, example: &str) -> syn::Result<Self> {
        if input.peek(Token![=]) {
            return Err(input.error(format!(
                "`{example}` takes no value: write just `{example}`"
            )));
        }
        Ok(Flag)
    }
}

impl RawOptions {
    /// Parses the tokens inside `#[attr(..)]`; `attr` (`task` or `flow`) names the attribute in
    /// error messages.
    pub(crate) fn parse(attr: &str, tokens: proc_macro2::TokenStream) -> syn::Result<Self> {
        (|input: ParseStream| {
            let mut raw = RawOptions::default();
            while !input.is_empty() {
                raw.parse_one(attr, input)?;
                if input.is_empty() {
                    break;
                }
                input
                    .parse::<Token![,]>()
                    .map_err(|e| syn::Error::new(e.span(), "expected `,` between options"))?;
            }
            Ok(raw)
        })
        .parse2(tokens)
    }

    fn parse_one(&mut self, attr: &str, input: ParseStream) -> syn::Result<()> {
        if self.parse_known(input)? {
            return Ok(());
        }
        if input.peek(Ident::peek_any) {
            let ident = input.call(Ident::parse_any)?;
            let unknown = ident.to_string();
            let hint = match closest(&unknown) {
                Some(near) => format!("did you mean `{near}`? "),
                None => String::new(),
            };
            return Err(syn::Error::new(
                ident.span(),
                format!(
                    "unknown option `{unknown}` of #[{attr}]: {hint}the options are {}",
                    valid_list()
                ),
            ));
        }
        Err(input.error(format!(
            "expected an option of #[{attr}], such as `retries = 3`; the options are {}",
            valid_list()
        )))
    }
}

/// The one place duplicates are rejected: every option goes through here.
fn set_once<T>(
    slot: &mut Option<Opt<T>>,
    name: &str,
    example: &str,
    opt: Opt<T>,
) -> syn::Result<()> {
    if slot.is_some() {
        return Err(syn::Error::new(
            opt.key,
            format!("option `{name}` is given twice: keep only one `{example}`"),
        ));
    }
    *slot = Some(opt);
    Ok(())
}

impl Parse for Number {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let minus = input.parse::<Option<Token![-]>>()?;
        let lookahead = input.lookahead1();
        let (value, span) = if lookahead.peek(syn::LitFloat) {
            let lit = input.parse::<syn::LitFloat>()?;
            (lit.base10_parse::<f64>()?, lit.span())
        } else if lookahead.peek(LitInt) {
            let lit = input.parse::<LitInt>()?;
            (lit.base10_parse::<f64>()?, lit.span())
        } else {
            return Err(lookahead.error());
        };
        let span = minus.map_or(span, |m| m.span);
        let value = if minus.is_some() { -value } else { value };
        Ok(Number { value, span })
    }
}

impl Parse for CacheArg {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        if input.peek(value_kw::inputs) && !input.peek2(Token![::]) {
            input.parse::<value_kw::inputs>()?;
            return Ok(CacheArg::Inputs);
        }
        input.parse::<Path>().map(CacheArg::KeyFn).map_err(|e| {
            syn::Error::new(
                e.span(),
                "expected `inputs` or the path of a key function (`fn(&A, &B) -> K` where `K: Serialize`)",
            )
        })
    }
}

/// `["a", "b"]`, or a single `"a"`.
pub(crate) struct Tags(pub(crate) Vec<LitStr>);

impl Parse for Tags {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        if input.peek(syn::token::Bracket) {
            let content;
            syn::bracketed!(content in input);
            let tags = Punctuated::<LitStr, Token![,]>::parse_terminated(&content)?;
            Ok(Tags(tags.into_iter().collect()))
        } else {
            Ok(Tags(vec![input.parse()?]))
        }
    }
}

/// `EXPR` or `[EXPR, EXPR, ..]`.
pub(crate) struct Hooks(pub(crate) Vec<Expr>);

impl Parse for Hooks {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        if input.peek(syn::token::Bracket) {
            let content;
            syn::bracketed!(content in input);
            let hooks = Punctuated::<Expr, Token![,]>::parse_terminated(&content)?;
            Ok(Hooks(hooks.into_iter().collect()))
        } else {
            Ok(Hooks(vec![input.parse()?]))
        }
    }
}

fn valid_list() -> String {
    ALL.iter()
        .map(|o| format!("`{o}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The option nearest to a misspelt one, if it is near enough to be what was meant.
fn closest(unknown: &str) -> Option<&'static str> {
    ALL.iter()
        .map(|o| (edit_distance(unknown, o), *o))
        .filter(|(d, o)| *d <= (o.len() / 2).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, o)| o)
}

/// Edit distance counting a swap of neighbours as one edit (`cahce` is one from `cache`).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn parse(tokens: proc_macro2::TokenStream) -> syn::Result<RawOptions> {
        RawOptions::parse("task", tokens)
    }

    fn error(tokens: proc_macro2::TokenStream) -> String {
        match parse(tokens) {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn empty_is_fine() {
        let raw = parse(quote!()).unwrap();
        assert!(raw.retries.is_none() && raw.cache.is_none());
    }

    #[test]
    fn every_option_parses() {
        let raw = parse(quote!(
            name = "n",
            version = "1",
            retries = 3,
            retry_delay = "500ms",
            backoff = 2,
            jitter = 0.5,
            retry_if = crate::transient,
            timeout = "30s",
            cache = inputs,
            cache_ttl = "1d",
            refresh_cache = true,
            tags = ["a", "b"],
            on_completion = done,
            on_failure = [a, flowkit::notify::slack("u")],
            on_retry = |_ctx: &flowkit::hooks::HookContext| {},
            persist = true,
            fallible,
        ))
        .unwrap();
        assert_eq!(raw.retries.unwrap().value.base10_parse::<u32>().unwrap(), 3);
        assert_eq!(raw.backoff.unwrap().value.value, 2.0);
        assert_eq!(raw.tags.unwrap().value.0.len(), 2);
        assert_eq!(raw.on_failure.unwrap().value.0.len(), 2);
        assert!(matches!(raw.cache.unwrap().value, CacheArg::Inputs));
        assert!(raw.fallible.is_some());
    }

    #[test]
    fn cache_takes_a_key_fn() {
        let raw = parse(quote!(cache = keys::by_url)).unwrap();
        assert!(matches!(raw.cache.unwrap().value, CacheArg::KeyFn(_)));
    }

    #[test]
    fn negative_numbers_parse() {
        let raw = parse(quote!(jitter = -0.5)).unwrap();
        assert_eq!(raw.jitter.unwrap().value.value, -0.5);
    }

    #[test]
    fn duplicates_are_rejected() {
        let msg = error(quote!(retries = 1, timeout = "1s", retries = 2));
        assert_eq!(
            msg,
            "option `retries` is given twice: keep only one `retries = 3`"
        );
        let msg = error(quote!(fallible, fallible));
        assert!(msg.contains("`fallible` is given twice"), "{msg}");
    }

    #[test]
    fn unknown_option_lists_the_valid_ones() {
        let msg = error(quote!(retry = 3));
        assert!(msg.starts_with("unknown option `retry` of #[task]: did you mean `retries`?"));
        assert!(msg.contains("`name`, `version`, `retries`"), "{msg}");
        assert!(msg.contains("`infallible`"), "{msg}");
        let msg = error(quote!(frobnicate = 3));
        assert!(msg.starts_with("unknown option `frobnicate` of #[task]: the options are"));
    }

    #[test]
    fn wrong_value_type_shows_the_right_form() {
        let msg = error(quote!(retries = "3"));
        assert!(msg.ends_with("write `retries = 3`"), "{msg}");
        let msg = error(quote!(timeout));
        assert!(msg.ends_with("write `timeout = \"30s\"`"), "{msg}");
        let msg = error(quote!(fallible = true));
        assert!(msg.contains("takes no value"), "{msg}");
    }

    #[test]
    fn missing_comma_is_reported() {
        let msg = error(quote!(retries = 3 timeout = "1s"));
        assert_eq!(msg, "expected `,` between options");
    }

    #[test]
    fn closest_only_suggests_near_names() {
        assert_eq!(closest("retires"), Some("retries"));
        assert_eq!(closest("cahce"), Some("cache"));
        assert_eq!(closest("retry"), Some("retries"));
        assert_eq!(closest("ttl"), None);
        assert_eq!(closest("zzz"), None);
    }
}
