//! Pattern validation and compilation, with EventBridge's rules and error paths.

use serde_json::{Map, Value};

use super::wildcard::Wildcard;
use super::{AnythingBut, FieldPattern, Matcher, NumericRange, ObjectNode, PatternError};

/// Operator names; EventBridge rejects them as field names inside `$or` branches.
const OPERATORS: [&str; 9] = [
    "prefix",
    "suffix",
    "wildcard",
    "anything-but",
    "exists",
    "numeric",
    "equals-ignore-case",
    "cidr",
    "exactly",
];

/// The key that introduces an OR of object branches.
const OR_KEY: &str = "$or";

/// A path into the pattern, for error messages.
#[derive(Debug, Clone, Default)]
struct PatternPath(Vec<String>);

impl PatternPath {
    fn child(&self, step: impl Into<String>) -> PatternPath {
        let mut steps = self.0.clone();
        steps.push(step.into());
        PatternPath(steps)
    }

    /// Attach an index to the last step: `state` becomes `state[1]`.
    fn index(&self, i: usize) -> PatternPath {
        let mut steps = self.0.clone();
        match steps.last_mut() {
            Some(last) => last.push_str(&format!("[{i}]")),
            None => steps.push(format!("[{i}]")),
        }
        PatternPath(steps)
    }

    fn error(&self, problem: impl Into<String>) -> PatternError {
        PatternError::Invalid {
            path: if self.0.is_empty() {
                "<root>".to_owned()
            } else {
                self.0.join(".")
            },
            problem: problem.into(),
        }
    }
}

pub(super) fn parse_root(value: &Value) -> Result<ObjectNode, PatternError> {
    let root = PatternPath::default();
    match value {
        Value::Object(map) => parse_object(map, &root, false),
        other => Err(root.error(format!(
            "an event pattern must be a JSON object, not {}",
            kind(other)
        ))),
    }
}

fn parse_object(
    map: &Map<String, Value>,
    path: &PatternPath,
    in_or: bool,
) -> Result<ObjectNode, PatternError> {
    if map.is_empty() {
        return Err(path.error("empty objects are not allowed"));
    }
    let mut node = ObjectNode {
        fields: Vec::with_capacity(map.len()),
        any_of: Vec::new(),
    };
    for (key, value) in map {
        if key == OR_KEY {
            node.any_of.push(parse_or(value, &path.child(OR_KEY))?);
            continue;
        }
        let field_path = path.child(key.as_str());
        if in_or && OPERATORS.contains(&key.as_str()) {
            return Err(field_path.error(format!(
                "`{key}` is an operator name and cannot be used as a field name inside `$or`"
            )));
        }
        let field = match value {
            Value::Object(inner) => FieldPattern::Object(parse_object(inner, &field_path, in_or)?),
            Value::Array(items) => FieldPattern::Leaf(parse_leaf(items, &field_path)?),
            other => {
                return Err(field_path.error(format!(
                    "the value of `{key}` must be an array of match values or an object, not {}",
                    kind(other)
                )));
            }
        };
        node.fields.push((key.clone(), field));
    }
    Ok(node)
}

fn parse_or(value: &Value, path: &PatternPath) -> Result<Vec<ObjectNode>, PatternError> {
    let Value::Array(branches) = value else {
        return Err(path.error(format!(
            "`$or` must be an array of objects, not {}",
            kind(value)
        )));
    };
    if branches.len() < 2 {
        return Err(path.error(format!(
            "`$or` needs at least 2 objects, found {}",
            branches.len()
        )));
    }
    branches
        .iter()
        .enumerate()
        .map(|(i, branch)| {
            let branch_path = path.index(i);
            match branch {
                Value::Object(map) => parse_object(map, &branch_path, true),
                other => Err(branch_path.error(format!(
                    "each `$or` branch must be an object, not {}",
                    kind(other)
                ))),
            }
        })
        .collect()
}

fn parse_leaf(items: &[Value], path: &PatternPath) -> Result<Vec<Matcher>, PatternError> {
    if items.is_empty() {
        return Err(path.error("empty arrays are not allowed"));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let item_path = path.index(i);
            match item {
                Value::String(s) => Ok(Matcher::String(s.clone())),
                Value::Number(n) => Ok(Matcher::Number(n.clone())),
                Value::Bool(b) => Ok(Matcher::Bool(*b)),
                Value::Null => Ok(Matcher::Null),
                Value::Object(op) => parse_operator(op, &item_path),
                Value::Array(_) => Err(item_path.error(
                    "match values must be strings, numbers, booleans, null or operator objects, not arrays",
                )),
            }
        })
        .collect()
}

