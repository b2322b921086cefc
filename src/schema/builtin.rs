//! `google/api/*`, `google/rpc/*` and `google/type/*` resolve without vendoring,
//! like the well-known types. The files under `builtin/` were written for
//! protoserve from the published message, field and extension numbers; files on
//! the include paths win over them (a vendored googleapis tree is used as is).

use protox::file::{File, FileResolver};

/// Every built-in file: (import name, text).
pub const FILES: &[(&str, &str)] = &[
    ("google/api/annotations.proto", include_str!("builtin/google/api/annotations.proto")),
    ("google/api/client.proto", include_str!("builtin/google/api/client.proto")),
    ("google/api/field_behavior.proto", include_str!("builtin/google/api/field_behavior.proto")),
    ("google/api/http.proto", include_str!("builtin/google/api/http.proto")),
    ("google/api/resource.proto", include_str!("builtin/google/api/resource.proto")),
    ("google/rpc/code.proto", include_str!("builtin/google/rpc/code.proto")),
    ("google/rpc/error_details.proto", include_str!("builtin/google/rpc/error_details.proto")),
    ("google/rpc/status.proto", include_str!("builtin/google/rpc/status.proto")),
    ("google/type/calendar_period.proto", include_str!("builtin/google/type/calendar_period.proto")),
    ("google/type/color.proto", include_str!("builtin/google/type/color.proto")),
    ("google/type/date.proto", include_str!("builtin/google/type/date.proto")),
    ("google/type/datetime.proto", include_str!("builtin/google/type/datetime.proto")),
    ("google/type/dayofweek.proto", include_str!("builtin/google/type/dayofweek.proto")),
    ("google/type/decimal.proto", include_str!("builtin/google/type/decimal.proto")),
    ("google/type/expr.proto", include_str!("builtin/google/type/expr.proto")),
    ("google/type/fraction.proto", include_str!("builtin/google/type/fraction.proto")),
    ("google/type/interval.proto", include_str!("builtin/google/type/interval.proto")),
    ("google/type/latlng.proto", include_str!("builtin/google/type/latlng.proto")),
    ("google/type/localized_text.proto", include_str!("builtin/google/type/localized_text.proto")),
    ("google/type/money.proto", include_str!("builtin/google/type/money.proto")),
    ("google/type/month.proto", include_str!("builtin/google/type/month.proto")),
    ("google/type/phone_number.proto", include_str!("builtin/google/type/phone_number.proto")),
    ("google/type/postal_address.proto", include_str!("builtin/google/type/postal_address.proto")),
    ("google/type/quaternion.proto", include_str!("builtin/google/type/quaternion.proto")),
    ("google/type/timeofday.proto", include_str!("builtin/google/type/timeofday.proto")),
];

/// Files added to every pool (as imports, not served), so reflection can describe
/// the error details protoserve sends (`google.rpc.BadRequest` in `grpc-status-details-bin`).
pub const ALWAYS: &[&str] = &["google/rpc/status.proto", "google/rpc/error_details.proto"];

/// Resolves the built-in files by name.
#[derive(Debug, Default)]
pub(crate) struct BuiltinResolver;

impl FileResolver for BuiltinResolver {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        // Parsed once per process; every compile gets a copy.
        static PARSED: std::sync::OnceLock<Vec<Option<File>>> = std::sync::OnceLock::new();
        let parsed = PARSED.get_or_init(|| FILES.iter().map(|(n, text)| File::from_source(n, text).ok()).collect());
        match FILES.iter().position(|(n, _)| *n == name) {
            Some(i) => match &parsed[i] {
                Some(file) => Ok(file.clone()),
                // Not reached (a test compiles every built-in file), but report it if so.
                None => File::from_source(FILES[i].0, FILES[i].1),
            },
            None => Err(protox::Error::file_not_found(name)),
        }
    }
}
