//! Request validation from the schema's `buf.validate` annotations (CEL included),
//! with prost-protovalidate. Whether a message needs validating at all is decided
//! once per schema, so unannotated methods pay nothing per request.

use std::collections::HashSet;

use prost::Message as _;
use prost_protovalidate::{Error as ValidateError, Validator};
use prost_reflect::{DynamicMessage, ExtensionDescriptor, Kind, MessageDescriptor, ReflectMessage as _};
use tonic::{Code, Status};

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

/// Validates one request; a violation becomes INVALID_ARGUMENT whose message is the
/// rule's own message when there is one violation, with every violation in a
/// `google.rpc.BadRequest` detail.
pub(crate) fn check(validator: &Validator, msg: &DynamicMessage) -> Result<(), Status> {
    match validator.validate(msg) {
        Ok(()) => Ok(()),
        Err(ValidateError::Validation(err)) => {
            let violations = err.violations();
            let text = |v: &prost_protovalidate::Violation| {
                if v.message().is_empty() { format!("[{}]", v.rule_id()) } else { v.message().to_owned() }
            };
            let message = match violations {
                [one] => text(one),
                many => many.iter().map(|v| format!("{}: {}", v.field_path(), text(v))).collect::<Vec<_>>().join("; "),
            };
            let bad_request = BadRequest {
                field_violations: violations
                    .iter()
                    .map(|v| FieldViolation {
                        field: v.field_path(),
                        description: text(v),
                        reason: v.rule_id().to_owned(),
                    })
                    .collect(),
            };
            let details = RpcStatus {
                code: Code::InvalidArgument as i32,
                message: message.clone(),
                details: vec![prost_types::Any {
                    type_url: "type.googleapis.com/google.rpc.BadRequest".to_owned(),
                    value: bad_request.encode_to_vec(),
                }],
            };
            Err(Status::with_details(Code::InvalidArgument, message, details.encode_to_vec().into()))
        }
        Err(other) => {
            tracing::error!(message = %msg.descriptor().full_name(), error = %other, "validation rule failed to evaluate");
            Err(Status::internal("validation rules could not be evaluated"))
        }
    }
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
