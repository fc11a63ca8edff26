#!/usr/bin/env python3
"""Loopback test stand-in for ArangoDB 3.11 -- NOT ArangoDB.

Cairn's ArangoDB plugin is tested against this file because no real ArangoDB can be
installed here. It imitates, over plain HTTP on 127.0.0.1, exactly the documented 3.11
surface the plugin and the two client tools use, with ArangoDB's JSON shapes and errorNums.
Anything outside that surface fails loudly (404/405, AQL 1501, "unknown option").
Standard library only.

  python3 arangodb.py serve --port-file FILE --data-dir DIR [--credentials-file FILE]
  python3 arangodb.py arangodump [options] [output-directory]
  python3 arangodb.py arangorestore [options] [input-directory]

Server (`serve`): binds 127.0.0.1 port 0, writes the port (digits only) to --port-file via
tmp+rename. State (databases -> collections -> documents by _key) lives in memory and is
rewritten to DIR/state.json (tmp+rename, no fsync: survives kill -9, not power loss) after
every mutating request; it is loaded at start. A new database holds the empty system
collections _analyzers, _aqlfunctions, _graphs. With --credentials-file (first line
user:password) every request needs that HTTP Basic auth, else 401 errorNum 11. One stderr
line per request. Every path may be prefixed with /_db/<database> (default _system).
  GET    /_api/version                      GET /_admin/server/availability
  GET    /_api/database  /_api/database/user  /_api/database/current
  POST   /_api/database {"name",...}        DELETE /_api/database/<name>  (_system only)
  GET    /_api/collection[?excludeSystem=true]   POST /_api/collection {"name","type",...}
  GET    /_api/collection/<c>  .../properties  .../count
  PUT    /_api/collection/<c>/truncate      DELETE /_api/collection/<c>[?isSystem=true]
  POST   /_api/document/<c>  (object or array; returnNew, overwrite, overwriteMode)
  GET|PUT|PATCH|DELETE /_api/document/<c>/<key>  (PATCH: keepNull, mergeObjects)
  POST   /_api/import?collection=<c>&type=documents|array|auto
         [&overwrite=true][&onDuplicate=error|update|replace|ignore][&complete][&details]
  POST   /_api/cursor  only {"query":"FOR d IN @@c RETURN d","bindVars":{"@c":..},
         "batchSize"?,"count"?,"ttl"?}; any other query -> 400 errorNum 1501
  POST|PUT /_api/cursor/<id> (next batch)   DELETE /_api/cursor/<id>
Errors use the real errorNums: 11 unauthorized/forbidden, 1202 document not found,
1203 collection not found, 1207 duplicate name, 1208 illegal name, 1210 unique
constraint, 1221 illegal key, 1227 invalid document type, 1228 database not found,
1229 illegal database name, 1230 only in _system, 1233 edge attribute, 1501 AQL parse,
1551 bind parameter missing, 1600 cursor not found, 404/405 unknown path / method.

Clients: arangodump/arangorestore option syntax (--opt value, --opt=value, booleans
true/false, a bare boolean means true, one positional directory), --configuration FILE
(arangod-style INI; [server] keys become server.*; command line overrides).
  both: --configuration --server.endpoint tcp://|http+tcp://host:port (ssl:// -> error,
        no TLS here) --server.username (root) --server.password --server.database
        (_system) --server.authentication --all-databases --overwrite
        --include-system-collections --collection (repeatable) --progress --threads (ignored)
  arangodump:    --output-directory (dump) --compress-output (true) --dump-data (true)
                 --envelope (false)
  arangorestore: --input-directory (dump) --create-database (false) --overwrite (true)
                 --create-collection (true) --import-data (true)
Dump layout (single server, as arangodump writes it): ENCRYPTION ("none"), dump.json
{"database","lastTickAtDumpStart","properties","useEnvelope"}, <c>_<md5(c)>.structure.json
{"indexes":[],"parameters":{...}}, <c>_<md5(c)>.data.json[.gz] (one document per line).
--all-databases: one subdirectory per database, named by the database name, plus
ENCRYPTION at the top. arangorestore reads <c>_<md5>.data.json, then .data.json.gz,
<c>.data.json.gz, <c>.data.json, and accepts <c>.structure.json too. As with the real
tool, --overwrite true writes into a non-empty directory without deleting what is there.

Simplifications: no AQL beyond the one query; no indexes (structure files carry []);
no views, users, permissions, JWT, TLS, VelocyStream, replication API or ticks
(lastTickAtDumpStart is "0"). The real arangodump reads through the replication
dump API; this client reads through the cursor API and collection endpoints instead.
The real arangorestore uses /_api/replication/restore-*; this one loads through
POST /_api/collection and POST /_api/import (so _rev values are regenerated, as
/_api/import does, whereas the real restore keeps them). A data line that is not
JSON makes arangorestore fail naming the file. A missing --server.password means an
empty one (the real tools would prompt). Client INFO lines go to stdout,
WARN/ERROR/FATAL to stderr; exit status 1 on failure.
"""
import base64, gzip, hashlib, http.client, json, os, re, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, quote, unquote, urlsplit

VERSION = "3.11.5"
QUERY = "FOR d IN @@c RETURN d"
SYSTEM_COLLECTIONS = ("_analyzers", "_aqlfunctions", "_graphs")
REV_CHARS = "-_ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
KEY_RE = re.compile(r"^[A-Za-z0-9_\-:.@()+,=;$!*'%]{1,254}$")
COLL_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,255}$")
DB_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]{0,63}$")


class ApiError(Exception):
    def __init__(self, code, num, msg):
        super().__init__(msg)
        self.code, self.num, self.msg = code, num, msg


def not_found_coll(): return ApiError(404, 1203, "collection or view not found")
def jdump(obj): return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
def md5(s): return hashlib.md5(s.encode()).hexdigest()

# ----------------------------------------------------------------------------- state


