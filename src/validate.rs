//! Request validation from the schema's `buf.validate` annotations (CEL included),
//! with prost-protovalidate. Whether a message needs validating at all is decided
//! once per schema, so unannotated methods pay nothing per request.

use std::collections::HashSet;

use prost::Message as _;
use prost_protovalidate::{Error as ValidateError, Validator};
use prost_reflect::{DynamicMessage, ExtensionDescriptor, Kind, MessageDescriptor, ReflectMessage as _};

use crate::Error;
use crate::wire::FlatShape;
use tonic::Code;

/// True when `msg` or any message reachable from its fields carries a
/// `buf.validate` rule.
pub(crate) fn needs_validation(msg: &MessageDescriptor) -> bool {
    let pool = msg.parent_pool();
    let ext = |n: &str| pool.get_extension_by_name(n);
    let (Some(field), Some(message), Some(oneof)) =
        (ext("buf.validate.field"), ext("buf.validate.message"), ext("buf.validate.oneof"))
    else {
        return false;
    };
    let mut seen = HashSet::new();
    has_rules(msg, &field, &message, &oneof, &mut seen)
}

fn has_rules(
    msg: &MessageDescriptor,
    field: &ExtensionDescriptor,
    message: &ExtensionDescriptor,
    oneof: &ExtensionDescriptor,
    seen: &mut HashSet<String>,
) -> bool {
    if !seen.insert(msg.full_name().to_owned()) {
        return false;
    }
    if msg.options().has_extension(message) || msg.oneofs().any(|o| o.options().has_extension(oneof)) {
        return true;
    }
    msg.fields().any(|f| {
        f.options().has_extension(field)
            || matches!(f.kind(), Kind::Message(m) if has_rules(&m, field, message, oneof, seen))
    })
}

/// How violations are reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Naming {
    /// One violation: the rule's own message; several: `field: message` pairs.
    Plain,
    /// Every violation as `field: message`, even a single one (for a check of
    /// something the client did not send as such, like a merged record).
    Named,
    /// Message `i` of a client stream: every field path starts with
    /// `requests[i]`, and the message names each path.
    InStream(usize),
}

impl Naming {
    /// The field path as reported.
    fn path(self, field: &str) -> String {
        match self {
            Naming::InStream(i) if field.is_empty() => format!("requests[{i}]"),
            Naming::InStream(i) => format!("requests[{i}].{field}"),
            _ => field.to_owned(),
        }
    }
}

/// Validates one request; a violation becomes INVALID_ARGUMENT whose message is the
/// rule's own message when there is one violation, with every violation in a
/// `google.rpc.BadRequest` detail.
pub(crate) fn check(validator: &Validator, msg: &DynamicMessage) -> Result<(), Error> {
    check_as(validator, msg, Naming::Plain)
}

/// The same, reporting violations as `naming` says.
pub(crate) fn check_as(validator: &Validator, msg: &DynamicMessage, naming: Naming) -> Result<(), Error> {
    match validator.validate(msg) {
        Ok(()) => Ok(()),
        Err(ValidateError::Validation(err)) => {
            let text = |v: &prost_protovalidate::Violation| {
                if v.message().is_empty() { format!("[{}]", v.rule_id()) } else { v.message().to_owned() }
            };
            let violations: Vec<FieldViolation> = err
                .violations()
                .iter()
                .map(|v| FieldViolation { field: v.field_path(), description: text(v), reason: v.rule_id().to_owned() })
                .collect();
            Err(invalid(violations, naming))
        }
        Err(other) => {
            tracing::error!(message = %msg.descriptor().full_name(), error = %other, "validation rule failed to evaluate");
            Err(Error::internal("validation rules could not be evaluated"))
        }
    }
}

