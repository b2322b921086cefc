//! Wire-level fast paths for the resource store: read a key straight from the
//! request bytes, or build a record by re-tagging the request's fields, without
//! materialising and re-encoding dynamic messages.
//!
//! Only used for *flat* request types (scalars, strings, bytes, enums: no nested
//! messages or groups), where walking the bytes checks exactly what a full decode
//! would: the framing, the wire type of every known field, and UTF-8 in strings.

use prost::encoding::{DecodeContext, WireType, decode_key, decode_varint, encode_key, encode_varint, skip_field};
use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};

/// What a full decode would check for one known field number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Varint scalars and enums (packed repeated ones may also arrive length-delimited).
    Varint {
        packed_ok: bool,
    },
    Fixed32 {
        packed_ok: bool,
    },
    Fixed64 {
        packed_ok: bool,
    },
    /// `string`: length-delimited, valid UTF-8.
    Utf8,
    /// `bytes`.
    Bytes,
}

/// The known fields of a flat message type, by field number.
#[derive(Debug, Clone)]
pub(crate) struct FlatShape {
    fields: Vec<(u32, Expect)>,
}

impl FlatShape {
    /// `None` when the message has message-, group- or map-typed fields.
    pub(crate) fn of(msg: &MessageDescriptor) -> Option<FlatShape> {
        let mut fields = Vec::new();
        for f in msg.fields() {
            let packed_ok = f.is_list();
            let expect = match f.kind() {
                Kind::String => Expect::Utf8,
                Kind::Bytes => Expect::Bytes,
                Kind::Message(_) => return None,
                Kind::Fixed32 | Kind::Sfixed32 | Kind::Float => Expect::Fixed32 { packed_ok },
                Kind::Fixed64 | Kind::Sfixed64 | Kind::Double => Expect::Fixed64 { packed_ok },
                _ => Expect::Varint { packed_ok },
            };
            if f.is_group() {
                return None;
            }
            fields.push((f.number(), expect));
        }
        Some(FlatShape { fields })
    }

    fn expect(&self, number: u32) -> Option<Expect> {
        self.fields.iter().find(|(n, _)| *n == number).map(|(_, e)| *e)
    }
}

/// One field occurrence in a message's bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Field<'a> {
    pub(crate) number: u32,
    pub(crate) wire_type: WireType,
    /// Everything after the key: the varint, the fixed bytes, or length + payload.
    pub(crate) after_key: &'a [u8],
    /// The varint value, for varint fields.
    pub(crate) varint: u64,
    /// The payload of a length-delimited field.
    pub(crate) payload: &'a [u8],
}

/// Walks every field of a flat message, checking what a decode would check.
pub(crate) fn walk<'a>(raw: &'a [u8], shape: &FlatShape, mut each: impl FnMut(Field<'a>)) -> Result<(), String> {
    let mut buf = raw;
    while !buf.is_empty() {
        let (number, wire_type) = decode_key(&mut buf).map_err(|e| e.to_string())?;
        let start = raw.len() - buf.len();
        let mut varint = 0;
        let mut payload: &[u8] = &[];
        match wire_type {
            WireType::Varint => varint = decode_varint(&mut buf).map_err(|e| e.to_string())?,
            WireType::LengthDelimited => {
                let len = decode_varint(&mut buf).map_err(|e| e.to_string())?;
                let len = usize::try_from(len).ok().filter(|l| *l <= buf.len()).ok_or("buffer underflow")?;
                payload = &buf[..len];
                buf = &buf[len..];
            }
            WireType::ThirtyTwoBit | WireType::SixtyFourBit | WireType::StartGroup | WireType::EndGroup => {
                skip_field(wire_type, number, &mut buf, DecodeContext::default()).map_err(|e| e.to_string())?;
            }
        }
        let end = raw.len() - buf.len();
        if let Some(expect) = shape.expect(number) {
            let ok = match (expect, wire_type) {
                (Expect::Varint { .. }, WireType::Varint) => true,
                (Expect::Fixed32 { .. }, WireType::ThirtyTwoBit) => true,
                (Expect::Fixed64 { .. }, WireType::SixtyFourBit) => true,
                (Expect::Bytes, WireType::LengthDelimited) => true,
                (Expect::Varint { packed_ok: true }, WireType::LengthDelimited) => {
                    let mut packed = payload;
                    while !packed.is_empty() {
                        decode_varint(&mut packed).map_err(|e| format!("field {number}: {e}"))?;
                    }
                    true
                }
                (Expect::Fixed32 { packed_ok: true }, WireType::LengthDelimited) => payload.len().is_multiple_of(4),
                (Expect::Fixed64 { packed_ok: true }, WireType::LengthDelimited) => payload.len().is_multiple_of(8),
                (Expect::Utf8, WireType::LengthDelimited) => {
                    std::str::from_utf8(payload).map_err(|_| format!("field {number}: invalid UTF-8 in a string"))?;
                    true
                }
                _ => false,
            };
            if !ok {
                return Err(format!("field {number}: unexpected wire type {wire_type:?}"));
            }
        }
        each(Field { number, wire_type, after_key: &raw[start..end], varint, payload });
    }
    Ok(())
}

