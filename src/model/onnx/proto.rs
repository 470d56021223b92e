//! The few ONNX protobuf messages the importer needs, decoded by hand from the wire format.
//!
//! Why by hand: the ONNX schema is protobuf, and the usual Rust route (prost-build) needs
//! `protoc` on the build machine, while the messages a CNN import reads are a dozen fields of
//! six messages (onnx.proto3: ModelProto, GraphProto, NodeProto, AttributeProto, TensorProto,
//! ValueInfoProto). A small decoder adds no dependency and lets every length be checked
//! against the bytes that are actually there before anything is allocated: a truncated or
//! hostile file is an error, never a panic or a huge allocation.
//!
//! Wire format (protobuf encoding): a message is a sequence of (tag = field << 3 | wire type,
//! value); wire type 0 is a varint, 1 eight bytes, 2 a length-delimited run (strings, bytes,
//! sub-messages, packed repeated numbers), 5 four bytes. Unknown fields are skipped, as
//! protobuf requires; groups (wire types 3 and 4, unused by ONNX) are an error.

/// A decoding failure: what was wrong, and the byte offset where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// What is wrong.
    pub message: String,
    /// Byte offset in the file.
    pub offset: usize,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (at byte {})", self.message, self.offset)
    }
}

type Decoded<T> = std::result::Result<T, DecodeError>;

/// One field's value as it appears on the wire.
enum Value<'a> {
    Varint(u64),
    Fixed64([u8; 8]),
    Bytes(&'a [u8]),
    Fixed32([u8; 4]),
}

/// A cursor over one message's bytes; `base` is the message's offset in the file, for errors.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    base: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], base: usize) -> Self {
        Self { buf, pos: 0, base }
    }

    fn err<T>(&self, message: impl Into<String>) -> Decoded<T> {
        Err(DecodeError { message: message.into(), offset: self.base + self.pos })
    }

    fn varint(&mut self) -> Decoded<u64> {
        let mut v = 0u64;
        for i in 0..10 {
            let Some(&b) = self.buf.get(self.pos) else { return self.err("truncated varint") };
            self.pos += 1;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        self.err("varint longer than 10 bytes")
    }

    fn take(&mut self, n: usize) -> Decoded<&'a [u8]> {
        if n > self.buf.len() - self.pos {
            return self
                .err(format!("a field declares {n} bytes but only {} remain", self.buf.len() - self.pos));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// The next field: (field number, value, offset of the value in the file), or None at
    /// the end of the message.
    fn next(&mut self) -> Decoded<Option<(u64, Value<'a>, usize)>> {
        if self.pos == self.buf.len() {
            return Ok(None);
        }
        let tag = self.varint()?;
        let field = tag >> 3;
        if field == 0 {
            return self.err("field number 0");
        }
        let at = self.base + self.pos;
        let value = match tag & 7 {
            0 => Value::Varint(self.varint()?),
            1 => Value::Fixed64(self.take(8)?.try_into().map_err(|_| self.decode_error("fixed64"))?),
            2 => {
                let n = self.varint()?;
                let n = usize::try_from(n).map_err(|_| self.decode_error("length overflows"))?;
                let at = self.base + self.pos;
                return Ok(Some((field, Value::Bytes(self.take(n)?), at)));
            }
            5 => Value::Fixed32(self.take(4)?.try_into().map_err(|_| self.decode_error("fixed32"))?),
            w => return self.err(format!("unsupported wire type {w}")),
        };
        Ok(Some((field, value, at)))
    }

    fn decode_error(&self, what: &str) -> DecodeError {
        DecodeError { message: format!("malformed {what}"), offset: self.base + self.pos }
    }
}

/// Walks a message's fields, calling `f(field, value, offset)` for each.
fn fields<'a>(
    buf: &'a [u8],
    base: usize,
    mut f: impl FnMut(u64, Value<'a>, usize) -> Decoded<()>,
) -> Decoded<()> {
    let mut r = Reader::new(buf, base);
    while let Some((field, value, at)) = r.next()? {
        f(field, value, at)?;
    }
    Ok(())
}

fn wrong(what: &str, at: usize) -> DecodeError {
    DecodeError { message: format!("field `{what}` has the wrong wire type"), offset: at }
}

fn as_bytes<'a>(v: Value<'a>, what: &str, at: usize) -> Decoded<&'a [u8]> {
    match v {
        Value::Bytes(b) => Ok(b),
        _ => Err(wrong(what, at)),
    }
}

