//! Aggregation and command options through the official driver: `$out`, `let`
//! variables, `$getField`/`$setField`, arrayFilters, `collMod` of an index's TTL, configureFailPoint,
//! and 7.0's refusal of `sort` on update statements.

mod common;

use bson::{doc, Document};
use futures::TryStreamExt;
use mongodb::bson;

#[tokio::test]
async fn out_replaces_the_target_with_the_pipeline_result() {
    let (emu, client, coll) = common::setup().await;
    coll.insert_many([
        doc! {"_id": 1, "x": 11},
        doc! {"_id": 2, "x": 22},
        doc! {"_id": 3, "x": 33},
    ])
    .await
    .unwrap();
    let other = client.database("d").collection::<Document>("other");
    other.insert_one(doc! {"_id": 9}).await.unwrap();
    let none: Vec<Document> = coll
        .aggregate([doc! {"$match": {"_id": {"$gt": 1}}}, doc! {"$out": "other"}])
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert!(none.is_empty());
    let got: Vec<Document> = other
        .find(doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(got, [doc! {"_id": 2, "x": 22}, doc! {"_id": 3, "x": 33}]);
    emu.shutdown().await;
}

#[tokio::test]
async fn let_variables_reach_expressions_and_field_operators_take_literal_names() {
    let (emu, client, coll) = common::setup().await;
    coll.insert_many([doc! {"_id": 1, "x": 1}, doc! {"_id": 2, "x": 2}])
        .await
        .unwrap();
    let found: Vec<Document> = coll
        .find(doc! {"$expr": {"$eq": ["$_id", "$$id"]}})
        .let_vars(doc! {"id": 2})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(found, [doc! {"_id": 2, "x": 2}]);
    coll.update_one(
        doc! {"_id": 1},
        vec![doc! {"$replaceWith": {"$setField": {"field": "a.b", "input": "$$ROOT", "value": "$$v"}}}],
    )
    .let_vars(doc! {"v": "set"})
    .await
    .unwrap();
    let one = coll.find_one(doc! {"_id": 1}).await.unwrap().unwrap();
    assert_eq!(one.get_str("a.b").unwrap(), "set");
    let got: Vec<Document> = coll
        .aggregate([
            doc! {"$match": {"_id": 1}},
            doc! {"$project": {"_id": 0, "v": {"$getField": "a.b"}}},
        ])
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(got, [doc! {"v": "set"}]);
    // `sort` on an update statement is 8.0; 7.0 refuses the command.
    let err = client
        .database("d")
        .run_command(doc! {"update": "c", "updates": [{"q": {}, "u": {"$set": {"y": 1}}, "sort": {"_id": 1}}]})
        .await
        .unwrap_err();
    assert_eq!(common::code(&err), 40415);
    emu.shutdown().await;
}

#[tokio::test]
async fn coll_mod_changes_an_index_ttl_and_fail_points_fail_commands() {
    let (emu, client, coll) = common::setup().await;
    let db = client.database("d");
    coll.insert_one(doc! {"_id": 1}).await.unwrap();
    db.run_command(doc! {"createIndexes": "c", "indexes": [{"key": {"t": 1}, "name": "t_1", "expireAfterSeconds": 60}]})
        .await
        .unwrap();
    let reply = db
        .run_command(doc! {"collMod": "c", "index": {"name": "t_1", "expireAfterSeconds": 30}})
        .await
        .unwrap();
    assert_eq!(reply.get_i32("expireAfterSeconds_old").unwrap(), 60);
    let specs: Vec<_> = coll
        .list_indexes()
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let ttl = specs.iter().find(|i| i.keys.contains_key("t")).unwrap();
    assert_eq!(
        ttl.options.as_ref().unwrap().expire_after,
        Some(std::time::Duration::from_secs(30))
    );

    let admin = client.database("admin");
    admin
        .run_command(
            doc! {"configureFailPoint": "failCommand", "mode": {"times": 1},
            "data": {"failCommands": ["find"], "errorCode": 2}},
        )
        .await
        .unwrap();
    let err = coll.find_one(doc! {}).await.unwrap_err();
    assert_eq!(common::code(&err), 2);
    assert!(
        coll.find_one(doc! {}).await.unwrap().is_some(),
        "times: 1 fires once"
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn array_filters_update_the_matching_elements() {
    let (emu, _client, coll) = common::setup().await;
    coll.insert_one(doc! {"_id": 1, "y": [{"b": 3}, {"b": 1}, {"b": 3}]})
        .await
        .unwrap();
    coll.update_one(doc! {"_id": 1}, doc! {"$set": {"y.$[i].b": 9}})
        .array_filters(vec![doc! {"i.b": 3}])
        .await
        .unwrap();
    let d = coll.find_one(doc! {"_id": 1}).await.unwrap().unwrap();
    assert_eq!(d, doc! {"_id": 1, "y": [{"b": 9}, {"b": 1}, {"b": 9}]});
    emu.shutdown().await;
}
