//! A JSON matrix of numbers (`[[1, 2.5], [3, -4e-1]]`), the text of a predict body's `inputs`,
//! read straight into the network's input matrix: one pass over the text, no vector per row,
//! each number read by the standard library's correctly rounded `f32` parser. Reading a number
//! as an `f64` first and rounding that to `f32` (serde_json's way) can round twice; here every
//! value is the `f32` nearest to its decimal. The text has already been checked as JSON by
//! serde_json (it arrives as a raw value), so only its shape and types are checked here.
//!
//! Rejections name the element at fault as the body's other errors do: `inputs[2][5]`.

use crate::error::ApiError;
use ndarray::Array2;

/// The rows of `text`, a JSON array of arrays of numbers, all of one width.
///
/// # Errors
/// A 422 on `field` (or its row or element): not an array, no rows, an empty row, rows of
/// different widths, an element that is not a number, a number beyond `f32`.
pub fn parse(text: &str, field: &str) -> Result<Array2<f32>, ApiError> {
    let mut p = Parser::new(text);
    let x = p.matrix(field)?;
    p.ws();
    if p.i < p.s.len() {
        return Err(ApiError::invalid(field, "is not a JSON array"));
    }
    Ok(x)
}

/// The matrix of a predict body that is exactly `{"inputs": [[…], …]}` (any whitespace), read
/// without a general JSON parser; `None` for any other body, which the caller then reads in
/// full (and answers its errors). The common body, so the one worth a short path.
pub fn inputs_only(body: &[u8]) -> Option<Array2<f32>> {
    let mut p = Parser::new(std::str::from_utf8(body).ok()?);
    p.ws();
    let head = p.eat(b'{')
        && {
            p.ws();
            p.eat_str(b"\"inputs\"")
        }
        && {
            p.ws();
            p.eat(b':')
        };
    if !head {
        return None;
    }
    let x = p.matrix("inputs").ok()?;
    p.ws();
    if !p.eat(b'}') {
        return None;
    }
    p.ws();
    (p.i == p.s.len()).then_some(x)
}

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Self {
        Parser {
            text,
            s: text.as_bytes(),
            i: 0,
        }
    }

    fn eat_str(&mut self, lit: &[u8]) -> bool {
        let hit = self.s[self.i..].starts_with(lit);
        self.i += if hit { lit.len() } else { 0 };
        hit
    }

    /// An array of rows at the position.
    fn matrix(&mut self, field: &str) -> Result<Array2<f32>, ApiError> {
        let p = self;
        p.ws();
        if !p.eat(b'[') {
            return Err(ApiError::invalid(field, "must be an array of rows"));
        }
        // Values are one more than the commas between them, at most: room for all at once
        // (exactly for one row), up to 64 Ki values before growing.
        let commas = count(&p.s[p.i..], b',');
        let mut values = Vec::with_capacity((commas + 1).min(1 << 16));
        let mut width = None;
        let mut rows = 0usize;
        p.ws();
        if !p.eat(b']') {
            loop {
                let at = || format!("{field}[{rows}]");
                p.ws();
                if !p.eat(b'[') {
                    return Err(ApiError::invalid(at(), "must be an array of numbers"));
                }
                let start = values.len();
                p.ws();
                if !p.eat(b']') {
                    loop {
                        p.ws();
                        let j = values.len() - start;
                        let v = p.number().ok_or_else(|| {
                            ApiError::invalid(format!("{}[{j}]", at()), "must be a number")
                        })?;
                        if !v.is_finite() {
                            return Err(ApiError::invalid(
                                format!("{}[{j}]", at()),
                                "is out of range for a 32-bit float",
                            ));
                        }
                        values.push(v);
                        p.ws();
                        if p.eat(b',') {
                            continue;
                        }
                        if p.eat(b']') {
                            break;
                        }
                        return Err(ApiError::invalid(at(), "is not a JSON array"));
                    }
                }
                let n = values.len() - start;
                match width {
                    None if n == 0 => {
                        return Err(ApiError::invalid(at(), "must hold at least one value"));
                    }
                    None => width = Some(n),
                    Some(w) if w != n => {
                        return Err(ApiError::invalid(
                            at(),
                            format!("has {n} values but row 0 has {w}"),
                        ));
                    }
                    Some(_) => {}
                }
                rows += 1;
                p.ws();
                if p.eat(b',') {
                    continue;
                }
                if p.eat(b']') {
                    break;
                }
                return Err(ApiError::invalid(field, "is not a JSON array"));
            }
        }
        let Some(width) = width else {
            return Err(ApiError::invalid(field, "must hold at least one row"));
        };
        Ok(Array2::from_shape_vec((rows, width), values).expect("rows × width values"))
    }
}

