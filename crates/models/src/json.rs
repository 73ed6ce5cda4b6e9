//! Constrained JSON output: a byte-level pushdown automaton that accepts
//! exactly the JSON texts matching a JSON Schema (a documented subset).
//!
//! At each decoding step the generator asks [`JsonState::advance`] whether a
//! candidate token's bytes keep the output a valid prefix; the sampler only
//! picks tokens that do, and generation ends as soon as the value is
//! complete. Output is compact JSON: the only whitespace allowed outside
//! strings is one space after `:` or `,`.
//!
//! Supported: `type` (object, array, string, number, integer, boolean, null,
//! or a list of them), `properties`, `required`, `additionalProperties`
//! (`false`, the default here, `true` or a schema), `items`, `minItems`,
//! `maxItems`, `minLength`, `maxLength`, `enum`, `const`, `anyOf`, and `{}`
//! for any value. Annotations (`title`, `description`, `default`,
//! `examples`, `format`, `$schema`, `$id`) are ignored; any other keyword is
//! an error rather than a silent violation. Integers are limited to 18
//! digits, numbers to 32 characters, so they fit 64-bit types.

use std::sync::Arc;

use serde_json::Value;

/// A compiled schema.
#[derive(Debug, Clone)]
pub struct JsonConstraint {
    root: Arc<Node>,
}

#[derive(Debug)]
enum Node {
    Any,
    Object { props: Vec<(Vec<u8>, Arc<Node>)>, required: Vec<bool>, additional: Option<Arc<Node>> },
    Array { items: Arc<Node>, min: usize, max: usize },
    String { min: usize, max: usize },
    Number { integer: bool },
    Literals(Vec<Vec<u8>>),
    Union(Vec<Arc<Node>>),
}

const IGNORED: &[&str] =
    &["title", "description", "default", "examples", "format", "$schema", "$id", "$comment", "deprecated", "readOnly"];
const HANDLED: &[&str] = &[
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
    "enum",
    "const",
    "anyOf",
];

impl JsonConstraint {
    /// Compiles `schema`, or says which part is unsupported or malformed.
    pub fn new(schema: &Value) -> Result<Self, String> {
        Ok(Self { root: Arc::new(compile(schema, "#")?) })
    }

    /// The state before any output.
    pub fn start(&self) -> JsonState {
        JsonState { stack: vec![Frame::Value { node: self.root.clone(), space_ok: false }] }
    }
}

fn usize_of(schema: &serde_json::Map<String, Value>, key: &str, at: &str) -> Result<Option<usize>, String> {
    match schema.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| format!("{at}/{key} must be a non-negative integer")),
    }
}