fn as_string(v: Value<'_>, what: &str, at: usize) -> Decoded<String> {
    let b = as_bytes(v, what, at)?;
    String::from_utf8(b.to_vec())
        .map_err(|_| DecodeError { message: format!("field `{what}` is not UTF-8"), offset: at })
}

fn as_varint(v: Value<'_>, what: &str, at: usize) -> Decoded<u64> {
    match v {
        Value::Varint(x) => Ok(x),
        _ => Err(wrong(what, at)),
    }
}

/// The most values of a tensor's `dims` or an attribute's `ints` (far above any real shape,
/// pads or permutation list).
const MAX_LIST: usize = 1 << 16;

/// A repeated varint field, packed (one length-delimited run) or not (one value per tag), of
/// at most `max` values in all: a one-byte varint decodes to eight bytes, so an unbounded
/// packed run would turn a 2 GiB file into 16 GiB of memory. A packed run's values are
/// counted (one per byte below 0x80) before anything is allocated.
fn push_varints(v: Value<'_>, out: &mut Vec<i64>, what: &str, at: usize, max: usize) -> Decoded<()> {
    let too_many = || DecodeError {
        message: format!("{what} holds more than {max} values (its dims or the limit for such a list)"),
        offset: at,
    };
    match v {
        Value::Varint(x) if out.len() < max => out.push(x as i64),
        Value::Varint(_) => return Err(too_many()),
        Value::Bytes(b) => {
            let count = b.iter().filter(|&&byte| byte < 0x80).count();
            if out.len().saturating_add(count) > max {
                return Err(too_many());
            }
            out.reserve_exact(count);
            let mut r = Reader::new(b, at);
            while r.pos < b.len() {
                out.push(r.varint()? as i64);
            }
        }
        _ => return Err(wrong(what, at)),
    }
    Ok(())
}

/// A repeated float field, packed or not.
fn push_floats(v: Value<'_>, out: &mut Vec<f32>, what: &str, at: usize) -> Decoded<()> {
    match v {
        Value::Fixed32(b) => out.push(f32::from_le_bytes(b)),
        Value::Bytes(b) if b.len() % 4 == 0 => {
            out.extend(b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
        }
        _ => return Err(wrong(what, at)),
    }
    Ok(())
}

/// A repeated double field, packed or not.
fn push_doubles(v: Value<'_>, out: &mut Vec<f64>, what: &str, at: usize) -> Decoded<()> {
    match v {
        Value::Fixed64(b) => out.push(f64::from_le_bytes(b)),
        Value::Bytes(b) if b.len() % 8 == 0 => out.extend(
            b.chunks_exact(8).map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])),
        ),
        _ => return Err(wrong(what, at)),
    }
    Ok(())
}

/// ModelProto: the opset versions and the graph.
#[derive(Debug, Clone, Default)]
pub struct Model {
    /// (domain, version) of each imported opset; "" is the default ONNX domain.
    pub opsets: Vec<(String, i64)>,
    /// Who wrote the file (`pytorch`, `tf2onnx`, ...).
    pub producer: String,
    /// The network.
    pub graph: GraphProto,
}

