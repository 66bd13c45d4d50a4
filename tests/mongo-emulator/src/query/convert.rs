//! Value conversions and reductions shared by expressions and `$group`: `$toString`
//! and the `$toInt`-family conversions, and `$sum $avg $min $max` over a list.

use std::cmp::Ordering;

use bson::Bson;

use super::arith::{self, is_number, to_f64};
use super::compare::compare;
use super::types::type_name;
use super::QueryError;

/// Integer remainder keeping int32 when both operands are int32 (divisor non-zero).
pub fn int_rem(x: &Bson, y: &Bson) -> Bson {
    match (x, y) {
        (Bson::Int32(a), Bson::Int32(b)) => Bson::Int32(a.wrapping_rem(*b)),
        (Bson::Int64(a), Bson::Int64(b)) => Bson::Int64(a.wrapping_rem(*b)),
        (Bson::Int32(a), Bson::Int64(b)) => Bson::Int64(i64::from(*a).wrapping_rem(*b)),
        (Bson::Int64(a), Bson::Int32(b)) => Bson::Int64(a.wrapping_rem(i64::from(*b))),
        _ => Bson::Double(to_f64(x) % to_f64(y)),
    }
}

/// `$max $min $sum $avg` over values, as both expressions and accumulators compute them.
pub fn reduce(op: &str, items: &[Bson]) -> Bson {
    match op {
        "$sum" | "$avg" => {
            let nums: Vec<&Bson> = items.iter().filter(|x| is_number(x)).collect();
            if op == "$avg" {
                if nums.is_empty() {
                    return Bson::Null;
                }
                let total: f64 = nums.iter().map(|x| to_f64(x)).sum();
                return Bson::Double(total / nums.len() as f64);
            }
            nums.into_iter()
                .fold(Bson::Int32(0), |acc, x| arith::add(&acc, x).unwrap_or(acc))
        }
        _ => {
            let vals = items
                .iter()
                .filter(|x| !matches!(x, Bson::Null | Bson::Undefined));
            let pick = if op == "$max" {
                Ordering::Greater
            } else {
                Ordering::Less
            };
            vals.fold(None::<&Bson>, |best, x| match best {
                Some(b) if compare(x, b) != pick => Some(b),
                _ => Some(x),
            })
            .cloned()
            .unwrap_or(Bson::Null)
        }
    }
}

/// `$toString` conversion; `None` when the type cannot be converted.
pub fn to_string(v: &Bson) -> Option<String> {
    Some(match v {
        Bson::String(s) => s.clone(),
        Bson::Int32(i) => i.to_string(),
        Bson::Int64(i) => i.to_string(),
        Bson::Double(f) => format_double(*f),
        Bson::Decimal128(d) => d.to_string(),
        Bson::Boolean(b) => b.to_string(),
        Bson::ObjectId(o) => o.to_hex(),
        Bson::DateTime(d) => d.try_to_rfc3339_string().ok()?,
        _ => return None,
    })
}

fn format_double(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        if f > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        }
    } else if f.fract() == 0.0 && f.abs() < 1e15 {
        format!("{}", f as i64)
    } else {
        format!("{f}")
    }
}

pub fn convert(op: &str, v: &Option<Bson>) -> Result<Option<Bson>, QueryError> {
    let Some(x) = v
        .as_ref()
        .filter(|x| !matches!(x, Bson::Null | Bson::Undefined))
    else {
        return Ok(Some(Bson::Null));
    };
    let fail = || {
        QueryError::new(
            241,
            "ConversionFailure",
            format!(
                "Unsupported conversion from {} in $convert with no onError value",
                type_name(x)
            ),
        )
    };
    let f = match x {
        Bson::Boolean(b) => f64::from(u8::from(*b)),
        Bson::String(s) if op != "$toBool" => s.trim().parse::<f64>().map_err(|_| fail())?,
        Bson::DateTime(d) => d.timestamp_millis() as f64,
        n if is_number(n) => to_f64(n),
        _ if op == "$toBool" => return Ok(Some(Bson::Boolean(true))),
        _ => return Err(fail()),
    };
    Ok(Some(match op {
        "$toInt" => Bson::Int32(f.trunc() as i32),
        "$toLong" => match x {
            Bson::Int64(i) => Bson::Int64(*i),
            _ => Bson::Int64(f.trunc() as i64),
        },
        "$toDouble" => Bson::Double(f),
        _ => Bson::Boolean(f != 0.0),
    }))
}
