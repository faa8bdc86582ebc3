//! EventBridge event patterns: parsing, validation and matching.
//!
//! The local bus applies the same patterns that `setup` installs on AWS, so this module
//! follows EventBridge's documented semantics (those of AWS's Event Ruler):
//!
//! - a pattern is a JSON object whose leaves are non-empty arrays of match values; all
//!   fields must match (AND), any value in a leaf array may match (OR);
//! - exact strings, numbers (numeric equality: `300` matches `3.0e2`), booleans and `null`;
//!   a string never matches a number and `""` never matches `null`;
//! - operators `prefix`, `suffix` (each also as `{"equals-ignore-case": ..}`), `wildcard`,
//!   `equals-ignore-case`, `anything-but` (a string, a number, a list of only strings or only
//!   numbers, or `{"prefix"|"suffix"|"equals-ignore-case"|"wildcard": ..}`), `numeric`
//!   (`["=", x]`, `[">"|">=", a]`, `["<"|"<=", b]`, `[">"|">=", a, "<"|"<=", b]` with
//!   `a < b`) and `exists`;
//! - `$or` (an array of at least two objects) at any object level;
//! - an array in the event matches if any of its elements matches; where a pattern object
//!   meets an array of objects, all its fields must match within one element (Event
//!   Ruler's "array consistency");
//! - `exists` looks only at leaf values: `{"exists": true}` needs a string, number, boolean
//!   or `null` at that path, `{"exists": false}` matches a missing field and a field whose
//!   value is an object or an empty array;
//! - a missing field matches nothing except `{"exists": false}`; `anything-but` needs a
//!   value to be present.
//!
//! Known differences from EventBridge, all outside what this project's patterns use:
//! `cidr` is rejected as unsupported; numeric operands are not limited to ±5.0e9; and
//! inside an array of objects `{"exists": false}` is judged per element (Event Ruler
//! judges absence over the whole event).
//!
//! Matching walks the pattern over the borrowed event and never allocates.

mod parse;
mod wildcard;

#[cfg(test)]
mod tests;

use serde_json::{Map, Number, Value};

use wildcard::Wildcard;

/// Why a pattern is not a valid EventBridge event pattern. Always permanent: the same
/// pattern fails the same way every time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// The pattern text is not JSON at all.
    #[error("event pattern is not valid JSON: {0}")]
    Json(String),
    /// The JSON is not a valid pattern; `path` names where (e.g. `detail.state[0]`, or
    /// `<root>` for the pattern itself).
    #[error("invalid event pattern at {path}: {problem}")]
    Invalid {
        /// Dotted path to the offending part of the pattern.
        path: String,
        /// What is wrong there.
        problem: String,
    },
}

/// A parsed, validated event pattern, ready to match events.
#[derive(Debug, Clone, PartialEq)]
pub struct EventPattern {
    root: ObjectNode,
}

impl EventPattern {
    /// Parse and validate a pattern given as a JSON value.
    pub fn parse(value: &Value) -> Result<EventPattern, PatternError> {
        parse::parse_root(value).map(|root| EventPattern { root })
    }

    /// Parse and validate a pattern given as JSON text.
    pub fn from_json_str(s: &str) -> Result<EventPattern, PatternError> {
        let value: Value =
            serde_json::from_str(s).map_err(|e| PatternError::Json(e.to_string()))?;
        EventPattern::parse(&value)
    }

    /// Whether the event matches the pattern.
    pub fn matches(&self, event: &Value) -> bool {
        node_matches(&self.root, Some(event))
    }
}

/// One object level of a pattern.
#[derive(Debug, Clone, PartialEq)]
struct ObjectNode {
    /// Named fields; all must match.
    fields: Vec<(String, FieldPattern)>,
    /// `$or` groups at this level; each group needs one matching branch. Branches are
    /// evaluated against the same event object as `fields`.
    any_of: Vec<Vec<ObjectNode>>,
}

/// What a pattern says about one field.
#[derive(Debug, Clone, PartialEq)]
enum FieldPattern {
    /// A nested object pattern.
    Object(ObjectNode),
    /// A leaf: the field matches if any matcher matches.
    Leaf(Vec<Matcher>),
}

