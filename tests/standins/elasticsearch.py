#!/usr/bin/env python3
"""A loopback stand-in for Elasticsearch 8.11.3 -- for Cairn's plugin tests only.

This is NOT Elasticsearch. It is a small single-process HTTP server answering
the part of the Elasticsearch 8 REST API that Cairn's Elasticsearch plugin
uses, with the request and response shapes, status codes and error bodies of
the real thing ({"error":{"root_cause":[..],"type":..,"reason":..},"status":N}),
so the plugin can be tested where no real Elasticsearch can run.

  elasticsearch.py --port-file FILE --data-dir DIR --path-repo DIR
                   [--path-repo DIR2 ...] [--credentials-file FILE]

It listens on 127.0.0.1 (or --host) on a free port and writes the port number to
--port-file (a temporary file, renamed) once it listens. The cluster state
(indices with uuid, settings, mappings, documents and open/closed state;
aliases; registered repositories) lives in memory and is written atomically to
DIR/state.json after every request other than GET and HEAD, and loaded at
start: the process may be killed and restarted; an empty DIR is a fresh node.
--credentials-file holds `user:password` on its first line; every request then
needs HTTP Basic auth (else 401 security_exception with WWW-Authenticate).
One line per request goes to stderr. Every answer carries the
X-elastic-product: Elasticsearch header, as the official clients check it.

Endpoints. Index expressions may be comma lists, wildcards, `_all`,
`-exclusions` and aliases where Elasticsearch takes them. ?pretty, ?human,
?error_trace, ?format=json and timeouts are accepted; an unknown query
parameter is refused (400), as Elasticsearch does; a request body without a
JSON or NDJSON Content-Type is refused (406), as Elasticsearch does.
  GET  /                                   cluster info
  GET  /_cluster/health[/<index>]          ?wait_for_status answers at once
                                           (408 and timed_out when not met)
  PUT|GET|HEAD|DELETE /<index>             create, get, exists, delete (no
                                           wildcards in delete: 8.x default)
  GET  /[<index>/]_mapping, /[<index>/]_settings
  PUT|POST /<index>/_doc/<id>, POST /<index>/_doc, PUT|POST /<index>/_create/<id>
  GET|HEAD|DELETE /<index>/_doc/<id>
  POST|PUT /[<index>/]_bulk                index, create and delete actions
  GET|POST /[<index>/]_count               no query, or match_all only
  GET|POST /[<index>/]_refresh             a no-op: writes are visible at once
  POST /<index>/_close, POST /<index>/_open
  GET  /_cat/indices[/<index>]             text table, or ?format=json; h, s, v,
                                           bytes, health
  GET|HEAD /_alias[/<name>], GET /<index>/_alias[/<name>], GET /_aliases
  POST /_aliases                           add, remove, remove_index; atomic
  POST /_reindex                           whole source index(es) into dest
  PUT|POST|GET|DELETE /_snapshot/<repo>, GET /_snapshot    type "fs" only
  PUT|POST|GET|DELETE /_snapshot/<repo>/<snapshot>
  POST /_snapshot/<repo>/<snapshot>/_restore
Any other route gets Elasticsearch's own answer for an unknown route (400
"no handler found for uri [..] and method [..]") or wrong method (405), so a
call outside this surface fails loudly.

Snapshots are files in the repository directory, laid out like the blob store
of Elasticsearch: index-<N> (repository data: snapshots, indices and their
ids) with index.latest (N, 8 bytes big-endian), snap-<uuid>.dat (snapshot
info), meta-<uuid>.dat (global metadata), indices/<id>/meta-<h>.dat (settings,
mappings, aliases of an index) and indices/<id>/0/ holding the documents as
content-addressed blobs __<h> of 500 documents in _seq_no order, listed with
length and sha256 in indices/<id>/0/snap-<uuid>.dat. Unchanged documents give
unchanged blobs, which are reused: a second snapshot of unchanged indices
writes only metadata. A repository is always read from its files, never from
memory, so its directory can be copied away and registered elsewhere (e.g.
readonly). Restore checks every blob's sha256 and fails (500) rather than
restore damaged data. As in 8.x, snapshots include closed indices (the
default expand_wildcards is "all") and restore them open; restoring over an
open index fails, over a closed one replaces it.

Deliberate simplifications: one node; each index is one store (one shard
directory, `0`, in snapshots) whatever index.number_of_shards says, though
shard counts in answers follow that setting; health is yellow while an open
index wants replicas (as on a real single node); no Lucene segments, no
search or queries; dynamic mapping only adds fields (long, float, boolean,
date, text+keyword, object) and never checks types; no update action,
versioning parameters, templates, data streams or feature states; snapshot
and restore are synchronous even without wait_for_completion; blobs are JSON,
not SMILE/Lucene files.
"""
import argparse
import base64
import copy
import fnmatch
import hashlib
import json
import os
import re
import shutil
import sys
import threading
import time
import traceback
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

VERSION = "8.11.3"
INDEX_VERSION = "8500003"          # index.version.created of 8.11
CLUSTER_NAME = "elasticsearch"
NODE_NAME = "standin-node"
CHUNK_DOCS = 500                   # documents per data blob in a snapshot
JSON_TYPES = ("application/json", "application/x-ndjson",
              "application/vnd.elasticsearch+json", "application/vnd.elasticsearch+x-ndjson")
# Query parameters understood, or harmless to ignore (timeouts, output style).
KNOWN_PARAMS = {
    "pretty", "format", "human", "error_trace", "master_timeout", "timeout",
    "wait_for_active_shards", "local", "refresh", "wait_for_completion", "h", "s", "v",
    "bytes", "health", "expand_wildcards", "ignore_unavailable", "allow_no_indices",
    "op_type", "wait_for_status", "level", "flat_settings", "verify", "verbose", "q",
    "must_exist", "include_defaults",
}

STATE = {}                         # the cluster state, persisted to state.json
CONF = {}                          # command-line settings
LOCK = threading.RLock()           # one request at a time touches STATE


class ESError(Exception):
    """An error answered in Elasticsearch's structured form."""

    def __init__(self, status, etype, reason, caused_by=None, headers=None, **extra):
        super().__init__(reason)
        err = {"type": etype, "reason": reason, **extra}
        root = err
        if caused_by:
            err["caused_by"] = root = caused_by
            while "caused_by" in root:
                root = root["caused_by"]
        root = {k: v for k, v in root.items() if k != "caused_by"}
        self.status, self.headers = status, headers or {}
        self.body = {"error": {"root_cause": [root], **err}, "status": status}


class FlatError(ESError):
    """The few errors Elasticsearch answers with a bare string as "error"."""

    def __init__(self, status, message, with_status=True):
        Exception.__init__(self, message)
        self.status, self.headers = status, {}
        self.body = {"error": message, "status": status} if with_status else {"error": message}


def now_ms():
    return int(time.time() * 1000)


def iso(ms):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + ".%03dZ" % (ms % 1000)


