//! `#[plugin]`: turns an `impl` block of tool functions into an Engram
//! plugin. Use it through `engram_plugin_sdk::plugin`.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as Tokens};
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Attribute, FnArg, ImplItem, ItemImpl, LitStr, ReturnType, Type, parse_macro_input};

/// Makes the type of an `impl` block an Engram plugin whose tools are the
/// block's functions marked `#[tool]`, and exports it as the component's
/// `describe` and `call`.
///
/// A tool function takes its arguments as one type implementing
/// `Deserialize` and `JsonSchema` (and optionally `&Context` first), and
/// returns `Result<T, Error>` (or `T`) where `T` implements `Serialize` —
/// and `JsonSchema`, which becomes the tool's output schema, unless `T` is
/// `Value`. Its doc comment is the description the model reads.
/// `#[tool(...)]` takes `name = "..."`, `title = "..."` and the hints
/// `read_only`, `destructive`, `idempotent`, `open_world`.
///
/// ```ignore
/// #[plugin]
/// impl Greeter {
///     /// Greets someone by name.
///     #[tool(read_only, title = "Greeter")]
///     fn greet(args: GreetArgs) -> Result<Greeting, Error> { ... }
/// }
/// ```
#[proc_macro_attribute]
pub fn plugin(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        let span = Tokens::from(attr).span();
        return syn::Error::new(span, "#[plugin] takes no arguments").to_compile_error().into();
    }
    let mut block = parse_macro_input!(item as ItemImpl);
    match expand(&mut block) {
        Ok(tokens) => tokens.into(),
        Err(err) => {
            let err = err.to_compile_error();
            quote!(#block #err).into()
        }
    }
}

/// One `#[tool]` function.
struct ToolFn {
    ident: syn::Ident,
    name: String,
    title: Option<String>,
    description: String,
    hints: Vec<syn::Ident>,
    /// Whether it takes `&Context`, and where.
    context: Option<usize>,
    /// Its arguments type, if it takes any.
    args: Option<(usize, Type)>,
    /// Whether it returns a `Result`.
    fallible: bool,
    /// The output schema's type, if it has one.
    output: Option<Type>,
    span: Span,
}

