//! Tests for update application.

use bson::{doc, Bson, Document};

use super::super::{apply_update, UpdateSpec};

fn up(d: Document, u: Bson) -> Result<Document, (i32, String)> {
    let spec = UpdateSpec::parse(&u).map_err(|e| (e.code, e.message.clone()))?;
    apply_update(&d, &spec, false).map_err(|e| (e.code, e.message))
}

fn ok(d: Document, u: Document) -> Document {
    up(d, Bson::Document(u)).expect("update applies")
}

#[test]
fn set_keeps_position_of_existing_fields_and_appends_new_ones_in_name_order() {
    let d = doc! {"_id": 1, "b": 1, "a": 1};
    assert_eq!(
        ok(d, doc! {"$set": {"z": 1, "c": 2, "b": 9}}),
        doc! {"_id": 1, "b": 9, "a": 1, "c": 2, "z": 1}
    );
}

#[test]
fn dotted_set_creates_embedded_documents() {
    assert_eq!(
        ok(doc! {"_id": 1}, doc! {"$set": {"x.y.z": 1}}),
        doc! {"_id": 1, "x": {"y": {"z": 1}}}
    );
    assert_eq!(
        ok(doc! {"_id": 1, "l": [1, 2]}, doc! {"$set": {"l.1": 5}}),
        doc! {"_id": 1, "l": [1, 5]}
    );
}

#[test]
fn unset_inc_mul_min_max_rename() {
    let d = doc! {"_id": 1, "a": 1, "b": 2, "c": 5, "r": "x"};
    let u = doc! {"$unset": {"a": ""}, "$inc": {"b": 3, "n": 1}, "$mul": {"c": 2.0, "m": 2}, "$rename": {"r": "s"}};
    assert_eq!(
        ok(d, u),
        doc! {"_id": 1, "b": 5, "c": 10.0, "m": 0, "n": 1, "s": "x"}
    );
    let d = doc! {"_id": 1, "lo": 5, "hi": 5};
    assert_eq!(
        ok(d, doc! {"$min": {"lo": 3, "hi": 9}}),
        doc! {"_id": 1, "lo": 3, "hi": 5}
    );
    let d = doc! {"_id": 1, "lo": 5, "hi": 5};
    assert_eq!(
        ok(d, doc! {"$max": {"lo": 3, "hi": 9}}),
        doc! {"_id": 1, "lo": 5, "hi": 9}
    );
}

#[test]
fn array_operators() {
    let d = doc! {"_id": 1, "a": [1, 2, 3, 2]};
    assert_eq!(
        ok(d.clone(), doc! {"$push": {"a": 4}}),
        doc! {"_id": 1, "a": [1, 2, 3, 2, 4]}
    );
    assert_eq!(
        ok(
            d.clone(),
            doc! {"$push": {"a": {"$each": [7, 8], "$position": 0, "$slice": 3}}}
        ),
        doc! {"_id": 1, "a": [7, 8, 1]}
    );
    assert_eq!(
        ok(
            d.clone(),
            doc! {"$push": {"a": {"$each": [0], "$sort": -1, "$slice": -2}}}
        ),
        doc! {"_id": 1, "a": [1, 0]}
    );
    assert_eq!(
        ok(d.clone(), doc! {"$addToSet": {"a": {"$each": [2, 9]}}}),
        doc! {"_id": 1, "a": [1, 2, 3, 2, 9]}
    );
    assert_eq!(
        ok(d.clone(), doc! {"$pull": {"a": 2}}),
        doc! {"_id": 1, "a": [1, 3]}
    );
    assert_eq!(
        ok(d.clone(), doc! {"$pull": {"a": {"$gte": 2}}}),
        doc! {"_id": 1, "a": [1]}
    );
    assert_eq!(
        ok(d.clone(), doc! {"$pop": {"a": -1}}),
        doc! {"_id": 1, "a": [2, 3, 2]}
    );
    assert_eq!(
        ok(d, doc! {"$pullAll": {"a": [1, 3]}}),
        doc! {"_id": 1, "a": [2, 2]}
    );
    assert_eq!(
        ok(doc! {"_id": 1}, doc! {"$push": {"n": 1}}),
        doc! {"_id": 1, "n": [1]}
    );
    let d = doc! {"_id": 1, "o": [{"k": 1, "v": 1}, {"k": 2}]};
    assert_eq!(
        ok(d, doc! {"$pull": {"o": {"k": 2}}}),
        doc! {"_id": 1, "o": [{"k": 1, "v": 1}]}
    );
}

