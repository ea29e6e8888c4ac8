//! SQL as the architecture test reads it: a string normalised to lower-case tokens (quoted text and comments set
//! apart), the tables each statement reads and writes, and the tables the migrations create with their partitions.

use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    /// A bare or double-quoted name, lower-cased; `{name}` placeholders of `format!` stay glued to it.
    Word(String),
    /// A single-quoted literal's text.
    Quoted(String),
    Punct(char),
}

/// Splits SQL into tokens: case folded, whitespace and line breaks gone, `--` and `/* */` comments dropped.
pub fn tokens(sql: &str) -> Vec<Token> {
    let chars: Vec<char> = sql.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '-' && chars.get(i + 1) == Some(&'-') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && chars.get(i + 1) == Some(&'*') {
            i += 2;
            while i < chars.len() && !(chars[i] == '*' && chars.get(i + 1) == Some(&'/')) {
                i += 1;
            }
            i += 2;
        } else if c == '\'' || c == '"' {
            let (text, next) = quoted(&chars, i);
            out.push(if c == '"' { Token::Word(text.to_lowercase()) } else { Token::Quoted(text) });
            i = next;
        } else if c.is_alphanumeric() || c == '_' || c == '{' || c == '$' {
            let start = i;
            let mut depth = 0;
            while i < chars.len() && (chars[i].is_alphanumeric() || "_{}$".contains(chars[i]) || depth > 0) {
                depth += i32::from(chars[i] == '{') - i32::from(chars[i] == '}');
                i += 1;
            }
            out.push(Token::Word(chars[start..i].iter().collect::<String>().to_lowercase()));
        } else {
            out.push(Token::Punct(c));
            i += 1;
        }
    }
    out
}

/// The text of the quoted token starting at `start` (a doubled quote is one quote) and where it ends.
fn quoted(chars: &[char], start: usize) -> (String, usize) {
    let quote = chars[start];
    let mut text = String::new();
    let mut i = start + 1;
    while i < chars.len() {
        if chars[i] == quote {
            if chars.get(i + 1) == Some(&quote) {
                text.push(quote);
                i += 2;
                continue;
            }
            return (text, i + 1);
        }
        text.push(chars[i]);
        i += 1;
    }
    (text, i)
}

/// Whether tokens start like a statement (and not like prose: "update failed").
fn is_sql_start(tokens: &[Token]) -> bool {
    let words: Vec<&str> = tokens
        .iter()
        .filter(|t| !matches!(t, Token::Punct('(')))
        .take(2)
        .map(|t| match t {
            Token::Word(w) => w.as_str(),
            _ => "",
        })
        .collect();
    match words.as_slice() {
        ["select", ..] | ["lock", "table"] | ["with", "recursive"] => true,
        // `WITH name AS (`: prose starting with "with" has no `AS (`.
        ["with", _] => tokens.windows(2).any(|w| w[0] == Token::Word("as".into()) && w[1] == Token::Punct('(')),
        ["insert", "into"] | ["delete", "from"] => true,
        ["update", _] => tokens.iter().any(|t| *t == Token::Word("set".into())),
        ["truncate", _] => true,
        ["drop" | "alter" | "create", next] => {
            ["table", "index", "database", "unique", "function", "or"].contains(next)
        }
        _ => false,
    }
}

/// Whether a string is SQL: it starts like a statement, or it writes a table anywhere in it (a fragment).
pub fn is_sql(text: &str) -> bool {
    let tokens = tokens(text);
    is_sql_start(&tokens) || references(&tokens).iter().any(|r| r.write)
}

/// A table (or CTE, function, placeholder) named where a statement reads or writes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub name: String,
    pub write: bool,
}

fn word(tokens: &[Token], at: usize) -> Option<&str> {
    match tokens.get(at) {
        Some(Token::Word(w)) => Some(w),
        _ => None,
    }
}

/// Skips optional words (`if exists`, `only`, `table`) at `at`.
fn skip(tokens: &[Token], mut at: usize, optional: &[&str]) -> usize {
    while word(tokens, at).is_some_and(|w| optional.contains(&w)) {
        at += 1;
    }
    at
}

/// The name at `at` when it names a relation (not a subquery, not a function call; after `INSERT INTO` and
/// `COPY` a parenthesis is the column list); a schema-qualified name as `schema.name`.
fn relation(tokens: &[Token], at: usize, columns_follow: bool) -> Option<String> {
    let name = word(tokens, at)?;
    match tokens.get(at + 1) {
        Some(Token::Punct('(')) if !columns_follow => None,
        Some(Token::Punct('.')) => word(tokens, at + 2).map(|table| format!("{name}.{table}")),
        _ => Some(name.to_owned()),
    }
}

