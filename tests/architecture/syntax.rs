//! The code as a syntax tree (`syn`): every function with its visibility and length, every string that is SQL
//! (string literals, `concat!` joined, `format!` templates with their placeholders), and every path it names.

use std::collections::BTreeMap;

use proc_macro2::{TokenStream, TokenTree};
use syn::visit::{self, Visit};

/// The marker a function longer than the limit needs right above it, followed by its reason.
pub const LONG_MARKER: &str = "// Long because";

#[derive(Debug)]
pub struct Function {
    pub at: String,
    pub name: String,
    pub visibility: &'static str,
    pub lines: usize,
    /// The words after [`LONG_MARKER`] in the comment above the function, if there is one.
    pub reason: Option<String>,
}

#[derive(Debug)]
pub struct SqlText {
    pub at: String,
    pub text: String,
    /// Local names bound to a partition by `let name = ….table("parent")`, for `format!("DROP TABLE {name}")`.
    pub partitions: BTreeMap<String, String>,
    /// The `macro_rules!` whose body holds this SQL: a fragment other statements embed as `{name}`.
    pub fragment: Option<String>,
}

#[derive(Debug, Default)]
pub struct Parsed {
    pub functions: Vec<Function>,
    pub sql: Vec<SqlText>,
    /// Every path and `use` path the code names, as `a::b::C`, with where.
    pub paths: Vec<(String, String)>,
    /// Every method called, after its receiver's last name (`state.pool.begin()` is `pool.begin`), with where.
    pub methods: Vec<(String, String)>,
}

/// Parses one file; panics with the file's name when it is not Rust.
pub fn parse(file: &str, text: &str) -> Parsed {
    let syntax = syn::parse_file(text).unwrap_or_else(|e| panic!("{file} does not parse: {e}"));
    let mut visitor =
        Visitor { file, lines: text.lines().collect(), parsed: Parsed::default(), scopes: vec![], fragment: None };
    visitor.visit_file(&syntax);
    visitor.parsed
}

struct Visitor<'a> {
    file: &'a str,
    lines: Vec<&'a str>,
    parsed: Parsed,
    /// One map of partition-bound locals per function being visited.
    scopes: Vec<BTreeMap<String, String>>,
    /// The `macro_rules!` being visited, if any.
    fragment: Option<String>,
}

impl Visitor<'_> {
    fn at(&self, line: usize) -> String {
        format!("{}:{line}", self.file)
    }

    fn function(&mut self, attrs: &[syn::Attribute], vis: &'static str, sig: &syn::Signature, block: &syn::Block) {
        let start = sig.fn_token.span.start().line;
        let end = block.brace_token.span.close().start().line;
        let first = attrs.iter().map(|a| a.pound_token.span.start().line).chain([start]).min().unwrap_or(start);
        self.parsed.functions.push(Function {
            at: self.at(start),
            name: sig.ident.to_string(),
            visibility: vis,
            lines: end + 1 - start,
            reason: self.reason_above(first, start),
        });
    }

    /// The reason in a `// Long because …` comment among the attributes and doc comments from line `first` to
    /// the signature at `start`, or among the plain comments right above them.
    fn reason_above(&self, first: usize, start: usize) -> Option<String> {
        let marked =
            |line: usize| self.lines[line - 1].trim_start().strip_prefix(LONG_MARKER).map(|r| r.trim().to_owned());
        if let Some(reason) = (first..start).find_map(marked) {
            return Some(reason);
        }
        let mut line = first.checked_sub(1)?;
        while line > 0 {
            if let Some(reason) = marked(line) {
                return Some(reason);
            }
            if !self.lines[line - 1].trim_start().starts_with("//") {
                return None;
            }
            line -= 1;
        }
        None
    }

    fn sql(&mut self, line: usize, text: String) {
        if crate::sql::is_sql(&text) {
            let partitions = self.scopes.iter().flatten().map(|(k, v)| (k.clone(), v.clone())).collect();
            self.parsed.sql.push(SqlText { at: self.at(line), text, partitions, fragment: self.fragment.clone() });
        }
    }

    /// The strings in a macro's tokens: a `concat!` joined into one (other macros inside it stand for a
    /// placeholder), every other literal on its own.
    fn macro_tokens(&mut self, tokens: TokenStream, joined: Option<&mut (usize, String)>) {
        let mut joined = joined;
        let mut iter = tokens.into_iter().peekable();
        // The `a::b::` before a name, so a macro called inside a macro (`courier_store::insert_events!()` in a
        // `concat!`) is a path the code names, like any other.
        let mut prefix = String::new();
        while let Some(tree) = iter.next() {
            let at_path =
                matches!(&tree, TokenTree::Ident(_)) || matches!(&tree, TokenTree::Punct(p) if p.as_char() == ':');
            if !at_path {
                prefix.clear();
            }
            match tree {
                TokenTree::Literal(literal) => {
                    let Ok(syn::Lit::Str(s)) = syn::parse_str::<syn::Lit>(&literal.to_string()) else { continue };
                    match joined.as_deref_mut() {
                        Some((_, text)) => text.push_str(&s.value()),
                        None => self.sql(literal.span().start().line, s.value()),
                    }
                }
                TokenTree::Ident(ident) if matches!(iter.peek(), Some(TokenTree::Punct(p)) if p.as_char() == '!') => {
                    iter.next();
                    let line = ident.span().start().line;
                    self.parsed.paths.push((self.at(line), format!("{prefix}{ident}")));
                    prefix.clear();
                    let Some(TokenTree::Group(group)) = iter.next() else { continue };
                    if ident == "concat" && joined.is_none() {
                        let mut inner = (ident.span().start().line, String::new());
                        self.macro_tokens(group.stream(), Some(&mut inner));
                        self.sql(inner.0, inner.1);
                    } else if let Some((_, text)) = joined.as_deref_mut() {
                        text.push_str(&format!("{{{ident}}}"));
                    } else {
                        self.macro_tokens(group.stream(), None);
                    }
                }
                TokenTree::Group(group) => {
                    self.macro_tokens(group.stream(), joined.as_deref_mut());
                }
                TokenTree::Ident(ident) => prefix.push_str(&ident.to_string()),
                TokenTree::Punct(p) if p.as_char() == ':' => prefix.push(':'),
                _ => {}
            }
        }
    }
}