/// INVALID_ARGUMENT for a non-empty list of violations: the message is the one
/// violation's own message, or `field: message` pairs (always pairs unless
/// `naming` is plain); all go in a BadRequest detail.
fn invalid(mut field_violations: Vec<FieldViolation>, naming: Naming) -> Error {
    if naming != Naming::Plain {
        for v in &mut field_violations {
            v.field = naming.path(&v.field);
        }
    }
    let pair = |v: &FieldViolation| {
        if v.field.is_empty() { v.description.clone() } else { format!("{}: {}", v.field, v.description) }
    };
    let message = match field_violations.as_slice() {
        [one] if naming == Naming::Plain => one.description.clone(),
        many => many.iter().map(pair).collect::<Vec<_>>().join("; "),
    };
    let bad_request = BadRequest { field_violations };
    let details = RpcStatus {
        code: Code::InvalidArgument as i32,
        message: message.clone(),
        details: vec![prost_types::Any {
            type_url: "type.googleapis.com/google.rpc.BadRequest".to_owned(),
            value: bad_request.encode_to_vec(),
        }],
    };
    Error::invalid_argument_with_details(message, details.encode_to_vec().into())
}

/// How a method's input is validated, decided once per schema.
#[derive(Debug)]
pub(crate) enum Validation {
    /// No `buf.validate` rules anywhere in the input.
    None,
    /// Only rules we evaluate exactly in Rust (see [`NativeRules`]).
    Native(NativeRules),
    /// Everything else: prost-protovalidate on the decoded message.
    Full,
}

impl Validation {
    pub(crate) fn of(msg: &MessageDescriptor) -> Validation {
        if !needs_validation(msg) {
            return Validation::None;
        }
        NativeRules::of(msg).map_or(Validation::Full, Validation::Native)
    }
}

/// CEL string rules simple enough to evaluate exactly without a CEL interpreter:
/// `this.contains('lit')`, `this.startsWith('lit')` and `this.endsWith('lit')` on
/// singular string fields of a flat message, each with its own message and no
/// other rule on the field or the message. Same violations, in the same order,
/// as prost-protovalidate gives (checked by a differential test); anything else
/// takes the full path.
#[derive(Debug, Clone)]
pub(crate) struct NativeRules {
    rules: Vec<NativeRule>,
    shape: FlatShape,
}

#[derive(Debug, Clone)]
struct NativeRule {
    number: u32,
    field: String,
    op: StrOp,
    literal: String,
    id: String,
    message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StrOp {
    Contains,
    StartsWith,
    EndsWith,
}

impl NativeRule {
    fn holds(&self, value: &str) -> bool {
        match self.op {
            StrOp::Contains => value.contains(self.literal.as_str()),
            StrOp::StartsWith => value.starts_with(self.literal.as_str()),
            StrOp::EndsWith => value.ends_with(self.literal.as_str()),
        }
    }

    fn violation(&self) -> FieldViolation {
        FieldViolation { field: self.field.clone(), description: self.message.clone(), reason: self.id.clone() }
    }
}

impl NativeRules {
    fn of(msg: &MessageDescriptor) -> Option<NativeRules> {
        let pool = msg.parent_pool();
        let field_ext = pool.get_extension_by_name("buf.validate.field")?;
        let message_ext = pool.get_extension_by_name("buf.validate.message")?;
        let oneof_ext = pool.get_extension_by_name("buf.validate.oneof")?;
        if msg.options().has_extension(&message_ext) || msg.oneofs().any(|o| o.options().has_extension(&oneof_ext)) {
            return None;
        }
        let shape = FlatShape::of(msg)?;
        let mut rules = Vec::new();
        for f in msg.fields() {
            let options = f.options();
            if !options.has_extension(&field_ext) {
                continue;
            }
            if f.kind() != Kind::String || f.is_list() || f.supports_presence() {
                return None;
            }
            let value = options.get_extension(&field_ext);
            let field_rules = value.as_message()?;
            if !only_fields(field_rules, &["cel"]) {
                return None;
            }
            for rule in field_rules.get_field_by_name("cel")?.as_list()? {
                let rule = rule.as_message()?;
                if !only_fields(rule, &["id", "message", "expression"]) {
                    return None;
                }
                let text = |n: &str| rule.get_field_by_name(n).and_then(|v| v.as_str().map(str::to_owned));
                let (op, literal) = parse_expression(&text("expression")?)?;
                let message = text("message").filter(|m| !m.is_empty())?;
                rules.push(NativeRule {
                    number: f.number(),
                    field: f.name().to_owned(),
                    op,
                    literal,
                    id: text("id").unwrap_or_default(),
                    message,
                });
            }
        }
        (!rules.is_empty()).then_some(NativeRules { rules, shape })
    }