// Long because it is one table of SQL's grammar for naming relations, keyword by keyword.
/// The relations a statement names, with whether it writes them. CTE names are left out.
pub fn references(tokens: &[Token]) -> Vec<Reference> {
    let mut found = Vec::new();
    let mut ctes = BTreeSet::new();
    for i in 0..tokens.len() {
        let Some(w) = word(tokens, i) else { continue };
        let prev = if i > 0 { word(tokens, i - 1) } else { None };
        let (at, write) = match w {
            "into" if prev == Some("insert") => (skip(tokens, i + 1, &[]), true),
            "update" if !matches!(prev, Some("for" | "do" | "key")) => (skip(tokens, i + 1, &["only"]), true),
            "from" if prev == Some("delete") => (skip(tokens, i + 1, &["only"]), true),
            "truncate" => (skip(tokens, i + 1, &["table", "only"]), true),
            "drop" if word(tokens, i + 1) == Some("table") => (skip(tokens, i + 2, &["if", "exists"]), true),
            "alter" if word(tokens, i + 1) == Some("table") => (skip(tokens, i + 2, &["if", "exists", "only"]), true),
            "copy"
                if matches!(word(tokens, i + 2), Some("from" | "to"))
                    || tokens.get(i + 2) == Some(&Token::Punct('(')) =>
            {
                (i + 1, true)
            }
            "of" if prev == Some("partition") => (i + 1, true),
            "table" if prev == Some("lock") => (skip(tokens, i + 1, &["only"]), false),
            "from" | "join" => {
                // `IS DISTINCT FROM x` compares; `extract(epoch FROM x)` and the like take a value.
                let in_call = i >= 2 && tokens[i - 2] == Token::Punct('(');
                if prev == Some("distinct") || in_call {
                    continue;
                }
                (skip(tokens, i + 1, &["only", "lateral"]), false)
            }
            "using" if found.last().is_some_and(|r: &Reference| r.write) => (i + 1, false),
            "as" => {
                if let Some(name) = cte_name(tokens, i) {
                    ctes.insert(name);
                }
                continue;
            }
            _ => continue,
        };
        let columns_follow = matches!(w, "into" | "copy");
        if let Some(name) = relation(tokens, at, columns_follow) {
            found.push(Reference { name, write });
        }
    }
    found.retain(|r| !ctes.contains(&r.name));
    found
}

/// The names the common table expressions of a statement (or of a fragment of one) bind.
pub fn ctes(tokens: &[Token]) -> BTreeSet<String> {
    (0..tokens.len()).filter(|&i| word(tokens, i) == Some("as")).filter_map(|i| cte_name(tokens, i)).collect()
}

/// The name a common table expression binds when `as` at `at` starts one: `name AS (`, `name(cols) AS (`,
/// `name AS [NOT] MATERIALIZED (`, after `WITH`, `RECURSIVE` or a comma.
fn cte_name(tokens: &[Token], at: usize) -> Option<String> {
    let body = skip(tokens, at + 1, &["not", "materialized"]);
    if tokens.get(body) != Some(&Token::Punct('(')) || at == 0 {
        return None;
    }
    let mut name_at = at - 1;
    if tokens[name_at] == Token::Punct(')') {
        let mut depth = 0;
        loop {
            depth += i32::from(tokens[name_at] == Token::Punct(')')) - i32::from(tokens[name_at] == Token::Punct('('));
            if depth == 0 {
                break;
            }
            name_at = name_at.checked_sub(1)?;
        }
        name_at = name_at.checked_sub(1)?;
    }
    let name = word(tokens, name_at)?;
    let before = name_at.checked_sub(1).map(|b| &tokens[b]);
    let opens = matches!(before, Some(Token::Punct(',')))
        || matches!(before, Some(Token::Word(w)) if w == "with" || w == "recursive");
    opens.then(|| name.to_owned())
}

/// What a view maps to in the catalog: it is read, never written, and has no owner.
pub const VIEW: &str = "<view>";

/// The tables the migrations create, each mapped to its root table (a partition to the table it is part of, a
/// table to itself, a view to [`VIEW`]).
pub fn catalog(migrations: &[String]) -> BTreeMap<String, String> {
    let mut parent: BTreeMap<String, String> = BTreeMap::new();
    for text in migrations {
        for statement in tokens(text).split(|t| *t == Token::Punct(';')) {
            let words: Vec<&str> =
                statement.iter().filter_map(|t| if let Token::Word(w) = t { Some(w.as_str()) } else { None }).collect();
            let find = |a: &str, b: &str| words.windows(2).position(|p| p == [a, b]);
            if let Some(at) = find("create", "view").or_else(|| find("replace", "view"))
                && let Some(name) = words.get(at + 2)
            {
                parent.insert((*name).to_owned(), VIEW.to_owned());
            }
            if let Some(at) = find("create", "table") {
                let rest = &words[at + 2..];
                let rest = if rest.starts_with(&["if", "not", "exists"]) { &rest[3..] } else { rest };
                let Some(name) = rest.first().filter(|n| !n.starts_with('%')) else { continue };
                let of = find("partition", "of").and_then(|p| words.get(p + 2)).map(|p| (*p).to_owned());
                parent.insert((*name).to_owned(), of.unwrap_or_else(|| (*name).to_owned()));
            }
            if let (Some(at), Some(attach)) = (find("alter", "table"), find("attach", "partition")) {
                let table = words[at + 2..].iter().find(|w| !["if", "exists", "only"].contains(w));
                if let (Some(table), Some(part)) = (table, words.get(attach + 2)) {
                    parent.insert((*part).to_owned(), (*table).to_owned());
                }
            }
        }
    }
    // Follow each chain of partitions to its root.
    let roots: BTreeMap<String, String> = parent
        .keys()
        .map(|name| {
            let mut at = name.clone();
            while let Some(up) = parent.get(&at).filter(|up| **up != at) {
                at = up.clone();
            }
            (name.clone(), at)
        })
        .collect();
    roots
}
