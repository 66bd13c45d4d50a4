//! Odd inputs must produce a result or a MongoDB error, never a panic: the server turns
//! a panic into a dropped connection, which no client expects.

use bson::{doc, Bson, Document};

use super::{
    apply_update, matches, project, run_pipeline, sort_documents, upsert_seed, UpdateSpec,
};

fn samples() -> Vec<Document> {
    vec![
        doc! {},
        doc! {"_id": 1, "a": [], "b": [[1], {"c": null}], "d": {"": 1}},
        doc! {"_id": "x", "a": i64::MAX, "b": f64::NAN, "c": -0.0, "d": bson::DateTime::MAX},
        doc! {"_id": {"k": 1}, "a": {"b": {"c": [1, {"d": 2}]}}, "s": "ß"},
    ]
}

#[test]
fn odd_filters_never_panic() {
    let filters = vec![
        doc! {"a.b.c.d": {"$gt": null}},
        doc! {"a.99999999999999999999": 1},
        doc! {"": 1},
        doc! {"a": {"$mod": [-1, 0]}},
        doc! {"a": {"$mod": [i64::MIN, -1]}},
        doc! {"a": {"$size": 1.5}},
        doc! {"a": {"$regex": "("}},
        doc! {"a": {"$type": -1.0}},
        doc! {"$expr": {"$add": ["$d", i64::MAX]}},
        doc! {"$expr": {"$subtract": ["$d", bson::DateTime::MIN]}},
        doc! {"$expr": {"$mod": [i64::MIN, -1]}},
        doc! {"$expr": {"$toInt": "1e40"}},
        doc! {"b": {"$elemMatch": {}}},
        doc! {"a": {"$all": []}},
    ];
    for d in samples() {
        for f in &filters {
            let _ = matches(&d, f);
        }
    }
}

#[test]
fn odd_updates_never_panic() {
    let updates: Vec<Bson> = vec![
        Bson::Document(doc! {"$set": {"a.5000000": 1}}),
        Bson::Document(doc! {"$set": {"b.0.0": 1}}),
        Bson::Document(doc! {"$inc": {"a": i64::MAX}}),
        Bson::Document(doc! {"$mul": {"a": f64::INFINITY}}),
        Bson::Document(
            doc! {"$push": {"a": {"$each": [1], "$slice": i64::MIN, "$position": i64::MIN}}},
        ),
        Bson::Document(doc! {"$pop": {"a": 1}}),
        Bson::Document(doc! {"$rename": {"a.b": "z.y"}}),
        Bson::Document(doc! {"$unset": {"b.0.c": 1}}),
        Bson::Array(vec![Bson::Document(
            doc! {"$set": {"x": {"$arrayElemAt": ["$a", i64::MIN]}}},
        )]),
        Bson::Array(vec![Bson::Document(doc! {"$replaceWith": "$$ROOT"})]),
    ];
    for d in samples() {
        for u in &updates {
            if let Ok(spec) = UpdateSpec::parse(u) {
                let _ = apply_update(&d, &spec, false);
                let _ = apply_update(&d, &spec, true);
            }
        }
    }
    let _ = upsert_seed(&doc! {"a.0.b": 1, "c": {"$in": []}});
}

#[test]
fn odd_projections_sorts_and_stages_never_panic() {
    let mut docs = samples();
    for s in [doc! {"a.b": 1}, doc! {"b.c": -1}, doc! {"$natural": 1}] {
        let _ = sort_documents(&mut docs, &s);
    }
    for p in [
        doc! {"a": {"$slice": [i64::MIN, 1]}},
        doc! {"a.b.c": 0},
        doc! {"x": "$a.b"},
    ] {
        for d in &docs {
            let _ = project(d, &p);
        }
    }
    let stages = [
        doc! {"$unwind": "$b"},
        doc! {"$group": {"_id": "$a", "s": {"$sum": "$a"}, "m": {"$mergeObjects": "$d"}}},
    ];
    let _ = run_pipeline(docs, &stages);
}