class Store:
    """All databases; persisted as one JSON file, replaced atomically."""

    def __init__(self, data_dir):
        self.path = os.path.join(data_dir, "state.json")
        self.lock = threading.RLock()
        self.cursors = {}
        if os.path.exists(self.path):
            with open(self.path, encoding="utf-8") as f:
                self.s = json.load(f)
        else:
            self.s = {"next_id": 100, "tick": int(time.time() * 1000) << 20, "databases": {}}
            self.add_db("_system", "1")
            self.save()

    def new_id(self):
        self.s["next_id"] += 1
        return str(self.s["next_id"])

    def new_rev(self):
        self.s["tick"] += 1
        n, out = self.s["tick"], ""
        while n:
            out, n = REV_CHARS[n & 63] + out, n >> 6
        return "_" + out

    def add_db(self, name, ident=None):
        db = {"id": ident or self.new_id(), "collections": {}}
        self.s["databases"][name] = db
        for c in SYSTEM_COLLECTIONS:
            self.add_coll(db, {"name": c, "isSystem": True})

    def add_coll(self, db, spec):
        cid = self.new_id()
        ko = spec.get("keyOptions") if isinstance(spec.get("keyOptions"), dict) else {}
        db["collections"][spec["name"]] = {
            "id": cid, "name": spec["name"], "type": spec.get("type", 2),
            "isSystem": spec["name"].startswith("_"),
            "waitForSync": bool(spec.get("waitForSync", False)),
            "keyOptions": {"type": ko.get("type", "traditional"),
                           "allowUserKeys": ko.get("allowUserKeys", True), "lastValue": 0},
            "schema": spec.get("schema"), "computedValues": spec.get("computedValues"),
            "cacheEnabled": bool(spec.get("cacheEnabled", False)),
            "globallyUniqueId": "h%s/%s" % (md5(os.path.abspath(self.path))[:12].upper(), cid),
            "docs": {}}
        return db["collections"][spec["name"]]

    def save(self):
        tmp = self.path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(jdump(self.s))
        os.replace(tmp, self.path)

# ----------------------------------------------------------------------------- request context


class Ctx:
    def __init__(self, store, dbname, method, query, body):
        self.store, self.dbname, self.method, self.query, self.body = store, dbname, method, query, body
        self.db = store.s["databases"].get(dbname)
        if self.db is None:
            raise ApiError(404, 1228, "database not found")
        self.dirty, self.headers = False, {}

    def q(self, name, default=None): return self.query.get(name, default)
    def qbool(self, name, default=False):
        v = self.query.get(name)
        return default if v is None else v.lower() in ("true", "1", "yes", "on")

    def json(self):
        try:
            return json.loads(self.body.decode("utf-8")) if self.body.strip() else None
        except ValueError as e:
            raise ApiError(400, 600, "VPackError error: %s" % e)

    def coll(self, name):
        cols = self.db["collections"]
        if name in cols:
            return cols[name]
        for c in cols.values():  # real ArangoDB also accepts the numeric id
            if c["id"] == name:
                return c
        raise not_found_coll()

    def system_only(self):
        if self.dbname != "_system":
            raise ApiError(403, 1230, "operation only allowed in system database")


def ok(obj=None, code=200, **extra):
    out = {"error": False, "code": code}
    out.update(obj or {})
    out.update(extra)
    return code, out


def coll_info(c):
    return {"id": c["id"], "name": c["name"], "status": 3, "type": c["type"],
            "isSystem": c["isSystem"], "globallyUniqueId": c["globallyUniqueId"]}


def coll_props(c):
    p = coll_info(c)
    p.update({k: c[k] for k in ("waitForSync", "schema", "computedValues", "cacheEnabled")})
    p.update({"keyOptions": dict(c["keyOptions"]), "statusString": "loaded", "writeConcern": 1,
              "syncByRevision": True, "usesRevisionsAsDocumentIds": True,
              "internalValidatorType": 0, "isSmartChild": False})
    return p

# ----------------------------------------------------------------------------- endpoints


def h_version(ctx): return 200, {"server": "arango", "version": VERSION, "license": "community"}
def h_availability(ctx): return 200, {"mode": "default", "writeOpsEnabled": True}


def h_db_list(ctx):
    ctx.system_only()
    return ok(result=list(ctx.store.s["databases"]))


def h_db_user(ctx): return ok(result=list(ctx.store.s["databases"]))


def h_db_current(ctx):
    return ok(result={"name": ctx.dbname, "id": ctx.db["id"], "isSystem": ctx.dbname == "_system",
                      "path": "/var/lib/arangodb3/databases/database-" + ctx.db["id"]})


def h_db_create(ctx):
    ctx.system_only()
    body = ctx.json()
    name = body.get("name") if isinstance(body, dict) else None
    if not isinstance(name, str) or not DB_RE.match(name):
        raise ApiError(400, 1229, "database name invalid")
    if name in ctx.store.s["databases"]:
        raise ApiError(409, 1207, "duplicate database name '%s'" % name)
    ctx.store.add_db(name)  # "options" and "users" are accepted and ignored
    ctx.dirty = True
    return ok(code=201, result=True)


def h_db_drop(ctx, name):
    ctx.system_only()
    if name not in ctx.store.s["databases"]:
        raise ApiError(404, 1228, "database not found")
    if name == "_system":
        raise ApiError(403, 11, "forbidden")
    del ctx.store.s["databases"][name]
    ctx.dirty = True
    return ok(result=True)


def h_coll_list(ctx):
    skip = ctx.qbool("excludeSystem")
    return ok(result=[coll_info(c) for c in ctx.db["collections"].values()
                      if not (skip and c["isSystem"])])


def h_coll_create(ctx):
    spec = ctx.json()
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise ApiError(400, 1208, "illegal name")
    name = spec["name"]
    if not COLL_RE.match(name) or (name.startswith("_") and not spec.get("isSystem")):
        raise ApiError(400, 1208, "illegal name")
    if spec.get("type", 2) not in (2, 3):
        raise ApiError(400, 1218, "invalid collection type")
    if name in ctx.db["collections"]:
        raise ApiError(409, 1207, "duplicate name")
    c = ctx.store.add_coll(ctx.db, spec)
    ctx.dirty = True
    return ok(coll_props(c))


