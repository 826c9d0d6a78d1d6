//! Tensors of the Open Inference Protocol: datatypes, input data given as JSON (nested or flat,
//! row-major) or as binary (the binary tensor data extension: little-endian, row-major, no
//! padding), and the two outputs a model answers with, in either form.
//!
//! Runs on the async runtime: parsing and encoding are linear in the body and cost less than
//! reading it; the forward pass is elsewhere.

use serde::Deserialize;
use serde::de::{DeserializeSeed, Deserializer, SeqAccess, Visitor};
use std::fmt;

/// The protocol's tensor element types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataType {
    Bool,
    U8,
    U16,
    U32,
    U64,
    I8,
    I16,
    I32,
    I64,
    F16,
    F32,
    F64,
    Bytes,
}

impl DataType {
    pub const NUMERIC_INPUTS: [&'static str; 10] = [
        "FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64",
    ];

    pub fn parse(s: &str) -> Option<DataType> {
        use DataType::*;
        Some(match s {
            "BOOL" => Bool,
            "UINT8" => U8,
            "UINT16" => U16,
            "UINT32" => U32,
            "UINT64" => U64,
            "INT8" => I8,
            "INT16" => I16,
            "INT32" => I32,
            "INT64" => I64,
            "FP16" => F16,
            "FP32" => F32,
            "FP64" => F64,
            "BYTES" => Bytes,
            _ => return None,
        })
    }

    /// Bytes per element in binary form (`None` for BYTES, whose elements are length-prefixed).
    pub fn size(self) -> Option<usize> {
        use DataType::*;
        match self {
            Bool | U8 | I8 => Some(1),
            U16 | I16 | F16 => Some(2),
            U32 | I32 | F32 => Some(4),
            U64 | I64 | F64 => Some(8),
            Bytes => None,
        }
    }

    fn is_integer(self) -> bool {
        use DataType::*;
        matches!(self, U8 | U16 | U32 | U64 | I8 | I16 | I32 | I64)
    }

    /// The representable range of an integer type (as f64; exact for all but the 64-bit ends,
    /// where the nearest double is the bound any JSON number would have been rounded to).
    fn range(self) -> (f64, f64) {
        use DataType::*;
        match self {
            U8 => (0.0, f64::from(u8::MAX)),
            U16 => (0.0, f64::from(u16::MAX)),
            U32 => (0.0, f64::from(u32::MAX)),
            U64 => (0.0, u64::MAX as f64),
            I8 => (f64::from(i8::MIN), f64::from(i8::MAX)),
            I16 => (f64::from(i16::MIN), f64::from(i16::MAX)),
            I32 => (f64::from(i32::MIN), f64::from(i32::MAX)),
            I64 => (i64::MIN as f64, i64::MAX as f64),
            _ => (f64::NEG_INFINITY, f64::INFINITY),
        }
    }
}

/// Tensor data as JSON gives it: every number (or, for BYTES, every string) in row-major
/// order, and the lengths of the nesting levels (one level for flat data). Nested arrays must
/// be regular (every array at a level has the same length) and hold numbers or strings (not
/// both) at one depth only.
#[derive(Debug, Default, PartialEq)]
pub struct JsonData {
    pub values: Vec<f64>,
    pub texts: Vec<String>,
    pub dims: Vec<usize>,
}

impl<'de> Deserialize<'de> for JsonData {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut c = Collector::default();
        Level {
            c: &mut c,
            depth: 0,
        }
        .deserialize(d)?;
        let depth = c.leaf_depth.unwrap_or(c.dims.len());
        if depth == 0 {
            return Err(serde::de::Error::custom("tensor data must be an array"));
        }
        c.dims.truncate(depth);
        if !c.values.is_empty() && !c.texts.is_empty() {
            return Err(serde::de::Error::custom(
                "tensor data mixes numbers and strings",
            ));
        }
        let dims: Vec<usize> = c.dims.into_iter().map(|d| d.unwrap_or(0)).collect();
        // Regular nesting means the dims count the elements; never rely on less.
        if dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
            != Some(c.values.len() + c.texts.len())
        {
            return Err(serde::de::Error::custom(
                "tensor data nests arrays irregularly",
            ));
        }
        Ok(JsonData {
            values: c.values,
            texts: c.texts,
            dims,
        })
    }
}

