//! Number arithmetic with MongoDB's type promotion: int32 op int32 stays int32 unless it
//! overflows (then int64), int64 overflow becomes double, any double makes a double,
//! any decimal128 makes a decimal128 (computed through `f64` here, an approximation).

use bson::{Bson, Decimal128};

use super::compare::decimal_to_f64;

/// The arithmetic kind of a numeric value, in promotion order.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
enum Kind {
    Int32,
    Int64,
    Double,
    Decimal,
}

fn kind(v: &Bson) -> Option<Kind> {
    Some(match v {
        Bson::Int32(_) => Kind::Int32,
        Bson::Int64(_) => Kind::Int64,
        Bson::Double(_) => Kind::Double,
        Bson::Decimal128(_) => Kind::Decimal,
        _ => return None,
    })
}

fn to_i64(v: &Bson) -> i64 {
    match v {
        Bson::Int32(i) => i64::from(*i),
        Bson::Int64(i) => *i,
        _ => 0,
    }
}

/// The value as `f64` (decimals approximated); 0 for non-numbers.
pub fn to_f64(v: &Bson) -> f64 {
    match v {
        Bson::Int32(i) => f64::from(*i),
        Bson::Int64(i) => *i as f64,
        Bson::Double(f) => *f,
        Bson::Decimal128(d) => decimal_to_f64(d),
        _ => 0.0,
    }
}

/// Make a Decimal128 from an `f64` via its decimal string.
pub fn decimal_from_f64(f: f64) -> Bson {
    let s = if f.is_nan() {
        "NaN".to_string()
    } else if f.is_infinite() {
        if f > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        }
    } else {
        format!("{f:?}")
    };
    match s.parse::<Decimal128>() {
        Ok(d) => Bson::Decimal128(d),
        Err(_) => Bson::Double(f),
    }
}

fn int_result(r: Option<i64>, k: Kind, fallback: f64) -> Bson {
    match r {
        Some(x) if k == Kind::Int32 && i32::try_from(x).is_ok() => Bson::Int32(x as i32),
        Some(x) => Bson::Int64(x),
        None => Bson::Double(fallback),
    }
}

fn combine(
    a: &Bson,
    b: &Bson,
    int_op: fn(i64, i64) -> Option<i64>,
    float_op: fn(f64, f64) -> f64,
) -> Option<Bson> {
    let k = kind(a)?.max_by(kind(b)?);
    let f = float_op(to_f64(a), to_f64(b));
    Some(match k {
        Kind::Decimal => decimal_from_f64(f),
        Kind::Double => Bson::Double(f),
        _ => int_result(int_op(to_i64(a), to_i64(b)), k, f),
    })
}

trait MaxBy {
    fn max_by(self, other: Self) -> Self;
}

impl MaxBy for Kind {
    fn max_by(self, other: Kind) -> Kind {
        if other > self {
            other
        } else {
            self
        }
    }
}

/// `a + b`, or `None` when either is not a number.
pub fn add(a: &Bson, b: &Bson) -> Option<Bson> {
    combine(a, b, i64::checked_add, |x, y| x + y)
}

/// `a - b`, or `None` when either is not a number.
pub fn sub(a: &Bson, b: &Bson) -> Option<Bson> {
    combine(a, b, i64::checked_sub, |x, y| x - y)
}

/// `a * b`, or `None` when either is not a number.
pub fn mul(a: &Bson, b: &Bson) -> Option<Bson> {
    combine(a, b, i64::checked_mul, |x, y| x * y)
}

/// Whether a value is a number.
pub fn is_number(v: &Bson) -> bool {
    kind(v).is_some()
}

/// The zero of the same numeric type as `v` (for `$mul` on a missing field).
pub fn zero_like(v: &Bson) -> Bson {
    match v {
        Bson::Int64(_) => Bson::Int64(0),
        Bson::Double(_) => Bson::Double(0.0),
        Bson::Decimal128(_) => decimal_from_f64(0.0),
        _ => Bson::Int32(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int32_overflow_promotes_to_int64_and_int64_overflow_to_double() {
        assert_eq!(add(&Bson::Int32(1), &Bson::Int32(2)), Some(Bson::Int32(3)));
        assert_eq!(
            add(&Bson::Int32(i32::MAX), &Bson::Int32(1)),
            Some(Bson::Int64(i64::from(i32::MAX) + 1))
        );
        assert!(matches!(
            add(&Bson::Int64(i64::MAX), &Bson::Int32(1)),
            Some(Bson::Double(_))
        ));
        assert_eq!(
            mul(&Bson::Int32(2), &Bson::Double(1.5)),
            Some(Bson::Double(3.0))
        );
        assert_eq!(add(&Bson::Int32(2), &"x".into()), None);
    }

    #[test]
    fn decimal_operand_makes_decimal_result() {
        let d: Decimal128 = "1.5".parse().unwrap();
        let r = add(&Bson::Decimal128(d), &Bson::Int32(1)).unwrap();
        assert_eq!(r, decimal_from_f64(2.5));
    }
}
