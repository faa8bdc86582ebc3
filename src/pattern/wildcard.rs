//! The `wildcard` operator: `*` matches any run of characters (including none).
//!
//! Escapes follow EventBridge: `\*` is a literal asterisk, `\\` a literal backslash; any
//! other backslash escape, a trailing lone backslash, and two consecutive unescaped `*`
//! are rejected when the pattern is parsed.

/// A compiled wildcard expression: literal segments separated by `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Wildcard {
    /// Literal text between the stars, unescaped. There is always one more segment than
    /// there are stars (segments may be empty at the ends).
    segments: Vec<String>,
}

impl Wildcard {
    /// Compile a wildcard expression, or say what is wrong with it.
    pub(crate) fn compile(expr: &str) -> Result<Wildcard, String> {
        let mut segments = vec![String::new()];
        let mut chars = expr.chars().peekable();
        let mut last_was_star = false;
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    match chars.next() {
                        Some(e @ ('*' | '\\')) => push_char(&mut segments, e),
                        Some(other) => {
                            return Err(format!(
                                "wildcard `{expr}`: `\\{other}` is not a valid escape (only `\\*` and `\\\\` are)"
                            ));
                        }
                        None => {
                            return Err(format!("wildcard `{expr}` ends with a lone backslash"));
                        }
                    }
                    last_was_star = false;
                }
                '*' => {
                    if last_was_star {
                        return Err(format!(
                            "wildcard `{expr}` has consecutive `*` characters, which are not allowed"
                        ));
                    }
                    segments.push(String::new());
                    last_was_star = true;
                }
                other => {
                    push_char(&mut segments, other);
                    last_was_star = false;
                }
            }
        }
        Ok(Wildcard { segments })
    }

    /// Whether `s` matches the whole expression. Allocation-free; greedy leftmost matching of
    /// the middle segments is correct for `*`-only globs.
    pub(crate) fn matches(&self, s: &str) -> bool {
        let (first, rest) = match self.segments.split_first() {
            Some(parts) => parts,
            None => return s.is_empty(),
        };
        let Some((last, middle)) = rest.split_last() else {
            // No star at all: an exact comparison.
            return s == first;
        };
        let Some(mut remaining) = s.strip_prefix(first.as_str()) else {
            return false;
        };
        for segment in middle {
            match remaining.find(segment.as_str()) {
                Some(at) => remaining = &remaining[at + segment.len()..],
                None => return false,
            }
        }
        remaining.ends_with(last.as_str())
    }
}

fn push_char(segments: &mut [String], c: char) {
    if let Some(current) = segments.last_mut() {
        current.push(c);
    }
}

#[cfg(test)]
mod tests {
    use super::Wildcard;

    fn m(expr: &str, s: &str) -> bool {
        Wildcard::compile(expr).expect("valid wildcard").matches(s)
    }

    #[test]
    fn star_matches_any_run_including_empty() {
        assert!(m("*", ""));
        assert!(m("*", "anything"));
        assert!(m("Simple*Service", "SimpleService"));
        assert!(m("Simple*Service", "Simple Queue Service"));
        assert!(!m("Simple*Service", "Simple Queue Services"));
        assert!(m("*.png", "dir/file.png"));
        assert!(!m("*.png", "dir/file.png.txt"));
        assert!(m("dir/*/file*", "dir/a/b/file.txt"));
        assert!(m("a*b*c", "abc"));
        assert!(m("a*b*c", "aXbYbZc"));
        assert!(!m("a*b*c", "acb"));
    }

    #[test]
    fn no_star_is_exact() {
        assert!(m("abc", "abc"));
        assert!(!m("abc", "abcd"));
        assert!(m("", ""));
        assert!(!m("", "a"));
    }

    #[test]
    fn overlapping_prefix_and_suffix_do_not_share_characters() {
        // "ab*ba" must not match "aba": the prefix and suffix would overlap.
        assert!(!m("ab*ba", "aba"));
        assert!(m("ab*ba", "abba"));
    }

    #[test]
    fn escapes() {
        assert!(m(r"a\*b", "a*b"));
        assert!(!m(r"a\*b", "aXb"));
        assert!(m(r"a\\*", r"a\anything"));
        assert!(m(r"\**", "*tail"));
    }

    #[test]
    fn invalid_expressions_are_rejected() {
        assert!(Wildcard::compile("a**b").is_err());
        assert!(Wildcard::compile(r"a\b").is_err());
        assert!(Wildcard::compile(r"ab\").is_err());
        // An escaped star followed by a real star is not "consecutive".
        assert!(Wildcard::compile(r"a\**").is_ok());
    }
}