fn compile(schema: &Value, at: &str) -> Result<Node, String> {
    let map = match schema {
        Value::Bool(true) => return Ok(Node::Any),
        Value::Object(map) => map,
        _ => return Err(format!("{at}: a schema must be an object or `true`")),
    };
    for key in map.keys() {
        if !IGNORED.contains(&key.as_str()) && !HANDLED.contains(&key.as_str()) {
            return Err(format!("{at}: the keyword `{key}` is not supported for constrained output"));
        }
    }
    if let Some(values) = map.get("enum") {
        let values = values.as_array().ok_or_else(|| format!("{at}/enum must be an array"))?;
        if values.is_empty() {
            return Err(format!("{at}/enum is empty"));
        }
        return Ok(Node::Literals(values.iter().map(|v| serde_json::to_vec(v).unwrap_or_default()).collect()));
    }
    if let Some(value) = map.get("const") {
        return Ok(Node::Literals(vec![serde_json::to_vec(value).unwrap_or_default()]));
    }
    if let Some(options) = map.get("anyOf") {
        let options = options.as_array().ok_or_else(|| format!("{at}/anyOf must be an array"))?;
        let nodes = options
            .iter()
            .enumerate()
            .map(|(i, s)| compile(s, &format!("{at}/anyOf/{i}")).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(Node::Union(nodes));
    }
    let types: Vec<&str> = match map.get("type") {
        None => return Ok(Node::Any),
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts
            .iter()
            .map(|t| t.as_str().ok_or_else(|| format!("{at}/type must hold strings")))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(format!("{at}/type must be a string or an array of strings")),
    };
    let mut nodes = Vec::with_capacity(types.len());
    for t in types {
        nodes.push(Arc::new(match t {
            "object" => object(map, at)?,
            "array" => {
                let items = match map.get("items") {
                    Some(s) => Arc::new(compile(s, &format!("{at}/items"))?),
                    None => Arc::new(Node::Any),
                };
                let min = usize_of(map, "minItems", at)?.unwrap_or(0);
                let max = usize_of(map, "maxItems", at)?.unwrap_or(usize::MAX);
                if min > max {
                    return Err(format!("{at}: minItems {min} > maxItems {max}"));
                }
                Node::Array { items, min, max }
            }
            "string" => Node::String {
                min: usize_of(map, "minLength", at)?.unwrap_or(0),
                max: usize_of(map, "maxLength", at)?.unwrap_or(usize::MAX),
            },
            "number" => Node::Number { integer: false },
            "integer" => Node::Number { integer: true },
            "boolean" => Node::Literals(vec![b"true".to_vec(), b"false".to_vec()]),
            "null" => Node::Literals(vec![b"null".to_vec()]),
            other => return Err(format!("{at}/type: unknown type `{other}`")),
        }));
    }
    Ok(if nodes.len() == 1 { Arc::try_unwrap(nodes.remove(0)).unwrap_or(Node::Any) } else { Node::Union(nodes) })
}

fn object(map: &serde_json::Map<String, Value>, at: &str) -> Result<Node, String> {
    let mut props = Vec::new();
    if let Some(properties) = map.get("properties") {
        let properties = properties.as_object().ok_or_else(|| format!("{at}/properties must be an object"))?;
        for (name, schema) in properties {
            // Keys are matched in their JSON-escaped form, without quotes.
            let quoted = serde_json::to_vec(name).unwrap_or_default();
            let escaped = quoted[1..quoted.len() - 1].to_vec();
            props.push((escaped, Arc::new(compile(schema, &format!("{at}/properties/{name}"))?)));
        }
    }
    let mut required = vec![false; props.len()];
    if let Some(names) = map.get("required") {
        let names = names.as_array().ok_or_else(|| format!("{at}/required must be an array"))?;
        for name in names {
            let name = name.as_str().ok_or_else(|| format!("{at}/required must hold strings"))?;
            let quoted = serde_json::to_vec(name).unwrap_or_default();
            let index = props
                .iter()
                .position(|(key, _)| key[..] == quoted[1..quoted.len() - 1])
                .ok_or_else(|| format!("{at}/required names `{name}`, which is not in properties"))?;
            required[index] = true;
        }
    }
    let additional = match map.get("additionalProperties") {
        None if props.is_empty() => Some(Arc::new(Node::Any)),
        None | Some(Value::Bool(false)) => None,
        Some(Value::Bool(true)) => Some(Arc::new(Node::Any)),
        Some(schema) => Some(Arc::new(compile(schema, &format!("{at}/additionalProperties"))?)),
    };
    Ok(Node::Object { props, required, additional })
}

/// Where the output stands. Cheap to clone (a short stack).
#[derive(Debug, Clone)]
pub struct JsonState {
    stack: Vec<Frame>,
}

#[derive(Debug, Clone)]
enum Frame {
    /// Expecting the first byte of a value.
    Value {
        node: Arc<Node>,
        space_ok: bool,
    },
    Object {
        node: Arc<Node>,
        seen: Vec<bool>,
        state: ObjState,
    },
    /// Inside a key's quotes. `names` are the keys it may still become
    /// (JSON-escaped); `None` when any key is allowed.
    Key {
        buf: Vec<u8>,
        escaped: bool,
        names: Option<Arc<Vec<Vec<u8>>>>,
    },
    Array {
        node: Arc<Node>,
        count: usize,
        state: ArrState,
    },
    Str {
        min: usize,
        max: usize,
        chars: usize,
        esc: Esc,
        utf8_left: u8,
    },
    Num {
        integer: bool,
        state: NumState,
        len: usize,
    },
    Lit {
        options: Vec<Vec<u8>>,
        pos: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum ObjState {
    Start,
    Open,
    InKey,
    AfterKey(Option<usize>),
    InValue,
    AfterValue,
    AfterComma { space_ok: bool },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum ArrState {
    Start,
    Open,
    InValue,
    AfterValue,
    AfterComma { space_ok: bool },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Esc {
    Start,
    None,
    Backslash,
    Hex(u8),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum NumState {
    Start,
    Minus,
    Zero,
    Int,
    Dot,
    Frac,
    E,
    ESign,
    Exp,
}

enum Step {
    Consumed,
    ConsumedPush(Frame),
    Retry(Frame),
    Replace(Frame),
    Pop,
    ConsumedPop,
    Reject,
}

const MAX_NUMBER_LEN: usize = 32;
/// Integers stay within 18 digits (plus sign) so they fit a 64-bit integer.
const MAX_INTEGER_LEN: usize = 19;

impl JsonState {
    /// Feeds `bytes`; false (and a state to discard) if they break the schema.
    pub fn advance(&mut self, bytes: &[u8]) -> bool {
        bytes.iter().all(|&b| self.feed(b))
    }

    /// Whether the output so far is a complete value (generation may stop).
    pub fn is_complete(&self) -> bool {
        match self.stack.as_slice() {
            [] => true,
            [Frame::Num { state, .. }] => {
                matches!(state, NumState::Zero | NumState::Int | NumState::Frac | NumState::Exp)
            }
            [Frame::Lit { options, pos }] => options.iter().any(|o| o.len() == *pos),
            _ => false,
        }
    }

    /// Whether nothing more can follow (the value is closed).
    pub fn is_closed(&self) -> bool {
        self.stack.is_empty()
    }

    fn feed(&mut self, byte: u8) -> bool {
        loop {
            let Some(top) = self.stack.last_mut() else { return false };
            match step(top, byte) {
                Step::Consumed => return true,
                Step::ConsumedPush(frame) => {
                    self.stack.push(frame);
                    return true;
                }
                Step::Retry(frame) => self.stack.push(frame),
                Step::Replace(frame) => {
                    if let Some(top) = self.stack.last_mut() {
                        *top = frame;
                    }
                }
                Step::Pop => {
                    let done = self.stack.pop();
                    if !self.child_done(done) {
                        return false;
                    }
                }
                Step::ConsumedPop => {
                    let done = self.stack.pop();
                    return self.child_done(done);
                }
                Step::Reject => return false,
            }
        }
    }

    /// Tells the parent that its child finished.
    fn child_done(&mut self, child: Option<Frame>) -> bool {
        let Some(parent) = self.stack.last_mut() else { return true };
        match parent {
            Frame::Object { node, seen, state } => match (*state, child) {
                (ObjState::InKey, Some(Frame::Key { buf, .. })) => {
                    let Node::Object { props, additional, .. } = node.as_ref() else { return false };
                    match props.iter().position(|(key, _)| *key == buf) {
                        Some(i) if seen[i] => false,
                        Some(i) => {
                            seen[i] = true;
                            *state = ObjState::AfterKey(Some(i));
                            true
                        }
                        None if additional.is_some() => {
                            *state = ObjState::AfterKey(None);
                            true
                        }
                        None => false,
                    }
                }
                (ObjState::InValue, _) => {
                    *state = ObjState::AfterValue;
                    true
                }
                _ => false,
            },
            Frame::Array { count, state, .. } if *state == ArrState::InValue => {
                *count += 1;
                *state = ArrState::AfterValue;
                true
            }
            _ => false,
        }
    }
}

fn step(frame: &mut Frame, b: u8) -> Step {
    match frame {
        Frame::Value { node, space_ok } => {
            if b == b' ' && *space_ok {
                *space_ok = false;
                return Step::Consumed;
            }
            match start(node, b) {
                Some(next) => Step::Replace(next),
                None => Step::Reject,
            }
        }
        Frame::Object { node, seen, state } => {
            let Node::Object { props, required, additional } = node.as_ref() else { return Step::Reject };
            let all_required = || required.iter().zip(seen.iter()).all(|(r, s)| !r || *s);
            let more_keys = || additional.is_some() || seen.iter().any(|s| !s);
            match (*state, b) {
                (ObjState::Start, b'{') => {
                    *state = ObjState::Open;
                    Step::Consumed
                }
                (ObjState::Open, b'"') | (ObjState::AfterComma { .. }, b'"') => {
                    *state = ObjState::InKey;
                    let names = additional.is_none().then(|| {
                        Arc::new(
                            props.iter().zip(seen.iter()).filter(|(_, s)| !**s).map(|((k, _), _)| k.clone()).collect(),
                        )
                    });
                    Step::ConsumedPush(Frame::Key { buf: Vec::new(), escaped: false, names })
                }
                (ObjState::Open, b'}') | (ObjState::AfterValue, b'}') if all_required() => Step::ConsumedPop,
                (ObjState::AfterValue, b',') if more_keys() => {
                    *state = ObjState::AfterComma { space_ok: true };
                    Step::Consumed
                }
                (ObjState::AfterComma { space_ok: true }, b' ') => {
                    *state = ObjState::AfterComma { space_ok: false };
                    Step::Consumed
                }
                (ObjState::AfterKey(index), b':') => {
                    let child = match index {
                        Some(i) => props[i].1.clone(),
                        None => additional.clone().unwrap_or_else(|| Arc::new(Node::Any)),
                    };
                    *state = ObjState::InValue;
                    Step::ConsumedPush(Frame::Value { node: child, space_ok: true })
                }
                _ => Step::Reject,
            }
        }
        Frame::Key { buf, escaped, names } => {
            // Keys of an object without additional properties must spell a
            // declared, unseen property: checked byte by byte as typed.
            let closing = b == b'"' && !*escaped;
            if closing {
                let known = names.as_ref().is_none_or(|names| names.iter().any(|n| n == buf));
                return if known { Step::ConsumedPop } else { Step::Reject };
            }
            if b < 0x20 {
                return Step::Reject;
            }
            *escaped = !*escaped && b == b'\\';
            buf.push(b);
            match names {
                Some(names) if !names.iter().any(|n| n.starts_with(buf)) => Step::Reject,
                _ => Step::Consumed,
            }
        }
        Frame::Array { node, count, state } => {
            let Node::Array { items, min, max } = node.as_ref() else { return Step::Reject };
            match (*state, b) {
                (ArrState::Start, b'[') => {
                    *state = ArrState::Open;
                    Step::Consumed
                }
                (ArrState::Open, b']') | (ArrState::AfterValue, b']') if *count >= *min => Step::ConsumedPop,
                (ArrState::AfterValue, b',') if *count < *max => {
                    *state = ArrState::AfterComma { space_ok: true };
                    Step::Consumed
                }
                (ArrState::AfterComma { space_ok: true }, b' ') => {
                    *state = ArrState::AfterComma { space_ok: false };
                    Step::Consumed
                }
                (ArrState::Open, _) | (ArrState::AfterComma { .. }, _) if *count < *max => {
                    *state = ArrState::InValue;
                    Step::Retry(Frame::Value { node: items.clone(), space_ok: false })
                }
                _ => Step::Reject,
            }
        }
        Frame::Str { min, max, chars, esc, utf8_left } => string_byte(*min, *max, chars, esc, utf8_left, b),
        Frame::Num { integer, state, len } => number_byte(*integer, state, len, b),
        Frame::Lit { options, pos } => {
            let p = *pos;
            let complete = options.iter().any(|o| o.len() == p);
            options.retain(|o| o.get(p) == Some(&b));
            if options.is_empty() {
                return if complete { Step::Pop } else { Step::Reject };
            }
            *pos += 1;
            if options.iter().all(|o| o.len() == *pos) { Step::ConsumedPop } else { Step::Consumed }
        }
    }
}

/// The frame a value starting with `b` continues in, if `node` allows it.
/// The frame is in its "before the first byte" state and is fed `b` next.
fn start(node: &Arc<Node>, b: u8) -> Option<Frame> {
    let value = |node: Node| Some(Frame::Value { node: Arc::new(node), space_ok: false });
    match node.as_ref() {
        Node::Any => {
            let any = Arc::new(Node::Any);
            match b {
                b'{' => value(Node::Object { props: Vec::new(), required: Vec::new(), additional: Some(any) }),
                b'[' => value(Node::Array { items: any, min: 0, max: usize::MAX }),
                b'"' => value(Node::String { min: 0, max: usize::MAX }),
                b'-' | b'0'..=b'9' => value(Node::Number { integer: false }),
                b't' | b'f' | b'n' => {
                    value(Node::Literals(vec![b"true".to_vec(), b"false".to_vec(), b"null".to_vec()]))
                }
                _ => None,
            }
        }
        Node::Object { props, .. } if b == b'{' => {
            Some(Frame::Object { node: node.clone(), seen: vec![false; props.len()], state: ObjState::Start })
        }
        Node::Array { .. } if b == b'[' => Some(Frame::Array { node: node.clone(), count: 0, state: ArrState::Start }),
        Node::String { min, max } if b == b'"' => {
            Some(Frame::Str { min: *min, max: *max, chars: 0, esc: Esc::Start, utf8_left: 0 })
        }
        Node::Number { integer } if b == b'-' || b.is_ascii_digit() => {
            Some(Frame::Num { integer: *integer, state: NumState::Start, len: 0 })
        }
        Node::Literals(options) => {
            let options: Vec<Vec<u8>> = options.iter().filter(|o| o.first() == Some(&b)).cloned().collect();
            (!options.is_empty()).then_some(Frame::Lit { options, pos: 0 })
        }
        Node::Union(nodes) => nodes.iter().find_map(|n| start(n, b)),
        _ => None,
    }
}

fn string_byte(min: usize, max: usize, chars: &mut usize, esc: &mut Esc, utf8_left: &mut u8, b: u8) -> Step {
    if *utf8_left > 0 {
        if b & 0xC0 != 0x80 {
            return Step::Reject;
        }
        *utf8_left -= 1;
        return Step::Consumed;
    }
    match *esc {
        Esc::Start => {
            return if b == b'"' {
                *esc = Esc::None;
                Step::Consumed
            } else {
                Step::Reject
            };
        }
        Esc::Backslash => {
            return match b {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {
                    *esc = Esc::None;
                    Step::Consumed
                }
                b'u' => {
                    *esc = Esc::Hex(4);
                    Step::Consumed
                }
                _ => Step::Reject,
            };
        }
        Esc::Hex(left) => {
            if !b.is_ascii_hexdigit() {
                return Step::Reject;
            }
            *esc = if left == 1 { Esc::None } else { Esc::Hex(left - 1) };
            return Step::Consumed;
        }
        Esc::None => {}
    }
    match b {
        b'"' if *chars >= min => Step::ConsumedPop,
        b'"' | 0..0x20 | 0x7F => Step::Reject,
        _ if *chars >= max => Step::Reject,
        b'\\' => {
            *chars += 1;
            *esc = Esc::Backslash;
            Step::Consumed
        }
        0x00..=0x7F => {
            *chars += 1;
            Step::Consumed
        }
        0xC2..=0xDF => {
            *chars += 1;
            *utf8_left = 1;
            Step::Consumed
        }
        0xE0..=0xEF => {
            *chars += 1;
            *utf8_left = 2;
            Step::Consumed
        }
        0xF0..=0xF4 => {
            *chars += 1;
            *utf8_left = 3;
            Step::Consumed
        }
        _ => Step::Reject,
    }
}

fn number_byte(integer: bool, state: &mut NumState, len: &mut usize, b: u8) -> Step {
    use NumState::*;
    let complete = matches!(state, Zero | Int | Frac | Exp);
    let next = match (*state, b) {
        (Start, b'-') => Some(Minus),
        (Start | Minus, b'0') => Some(Zero),
        (Start | Minus, b'1'..=b'9') => Some(Int),
        (Int, b'0'..=b'9') => Some(Int),
        (Zero | Int, b'.') if !integer => Some(Dot),
        (Dot | Frac, b'0'..=b'9') => Some(Frac),
        (Zero | Int | Frac, b'e' | b'E') if !integer => Some(E),
        (E, b'+' | b'-') => Some(ESign),
        (E | ESign | Exp, b'0'..=b'9') => Some(Exp),
        _ => None,
    };
    match next {
        Some(next) if *len < if integer { MAX_INTEGER_LEN } else { MAX_NUMBER_LEN } => {
            *state = next;
            *len += 1;
            Step::Consumed
        }
        _ if complete => Step::Pop,
        _ => Step::Reject,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn accepts(schema: &Value, text: &str) -> bool {
        let mut state = JsonConstraint::new(schema).unwrap().start();
        state.advance(text.as_bytes()) && state.is_complete()
    }

    fn prefix_ok(schema: &Value, text: &str) -> bool {
        JsonConstraint::new(schema).unwrap().start().advance(text.as_bytes())
    }

    #[test]
    fn objects_need_their_required_keys_and_only_declared_ones() {
        let schema = json!({"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}, "required": ["name"]});
        assert!(accepts(&schema, r#"{"name":"Ada","age":36}"#));
        assert!(accepts(&schema, r#"{"age": 36, "name": "Ada"}"#));
        assert!(accepts(&schema, r#"{"name":"Ada"}"#));
        assert!(!accepts(&schema, r#"{"age":36}"#));
        assert!(!prefix_ok(&schema, r#"{"nick"#) || !accepts(&schema, r#"{"nick":"A","name":"Ada"}"#));
        assert!(!accepts(&schema, r#"{"name":"Ada","name":"Bob"}"#));
        assert!(!accepts(&schema, r#"{"name":"Ada","age":3.5}"#));
        assert!(!prefix_ok(&schema, "{ "), "no whitespace after the brace");
        assert!(!prefix_ok(&schema, r#"{"name":  "#), "one space at most");
    }

    #[test]
    fn key_prefixes_are_checked_as_they_are_typed() {
        let schema = json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]});
        assert!(prefix_ok(&schema, r#"{"ci"#));
        // A key that is not declared fails at its closing quote.
        assert!(!prefix_ok(&schema, r#"{"cx":"#));
    }

    #[test]
    fn enums_numbers_booleans_arrays_and_nesting() {
        let schema = json!({
            "type": "object",
            "properties": {
                "unit": {"enum": ["cm", "m", "km"]},
                "values": {"type": "array", "items": {"type": "number"}, "minItems": 1, "maxItems": 3},
                "ok": {"type": "boolean"},
                "inner": {"type": "object", "properties": {"x": {"type": ["integer", "null"]}}, "required": ["x"]}
            },
            "required": ["unit", "values", "ok", "inner"]
        });
        assert!(accepts(&schema, r#"{"unit":"km","values":[1, -2.5e3, 0.25],"ok":true,"inner":{"x":null}}"#));
        assert!(!accepts(&schema, r#"{"unit":"mm","values":[1],"ok":true,"inner":{"x":1}}"#));
        assert!(!accepts(&schema, r#"{"unit":"m","values":[],"ok":true,"inner":{"x":1}}"#));
        assert!(!accepts(&schema, r#"{"unit":"m","values":[1,2,3,4],"ok":true,"inner":{"x":1}}"#));
        assert!(!accepts(&schema, r#"{"unit":"m","values":[01],"ok":true,"inner":{"x":1}}"#));
        assert!(!accepts(&schema, r#"{"unit":"m","values":[1],"ok":tru,"inner":{"x":1}}"#));
    }

    #[test]
    fn strings_escape_and_utf8_are_checked() {
        let schema = json!({"type": "string", "maxLength": 5});
        assert!(accepts(&schema, r#""a\"b\u00e9""#));
        assert!(accepts(&schema, "\"héllo\""));
        assert!(!accepts(&schema, r#""toolong""#));
        assert!(!prefix_ok(&schema, "\"a\nb"), "raw control characters are not allowed");
        assert!(!JsonConstraint::new(&schema).unwrap().start().advance(&[b'"', 0xC3, b'a']));
    }

    #[test]
    fn any_value_and_completion() {
        let any = json!({});
        assert!(accepts(&any, r#"{"a":[1,{"b":null}],"c":"d"}"#));
        assert!(accepts(&any, "12.5"));
        let mut state = JsonConstraint::new(&any).unwrap().start();
        assert!(state.advance(b"[1,2]"));
        assert!(state.is_closed());
        assert!(!state.clone().advance(b" "));
    }

    #[test]
    fn unsupported_keywords_are_refused_by_name() {
        let err = JsonConstraint::new(&json!({"type": "string", "pattern": "^a"})).unwrap_err();
        assert!(err.contains("pattern"), "{err}");
        let err = JsonConstraint::new(&json!({"type": "object", "required": ["x"]})).unwrap_err();
        assert!(err.contains("`x`"), "{err}");
    }
}
