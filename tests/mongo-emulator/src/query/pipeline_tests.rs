//! Tests for aggregation stages.

use bson::{doc, Bson, Document};

use super::run;

fn docs() -> Vec<Document> {
    vec![
        doc! {"_id": 1, "k": "a", "n": 1, "o": {"x": 1}},
        doc! {"_id": 2, "k": "b", "n": 2},
        doc! {"_id": 3, "k": "a", "n": 3.5},
    ]
}

#[test]
fn count_documents_shape_matches_and_groups_with_sum() {
    let out = run(
        docs(),
        &[
            doc! {"$match": {"k": "a"}},
            doc! {"$group": {"_id": 1, "n": {"$sum": 1}}},
        ],
    )
    .unwrap();
    assert_eq!(out, vec![doc! {"_id": 1, "n": 2}]);
    let out = run(vec![], &[doc! {"$group": {"_id": 1, "n": {"$sum": 1}}}]).unwrap();
    assert!(out.is_empty());
}

#[test]
fn group_accumulators() {
    let out = run(docs(), &[doc! {"$group": {
        "_id": "$k", "s": {"$sum": "$n"}, "avg": {"$avg": "$n"}, "mn": {"$min": "$n"}, "mx": {"$max": "$n"},
        "f": {"$first": "$_id"}, "l": {"$last": "$_id"}, "p": {"$push": "$n"}, "u": {"$addToSet": "$k"}, "c": {"$count": {}}
    }}]).unwrap();
    assert_eq!(
        out[0],
        doc! {"_id": "a", "s": 4.5, "avg": 2.25, "mn": 1, "mx": 3.5, "f": 1, "l": 3, "p": [1, 3.5], "u": ["a"], "c": 2}
    );
    assert_eq!(out[1].get("s"), Some(&Bson::Int32(2)));
}

#[test]
fn sort_skip_limit_count() {
    let out = run(
        docs(),
        &[
            doc! {"$sort": {"n": -1}},
            doc! {"$skip": 1},
            doc! {"$limit": 1},
        ],
    )
    .unwrap();
    assert_eq!(out, vec![docs()[1].clone()]);
    let out = run(docs(), &[doc! {"$count": "total"}]).unwrap();
    assert_eq!(out, vec![doc! {"total": 3}]);
    assert!(run(vec![], &[doc! {"$count": "total"}]).unwrap().is_empty());
}

#[test]
fn add_fields_project_unset_replace() {
    let out = run(docs(), &[
        doc! {"$limit": 1},
        doc! {"$addFields": {"m": {"$multiply": ["$n", 10]}, "o": {"y": 2}, "gone": "$$REMOVE"}},
    ]).unwrap();
    assert_eq!(
        out[0],
        doc! {"_id": 1, "k": "a", "n": 1, "o": {"x": 1, "y": 2}, "m": 10}
    );
    let out = run(
        docs(),
        &[
            doc! {"$limit": 1},
            doc! {"$project": {"k": 1}},
            doc! {"$unset": "_id"},
        ],
    )
    .unwrap();
    assert_eq!(out[0], doc! {"k": "a"});
    let out = run(
        docs(),
        &[doc! {"$limit": 1}, doc! {"$replaceRoot": {"newRoot": "$o"}}],
    )
    .unwrap();
    assert_eq!(out[0], doc! {"x": 1});
    assert_eq!(
        run(docs(), &[doc! {"$replaceWith": "$missing"}])
            .unwrap_err()
            .code,
        40228
    );
}

#[test]
fn unwind_expands_arrays() {
    let out = run(
        vec![doc! {"_id": 1, "l": [1, 2]}, doc! {"_id": 2}],
        &[doc! {"$unwind": "$l"}],
    )
    .unwrap();
    assert_eq!(out, vec![doc! {"_id": 1, "l": 1}, doc! {"_id": 1, "l": 2}]);
}

#[test]
fn unknown_stage_is_40324() {
    let e = run(docs(), &[doc! {"$foo": 1}]).unwrap_err();
    assert_eq!(
        (e.code, e.message.as_str()),
        (40324, "Unrecognized pipeline stage name: '$foo'")
    );
    assert_eq!(
        run(docs(), &[doc! {"$group": {"n": {"$sum": 1}}}])
            .unwrap_err()
            .code,
        15955
    );
    assert_eq!(
        run(docs(), &[doc! {"$group": {"_id": 1, "n": {"$bogus": 1}}}])
            .unwrap_err()
            .code,
        15952
    );
}

#[test]
fn set_with_dotted_path_and_unset_list() {
    let out = run(
        vec![doc! {"_id": 1, "a": {"x": 1}, "b": 1, "c": 2}],
        &[
            doc! {"$set": {"a.y": {"$add": ["$b", 1]}}},
            doc! {"$unset": ["b", "c"]},
        ],
    )
    .unwrap();
    assert_eq!(out, vec![doc! {"_id": 1, "a": {"x": 1, "y": 2}}]);
}

#[test]
fn stages_are_validated_even_without_documents() {
    assert_eq!(
        run(vec![], &[doc! {"$project": {"a": 1, "b": 0}}])
            .unwrap_err()
            .code,
        31254
    );
    assert_eq!(
        run(vec![], &[doc! {"$match": {"$bad": 1}}])
            .unwrap_err()
            .code,
        2
    );
    assert_eq!(
        run(vec![], &[doc! {"$replaceWith": {"$bogus": 1}}])
            .unwrap_err()
            .code,
        168
    );
    assert_eq!(
        run(vec![], &[doc! {"$addFields": {"x": {"$bogus": 1}}}])
            .unwrap_err()
            .code,
        168
    );
    assert_eq!(
        run(vec![], &[doc! {"$sort": {"a": 3}}]).unwrap_err().code,
        15975
    );
}

#[test]
fn sort_by_count_groups_and_orders() {
    let out = run(docs(), &[doc! {"$sortByCount": "$k"}]).unwrap();
    assert_eq!(
        out,
        vec![doc! {"_id": "a", "count": 2}, doc! {"_id": "b", "count": 1}]
    );
}