/// GraphProto: nodes, constant tensors, inputs and outputs.
#[derive(Debug, Clone, Default)]
pub struct GraphProto {
    /// Nodes in the file's order (topological, as the standard requires).
    pub nodes: Vec<NodeProto>,
    /// Named constant tensors (the weights).
    pub initializers: Vec<TensorProto>,
    /// Graph inputs (may include initializers, in files from older exporters).
    pub inputs: Vec<ValueInfo>,
    /// Graph outputs.
    pub outputs: Vec<ValueInfo>,
    /// Whether the graph holds sparse initializers (not supported).
    pub sparse: bool,
}

/// NodeProto: one operator application.
#[derive(Debug, Clone, Default)]
pub struct NodeProto {
    /// Value names read ("" marks an omitted optional input).
    pub inputs: Vec<String>,
    /// Value names written.
    pub outputs: Vec<String>,
    /// The node's name (may be empty).
    pub name: String,
    /// The operator (`Conv`, `Relu`, ...).
    pub op_type: String,
    /// The operator's domain ("" or `ai.onnx` for standard ops).
    pub domain: String,
    /// Attributes.
    pub attributes: Vec<Attribute>,
}

/// AttributeProto: a named constant argument of a node.
#[derive(Debug, Clone, Default)]
pub struct Attribute {
    /// Its name (`strides`, `pads`, ...).
    pub name: String,
    /// A float value.
    pub f: Option<f32>,
    /// An integer value.
    pub i: Option<i64>,
    /// A string value.
    pub s: Option<Vec<u8>>,
    /// A tensor value (Constant's `value`).
    pub t: Option<TensorProto>,
    /// A list of floats.
    pub floats: Vec<f32>,
    /// A list of integers.
    pub ints: Vec<i64>,
}

/// TensorProto: a typed n-dimensional constant.
#[derive(Debug, Clone, Default)]
pub struct TensorProto {
    /// Its name (initializers).
    pub name: String,
    /// Dimensions (empty for a scalar).
    pub dims: Vec<i64>,
    /// Element type (1 float, 6 int32, 7 int64, 10 float16, 11 double, 16 bfloat16, ...).
    pub data_type: i32,
    /// Packed little-endian values (the usual storage).
    pub raw: Vec<u8>,
    /// Values stored as `float_data`.
    pub floats: Vec<f32>,
    /// Values stored as `int32_data` (also float16 bits).
    pub int32s: Vec<i64>,
    /// Values stored as `int64_data`.
    pub int64s: Vec<i64>,
    /// Values stored as `double_data`.
    pub doubles: Vec<f64>,
    /// Whether the values live in an external file (see `external_data`).
    pub external: bool,
    /// Where the external values are: `location` (a path relative to the model file),
    /// `offset` and `length` in bytes.
    pub external_data: Vec<(String, String)>,
}

/// ValueInfoProto: a graph input's or output's name, element type and shape.
#[derive(Debug, Clone, Default)]
pub struct ValueInfo {
    /// The value's name.
    pub name: String,
    /// Element type (1 float).
    pub elem_type: i32,
    /// Dimensions: `Some(n)` fixed, `None` symbolic or unknown.
    pub dims: Vec<Option<i64>>,
}

/// Decodes a whole `.onnx` file.
pub fn decode_model(buf: &[u8]) -> Decoded<Model> {
    let mut m = Model::default();
    let mut graph = None;
    fields(buf, 0, |field, v, at| {
        match field {
            4 => m.producer = as_string(v, "producer_name", at)?,
            7 => graph = Some(decode_graph(as_bytes(v, "graph", at)?, at)?),
            8 => {
                let b = as_bytes(v, "opset_import", at)?;
                let (mut domain, mut version) = (String::new(), 0i64);
                fields(b, at, |f, v, at| {
                    match f {
                        1 => domain = as_string(v, "opset_import.domain", at)?,
                        2 => version = as_varint(v, "opset_import.version", at)? as i64,
                        _ => {}
                    }
                    Ok(())
                })?;
                m.opsets.push((domain, version));
            }
            _ => {}
        }
        Ok(())
    })?;
    m.graph = graph.ok_or(DecodeError { message: "the file holds no graph".into(), offset: 0 })?;
    Ok(m)
}