const ONES: u64 = 0x0101_0101_0101_0101;

/// How many times `byte` occurs in `s`: per block of 255 in a byte-wide sum, which the compiler
/// turns into compares of many bytes at once.
fn count(s: &[u8], byte: u8) -> usize {
    s.chunks(255)
        .map(|block| usize::from(block.iter().fold(0u8, |n, &c| n + u8::from(c == byte))))
        .sum()
}

struct Parser<'a> {
    text: &'a str,
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.s.get(self.i) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        let hit = self.s.get(self.i) == Some(&c);
        self.i += usize::from(hit);
        hit
    }

    /// Reads digits into `acc` (`acc · 10 + d` while it stays below 10¹⁹; `lost` counts the
    /// digits that did not fit). Returns how many digits it read.
    #[inline(always)]
    fn digits_into(&mut self, acc: &mut u64, lost: &mut i32) -> usize {
        let from = self.i;
        // Eight bytes at a time while `acc` stays below 10¹⁸ whatever they hold (10¹⁰ · 10⁸):
        // then every digit is kept, as the loop below would keep it.
        while *acc < 10_000_000_000
            && let Some(bytes) = self.s.get(self.i..self.i + 8)
        {
            let (n, value) = swar_digits(u64::from_le_bytes(bytes.try_into().expect("8 bytes")));
            *acc = *acc * POW10_U64[n] + value;
            self.i += n;
            if n < 8 {
                return self.i - from;
            }
        }
        while let Some(&c) = self.s.get(self.i) {
            if !c.is_ascii_digit() {
                break;
            }
            if *acc < 1_000_000_000_000_000_000 {
                *acc = *acc * 10 + u64::from(c - b'0');
            } else {
                *lost += 1;
            }
            self.i += 1;
        }
        self.i - from
    }

    /// A JSON number (`-?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?`) as the nearest `f32`;
    /// `None` for anything else (a string, `null`, a nested array), leaving the position.
    #[inline(always)]
    fn number(&mut self) -> Option<f32> {
        if let Some((v, len)) = self.s.get(self.i..self.i + 24).and_then(short_number) {
            self.i += len;
            return Some(v);
        }
        let from = self.i;
        let negative = self.eat(b'-');
        let (mut m, mut lost) = (0u64, 0i32);
        let int = self.digits_into(&mut m, &mut lost);
        let mut ok = int > 0 && (int == 1 || self.s[self.i - int] != b'0');
        let mut exp = lost;
        if ok && self.eat(b'.') {
            let mut dropped = 0;
            let frac = self.digits_into(&mut m, &mut dropped);
            ok = frac > 0;
            exp -= i32::try_from(frac).unwrap_or(i32::MAX) - dropped;
            lost += dropped;
        }
        if ok && (self.eat(b'e') || self.eat(b'E')) {
            let minus = self.eat(b'-') || {
                self.eat(b'+');
                false
            };
            let (mut e, mut big) = (0u64, 0);
            ok = self.digits_into(&mut e, &mut big) > 0;
            let e = if big > 0 {
                i32::MAX
            } else {
                i32::try_from(e).unwrap_or(i32::MAX)
            };
            exp = if minus {
                exp.saturating_sub(e)
            } else {
                exp.saturating_add(e)
            };
        }
        if !ok {
            self.i = from;
            return None;
        }
        let v = match exact(m, exp, lost) {
            Some(v) => v,
            // ASCII only, so the byte positions are character boundaries of the text; and a
            // JSON number is a number `f32::from_str` reads (correctly rounded).
            None => return self.text[from..self.i].parse().ok(),
        };
        Some(if negative { -v } else { v })
    }
}

