//! Source positions: maps a descriptor path (as in `SourceCodeInfo`) to a
//! 1-based [`Location`], through an index built once per file.

use std::collections::HashMap;

use prost_reflect::FileDescriptor;

use super::finding::Location;

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

/// Start positions (0-based line, column) by source path, for one file.
type Spans = HashMap<Vec<i32>, (i32, i32)>;

/// The source positions of one pool's files, each file indexed the first time
/// it is asked about, so a lookup is a few hash probes instead of a scan of every
/// location in the file.
#[derive(Default)]
pub(super) struct SourceIndex<'a> {
    /// `None` for files without source info.
    files: HashMap<String, Option<Spans>>,
    /// Source info kept apart from the pool, for files whose descriptors have none.
    apart: Option<super::SourceInfo<'a>>,
}

impl std::fmt::Debug for SourceIndex<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceIndex").field("files", &self.files.len()).finish_non_exhaustive()
    }
}

impl<'a> SourceIndex<'a> {
    /// An index that finds source info in the pool's files, else in `apart`.
    pub(super) fn new(apart: Option<super::SourceInfo<'a>>) -> Self {
        Self { files: HashMap::new(), apart }
    }

    /// The location of `path` in `file`; when that exact path has no entry, the
    /// closest enclosing element that has one, and the file's start when none
    /// does. `None` without source info.
    pub(super) fn locate(&mut self, file: &FileDescriptor, path: &[i32]) -> Option<Location> {
        let apart = self.apart;
        let spans = self.files.entry(file.name().to_owned()).or_insert_with(|| index(file, apart)).as_ref()?;
        let (line, column) = (0..=path.len()).rev().find_map(|len| spans.get(&path[..len]).copied()).unwrap_or((0, 0));
        Some(Location {
            file: file.name().to_owned(),
            line: u32::try_from(line).ok()?.saturating_add(1),
            column: u32::try_from(column).ok()?.saturating_add(1),
        })
    }
}

fn index(file: &FileDescriptor, apart: Option<super::SourceInfo<'_>>) -> Option<Spans> {
    let own = file.file_descriptor_proto().source_code_info.as_ref();
    let kept;
    let info = match own {
        Some(info) => info,
        None => {
            kept = apart.and_then(|f| f(file.name()))?;
            &kept
        }
    };
    let mut spans = Spans::with_capacity(info.location.len());
    for loc in &info.location {
        if let (Some(&line), Some(&column)) = (loc.span.first(), loc.span.get(1)) {
            // The first entry for a path wins, as a linear search would find it.
            spans.entry(loc.path.clone()).or_insert((line, column));
        }
    }
    Some(spans)
}

/// `base` followed by `extra`.
pub(super) fn join(base: &[i32], extra: &[i32]) -> Vec<i32> {
    let mut v = base.to_vec();
    v.extend_from_slice(extra);
    v
}