def b64id():
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def canon(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def atomic_write(path, data):
    tmp = "%s.tmp-%d-%d" % (path, os.getpid(), threading.get_ident())
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_state():
    atomic_write(CONF["state_file"], json.dumps(STATE).encode())


# ----------------------------------------------------------------- indices --

def index_not_found(name):
    return ESError(404, "index_not_found_exception", f"no such index [{name}]",
                   **{"resource.type": "index_or_alias", "resource.id": name,
                      "index_uuid": "_na_", "index": name})


def closed_error(name):
    return ESError(400, "index_closed_exception", "closed",
                   index_uuid=STATE["indices"][name]["uuid"], index=name)


def check_name(name, kind="index"):
    def bad(why):
        if kind == "index":
            raise ESError(400, "invalid_index_name_exception", f"Invalid index name [{name}], {why}",
                          index_uuid="_na_", index=name)
        raise ESError(400, "invalid_alias_name_exception", f"Invalid alias name [{name}]: {why}")
    if not name:
        bad("must not be empty")
    if any(c in name for c in '\\/*?"<>| ,'):
        bad('must not contain the following characters [ , ", *, \\, <, |, ,, >, /, ?]')
    if "#" in name:
        bad("must not contain '#'")
    if ":" in name:
        bad("must not contain ':'")
    if name[0] in "_-+":
        bad("must not start with '_', '-', or '+'")
    if len(name.encode()) > 255:
        bad(f"index name is too long, ({len(name.encode())} > 255)")
    if name in (".", ".."):
        bad("must not be '.' or '..'")
    if kind == "index" and name.lower() != name:
        bad("must be lowercase")


def flat_settings(tree, prefix=""):
    out = {}
    for key, val in (tree or {}).items():
        if isinstance(val, dict):
            out.update(flat_settings(val, prefix + key + "."))
        elif isinstance(val, bool):
            out[prefix + key] = "true" if val else "false"
        elif isinstance(val, list):
            out[prefix + key] = [str(v) for v in val]
        elif val is not None:
            out[prefix + key] = str(val)
    return out


def index_settings(tree):
    return {(k if k.startswith("index.") else "index." + k): v for k, v in flat_settings(tree).items()}


def nest(flat):
    out = {}
    for key, val in sorted(flat.items()):
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = val
    return out


def shards(ix):
    return int(ix["settings"].get("index.number_of_shards", "1"))


def replicas(ix):
    return int(ix["settings"].get("index.number_of_replicas", "1"))


def alias_map():
    out = {}
    for name, ix in sorted(STATE["indices"].items()):
        for alias in ix["aliases"]:
            out.setdefault(alias, []).append(name)
    return out


def wildcard_states(req, default=("open",), spec=None):
    spec = spec or req.params.get("expand_wildcards")
    if spec is None:
        return default
    states = set()
    for part in spec.split(","):
        states |= {"all": {"open", "close"}, "open": {"open"}, "closed": {"close"}}.get(part, set())
    return tuple(states)


def resolve(expr, states=("open",), ignore_unavailable=False):
    """Concrete index names for an index expression, in a stable order."""
    indices, aliases, out = STATE["indices"], alias_map(), []
    parts = [p for p in (expr or "_all").split(",") if p]
    for i, part in enumerate(parts):
        negate = part.startswith("-") and i > 0
        part = part[1:] if negate else part
        part = "*" if part == "_all" else part
        if "*" in part:
            names = [n for n in indices if fnmatch.fnmatchcase(n, part)]
            names += [m for a, ms in aliases.items() if fnmatch.fnmatchcase(a, part) for m in ms]
            names = [n for n in names if indices[n]["state"] in states]
        elif part in indices:
            names = [part]
        elif part in aliases:
            names = aliases[part]
        elif negate or ignore_unavailable:
            continue
        else:
            raise index_not_found(part)
        if negate:
            out = [n for n in out if n not in names]
        else:
            out += [n for n in sorted(set(names)) if n not in out]
    return out


def refuse_wildcards(expr, wildcards_too=True):
    """Destructive calls name concrete indices (action.destructive_requires_name defaults to true in 8.x)."""
    for part in expr.split(","):
        if wildcards_too and ("*" in part or part == "_all"):
            raise ESError(400, "illegal_argument_exception",
                          "Wildcard expressions or all indices are not allowed")
        if part not in STATE["indices"] and part in alias_map():
            raise ESError(400, "illegal_argument_exception", f"The provided expression [{part}] "
                          "matches an alias, specify the corresponding concrete indices instead.")


def create_index(name, settings=None, mappings=None, aliases=None):
    check_name(name)
    if name in STATE["indices"]:
        ix = STATE["indices"][name]
        raise ESError(400, "resource_already_exists_exception",
                      f"index [{name}/{ix['uuid']}] already exists", index_uuid=ix["uuid"], index=name)
    if name in alias_map():
        raise ESError(400, "invalid_index_name_exception",
                      f"Invalid index name [{name}], already exists as alias", index_uuid="_na_", index=name)
    for alias in aliases or {}:
        check_name(alias, "alias")
        if alias in STATE["indices"] or alias == name:
            raise ESError(400, "invalid_alias_name_exception", f"Invalid alias name [{alias}]: "
                          "an index or data stream exists with the same name as the alias")
    uid, created = b64id(), now_ms()
    flat = {"index.number_of_shards": "1", "index.number_of_replicas": "1",
            "index.routing.allocation.include._tier_preference": "data_content"}
    flat.update(index_settings(settings))
    flat.update({"index.uuid": uid, "index.provided_name": name, "index.creation_date": str(created),
                 "index.version.created": INDEX_VERSION})
    STATE["indices"][name] = {"uuid": uid, "state": "open", "settings": flat,
                              "mappings": copy.deepcopy(mappings or {}),
                              "aliases": {a: alias_props(p) for a, p in (aliases or {}).items()},
                              "docs": {}, "seq_no": 0}
    return STATE["indices"][name]


def alias_props(props):
    props = dict(props or {})
    if "routing" in props:
        props.setdefault("index_routing", props["routing"])
        props.setdefault("search_routing", props.pop("routing"))
    keep = ("filter", "index_routing", "search_routing", "is_write_index", "is_hidden")
    return {k: props[k] for k in keep if k in props}


def infer_mapping(value):
    if isinstance(value, bool):
        return {"type": "boolean"}
    if isinstance(value, int):
        return {"type": "long"}
    if isinstance(value, float):
        return {"type": "float"}
    if isinstance(value, dict):
        return {"properties": {k: m for k, v in value.items() if (m := infer_mapping(v))}}
    if isinstance(value, list):
        return next((m for v in value if (m := infer_mapping(v))), None)
    if isinstance(value, str):
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?", value):
            return {"type": "date"}
        return {"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 256}}}
    return None


def add_dynamic_fields(ix, source):
    mappings = ix["mappings"]
    dynamic = str(mappings.get("dynamic", "true")).lower()
    props = mappings.setdefault("properties", {}) if dynamic == "true" else mappings.get("properties", {})

    def merge(have, new, prefix):
        for field, m in new.items():
            if field not in have:
                if dynamic == "strict":
                    raise ESError(400, "strict_dynamic_mapping_exception", "[1:2] mapping set to strict, "
                                  f"dynamic introduction of [{field}] within [{prefix or '_doc'}] is not allowed")
                if dynamic == "true":
                    have[field] = m
            elif "properties" in m and "properties" in have[field]:
                merge(have[field]["properties"], m["properties"], field)
    merge(props, infer_mapping(source)["properties"], "")
    if not props and "properties" in mappings and dynamic == "true":
        del mappings["properties"]


def write_target(name):
    indices = STATE["indices"]
    if name in indices:
        return name
    members = alias_map().get(name)
    if members:
        writers = [m for m in members if indices[m]["aliases"][name].get("is_write_index") is True]
        if len(members) == 1 and indices[members[0]]["aliases"][name].get("is_write_index") is not False:
            return members[0]
        if len(writers) == 1:
            return writers[0]
        raise ESError(400, "illegal_argument_exception", f"no write index is defined for alias [{name}]. "
                      "The write index may be explicitly disabled using is_write_index=false or the alias "
                      "points to multiple indices without one being designated as a write index")
    create_index(name)                       # auto-creation, as action.auto_create_index allows
    return name


def read_target(name):
    if name in STATE["indices"]:
        target = name
    else:
        members = alias_map().get(name)
        if not members:
            raise index_not_found(name)
        if len(members) > 1:
            raise ESError(400, "illegal_argument_exception", f"alias [{name}] has more than one index "
                          f"associated with it [{', '.join(members)}], can't execute a single index op")
        target = members[0]
    if STATE["indices"][target]["state"] == "close":
        raise closed_error(target)
    return target


def write_shards(ix):
    return {"total": 1 + replicas(ix), "successful": 1, "failed": 0}


def index_doc(name, doc_id, source, op="index"):
    target = write_target(name)
    ix = STATE["indices"][target]
    if ix["state"] == "close":
        raise closed_error(target)
    if not isinstance(source, dict):
        raise ESError(400, "mapper_parsing_exception", "failed to parse, document is empty"
                      if source is None else "failed to parse")
    if doc_id == "":
        raise ESError(400, "action_request_validation_exception",
                      "Validation Failed: 1: if _id is specified it must not be empty;")
    doc_id = doc_id if doc_id is not None else b64id()[:20]
    old = ix["docs"].get(doc_id)
    if old and op == "create":
        raise ESError(409, "version_conflict_engine_exception", f"[{doc_id}]: version conflict, document "
                      f"already exists (current version [{old['_version']}])",
                      index_uuid=ix["uuid"], shard="0", index=target)
    add_dynamic_fields(ix, source)
    version, seq = (old["_version"] + 1 if old else 1), ix["seq_no"]
    ix["seq_no"] += 1
    ix["docs"][doc_id] = {"_version": version, "_seq_no": seq, "_source": source}
    return (200 if old else 201), {"_index": target, "_id": doc_id, "_version": version,
                                   "result": "updated" if old else "created", "_shards": write_shards(ix),
                                   "_seq_no": seq, "_primary_term": 1}


def delete_doc(name, doc_id):
    target = read_target(name)
    ix = STATE["indices"][target]
    old = ix["docs"].pop(doc_id, None)
    seq = ix["seq_no"]
    ix["seq_no"] += 1
    return (200 if old else 404), {"_index": target, "_id": doc_id, "_version": old["_version"] + 1 if old else 1,
                                   "result": "deleted" if old else "not_found", "_shards": write_shards(ix),
                                   "_seq_no": seq, "_primary_term": 1}


# ------------------------------------------------------- cluster endpoints --

def h_root(req):
    return 200, {"name": NODE_NAME, "cluster_name": CLUSTER_NAME, "cluster_uuid": STATE["cluster_uuid"],
                 "version": {"number": VERSION, "build_flavor": "default", "build_type": "docker",
                             "build_hash": "standin", "build_date": "2023-12-08T11:33:53.634979452Z",
                             "build_snapshot": False, "lucene_version": "9.8.0",
                             "minimum_wire_compatibility_version": "7.17.0",
                             "minimum_index_compatibility_version": "7.0.0"},
                 "tagline": "You Know, for Search"}


def h_health(req, index=None):
    names = resolve(index, ("open", "close")) if index else list(STATE["indices"])
    live = [STATE["indices"][n] for n in names if STATE["indices"][n]["state"] == "open"]
    active = sum(shards(ix) for ix in live)
    unassigned = sum(shards(ix) * replicas(ix) for ix in live)
    status = "yellow" if unassigned else "green"
    wanted = req.params.get("wait_for_status")
    rank = {"green": 0, "yellow": 1, "red": 2}
    timed_out = wanted is not None and rank[status] > rank.get(wanted, 2)
    body = {"cluster_name": CLUSTER_NAME, "status": status, "timed_out": timed_out, "number_of_nodes": 1,
            "number_of_data_nodes": 1, "active_primary_shards": active, "active_shards": active,
            "relocating_shards": 0, "initializing_shards": 0, "unassigned_shards": unassigned,
            "delayed_unassigned_shards": 0, "number_of_pending_tasks": 0, "number_of_in_flight_fetch": 0,
            "task_max_waiting_in_queue_millis": 0,
            "active_shards_percent_as_number": 100.0 * active / (active + unassigned) if active + unassigned else 100.0}
    return (408 if timed_out else 200), body


def h_index_put(req, index):
    body = req.json()
    create_index(index, body.get("settings"), body.get("mappings"), body.get("aliases"))
    return 200, {"acknowledged": True, "shards_acknowledged": True, "index": index}


def h_index_delete(req, index):
    refuse_wildcards(index)
    for name in resolve(index, ("open", "close"), req.flag("ignore_unavailable")):
        del STATE["indices"][name]
    return 200, {"acknowledged": True}


def index_view(name, part, flat=False):
    ix = STATE["indices"][name]
    settings = dict(ix["settings"])
    if ix["state"] == "close":
        settings["index.verified_before_close"] = "true"
    return {"aliases": ix["aliases"], "mappings": ix["mappings"],
            "settings": settings if flat else nest(settings)}[part]


def h_index_get(req, index=None, parts=("aliases", "mappings", "settings")):
    names = resolve(index, wildcard_states(req), req.flag("ignore_unavailable"))
    flat = req.flag("flat_settings")
    return 200, (None if req.method == "HEAD" else {n: {p: index_view(n, p, flat) for p in parts} for n in names})


def h_mapping(req, index=None):
    return h_index_get(req, index, ("mappings",))


def h_settings(req, index=None):
    return h_index_get(req, index, ("settings",))


def h_doc_put(req, index, doc_id=None, op="index"):
    op = "create" if req.params.get("op_type") == "create" else op
    return index_doc(index, doc_id, req.json(required=True), op)


def h_doc_create(req, index, doc_id):
    return h_doc_put(req, index, doc_id, "create")


def h_doc_get(req, index, doc_id):
    target = read_target(index)
    doc = STATE["indices"][target]["docs"].get(doc_id)
    if doc is None:
        return 404, {"_index": target, "_id": doc_id, "found": False}
    return 200, {"_index": target, "_id": doc_id, "_version": doc["_version"], "_seq_no": doc["_seq_no"],
                 "_primary_term": 1, "found": True, "_source": doc["_source"]}


def h_doc_delete(req, index, doc_id):
    return delete_doc(index, doc_id)


def h_bulk(req, index=None):
    started, text = time.time(), req.body.decode("utf-8")
    if text and not text.endswith("\n"):
        raise ESError(400, "illegal_argument_exception", "The bulk request must be terminated by a newline [\\n]")
    lines, items, errors, i = text.split("\n"), [], False, 0
    while i < len(lines):
        line, i = lines[i].strip(), i + 1
        if not line:
            continue
        try:
            (op, meta), = json.loads(line).items()
            meta.get
        except (ValueError, AttributeError):
            raise ESError(400, "illegal_argument_exception", f"Malformed action/metadata line [{i}], "
                          "expected START_OBJECT with a single action")
        if op == "update":
            raise ESError(400, "illegal_argument_exception", "the Elasticsearch stand-in does not "
                          "implement bulk [update] actions (only index, create, delete)")
        if op not in ("index", "create", "delete"):
            raise ESError(400, "illegal_argument_exception", f"Malformed action/metadata line [{i}], "
                          f"expected one of [create, delete, index, update] but found [{op}]")
        name, doc_id = meta.get("_index", index), meta.get("_id")
        if op != "delete":
            try:
                source, i = json.loads(lines[i]), i + 1
            except (ValueError, IndexError):
                raise ESError(400, "x_content_parse_exception", f"[{i + 1}:1] failed to parse document source")
        try:
            if not name:
                raise ESError(400, "action_request_validation_exception", "Validation Failed: 1: index is missing;")
            if op == "delete" and doc_id is None:
                raise ESError(400, "action_request_validation_exception", "Validation Failed: 1: id is missing;")
            status, res = delete_doc(name, doc_id) if op == "delete" else index_doc(name, doc_id, source, op)
            res["status"] = status
        except ESError as e:
            errors = True
            res = {"_index": name, "_id": doc_id, "status": e.status,
                   "error": {k: v for k, v in e.body["error"].items() if k != "root_cause"}}
        items.append({op: res})
    return 200, {"took": int((time.time() - started) * 1000), "errors": errors, "items": items}


def h_count(req, index=None):
    query = req.json().get("query")
    if "q" in req.params or query not in (None, {"match_all": {}}):
        raise ESError(400, "illegal_argument_exception",
                      "the Elasticsearch stand-in has no search: _count takes no query but match_all")
    names = resolve(index, wildcard_states(req), req.flag("ignore_unavailable"))
    for n in names:
        if STATE["indices"][n]["state"] == "close":
            raise closed_error(n)
    total = sum(shards(STATE["indices"][n]) for n in names)
    return 200, {"count": sum(len(STATE["indices"][n]["docs"]) for n in names),
                 "_shards": {"total": total, "successful": total, "skipped": 0, "failed": 0}}


def h_refresh(req, index=None):
    names = resolve(index, wildcard_states(req), req.flag("ignore_unavailable"))
    for n in names:
        if STATE["indices"][n]["state"] == "close":
            raise closed_error(n)
    ixs = [STATE["indices"][n] for n in names]
    return 200, {"_shards": {"total": sum(shards(ix) * (1 + replicas(ix)) for ix in ixs),
                             "successful": sum(shards(ix) for ix in ixs), "failed": 0}}


def h_close(req, index):
    refuse_wildcards(index)
    names = resolve(index, ("open", "close"), req.flag("ignore_unavailable"))
    for n in names:
        STATE["indices"][n]["state"] = "close"
    return 200, {"acknowledged": True, "shards_acknowledged": True, "indices": {n: {"closed": True} for n in names}}


def h_open(req, index):
    for n in resolve(index, wildcard_states(req, ("close",)), req.flag("ignore_unavailable")):
        STATE["indices"][n]["state"] = "open"
    return 200, {"acknowledged": True, "shards_acknowledged": True}


CAT_COLUMNS = ["health", "status", "index", "uuid", "pri", "rep", "docs.count", "docs.deleted",
               "store.size", "pri.store.size", "dataset.size"]
CAT_ALIASES = {"h": "health", "s": "status", "i": "index", "idx": "index", "id": "uuid", "p": "pri",
               "shards.primary": "pri", "r": "rep", "shards.replica": "rep", "dc": "docs.count",
               "docsCount": "docs.count", "dd": "docs.deleted", "ss": "store.size", "storeSize": "store.size"}


def human_bytes(n, unit):
    if n is None:
        return None
    if unit == "b":
        return str(n)
    for suffix in ("b", "kb", "mb", "gb", "tb"):
        if n < 1024 or suffix == "tb":
            return f"{n}b" if suffix == "b" else ("%.1f" % n).rstrip("0").rstrip(".") + suffix
        n /= 1024


def h_cat_indices(req, index=None):
    rows = []
    for name in resolve(index, wildcard_states(req, ("open", "close"))):
        ix = STATE["indices"][name]
        closed = ix["state"] == "close"
        size = None if closed else len(canon(ix["docs"])) + 225
        size_s = human_bytes(size, req.params.get("bytes"))
        rows.append({"health": "yellow" if replicas(ix) else "green", "status": ix["state"], "index": name,
                     "uuid": ix["uuid"], "pri": str(shards(ix)), "rep": str(replicas(ix)),
                     "docs.count": None if closed else str(len(ix["docs"])),
                     "docs.deleted": None if closed else "0",
                     "store.size": size_s, "pri.store.size": size_s, "dataset.size": size_s})
    if "health" in req.params:
        rows = [r for r in rows if r["health"] == req.params["health"]]
    cols = [CAT_ALIASES.get(c, c) for c in req.params.get("h", ",".join(CAT_COLUMNS)).split(",")]
    for c in cols:
        if c not in CAT_COLUMNS:
            raise ESError(400, "illegal_argument_exception", f"Unknown column [{c}] for the stand-in's _cat/indices")
    for key in reversed(req.params.get("s", "index").split(",")):
        col, _, order = key.partition(":")
        col = CAT_ALIASES.get(col, col)
        numeric = col in ("pri", "rep", "docs.count", "docs.deleted")
        rows.sort(key=lambda r: (r[col] is None, int(r[col] or 0) if numeric else r[col] or ""),
                  reverse=order == "desc")
    if req.params.get("format") == "json":
        return 200, [{c: r[c] for c in cols} for r in rows]
    table = ([cols] if req.flag("v") else []) + [[r[c] or "" for c in cols] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))] if table else []
    right = {"pri", "rep", "docs.count", "docs.deleted", "store.size", "pri.store.size", "dataset.size"}
    return 200, "".join(" ".join(cell.rjust(w) if col in right else cell.ljust(w)
                                 for cell, w, col in zip(row, widths, cols)).rstrip() + "\n" for row in table)


