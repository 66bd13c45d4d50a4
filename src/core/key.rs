//! MongoDB's ordering of BSON values, so keys sort the way the server sorts `_id`
//! (numbers by value across int/long/double, then strings, objects, arrays, binary,
//! ObjectId, bool, date…). The merge-join of a full reconcile depends on it.

use std::cmp::Ordering;
use std::hash::Hasher;

use bson::{Bson, Document};

/// Canonical type bracket of a value: values of different brackets compare by bracket
/// alone (MongoDB's "BSON comparison order").
fn bracket(value: &Bson) -> u8 {
    match value {
        Bson::MinKey => 0,
        Bson::Null | Bson::Undefined => 1,
        Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_) | Bson::Decimal128(_) => 2,
        Bson::String(_) | Bson::Symbol(_) => 3,
        Bson::Document(_) => 4,
        Bson::Array(_) => 5,
        Bson::Binary(_) => 6,
        Bson::ObjectId(_) => 7,
        Bson::Boolean(_) => 8,
        Bson::DateTime(_) => 9,
        Bson::Timestamp(_) => 10,
        Bson::RegularExpression(_) => 11,
        Bson::DbPointer(_) => 12,
        Bson::JavaScriptCode(_) => 13,
        Bson::JavaScriptCodeWithScope(_) => 14,
        Bson::MaxKey => 15,
    }
}

/// A number reduced to something comparable across BSON numeric types: integers stay
/// exact, everything else becomes an `f64` (decimal128 via its decimal string, which
/// is exact for every value a double can hold).
#[derive(Clone, Copy)]
enum Num {
    /// An exact integer.
    Int(i64),
    /// A floating value (may be NaN or infinite).
    Float(f64),
}

fn as_num(value: &Bson) -> Num {
    match value {
        Bson::Int32(i) => Num::Int(i64::from(*i)),
        Bson::Int64(i) => Num::Int(*i),
        Bson::Double(d) => Num::Float(*d),
        Bson::Decimal128(d) => Num::Float(d.to_string().parse::<f64>().unwrap_or(f64::NAN)),
        _ => Num::Float(f64::NAN),
    }
}

/// 2^63 as a double: the first value above every `i64`.
const TWO_63: f64 = 9_223_372_036_854_775_808.0;

/// Compare an exact integer with a double without losing precision.
fn cmp_int_float(i: i64, f: f64) -> Ordering {
    if f.is_nan() {
        return Ordering::Greater; // MongoDB: NaN sorts below every number
    }
    if f >= TWO_63 {
        return Ordering::Less;
    }
    if f < -TWO_63 {
        return Ordering::Greater;
    }
    let t = f.trunc();
    // `t` is within i64 range here, so the cast is exact.
    match i.cmp(&(t as i64)) {
        Ordering::Equal => {
            let frac = f - t;
            if frac > 0.0 {
                Ordering::Less
            } else if frac < 0.0 {
                Ordering::Greater
            } else {
                Ordering::Equal
            }
        }
        other => other,
    }
}

fn cmp_float(a: f64, b: f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        // -0.0 == 0.0 here, as in MongoDB.
        _ => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
    }
}

fn cmp_num(a: Num, b: Num) -> Ordering {
    match (a, b) {
        (Num::Int(x), Num::Int(y)) => x.cmp(&y),
        (Num::Int(x), Num::Float(y)) => cmp_int_float(x, y),
        (Num::Float(x), Num::Int(y)) => cmp_int_float(y, x).reverse(),
        (Num::Float(x), Num::Float(y)) => cmp_float(x, y),
    }
}

fn str_of(value: &Bson) -> &str {
    match value {
        Bson::String(s) | Bson::Symbol(s) => s,
        _ => "",
    }
}

fn cmp_doc(a: &Document, b: &Document) -> Ordering {
    let mut ia = a.iter();
    let mut ib = b.iter();
    loop {
        match (ia.next(), ib.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some((ka, va)), Some((kb, vb))) => {
                let ord = bracket(va)
                    .cmp(&bracket(vb))
                    .then_with(|| ka.as_bytes().cmp(kb.as_bytes()))
                    .then_with(|| compare_bson(va, vb));
                if ord != Ordering::Equal {
                    return ord;
                }
            }
        }
    }
}

fn cmp_array(a: &[Bson], b: &[Bson]) -> Ordering {
    for (x, y) in a.iter().zip(b) {
        let ord = compare_bson(x, y);
        if ord != Ordering::Equal {
            return ord;
        }
    }
    a.len().cmp(&b.len())
}