fn decode_graph(buf: &[u8], base: usize) -> Decoded<GraphProto> {
    let mut g = GraphProto::default();
    fields(buf, base, |field, v, at| {
        match field {
            1 => g.nodes.push(decode_node(as_bytes(v, "node", at)?, at)?),
            5 => g.initializers.push(decode_tensor(as_bytes(v, "initializer", at)?, at)?),
            11 => g.inputs.push(decode_value_info(as_bytes(v, "input", at)?, at)?),
            12 => g.outputs.push(decode_value_info(as_bytes(v, "output", at)?, at)?),
            15 => g.sparse = true,
            _ => {}
        }
        Ok(())
    })?;
    Ok(g)
}

fn decode_node(buf: &[u8], base: usize) -> Decoded<NodeProto> {
    let mut n = NodeProto::default();
    fields(buf, base, |field, v, at| {
        match field {
            1 => n.inputs.push(as_string(v, "node.input", at)?),
            2 => n.outputs.push(as_string(v, "node.output", at)?),
            3 => n.name = as_string(v, "node.name", at)?,
            4 => n.op_type = as_string(v, "node.op_type", at)?,
            5 => n.attributes.push(decode_attribute(as_bytes(v, "node.attribute", at)?, at)?),
            7 => n.domain = as_string(v, "node.domain", at)?,
            _ => {}
        }
        Ok(())
    })?;
    Ok(n)
}

fn decode_attribute(buf: &[u8], base: usize) -> Decoded<Attribute> {
    let mut a = Attribute::default();
    fields(buf, base, |field, v, at| {
        match field {
            1 => a.name = as_string(v, "attribute.name", at)?,
            2 => match v {
                Value::Fixed32(b) => a.f = Some(f32::from_le_bytes(b)),
                _ => return Err(wrong("attribute.f", at)),
            },
            3 => a.i = Some(as_varint(v, "attribute.i", at)? as i64),
            4 => a.s = Some(as_bytes(v, "attribute.s", at)?.to_vec()),
            5 => a.t = Some(decode_tensor(as_bytes(v, "attribute.t", at)?, at)?),
            7 => push_floats(v, &mut a.floats, "attribute.floats", at)?,
            8 => push_varints(v, &mut a.ints, "attribute.ints", at, MAX_LIST)?,
            _ => {}
        }
        Ok(())
    })?;
    Ok(a)
}

fn decode_tensor(buf: &[u8], base: usize) -> Decoded<TensorProto> {
    let mut t = TensorProto::default();
    // First the dimensions (wherever they stand in the message): they bound how many integer
    // values the data fields may decode to.
    fields(buf, base, |field, v, at| {
        if field == 1 {
            push_varints(v, &mut t.dims, "tensor.dims", at, MAX_LIST)?;
        }
        Ok(())
    })?;
    let declared = t
        .dims
        .iter()
        .try_fold(1usize, |a, &d| usize::try_from(d).ok().and_then(|d| a.checked_mul(d)))
        .unwrap_or(0);
    fields(buf, base, |field, v, at| {
        match field {
            1 => {}
            2 => t.data_type = as_varint(v, "tensor.data_type", at)? as i32,
            4 => push_floats(v, &mut t.floats, "tensor.float_data", at)?,
            5 => push_varints(v, &mut t.int32s, "tensor.int32_data", at, declared)?,
            7 => push_varints(v, &mut t.int64s, "tensor.int64_data", at, declared)?,
            8 => t.name = as_string(v, "tensor.name", at)?,
            9 => t.raw = as_bytes(v, "tensor.raw_data", at)?.to_vec(),
            10 => push_doubles(v, &mut t.doubles, "tensor.double_data", at)?,
            13 => {
                t.external = true;
                let (mut key, mut value) = (String::new(), String::new());
                fields(as_bytes(v, "tensor.external_data", at)?, at, |f, v, at| {
                    match f {
                        1 => key = as_string(v, "external_data.key", at)?,
                        2 => value = as_string(v, "external_data.value", at)?,
                        _ => {}
                    }
                    Ok(())
                })?;
                t.external_data.push((key, value));
            }
            14 => t.external |= as_varint(v, "tensor.data_location", at)? == 1,
            _ => {}
        }
        Ok(())
    })?;
    Ok(t)
}

