//! Tests for query matching.

use bson::{doc, Bson, Document};

use super::{eval, parse};

fn m(d: Document, f: Document) -> bool {
    eval(&parse(&f).expect("valid filter"), &d).expect("evaluates")
}

fn err(f: Document) -> (i32, String) {
    let e = parse(&f).expect_err("invalid filter");
    (e.code, e.message)
}

#[test]
fn implicit_equality_matches_value_or_any_array_element_or_whole_array() {
    assert!(m(doc! {"a": 1}, doc! {"a": 1.0}));
    assert!(m(doc! {"a": [1, 2]}, doc! {"a": 2}));
    assert!(m(doc! {"a": [1, 2]}, doc! {"a": [1, 2]}));
    assert!(!m(doc! {"a": [1, 2]}, doc! {"a": [2, 1]}));
    assert!(!m(doc! {"a": "1"}, doc! {"a": 1}));
}

#[test]
fn embedded_document_equality_is_exact_and_order_sensitive() {
    assert!(m(
        doc! {"a": {"x": 1, "y": 2}},
        doc! {"a": {"x": 1, "y": 2}}
    ));
    assert!(!m(
        doc! {"a": {"x": 1, "y": 2}},
        doc! {"a": {"y": 2, "x": 1}}
    ));
    assert!(!m(doc! {"a": {"x": 1, "y": 2}}, doc! {"a": {"x": 1}}));
}

#[test]
fn null_matches_missing_and_null_but_exists_distinguishes() {
    assert!(m(doc! {"b": 1}, doc! {"a": null}));
    assert!(m(doc! {"a": null}, doc! {"a": null}));
    assert!(!m(doc! {"a": 0}, doc! {"a": null}));
    assert!(!m(doc! {"b": 1}, doc! {"a": {"$exists": true}}));
    assert!(m(doc! {"a": null}, doc! {"a": {"$exists": true}}));
    assert!(m(doc! {"b": 1}, doc! {"a": {"$ne": 1}}));
    assert!(!m(doc! {"b": 1}, doc! {"a": {"$ne": null}}));
}

#[test]
fn range_operators_stay_within_type_bracket() {
    assert!(m(doc! {"a": 5}, doc! {"a": {"$gt": 4.5, "$lte": 5i64}}));
    assert!(!m(doc! {"a": "z"}, doc! {"a": {"$gt": 5}}));
    assert!(!m(doc! {"a": 5}, doc! {"a": {"$lt": "a"}}));
    assert!(m(doc! {"a": [1, 10]}, doc! {"a": {"$gt": 5, "$lt": 2}}));
    assert!(m(doc! {}, doc! {"a": {"$gte": null}}));
    assert!(!m(doc! {}, doc! {"a": {"$gt": null}}));
    let t1 = bson::DateTime::from_millis(1000);
    assert!(m(
        doc! {"u": t1},
        doc! {"u": {"$lt": bson::DateTime::from_millis(2000)}}
    ));
}

#[test]
fn dotted_paths_walk_documents_arrays_and_indexes() {
    let d = doc! {"a": {"b": [{"c": 1}, {"c": 2}]}, "l": [5, 6]};
    assert!(m(d.clone(), doc! {"a.b.c": 2}));
    assert!(m(d.clone(), doc! {"a.b.1.c": 2}));
    assert!(!m(d.clone(), doc! {"a.b.0.c": 2}));
    assert!(m(d.clone(), doc! {"l.1": 6}));
    assert!(m(d.clone(), doc! {"a.x.y": null}));
}

#[test]
fn in_nin_all_size_and_elem_match() {
    let d = doc! {"a": [1, 2, 3], "s": "hello", "o": [{"x": 1, "y": 2}, {"x": 3, "y": 4}]};
    assert!(m(d.clone(), doc! {"a": {"$in": [9, 3]}}));
    assert!(m(
        d.clone(),
        doc! {"s": {"$in": [Bson::RegularExpression(bson::Regex{pattern: "^he".into(), options: String::new()})]}}
    ));
    assert!(!m(d.clone(), doc! {"a": {"$nin": [3]}}));
    assert!(m(doc! {}, doc! {"a": {"$in": [null]}}));
    assert!(m(d.clone(), doc! {"a": {"$all": [3, 1]}}));
    assert!(!m(d.clone(), doc! {"a": {"$all": [3, 4]}}));
    assert!(m(d.clone(), doc! {"a": {"$size": 3}}));
    assert!(!m(d.clone(), doc! {"s": {"$size": 5}}));
    assert!(m(d.clone(), doc! {"o": {"$elemMatch": {"x": 3, "y": 4}}}));
    assert!(!m(d.clone(), doc! {"o": {"$elemMatch": {"x": 1, "y": 4}}}));
    assert!(m(
        d.clone(),
        doc! {"a": {"$elemMatch": {"$gt": 2, "$lt": 4}}}
    ));
    assert!(m(d, doc! {"o": {"$all": [{"$elemMatch": {"x": 3}}]}}));
}

#[test]
fn logical_operators_combine() {
    let d = doc! {"a": 1, "b": 2};
    assert!(m(d.clone(), doc! {"$or": [{"a": 2}, {"b": 2}]}));
    assert!(!m(d.clone(), doc! {"$and": [{"a": 1}, {"b": 3}]}));
    assert!(m(d.clone(), doc! {"$nor": [{"a": 2}, {"b": 3}]}));
    assert!(m(d.clone(), doc! {"a": {"$not": {"$gt": 5}}}));
    assert!(m(doc! {}, doc! {"a": {"$not": {"$gt": 5}}}));
    assert!(!m(d, doc! {"a": {"$not": {"$lt": 5}}}));
}