def h_coll_get(ctx, name): return ok(coll_info(ctx.coll(name)))
def h_coll_props(ctx, name): return ok(coll_props(ctx.coll(name)))
def h_coll_count(ctx, name):
    c = ctx.coll(name)
    return ok(coll_props(c), count=len(c["docs"]))


def h_coll_truncate(ctx, name):
    c = ctx.coll(name)
    c["docs"].clear()
    ctx.dirty = True
    return ok(coll_info(c))


def h_coll_drop(ctx, name):
    c = ctx.coll(name)
    if c["isSystem"] and not ctx.qbool("isSystem"):
        raise ApiError(403, 11, "forbidden")
    del ctx.db["collections"][c["name"]]
    ctx.dirty = True
    return ok(id=c["id"])


def merge(old, patch, keep_null, merge_objects):
    out = dict(old)
    for k, v in patch.items():
        if v is None and not keep_null:
            out.pop(k, None)
        elif merge_objects and isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v, keep_null, merge_objects)
        else:
            out[k] = v
    return out


def store_doc(ctx, c, key, body, old=None):
    """Writes a document (system attributes first); returns (new doc, meta)."""
    if c["type"] == 3:
        for a in ("_from", "_to"):
            v = body.get(a, (old or {}).get(a))
            if not isinstance(v, str) or "/" not in v:
                raise ApiError(400, 1233, "edge attribute missing or invalid")
    doc = {"_key": key, "_id": "%s/%s" % (c["name"], key), "_rev": ctx.store.new_rev()}
    doc.update({k: v for k, v in body.items() if k not in ("_key", "_id", "_rev")})
    c["docs"][key] = doc
    ctx.dirty = True
    meta = {"_id": doc["_id"], "_key": key, "_rev": doc["_rev"]}
    if old is not None:
        meta["_oldRev"] = old["_rev"]
    return doc, meta


def insert_one(ctx, c, body, mode=None):
    """Inserts body; mode None/"conflict" -> 1210 on an existing key, else replace/update/ignore."""
    if not isinstance(body, dict):
        raise ApiError(400, 1227, "invalid document type")
    ko, key = c["keyOptions"], body.get("_key")
    if key is None:
        ko["lastValue"] += 1
        while str(ko["lastValue"]) in c["docs"]:
            ko["lastValue"] += 1
        key = str(ko["lastValue"])
    elif not isinstance(key, str) or not KEY_RE.match(key):
        raise ApiError(400, 1221, "illegal document key")
    elif key.isdigit() and len(key) < 19:
        ko["lastValue"] = max(ko["lastValue"], int(key))
    old = c["docs"].get(key)
    if old is not None:
        if mode in (None, "conflict"):
            raise ApiError(409, 1210, "unique constraint violated - in index primary of type "
                           "primary over '_key'; conflicting key: " + key)
        if mode == "ignore":
            return old, {"_id": old["_id"], "_key": key, "_rev": old["_rev"]}
        if mode == "update":
            body = merge(old, body, True, True)
    return store_doc(ctx, c, key, body, old)


def write_code(ctx, c): return 201 if ctx.qbool("waitForSync") or c["waitForSync"] else 202


def with_docs(ctx, meta, new=None, old=None):
    if new is not None and ctx.qbool("returnNew"):
        meta["new"] = new
    if old is not None and ctx.qbool("returnOld"):
        meta["old"] = old
    return meta


def h_doc_insert(ctx, name):
    c, body = ctx.coll(name), ctx.json()
    mode = ctx.q("overwriteMode") or ("replace" if ctx.qbool("overwrite") else None)
    if mode not in (None, "conflict", "replace", "update", "ignore"):
        raise ApiError(400, 10, "invalid overwriteMode")
    if isinstance(body, list):
        out, counts = [], {}
        for item in body:
            try:
                old = c["docs"].get(item.get("_key")) if isinstance(item, dict) else None
                new, meta = insert_one(ctx, c, item, mode)
                out.append(with_docs(ctx, meta, new, old))
            except ApiError as e:
                out.append({"error": True, "errorNum": e.num, "errorMessage": e.msg})
                counts[str(e.num)] = counts.get(str(e.num), 0) + 1
        if counts:
            ctx.headers["X-Arango-Error-Codes"] = jdump(counts)
        return write_code(ctx, c), out
    old = c["docs"].get(body.get("_key")) if isinstance(body, dict) else None
    new, meta = insert_one(ctx, c, body, mode)
    return write_code(ctx, c), with_docs(ctx, meta, new, old)


def find_doc(ctx, name, key):
    c = ctx.coll(name)
    if key not in c["docs"]:
        raise ApiError(404, 1202, "document not found")
    return c, c["docs"][key]


def h_doc_get(ctx, name, key):
    _, doc = find_doc(ctx, name, key)
    ctx.headers["Etag"] = '"%s"' % doc["_rev"]
    return 200, doc


def h_doc_update(ctx, name, key):
    c, old = find_doc(ctx, name, key)
    body = ctx.json()
    if not isinstance(body, dict):
        raise ApiError(400, 1227, "invalid document type")
    if ctx.method == "PATCH":
        body = merge(old, body, ctx.qbool("keepNull", True), ctx.qbool("mergeObjects", True))
    new, meta = store_doc(ctx, c, key, body, old)
    return write_code(ctx, c), with_docs(ctx, meta, new, old)


def h_doc_delete(ctx, name, key):
    c, old = find_doc(ctx, name, key)
    del c["docs"][key]
    ctx.dirty = True
    return write_code(ctx, c), with_docs(ctx, {"_id": old["_id"], "_key": key, "_rev": old["_rev"]}, old=old)


