//! Our Parquet tables through a second, independent reader: the footer decoded here byte by
//! byte (Thrift compact protocol, then the embedded Arrow schema's flatbuffer), as an old
//! reader would see it. String columns must be plain: Parquet BYTE_ARRAY with the UTF8/STRING
//! annotation, and Arrow `utf8` in the embedded schema (never `string_view` or
//! `large_string`, which Arrow < 15 and the pandas built on it do not know).

use fragility::metric::Direction;
use fragility::report::{summarize, write_samples, write_summary, SampleRow, SampleTable};
use std::collections::BTreeMap;
use std::path::Path;

/// A Thrift compact-protocol value (the subset Parquet's footer uses).
#[derive(Debug, Clone)]
enum Thrift {
    Int(i64),
    Bool,
    Bytes(Vec<u8>),
    List(Vec<Thrift>),
    Struct(BTreeMap<i16, Thrift>),
    Other,
}

struct Cursor<'a> {
    b: &'a [u8],
    p: usize,
}

impl Cursor<'_> {
    fn byte(&mut self) -> u8 {
        self.p += 1;
        self.b[self.p - 1]
    }
    fn varint(&mut self) -> u64 {
        let (mut v, mut shift) = (0u64, 0);
        loop {
            let b = self.byte();
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return v;
            }
            shift += 7;
        }
    }
    fn zigzag(&mut self) -> i64 {
        let v = self.varint();
        (v >> 1) as i64 ^ -((v & 1) as i64)
    }
    fn value(&mut self, kind: u8) -> Thrift {
        match kind {
            1 | 2 => Thrift::Bool,
            3 => Thrift::Int(self.byte() as i8 as i64),
            4..=6 => Thrift::Int(self.zigzag()),
            7 => {
                self.p += 8;
                Thrift::Other
            }
            8 => {
                let n = self.varint() as usize;
                self.p += n;
                Thrift::Bytes(self.b[self.p - n..self.p].to_vec())
            }
            9 | 10 => {
                let h = self.byte();
                let n = if h >> 4 == 15 { self.varint() as usize } else { (h >> 4) as usize };
                // Booleans in a list are one byte each (1 true, 2 false).
                Thrift::List(
                    (0..n)
                        .map(|_| {
                            if h & 15 == 1 {
                                self.p += 1;
                                Thrift::Bool
                            } else {
                                self.value(h & 15)
                            }
                        })
                        .collect(),
                )
            }
            11 => {
                let n = self.varint() as usize;
                if n > 0 {
                    let kv = self.byte();
                    for _ in 0..n {
                        self.value(kv >> 4);
                        self.value(kv & 15);
                    }
                }
                Thrift::Other
            }
            12 => {
                let mut fields = BTreeMap::new();
                let mut id = 0i16;
                loop {
                    let h = self.byte();
                    if h == 0 {
                        return Thrift::Struct(fields);
                    }
                    id = if h >> 4 == 0 { self.zigzag() as i16 } else { id + (h >> 4) as i16 };
                    fields.insert(id, self.value(h & 15));
                }
            }
            k => panic!("thrift type {k} at byte {}", self.p),
        }
    }
}

impl Thrift {
    fn field(&self, id: i16) -> Option<&Thrift> {
        match self {
            Thrift::Struct(f) => f.get(&id),
            _ => None,
        }
    }
    fn int(&self, id: i16) -> Option<i64> {
        match self.field(id)? {
            Thrift::Int(v) => Some(*v),
            _ => None,
        }
    }
    fn text(&self, id: i16) -> String {
        match self.field(id) {
            Some(Thrift::Bytes(b)) => String::from_utf8(b.clone()).unwrap(),
            other => panic!("field {id}: {other:?}"),
        }
    }
    fn list(&self, id: i16) -> &[Thrift] {
        match self.field(id) {
            Some(Thrift::List(l)) => l,
            other => panic!("field {id}: {other:?}"),
        }
    }
}

/// The Parquet footer (FileMetaData) of `path`.
fn footer(path: &Path) -> Thrift {
    let b = std::fs::read(path).unwrap();
    assert_eq!(&b[..4], b"PAR1");
    assert_eq!(&b[b.len() - 4..], b"PAR1");
    let n = u32::from_le_bytes(b[b.len() - 8..b.len() - 4].try_into().unwrap()) as usize;
    let start = b.len() - 8 - n;
    let mut c = Cursor { b: &b[start..b.len() - 8], p: 0 };
    c.value(12)
}

fn base64(text: &str) -> Vec<u8> {
    let digit = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let digits: Vec<u8> = text.bytes().filter(|&c| c != b'=').map(digit).collect();
    let mut out = Vec::new();
    for chunk in digits.chunks(4) {
        let v = chunk.iter().enumerate().fold(0u32, |v, (i, &d)| v | u32::from(d) << (18 - 6 * i));
        out.extend(&v.to_be_bytes()[1..chunk.len()]);
    }
    out
}

/// Flatbuffer access: the position of field `i` of the table at `t`, if present.
fn fb_field(b: &[u8], t: usize, i: usize) -> Option<usize> {
    let u16_at = |p: usize| u16::from_le_bytes([b[p], b[p + 1]]) as usize;
    let vtable = (t as i64 - i32::from_le_bytes(b[t..t + 4].try_into().unwrap()) as i64) as usize;
    let slot = 4 + 2 * i;
    (slot < u16_at(vtable)).then(|| u16_at(vtable + slot)).filter(|&o| o > 0).map(|o| t + o)
}