#[test]
fn type_accepts_numbers_aliases_and_number() {
    let d = doc! {"i": 1, "l": 2i64, "s": "x", "n": null, "arr": [1, "x"]};
    assert!(m(d.clone(), doc! {"i": {"$type": "int"}}));
    assert!(m(d.clone(), doc! {"i": {"$type": 16}}));
    assert!(m(d.clone(), doc! {"l": {"$type": "number"}}));
    assert!(m(d.clone(), doc! {"s": {"$type": ["double", "string"]}}));
    assert!(m(d.clone(), doc! {"n": {"$type": "null"}}));
    assert!(m(d.clone(), doc! {"arr": {"$type": "array"}}));
    assert!(m(d.clone(), doc! {"arr": {"$type": "string"}}));
    assert!(!m(d, doc! {"zz": {"$type": "null"}}));
    assert_eq!(
        err(doc! {"a": {"$type": "missing"}}).1,
        "Unknown type name alias: missing"
    );
    assert_eq!(err(doc! {"a": {"$type": 99}}).0, 2);
}

#[test]
fn regex_supports_options_and_literals() {
    let d = doc! {"s": "Hello\nWorld"};
    assert!(m(
        d.clone(),
        doc! {"s": {"$regex": "^hello", "$options": "i"}}
    ));
    assert!(!m(d.clone(), doc! {"s": {"$regex": "^World"}}));
    assert!(m(
        d.clone(),
        doc! {"s": {"$regex": "^World", "$options": "m"}}
    ));
    assert!(m(d.clone(), doc! {"s": {"$regex": "o.W", "$options": "s"}}));
    assert!(m(
        d.clone(),
        doc! {"s": Bson::RegularExpression(bson::Regex{pattern: "WORLD".into(), options: "i".into()})}
    ));
    assert!(m(d, doc! {"s": {"$regex": "w o r", "$options": "ix"}}));
    assert_eq!(
        err(doc! {"s": {"$options": "i"}}).1,
        "$options needs a $regex"
    );
}

#[test]
fn mod_divides_numbers() {
    assert!(m(doc! {"a": 10}, doc! {"a": {"$mod": [4, 2]}}));
    assert!(m(doc! {"a": 10.7}, doc! {"a": {"$mod": [4, 2]}}));
    assert!(!m(doc! {"a": "10"}, doc! {"a": {"$mod": [4, 2]}}));
    assert_eq!(
        err(doc! {"a": {"$mod": [4]}}).1,
        "malformed mod, not enough elements"
    );
}

#[test]
fn unknown_operators_are_bad_value() {
    assert_eq!(
        err(doc! {"a": {"$foo": 1}}),
        (2, "unknown operator: $foo".to_string())
    );
    let (code, msg) = err(doc! {"$foo": 1});
    assert_eq!(code, 2);
    assert!(msg.starts_with("unknown top level operator: $foo"));
    assert_eq!(
        err(doc! {"$or": []}).1,
        "$and/$or/$nor must be a nonempty array"
    );
    assert_eq!(err(doc! {"a": {"$in": 1}}).1, "$in needs an array");
}

#[test]
fn expr_compares_fields_of_the_document() {
    assert!(m(
        doc! {"a": 5, "b": 3},
        doc! {"$expr": {"$gt": ["$a", "$b"]}}
    ));
    assert!(!m(
        doc! {"a": 1, "b": 3},
        doc! {"$expr": {"$gt": ["$a", "$b"]}}
    ));
    assert_eq!(err(doc! {"$expr": {"$bogus": 1}}).0, 168);
}

#[test]
fn compiled_filter_matches_like_matches() {
    let f = super::super::Filter::new(&doc! {"a": {"$regex": "^x"}}).unwrap();
    assert!(f.matches(&doc! {"a": "xy"}).unwrap());
    assert!(!f.matches(&doc! {"a": "yx"}).unwrap());
    assert!(super::super::Filter::new(&doc! {"a": {"$bad": 1}}).is_err());
}

#[test]
fn nested_logic_regex_on_arrays_and_exists_false() {
    let d = doc! {"tags": ["red", "blue"], "n": 3};
    assert!(m(
        d.clone(),
        doc! {"$and": [{"$or": [{"n": 1}, {"n": 3}]}, {"tags": {"$regex": "^bl"}}]}
    ));
    assert!(m(
        d.clone(),
        doc! {"tags": {"$not": Bson::RegularExpression(bson::Regex{pattern: "^g".into(), options: String::new()})}}
    ));
    assert!(m(d.clone(), doc! {"gone": {"$exists": false}}));
    assert!(!m(d.clone(), doc! {"n": {"$exists": false}}));
    assert!(m(d, doc! {"tags": {"$all": ["blue"], "$size": 2}}));
}

#[test]
fn object_ids_and_dates_compare_by_value() {
    let id = bson::oid::ObjectId::new();
    let d = doc! {"_id": id, "t": bson::DateTime::from_millis(10)};
    assert!(m(d.clone(), doc! {"_id": id}));
    assert!(m(
        d.clone(),
        doc! {"t": {"$gte": bson::DateTime::from_millis(10)}}
    ));
    assert!(!m(d, doc! {"t": {"$gt": 5}}));
}