# ----------------------------------------------------------------- aliases --

def h_alias_get(req, index=None, name=None):
    indices = STATE["indices"]
    names = resolve(index, wildcard_states(req, ("open", "close"))) if index else list(indices)
    wanted = [p for p in (name or "").split(",") if p]
    match = (lambda a: True) if not wanted or "_all" in wanted else \
        (lambda a: any(fnmatch.fnmatchcase(a, p) for p in wanted))
    result = {}
    for n in names:
        found = {a: p for a, p in indices[n]["aliases"].items() if match(a)}
        if found or not name:
            result[n] = {"aliases": found}
    every = {a for n in names for a in indices[n]["aliases"]}
    missing = [p for p in wanted if "*" not in p and p != "_all" and p not in every]
    if missing:
        message = f"alias [{missing[0]}] missing" if len(missing) == 1 else f"aliases [{','.join(missing)}] missing"
        return 404, {"error": message, "status": 404, **result}
    return 200, (None if req.method == "HEAD" else result)


def h_aliases_post(req):
    actions = req.json(required=True).get("actions")
    if not isinstance(actions, list) or not actions:
        raise ESError(400, "action_request_validation_exception",
                      "Validation Failed: 1: Must specify at least one alias action;")
    work = {n: dict(ix["aliases"]) for n, ix in STATE["indices"].items()}   # applied only if all succeed
    parsed = []
    for action in actions:
        if not isinstance(action, dict) or len(action) != 1:
            raise ESError(400, "illegal_argument_exception", "each alias action must hold exactly one of "
                          "[add, remove, remove_index]")
        (kind, spec), = action.items()
        if kind not in ("add", "remove", "remove_index") or not isinstance(spec, dict):
            raise ESError(400, "x_content_parse_exception", f"[1:1] [alias_action] unknown field [{kind}]")
        parsed.append((kind, spec))
    for kind, spec in parsed:                # remove_index goes first, as in Elasticsearch
        if kind == "remove_index":
            exprs = spec.get("indices") or [spec.get("index")]
            for expr in exprs:
                refuse_wildcards(expr, wildcards_too=False)
                for n in resolve(expr, ("open", "close")):
                    work.pop(n, None)
    for kind, spec in parsed:
        if kind == "remove_index":
            continue
        exprs = spec.get("indices") or [spec.get("index")]
        aliases = spec.get("aliases") or [spec.get("alias")]
        if None in exprs or None in aliases:
            raise ESError(400, "action_request_validation_exception",
                          f"Validation Failed: 1: [{kind}] requires an [index] and an [alias];")
        targets = [n for e in exprs for n in resolve(e, ("open", "close")) if n in work]
        if not targets:
            raise index_not_found(exprs[0])
        for alias in aliases:
            if kind == "add":
                check_name(alias, "alias")
                if alias in work:
                    raise ESError(400, "invalid_alias_name_exception", f"Invalid alias name [{alias}]: "
                                  "an index or data stream exists with the same name as the alias")
                for n in targets:
                    work[n][alias] = alias_props(spec)
            else:
                hits = [(n, a) for n in targets for a in work[n] if fnmatch.fnmatchcase(a, alias)]
                if not hits and spec.get("must_exist", True) is not False:
                    raise ESError(404, "aliases_not_found_exception", f"aliases [{alias}] missing",
                                  **{"resource.type": "aliases", "resource.id": alias})
                for n, a in hits:
                    del work[n][a]
    for n in list(STATE["indices"]):
        if n not in work:
            del STATE["indices"][n]
        else:
            STATE["indices"][n]["aliases"] = work[n]
    return 200, {"acknowledged": True}


