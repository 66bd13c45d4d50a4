//! Tests for aggregation expressions.

use bson::{doc, Bson, DateTime};

use super::eval_opt;

fn ev(e: Bson) -> Option<Bson> {
    let root = doc! {"_id": 1, "a": 5, "b": 2.5, "s": "x", "arr": [{"v": 1}, {"v": 2}], "o": {"p": 1}, "n": null};
    eval_opt(&e, &root).expect("evaluates")
}

#[test]
fn field_paths_and_variables_resolve() {
    assert_eq!(ev("$a".into()), Some(Bson::Int32(5)));
    assert_eq!(ev("$o.p".into()), Some(Bson::Int32(1)));
    assert_eq!(
        ev("$arr.v".into()),
        Some(Bson::Array(vec![1.into(), 2.into()]))
    );
    assert_eq!(ev("$missing".into()), None);
    assert_eq!(ev("$$ROOT.a".into()), Some(Bson::Int32(5)));
    assert_eq!(ev("$$CURRENT.s".into()), Some(Bson::String("x".into())));
    assert_eq!(
        ev(Bson::Document(doc! {"$literal": "$a"})),
        Some(Bson::String("$a".into()))
    );
}

#[test]
fn arithmetic_promotes_and_handles_null_and_dates() {
    assert_eq!(
        ev(Bson::Document(doc! {"$add": ["$a", 1]})),
        Some(Bson::Int32(6))
    );
    assert_eq!(
        ev(Bson::Document(doc! {"$add": ["$a", "$b"]})),
        Some(Bson::Double(7.5))
    );
    assert_eq!(
        ev(Bson::Document(doc! {"$add": ["$a", "$missing"]})),
        Some(Bson::Null)
    );
    assert_eq!(
        ev(Bson::Document(doc! {"$subtract": ["$a", 7]})),
        Some(Bson::Int32(-2))
    );
    assert_eq!(
        ev(Bson::Document(doc! {"$multiply": ["$a", 2, 3]})),
        Some(Bson::Int32(30))
    );
    assert_eq!(
        ev(Bson::Document(doc! {"$divide": ["$a", 2]})),
        Some(Bson::Double(2.5))
    );
    assert_eq!(
        ev(Bson::Document(doc! {"$mod": ["$a", 3]})),
        Some(Bson::Int32(2))
    );
    let d = DateTime::from_millis(1000);
    assert_eq!(
        ev(Bson::Document(doc! {"$add": [d, 500]})),
        Some(Bson::DateTime(DateTime::from_millis(1500)))
    );
    let root = doc! {};
    assert_eq!(
        eval_opt(&Bson::Document(doc! {"$divide": [1, 0]}), &root)
            .unwrap_err()
            .code,
        2
    );
}

#[test]
fn comparisons_and_booleans() {
    assert_eq!(
        ev(Bson::Document(doc! {"$eq": ["$a", 5.0]})),
        Some(Bson::Boolean(true))
    );
    assert_eq!(
        ev(Bson::Document(doc! {"$gt": ["$s", 100]})),
        Some(Bson::Boolean(true))
    );
    assert_eq!(
        ev(Bson::Document(doc! {"$eq": ["$missing", null]})),
        Some(Bson::Boolean(false))
    );
    assert_eq!(
        ev(Bson::Document(doc! {"$cmp": ["$a", 9]})),
        Some(Bson::Int32(-1))
    );
    assert_eq!(
        ev(Bson::Document(doc! {"$and": [1, "$s"]})),
        Some(Bson::Boolean(true))
    );
    assert_eq!(
        ev(Bson::Document(doc! {"$or": [0, "$n"]})),
        Some(Bson::Boolean(false))
    );
    assert_eq!(
        ev(Bson::Document(doc! {"$not": ["$n"]})),
        Some(Bson::Boolean(true))
    );
}

#[test]
fn conditionals_and_type() {
    assert_eq!(
        ev(Bson::Document(
            doc! {"$cond": [{"$gt": ["$a", 1]}, "big", "small"]}
        )),
        Some("big".into())
    );
    assert_eq!(
        ev(Bson::Document(
            doc! {"$cond": {"if": false, "then": 1, "else": 2}}
        )),
        Some(Bson::Int32(2))
    );
    assert_eq!(
        ev(Bson::Document(doc! {"$ifNull": ["$missing", "$n", "d"]})),
        Some("d".into())
    );
    assert_eq!(
        ev(Bson::Document(doc! {"$type": "$missing"})),
        Some("missing".into())
    );
    assert_eq!(
        ev(Bson::Document(doc! {"$type": "$b"})),
        Some("double".into())
    );
}

#[test]
fn strings_objects_and_arrays() {
    assert_eq!(
        ev(Bson::Document(doc! {"$concat": ["$s", "-", "y"]})),
        Some("x-y".into())
    );
    assert_eq!(
        ev(Bson::Document(doc! {"$concat": ["$s", "$missing"]})),
        Some(Bson::Null)
    );
    assert_eq!(
        ev(Bson::Document(doc! {"$toString": "$a"})),
        Some("5".into())
    );
    assert_eq!(
        ev(Bson::Document(
            doc! {"$mergeObjects": ["$o", {"q": 2}, null]}
        )),
        Some(Bson::Document(doc! {"p": 1, "q": 2}))
    );
    assert_eq!(
        ev(Bson::Document(doc! {"$size": "$arr"})),
        Some(Bson::Int32(2))
    );
    assert_eq!(
        ev(Bson::Document(doc! {"$in": [2, "$arr.v"]})),
        Some(Bson::Boolean(true))
    );
    assert_eq!(
        ev(Bson::Document(doc! {"$arrayElemAt": ["$arr.v", -1]})),
        Some(Bson::Int32(2))
    );
    assert_eq!(
        ev(Bson::Document(doc! {"$arrayElemAt": ["$arr.v", 5]})),
        None
    );
    assert_eq!(
        ev(Bson::Document(doc! {"$max": "$arr.v"})),
        Some(Bson::Int32(2))
    );
    assert_eq!(
        ev(Bson::Document(doc! {"$min": [3, null, 1]})),
        Some(Bson::Int32(1))
    );
    assert_eq!(
        ev(Bson::Document(doc! {"k": "$a", "gone": "$missing"})),
        Some(Bson::Document(doc! {"k": 5}))
    );
}

#[test]
fn errors_name_the_problem() {
    let root = doc! {"a": 1};
    let e = eval_opt(&Bson::Document(doc! {"$nope": 1}), &root).unwrap_err();
    assert_eq!(
        (e.code, e.message.as_str()),
        (168, "Unrecognized expression '$nope'")
    );
    let e = eval_opt(&Bson::Document(doc! {"$size": "$a"}), &root).unwrap_err();
    assert_eq!(e.code, 17124);
    let e = eval_opt(&Bson::Document(doc! {"$concat": ["a", 1]}), &root).unwrap_err();
    assert_eq!(e.code, 16702);
}
