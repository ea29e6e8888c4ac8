//! Indents compact JSON without parsing it into a map: keys stay in the order they were sent (a parsed
//! `serde_json::Value` would sort them), and every byte of every string stays as it was.

/// Indentation stops growing past this depth: each line's indent costs bytes, and a payload nested 125 deep would
/// otherwise render many times its size.
const MAX_INDENT_DEPTH: usize = 16;
/// The most a page shows of one payload; the rest is cut with a line that says so.
pub const MAX_OUTPUT: usize = 512 * 1024;

/// `compact` re-indented by two spaces (at most [`MAX_INDENT_DEPTH`] levels), cut at [`MAX_OUTPUT`] bytes with a
/// line saying how much was left out. Input that is not compact JSON comes out reindented all the same: this
/// only inserts whitespace outside strings.
pub fn indent(compact: &str) -> String {
    let mut out = String::with_capacity((compact.len() * 2).min(MAX_OUTPUT + 128));
    let mut depth = 0usize;
    let (mut in_string, mut escaped) = (false, false);
    let mut chars = compact.chars().peekable();
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        out.push_str(&"  ".repeat(depth.min(MAX_INDENT_DEPTH)));
    };
    let mut read = 0;
    while let Some(c) = chars.next() {
        read += c.len_utf8();
        if out.len() >= MAX_OUTPUT {
            let left = compact.len().saturating_sub(read - c.len_utf8());
            out.push_str(&format!("\n… cut here: {left} more bytes of the payload are not shown"));
            break;
        }
        if in_string {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                out.push(c);
                // An empty object or array stays on one line.
                if matches!(chars.peek(), Some('}' | ']')) {
                    out.push(chars.next().unwrap_or(c));
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c if c.is_whitespace() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::indent;

    #[test]
    fn keeps_key_order_and_strings() {
        let compact = r#"{"z":1,"a":{"s":"x,{\"y\":[1]}","e":[],"o":{}},"l":[1,2]}"#;
        let pretty = indent(compact);
        assert_eq!(
            pretty,
            "{\n  \"z\": 1,\n  \"a\": {\n    \"s\": \"x,{\\\"y\\\":[1]}\",\n    \"e\": [],\n    \"o\": {}\n  },\n  \"l\": [\n    1,\n    2\n  ]\n}"
        );
        let reparsed: serde_json::Value = serde_json::from_str(&pretty).expect("still JSON");
        assert_eq!(reparsed, serde_json::from_str::<serde_json::Value>(compact).expect("JSON"));
    }

    #[test]
    fn a_deeply_nested_payload_renders_within_a_bound() {
        // 256 KiB nested 125 deep, with many small values at the bottom: ~35 MB when every line was indented.
        let mut compact = "{\"a\":".repeat(125);
        compact.push('[');
        while compact.len() < 256 * 1024 {
            compact.push_str("1,");
        }
        compact.push('1');
        compact.push(']');
        compact.push_str(&"}".repeat(125));
        let pretty = indent(&compact);
        assert!(pretty.len() <= super::MAX_OUTPUT + 128, "{} bytes", pretty.len());
        assert!(pretty.ends_with("more bytes of the payload are not shown"), "the cut says so");
        // A small deep payload is whole, still JSON, indented no deeper than the cap.
        let small = format!("{}1{}", "[".repeat(40), "]".repeat(40));
        let pretty = indent(&small);
        let reparsed: serde_json::Value = serde_json::from_str(&pretty).expect("still JSON");
        assert_eq!(reparsed, serde_json::from_str::<serde_json::Value>(&small).expect("JSON"));
        assert!(pretty.lines().all(|l| l.len() <= 2 * super::MAX_INDENT_DEPTH + 1), "indent capped");
    }
}