def h_import(ctx):
    name = ctx.q("collection")
    if not name:
        raise ApiError(400, 10, "'collection' is missing, expecting /_api/import?collection=<identifier>")
    c, kind = ctx.coll(name), ctx.q("type")
    on_dup = ctx.q("onDuplicate", "error")
    if kind not in ("documents", "array", "list", "auto") or on_dup not in ("error", "update", "replace", "ignore"):
        raise ApiError(400, 10, "the stand-in supports type=documents|array|list|auto and "
                       "onDuplicate=error|update|replace|ignore only")
    text = ctx.body.decode("utf-8", "replace")
    if kind in ("array", "list") or (kind == "auto" and text.lstrip().startswith("[")):
        try:
            items = [jdump(x) for x in json.loads(text)]
        except (ValueError, TypeError):
            raise ApiError(400, 600, "expecting a JSON array in the request")
    else:
        items = text[:-1].split("\n") if text.endswith("\n") else text.split("\n")
    saved_docs, saved_last = dict(c["docs"]), c["keyOptions"]["lastValue"]
    if ctx.qbool("overwrite"):
        c["docs"].clear()
        ctx.dirty = True
    res = {"created": 0, "errors": 0, "empty": 0, "updated": 0, "ignored": 0}
    details, first_num = [], None
    for pos, line in enumerate(items, 1):
        if not line.strip():
            res["empty"] += 1
            continue
        try:
            try:
                doc = json.loads(line)
            except ValueError:
                raise ApiError(400, 600, "invalid JSON type (expecting object, probably parse error)")
            if isinstance(doc, dict) and on_dup != "error" and doc.get("_key") in c["docs"]:
                insert_one(ctx, c, doc, on_dup)
                res["ignored" if on_dup == "ignore" else "updated"] += 1
            else:
                insert_one(ctx, c, doc)
                res["created"] += 1
        except ApiError as e:
            res["errors"] += 1
            first_num = first_num or e.num
            details.append("at position %d: creating document failed with error '%s', offending "
                           "document: %s" % (pos, e.msg, line.strip()[:200]))
    if ctx.qbool("complete") and res["errors"]:
        c["docs"], c["keyOptions"]["lastValue"] = saved_docs, saved_last
        raise ApiError(409 if first_num == 1210 else 400, first_num, details[0])
    if ctx.qbool("details"):
        res["details"] = details
    return 201, dict({"error": False}, **res)


def cursor_batch(ctx, cid, cur, code):
    chunk = cur["docs"][cur["pos"]:cur["pos"] + cur["batch"]]
    cur["pos"] += len(chunk)
    cur["expires"] = time.time() + cur["ttl"]
    more = cur["pos"] < len(cur["docs"])
    out = {"result": chunk, "hasMore": more}
    if more or code == 200:
        out["id"] = cid
    if not more:
        ctx.store.cursors.pop(cid, None)
    if cur["count"]:
        out["count"] = len(cur["docs"])
    out["cached"] = False
    out["extra"] = {"warnings": [], "stats": {"writesExecuted": 0, "writesIgnored": 0,
                    "scannedFull": len(cur["docs"]), "scannedIndex": 0, "filtered": 0}}
    return ok(out, code)


def h_cursor_create(ctx):
    body = ctx.json()
    if not isinstance(body, dict) or not isinstance(body.get("query"), str):
        raise ApiError(400, 1502, "query is empty")
    if " ".join(body["query"].split()) != QUERY:
        raise ApiError(400, 1501, "AQL: syntax error, unsupported query: the Cairn ArangoDB stand-in "
                       "only runs '%s', got '%s' [line 1, column 1]" % (QUERY, body["query"]))
    bind = body.get("bindVars") or {}
    for k in bind:
        if k != "@c":
            raise ApiError(400, 1552, "AQL: bind parameter '%s' was not declared in the query (while parsing)" % k)
    if "@c" not in bind:
        raise ApiError(400, 1551, "AQL: no value specified for declared bind parameter '@c' (while parsing)")
    try:
        c = ctx.coll(bind["@c"])
    except ApiError:
        raise ApiError(404, 1203, "AQL: collection or view not found: %s (while parsing)" % bind["@c"])
    batch = body.get("batchSize", 1000)
    if not isinstance(batch, int) or batch < 1:
        raise ApiError(400, 10, "expecting non-zero value for <batchSize>")
    now = time.time()
    for k in [k for k, v in ctx.store.cursors.items() if v["expires"] < now]:
        del ctx.store.cursors[k]
    cid = ctx.store.new_id()
    cur = {"db": ctx.dbname, "docs": [dict(d) for d in c["docs"].values()], "pos": 0, "batch": batch,
           "ttl": float(body.get("ttl") or 30), "count": bool(body.get("count"))}
    ctx.store.cursors[cid] = cur
    return cursor_batch(ctx, cid, cur, 201)


def h_cursor_next(ctx, cid):
    cur = ctx.store.cursors.get(cid)
    if cur is None or cur["db"] != ctx.dbname or cur["expires"] < time.time():
        raise ApiError(404, 1600, "cursor not found")
    return cursor_batch(ctx, cid, cur, 200)


def h_cursor_delete(ctx, cid):
    if ctx.store.cursors.pop(cid, None) is None:
        raise ApiError(404, 1600, "cursor not found")
    return ok(code=202, id=cid)


C, K = r"/([^/]+)", r"/([^/]+)/([^/]+)"
ROUTES = [(re.compile("^%s$" % p), m) for p, m in [
    ("/_api/version", {"GET": h_version}),
    ("/_admin/server/availability", {"GET": h_availability}),
    ("/_api/database", {"GET": h_db_list, "POST": h_db_create}),
    ("/_api/database/user", {"GET": h_db_user}),
    ("/_api/database/current", {"GET": h_db_current}),
    ("/_api/database" + C, {"DELETE": h_db_drop}),
    ("/_api/collection", {"GET": h_coll_list, "POST": h_coll_create}),
    ("/_api/collection" + C, {"GET": h_coll_get, "DELETE": h_coll_drop}),
    ("/_api/collection" + C + "/properties", {"GET": h_coll_props}),
    ("/_api/collection" + C + "/count", {"GET": h_coll_count}),
    ("/_api/collection" + C + "/truncate", {"PUT": h_coll_truncate}),
    ("/_api/document" + C, {"POST": h_doc_insert}),
    ("/_api/document" + K, {"GET": h_doc_get, "PUT": h_doc_update, "PATCH": h_doc_update,
                            "DELETE": h_doc_delete}),
    ("/_api/import", {"POST": h_import}),
    ("/_api/cursor", {"POST": h_cursor_create}),
    ("/_api/cursor" + C, {"POST": h_cursor_next, "PUT": h_cursor_next, "DELETE": h_cursor_delete}),
]]