/// A key field's value, formatted as the store indexes it.
pub(crate) fn key_of(field: &FieldDescriptor, f: &Field<'_>) -> String {
    match field.kind() {
        Kind::String => String::from_utf8_lossy(f.payload).into_owned(),
        Kind::Int32 => (f.varint as i32).to_string(),
        Kind::Int64 => (f.varint as i64).to_string(),
        Kind::Uint32 => (f.varint as u32).to_string(),
        _ => f.varint.to_string(),
    }
}

/// Appends a field occurrence under another field number.
pub(crate) fn put_retagged(out: &mut Vec<u8>, number: u32, f: &Field<'_>) {
    encode_key(number, f.wire_type, out);
    out.extend_from_slice(f.after_key);
}

/// Appends a string field.
pub(crate) fn put_string(out: &mut Vec<u8>, number: u32, s: &str) {
    encode_key(number, WireType::LengthDelimited, out);
    encode_varint(s.len() as u64, out);
    out.extend_from_slice(s.as_bytes());
}

/// Appends a varint field.
pub(crate) fn put_varint(out: &mut Vec<u8>, number: u32, v: u64) {
    encode_key(number, WireType::Varint, out);
    encode_varint(v, out);
}

/// Appends a `google.protobuf.Timestamp` field.
pub(crate) fn put_timestamp(out: &mut Vec<u8>, number: u32, secs: i64, nanos: i32) {
    let mut inner = Vec::with_capacity(16);
    if secs != 0 {
        put_varint(&mut inner, 1, secs as u64);
    }
    if nanos != 0 {
        put_varint(&mut inner, 2, nanos as i64 as u64);
    }
    encode_key(number, WireType::LengthDelimited, out);
    encode_varint(inner.len() as u64, out);
    out.extend_from_slice(&inner);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> FlatShape {
        FlatShape { fields: vec![(1, Expect::Utf8), (2, Expect::Varint { packed_ok: false })] }
    }

    #[test]
    fn walks_and_checks_like_a_decode() {
        let mut raw = Vec::new();
        put_string(&mut raw, 1, "héllo");
        put_varint(&mut raw, 2, 42);
        put_varint(&mut raw, 9, 7); // unknown: any wire type is fine
        let mut seen = Vec::new();
        walk(&raw, &shape(), |f| seen.push((f.number, f.varint, f.payload.to_vec()))).unwrap();
        assert_eq!(seen, vec![(1, 0, "héllo".as_bytes().to_vec()), (2, 42, vec![]), (9, 7, vec![])]);

        assert!(walk(&[0x0a, 100, b'a'], &shape(), |_| {}).is_err(), "truncated");
        assert!(walk(&[0x0a, 1, 0xff], &shape(), |_| {}).is_err(), "bad UTF-8");
        assert!(walk(&[0x10 | 2, 0], &shape(), |_| {}).is_err(), "wrong wire type for field 2");
        assert!(walk(&[0x0c], &shape(), |_| {}).is_err(), "stray end-group");

        // Packed repeated fields: their contents are checked too.
        let packed = FlatShape {
            fields: vec![(3, Expect::Varint { packed_ok: true }), (4, Expect::Fixed32 { packed_ok: true })],
        };
        assert!(walk(&[0x1a, 2, 1, 2], &packed, |_| {}).is_ok());
        assert!(walk(&[0x1a, 1, 0x80], &packed, |_| {}).is_err(), "truncated varint inside packed");
        assert!(walk(&[0x22, 3, 0, 0, 0], &packed, |_| {}).is_err(), "packed fixed32 not a multiple of 4");
    }

    #[test]
    fn retags_fields() {
        let mut raw = Vec::new();
        put_string(&mut raw, 1, "x");
        let mut out = Vec::new();
        walk(&raw, &shape(), |f| put_retagged(&mut out, 5, &f)).unwrap();
        let mut expect = Vec::new();
        put_string(&mut expect, 5, "x");
        assert_eq!(out, expect);
    }
}