#[test]
fn set_on_insert_applies_only_on_upsert_insert() {
    let spec = UpdateSpec::parse(&Bson::Document(
        doc! {"$setOnInsert": {"c": 1}, "$set": {"s": 1}},
    ))
    .unwrap();
    assert_eq!(
        apply_update(&doc! {"_id": 1}, &spec, false).unwrap(),
        doc! {"_id": 1, "s": 1}
    );
    assert_eq!(
        apply_update(&doc! {"_id": 1}, &spec, true).unwrap(),
        doc! {"_id": 1, "c": 1, "s": 1}
    );
}

#[test]
fn current_date_sets_a_date() {
    let out = ok(doc! {"_id": 1}, doc! {"$currentDate": {"t": true}});
    assert!(matches!(out.get("t"), Some(Bson::DateTime(_))));
}

#[test]
fn operator_errors_use_mongodb_codes() {
    let d = doc! {"_id": 1, "s": "x", "n": 1};
    assert_eq!(
        up(d.clone(), Bson::Document(doc! {"$set": {}})).unwrap_err(),
        (
            9,
            "'$set' is empty. You must specify a field like so: {$set: {<field>: ...}}".into()
        )
    );
    assert_eq!(
        up(d.clone(), Bson::Document(doc! {"$foo": {"a": 1}}))
            .unwrap_err()
            .0,
        9
    );
    assert!(up(d.clone(), Bson::Document(doc! {"$foo": {"a": 1}}))
        .unwrap_err()
        .1
        .starts_with("Unknown modifier: $foo"));
    assert_eq!(
        up(
            d.clone(),
            Bson::Document(doc! {"$set": {"a": 1}, "$inc": {"a": 1}})
        )
        .unwrap_err(),
        (
            40,
            "Updating the path 'a' would create a conflict at 'a'".into()
        )
    );
    assert_eq!(
        up(
            d.clone(),
            Bson::Document(doc! {"$set": {"a.b": 1}, "$unset": {"a": 1}})
        )
        .unwrap_err()
        .0,
        40
    );
    assert_eq!(
        up(d.clone(), Bson::Document(doc! {"$inc": {"n": "x"}}))
            .unwrap_err()
            .0,
        14
    );
    assert_eq!(
        up(d.clone(), Bson::Document(doc! {"$inc": {"s": 1}}))
            .unwrap_err()
            .0,
        14
    );
    assert_eq!(
        up(d.clone(), Bson::Document(doc! {"$push": {"s": 1}}))
            .unwrap_err()
            .0,
        2
    );
    assert_eq!(
        up(d.clone(), Bson::Document(doc! {"$set": {"_id": 2}}))
            .unwrap_err()
            .0,
        66
    );
    assert_eq!(
        up(d.clone(), Bson::Document(doc! {"$set": {"s.x": 2}}))
            .unwrap_err()
            .0,
        28
    );
    assert_eq!(
        up(d, Bson::Document(doc! {"$set": {"_id": 1}})).unwrap(),
        doc! {"_id": 1, "s": "x", "n": 1}
    );
}

#[test]
fn replacement_keeps_id_first_and_rejects_changing_it() {
    let d = doc! {"_id": 1, "a": 1};
    assert_eq!(ok(d.clone(), doc! {"b": 2}), doc! {"_id": 1, "b": 2});
    assert_eq!(
        ok(d.clone(), doc! {"b": 2, "_id": 1}),
        doc! {"_id": 1, "b": 2}
    );
    let e = up(d.clone(), Bson::Document(doc! {"_id": 2})).unwrap_err();
    assert_eq!(e.0, 66);
    assert_eq!(
        up(d, Bson::Document(doc! {"a": 1, "$set": {"b": 1}}))
            .unwrap_err()
            .0,
        52
    );
}