def route(store, method, target, body):
    """Returns (status, json object, extra headers, mutated)."""
    parts = urlsplit(target)
    path, dbname = parts.path, "_system"
    m = re.match(r"^/_db/([^/]+)(/.*)?$", path)
    if m:
        dbname, path = unquote(m.group(1)), m.group(2) or "/"
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    for rx, methods in ROUTES:
        hit = rx.match(path.rstrip("/") or "/")
        if not hit:
            continue
        if method not in methods:
            raise ApiError(405, 405, "method not supported: %s %s (stand-in)" % (method, path))
        ctx = Ctx(store, dbname, method, query, body)
        status, obj = methods[method](ctx, *[unquote(g) for g in hit.groups()])
        return status, obj, ctx.headers, ctx.dirty
    raise ApiError(404, 404, "unknown path '%s' (method %s; not implemented by the stand-in)" % (path, method))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def version_string(self):
        return "ArangoDB"

    def _body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _handle(self):
        store, creds = self.server.store, self.server.credentials
        body, headers, t0 = self._body(), {}, time.time()
        try:
            if creds is not None and self.headers.get("Authorization", "") != creds:
                headers["WWW-Authenticate"] = 'Basic realm="ArangoDB"'
                raise ApiError(401, 11, "not authorized to execute this request")
            with store.lock:
                status, obj, headers2, dirty = route(store, self.command, self.path, body)
                headers.update(headers2)
                if dirty:
                    store.save()
        except ApiError as e:
            status, obj = e.code, {"error": True, "code": e.code, "errorNum": e.num, "errorMessage": e.msg}
        except Exception as e:  # a stand-in bug must still answer in ArangoDB's shape
            status, obj = 500, {"error": True, "code": 500, "errorNum": 4, "errorMessage": "internal error: %r" % e}
        data = jdump(obj).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        sys.stderr.write("[arangodb-standin] %s %s -> %d (%d bytes in, %d out, %.1f ms)\n" % (
            self.command, self.path, status, len(body), len(data), (time.time() - t0) * 1000))
        sys.stderr.flush()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle

    def log_message(self, *args):
        pass


def serve(argv):
    import argparse
    ap = argparse.ArgumentParser(prog="arangodb.py serve")
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--credentials-file")
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on")
    a = ap.parse_args(argv)
    os.makedirs(a.data_dir, exist_ok=True)
    creds = None
    if a.credentials_file:
        with open(a.credentials_file, encoding="utf-8") as f:
            line = f.readline().rstrip("\r\n")
        if ":" not in line:
            sys.exit("credentials file: the first line must be user:password")
        creds = "Basic " + base64.b64encode(line.encode("utf-8")).decode()
    server = ThreadingHTTPServer((a.host, 0), Handler)
    server.daemon_threads = True
    server.store, server.credentials = Store(a.data_dir), creds
    port = server.server_address[1]
    with open(a.port_file + ".tmp", "w") as f:
        f.write(str(port))
    os.replace(a.port_file + ".tmp", a.port_file)
    sys.stderr.write("[arangodb-standin] listening on %s:%d, data %s, auth %s\n"
                     % (a.host, port, a.data_dir, "on" if creds else "off"))
    import signal
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    server.serve_forever()

# ----------------------------------------------------------------------------- clients


class Fatal(Exception):
    pass


def log(level, topic, msg):
    line = "%s [%d-1] %s {%s} %s\n" % (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                       os.getpid(), level, topic, msg)
    (sys.stdout if level == "INFO" else sys.stderr).write(line)


COMMON = {"configuration": "str", "server.endpoint": "str", "server.username": "str",
          "server.password": "str", "server.database": "str", "server.authentication": "bool",
          "all-databases": "bool", "overwrite": "bool", "include-system-collections": "bool",
          "collection": "list", "progress": "bool", "threads": "str"}
TOOLS = {
    "arangodump": ({"output-directory": "str", "compress-output": "bool", "dump-data": "bool",
                    "envelope": "bool"},
                   {"output-directory": "dump", "overwrite": False, "compress-output": True,
                    "dump-data": True, "envelope": False}),
    "arangorestore": ({"input-directory": "str", "create-database": "bool", "import-data": "bool",
                       "create-collection": "bool"},
                      {"input-directory": "dump", "overwrite": True, "create-database": False,
                       "import-data": True, "create-collection": True}),
}
BOOLS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}