fn expand(block: &mut ItemImpl) -> syn::Result<Tokens> {
    if block.trait_.is_some() {
        return Err(syn::Error::new(block.span(), "#[plugin] goes on an inherent `impl Type { ... }` block"));
    }
    let mut tools = Vec::new();
    for item in &mut block.items {
        let ImplItem::Fn(function) = item else { continue };
        let Some(at) = function.attrs.iter().position(|a| a.path().is_ident("tool")) else { continue };
        let attr = function.attrs.remove(at);
        tools.push(tool_fn(&attr, function)?);
    }
    if tools.is_empty() {
        return Err(syn::Error::new(block.span(), "a plugin needs at least one `#[tool]` function"));
    }
    for (i, tool) in tools.iter().enumerate() {
        if tools[..i].iter().any(|t| t.name == tool.name) {
            return Err(syn::Error::new(tool.span, format!("two tools are named `{}`", tool.name)));
        }
    }
    let ty = &block.self_ty;
    let specs = tools.iter().map(spec);
    let arms = tools.iter().map(arm);
    let names = tools.iter().map(|t| &t.name);
    Ok(quote! {
        #block

        #[automatically_derived]
        impl ::engram_plugin_sdk::Plugin for #ty {
            fn tools() -> ::std::vec::Vec<::engram_plugin_sdk::Tool> {
                ::std::vec![#(#specs),*]
            }

            fn has_tool(name: &str) -> bool {
                matches!(name, #(#names)|*)
            }

            fn call(
                context: &::engram_plugin_sdk::Context,
                tool: &str,
                args: ::engram_plugin_sdk::Value,
            ) -> ::std::result::Result<::engram_plugin_sdk::Value, ::engram_plugin_sdk::Error> {
                let _ = (&context, &args);
                match tool {
                    #(#arms)*
                    other => ::std::result::Result::Err(::engram_plugin_sdk::Error::invalid(
                        ::std::format!("no tool `{other}`"),
                    )),
                }
            }
        }

        ::engram_plugin_sdk::export_plugin!(#ty);
    })
}

fn tool_fn(attr: &Attribute, function: &syn::ImplItemFn) -> syn::Result<ToolFn> {
    let sig = &function.sig;
    let mut tool = ToolFn {
        ident: sig.ident.clone(),
        name: sig.ident.to_string(),
        title: None,
        description: description(&function.attrs),
        hints: Vec::new(),
        context: None,
        args: None,
        fallible: false,
        output: None,
        span: sig.ident.span(),
    };
    if matches!(attr.meta, syn::Meta::List(_)) {
        attr.parse_nested_meta(|meta| {
            let key = meta.path.get_ident().map(ToString::to_string).unwrap_or_default();
            match key.as_str() {
                "name" => tool.name = meta.value()?.parse::<LitStr>()?.value(),
                "title" => tool.title = Some(meta.value()?.parse::<LitStr>()?.value()),
                "read_only" | "destructive" | "idempotent" | "open_world" => {
                    tool.hints.push(syn::Ident::new(&key, meta.path.span()));
                }
                _ => {
                    return Err(meta.error(
                        "expected `name = \"...\"`, `title = \"...\"`, `read_only`, `destructive`, `idempotent` \
                         or `open_world`",
                    ));
                }
            }
            Ok(())
        })?;
    }
    if tool.description.is_empty() {
        return Err(syn::Error::new(tool.span, "a tool needs a doc comment: it is the description the model reads"));
    }
    for (index, input) in sig.inputs.iter().enumerate() {
        let FnArg::Typed(typed) = input else {
            return Err(syn::Error::new(input.span(), "a tool is an associated function: it takes no `self`"));
        };
        if matches!(*typed.ty, Type::Reference(_)) {
            if tool.context.replace(index).is_some() {
                return Err(syn::Error::new(typed.span(), "a tool takes at most one `&Context`"));
            }
        } else if tool.args.replace((index, (*typed.ty).clone())).is_some() {
            return Err(syn::Error::new(
                typed.span(),
                "a tool takes its arguments as one type (a struct deriving Deserialize and JsonSchema)",
            ));
        }
    }
    let output = match &sig.output {
        ReturnType::Default => return Err(syn::Error::new(sig.span(), "a tool returns a value (or a Result)")),
        ReturnType::Type(_, ty) => (**ty).clone(),
    };
    let output = match ok_type(&output) {
        Some(ok) => {
            tool.fallible = true;
            ok
        }
        None => output,
    };
    let is_value = matches!(&output, Type::Path(p) if p.path.segments.last().is_some_and(|s| s.ident == "Value"));
    tool.output = (!is_value).then_some(output);
    Ok(tool)
}

/// `T` of `Result<T, E>` (by the last path segment's name).
fn ok_type(ty: &Type) -> Option<Type> {
    let Type::Path(path) = ty else { return None };
    let last = path.path.segments.last()?;
    if last.ident != "Result" {
        return None;
    }
    let syn::PathArguments::AngleBracketed(args) = &last.arguments else { return None };
    args.args.iter().find_map(|arg| match arg {
        syn::GenericArgument::Type(ty) => Some(ty.clone()),
        _ => None,
    })
}

/// The doc comment as text: lines of a paragraph joined by spaces,
/// paragraphs by a blank line.
fn description(attrs: &[Attribute]) -> String {
    let mut lines = Vec::new();
    for attr in attrs.iter().filter(|a| a.path().is_ident("doc")) {
        if let syn::Meta::NameValue(nv) = &attr.meta
            && let syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(text), .. }) = &nv.value
        {
            lines.extend(text.value().lines().map(|l| l.trim().to_owned()));
        }
    }
    let mut out = String::new();
    for line in lines {
        if line.is_empty() {
            if !out.is_empty() && !out.ends_with("\n\n") {
                out.push_str("\n\n");
            }
        } else {
            if !out.is_empty() && !out.ends_with('\n') {
                out.push(' ');
            }
            out.push_str(&line);
        }
    }
    out.trim_end().to_owned()
}

fn spec(tool: &ToolFn) -> Tokens {
    let (name, description) = (&tool.name, &tool.description);
    let input = match &tool.args {
        Some((_, ty)) => quote_spanned!(ty.span()=> ::engram_plugin_sdk::__schema_for::<#ty>()),
        None => quote!(::engram_plugin_sdk::json!({"type": "object", "properties": {}, "additionalProperties": false})),
    };
    let output =
        tool.output.as_ref().map(|ty| quote_spanned!(ty.span()=> .output(::engram_plugin_sdk::__schema_for::<#ty>())));
    let title = tool.title.as_ref().map(|t| quote!(.title(#t)));
    let hints = &tool.hints;
    quote! {
        ::engram_plugin_sdk::Tool::new(#name, #description).input(#input) #output #title #(.#hints())*
    }
}

fn arm(tool: &ToolFn) -> Tokens {
    let (name, ident) = (&tool.name, &tool.ident);
    let arity = usize::from(tool.context.is_some()) + usize::from(tool.args.is_some());
    let mut params: Vec<Tokens> = vec![Tokens::new(); arity];
    if let Some(at) = tool.context {
        params[at] = quote!(context);
    }
    let mut parse = Tokens::new();
    if let Some((at, ty)) = &tool.args {
        params[*at] = quote!(arguments);
        parse = quote!(let arguments: #ty = ::engram_plugin_sdk::__parse_args(args)?;);
    }
    let question = tool.fallible.then(|| quote!(?));
    quote! {
        #name => {
            #parse
            let output = Self::#ident(#(#params),*) #question;
            ::engram_plugin_sdk::__to_output(&output)
        }
    }
}
