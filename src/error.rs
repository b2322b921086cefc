//! The one error type. Startup (schema, build, data, I/O) and calls (store,
//! validator, codec, responders, middleware) all fail with [`Error`]; its kind is
//! private and queried with `is_*`. Exactly one function, [`Error::into_status`],
//! turns an error into a gRPC status; protocol adapters call it and nothing else
//! builds a status from an error.

use std::fmt;

use bytes::Bytes;
use tonic::metadata::MetadataMap;
use tonic::{Code, Status};

use crate::schema::SchemaError;

/// Why a snapshot could not be built from a compiled schema.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A registered handler's kind does not match the method's.
    #[error("handler for {path} is {handler} but the method is {method}")]
    KindMismatch {
        /// The method path.
        path: String,
        /// What the handler answers.
        handler: &'static str,
        /// What the method is.
        method: &'static str,
    },
    /// Building the snapshot panicked or was cancelled (a bug; the live schema is kept).
    #[error("building the snapshot failed: {0}")]
    Internal(#[source] tokio::task::JoinError),
}

/// Why protoserve could not start, or why a call failed.
pub struct Error(Box<Repr>);

#[derive(Debug)]
enum Repr {
    Schema(SchemaError),
    Build(BuildError),
    Data(String),
    /// Stubs that do not fit the schema (`check --stubs`): a content error, like a schema's.
    Stubs(String),
    Io {
        context: String,
        source: std::io::Error,
    },
    Call {
        kind: CallKind,
        message: String,
        details: Option<Bytes>,
    },
    /// A status a handler or layer chose; passed to the client unchanged.
    Status(Status),
}

/// What a failed call means to the client. Private: callers ask `is_*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallKind {
    NotFound,
    AlreadyExists,
    InvalidArgument,
    /// The request bytes are not a valid message of the input type.
    Malformed,
    /// A message over the size limit, either way.
    TooLarge,
    Unimplemented,
    DeadlineExceeded,
    Internal,
    /// No credentials, or credentials nobody knows.
    Unauthenticated,
}

impl Error {
    fn call(kind: CallKind, message: impl Into<String>) -> Self {
        Error(Box::new(Repr::Call { kind, message: message.into(), details: None }))
    }