def h_reindex(req):
    started, body = time.time(), req.json(required=True)
    src, dest = body.get("source") or {}, body.get("dest") or {}
    if not src.get("index") or not dest.get("index"):
        raise ESError(400, "action_request_validation_exception", "Validation Failed: 1: use _all if you really "
                      "want to copy from all existing indexes;" if not src.get("index") else
                      "Validation Failed: 1: index must be specified;")
    if src.get("query") not in (None, {"match_all": {}}) or "script" in body:
        raise ESError(400, "illegal_argument_exception", "the Elasticsearch stand-in reindexes whole indices only")
    expr = ",".join(src["index"]) if isinstance(src["index"], list) else src["index"]
    names = resolve(expr)
    if dest["index"] in names or alias_map().get(dest["index"], [None])[0] in names:
        raise ESError(400, "action_request_validation_exception",
                      f"Validation Failed: 1: reindex cannot write into an index its reading from [{dest['index']}];")
    for n in names:
        if STATE["indices"][n]["state"] == "close":
            raise closed_error(n)
    docs = [(i, d["_source"]) for n in names for i, d in sorted(STATE["indices"][n]["docs"].items(),
                                                                   key=lambda kv: kv[1]["_seq_no"])]
    if "max_docs" in body:
        docs = docs[:int(body["max_docs"])]
    created = updated = conflicts = 0
    failures = []
    for doc_id, source in docs:
        try:
            status, _ = index_doc(dest["index"], doc_id, copy.deepcopy(source), dest.get("op_type", "index"))
            created, updated = created + (status == 201), updated + (status == 200)
        except ESError as e:
            if e.status != 409:
                raise
            conflicts += 1
            if body.get("conflicts") != "proceed":
                failures.append({"index": dest["index"], "id": doc_id, "cause": e.body["error"], "status": 409})
                break
    result = {"took": int((time.time() - started) * 1000), "timed_out": False, "total": len(docs),
              "updated": updated, "created": created, "deleted": 0, "batches": 1 if docs else 0,
              "version_conflicts": conflicts, "noops": 0, "retries": {"bulk": 0, "search": 0},
              "throttled_millis": 0, "requests_per_second": -1.0, "throttled_until_millis": 0,
              "failures": failures}
    if not req.flag("wait_for_completion", True):
        return 200, {"task": f"{NODE_NAME}:{now_ms() % 100000}"}
    return 200, result