fn visibility(vis: &syn::Visibility) -> &'static str {
    match vis {
        syn::Visibility::Public(_) => "pub",
        syn::Visibility::Restricted(r) if r.path.is_ident("crate") => "pub(crate)",
        syn::Visibility::Restricted(r) if r.path.is_ident("super") => "pub(super)",
        syn::Visibility::Restricted(_) => "pub(in …)",
        syn::Visibility::Inherited => "private",
    }
}

/// `a::b::C` for a path.
fn path_text(path: &syn::Path) -> String {
    path.segments.iter().map(|s| s.ident.to_string()).collect::<Vec<_>>().join("::")
}

impl<'ast> Visit<'ast> for Visitor<'_> {
    fn visit_attribute(&mut self, _: &'ast syn::Attribute) {
        // Doc comments and attributes hold prose and routes, not code.
    }

    fn visit_item_fn(&mut self, item: &'ast syn::ItemFn) {
        self.function(&item.attrs, visibility(&item.vis), &item.sig, &item.block);
        self.scopes.push(BTreeMap::new());
        visit::visit_item_fn(self, item);
        self.scopes.pop();
    }

    fn visit_impl_item_fn(&mut self, item: &'ast syn::ImplItemFn) {
        self.function(&item.attrs, visibility(&item.vis), &item.sig, &item.block);
        self.scopes.push(BTreeMap::new());
        visit::visit_impl_item_fn(self, item);
        self.scopes.pop();
    }

    fn visit_trait_item_fn(&mut self, item: &'ast syn::TraitItemFn) {
        if let Some(block) = &item.default {
            self.function(&item.attrs, "trait", &item.sig, block);
        }
        visit::visit_trait_item_fn(self, item);
    }

    fn visit_local(&mut self, local: &'ast syn::Local) {
        if let (syn::Pat::Ident(name), Some(init)) = (&local.pat, &local.init)
            && let syn::Expr::MethodCall(call) = &*init.expr
            && call.method == "table"
            && let Some(syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(parent), .. })) = call.args.first()
            && let Some(scope) = self.scopes.last_mut()
        {
            scope.insert(name.ident.to_string(), parent.value());
        }
        visit::visit_local(self, local);
    }

    fn visit_lit_str(&mut self, lit: &'ast syn::LitStr) {
        self.sql(lit.span().start().line, lit.value());
    }

    fn visit_item_macro(&mut self, item: &'ast syn::ItemMacro) {
        self.fragment = item.ident.as_ref().map(ToString::to_string);
        visit::visit_item_macro(self, item);
        self.fragment = None;
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        let line = mac.path.segments.first().map_or(0, |s| s.ident.span().start().line);
        self.parsed.paths.push((self.at(line), path_text(&mac.path)));
        if mac.path.is_ident("concat") {
            let mut joined = (line, String::new());
            self.macro_tokens(mac.tokens.clone(), Some(&mut joined));
            self.sql(joined.0, joined.1);
        } else {
            self.macro_tokens(mac.tokens.clone(), None);
        }
    }

    fn visit_expr_method_call(&mut self, call: &'ast syn::ExprMethodCall) {
        // The receiver's last name, so `state.pool.begin()` reads `pool.begin`.
        let receiver = match &*call.receiver {
            syn::Expr::Field(field) => match &field.member {
                syn::Member::Named(name) => name.to_string(),
                syn::Member::Unnamed(_) => String::new(),
            },
            syn::Expr::Path(path) => path.path.segments.last().map(|s| s.ident.to_string()).unwrap_or_default(),
            _ => String::new(),
        };
        let method = format!("{receiver}.{}", call.method);
        self.parsed.methods.push((self.at(call.method.span().start().line), method));
        visit::visit_expr_method_call(self, call);
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let line = path.segments.first().map_or(0, |s| s.ident.span().start().line);
        self.parsed.paths.push((self.at(line), path_text(path)));
        visit::visit_path(self, path);
    }

    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        fn walk(tree: &syn::UseTree, prefix: &str, out: &mut Vec<String>) {
            let join = |name: &str| if prefix.is_empty() { name.to_owned() } else { format!("{prefix}::{name}") };
            match tree {
                syn::UseTree::Path(p) => walk(&p.tree, &join(&p.ident.to_string()), out),
                syn::UseTree::Name(n) => out.push(join(&n.ident.to_string())),
                syn::UseTree::Rename(r) => out.push(join(&r.ident.to_string())),
                syn::UseTree::Glob(_) => out.push(join("*")),
                syn::UseTree::Group(g) => g.items.iter().for_each(|t| walk(t, prefix, out)),
            }
        }
        let mut names = Vec::new();
        walk(&item.tree, "", &mut names);
        let at = self.at(item.use_token.span.start().line);
        self.parsed.paths.extend(names.into_iter().map(|n| (at.clone(), n)));
    }
}