    /// Checks a decoded message.
    pub(crate) fn check_message(&self, msg: &DynamicMessage) -> Result<(), Error> {
        self.check_message_as(msg, Naming::Plain)
    }

    /// The same, reporting violations as `naming` says.
    pub(crate) fn check_message_as(&self, msg: &DynamicMessage, naming: Naming) -> Result<(), Error> {
        self.report(naming, |number| {
            msg.descriptor().get_field(number).and_then(|f| msg.get_field(&f).as_str().map(str::to_owned))
        })
    }

    /// Checks the request bytes directly; `Err(Ok(..))` is a violation, `Err(Err(..))`
    /// bytes that do not decode.
    pub(crate) fn check_raw(&self, raw: &[u8]) -> Result<(), Result<Error, String>> {
        self.check_raw_as(raw, Naming::Plain)
    }

    /// The same, reporting violations as `naming` says.
    pub(crate) fn check_raw_as(&self, raw: &[u8], naming: Naming) -> Result<(), Result<Error, String>> {
        let mut values: Vec<(u32, &[u8])> = Vec::with_capacity(self.rules.len());
        crate::wire::walk(raw, &self.shape, |f| {
            if self.rules.iter().any(|r| r.number == f.number) {
                match values.iter_mut().find(|(n, _)| *n == f.number) {
                    Some(slot) => slot.1 = f.payload,
                    None => values.push((f.number, f.payload)),
                }
            }
        })
        .map_err(Err)?;
        self.report(naming, |number| {
            let bytes = values.iter().find(|(n, _)| *n == number).map_or(&[][..], |(_, b)| *b);
            // The walker checked UTF-8 already.
            Some(String::from_utf8_lossy(bytes).into_owned())
        })
        .map_err(Ok)
    }

    fn report(&self, naming: Naming, value_of: impl Fn(u32) -> Option<String>) -> Result<(), Error> {
        let mut violations = Vec::new();
        for rule in &self.rules {
            let value = value_of(rule.number).unwrap_or_default();
            if !rule.holds(&value) {
                violations.push(rule.violation());
            }
        }
        if violations.is_empty() { Ok(()) } else { Err(invalid(violations, naming)) }
    }
}

/// True when `msg` sets no field outside `allowed`, no extension and no unknown field.
fn only_fields(msg: &DynamicMessage, allowed: &[&str]) -> bool {
    msg.fields().all(|(f, _)| allowed.contains(&f.name()))
        && msg.extensions().next().is_none()
        && msg.unknown_fields().next().is_none()
}

/// `this.contains('lit')` (or startsWith / endsWith, either quote style, no escapes).
fn parse_expression(expr: &str) -> Option<(StrOp, String)> {
    let rest = expr.trim().strip_prefix("this.")?;
    let (op, rest) =
        [("contains(", StrOp::Contains), ("startsWith(", StrOp::StartsWith), ("endsWith(", StrOp::EndsWith)]
            .into_iter()
            .find_map(|(p, op)| rest.strip_prefix(p).map(|r| (op, r)))?;
    let rest = rest.trim().strip_suffix(')')?.trim();
    let quote = rest.chars().next().filter(|c| *c == '\'' || *c == '"')?;
    let literal = rest.strip_prefix(quote)?.strip_suffix(quote)?;
    if literal.contains(['\\', '\'', '"']) {
        return None;
    }
    Some((op, literal.to_owned()))
}

/// `google.rpc.Status`, as carried in `grpc-status-details-bin`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub(crate) code: i32,
    #[prost(string, tag = "2")]
    pub(crate) message: String,
    #[prost(message, repeated, tag = "3")]
    pub(crate) details: Vec<prost_types::Any>,
}