    /// No such record (or other resource).
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::call(CallKind::NotFound, message)
    }

    /// A record with that key exists already.
    pub fn already_exists(message: impl Into<String>) -> Self {
        Self::call(CallKind::AlreadyExists, message)
    }

    /// The request is well-formed but not acceptable.
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::call(CallKind::InvalidArgument, message)
    }

    /// The same, with encoded `google.rpc.Status` details (e.g. a `BadRequest`).
    pub(crate) fn invalid_argument_with_details(message: impl Into<String>, details: Bytes) -> Self {
        Error(Box::new(Repr::Call { kind: CallKind::InvalidArgument, message: message.into(), details: Some(details) }))
    }

    /// Stubs with problems, rendered (`protoserve check --stubs`; exit code 1).
    pub(crate) fn stubs(report: impl Into<String>) -> Self {
        Error(Box::new(Repr::Stubs(report.into())))
    }

    /// A status chosen by configuration (a stub's error): any code, a message
    /// the encoded `google.rpc.Status` for `grpc-status-details-bin`, and metadata
    /// sent with the status (headers and trailers of a trailers-only response).
    pub(crate) fn with_code(
        code: Code,
        message: impl Into<String>,
        details: Option<Bytes>,
        metadata: MetadataMap,
    ) -> Self {
        let status = match details {
            Some(d) => Status::with_details_and_metadata(code, message, d, metadata),
            None => Status::with_metadata(code, message, metadata),
        };
        Error(Box::new(Repr::Status(status)))
    }

    /// The request bytes do not decode as the method's input type.
    pub fn malformed(message: impl Into<String>) -> Self {
        Self::call(CallKind::Malformed, message)
    }

    /// A message is larger than the configured limit.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::call(CallKind::TooLarge, message)
    }

    /// Nothing answers this method.
    pub fn unimplemented(message: impl Into<String>) -> Self {
        Self::call(CallKind::Unimplemented, message)
    }

    /// The call outlived its deadline.
    pub fn deadline_exceeded(message: impl Into<String>) -> Self {
        Self::call(CallKind::DeadlineExceeded, message)
    }

    /// The caller did not prove who it is (missing or unknown credentials).
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::call(CallKind::Unauthenticated, message)
    }

    /// A bug or an unexpected state on our side.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::call(CallKind::Internal, message)
    }

    /// The `--data` file is unreadable or holds a bad record.
    pub(crate) fn data(message: impl Into<String>) -> Self {
        Error(Box::new(Repr::Data(message.into())))
    }

    /// An I/O operation failed while `context`.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error(Box::new(Repr::Io { context: context.into(), source }))
    }

    /// The gRPC code [`Error::into_status`] answers this error with (for logs
    /// and metrics, which need the code without giving up the error).
    pub fn code(&self) -> Code {
        match &*self.0 {
            Repr::Status(s) => s.code(),
            Repr::Call { kind, .. } => kind.code(),
            _ => Code::Internal,
        }
    }

    fn kind(&self) -> Option<CallKind> {
        match &*self.0 {
            Repr::Call { kind, .. } => Some(*kind),
            _ => None,
        }
    }

    /// The schema did not compile (or could not be read).
    pub fn is_schema(&self) -> bool {
        matches!(&*self.0, Repr::Schema(_))
    }
    /// The compiled schema and the registered responders do not fit together.
    pub fn is_build(&self) -> bool {
        matches!(&*self.0, Repr::Build(_))
    }
    /// The `--data` file was refused.
    pub fn is_data(&self) -> bool {
        matches!(&*self.0, Repr::Data(_))
    }
    /// An I/O error (binding, writing a file).
    pub fn is_io(&self) -> bool {
        matches!(&*self.0, Repr::Io { .. }) || matches!(&*self.0, Repr::Schema(e) if e.is_io())
    }
    /// NOT_FOUND.
    pub fn is_not_found(&self) -> bool {
        self.kind() == Some(CallKind::NotFound)
    }
    /// ALREADY_EXISTS.
    pub fn is_already_exists(&self) -> bool {
        self.kind() == Some(CallKind::AlreadyExists)
    }
    /// INVALID_ARGUMENT.
    pub fn is_invalid_argument(&self) -> bool {
        self.kind() == Some(CallKind::InvalidArgument)
    }
    /// A request that does not decode.
    pub fn is_malformed(&self) -> bool {
        self.kind() == Some(CallKind::Malformed)
    }
    /// A message over the size limit.
    pub fn is_too_large(&self) -> bool {
        self.kind() == Some(CallKind::TooLarge)
    }
    /// A deadline passed.
    pub fn is_deadline_exceeded(&self) -> bool {
        self.kind() == Some(CallKind::DeadlineExceeded)
    }

    /// The schema error, when that is what this is.
    pub fn schema_error(&self) -> Option<&SchemaError> {
        match &*self.0 {
            Repr::Schema(e) => Some(e),
            _ => None,
        }
    }

    /// The process exit code for this error: 1 for schema errors, 2 for usage and I/O.
    pub fn exit_code(&self) -> i32 {
        match &*self.0 {
            Repr::Schema(e) if !e.is_io() => 1,
            Repr::Build(_) | Repr::Stubs(_) => 1,
            _ => 2,
        }
    }

    /// Renders the error like a compiler (file:line:col, source line, caret).
    pub fn render(&self) -> String {
        match (self.schema_error(), &*self.0) {
            (Some(e), _) => e.render(),
            // Already rendered as diagnostics, one per problem.
            (None, Repr::Stubs(report)) => report.clone(),
            (None, _) => crate::schema::render_diagnostic(self),
        }
    }

    /// **The** mapping from an error to a gRPC status. Every protocol adapter
    /// answers failures through this function, and no other code builds a
    /// status from an error.
    pub fn into_status(self) -> Status {
        match *self.0 {
            Repr::Status(s) => s,
            Repr::Call { kind, message, details } => {
                let code = kind.code();
                match details {
                    Some(d) => Status::with_details(code, message, d),
                    None => Status::new(code, message),
                }
            }
            other => Status::internal(Error(Box::new(other)).to_string()),
        }
    }
}