# ------------------------------------------------------------ repositories --

def repo_path(location):
    """Where a repository location points, or None when outside every path.repo."""
    bases = [os.path.normpath(os.path.abspath(b)) for b in CONF["path_repo"]]
    if not bases:
        return None
    path = os.path.normpath(location if os.path.isabs(location) else os.path.join(bases[0], location))
    return path if any(path == b or path.startswith(b.rstrip(os.sep) + os.sep) for b in bases) else None


def repo_or_404(name):
    repo = STATE["repositories"].get(name)
    if repo is None:
        raise ESError(404, "repository_missing_exception", f"[{name}] missing")
    return repo


def repo_dir(name):
    return repo_path(repo_or_404(name)["settings"]["location"])


def repo_readonly(name):
    return repo_or_404(name)["settings"].get("readonly", "false") == "true"


def pick(expr, names, missing):
    """Names matching a comma list with wildcards; `missing(name)` builds the error for an absent one."""
    out = []
    for part in (expr or "_all").split(","):
        if part in ("_all", "*") or "*" in part:
            out += [n for n in names if fnmatch.fnmatchcase(n, "*" if part == "_all" else part) and n not in out]
        elif part in names:
            out += [part] if part not in out else []
        elif missing:
            raise missing(part)
    return out


def h_repo_put(req, repo):
    body = req.json(required=True)
    settings = flat_settings(body.get("settings"))

    def fail(why):
        raise ESError(500, "repository_exception", f"[{repo}] failed to create repository",
                      caused_by={"type": "repository_exception", "reason": f"[{repo}] {why}"})
    if body.get("type") != "fs":
        fail(f"repository type [{body.get('type')}] does not exist (the stand-in knows only [fs])")
    location = settings.get("location")
    if not location:
        fail("missing location")
    path = repo_path(location)
    if path is None:
        fail(f"location [{location}] doesn't match any of the locations specified by path.repo"
             + ("" if CONF["path_repo"] else " because this setting is empty"))
    if settings.get("readonly", "false") != "true":
        os.makedirs(path, exist_ok=True)
    STATE["repositories"][repo] = {"type": "fs", "settings": settings}
    return 200, {"acknowledged": True}


def h_repo_get(req, repo=None):
    names = pick(repo, list(STATE["repositories"]),
                 lambda n: ESError(404, "repository_missing_exception", f"[{n}] missing"))
    return 200, {n: STATE["repositories"][n] for n in names}


def h_repo_delete(req, repo):
    for n in pick(repo, list(STATE["repositories"]),
                  lambda n: ESError(404, "repository_missing_exception", f"[{n}] missing")):
        del STATE["repositories"][n]
    return 200, {"acknowledged": True}


# --------------------------------------------------------------- blob store --

def read_json(path, what):
    try:
        with open(path, "rb") as f:
            return json.loads(f.read())
    except (OSError, ValueError) as e:
        raise ESError(500, "repository_exception", f"could not read {what} [{path}]: {e}")


def read_repo_data(repo, d):
    """(generation, repository data) read from index.latest and index-N; (-1, empty) for an empty repository."""
    latest = os.path.join(d, "index.latest")
    if os.path.exists(latest):
        with open(latest, "rb") as f:
            gen = int.from_bytes(f.read(8), "big")
    else:
        names = os.listdir(d) if os.path.isdir(d) else []
        gen = max((int(m.group(1)) for n in names if (m := re.fullmatch(r"index-(\d+)", n))), default=-1)
    if gen < 0:
        return -1, {"min_version": VERSION, "uuid": b64id(), "cluster_id": STATE["cluster_uuid"],
                    "snapshots": [], "indices": {}}
    return gen, read_json(os.path.join(d, f"index-{gen}"), f"[{repo}] repository data blob")


