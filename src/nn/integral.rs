//! Integers read as JSON Schema reads them: `406.0` is the integer 406 (an integral number is an
//! integer, whatever its spelling), `406.5` is not one. serde's own integer types refuse any
//! number written with a fraction or an exponent, so every integer field of a request names one
//! of these functions in `#[serde(deserialize_with = …)]`; the field keeps its plain type.
//!
//! Out of range (a negative count, more than the type holds) and fractional numbers are refused
//! with serde's usual messages ("invalid type: floating point `406.5`, expected an integer").

use serde::de::{self, Deserialize, Deserializer, SeqAccess, Unexpected, Visitor};
use std::fmt;
use std::marker::PhantomData;

/// An integer of type `T` (`usize`, `u32`, `u64`, `i64`, …) from an integer or an integral float.
///
/// # Errors
/// Not a number, a number with a fraction, or one outside `T`'s range.
pub fn integer<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64> + TryFrom<i64>,
{
    Integral::<T>::deserialize(d).map(|i| i.0)
}

/// [`integer`] for an optional field (`null` or absent is `None`; pair it with `#[serde(default)]`).
///
/// # Errors
/// As [`integer`].
pub fn optional<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64> + TryFrom<i64>,
{
    Option::<Integral<T>>::deserialize(d).map(|o| o.map(|i| i.0))
}

/// [`integer`] for every element of an array.
///
/// # Errors
/// As [`integer`], for the first element at fault.
pub fn list<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64> + TryFrom<i64>,
{
    struct Items<T>(PhantomData<T>);
    impl<'de, T: TryFrom<u64> + TryFrom<i64>> Visitor<'de> for Items<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an array of integers")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            // No capacity from the hint: a hostile length must not allocate.
            let mut v = Vec::new();
            while let Some(Integral(x)) = seq.next_element::<Integral<T>>()? {
                v.push(x);
            }
            Ok(v)
        }
    }
    d.deserialize_seq(Items(PhantomData))
}

/// The integer inside; `Deserialize` does the reading.
struct Integral<T>(T);

impl<'de, T: TryFrom<u64> + TryFrom<i64>> Deserialize<'de> for Integral<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(IntegralVisitor(PhantomData))
    }
}

struct IntegralVisitor<T>(PhantomData<T>);

/// 2⁶⁴ and 2⁶³ as floats (both exact): integral floats below them convert without loss.
const TWO_64: f64 = 18_446_744_073_709_551_616.0;
const TWO_63: f64 = 9_223_372_036_854_775_808.0;

impl<'de, T: TryFrom<u64> + TryFrom<i64>> Visitor<'de> for IntegralVisitor<T> {
    type Value = Integral<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = std::any::type_name::<T>();
        if name.starts_with('u') {
            write!(f, "a non-negative integer within {name}")
        } else {
            write!(f, "an integer within {name}")
        }
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        T::try_from(v)
            .map(Integral)
            .map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &self))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        T::try_from(v)
            .map(Integral)
            .map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))
    }

    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        if !v.is_finite() || v.fract() != 0.0 {
            return Err(E::invalid_type(Unexpected::Float(v), &self));
        }
        if (0.0..TWO_64).contains(&v) {
            self.visit_u64(v as u64)
        } else if (-TWO_63..0.0).contains(&v) {
            self.visit_i64(v as i64)
        } else {
            Err(E::invalid_value(Unexpected::Float(v), &self))
        }
    }
}