/// One element of a leaf array.
#[derive(Debug, Clone, PartialEq)]
enum Matcher {
    String(String),
    Number(Number),
    Bool(bool),
    Null,
    Prefix(String),
    /// Operand kept lower-cased.
    PrefixIgnoreCase(String),
    Suffix(String),
    /// Operand kept lower-cased.
    SuffixIgnoreCase(String),
    /// Operand kept lower-cased.
    EqualsIgnoreCase(String),
    Wildcard(Wildcard),
    Numeric(NumericRange),
    Exists(bool),
    AnythingBut(AnythingBut),
}

/// The forms of `anything-but`.
#[derive(Debug, Clone, PartialEq)]
enum AnythingBut {
    /// Matches any leaf that is not one of these strings (numbers, booleans and null match).
    Strings(Vec<String>),
    /// Matches any number that is not numerically equal to one of these (only numbers).
    Numbers(Vec<Number>),
    /// Matches any leaf that is not a string starting with this.
    Prefix(String),
    /// Matches any leaf that is not a string ending with this.
    Suffix(String),
    /// Matches any leaf that is not a string equal, ignoring case, to one of these
    /// (kept lower-cased).
    IgnoreCase(Vec<String>),
    /// Matches any leaf that is not a string matching one of these wildcards.
    Wildcard(Vec<Wildcard>),
}

/// A `numeric` condition on JSON numbers.
#[derive(Debug, Clone, Copy, PartialEq)]
struct NumericRange {
    /// `(bound, inclusive)`.
    lower: Option<(f64, bool)>,
    /// `(bound, inclusive)`.
    upper: Option<(f64, bool)>,
}

impl NumericRange {
    fn contains(&self, x: f64) -> bool {
        let above = match self.lower {
            Some((b, true)) => x >= b,
            Some((b, false)) => x > b,
            None => true,
        };
        let below = match self.upper {
            Some((b, true)) => x <= b,
            Some((b, false)) => x < b,
            None => true,
        };
        above && below
    }
}

/// Match an object pattern against the event value at its path (`None` when missing).
fn node_matches(node: &ObjectNode, value: Option<&Value>) -> bool {
    match value {
        Some(Value::Object(map)) => fields_match(node, Some(map)),
        Some(Value::Array(items)) => {
            // Array consistency: every field must come from the same element. An array
            // holding no objects has no fields below this path, like a missing value.
            let mut saw_object = false;
            let matched = any_object(items, &mut |map| {
                saw_object = true;
                fields_match(node, Some(map))
            });
            matched || (!saw_object && fields_match(node, None))
        }
        _ => fields_match(node, None),
    }
}

/// Visit the objects in a (possibly nested) array until `f` returns true.
fn any_object(items: &[Value], f: &mut impl FnMut(&Map<String, Value>) -> bool) -> bool {
    items.iter().any(|item| match item {
        Value::Object(map) => f(map),
        Value::Array(inner) => any_object(inner, f),
        _ => false,
    })
}

fn fields_match(node: &ObjectNode, map: Option<&Map<String, Value>>) -> bool {
    node.fields.iter().all(|(key, field)| {
        let child = map.and_then(|m| m.get(key));
        match field {
            FieldPattern::Object(inner) => node_matches(inner, child),
            FieldPattern::Leaf(matchers) => leaf_matches(matchers, child),
        }
    }) && node
        .any_of
        .iter()
        .all(|branches| branches.iter().any(|branch| fields_match(branch, map)))
}

fn leaf_matches(matchers: &[Matcher], value: Option<&Value>) -> bool {
    matchers.iter().any(|matcher| match matcher {
        Matcher::Exists(want) => value.is_some_and(has_leaf) == *want,
        other => value.is_some_and(|v| any_leaf(v, &mut |leaf| other.matches_leaf(leaf))),
    })
}

/// Whether a value is, or (through arrays) contains, a leaf: string, number, bool or null.
fn has_leaf(value: &Value) -> bool {
    any_leaf(value, &mut |_| true)
}

