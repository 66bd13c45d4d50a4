"""pymongo 4 smoke test for the MongoDB emulator: an independent client must be able
to connect (replicaSet=rs0 and directConnection=true), do CRUD, count, and follow a
change stream including a resume.

Usage: python3 pymongo_smoke.py mongodb://127.0.0.1:PORT/?replicaSet=rs0
"""

import sys
import urllib.parse

import pymongo
from pymongo.errors import DuplicateKeyError, OperationFailure


def direct_uri(uri: str) -> str:
    parsed = urllib.parse.urlsplit(uri)
    return urllib.parse.urlunsplit((parsed.scheme, parsed.netloc, "/", "directConnection=true", ""))


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print("ok -", what)


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    uri = sys.argv[1]
    client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000)
    check(client.admin.command("ping")["ok"] == 1.0, "ping with replicaSet URI")
    check(client.server_info()["version"] == "7.0.0", "buildInfo version 7.0.0")

    coll = client.pymongo_smoke.items
    coll.drop()
    coll.insert_one({"_id": 1, "name": "a", "n": 1})
    coll.insert_many([{"_id": 2, "name": "b", "n": 2}, {"_id": 3, "name": "c", "n": 3}])
    check(coll.find_one({"_id": 2})["name"] == "b", "insert + find_one")
    check([d["_id"] for d in coll.find({"n": {"$gte": 2}}).sort("n", -1)] == [3, 2], "find with sort")
    res = coll.update_one({"_id": 1}, {"$set": {"n": 10}})
    check((res.matched_count, res.modified_count) == (1, 1), "update_one")
    res = coll.update_one({"_id": 1}, {"$set": {"n": 10}})
    check(res.modified_count == 0, "no-op update reports nModified 0")
    res = coll.update_one({"_id": 9}, {"$set": {"n": 9}}, upsert=True)
    check(res.upserted_id == 9, "upsert")
    try:
        coll.update_one({"_id": 9, "n": {"$lt": 0}}, {"$set": {"n": 0}}, upsert=True)
        check(False, "conditional upsert must fail")
    except DuplicateKeyError as e:
        check(e.code == 11000, "conditional upsert on existing _id -> 11000")
    check(coll.count_documents({}) == 4, "count_documents")
    check(coll.count_documents({"n": {"$gt": 2}}) == 3, "count_documents with filter")
    check(coll.estimated_document_count() == 4, "estimated_document_count")
    check(coll.delete_one({"_id": 3}).deleted_count == 1, "delete_one")
    try:
        client.pymongo_smoke.command("noSuchCommand")
        check(False, "unknown command must fail")
    except OperationFailure as e:
        check(e.code == 59, "unknown command -> 59")

    with coll.watch(max_await_time_ms=200) as stream:
        coll.insert_one({"_id": 20, "name": "s"})
        ev = stream.next()
        check(ev["operationType"] == "insert" and ev["documentKey"] == {"_id": 20}, "change stream insert event")
        token = stream.resume_token
        coll.update_one({"_id": 20}, {"$set": {"name": "t"}})
        coll.delete_one({"_id": 20})
    with coll.watch(resume_after=token, max_await_time_ms=200) as resumed:
        ev = resumed.next()
        check(ev["operationType"] == "update", "resume_after yields the next event")
        check(ev["updateDescription"]["updatedFields"] == {"name": "t"}, "updateDescription")
        check(resumed.next()["operationType"] == "delete", "then the delete")

    direct = pymongo.MongoClient(direct_uri(uri), serverSelectionTimeoutMS=5000)
    check(direct.pymongo_smoke.items.count_documents({}) == 3, "directConnection=true URI")
    direct.close()
    coll.drop()
    client.close()
    print("pymongo smoke test passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
