//! Source code info kept apart from the served pool. protox's pool holds every
//! source location (path, span, comments) as decoded structs, about half of the
//! pool's memory; the served pool is decoded without them, and each file's
//! `SourceCodeInfo` is kept encoded (a tenth of the size), decoded only when
//! something asks (compat findings' locations, reflection's comments,
//! `--descriptor-set-out`). The work is done on the encoded descriptor set, so
//! extension options (`buf.validate` rules, `google.api.http`) survive untouched.

use std::collections::HashMap;

use bytes::Bytes;
use prost::encoding::{decode_varint, encode_varint};

/// `FileDescriptorSet.file`.
const SET_FILE: u64 = 1;
/// `FileDescriptorProto.name`, `.service`, `.source_code_info`.
const FILE_NAME: u64 = 1;
const FILE_SERVICE: u64 = 6;
const FILE_SOURCE_INFO: u64 = 9;
const LEN: u64 = 2;

/// Encoded `SourceCodeInfo` by file name.
pub(crate) type Sources = HashMap<String, Bytes>;

/// A descriptor set split by [`split`]: the set without source info, and each
/// file's encoded source info as a range of one buffer.
#[derive(Debug, Default)]
pub(crate) struct Split {
    pub(crate) bare: Vec<u8>,
    blob: Vec<u8>,
    index: Vec<(String, std::ops::Range<usize>)>,
}

impl Split {
    /// A set kept whole, source info included (no split).
    pub(crate) fn whole(set: Vec<u8>) -> Self {
        Self { bare: set, ..Default::default() }
    }

    /// The source info by file, copied into allocations of the calling thread.
    pub(crate) fn sources(&self) -> Sources {
        let blob = Bytes::copy_from_slice(&self.blob);
        self.index.iter().map(|(name, range)| (name.as_str().to_owned(), blob.slice(range.clone()))).collect()
    }
}

/// An encoded descriptor set without source info (and without the services of
/// the files `drop_services` names), and the source info it had, by file.
/// `None` if `set` is not a well-formed descriptor set.
pub(crate) fn split(set: &[u8], drop_services: impl Fn(&str) -> bool) -> Option<Split> {
    let mut out = Vec::with_capacity(set.len() / 2);
    let (mut blob, mut index) = (Vec::new(), Vec::new());
    let mut rest = set;
    let mut kept = Vec::new();
    while !rest.is_empty() {
        let (key, whole, body) = field(&mut rest)?;
        if key != (SET_FILE << 3 | LEN) {
            out.extend_from_slice(whole);
            continue;
        }
        let (mut name, mut info, mut file) = (None, None, body);
        kept.clear();
        while !file.is_empty() {
            let (key, whole, body) = field(&mut file)?;
            match key {
                k if k == FILE_NAME << 3 | LEN => {
                    name = Some(std::str::from_utf8(body).ok()?);
                    kept.push(whole);
                }
                k if k == FILE_SOURCE_INFO << 3 | LEN => info = Some(body),
                _ => kept.push(whole),
            }
        }
        let name = name?;
        let drop = drop_services(name);
        let service = FILE_SERVICE << 3 | LEN;
        let kept: Vec<&[u8]> = kept.iter().copied().filter(|f| !drop || first_key(f) != Some(service)).collect();
        encode_varint(SET_FILE << 3 | LEN, &mut out);
        encode_varint(kept.iter().map(|f| f.len()).sum::<usize>() as u64, &mut out);
        kept.iter().for_each(|f| out.extend_from_slice(f));
        if let Some(info) = info {
            index.push((name.to_owned(), blob.len()..blob.len() + info.len()));
            blob.extend_from_slice(info);
        }
    }
    Some(Split { bare: out, blob, index })
}