#[test]
fn pipeline_updates_set_unset_and_replace() {
    let d = doc! {"_id": 1, "a": 1, "b": 2};
    let u = Bson::Array(vec![
        Bson::Document(doc! {"$set": {"c": {"$add": ["$a", "$b"]}}}),
        Bson::Document(doc! {"$unset": "a"}),
    ]);
    assert_eq!(up(d.clone(), u).unwrap(), doc! {"_id": 1, "b": 2, "c": 3});
    let u = Bson::Array(vec![Bson::Document(doc! {"$replaceWith": {"x": "$b"}})]);
    assert_eq!(up(d.clone(), u).unwrap(), doc! {"_id": 1, "x": 2});
    let u = Bson::Array(vec![Bson::Document(doc! {"$group": {"_id": null}})]);
    assert_eq!(up(d, u).unwrap_err().0, 72);
}

#[test]
fn parse_rejects_malformed_updates_before_any_document() {
    let e = UpdateSpec::parse(&Bson::Document(doc! {"$set": {}})).unwrap_err();
    assert_eq!(e.code, 9);
    let stages = Bson::Array(vec![Bson::Document(doc! {"$match": {}})]);
    assert_eq!(UpdateSpec::parse(&stages).unwrap_err().code, 72);
    let e = UpdateSpec::parse(&Bson::Document(doc! {"$set": {"a": 1}, "b": 1})).unwrap_err();
    assert_eq!(e.code, 9);
    assert!(matches!(
        UpdateSpec::parse(&Bson::Document(doc! {"a": 1})),
        Ok(UpdateSpec::Replacement(_))
    ));
    assert_eq!(UpdateSpec::parse(&Bson::Int32(1)).unwrap_err().code, 14);
}

#[test]
fn upsert_insert_builds_from_seed_then_update() {
    let seed = super::super::upsert_seed(&doc! {"k": "x", "n": {"$gt": 1}}).unwrap();
    let spec = UpdateSpec::parse(&Bson::Document(
        doc! {"$inc": {"n": 2}, "$setOnInsert": {"c": 1}},
    ))
    .unwrap();
    assert_eq!(
        apply_update(&seed, &spec, true).unwrap(),
        doc! {"k": "x", "c": 1, "n": 2}
    );
    let repl = UpdateSpec::parse(&Bson::Document(doc! {"v": 1})).unwrap();
    let seed = super::super::upsert_seed(&doc! {"_id": 5, "k": "x"}).unwrap();
    assert_eq!(
        apply_update(&seed, &repl, true).unwrap(),
        doc! {"_id": 5, "v": 1}
    );
}

#[test]
fn new_fields_from_several_operators_append_in_name_order() {
    let out = ok(
        doc! {"_id": 1, "m": 0},
        doc! {"$set": {"b": 1, "x.z": 1, "x.a": 2}, "$inc": {"a": 1}},
    );
    assert_eq!(
        out,
        doc! {"_id": 1, "m": 0, "a": 1, "b": 1, "x": {"a": 2, "z": 1}}
    );
    let out = ok(
        doc! {"_id": 1, "l": []},
        doc! {"$set": {"l.10": 1, "l.2": 2}},
    );
    assert_eq!(out.get_array("l").unwrap().len(), 11);
}

#[test]
fn rename_moves_nested_values_and_ignores_missing_sources() {
    let out = ok(
        doc! {"_id": 1, "a": {"b": 1}, "c": 2},
        doc! {"$rename": {"a.b": "d.e", "zz": "yy"}},
    );
    assert_eq!(out, doc! {"_id": 1, "a": {}, "c": 2, "d": {"e": 1}});
}

#[test]
fn add_to_set_compares_documents_order_sensitively() {
    let d = doc! {"_id": 1, "s": [{"a": 1, "b": 2}]};
    let out = ok(d.clone(), doc! {"$addToSet": {"s": {"a": 1, "b": 2}}});
    assert_eq!(out, d);
    let out = ok(d, doc! {"$addToSet": {"s": {"b": 2, "a": 1}}});
    assert_eq!(out.get_array("s").unwrap().len(), 2);
}

#[test]
fn unchanged_update_returns_identical_document() {
    let d = doc! {"_id": 1, "a": 1, "l": [1]};
    assert_eq!(
        ok(
            d.clone(),
            doc! {"$set": {"a": 1}, "$addToSet": {"l": 1}, "$unset": {"zz": ""}}
        ),
        d
    );
}
