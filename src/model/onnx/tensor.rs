//! Constant tensors of an ONNX file (initializers, `Constant` nodes) decoded into numbers.
//!
//! Every size is checked before it is used: the element count is the product of the declared
//! dimensions (overflow-checked), and it must equal what the stored data holds, so a file that
//! declares a 10¹² element tensor with 16 bytes of data is refused without allocating.
//! Floating types (float32, float16, bfloat16, float64) become f32, integer types i64.

use super::proto::TensorProto;
pub use crate::model::mapping::{Const, Values};

/// The ONNX element type names, for messages.
fn type_name(t: i32) -> String {
    let name = match t {
        1 => "float",
        2 => "uint8",
        3 => "int8",
        4 => "uint16",
        5 => "int16",
        6 => "int32",
        7 => "int64",
        8 => "string",
        9 => "bool",
        10 => "float16",
        11 => "double",
        12 => "uint32",
        13 => "uint64",
        16 => "bfloat16",
        _ => return format!("type {t}"),
    };
    name.to_string()
}

/// IEEE half precision bits to f32.
fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = u32::from((h >> 10) & 0x1f);
    let frac = u32::from(h & 0x3ff);
    let bits = match (exp, frac) {
        (0, 0) => sign,
        // Subnormal: value = frac · 2⁻²⁴.
        (0, f) => return (if sign != 0 { -1.0 } else { 1.0 }) * f as f32 * (-24f32).exp2(),
        (0x1f, 0) => sign | 0x7f80_0000,
        (0x1f, f) => sign | 0x7f80_0000 | (f << 13),
        (e, f) => sign | ((e + 112) << 23) | (f << 13),
    };
    f32::from_bits(bits)
}

/// The bytes one element of `data_type` takes in raw storage.
pub fn width(data_type: i32) -> Result<usize, String> {
    Ok(match data_type {
        1 | 6 | 12 => 4,
        7 | 11 | 13 => 8,
        10 | 16 | 4 | 5 => 2,
        2 | 3 | 9 => 1,
        other => return Err(format!("unsupported element type {}", type_name(other))),
    })
}

/// The dimensions of `t` and their product, checked (no negative size, no overflow).
pub fn element_count(t: &TensorProto) -> Result<(Vec<usize>, usize), String> {
    let dims: Vec<usize> = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("negative dimension {d}")))
        .collect::<Result<_, _>>()?;
    let count = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| format!("dimensions {dims:?} overflow"))?;
    Ok((dims, count))
}

/// Decodes `t`, refusing external or missing data and any count that does not match.
pub fn decode(t: &TensorProto) -> Result<Const, String> {
    if t.external {
        return Err("its data lives in an external file that was not read".into());
    }
    let (dims, count) = element_count(t)?;
    let width = width(t.data_type)?;
    let raw = &t.raw;
    let stored = if !raw.is_empty() {
        raw.len() / width
    } else {
        t.floats.len() + t.int32s.len() + t.int64s.len() + t.doubles.len()
    };
    if stored != count || (!raw.is_empty() && !raw.len().is_multiple_of(width)) {
        let have = if raw.is_empty() { stored } else { raw.len() / width };
        return Err(format!(
            "declares {dims:?} ({count} {}) but holds {have} values",
            type_name(t.data_type)
        ));
    }
    let values = if !raw.is_empty() {
        decode_raw(raw, t.data_type)
    } else {
        match t.data_type {
            1 => Values::F32(t.floats.clone()),
            11 => Values::F32(t.doubles.iter().map(|&d| d as f32).collect()),
            10 => Values::F32(t.int32s.iter().map(|&b| f16_to_f32(b as u16)).collect()),
            16 => Values::F32(t.int32s.iter().map(|&b| f32::from_bits((b as u32) << 16)).collect()),
            7 => Values::I64(t.int64s.clone()),
            _ => Values::I64(t.int32s.clone()),
        }
    };
    Ok(Const { dims, values })
}

/// Little-endian raw data of an element type whose width was checked.
fn decode_raw(raw: &[u8], data_type: i32) -> Values {
    let f = |w: usize| raw.chunks_exact(w);
    match data_type {
        1 => Values::F32(f(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()),
        11 => Values::F32(
            f(8).map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
                .collect(),
        ),
        10 => Values::F32(f(2).map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]]))).collect()),
        16 => Values::F32(
            f(2).map(|c| f32::from_bits(u32::from(u16::from_le_bytes([c[0], c[1]])) << 16)).collect(),
        ),
        6 => Values::I64(f(4).map(|c| i64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]]))).collect()),
        12 => Values::I64(f(4).map(|c| i64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]]))).collect()),
        7 | 13 => Values::I64(
            f(8).map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])).collect(),
        ),
        4 => Values::I64(f(2).map(|c| i64::from(u16::from_le_bytes([c[0], c[1]]))).collect()),
        5 => Values::I64(f(2).map(|c| i64::from(i16::from_le_bytes([c[0], c[1]]))).collect()),
        3 => Values::I64(raw.iter().map(|&b| i64::from(b as i8)).collect()),
        _ => Values::I64(raw.iter().map(|&b| i64::from(b)).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(dims: &[i64], data_type: i32, raw: Vec<u8>) -> TensorProto {
        TensorProto { dims: dims.to_vec(), data_type, raw, ..Default::default() }
    }

    #[test]
    fn decodes_each_storage() {
        let t = raw(&[2], 1, [1.5f32, -2.0].iter().flat_map(|v| v.to_le_bytes()).collect());
        assert_eq!(decode(&t).unwrap(), Const { dims: vec![2], values: Values::F32(vec![1.5, -2.0]) });
        // float16: 0x3c00 = 1, 0xc000 = −2, 0x0001 = 2⁻²⁴ (the smallest subnormal).
        let t = raw(&[3], 10, [0x3c00u16, 0xc000, 0x0001].iter().flat_map(|v| v.to_le_bytes()).collect());
        assert_eq!(decode(&t).unwrap().f32s(), vec![1.0, -2.0, (-24f32).exp2()]);
        let t = TensorProto { dims: vec![2], data_type: 7, int64s: vec![-1, 512], ..Default::default() };
        assert_eq!(decode(&t).unwrap().i64s(), Some(vec![-1, 512]));
        let t = TensorProto { data_type: 1, floats: vec![6.0], ..Default::default() };
        assert_eq!(decode(&t).unwrap(), Const { dims: vec![], values: Values::F32(vec![6.0]) });
    }

    #[test]
    fn refuses_sizes_that_do_not_match_the_data() {
        let huge = raw(&[1 << 20, 1 << 20, 1 << 20], 1, vec![0; 16]);
        assert!(decode(&huge).unwrap_err().contains("holds 4 values"));
        let overflow = raw(&[1 << 40, 1 << 40], 1, vec![0; 4]);
        assert!(decode(&overflow).unwrap_err().contains("overflow"));
        let ragged = raw(&[1], 1, vec![0; 5]);
        assert!(decode(&ragged).is_err());
        let external = TensorProto { external: true, ..Default::default() };
        assert!(decode(&external).unwrap_err().contains("external"));
        assert!(decode(&raw(&[1], 8, vec![0])).unwrap_err().contains("string"));
    }
}