impl CallKind {
    fn code(self) -> Code {
        match self {
            CallKind::NotFound => Code::NotFound,
            CallKind::AlreadyExists => Code::AlreadyExists,
            CallKind::InvalidArgument => Code::InvalidArgument,
            // Per gRPC's status code guide, a message the server cannot parse is INTERNAL.
            CallKind::Malformed => Code::Internal,
            CallKind::TooLarge => Code::ResourceExhausted,
            CallKind::Unimplemented => Code::Unimplemented,
            CallKind::DeadlineExceeded => Code::DeadlineExceeded,
            CallKind::Internal => Code::Internal,
            CallKind::Unauthenticated => Code::Unauthenticated,
        }
    }
}

/// A handler's or layer's own status passes through unchanged.
impl From<Status> for Error {
    fn from(s: Status) -> Self {
        Error(Box::new(Repr::Status(s)))
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        e.into_status()
    }
}

impl From<SchemaError> for Error {
    fn from(e: SchemaError) -> Self {
        Error(Box::new(Repr::Schema(e)))
    }
}

impl From<BuildError> for Error {
    fn from(e: BuildError) -> Self {
        Error(Box::new(Repr::Build(e)))
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl Error {
    /// The message a client receives with the status (the request journal).
    pub(crate) fn status_message(&self) -> String {
        match &*self.0 {
            Repr::Status(s) => s.message().to_owned(),
            _ => self.to_string(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.0 {
            Repr::Schema(e) => fmt::Display::fmt(e, f),
            Repr::Build(e) => fmt::Display::fmt(e, f),
            Repr::Data(m) | Repr::Stubs(m) => f.write_str(m),
            Repr::Io { context, source } => write!(f, "{context}: {source}"),
            Repr::Call { message, .. } => f.write_str(message),
            Repr::Status(s) => write!(f, "{:?}: {}", s.code(), s.message()),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &*self.0 {
            Repr::Schema(e) => e.source(),
            Repr::Build(e) => e.source(),
            Repr::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Schema errors keep their compiler-style diagnostics; the rest are plain.
impl miette::Diagnostic for Error {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.schema_error().and_then(miette::Diagnostic::code)
    }
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.schema_error().and_then(miette::Diagnostic::help)
    }
    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.schema_error().and_then(miette::Diagnostic::source_code)
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = miette::LabeledSpan> + '_>> {
        self.schema_error().and_then(miette::Diagnostic::labels)
    }
    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn miette::Diagnostic> + 'a>> {
        self.schema_error().and_then(miette::Diagnostic::related)
    }
    fn diagnostic_source(&self) -> Option<&dyn miette::Diagnostic> {
        self.schema_error().and_then(miette::Diagnostic::diagnostic_source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_mapping_to_status() {
        assert_eq!(Error::not_found("x").into_status().code(), Code::NotFound);
        assert_eq!(Error::too_large("x").into_status().code(), Code::ResourceExhausted);
        assert_eq!(Error::malformed("x").into_status().code(), Code::Internal);
        // A handler's own status passes unchanged, whatever its message says.
        let s = Error::from(Status::out_of_range("page too large")).into_status();
        assert_eq!((s.code(), s.message()), (Code::OutOfRange, "page too large"));
        let d = Error::invalid_argument_with_details("bad", Bytes::from_static(b"\x08\x03"));
        assert_eq!(d.into_status().details(), b"\x08\x03");
    }
}