/// The single `(name, operand)` of an operator object.
fn single_key<'a>(
    op: &'a Map<String, Value>,
    path: &PatternPath,
) -> Result<(&'a str, &'a Value), PatternError> {
    let mut entries = op.iter();
    match (entries.next(), entries.next()) {
        (Some((name, operand)), None) => Ok((name.as_str(), operand)),
        (None, _) => Err(path.error("empty objects are not allowed as match values")),
        (Some(_), Some(_)) => {
            let names: Vec<&str> = op.keys().map(String::as_str).collect();
            Err(path.error(format!(
                "an operator object must have exactly one key, found {}: {}",
                names.len(),
                names.join(", ")
            )))
        }
    }
}

fn parse_operator(op: &Map<String, Value>, path: &PatternPath) -> Result<Matcher, PatternError> {
    let (name, operand) = single_key(op, path)?;
    match name {
        "prefix" | "suffix" => parse_affix(name, operand, path),
        "equals-ignore-case" => match operand {
            Value::String(s) => Ok(Matcher::EqualsIgnoreCase(s.to_lowercase())),
            other => Err(path.error(format!(
                "`equals-ignore-case` needs a string, not {}",
                kind(other)
            ))),
        },
        "wildcard" => match operand {
            Value::String(s) => Wildcard::compile(s)
                .map(Matcher::Wildcard)
                .map_err(|problem| path.error(problem)),
            other => Err(path.error(format!("`wildcard` needs a string, not {}", kind(other)))),
        },
        "exists" => match operand {
            Value::Bool(b) => Ok(Matcher::Exists(*b)),
            other => Err(path.error(format!("`exists` needs true or false, not {}", kind(other)))),
        },
        "numeric" => parse_numeric(operand, path).map(Matcher::Numeric),
        "anything-but" => parse_anything_but(operand, path).map(Matcher::AnythingBut),
        "cidr" => Err(path.error("the `cidr` operator is not supported by this matcher")),
        other => Err(path.error(format!(
            "unknown operator `{other}` (expected one of prefix, suffix, wildcard, \
             equals-ignore-case, anything-but, exists, numeric)"
        ))),
    }
}

/// `prefix` / `suffix`: a string, or `{"equals-ignore-case": string}`.
fn parse_affix(name: &str, operand: &Value, path: &PatternPath) -> Result<Matcher, PatternError> {
    let is_prefix = name == "prefix";
    match operand {
        Value::String(s) => Ok(if is_prefix {
            Matcher::Prefix(s.clone())
        } else {
            Matcher::Suffix(s.clone())
        }),
        Value::Object(inner) => {
            let (inner_name, inner_operand) = single_key(inner, path)?;
            match (inner_name, inner_operand) {
                ("equals-ignore-case", Value::String(s)) => Ok(if is_prefix {
                    Matcher::PrefixIgnoreCase(s.to_lowercase())
                } else {
                    Matcher::SuffixIgnoreCase(s.to_lowercase())
                }),
                ("equals-ignore-case", other) => Err(path.error(format!(
                    "`{name}` with `equals-ignore-case` needs a string, not {}",
                    kind(other)
                ))),
                (other, _) => Err(path.error(format!(
                    "`{name}` accepts only `equals-ignore-case` inside an object, not `{other}`"
                ))),
            }
        }
        other => Err(path.error(format!(
            "`{name}` needs a string or {{\"equals-ignore-case\": string}}, not {}",
            kind(other)
        ))),
    }
}

fn parse_anything_but(operand: &Value, path: &PatternPath) -> Result<AnythingBut, PatternError> {
    match operand {
        Value::String(s) => Ok(AnythingBut::Strings(vec![s.clone()])),
        Value::Number(n) => Ok(AnythingBut::Numbers(vec![n.clone()])),
        Value::Array(items) => parse_anything_but_list(items, path),
        Value::Object(inner) => {
            let (name, inner_operand) = single_key(inner, path)?;
            match name {
                "prefix" | "suffix" => {
                    let Value::String(s) = inner_operand else {
                        return Err(path.error(format!(
                            "`anything-but` `{name}` needs a string, not {}",
                            kind(inner_operand)
                        )));
                    };
                    if s.is_empty() {
                        return Err(
                            path.error(format!("`anything-but` `{name}` must not be empty"))
                        );
                    }
                    Ok(if name == "prefix" {
                        AnythingBut::Prefix(s.clone())
                    } else {
                        AnythingBut::Suffix(s.clone())
                    })
                }
                "equals-ignore-case" => {
                    let values =
                        strings_or_list(inner_operand, "anything-but` `equals-ignore-case", path)?;
                    Ok(AnythingBut::IgnoreCase(
                        values.into_iter().map(str::to_lowercase).collect(),
                    ))
                }
                "wildcard" => {
                    let values = strings_or_list(inner_operand, "anything-but` `wildcard", path)?;
                    values
                        .into_iter()
                        .map(|w| Wildcard::compile(w).map_err(|problem| path.error(problem)))
                        .collect::<Result<Vec<_>, _>>()
                        .map(AnythingBut::Wildcard)
                }
                other => Err(path.error(format!(
                    "unsupported `anything-but` operator `{other}` (expected prefix, suffix, \
                     equals-ignore-case or wildcard)"
                ))),
            }
        }
        other => Err(path.error(format!(
            "`anything-but` needs a string, a number, a list of strings or of numbers, or an \
             operator object, not {}",
            kind(other)
        ))),
    }
}