/// `set` (as [`split`] made it) with each file's source info put back.
pub(crate) fn join(set: &[u8], sources: &Sources) -> Option<Vec<u8>> {
    let extra: usize = sources.values().map(|b| b.len() + 12).sum();
    let mut out = Vec::with_capacity(set.len() + extra);
    let mut rest = set;
    while !rest.is_empty() {
        let (key, whole, body) = field(&mut rest)?;
        if key != (SET_FILE << 3 | LEN) {
            out.extend_from_slice(whole);
            continue;
        }
        let mut file = body;
        let mut name = None;
        while !file.is_empty() {
            let (key, _, body) = field(&mut file)?;
            if key == FILE_NAME << 3 | LEN {
                name = std::str::from_utf8(body).ok();
            }
        }
        let Some(info) = name.and_then(|n| sources.get(n)) else {
            out.extend_from_slice(whole);
            continue;
        };
        let mut tail = Vec::with_capacity(info.len() + 6);
        encode_varint(FILE_SOURCE_INFO << 3 | LEN, &mut tail);
        encode_varint(info.len() as u64, &mut tail);
        tail.extend_from_slice(info);
        encode_varint(SET_FILE << 3 | LEN, &mut out);
        encode_varint((body.len() + tail.len()) as u64, &mut out);
        out.extend_from_slice(body);
        out.extend_from_slice(&tail);
    }
    Some(out)
}

/// The key of the field `bytes` starts with.
fn first_key(mut bytes: &[u8]) -> Option<u64> {
    decode_varint(&mut bytes).ok()
}

/// Reads one field from `buf`: its key, the whole field's bytes (key included)
/// and, for length-delimited fields, the payload. Groups are not expected in
/// descriptors: `None`.
fn field<'a>(buf: &mut &'a [u8]) -> Option<(u64, &'a [u8], &'a [u8])> {
    let start = *buf;
    let key = decode_varint(buf).ok()?;
    let body: &[u8] = match key & 7 {
        0 => {
            decode_varint(buf).ok()?;
            &[]
        }
        1 => {
            *buf = buf.get(8..)?;
            &[]
        }
        2 => {
            let len = usize::try_from(decode_varint(buf).ok()?).ok()?;
            let body = buf.get(..len)?;
            *buf = &buf[len..];
            body
        }
        5 => {
            *buf = buf.get(4..)?;
            &[]
        }
        _ => return None,
    };
    let whole = &start[..start.len() - buf.len()];
    Some((key, whole, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    fn set() -> prost_types::FileDescriptorSet {
        let loc = |path: Vec<i32>, line| prost_types::source_code_info::Location {
            path,
            span: vec![line, 2, 9],
            leading_comments: Some(" a comment\n".into()),
            ..Default::default()
        };
        let file = |name: &str, svc: bool| prost_types::FileDescriptorProto {
            name: Some(name.into()),
            package: Some("p".into()),
            service: if svc {
                vec![prost_types::ServiceDescriptorProto { name: Some("S".into()), ..Default::default() }]
            } else {
                vec![]
            },
            source_code_info: Some(prost_types::SourceCodeInfo { location: vec![loc(vec![2], 1), loc(vec![6, 0], 4)] }),
            ..Default::default()
        };
        prost_types::FileDescriptorSet { file: vec![file("a.proto", true), file("b.proto", true)] }
    }

    #[test]
    fn split_then_join_gives_back_the_same_set() {
        let original = set();
        let split = split(&original.encode_to_vec(), |_| false).unwrap();
        let (stripped, sources) = (&split.bare, split.sources());
        let bare = prost_types::FileDescriptorSet::decode(stripped.as_slice()).unwrap();
        assert!(bare.file.iter().all(|f| f.source_code_info.is_none() && f.service.len() == 1));
        assert_eq!(sources.len(), 2);
        let joined = prost_types::FileDescriptorSet::decode(join(stripped, &sources).unwrap().as_slice()).unwrap();
        assert_eq!(joined, original);
    }

    #[test]
    fn services_of_named_files_are_dropped() {
        let split = split(&set().encode_to_vec(), |n| n == "b.proto").unwrap();
        let bare = prost_types::FileDescriptorSet::decode(split.bare.as_slice()).unwrap();
        assert_eq!(bare.file.iter().map(|f| f.service.len()).collect::<Vec<_>>(), [1, 0]);
    }

    #[test]
    fn malformed_input_is_refused_not_a_panic() {
        let good = set().encode_to_vec();
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..2000 {
            let mut bytes = good.clone();
            for _ in 0..rng.usize(1..4) {
                let i = rng.usize(..bytes.len());
                bytes[i] = rng.u8(..);
            }
            bytes.truncate(rng.usize(..=bytes.len()));
            if let Some(split) = split(&bytes, |_| false) {
                let _ = join(&split.bare, &split.sources());
            }
        }
    }
}