def parse_options(tool, argv):
    """arangod-style options: command line over --configuration file over defaults."""
    spec = dict(COMMON, **TOOLS[tool][0])
    opts = {"server.endpoint": "tcp://127.0.0.1:8529", "server.username": "root",
            "server.database": "_system", "server.authentication": True, "all-databases": False,
            "include-system-collections": False, "collection": [], "progress": True}
    opts.update(TOOLS[tool][1])

    def put(target, name, value, origin):
        kind = spec.get(name)
        if kind is None:
            raise Fatal("unknown option '--%s' in %s (not implemented by the Cairn ArangoDB stand-in)" % (name, origin))
        if kind == "bool":
            if str(value).lower() not in BOOLS:
                raise Fatal("cannot parse boolean value '%s' for option '--%s'" % (value, name))
            value = BOOLS[str(value).lower()]
        if kind == "list":
            target.setdefault(name, []).append(value)
        else:
            target[name] = value

    cli, from_file, positional, i = {}, {}, [], 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if not arg.startswith("--"):
            positional.append(arg)
            continue
        name, eq, value = arg[2:].partition("=")
        if not eq:
            if spec.get(name) == "bool":
                value = "true"
                if i < len(argv) and argv[i].lower() in BOOLS:
                    value, i = argv[i], i + 1
            elif i < len(argv):
                value, i = argv[i], i + 1
            else:
                raise Fatal("missing value for option '--%s'" % name)
        put(cli, name, value, "command line")
    conf = cli.get("configuration")
    if conf and conf != "none":
        section = ""
        try:
            with open(conf, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except OSError as e:
            raise Fatal("cannot read configuration file '%s': %s" % (conf, e.strerror))
        for raw in lines:
            line = raw.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("[") and line.endswith("]"):
                section = line[1:-1].strip()
                continue
            key, eq, value = line.partition("=")
            if not eq:
                raise Fatal("configuration file '%s': cannot parse line '%s'" % (conf, raw))
            key, value = key.strip(), value.strip()
            if len(value) > 1 and value[0] == value[-1] and value[0] in "\"'":
                value = value[1:-1]
            put(from_file, ("%s.%s" % (section, key)) if section else key, value, "configuration file '%s'" % conf)
        opts.update(from_file)
    opts.update(cli)
    if len(positional) > 1:
        raise Fatal("expecting at most one directory, got " + ", ".join(positional))
    if positional:
        opts[list(TOOLS[tool][0])[0]] = positional[0]  # output-/input-directory
    if opts["all-databases"] and ("server.database" in cli or "server.database" in from_file):
        raise Fatal("cannot use --server.database and --all-databases at the same time")
    return opts


class Client:
    """HTTP/1.1 keep-alive client with Basic auth, speaking to one endpoint."""

    def __init__(self, opts, topic):
        self.endpoint, self.topic = opts["server.endpoint"], topic
        m = re.match(r"^(tcp|http\+tcp|ssl|http\+ssl|unix)://(\[[^\]]+\]|[^:/]+):?(\d*)$", self.endpoint)
        if not m:
            raise Fatal("invalid value for --server.endpoint ('%s')" % self.endpoint)
        if m.group(1) in ("ssl", "http+ssl", "unix"):
            raise Fatal("endpoint '%s': the Cairn ArangoDB stand-in speaks plain HTTP only "
                        "(no TLS, no unix sockets); use tcp://" % self.endpoint)
        self.host, self.port = m.group(2).strip("[]"), int(m.group(3) or 8529)
        self.user = opts["server.username"]
        self.auth = None
        if opts["server.authentication"]:
            if "server.password" not in opts:
                log("WARN", topic, "no --server.password given: using an empty password "
                    "(the real tool would prompt for one)")
            token = "%s:%s" % (self.user, opts.get("server.password", ""))
            self.auth = "Basic " + base64.b64encode(token.encode("utf-8")).decode()
        self.conn, self.batches, self.sent = None, 0, 0

    def call(self, method, path, db=None, body=None, raw=None):
        """Returns (status, decoded JSON); raises Fatal when the server cannot be reached."""
        url = ("/_db/%s%s" % (quote(db, safe=""), path)) if db else path
        data = raw if raw is not None else (jdump(body).encode("utf-8") if body is not None else b"")
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.auth:
            headers["Authorization"] = self.auth
        for attempt in (1, 2):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection(self.host, self.port, timeout=300)
                self.conn.request(method, url, body=data, headers=headers)
                resp = self.conn.getresponse()
                payload = resp.read()
                break
            except (OSError, http.client.HTTPException) as e:
                self.conn = None
                if attempt == 2 or isinstance(e, ConnectionRefusedError):
                    err = "connect() failed with #%s - %s" % (e.errno, e.strerror) if getattr(e, "errno", None) else str(e)
                    raise Fatal("Could not connect to 'http+tcp://%s:%d' '%s'" % (self.host, self.port, err))
        self.sent += len(data)
        try:
            return resp.status, json.loads(payload.decode("utf-8")) if payload else {}
        except ValueError:
            return resp.status, {"errorMessage": payload[:200].decode("utf-8", "replace")}

    def ok(self, method, path, db=None, body=None, raw=None, action=None):
        status, obj = self.call(method, path, db, body, raw)
        if status >= 400:
            raise Fatal("got invalid response from server: HTTP %d: '%s' while executing %s" % (
                status, obj.get("errorMessage", ""), action or "%s %s" % (method, path)))
        return obj

    def connect(self, db, quiet_missing=False):
        """Checks server, credentials and database as the real tools do before working."""
        try:
            status, obj = self.call("GET", "/_api/version", db)
        except Fatal as e:
            status, obj = 0, {"errorMessage": str(e)}
        if status != 200 and not (quiet_missing and obj.get("errorNum") == 1228):
            log("ERROR", "general", "Could not connect to endpoint '%s', database: '%s', username: '%s'"
                % (self.endpoint, db, self.user))
            reason = obj.get("errorMessage", "")
            if status:
                reason = "HTTP %d (%s): %s" % (status, {401: "Unauthorized", 404: "Not Found"}.get(status, "Error"), reason)
            log("ERROR", "general", "Error message: '%s'" % reason)
        if status != 200:
            return obj.get("errorNum") or status or -1
        return 0


def md5_name(name): return "%s_%s" % (name, md5(name))


def write_text(path, text):
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def prepare_dir(path):
    os.makedirs(path, exist_ok=True)
    if not os.path.exists(os.path.join(path, "ENCRYPTION")):
        write_text(os.path.join(path, "ENCRYPTION"), "none")


def dump_database(cli, o, db, ddir, stats):
    include = o["include-system-collections"] or any(c.startswith("_") for c in o["collection"])
    current = cli.ok("GET", "/_api/database/current", db)["result"]
    listing = cli.ok("GET", "/_api/collection?excludeSystem=%s" % ("false" if include else "true"), db)["result"]
    names = sorted(c["name"] for c in listing if include or not c["name"].startswith("_"))
    if o["collection"]:
        for want in o["collection"]:
            if want not in names:
                log("WARN", "dump", "Requested collection '%s' not found in database" % want)
        names = [n for n in names if n in o["collection"]]
        if not names:
            raise Fatal("None of the requested collections were found in the database")
    write_text(os.path.join(ddir, "dump.json"), jdump({
        "database": db, "lastTickAtDumpStart": "0", "useEnvelope": o["envelope"],
        "properties": {k: current[k] for k in ("id", "name", "isSystem", "path") if k in current}}))
    for name in names:
        props = cli.ok("GET", "/_api/collection/%s/properties" % quote(name, safe=""), db)
        params = {k: v for k, v in props.items() if k not in ("error", "code")}
        params["deleted"] = False
        kind = "edge" if params.get("type") == 3 else "document"
        if o["progress"]:
            log("INFO", "dump", "# Dumping %s collection '%s'..." % (kind, name))
        write_text(os.path.join(ddir, md5_name(name) + ".structure.json"),
                   jdump({"indexes": [], "parameters": params}))
        path = os.path.join(ddir, md5_name(name) + ".data.json" + (".gz" if o["compress-output"] else ""))
        if os.path.exists(path):
            os.unlink(path)
        with (gzip.open(path, "wb") if o["compress-output"] else open(path, "wb")) as out:
            if o["dump-data"]:
                res = cli.ok("POST", "/_api/cursor", db, {"query": QUERY, "bindVars": {"@c": name},
                                                          "batchSize": 1000}, action="dumping collection '%s'" % name)
                while True:
                    stats["batches"] += 1
                    for doc in res["result"]:
                        if o["envelope"]:
                            doc = {"type": 2301 if kind == "edge" else 2300, "data": doc}
                        line = (jdump(doc) + "\n").encode("utf-8")
                        out.write(line)
                        stats["bytes"] += len(line)
                    if not res.get("hasMore"):
                        break
                    res = cli.ok("POST", "/_api/cursor/" + res["id"], db, action="dumping collection '%s'" % name)
        stats["collections"] += 1


def run_dump(argv):
    o, t0 = parse_options("arangodump", argv), time.time()
    out = o["output-directory"].rstrip("/") or "/"
    if os.path.exists(out) and not os.path.isdir(out):
        raise Fatal("cannot write to output directory '%s'" % out)
    if os.path.isdir(out) and os.listdir(out) and not o["overwrite"]:
        raise Fatal("output directory '%s' already exists. use \"--overwrite true\" to overwrite data in it" % out)
    cli = Client(o, "dump")
    prepare_dir(out)  # like the real tool: created (with ENCRYPTION) before connecting
    first = "_system" if o["all-databases"] else o["server.database"]
    if cli.connect(first):
        raise Fatal("cannot create server connection, giving up!")
    if o["progress"]:
        log("INFO", "dump", "Connected to ArangoDB '%s', database: '%s', username: '%s'" % (cli.endpoint, first, cli.user))
        log("INFO", "dump", "Writing dump to output directory '%s' with 1 thread(s)" % out)
    stats = {"collections": 0, "bytes": 0, "batches": 0}
    if o["all-databases"]:
        dbs = sorted(cli.ok("GET", "/_api/database/user", "_system")["result"], key=lambda d: (d != "_system", d))
    else:
        dbs = [first]
    for db in dbs:
        ddir = out
        if o["all-databases"]:
            log("INFO", "dump", "Dumping database '%s'" % db)
            ddir = os.path.join(out, db)
            prepare_dir(ddir)
        dump_database(cli, o, db, ddir, stats)
    log("INFO", "dump", "Processed %d collection(s) from %d database(s) in %.6f s total time. Wrote %d bytes "
        "into datafiles, sent %d batch(es) in total." % (stats["collections"], len(dbs), time.time() - t0,
                                                         stats["bytes"], stats["batches"]))


def read_structures(o, ddir):
    found, seen = [], set()
    for fn in sorted(os.listdir(ddir)):
        if not fn.endswith(".structure.json") or (fn.startswith("_") and not o["include-system-collections"]):
            continue
        path = os.path.join(ddir, fn)
        try:
            with open(path, encoding="utf-8") as f:
                content = json.load(f)
            params, indexes = content.get("parameters"), content.get("indexes")
        except (OSError, ValueError, AttributeError) as e:
            raise Fatal("could not read collection structure file '%s': %s" % (path, e))
        if not isinstance(params, dict) or not isinstance(indexes, list):
            raise Fatal("could not read collection structure file '%s': file has wrong internal format" % path)
        name = params.get("name", "")
        if fn[:-len(".structure.json")] not in (name, md5_name(name)):
            raise Fatal("collection name mismatch in collection structure file '%s' (offending value: '%s')" % (path, name))
        if o["collection"] and name not in o["collection"]:
            continue
        seen.add(name)
        found.append(params)
    for want in o["collection"]:
        if want not in seen:
            log("WARN", "restore", "Requested collection '%s' not found in dump" % want)
    if o["collection"] and not seen:
        raise Fatal("None of the requested collections were found in the dump")
    return sorted(found, key=lambda p: (p.get("type", 2), not p["name"].startswith("_"), p["name"].lower()))


def read_data(ddir, name, envelope):
    """All documents of a collection's data file; Fatal names the file on any damage."""
    for fn in (md5_name(name) + ".data.json", md5_name(name) + ".data.json.gz", name + ".data.json.gz", name + ".data.json"):
        path = os.path.join(ddir, fn)
        if os.path.isfile(path):
            break
    else:
        raise Fatal("could not open data file for collection '%s'" % name)
    docs, lineno = [], 0
    try:
        with (gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")) as f:
            for lineno, raw in enumerate(f, 1):
                if not raw.strip():
                    continue
                doc = json.loads(raw.decode("utf-8"))
                if envelope or ("data" in doc and "type" in doc and "_key" not in doc):
                    if doc.get("type") not in (2300, 2301):
                        raise ValueError("unsupported marker type %r" % doc.get("type"))
                    doc = doc["data"]
                if not isinstance(doc, dict):
                    raise ValueError("expecting a JSON object")
                docs.append(doc)
    except (OSError, EOFError, ValueError, UnicodeDecodeError, AttributeError) as e:
        raise Fatal("corrupted data file '%s' near line %d: %s" % (path, lineno + 1 if isinstance(e, (OSError, EOFError)) else lineno, e))
    return path, os.path.getsize(path), docs


def restore_database(cli, o, db, ddir, stats):
    envelope = False
    try:
        with open(os.path.join(ddir, "dump.json"), encoding="utf-8") as f:
            meta = json.load(f)
        envelope = bool(meta.get("useEnvelope", False))
        log("INFO", "restore", "Database name in source dump is '%s'" % meta.get("database"))
    except (OSError, ValueError) as e:
        log("WARN", "restore", "could not read dump.json file: %s" % e)
    colls = read_structures(o, ddir)
    existing = {c["name"]: c for c in cli.ok("GET", "/_api/collection", db)["result"]}
    for p in colls:
        name, kind = p["name"], "edge" if p.get("type") == 3 else "document"
        quoted = quote(name, safe="")
        if not o["create-collection"]:
            if name not in existing:
                raise Fatal("Error while restoring data into collection '%s': collection or view not found" % name)
            continue
        if o["progress"]:
            log("INFO", "restore", "# %s %s collection '%s'..." % ("Re-creating" if o["overwrite"] else "Creating", kind, name))
        if name in existing and o["overwrite"]:
            if existing[name]["isSystem"]:
                cli.ok("PUT", "/_api/collection/%s/truncate" % quoted, db, action="truncating collection '%s'" % name)
                continue
            cli.ok("DELETE", "/_api/collection/" + quoted, db, action="dropping collection '%s'" % name)
        elif name in existing:
            continue
        spec = {k: p[k] for k in ("name", "type", "waitForSync", "schema", "computedValues", "cacheEnabled") if k in p}
        ko = p.get("keyOptions") or {}
        spec["keyOptions"] = {k: ko[k] for k in ("type", "allowUserKeys", "increment", "offset") if k in ko}
        spec["isSystem"] = name.startswith("_")
        cli.ok("POST", "/_api/collection", db, spec, action="restoring collection '%s'" % name)
    for p in colls:
        name, kind = p["name"], "edge" if p.get("type") == 3 else "document"
        stats["collections"] += 1
        if not o["import-data"]:
            continue
        path, size, docs = read_data(ddir, name, envelope)
        stats["read"] += size
        if o["progress"]:
            log("INFO", "restore", "# Loading data into %s collection '%s', data size: %d byte(s)" % (kind, name, size))
        fresh = o["create-collection"] and (o["overwrite"] or name not in existing)
        for start in range(0, len(docs), 5000):
            body = "\n".join(jdump(d) for d in docs[start:start + 5000]).encode("utf-8")
            res = cli.ok("POST", "/_api/import?collection=%s&type=documents&onDuplicate=%s&complete=true&details=true"
                         % (quote(name, safe=""), "error" if fresh else "replace"), db, raw=body,
                         action="restoring data from '%s'" % path)
            if res.get("errors"):
                raise Fatal("Error while restoring data into collection '%s': %s" % (name, res.get("details")))
            stats["batches"] += 1
            stats["sent"] += len(body)
        if o["progress"]:
            log("INFO", "restore", "# Successfully restored %s collection '%s'" % (kind, name))


def run_restore(argv):
    o, t0 = parse_options("arangorestore", argv), time.time()
    inp = o["input-directory"].rstrip("/") or "/"
    if not os.path.isdir(inp):
        raise Fatal("input directory '%s' does not exist" % inp)
    if not o["import-data"] and not o["create-collection"]:
        raise Fatal("Error: must specify either --create-collection or --import-data")
    if o["all-databases"]:
        subdirs = [d for d in os.listdir(inp) if os.path.isdir(os.path.join(inp, d))]
        dbs = [(d, os.path.join(inp, d)) for d in sorted(subdirs, key=lambda d: (d == "_system", d))]
        if not dbs:
            raise Fatal("Unable to find per-database subdirectories in input directory '%s'. "
                        "No data will be restored!" % inp)
        log("INFO", "restore", "About to restore databases '%s' from dump directory '%s'..."
            % ("', '".join(d for d, _ in dbs), inp))
    else:
        dbs = [(o["server.database"], inp)]
    cli = Client(o, "restore")
    stats = {"collections": 0, "read": 0, "batches": 0, "sent": 0}
    for db, ddir in dbs:
        if o["all-databases"]:
            log("INFO", "restore", "Restoring database '%s'" % db)
        err = cli.connect(db, quiet_missing=o["create-database"])
        if err == 1228 and o["create-database"]:
            log("INFO", "restore", "Creating database '%s'" % db)
            status, obj = cli.call("POST", "/_api/database", "_system", {
                "name": db, "users": [{"username": cli.user, "passwd": o.get("server.password", "")}]})
            if status not in (200, 201):
                raise Fatal("Could not create database '%s': %s" % (db, obj.get("errorMessage")))
            err = cli.connect(db)
        elif err == 1228:
            log("WARN", "restore", "Database '%s' does not exist on target endpoint. In order to create this "
                "database along with the restore, please use the --create-database option" % db)
        if err:
            raise Fatal("cannot create server connection, giving up!")
        if o["progress"]:
            log("INFO", "restore", "Connected to ArangoDB '%s'" % cli.endpoint)
        restore_database(cli, o, db, ddir, stats)
    log("INFO", "restore", "Processed %d collection(s) from %d database(s) in %.6f s total time. Read %d bytes "
        "from datafiles, sent %d data batch(es) of %d bytes total size." % (
            stats["collections"], len(dbs), time.time() - t0, stats["read"], stats["batches"], stats["sent"]))


def main(argv):
    modes = {"serve": serve, "arangodump": run_dump, "arangorestore": run_restore}
    if not argv or argv[0] not in modes:
        sys.stderr.write("usage: arangodb.py serve|arangodump|arangorestore [options]\n")
        return 2
    topic = {"arangodump": "dump", "arangorestore": "restore"}.get(argv[0], "general")
    try:
        modes[argv[0]](argv[1:])
    except Fatal as e:
        if argv[0] == "serve":
            raise
        log("FATAL", topic, str(e))
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