/// The usual number of a body, `-?(0|[1-9][0-9]*)(.[0-9]+)?` with at most 7 digits before the
/// point and 7 after it, at the start of `w` (24 bytes of text): its value and length, read with
/// two words instead of a byte at a time; `None` for any other text (the general path then
/// reads it, to the same value: the same `m` and exponent go to the same [`exact`]).
fn short_number(w: &[u8]) -> Option<(f32, usize)> {
    let word = |at: usize| u64::from_le_bytes(w[at..at + 8].try_into().expect("8 bytes"));
    let negative = w[0] == b'-';
    let at = usize::from(negative);
    let (n, int) = swar_digits(word(at));
    // No digit, too many, or a leading zero (not JSON): the general path answers.
    if n == 0 || n == 8 || (n > 1 && w[at] == b'0') {
        return None;
    }
    let mut end = at + n;
    let (mut m, mut frac) = (int, 0);
    if w[end] == b'.' {
        let (k, f) = swar_digits(word(end + 1));
        if k == 0 || k == 8 {
            return None;
        }
        (m, frac) = (int * POW10_U64[k] + f, k);
        end += 1 + k;
    }
    // A digit cannot follow (fewer than 8 were read); an exponent or a second point can.
    if matches!(w[end], b'e' | b'E' | b'.') {
        return None;
    }
    let v = exact(m, -(frac as i32), 0)?;
    Some((if negative { -v } else { v }, end))
}

const POW10_U64: [u64; 9] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
];

/// The digits that open eight bytes of text (`x`, read little-endian: the first byte lowest):
/// how many there are, and their value, found with a few word operations instead of a loop.
fn swar_digits(x: u64) -> (usize, u64) {
    // A byte is a digit when its high nibble is 3, and still 3 after adding 6. The addition can
    // carry out of a byte only above 0xF9 (a non-digit), and only into the bytes after it.
    let high = |v: u64| (v & (0xF0 * ONES)) ^ (0x30 * ONES);
    let other = high(x) | high(x.wrapping_add(6 * ONES));
    let n = (other.trailing_zeros() / 8) as usize;
    if n == 0 {
        return (0, 0);
    }
    // The n digits as values 0–9, moved to the top so that zero bytes lead them, then combined
    // pairwise: bytes into 2-digit, 4-digit and 8-digit numbers (no step overflows its lane).
    let mut v = x.wrapping_sub(0x30 * ONES) << (8 * (8 - n));
    v = (v.wrapping_mul(10) + (v >> 8)) & 0x00FF_00FF_00FF_00FF;
    v = (v.wrapping_mul(100) + (v >> 16)) & 0x0000_FFFF_0000_FFFF;
    v = (v.wrapping_mul(10_000) + (v >> 32)) & 0xFFFF_FFFF;
    (n, v)
}