#[derive(Default)]
struct Collector {
    values: Vec<f64>,
    texts: Vec<String>,
    /// The length of the arrays at each depth (0 is the outermost), once one is seen.
    dims: Vec<Option<usize>>,
    /// The depth numbers are found at.
    leaf_depth: Option<usize>,
}

impl Collector {
    fn leaf_text<E: serde::de::Error>(&mut self, depth: usize, v: &str) -> Result<(), E> {
        self.leaf(depth, f64::NAN)?;
        self.values.pop();
        self.texts.push(v.to_owned());
        Ok(())
    }

    fn leaf<E: serde::de::Error>(&mut self, depth: usize, v: f64) -> Result<(), E> {
        // An array already seen at this depth or deeper (`[[], 1]`): leaves and arrays mixed.
        if self.dims.len() > depth {
            return Err(E::custom(
                "tensor data nests arrays irregularly (numbers beside arrays)",
            ));
        }
        match self.leaf_depth {
            None => self.leaf_depth = Some(depth),
            Some(d) if d != depth => {
                return Err(E::custom(
                    "tensor data nests arrays irregularly (numbers at different depths)",
                ));
            }
            Some(_) => {}
        }
        self.values.push(v);
        Ok(())
    }
}

/// The most nesting levels accepted in tensor data.
const MAX_DEPTH: usize = 16;