/// Compare two BSON values in MongoDB's sort order.
pub fn compare_bson(a: &Bson, b: &Bson) -> Ordering {
    let (ba, bb) = (bracket(a), bracket(b));
    if ba != bb {
        return ba.cmp(&bb);
    }
    match (a, b) {
        (Bson::String(_) | Bson::Symbol(_), _) => str_of(a).as_bytes().cmp(str_of(b).as_bytes()),
        (Bson::Document(x), Bson::Document(y)) => cmp_doc(x, y),
        (Bson::Array(x), Bson::Array(y)) => cmp_array(x, y),
        (Bson::Binary(x), Bson::Binary(y)) => x
            .bytes
            .len()
            .cmp(&y.bytes.len())
            .then_with(|| u8::from(x.subtype).cmp(&u8::from(y.subtype)))
            .then_with(|| x.bytes.cmp(&y.bytes)),
        (Bson::ObjectId(x), Bson::ObjectId(y)) => x.bytes().cmp(&y.bytes()),
        (Bson::Boolean(x), Bson::Boolean(y)) => x.cmp(y),
        (Bson::DateTime(x), Bson::DateTime(y)) => x.timestamp_millis().cmp(&y.timestamp_millis()),
        (Bson::Timestamp(x), Bson::Timestamp(y)) => {
            (x.time, x.increment).cmp(&(y.time, y.increment))
        }
        (Bson::RegularExpression(x), Bson::RegularExpression(y)) => x
            .pattern
            .cmp(&y.pattern)
            .then_with(|| x.options.cmp(&y.options)),
        (Bson::DbPointer(_), Bson::DbPointer(_)) => {
            // Opaque in the bson crate: compare the canonical extended JSON.
            a.clone()
                .into_relaxed_extjson()
                .to_string()
                .cmp(&b.clone().into_relaxed_extjson().to_string())
        }
        (Bson::JavaScriptCode(x), Bson::JavaScriptCode(y)) => x.cmp(y),
        (Bson::JavaScriptCodeWithScope(x), Bson::JavaScriptCodeWithScope(y)) => x
            .code
            .cmp(&y.code)
            .then_with(|| cmp_doc(&x.scope, &y.scope)),
        (Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_) | Bson::Decimal128(_), _) => {
            cmp_num(as_num(a), as_num(b))
        }
        // MinKey, MaxKey, Null, Undefined: one value per bracket.
        _ => Ordering::Equal,
    }
}