fn decode_value_info(buf: &[u8], base: usize) -> Decoded<ValueInfo> {
    let mut vi = ValueInfo::default();
    fields(buf, base, |field, v, at| {
        match field {
            1 => vi.name = as_string(v, "value_info.name", at)?,
            // TypeProto → tensor_type (1) → elem_type (1), shape (2) → dim (1) → value (1) / param (2).
            2 => fields(as_bytes(v, "value_info.type", at)?, at, |f, v, at| {
                if f != 1 {
                    return Ok(());
                }
                fields(as_bytes(v, "type.tensor_type", at)?, at, |f, v, at| {
                    match f {
                        1 => vi.elem_type = as_varint(v, "tensor_type.elem_type", at)? as i32,
                        2 => fields(as_bytes(v, "tensor_type.shape", at)?, at, |f, v, at| {
                            if f == 1 {
                                let mut dim = None;
                                fields(as_bytes(v, "shape.dim", at)?, at, |f, v, at| {
                                    if f == 1 {
                                        dim = Some(as_varint(v, "dim.dim_value", at)? as i64);
                                    }
                                    Ok(())
                                })?;
                                vi.dims.push(dim);
                            }
                            Ok(())
                        })?,
                        _ => {}
                    }
                    Ok(())
                })
            })?,
            _ => {}
        }
        Ok(())
    })?;
    Ok(vi)
}

#[cfg(test)]
pub(crate) mod encode {
    //! A minimal encoder for tests: hand-built ONNX files with known contents.

    /// Appends a varint.
    pub fn varint(out: &mut Vec<u8>, mut v: u64) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    /// Appends a varint field.
    pub fn int(out: &mut Vec<u8>, field: u64, v: i64) {
        varint(out, field << 3);
        varint(out, v as u64);
    }

    /// Appends a length-delimited field.
    pub fn bytes(out: &mut Vec<u8>, field: u64, b: &[u8]) {
        varint(out, (field << 3) | 2);
        varint(out, b.len() as u64);
        out.extend_from_slice(b);
    }