def write_repo_data(d, gen, data):
    atomic_write(os.path.join(d, f"index-{gen + 1}"), json.dumps(data, indent=1, sort_keys=True).encode())
    atomic_write(os.path.join(d, "index.latest"), (gen + 1).to_bytes(8, "big"))
    for name in os.listdir(d):                           # keep only the current generation
        if (m := re.fullmatch(r"index-(\d+)", name)) and int(m.group(1)) <= gen:
            os.remove(os.path.join(d, name))


def put_blob(directory, prefix, data):
    """Store content-addressed: an identical blob already there is reused, not rewritten."""
    digest = hashlib.sha256(data).hexdigest()
    name = f"{prefix}{digest[:32]}" + (".dat" if prefix == "meta-" else "")
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, name)
    if not (os.path.exists(path) and os.path.getsize(path) == len(data)):
        atomic_write(path, data)
    return name, digest


def get_blob(path, sha256=None, length=None):
    """A blob's bytes, after checking them against their name (and recorded checksum and length)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ValueError(f"blob [{path}] cannot be read: {e.strerror}") from None
    digest = hashlib.sha256(data).hexdigest()
    stem = os.path.basename(path).removeprefix("__").removeprefix("meta-").removesuffix(".dat")
    # Only content-addressed names (`__<hex>`, `meta-<hex>.dat`) carry their hash; `snap-<uuid>.dat` does not.
    named_by_hash = bool(stem) and all(c in "0123456789abcdef" for c in stem)
    if (named_by_hash and not digest.startswith(stem)) or (sha256 and digest != sha256) or \
            (length is not None and len(data) != length):
        raise ValueError(f"checksum failed (hardware problem?) : expected={sha256 or stem} actual={digest} "
                         f"length={len(data)} resource=[{path}]")
    return data


def snapshot_info(d, entry, repo):
    info = read_json(os.path.join(d, f"snap-{entry['uuid']}.dat"), "snapshot info")
    info["repository"] = repo
    return info


def check_snapshot_name(repo, snap):
    def bad(why):
        raise ESError(400, "invalid_snapshot_name_exception", f"[{repo}:{snap}] Invalid snapshot name [{snap}], {why}")
    if any(c in snap for c in '\\/*?"<>| ,#'):
        bad('must not contain the following characters [ , ", *, \\, <, |, ,, >, /, ?] or whitespace or \'#\'')
    if snap.startswith("_"):
        bad("must not start with '_'")
    if snap.lower() != snap:
        bad("must be lowercase")


def h_snap_create(req, repo, snap):
    d = repo_dir(repo)
    if repo_readonly(repo):
        raise ESError(500, "repository_exception", f"[{repo}] cannot create snapshot in a readonly repository")
    check_snapshot_name(repo, snap)
    gen, data = read_repo_data(repo, d)
    if any(s["name"] == snap for s in data["snapshots"]):
        raise ESError(400, "invalid_snapshot_name_exception",
                      f"[{repo}:{snap}] Invalid snapshot name [{snap}], snapshot with the same name already exists")
    body = req.json()
    spec = body.get("indices")
    spec = ",".join(spec) if isinstance(spec, list) else spec
    states = wildcard_states(req, spec=body.get("expand_wildcards", "all"))    # closed ones too, as in 8.x
    names = resolve(spec or "_all", states, body.get("ignore_unavailable") in (True, "true"))
    start, suuid, lookup = now_ms(), b64id(), {}
    for name in names:
        ix = STATE["indices"][name]
        entry = data["indices"].setdefault(name, {"id": b64id(), "snapshots": []})
        entry["snapshots"].append(suuid)
        base = os.path.join(d, "indices", entry["id"])
        meta = {k: ix[k] for k in ("uuid", "state", "settings", "mappings", "aliases", "seq_no")}
        lookup[entry["id"]] = put_blob(base, "meta-", canon({"name": name, **meta}))[0]
        docs = sorted(({"_id": i, **doc} for i, doc in ix["docs"].items()), key=lambda doc: doc["_seq_no"])
        files = []
        for k in range(0, len(docs), CHUNK_DOCS):
            blob = canon({"docs": docs[k:k + CHUNK_DOCS]})
            blob_name, digest = put_blob(os.path.join(base, "0"), "__", blob)
            files.append({"name": blob_name, "physical_name": f"_{k // CHUNK_DOCS}.json",
                          "length": len(blob), "checksum": digest})
        shard = {"name": snap, "index_version": ix["seq_no"], "start_time": start, "time": now_ms() - start,
                 "number_of_files": len(files), "total_size": sum(f["length"] for f in files), "files": files}
        atomic_write(os.path.join(base, "0", f"snap-{suuid}.dat"), canon(shard))
    end = now_ms()
    total = sum(shards(STATE["indices"][n]) for n in names)
    global_state = body.get("include_global_state", True) in (True, "true")
    info = {"snapshot": snap, "uuid": suuid, "repository": repo, "version_id": int(INDEX_VERSION),
            "version": VERSION, "indices": names, "data_streams": [], "include_global_state": global_state,
            "state": "SUCCESS", "start_time": iso(start), "start_time_in_millis": start,
            "end_time": iso(end), "end_time_in_millis": end, "duration_in_millis": end - start,
            "failures": [], "shards": {"total": total, "failed": 0, "successful": total}, "feature_states": []}
    if "metadata" in body:
        info["metadata"] = body["metadata"]
    atomic_write(os.path.join(d, f"meta-{suuid}.dat"),
                 canon({"cluster_uuid": STATE["cluster_uuid"], "persistent_settings": {}, "templates": {}}))
    atomic_write(os.path.join(d, f"snap-{suuid}.dat"), canon(info))
    data["snapshots"].append({"name": snap, "uuid": suuid, "state": 1, "index_metadata_lookup": lookup,
                              "version": VERSION, "start_time_millis": start, "end_time_millis": end})
    write_repo_data(d, gen, data)         # the commit point
    return 200, ({"snapshot": info} if req.flag("wait_for_completion") else {"accepted": True})


def h_snap_get(req, repo, snap):
    out = []
    for r in pick(repo, list(STATE["repositories"]),
                  lambda n: ESError(404, "repository_missing_exception", f"[{n}] missing")):
        d = repo_dir(r)
        _, data = read_repo_data(r, d)
        missing = None if req.flag("ignore_unavailable") else \
            (lambda n: ESError(404, "snapshot_missing_exception", f"[{r}:{n}] is missing"))
        wanted = [] if snap == "_current" else pick(snap, [s["name"] for s in data["snapshots"]], missing)
        out += [snapshot_info(d, s, r) for s in data["snapshots"] if s["name"] in wanted]
    out.sort(key=lambda i: (i["start_time_in_millis"], i["snapshot"]))
    return 200, {"snapshots": out, "total": len(out), "remaining": 0}


def h_snap_delete(req, repo, snap):
    d = repo_dir(repo)
    if repo_readonly(repo):
        raise ESError(500, "repository_exception", f"[{repo}] cannot delete snapshot from a readonly repository")
    gen, data = read_repo_data(repo, d)
    wanted = pick(snap, [s["name"] for s in data["snapshots"]],
                  lambda n: ESError(404, "snapshot_missing_exception", f"[{repo}:{n}] is missing"))
    gone = {s["uuid"] for s in data["snapshots"] if s["name"] in wanted}
    data["snapshots"] = [s for s in data["snapshots"] if s["uuid"] not in gone]
    for name, entry in list(data["indices"].items()):
        entry["snapshots"] = [u for u in entry["snapshots"] if u not in gone]
        if not entry["snapshots"]:
            del data["indices"][name]
    write_repo_data(d, gen, data)         # the commit point; then clean up what nothing references
    for u in gone:
        for prefix in ("snap-", "meta-"):
            if os.path.exists(os.path.join(d, f"{prefix}{u}.dat")):
                os.remove(os.path.join(d, f"{prefix}{u}.dat"))
    keep = {}
    for s in data["snapshots"]:
        for iid, meta_name in s["index_metadata_lookup"].items():
            shard = read_json(os.path.join(d, "indices", iid, "0", f"snap-{s['uuid']}.dat"), "shard snapshot")
            keep.setdefault(iid, set()).update([meta_name, f"snap-{s['uuid']}.dat"] + [f["name"] for f in shard["files"]])
    root = os.path.join(d, "indices")
    for iid in os.listdir(root) if os.path.isdir(root) else []:
        if iid not in keep:
            shutil.rmtree(os.path.join(root, iid))
            continue
        for sub in (os.path.join(root, iid), os.path.join(root, iid, "0")):
            for f in os.listdir(sub):
                if os.path.isfile(os.path.join(sub, f)) and f not in keep[iid]:
                    os.remove(os.path.join(sub, f))
    return 200, {"acknowledged": True}


def java_replace(pattern, replacement, name):
    """String.replaceAll with Java's $N group references."""
    return re.sub(pattern, lambda m: re.sub(r"\$(\d)", lambda g: m.group(int(g.group(1))) or "", replacement), name)