/// `m · 10^exp` as the nearest `f32` when that is quick to get exactly (Clinger's fast path):
/// `m` and `10^|exp|` are exact `f64`s, so one multiplication or division rounds the decimal
/// correctly to `f64`; rounding that `f64` to `f32` is then correct unless it lies exactly
/// halfway between two `f32`s (a nearer `f64` to the decimal would otherwise sit between them).
/// `None` when a digit was dropped, `m` exceeds 2⁵³, `|exp|` exceeds 22, or at a halfway point.
fn exact(m: u64, exp: i32, lost: i32) -> Option<f32> {
    const POW10: [f64; 23] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
        1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
    ];
    const POW10_F32: [f32; 11] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10];
    if lost > 0 || m > 1 << 53 {
        return None;
    }
    // The common case, in f32 alone (Clinger's fast path): m ≤ 2²⁴ and 10^|exp| ≤ 10¹⁰ are
    // exact f32s, so one correctly rounded division or product is the nearest f32.
    if m <= 1 << 24
        && let Some(&p) = POW10_F32.get(usize::try_from(exp.unsigned_abs()).ok()?)
    {
        #[allow(clippy::cast_precision_loss)] // m ≤ 2²⁴: exact
        let m = m as f32;
        return Some(if exp < 0 { m / p } else { m * p });
    }
    let p = *POW10.get(usize::try_from(exp.unsigned_abs()).ok()?)?;
    #[allow(clippy::cast_precision_loss)] // m ≤ 2⁵³: exact
    let d = if exp < 0 { m as f64 / p } else { m as f64 * p };
    // Every such value lies in f32's normal range (or is 0): 2⁵³ · 10²² < 3.4 · 10³⁸ and
    // 10⁻²² > 1.2 · 10⁻³⁸. Halfway between two f32s, the 29 bits below f32's mantissa read
    // exactly 1000…0.
    const BELOW: u64 = (1 << 29) - 1;
    if d.to_bits() & BELOW == 1 << 28 {
        return None;
    }
    #[allow(clippy::cast_possible_truncation)] // the rounding wanted
    Some(d as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(text: &str) -> String {
        parse(text, "inputs").unwrap_err().field.unwrap()
    }

    #[test]
    fn reads_rows_of_numbers() {
        let x = parse(" [ [1, 2.5 ,-3e2] ,\n[0, -0.0, 1E-3] ] ", "inputs").unwrap();
        assert_eq!(x.shape(), &[2, 3]);
        assert_eq!(x.row(0).to_vec(), vec![1.0, 2.5, -300.0]);
        assert_eq!(x.row(1).to_vec(), vec![0.0, -0.0, 1e-3]);
    }

    #[test]
    fn every_value_is_the_nearest_f32_of_its_decimal() {
        for t in [
            "0.1",
            "0.333333343267",
            "16777217",
            "3.4028234e38",
            "1e-45",
            "1.17549435e-38",
        ] {
            let x = parse(&format!("[[{t}]]"), "inputs").unwrap();
            assert_eq!(x[[0, 0]], t.parse::<f32>().unwrap(), "{t}");
        }
    }

    #[test]
    fn the_fast_path_rounds_as_the_standard_library_does() {
        let mut seed = 11u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1442695040888963407);
            seed >> 11
        };
        for _ in 0..200_000 {
            let digits = 1 + next() % 17;
            let m = next() % 10u64.pow(u32::try_from(digits).unwrap());
            let e = i64::try_from(next() % 60).unwrap() - 30;
            for t in [
                format!("{m}e{e}"),
                format!("-{m}.{:03}", next() % 1000),
                format!("{}.{}", m % 10_000_000, next() % 10_000_000),
            ] {
                let mut p = Parser::new(&t);
                assert_eq!(p.number(), Some(t.parse::<f32>().unwrap()), "{t}");
                // With text after it, the short path may take it: the same value and length.
                let padded = format!("{t}, {}", " ".repeat(24));
                let mut p = Parser::new(&padded);
                assert_eq!(p.number(), Some(t.parse::<f32>().unwrap()), "{t}");
                assert_eq!(p.i, t.len(), "{t}");
            }
        }
        // Halfway between two f32s: the fast path gives way, and ties go to even.
        for half in ["16777217", "16777219", "1.6777219e7"] {
            assert!(
                exact(
                    half.replace(".", "").replace("e7", "").parse().unwrap(),
                    0,
                    0
                )
                .is_none()
            );
            assert_eq!(
                Parser::new(half).number(),
                Some(half.parse::<f32>().unwrap())
            );
        }
        assert_eq!(Parser::new("0.000").number(), Some(0.0));
        assert!(Parser::new("-0").number().unwrap().is_sign_negative());
    }

    #[test]
    fn eight_bytes_at_once_read_as_the_byte_loop_reads() {
        // Bytes next to the digits ('/' and ':'), and high ones whose +6 carries.
        let alphabet = b"0123456789/:.,e -\xf9\xfa\xff";
        let mut seed = 3u64;
        for _ in 0..200_000 {
            let mut bytes = [0u8; 8];
            for b in &mut bytes {
                seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                // Mostly digits, so that long runs occur.
                let k = (seed >> 33) as usize % (alphabet.len() + 20);
                *b = alphabet[if k < alphabet.len() { k } else { k % 10 }];
            }
            let n = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
            let value = bytes[..n]
                .iter()
                .fold(0u64, |v, &b| v * 10 + u64::from(b - b'0'));
            assert_eq!(
                swar_digits(u64::from_le_bytes(bytes)),
                (n, value),
                "{bytes:?}"
            );
        }
        assert_eq!(count(&[b','; 1000], b','), 1000);
    }

    #[test]
    fn agrees_with_serde_json_on_short_decimals() {
        // Below 16 significant digits an f64 reading rounds once, so both agree exactly.
        let mut seed = 7u64;
        let mut text = String::from("[[");
        let mut want = Vec::new();
        for k in 0..2000 {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let v = (seed >> 11) as f64 / (1u64 << 53) as f64 * 2e4 - 1e4;
            let s = format!("{v:.6}");
            want.push(serde_json::from_str::<f32>(&s).unwrap());
            if k > 0 {
                text.push(',');
            }
            text.push_str(&s);
        }
        text.push_str("]]");
        let x = parse(&text, "inputs").unwrap();
        assert_eq!(x.row(0).to_vec(), want);
    }

    #[test]
    fn the_short_path_takes_only_a_body_of_inputs_alone() {
        let x = inputs_only(b" {\n \"inputs\" : [[1, 2], [3, 4]] }\n").unwrap();
        assert_eq!(x, ndarray::array![[1.0, 2.0], [3.0, 4.0]]);
        for other in [
            &br#"{"inputs": [[1, 2]], "records": []}"#[..],
            br#"{"records": [{"a": 1}]}"#,
            br#"{"\u0069nputs": [[1]]}"#,
            br#"{"inputs": [[1, "a"]]}"#,
            br#"{"inputs": [[1]]} x"#,
            br#"{"inputs": [[1]]"#,
            b"\xff",
        ] {
            assert!(
                inputs_only(other).is_none(),
                "{}",
                String::from_utf8_lossy(other)
            );
        }
    }

    #[test]
    fn names_the_element_at_fault() {
        assert_eq!(field_of(r#"[[1, "a"]]"#), "inputs[0][1]");
        assert_eq!(field_of("[[1, null]]"), "inputs[0][1]");
        assert_eq!(field_of("[[1], [2, [3]]]"), "inputs[1][1]");
        assert_eq!(field_of("[[1, 1e39]]"), "inputs[0][1]");
        assert_eq!(field_of("[[1, 2], [3]]"), "inputs[1]");
        assert_eq!(field_of("[[1], 2]"), "inputs[1]");
        assert_eq!(field_of("[[]]"), "inputs[0]");
        assert_eq!(field_of("[]"), "inputs");
        assert_eq!(field_of("{}"), "inputs");
        assert_eq!(field_of("[[1, 01]]"), "inputs[0][1]");
        assert_eq!(field_of("[[1, 1.]]"), "inputs[0][1]");
        assert_eq!(field_of("[[1, .5]]"), "inputs[0][1]");
        assert_eq!(field_of("[[1, 1e]]"), "inputs[0][1]");
        assert_eq!(field_of("[[1, -]]"), "inputs[0][1]");
        // The same with room for the short path after each.
        let pad = " ".repeat(24);
        for bad in ["01", "1.", ".5", "1e", "-", "-01.5", "1.5.5", "1 2", "1x"] {
            let body = format!("[[1, {bad}{pad}]]");
            let want = if bad.contains(' ') || bad.ends_with('x') || bad == "1.5.5" {
                "inputs[0]"
            } else {
                "inputs[0][1]"
            };
            assert_eq!(field_of(&body), want, "{bad}");
        }
    }
}