fn parse_anything_but_list(
    items: &[Value],
    path: &PatternPath,
) -> Result<AnythingBut, PatternError> {
    if items.is_empty() {
        return Err(path.error("`anything-but` list must not be empty"));
    }
    if items.iter().all(Value::is_string) {
        return Ok(AnythingBut::Strings(
            items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
        ));
    }
    if items.iter().all(Value::is_number) {
        return Ok(AnythingBut::Numbers(
            items
                .iter()
                .filter_map(|v| v.as_number().cloned())
                .collect(),
        ));
    }
    Err(path.error(
        "`anything-but` list must hold only strings or only numbers (no mixing, booleans, null or objects)",
    ))
}

/// A string or a non-empty list of strings.
fn strings_or_list<'a>(
    operand: &'a Value,
    what: &str,
    path: &PatternPath,
) -> Result<Vec<&'a str>, PatternError> {
    match operand {
        Value::String(s) => Ok(vec![s.as_str()]),
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| path.error(format!("`{what}` list must hold only strings")))
            })
            .collect(),
        Value::Array(_) => Err(path.error(format!("`{what}` list must not be empty"))),
        other => Err(path.error(format!(
            "`{what}` needs a string or a list of strings, not {}",
            kind(other)
        ))),
    }
}

fn parse_numeric(operand: &Value, path: &PatternPath) -> Result<NumericRange, PatternError> {
    let Value::Array(terms) = operand else {
        return Err(path.error(format!("`numeric` needs an array, not {}", kind(operand))));
    };
    let op_at = |i: usize| -> Result<&str, PatternError> {
        match terms.get(i) {
            Some(Value::String(s)) => Ok(s.as_str()),
            Some(other) => Err(path.error(format!(
                "`numeric` term {i} must be an operator (=, <, <=, >, >=), not {}",
                kind(other)
            ))),
            None => Err(path.error("`numeric` needs an operator and a number")),
        }
    };
    let num_at = |i: usize, op: &str| -> Result<f64, PatternError> {
        match terms.get(i) {
            Some(Value::Number(n)) => n
                .as_f64()
                .ok_or_else(|| path.error(format!("value of `{op}` is not a usable number"))),
            Some(other) => Err(path.error(format!(
                "value of `{op}` in `numeric` must be a number, not {}",
                kind(other)
            ))),
            None => Err(path.error(format!("`{op}` in `numeric` has no value"))),
        }
    };
    let first = op_at(0)?;
    let first_value = num_at(1, first)?;
    let bound_count = match first {
        "=" => {
            ensure_len(terms, 2, path)?;
            return Ok(NumericRange {
                lower: Some((first_value, true)),
                upper: Some((first_value, true)),
            });
        }
        "<" | "<=" => {
            ensure_len(terms, 2, path)?;
            return Ok(NumericRange {
                lower: None,
                upper: Some((first_value, first == "<=")),
            });
        }
        ">" | ">=" => terms.len(),
        other => {
            return Err(path.error(format!(
                "unknown numeric operator `{other}` (expected =, <, <=, > or >=)"
            )));
        }
    };
    let lower = Some((first_value, first == ">="));
    if bound_count == 2 {
        return Ok(NumericRange { lower, upper: None });
    }
    let second = op_at(2)?;
    if second != "<" && second != "<=" {
        return Err(path.error(format!(
            "a numeric range must be a lower bound (> or >=) followed by an upper bound (< or <=), found `{second}`"
        )));
    }
    let top = num_at(3, second)?;
    ensure_len(terms, 4, path)?;
    if first_value >= top {
        return Err(path.error(format!(
            "numeric range is empty: the lower bound {first_value} must be less than the upper bound {top}"
        )));
    }
    Ok(NumericRange {
        lower,
        upper: Some((top, second == "<=")),
    })
}

fn ensure_len(terms: &[Value], len: usize, path: &PatternPath) -> Result<(), PatternError> {
    if terms.len() > len {
        Err(path.error("too many terms in `numeric` expression"))
    } else {
        Ok(())
    }
}

/// A short description of a JSON value's type for messages.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