def h_restore(req, repo, snap):
    d = repo_dir(repo)
    _, data = read_repo_data(repo, d)
    entry = next((s for s in data["snapshots"] if s["name"] == snap), None)
    if entry is None:
        raise ESError(404, "snapshot_missing_exception", f"[{repo}:{snap}] is missing")
    tag = f"[{repo}:{snap}/{entry['uuid']}]"
    info, body = snapshot_info(d, entry, repo), req.json()
    spec = body.get("indices")
    spec = ",".join(spec) if isinstance(spec, list) else spec
    ignore = body.get("ignore_unavailable") in (True, "true")
    names = pick(spec, info["indices"], None if ignore else index_not_found)
    pattern, replacement = body.get("rename_pattern"), body.get("rename_replacement")
    targets = {n: java_replace(pattern, replacement or "", n) if pattern else n for n in names}
    if len(set(targets.values())) != len(targets):
        raise ESError(500, "snapshot_restore_exception", f"{tag} indices were renamed into the same index name")
    for name, target in targets.items():
        check_name(target)
        existing = STATE["indices"].get(target)
        if existing and existing["state"] == "open":
            raise ESError(500, "snapshot_restore_exception", f"{tag} cannot restore index [{target}] because an "
                          "open index with same name already exists in the cluster. Either close or delete the "
                          "existing index or restore the index under a different name by providing a rename "
                          "pattern and replacement name")
        if not existing and target in alias_map():
            raise ESError(500, "snapshot_restore_exception",
                          f"{tag} cannot rename index [{name}] into [{target}] because of conflict with an alias "
                          "with the same name")
    loaded = {}
    for name in names:                    # read and verify everything before touching the cluster
        iid = data["indices"][name]["id"]
        base = os.path.join(d, "indices", iid)
        try:
            meta = json.loads(get_blob(os.path.join(base, entry["index_metadata_lookup"][iid])))
            shard = json.loads(get_blob(os.path.join(base, "0", f"snap-{entry['uuid']}.dat")))
            docs = [doc for f in shard["files"] for doc in
                    json.loads(get_blob(os.path.join(base, "0", f["name"]), f["checksum"], f["length"]))["docs"]]
        except (ValueError, KeyError) as e:
            raise ESError(500, "snapshot_restore_exception", f"{tag} failed to restore index [{name}]",
                          caused_by={"type": "corrupt_index_exception", "reason": str(e)})
        loaded[name] = (meta, docs)
    with_aliases = body.get("include_aliases", True) not in (False, "false")
    for name, (meta, _) in loaded.items():
        for alias in meta["aliases"] if with_aliases else ():
            if alias in STATE["indices"] or alias in targets.values():
                raise ESError(500, "snapshot_restore_exception", f"{tag} failed to restore index [{name}]",
                              caused_by={"type": "invalid_alias_name_exception", "reason": f"Invalid alias name "
                                         f"[{alias}]: an index or data stream exists with the same name as the alias"})
    ignored = body.get("ignore_index_settings") or []
    ignored = ignored.split(",") if isinstance(ignored, str) else ignored
    for name, (meta, docs) in loaded.items():
        target = targets[name]
        STATE["indices"].pop(target, None)            # a closed index of that name is replaced
        settings = {k: v for k, v in meta["settings"].items() if k not in ("index.uuid", "index.provided_name")}
        settings.update(index_settings(body.get("index_settings")))
        for key in ignored:
            settings.pop(key if key.startswith("index.") else "index." + key, None)
        ix = create_index(target, mappings=meta["mappings"], aliases=meta["aliases"] if with_aliases else {})
        ix["settings"].update(settings)
        ix["docs"] = {doc.pop("_id"): doc for doc in docs}
        ix["seq_no"] = meta["seq_no"]
    total = sum(shards(STATE["indices"][t]) for t in targets.values())
    if not req.flag("wait_for_completion"):
        return 200, {"accepted": True}
    return 200, {"snapshot": {"snapshot": snap, "indices": list(targets.values()),
                              "shards": {"total": total, "failed": 0, "successful": total}}}


# ------------------------------------------------------------ HTTP plumbing --

class Req:
    def __init__(self, method, raw, headers, body):
        parts = urlsplit(raw)
        self.method, self.uri, self.headers, self.body = method, raw, headers, body
        self.path = parts.path.rstrip("/") or "/"
        self.params = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}

    def flag(self, name, default=False):
        value = self.params.get(name)
        if value is None:
            return default
        if value in ("", "true"):
            return True
        if value == "false":
            return False
        if name == "refresh" and value == "wait_for":
            return True
        raise ESError(400, "illegal_argument_exception",
                      f"Failed to parse value [{value}] only [true] or [false] are allowed.")

    def json(self, required=False):
        if not self.body.strip():
            if required:
                raise ESError(400, "parse_exception", "request body is required")
            return {}
        try:
            value = json.loads(self.body)
        except ValueError as e:
            raise ESError(400, "x_content_parse_exception", f"[1:1] failed to parse request body: {e}")
        if not isinstance(value, dict):
            raise ESError(400, "parse_exception", "request body must be a JSON object")
        return value