struct Level<'a> {
    c: &'a mut Collector,
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Level<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Level<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of numbers, flat or nested")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        use serde::de::Error;
        if self.depth >= MAX_DEPTH {
            return Err(A::Error::custom("tensor data nests arrays too deeply"));
        }
        if self.c.leaf_depth.is_some_and(|d| d <= self.depth) {
            return Err(A::Error::custom(
                "tensor data nests arrays irregularly (numbers at different depths)",
            ));
        }
        let mut n = 0usize;
        while seq
            .next_element_seed(Level {
                c: &mut *self.c,
                depth: self.depth + 1,
            })?
            .is_some()
        {
            n += 1;
        }
        if self.c.dims.len() <= self.depth {
            self.c.dims.resize(self.depth + 1, None);
        }
        match self.c.dims[self.depth] {
            None => self.c.dims[self.depth] = Some(n),
            Some(m) if m != n => {
                return Err(A::Error::custom(format!(
                    "tensor data nests arrays of different lengths ({m} and {n}) at depth {}",
                    self.depth + 1
                )));
            }
            Some(_) => {}
        }
        Ok(())
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<(), E> {
        if self.depth == 0 {
            return Err(E::custom("tensor data must be an array"));
        }
        self.c.leaf(self.depth, v)
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<(), E> {
        self.visit_f64(v as f64)
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<(), E> {
        self.visit_f64(v as f64)
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<(), E> {
        Err(E::custom("tensor elements must be numbers, not booleans"))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        if self.depth == 0 {
            return Err(E::custom("tensor data must be an array"));
        }
        self.c.leaf_text(self.depth, v)
    }
}

/// Why a tensor cannot be used; each message names the tensor.
pub type TensorError = String;

/// The elements of a JSON tensor of `datatype` as f32 (the engine's precision), checked
/// against the type: integer types take integers in their range; every value must fit an f32.
///
/// # Errors
/// A value that the type cannot hold or that overflows f32.
pub fn json_to_f32(name: &str, dt: DataType, values: &[f64]) -> Result<Vec<f32>, TensorError> {
    let (lo, hi) = dt.range();
    let integer = dt.is_integer();
    let mut out = Vec::with_capacity(values.len());
    for (i, &v) in values.iter().enumerate() {
        if integer && (v.fract() != 0.0 || v < lo || v > hi) {
            return Err(format!(
                "input {name:?}: element {i} ({v}) is not a {} value",
                type_name(dt)
            ));
        }
        let f = v as f32;
        if !f.is_finite() {
            return Err(format!(
                "input {name:?}: element {i} ({v}) is out of range for a 32-bit float"
            ));
        }
        out.push(f);
    }
    Ok(out)
}

/// Decodes `bytes` (little-endian elements of `dt`) to f32; NaN only where `nan_is_missing`.
///
/// # Errors
/// A type that is not numeric, or a value that is not finite as f32.
pub fn binary_to_f32(
    name: &str,
    dt: DataType,
    bytes: &[u8],
    nan_is_missing: bool,
) -> Result<Vec<f32>, TensorError> {
    use DataType::*;
    let size = dt
        .size()
        .filter(|_| dt != Bool && dt != F16)
        .ok_or_else(|| {
            format!(
                "input {name:?}: datatype {} is not accepted; send {}",
                type_name(dt),
                DataType::NUMERIC_INPUTS.join(", ")
            )
        })?;
    let mut out = Vec::with_capacity(bytes.len() / size);
    for (i, c) in bytes.chunks_exact(size).enumerate() {
        let v = match dt {
            F32 => f32::from_le_bytes(c.try_into().expect("4 bytes")),
            F64 => f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32,
            U8 => f32::from(c[0]),
            I8 => f32::from(c[0] as i8),
            U16 => f32::from(u16::from_le_bytes(c.try_into().expect("2 bytes"))),
            I16 => f32::from(i16::from_le_bytes(c.try_into().expect("2 bytes"))),
            U32 => u32::from_le_bytes(c.try_into().expect("4 bytes")) as f32,
            I32 => i32::from_le_bytes(c.try_into().expect("4 bytes")) as f32,
            U64 => u64::from_le_bytes(c.try_into().expect("8 bytes")) as f32,
            I64 => i64::from_le_bytes(c.try_into().expect("8 bytes")) as f32,
            Bool | F16 | Bytes => unreachable!("refused above"),
        };
        let missing = nan_is_missing && v.is_nan();
        if !(v.is_finite() || missing) {
            return Err(format!(
                "input {name:?}: element {i} is not a finite 32-bit float"
            ));
        }
        out.push(v);
    }
    Ok(out)
}

pub fn type_name(dt: DataType) -> &'static str {
    use DataType::*;
    match dt {
        Bool => "BOOL",
        U8 => "UINT8",
        U16 => "UINT16",
        U32 => "UINT32",
        U64 => "UINT64",
        I8 => "INT8",
        I16 => "INT16",
        I32 => "INT32",
        I64 => "INT64",
        F16 => "FP16",
        F32 => "FP32",
        F64 => "FP64",
        Bytes => "BYTES",
    }
}

/// Reads BYTES elements in binary form (each a 4-byte little-endian length, then the bytes)
/// as UTF-8 strings; exactly `count` of them must fill `bytes`.
///
/// # Errors
/// A length past the end, text that is not UTF-8, or another count.
pub fn binary_to_strings(
    name: &str,
    mut bytes: &[u8],
    count: usize,
) -> Result<Vec<String>, TensorError> {
    let mut out = Vec::with_capacity(count.min(bytes.len() / 4));
    while !bytes.is_empty() {
        let (len, rest) = bytes
            .split_first_chunk::<4>()
            .ok_or_else(|| format!("input {name:?}: a BYTES element is cut short"))?;
        let len = u32::from_le_bytes(*len) as usize;
        if rest.len() < len {
            return Err(format!("input {name:?}: a BYTES element is cut short"));
        }
        let (text, rest) = rest.split_at(len);
        let text = std::str::from_utf8(text)
            .map_err(|_| format!("input {name:?}: element {} is not UTF-8 text", out.len()))?;
        out.push(text.to_owned());
        bytes = rest;
    }
    if out.len() != count {
        return Err(format!(
            "input {name:?}: {} BYTES elements where the shape says {count}",
            out.len()
        ));
    }
    Ok(out)
}

/// Appends BYTES elements in binary form: each a 4-byte little-endian length, then the bytes.
pub fn push_bytes_elements<'a>(out: &mut Vec<u8>, elements: impl Iterator<Item = &'a [u8]>) {
    for e in elements {
        out.extend_from_slice(&(e.len() as u32).to_le_bytes());
        out.extend_from_slice(e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<JsonData, String> {
        serde_json::from_str::<JsonData>(s).map_err(|e| e.to_string())
    }

    #[test]
    fn flat_and_nested_data_give_values_in_row_major_order_and_their_dims() {
        assert_eq!(
            parse("[1, 2.5, 3, 4]").unwrap(),
            JsonData {
                values: vec![1.0, 2.5, 3.0, 4.0],
                texts: vec![],
                dims: vec![4]
            }
        );
        assert_eq!(
            parse("[[1, 2], [3, 4], [5, 6]]").unwrap(),
            JsonData {
                values: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
                texts: vec![],
                dims: vec![3, 2]
            }
        );
        assert_eq!(parse("[]").unwrap().dims, vec![0]);
        assert_eq!(parse("[[], []]").unwrap().dims, vec![2, 0]);
        let t = parse(r#"[["a"], ["b c"]]"#).unwrap();
        assert_eq!(
            (t.texts, t.dims),
            (vec!["a".into(), "b c".into()], vec![2, 1])
        );
    }

    #[test]
    fn irregular_or_non_numeric_data_is_refused() {
        for bad in [
            // Found by the property tests: an empty array before numbers at its depth.
            "[[], 0, 1, 1]",
            "[0, [], 1]",
            "[[[]], [1]]",
            "[[1, 2], [3]]",
            "[[1, 2], 3]",
            "[1, [2, 3]]",
            "[\"a\", 1]",
            "[[\"a\"], \"b\"]",
            "[true]",
            "[null]",
            "3",
            "{}",
            "[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]",
        ] {
            assert!(parse(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn values_are_checked_against_their_datatype() {
        assert_eq!(
            json_to_f32("x", DataType::I32, &[1.0, -7.0]).unwrap(),
            vec![1.0, -7.0]
        );
        assert!(json_to_f32("x", DataType::I32, &[1.5]).is_err());
        assert!(json_to_f32("x", DataType::U8, &[256.0]).is_err());
        assert!(json_to_f32("x", DataType::U8, &[-1.0]).is_err());
        assert!(json_to_f32("x", DataType::F32, &[1e39]).is_err());
        assert_eq!(
            json_to_f32("x", DataType::F64, &[0.1]).unwrap(),
            vec![0.1f32]
        );
    }

    #[test]
    fn binary_elements_are_little_endian() {
        let mut b = Vec::new();
        b.extend_from_slice(&1.5f32.to_le_bytes());
        b.extend_from_slice(&(-2.0f32).to_le_bytes());
        assert_eq!(
            binary_to_f32("x", DataType::F32, &b, false).unwrap(),
            vec![1.5, -2.0]
        );
        assert_eq!(
            binary_to_f32("x", DataType::I16, &[0xff, 0xff, 0x02, 0x00], false).unwrap(),
            vec![-1.0, 2.0]
        );
        assert_eq!(
            binary_to_f32("x", DataType::F64, &0.25f64.to_le_bytes(), false).unwrap(),
            vec![0.25]
        );
        assert!(binary_to_f32("x", DataType::F32, &f32::NAN.to_le_bytes(), false).is_err());
        assert!(
            binary_to_f32("x", DataType::F32, &f32::NAN.to_le_bytes(), true).unwrap()[0].is_nan()
        );
        assert!(binary_to_f32("x", DataType::Bool, &[1], false).is_err());
        let mut out = Vec::new();
        push_bytes_elements(&mut out, ["ab", ""].iter().map(|s| s.as_bytes()));
        assert_eq!(out, vec![2, 0, 0, 0, b'a', b'b', 0, 0, 0, 0]);
        assert_eq!(binary_to_strings("x", &out, 2).unwrap(), ["ab", ""]);
        assert!(binary_to_strings("x", &out, 3).is_err());
        assert!(binary_to_strings("x", &out[..5], 1).is_err());
    }

    mod properties {
        //! Deterministic property tests (fixed seed, no failure files, bounded cases).
        use super::*;
        use proptest::prelude::*;
        use proptest::test_runner::{Config, RngSeed};

        fn config() -> Config {
            Config {
                cases: 256,
                failure_persistence: None,
                rng_seed: RngSeed::Fixed(0x6d6c_7064),
                ..Config::default()
            }
        }

        proptest! {
            #![proptest_config(config())]

            /// FP32 elements round-trip through the binary extension bit for bit, and through
            /// JSON data as written by serde_json.
            #[test]
            fn f32_elements_round_trip(values in prop::collection::vec(
                any::<f32>().prop_filter("finite", |x| x.is_finite()), 0..64)) {
                let bytes: Vec<u8> = values.iter().flat_map(|x| x.to_le_bytes()).collect();
                let back = binary_to_f32("x", DataType::F32, &bytes, false).unwrap();
                prop_assert_eq!(
                    back.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                    values.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
                );
                let text = serde_json::to_string(&values).unwrap();
                let parsed: JsonData = serde_json::from_str(&text).unwrap();
                prop_assert_eq!(&parsed.dims, &vec![values.len()]);
                let back = json_to_f32("x", DataType::F32, &parsed.values).unwrap();
                prop_assert_eq!(back, values);
            }

            /// Any bytes as any type: values or an error naming the tensor, never a panic.
            #[test]
            fn arbitrary_binary_never_panics(
                bytes in prop::collection::vec(any::<u8>(), 0..64),
                dt in prop::sample::select(vec![
                    DataType::Bool, DataType::U8, DataType::U16, DataType::U32, DataType::U64,
                    DataType::I8, DataType::I16, DataType::I32, DataType::I64, DataType::F16,
                    DataType::F32, DataType::F64, DataType::Bytes,
                ]),
                missing in any::<bool>(),
            ) {
                match binary_to_f32("x", dt, &bytes, missing) {
                    Ok(v) => prop_assert!(v.iter().all(|x| x.is_finite() || (missing && x.is_nan()))),
                    Err(e) => prop_assert!(e.contains("\"x\""), "{}", e),
                }
                let _ = binary_to_strings("x", &bytes, 4);
            }

            /// Any nesting of arrays, numbers and strings: a shape whose product counts the
            /// values, or an error; never a panic (`[[], 0, 1, 1]` once passed as 4 values).
            #[test]
            fn arbitrary_json_data_is_regular_or_refused(data in {
                let leaf = prop_oneof![
                    (-9i32..9).prop_map(serde_json::Value::from),
                    Just(serde_json::Value::from("a")),
                    Just(serde_json::Value::from(true)),
                ];
                leaf.prop_recursive(4, 32, 4, |inner| {
                    prop::collection::vec(inner, 0..4).prop_map(serde_json::Value::Array)
                })
            }) {
                if let Ok(d) = serde_json::from_value::<JsonData>(data.clone()) {
                    let n: usize = d.dims.iter().product();
                    prop_assert_eq!(n, d.values.len() + d.texts.len(), "{}", data);
                }
            }

            /// Any text: never a panic.
            #[test]
            fn arbitrary_json_text_never_panics(text in "[\\[\\], 0-9.e\"a-]{0,40}") {
                let _ = serde_json::from_str::<JsonData>(&text);
            }
        }
    }
}