fn any_leaf(value: &Value, f: &mut impl FnMut(&Value) -> bool) -> bool {
    match value {
        Value::Array(items) => items.iter().any(|item| any_leaf(item, f)),
        Value::Object(_) => false,
        leaf => f(leaf),
    }
}

impl Matcher {
    /// Match one leaf value (never an array or object).
    fn matches_leaf(&self, leaf: &Value) -> bool {
        match self {
            Matcher::String(s) => leaf.as_str() == Some(s.as_str()),
            Matcher::Number(n) => matches!(leaf, Value::Number(x) if numbers_equal(n, x)),
            Matcher::Bool(b) => leaf.as_bool() == Some(*b),
            Matcher::Null => leaf.is_null(),
            Matcher::Prefix(p) => leaf.as_str().is_some_and(|s| s.starts_with(p.as_str())),
            Matcher::PrefixIgnoreCase(p) => {
                leaf.as_str().is_some_and(|s| starts_with_ignore_case(s, p))
            }
            Matcher::Suffix(p) => leaf.as_str().is_some_and(|s| s.ends_with(p.as_str())),
            Matcher::SuffixIgnoreCase(p) => {
                leaf.as_str().is_some_and(|s| ends_with_ignore_case(s, p))
            }
            Matcher::EqualsIgnoreCase(p) => leaf.as_str().is_some_and(|s| equals_ignore_case(s, p)),
            Matcher::Wildcard(w) => leaf.as_str().is_some_and(|s| w.matches(s)),
            Matcher::Numeric(range) => leaf.as_f64().is_some_and(|x| range.contains(x)),
            // Handled by `leaf_matches`, which sees the whole field rather than one leaf.
            Matcher::Exists(_) => false,
            Matcher::AnythingBut(but) => but.matches_leaf(leaf),
        }
    }
}

impl AnythingBut {
    fn matches_leaf(&self, leaf: &Value) -> bool {
        // Event Ruler compares anything-but string forms against the raw JSON text of the
        // value, so numbers, booleans and null are "anything but" any string.
        let s = leaf.as_str();
        match self {
            AnythingBut::Strings(values) => s.is_none_or(|s| !values.iter().any(|v| v == s)),
            AnythingBut::Numbers(values) => {
                matches!(leaf, Value::Number(x) if !values.iter().any(|v| numbers_equal(v, x)))
            }
            AnythingBut::Prefix(p) => s.is_none_or(|s| !s.starts_with(p.as_str())),
            AnythingBut::Suffix(p) => s.is_none_or(|s| !s.ends_with(p.as_str())),
            AnythingBut::IgnoreCase(values) => {
                s.is_none_or(|s| !values.iter().any(|v| equals_ignore_case(s, v)))
            }
            AnythingBut::Wildcard(patterns) => {
                s.is_none_or(|s| !patterns.iter().any(|w| w.matches(s)))
            }
        }
    }
}

/// Numeric equality: exact for integers, by value otherwise (`300` == `3.0e2`).
fn numbers_equal(a: &Number, b: &Number) -> bool {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        return x == y;
    }
    if let (Some(x), Some(y)) = (a.as_u64(), b.as_u64()) {
        return x == y;
    }
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

/// `s` equals `lowered` (already lower-case) ignoring case, without allocating.
fn equals_ignore_case(s: &str, lowered: &str) -> bool {
    if s.is_ascii() && lowered.is_ascii() {
        return s.eq_ignore_ascii_case(lowered);
    }
    s.chars().flat_map(char::to_lowercase).eq(lowered.chars())
}

fn starts_with_ignore_case(s: &str, lowered: &str) -> bool {
    let mut haystack = s.chars().flat_map(char::to_lowercase);
    lowered.chars().all(|c| haystack.next() == Some(c))
}

fn ends_with_ignore_case(s: &str, lowered: &str) -> bool {
    let mut haystack = s.chars().rev().flat_map(|c| c.to_lowercase().rev());
    lowered.chars().rev().all(|c| haystack.next() == Some(c))
}