/// `google.rpc.BadRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct BadRequest {
    #[prost(message, repeated, tag = "1")]
    pub(crate) field_violations: Vec<FieldViolation>,
}

/// `google.rpc.BadRequest.FieldViolation`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct FieldViolation {
    #[prost(string, tag = "1")]
    pub(crate) field: String,
    #[prost(string, tag = "2")]
    pub(crate) description: String,
    #[prost(string, tag = "3")]
    pub(crate) reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_reflect::Value;

    const SCHEMA: &str = r#"
syntax = "proto3";
package v;
import "buf/validate/validate.proto";
message M {
  string a = 1 [(buf.validate.field).cel = {id: "a.at", message: "needs an @", expression: "this.contains('@')"}];
  string b = 2 [
    (buf.validate.field).cel = {id: "b.pre", message: "starts with x", expression: "this.startsWith(\"x\")"},
    (buf.validate.field).cel = {id: "b.suf", message: "ends with !", expression: "this.endsWith('!')"}
  ];
  string c = 3;
  int32 d = 4;
}
message N { string a = 1 [(buf.validate.field).string.min_len = 1]; }
message O { optional string a = 1 [(buf.validate.field).cel = {id: "x", message: "m", expression: "this.contains('@')"}]; }
message P { string a = 1 [(buf.validate.field).cel = {id: "x", message: "m", expression: "this.contains('@') && size(this) > 2"}]; }
message Q { M inner = 1; }
"#;

    fn pool() -> prost_reflect::DescriptorPool {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("v.proto"), SCHEMA).unwrap();
        crate::schema::load(&[dir.path().to_path_buf()]).unwrap().pool().clone()
    }

    #[test]
    fn only_simple_string_rules_are_native() {
        let pool = pool();
        let of = |n: &str| Validation::of(&pool.get_message_by_name(n).unwrap());
        assert!(matches!(of("v.M"), Validation::Native(_)));
        for full in ["v.N", "v.O", "v.P", "v.Q"] {
            assert!(matches!(of(full), Validation::Full), "{full}");
        }
    }

    #[test]
    fn native_rules_agree_with_prost_protovalidate() {
        let pool = pool();
        let desc = pool.get_message_by_name("v.M").unwrap();
        let Validation::Native(native) = Validation::of(&desc) else { panic!("native expected") };
        let validator = Validator::new();
        let mut checked = 0;
        for a in ["", "a@b", "ab", "@", "é@"] {
            for b in ["", "x!", "x", "!", "yx!", "x!!"] {
                let mut m = DynamicMessage::new(desc.clone());
                m.set_field_by_name("a", Value::String(a.into()));
                m.set_field_by_name("b", Value::String(b.into()));
                m.set_field_by_name("c", Value::String("free".into()));
                let full = check(&validator, &m).map_err(Error::into_status);
                let by_msg = native.check_message(&m).map_err(Error::into_status);
                let by_raw = native.check_raw(&m.encode_to_vec()).map_err(|e| e.expect("bytes decode").into_status());
                for got in [&by_msg, &by_raw] {
                    match (&full, got) {
                        (Ok(()), Ok(())) => {}
                        (Err(x), Err(y)) => {
                            assert_eq!((x.code(), x.message()), (y.code(), y.message()), "a={a:?} b={b:?}");
                            assert_eq!(x.details(), y.details(), "a={a:?} b={b:?}");
                        }
                        _ => panic!("a={a:?} b={b:?}: full {full:?} vs native {got:?}"),
                    }
                }
                checked += 1;
            }
        }
        assert_eq!(checked, 30);
        // Malformed bytes are reported as such, not as a violation.
        assert!(matches!(native.check_raw(&[0x0a, 5, b'a']), Err(Err(_))));
    }
}