/// Hash consistent with [`compare_bson`] equality (e.g. `1_i32`, `1_i64` and `1.0`
/// hash alike).
pub fn hash_bson<H: Hasher>(value: &Bson, state: &mut H) {
    state.write_u8(bracket(value));
    match value {
        Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_) | Bson::Decimal128(_) => {
            match as_num(value) {
                Num::Int(i) => state.write_i64(i),
                Num::Float(f) if f.is_nan() => state.write_u8(0xff),
                Num::Float(f) => {
                    // Integral doubles in i64 range hash like the integer they equal.
                    if f.trunc() == f && (-TWO_63..TWO_63).contains(&f) {
                        state.write_i64(f as i64);
                    } else {
                        state.write_u64(f.to_bits());
                    }
                }
            }
        }
        Bson::String(_) | Bson::Symbol(_) => state.write(str_of(value).as_bytes()),
        Bson::Document(d) => {
            for (k, v) in d {
                state.write(k.as_bytes());
                state.write_u8(0);
                hash_bson(v, state);
            }
            state.write_usize(d.len());
        }
        Bson::Array(items) => {
            for v in items {
                hash_bson(v, state);
            }
            state.write_usize(items.len());
        }
        Bson::Binary(b) => {
            state.write_u8(u8::from(b.subtype));
            state.write(&b.bytes);
        }
        Bson::ObjectId(o) => state.write(&o.bytes()),
        Bson::Boolean(b) => state.write_u8(u8::from(*b)),
        Bson::DateTime(d) => state.write_i64(d.timestamp_millis()),
        Bson::Timestamp(t) => {
            state.write_u32(t.time);
            state.write_u32(t.increment);
        }
        Bson::RegularExpression(r) => {
            state.write(r.pattern.as_bytes());
            state.write(r.options.as_bytes());
        }
        Bson::JavaScriptCode(c) => state.write(c.as_bytes()),
        Bson::JavaScriptCodeWithScope(c) => state.write(c.code.as_bytes()),
        Bson::DbPointer(_) => {
            state.write(value.clone().into_relaxed_extjson().to_string().as_bytes())
        }
        Bson::MinKey | Bson::MaxKey | Bson::Null | Bson::Undefined => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::{doc, oid::ObjectId, spec::BinarySubtype, Binary, DateTime, Decimal128};
    use std::collections::hash_map::DefaultHasher;
    use std::str::FromStr;

    fn h(v: &Bson) -> u64 {
        let mut s = DefaultHasher::new();
        hash_bson(v, &mut s);
        s.finish()
    }

    #[test]
    fn numbers_compare_by_value_across_types() {
        let dec = Bson::Decimal128(Decimal128::from_str("2").unwrap());
        assert_eq!(
            compare_bson(&Bson::Int32(1), &Bson::Int64(1)),
            Ordering::Equal
        );
        assert_eq!(
            compare_bson(&Bson::Int32(1), &Bson::Double(1.0)),
            Ordering::Equal
        );
        assert_eq!(
            compare_bson(&Bson::Double(1.5), &Bson::Int64(2)),
            Ordering::Less
        );
        assert_eq!(compare_bson(&dec, &Bson::Int32(2)), Ordering::Equal);
        assert_eq!(
            compare_bson(&Bson::Int64(i64::MAX), &Bson::Double(9.3e18)),
            Ordering::Less
        );
        assert_eq!(
            compare_bson(&Bson::Double(f64::NAN), &Bson::Int32(-5)),
            Ordering::Less
        );
        assert_eq!(h(&Bson::Int32(1)), h(&Bson::Double(1.0)));
        assert_eq!(h(&Bson::Int64(2)), h(&dec));
        assert_eq!(h(&Bson::Double(-0.0)), h(&Bson::Int32(0)));
    }

    #[test]
    fn brackets_follow_mongodb_order() {
        let ordered = vec![
            Bson::MinKey,
            Bson::Null,
            Bson::Int32(5),
            Bson::String("a".into()),
            Bson::Document(doc! {"a": 1}),
            Bson::Array(vec![Bson::Int32(1)]),
            Bson::Binary(Binary {
                subtype: BinarySubtype::Generic,
                bytes: vec![1],
            }),
            Bson::ObjectId(ObjectId::from_bytes([0; 12])),
            Bson::Boolean(false),
            Bson::DateTime(DateTime::from_millis(0)),
            Bson::Timestamp(bson::Timestamp {
                time: 1,
                increment: 1,
            }),
            Bson::RegularExpression(bson::Regex {
                pattern: "a".into(),
                options: String::new(),
            }),
            Bson::MaxKey,
        ];
        for (i, a) in ordered.iter().enumerate() {
            for (j, b) in ordered.iter().enumerate() {
                assert_eq!(compare_bson(a, b), i.cmp(&j), "{a:?} vs {b:?}");
            }
        }
    }

    #[test]
    fn strings_compare_binary_and_objects_field_by_field() {
        assert_eq!(compare_bson(&"B".into(), &"a".into()), Ordering::Less);
        assert_eq!(compare_bson(&"a".into(), &"ab".into()), Ordering::Less);
        // Type bracket of the field value first, then the name.
        let a = Bson::Document(doc! {"z": 1});
        let b = Bson::Document(doc! {"a": "x"});
        assert_eq!(compare_bson(&a, &b), Ordering::Less);
        let c = Bson::Document(doc! {"a": 1, "b": 2});
        let d = Bson::Document(doc! {"a": 1.0, "b": 2_i64});
        assert_eq!(compare_bson(&c, &d), Ordering::Equal);
        assert_eq!(h(&c), h(&d));
        let short = Bson::Document(doc! {"a": 1});
        assert_eq!(compare_bson(&short, &c), Ordering::Less);
    }

    #[test]
    fn binary_compares_length_then_subtype_then_bytes() {
        let bin = |s: BinarySubtype, b: Vec<u8>| {
            Bson::Binary(Binary {
                subtype: s,
                bytes: b,
            })
        };
        let a = bin(BinarySubtype::UserDefined(0x80), vec![9]);
        let b = bin(BinarySubtype::Generic, vec![0, 0]);
        assert_eq!(compare_bson(&a, &b), Ordering::Less);
        let c = bin(BinarySubtype::Generic, vec![9]);
        assert_eq!(compare_bson(&c, &a), Ordering::Less);
        assert_eq!(
            compare_bson(&c, &bin(BinarySubtype::Generic, vec![8])),
            Ordering::Greater
        );
    }
}
