//! Source positions: maps a descriptor path (as in `SourceCodeInfo`) to a
//! 1-based [`Location`].

use prost_reflect::FileDescriptor;

use super::Location;

// Field numbers inside descriptor.proto, used to extend element paths.
pub(super) const FILE_PACKAGE: i32 = 2;
pub(super) const FIELD_NAME: i32 = 1;
pub(super) const FIELD_NUMBER: i32 = 3;
pub(super) const FIELD_TYPE: i32 = 5;
pub(super) const FIELD_TYPE_NAME: i32 = 6;
pub(super) const FIELD_DEFAULT: i32 = 7;
pub(super) const FIELD_JSON_NAME: i32 = 10;
pub(super) const MESSAGE_RESERVED_RANGE: i32 = 9;
pub(super) const MESSAGE_RESERVED_NAME: i32 = 10;
pub(super) const ENUM_VALUE_NUMBER: i32 = 2;
pub(super) const ENUM_RESERVED_RANGE: i32 = 4;
pub(super) const ENUM_RESERVED_NAME: i32 = 5;
pub(super) const METHOD_INPUT: i32 = 2;
pub(super) const METHOD_OUTPUT: i32 = 3;
pub(super) const METHOD_OPTIONS: i32 = 4;

/// The location of `path` in `file`; when that exact path has no entry, the closest
/// enclosing element that has one. `None` without source info.
pub(super) fn locate(file: &FileDescriptor, path: &[i32]) -> Option<Location> {
    let info = file.file_descriptor_proto().source_code_info.as_ref()?;
    let mut len = path.len();
    loop {
        let prefix = &path[..len];
        if let Some(loc) = info.location.iter().find(|l| l.path == prefix) {
            let line = loc.span.first().copied()?;
            let column = loc.span.get(1).copied()?;
            return Some(Location {
                file: file.name().to_owned(),
                line: u32::try_from(line).ok()?.saturating_add(1),
                column: u32::try_from(column).ok()?.saturating_add(1),
            });
        }
        if len == 0 {
            return None;
        }
        len -= 1;
    }
}

/// `base` followed by `extra`.
pub(super) fn join(base: &[i32], extra: &[i32]) -> Vec<i32> {
    let mut v = base.to_vec();
    v.extend_from_slice(extra);
    v
}