    /// Appends a float (fixed32) field.
    pub fn float(out: &mut Vec<u8>, field: u64, v: f32) {
        varint(out, (field << 3) | 5);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::encode::*;
    use super::*;

    fn tensor(name: &str, dims: &[i64], values: &[f32]) -> Vec<u8> {
        let mut t = Vec::new();
        for &d in dims {
            int(&mut t, 1, d);
        }
        int(&mut t, 2, 1);
        bytes(&mut t, 8, name.as_bytes());
        let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        bytes(&mut t, 9, &raw);
        t
    }

    fn model() -> Vec<u8> {
        let mut node = Vec::new();
        bytes(&mut node, 1, b"x");
        bytes(&mut node, 1, b"w");
        bytes(&mut node, 2, b"y");
        bytes(&mut node, 3, b"conv0");
        bytes(&mut node, 4, b"Conv");
        let mut attr = Vec::new();
        bytes(&mut attr, 1, b"pads");
        // Packed ints [1, 1, 1, 1].
        bytes(&mut attr, 8, &[1, 1, 1, 1]);
        int(&mut attr, 20, 7);
        bytes(&mut node, 5, &attr);
        let mut alpha = Vec::new();
        bytes(&mut alpha, 1, b"alpha");
        float(&mut alpha, 2, 0.25);
        bytes(&mut node, 5, &alpha);
        let mut graph = Vec::new();
        bytes(&mut graph, 1, &node);
        bytes(&mut graph, 5, &tensor("w", &[1, 1, 1, 1], &[2.0]));
        // Input x: float [N, 1, 4, 4] with a symbolic batch.
        let mut dims = Vec::new();
        let mut d = Vec::new();
        bytes(&mut d, 2, b"N");
        bytes(&mut dims, 1, &d);
        for v in [1, 4, 4] {
            let mut d = Vec::new();
            int(&mut d, 1, v);
            bytes(&mut dims, 1, &d);
        }
        let mut tt = Vec::new();
        int(&mut tt, 1, 1);
        bytes(&mut tt, 2, &dims);
        let mut ty = Vec::new();
        bytes(&mut ty, 1, &tt);
        let mut vi = Vec::new();
        bytes(&mut vi, 1, b"x");
        bytes(&mut vi, 2, &ty);
        bytes(&mut graph, 11, &vi);
        let mut m = Vec::new();
        int(&mut m, 1, 8);
        bytes(&mut m, 4, b"test");
        bytes(&mut m, 7, &graph);
        let mut opset = Vec::new();
        int(&mut opset, 2, 17);
        bytes(&mut m, 8, &opset);
        m
    }

    #[test]
    fn decodes_a_hand_built_model() {
        let m = decode_model(&model()).unwrap();
        assert_eq!(m.opsets, vec![(String::new(), 17)]);
        assert_eq!(m.producer, "test");
        let n = &m.graph.nodes[0];
        assert_eq!((n.op_type.as_str(), n.name.as_str()), ("Conv", "conv0"));
        assert_eq!(n.inputs, vec!["x", "w"]);
        assert_eq!(n.attributes[0].ints, vec![1, 1, 1, 1]);
        assert_eq!(n.attributes[1].f, Some(0.25));
        let w = &m.graph.initializers[0];
        assert_eq!(
            (w.dims.clone(), w.data_type, w.raw.clone()),
            (vec![1, 1, 1, 1], 1, 2f32.to_le_bytes().to_vec())
        );
        assert_eq!(m.graph.inputs[0].dims, vec![None, Some(1), Some(4), Some(4)]);
    }

    #[test]
    fn packed_integers_decode_only_as_many_values_as_the_dims_declare() {
        // int64_data packed as one-byte varints (8× larger decoded) before the dims that say
        // the tensor holds 2 values: refused while counting, nothing decoded.
        let mut t = Vec::new();
        int(&mut t, 2, 7);
        bytes(&mut t, 7, &vec![1u8; 1 << 20]);
        int(&mut t, 1, 2);
        let e = decode_tensor(&t, 0).unwrap_err();
        assert!(e.message.contains("int64_data holds more than 2 values"), "{e}");
        // The same data with dims that fit decodes, whatever the field order.
        let mut ok = Vec::new();
        bytes(&mut ok, 7, &[5, 6]);
        int(&mut ok, 1, 2);
        assert_eq!(decode_tensor(&ok, 0).unwrap().int64s, vec![5, 6]);
        // An attribute's ints are bounded too.
        let mut a = Vec::new();
        bytes(&mut a, 8, &vec![1u8; MAX_LIST + 1]);
        assert!(decode_attribute(&a, 0).unwrap_err().message.contains("attribute.ints"));
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        // Cutting the file anywhere either still decodes (a cut between top-level fields) or
        // gives an error; it never panics or reads out of bounds.
        let full = model();
        let mut errors = 0;
        for cut in 0..full.len() {
            if decode_model(&full[..cut]).is_err() {
                errors += 1;
            }
        }
        assert!(errors > full.len() / 2, "{errors} of {} cuts rejected", full.len());
        // A length prefix larger than the file.
        let mut bad = Vec::new();
        varint(&mut bad, (7 << 3) | 2);
        varint(&mut bad, 1 << 40);
        let e = decode_model(&bad).unwrap_err();
        assert!(e.message.contains("declares"), "{e}");
        // Ten continuation bytes.
        let e = decode_model(&[0x80; 12]).unwrap_err();
        assert!(e.message.contains("varint"), "{e}");
    }
}