fn fb_deref(b: &[u8], p: usize) -> usize {
    p + u32::from_le_bytes(b[p..p + 4].try_into().unwrap()) as usize
}

/// (name, Arrow `Type` union tag) of every top-level field of an `ARROW:schema` value
/// (an IPC message: 0xFFFFFFFF, length, then a flatbuffer `Message` whose header is a `Schema`).
fn arrow_fields(value: &str) -> Vec<(String, u8)> {
    let raw = base64(value);
    assert_eq!(&raw[..4], &[0xff; 4]);
    let b = &raw[8..];
    let message = fb_deref(b, 0);
    assert_eq!(b[fb_field(b, message, 1).unwrap()], 1, "the message is a Schema");
    let schema = fb_deref(b, fb_field(b, message, 2).unwrap());
    let fields = fb_deref(b, fb_field(b, schema, 1).unwrap());
    let n = u32::from_le_bytes(b[fields..fields + 4].try_into().unwrap()) as usize;
    (0..n)
        .map(|i| {
            let f = fb_deref(b, fields + 4 + 4 * i);
            let name = fb_deref(b, fb_field(b, f, 0).unwrap());
            let len = u32::from_le_bytes(b[name..name + 4].try_into().unwrap()) as usize;
            let name = String::from_utf8(b[name + 4..name + 4 + len].to_vec()).unwrap();
            (name, b[fb_field(b, f, 2).unwrap()])
        })
        .collect()
}

// Arrow's `Type` union tags (format/Schema.fbs).
const ARROW_FLOATING_POINT: u8 = 3;
const ARROW_UTF8: u8 = 5;
// Parquet's physical type BYTE_ARRAY and converted type UTF8 (parquet.thrift).
const PARQUET_BYTE_ARRAY: i64 = 6;
const PARQUET_UTF8: i64 = 0;

/// Checks every string column of the table at `path`, and that the decoding is right on a
/// float column; returns the footer's row count.
fn check_plain_strings(path: &Path, strings: &[&str], float: &str) -> i64 {
    let meta = footer(path);
    let schema = meta.list(2);
    for name in strings {
        let e = schema[1..].iter().find(|e| e.text(4) == *name).unwrap_or_else(|| panic!("no column {name}"));
        assert_eq!(e.int(1), Some(PARQUET_BYTE_ARRAY), "{name}: physical type");
        assert_eq!(e.int(6), Some(PARQUET_UTF8), "{name}: converted type");
        // LogicalType is a union; STRING is its field 1.
        assert!(e.field(10).and_then(|l| l.field(1)).is_some(), "{name}: logical type STRING");
    }
    let arrow =
        meta.list(5).iter().find(|kv| kv.text(1) == "ARROW:schema").expect("an embedded Arrow schema");
    let fields = arrow_fields(&arrow.text(2));
    assert_eq!(fields.len(), schema.len() - 1, "{fields:?}");
    for (name, tag) in &fields {
        if strings.contains(&name.as_str()) {
            assert_eq!(
                *tag, ARROW_UTF8,
                "{name}: Arrow type tag {tag} (24 = string_view, 20 = large_string)"
            );
        }
    }
    let tag = fields.iter().find(|(n, _)| n == float).map(|f| f.1);
    assert_eq!(tag, Some(ARROW_FLOATING_POINT), "{float}");
    meta.int(3).unwrap()
}

#[test]
fn string_columns_are_plain_utf8_for_older_readers() {
    let dir = tempfile::tempdir().unwrap();
    let row = |method: &str, attack: &str, target: Option<&str>, v: f64| SampleRow {
        model: String::new(),
        image_id: 7,
        label: 1,
        predicted: 1,
        method: method.into(),
        attack: attack.into(),
        target_method: target.map(Into::into),
        epsilon: 0.1,
        label_kept: true,
        iterations: 3,
        linf: 0.1,
        confidence_before: 0.9,
        confidence_after: 0.8,
        metrics: vec![Some(v)],
    };
    let table = SampleTable {
        model_metrics: Vec::new(),
        metric_columns: vec!["spearman".into()],
        directions: vec![Direction::HigherIsMoreSimilar],
        rows: vec![
            row("gradient", "top_k", Some("gradient"), 0.5),
            row("gradient", "random_sign", None, 0.7),
            row("smoothgrad", "top_k", Some("gradient"), 0.6),
        ],
        seed: 0,
        images: Default::default(),
        study: None,
    };
    let samples = dir.path().join("samples.parquet");
    write_samples(&samples, &table).unwrap();
    assert_eq!(check_plain_strings(&samples, &["method", "attack", "target_method"], "spearman"), 3);
    let summary = dir.path().join("summary.parquet");
    let rows = summarize(&table);
    write_summary(&summary, &rows, None).unwrap();
    let n = check_plain_strings(&summary, &["method", "attack", "target_method", "metric"], "mean");
    assert_eq!(n, rows.len() as i64);
    // The file-level metadata our own reader needs stays next to the schema.
    let keys: Vec<String> = footer(&samples).list(5).iter().map(|kv| kv.text(1)).collect();
    assert!(keys.contains(&"fragility.direction.spearman".to_string()), "{keys:?}");
}