IDX = r"/(?P<index>[^/_][^/]*|_all)"
ANY_IDX = r"(?:" + IDX + r")?"
ROUTES = [
    ({"GET", "HEAD"}, r"/", h_root),
    ({"GET"}, r"/_cluster/health(?:/(?P<index>[^/]+))?", h_health),
    ({"GET"}, r"/_cat/indices(?:/(?P<index>[^/]+))?", h_cat_indices),
    ({"GET", "HEAD"}, r"/_alias(?:/(?P<name>[^/]+))?", h_alias_get),
    ({"GET"}, r"/_aliases", h_alias_get),
    ({"POST"}, r"/_aliases", h_aliases_post),
    ({"GET", "HEAD"}, IDX + r"/_alias(?:/(?P<name>[^/]+))?", h_alias_get),
    ({"POST", "PUT"}, ANY_IDX + r"/_bulk", h_bulk),
    ({"POST"}, r"/_reindex", h_reindex),
    ({"GET", "POST"}, ANY_IDX + r"/_count", h_count),
    ({"GET", "POST"}, ANY_IDX + r"/_refresh", h_refresh),
    ({"GET"}, ANY_IDX + r"/_mapping", h_mapping),
    ({"GET"}, ANY_IDX + r"/_settings", h_settings),
    ({"GET"}, r"/_snapshot(?:/(?P<repo>[^/]+))?", h_repo_get),
    ({"PUT", "POST"}, r"/_snapshot/(?P<repo>[^/]+)", h_repo_put),
    ({"DELETE"}, r"/_snapshot/(?P<repo>[^/]+)", h_repo_delete),
    ({"POST"}, r"/_snapshot/(?P<repo>[^/]+)/(?P<snap>[^/]+)/_restore", h_restore),
    ({"PUT", "POST"}, r"/_snapshot/(?P<repo>[^/]+)/(?P<snap>[^/]+)", h_snap_create),
    ({"GET"}, r"/_snapshot/(?P<repo>[^/]+)/(?P<snap>[^/]+)", h_snap_get),
    ({"DELETE"}, r"/_snapshot/(?P<repo>[^/]+)/(?P<snap>[^/]+)", h_snap_delete),
    ({"PUT"}, r"/(?P<index>[^/]+)", h_index_put),    # any name, so a bad one gets its error
    ({"GET", "HEAD"}, IDX, h_index_get),
    ({"DELETE"}, IDX, h_index_delete),
    ({"POST"}, IDX + r"/_close", h_close),
    ({"POST"}, IDX + r"/_open", h_open),
    ({"POST"}, IDX + r"/_doc", h_doc_put),
    ({"PUT", "POST"}, IDX + r"/_doc/(?P<doc_id>[^/]+)", h_doc_put),
    ({"GET", "HEAD"}, IDX + r"/_doc/(?P<doc_id>[^/]+)", h_doc_get),
    ({"DELETE"}, IDX + r"/_doc/(?P<doc_id>[^/]+)", h_doc_delete),
    ({"PUT", "POST"}, IDX + r"/_create/(?P<doc_id>[^/]+)", h_doc_create),
]
ROUTES = [(methods, re.compile(pattern), fn) for methods, pattern, fn in ROUTES]


def dispatch(req):
    allowed = set()
    for methods, pattern, fn in ROUTES:
        m = pattern.fullmatch(req.path)
        if not m:
            continue
        if req.method not in methods:
            allowed |= methods if fn is not h_index_put else set()    # PUT /_x is no hint for GET /_x
            continue
        for p in req.params:
            if p not in KNOWN_PARAMS:
                raise ESError(400, "illegal_argument_exception", f"request [{req.path}] contains unrecognized "
                              f"parameter: [{p}] (or one the Elasticsearch stand-in does not implement)")
        return fn(req, **{k: unquote(v) for k, v in m.groupdict().items() if v is not None})
    if allowed:
        raise FlatError(405, f"Incorrect HTTP method for uri [{req.uri}] and method [{req.method}], "
                        f"allowed: [{', '.join(sorted(allowed))}]")
    raise FlatError(400, f"no handler found for uri [{req.uri}] and method [{req.method}] "
                    "(outside the surface of the Elasticsearch stand-in)", with_status=False)


def check_auth(req):
    if not CONF.get("credentials"):
        return
    header = req.headers.get("Authorization") or ""
    challenge = {"WWW-Authenticate": ['Basic realm="security" charset="UTF-8"', "ApiKey"]}
    if not header.startswith("Basic "):
        reason = f"missing authentication credentials for REST request [{req.uri}]"
    else:
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            user, password = "", None
        if f"{user}:{password}" == CONF["credentials"]:
            return
        reason = f"unable to authenticate user [{user}] for REST request [{req.uri}]"
    raise ESError(401, "security_exception", reason, headers=challenge, header=challenge)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "elasticsearch-standin"

    def log_message(self, *args):
        pass

    def read_body(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            body = b""
            while (size := int(self.rfile.readline().split(b";")[0], 16)):
                body += self.rfile.read(size)
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
            return body
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def handle_any(self):
        started, req, headers = time.time(), Req(self.command, self.path, self.headers, self.read_body()), {}
        try:
            ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if req.body and not ctype:
                raise FlatError(406, "Content-Type header is missing")
            if req.body and ctype not in JSON_TYPES:
                raise FlatError(406, f"Content-Type header [{self.headers.get('Content-Type')}] is not supported")
            check_auth(req)
            with LOCK:
                try:
                    status, payload = dispatch(req)
                finally:
                    if req.method not in ("GET", "HEAD"):
                        save_state()
        except ESError as e:
            status, payload, headers = e.status, e.body, e.headers
        except Exception as e:                          # a bug in the stand-in: say so, loudly
            traceback.print_exc()
            status, payload = 500, ESError(500, "exception", f"Elasticsearch stand-in internal error: {e!r}").body
        self.respond(req, status, payload, headers)
        sys.stderr.write("%s %s %s -> %d (%d ms)\n" % (time.strftime("%H:%M:%S"), req.method, req.uri, status,
                                                       (time.time() - started) * 1000))

    def respond(self, req, status, payload, headers):
        if isinstance(payload, str):
            data, ctype = payload.encode(), "text/plain; charset=UTF-8"
        else:
            pretty = req.params.get("pretty") in ("", "true")
            data = b"" if payload is None else (json.dumps(payload, indent=2, separators=(",", " : ")) + "\n"
                                                if pretty else json.dumps(payload, separators=(",", ":"))).encode()
            compat = "vnd.elasticsearch+json" in (self.headers.get("Accept") or "")
            ctype = "application/vnd.elasticsearch+json;compatible-with=8" if compat else "application/json"
        if req.method == "HEAD":
            data = b""
        self.send_response(status)
        self.send_header("X-elastic-product", "Elasticsearch")
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for name, values in headers.items():
            for value in values:
                self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = do_PATCH = do_OPTIONS = handle_any


def main():
    ap = argparse.ArgumentParser(description="Elasticsearch 8 stand-in for tests (not Elasticsearch).")
    ap.add_argument("--port-file", required=True, help="the port is written here once listening")
    ap.add_argument("--data-dir", required=True, help="cluster state lives in DIR/state.json")
    ap.add_argument("--path-repo", action="append", default=[], help="allowed fs repository roots (path.repo)")
    ap.add_argument("--credentials-file", help="first line user:password; requires HTTP Basic auth")
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on")
    args = ap.parse_args()
    os.makedirs(args.data_dir, exist_ok=True)
    CONF.update(state_file=os.path.join(args.data_dir, "state.json"), path_repo=args.path_repo)
    if args.credentials_file:
        with open(args.credentials_file) as f:
            CONF["credentials"] = f.readline().strip()
    STATE.update(cluster_uuid=b64id(), indices={}, repositories={})
    if os.path.exists(CONF["state_file"]):
        with open(CONF["state_file"], "rb") as f:
            STATE.update(json.loads(f.read()))
    server = ThreadingHTTPServer((args.host, 0), Handler)
    server.daemon_threads = True
    port = server.server_address[1]
    atomic_write(args.port_file, str(port).encode())
    sys.stderr.write(f"elasticsearch stand-in {VERSION} listening on {args.host}:{port}, data in {args.data_dir}\n")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
