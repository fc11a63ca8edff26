#!/usr/bin/env python3
"""Loopback stand-in for one Apache Cassandra 4.1 node, its cqlsh and its nodetool.

A TEST STAND-IN, NOT CASSANDRA: Cairn's Cassandra plugin is tested against it where no Cassandra
can be installed. It speaks the documented 4.1 tool surface the plugin uses, with the same command
lines, output text, exit codes and on-disk data directory layout.

  cassandra.py serve --data-dir DIR --cql-port-file F --jmx-port-file G [--credentials-file FILE]
                     [--no-auto-snapshot]
      One node: a "CQL" port (for cqlsh) and a "JMX" port (for nodetool) on 127.0.0.1 (or
      --host ADDRESS), port 0,
      each written to its file (tmp + rename) once listening. FILE's first line `user:password`
      turns authentication on for both.
  cassandra.py cqlsh [HOST [PORT]] [--cqlshrc F] [-u U] [-p P] [-k KS] [-e STATEMENTS | -f FILE]
                     [--no-color] ...  (no -e/-f: statements from stdin)
  cassandra.py nodetool [-h HOST] [-p PORT] [-u USER (-pw PW | -pwf FILE)] COMMAND
      status [KS] | info [-T] | version | flush [--] [KS [TABLE...]]
      snapshot [-t TAG] [-cf TABLE | -kt KS.T,..] [-sf] [--] [KS...] | listsnapshots
      clearsnapshot (-t TAG | --all) [--] [KS...] | refresh [--] KS TABLE | import KS TABLE DIR...

CQL (case-insensitive keywords, `;`-separated, -- // /* */ comments): CREATE KEYSPACE [IF NOT
EXISTS] ks WITH replication = {..} [AND durable_writes = b]; DROP KEYSPACE [IF EXISTS]; CREATE TABLE
[IF NOT EXISTS] ks.t (col type [PRIMARY KEY], .., PRIMARY KEY ((pk..), ck..)) [WITH CLUSTERING ORDER
BY (..) AND ID = uuid AND <4.1 table option> ..]; DROP TABLE [IF EXISTS]; TRUNCATE [TABLE]; USE;
INSERT INTO t (cols) VALUES (..) [USING TIMESTAMP n]; UPDATE t [USING TIMESTAMP n] SET c = v, ..
WHERE <primary key>; DELETE [cols] FROM t WHERE <primary key, its prefix or partition key>;
SELECT * | cols | COUNT(*) FROM t [WHERE col = v | col IN (..) AND ..] [LIMIT n] [ALLOW FILTERING];
DESC[RIBE] SCHEMA | KEYSPACE ks | TABLE ks.t | name; cqlsh's CONSISTENCY, PAGING, EXIT. Types: int,
bigint, smallint, tinyint, varint, text/varchar, ascii, uuid, timeuuid, timestamp, boolean, double,
float, blob; literals '..' ('' escapes), numbers, true/false, null, uuids, 0x.., uuid(), now(),
toTimestamp(now()), currentTimestamp(). System keyspaces are listed; system_schema.keyspaces and
.tables and system.local have rows, other system tables read as empty.

Kept from Cassandra: SSTables live in DIR/data/<ks>/<table>-<32 hex id>/ as nb-<gen>-big-
{Data,Index,Summary,Filter,CompressionInfo,Statistics}.db, -Digest.crc32 (decimal crc32 of
Data.db) and -TOC.txt; writes go to a memtable and DIR/commitlog/CommitLog-7-<id>.log (replayed
on start, so kill -9 loses nothing); reads merge SSTables and memtable cell by cell, highest write
timestamp wins, tombstones win ties; TRUNCATE and DROP snapshot first (auto_snapshot:
truncated-<ms>-<table>, dropped-<ms>-<table>), then delete the live SSTables; snapshots are hard
links plus manifest.json and schema.cql; refresh and import take the SSTables the node does not
know, check each Data.db against its Digest.crc32 (all or nothing) and renumber them to new
generations; rows come out in Murmur3 token order. The schema is DIR/schema.json (atomic writes).

Simplifications: one node (datacenter1, rack1, 16 tokens); Data.db holds JSON lines of rows (cells
with write timestamps, row and partition tombstones), not the binary format, and the other
components small JSON summaries; the clients and the server talk a private JSON-lines protocol,
not the CQL native protocol or JMX; no TTLs, collections, static columns, indexes, LWTs, ALTER or
compaction; syntax errors name the offending token but not in ANTLR's exact words.
"""
import collections
import configparser
import datetime
import getpass
import hashlib
import json
import math
import optparse
import os
import random
import re
import shutil
import signal
import socket
import socketserver
import stat
import struct
import sys
import threading
import time
import unicodedata
import uuid
import zlib
from decimal import ROUND_HALF_EVEN, Decimal

RELEASE, CLUSTER, DC, RACK = '4.1.5', 'Test Cluster', 'datacenter1', 'rack1'
LOCATOR = 'org.apache.cassandra.locator.'
SYSTEM_TABLES = {  # the keyspaces and tables of a 4.1 node
    'system': 'IndexInfo available_ranges available_ranges_v2 batches built_views compaction_history local paxos '
              'paxos_repair_history peer_events peer_events_v2 peers peers_v2 prepared_statements repairs '
              'size_estimates sstable_activity table_estimates top_partitions transferred_ranges '
              'transferred_ranges_v2 view_builds_in_progress',
    'system_auth': 'network_permissions resource_role_permissons_index role_members role_permissions roles',
    'system_distributed': 'partition_denylist parent_repair_history repair_history view_build_status',
    'system_schema': 'aggregates columns dropped_columns functions indexes keyspaces tables triggers types views',
    'system_traces': 'events sessions'}
SYSTEM_RF = {'system': None, 'system_schema': None, 'system_auth': '1', 'system_distributed': '3', 'system_traces': '2'}
TABLE_OPTIONS = [  # DESCRIBE's order and 4.1's defaults
    ('additional_write_policy', "'99p'"), ('bloom_filter_fp_chance', '0.01'),
    ('caching', "{'keys': 'ALL', 'rows_per_partition': 'NONE'}"), ('cdc', 'false'), ('comment', "''"),
    ('compaction', "{'class': 'org.apache.cassandra.db.compaction.SizeTieredCompactionStrategy', "
                   "'max_threshold': '32', 'min_threshold': '4'}"),
    ('compression', "{'chunk_length_in_kb': '16', 'class': 'org.apache.cassandra.io.compress.LZ4Compressor'}"),
    ('memtable', "'default'"), ('crc_check_chance', '1.0'), ('default_time_to_live', '0'), ('extensions', '{}'),
    ('gc_grace_seconds', '864000'), ('max_index_interval', '2048'), ('memtable_flush_period_in_ms', '0'),
    ('min_index_interval', '128'), ('read_repair', "'BLOCKING'"), ('speculative_retry', "'99p'")]
INT_BITS = {'int': 32, 'bigint': 64, 'smallint': 16, 'tinyint': 8}
TYPES = set(INT_BITS) | {'varint', 'text', 'ascii', 'uuid', 'timeuuid', 'timestamp', 'boolean', 'double', 'float', 'blob'}
RESERVED = set('add allow alter and apply asc authorize batch begin by columnfamily create delete desc describe drop '
               'entries execute from full grant if in index infinity insert into keyspace limit modify nan norecursive '
               'not null of on or order primary rename revoke schema select set table to token truncate unlogged '
               'update use using where with'.split())
COMPONENTS = ['Data.db', 'Index.db', 'Summary.db', 'Filter.db', 'CompressionInfo.db', 'Statistics.db',
              'Digest.crc32', 'TOC.txt']
SST_RE = re.compile(r'^([a-z]{2})-(\d+)-big-(.+)$')
BAD_USE = "nodetool: %s\nSee 'nodetool help' or 'nodetool help <command>'.\n"
Tok = collections.namedtuple('Tok', 'kind val pos')
Lit = collections.namedtuple('Lit', 'kind val text')  # kind: STRING INTEGER FLOAT UUID HEX BOOLEAN NULL FUNC


class CqlError(Exception):
    """An error as cqlsh shows it: the driver's class name and message."""
    CODES = {'InvalidRequest': '2200 [Invalid query]', 'Unauthorized': '2100 [Unauthorized]'}

    def __init__(self, cls, msg):
        super().__init__(msg)
        self.cls, self.msg = cls, msg

    def text(self):
        code = self.CODES.get(self.cls)
        return 'Error from server: code=%s message="%s"' % (code, self.msg) if code else self.msg


def invalid(msg, *a):
    return CqlError('InvalidRequest', msg % a if a else msg)


class ToolError(Exception):
    """A nodetool failure: rc 1 is "bad use" (stdout), rc 2 an error with a stack trace (stderr)."""

    def __init__(self, msg, rc=2, exc='java.io.IOException'):
        super().__init__(msg)
        self.msg, self.rc, self.exc, self.prefix = msg, rc, exc, ''


def atomic_write(path, data):
    tmp = '%s.tmp%d' % (path, os.getpid())
    with open(tmp, 'wb') as f:
        f.write(data if isinstance(data, bytes) else data.encode())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def size_str(n):
    """FileUtils.stringifyFileSize: DecimalFormat("#.##"), binary units."""
    unit, div = next(((u, d) for u, d in (('TiB', 1 << 40), ('GiB', 1 << 30), ('MiB', 1 << 20), ('KiB', 1 << 10))
                      if n >= d), ('bytes', 1))
    s = format(Decimal(n / div).quantize(Decimal('0.01'), rounding=ROUND_HALF_EVEN), 'f')
    return '%s %s' % (s.rstrip('0').rstrip('.') if '.' in s else s, unit)


def system_table_id(ks, table):
    """TableId.forSystemTable: Java's UUID.nameUUIDFromBytes(keyspace + table)."""
    h = bytearray(hashlib.md5((ks + table).encode()).digest())
    h[6], h[8] = (h[6] & 0x0F) | 0x30, (h[8] & 0x3F) | 0x80
    return str(uuid.UUID(bytes=bytes(h)))


# ------------------------------------------------------------------ Murmur3 tokens, row order

M64 = (1 << 64) - 1


def _rotl(x, r):
    return ((x << r) | (x >> (64 - r))) & M64


def _fmix(k):
    k = ((k ^ (k >> 33)) * 0xFF51AFD7ED558CCD) & M64
    k = ((k ^ (k >> 33)) * 0xC4CEB9FE1A85EC53) & M64
    return k ^ (k >> 33)


def murmur3_token(data):
    """Murmur3Partitioner: h1 of MurmurHash3 x64_128 (seed 0), with Cassandra's sign-extended tail."""
    c1, c2, h1, h2, n = 0x87C37B91114253D5, 0x4CF5AD432745937F, 0, 0, len(data)
    for i in range(0, n - n % 16, 16):
        k1, k2 = int.from_bytes(data[i:i + 8], 'little'), int.from_bytes(data[i + 8:i + 16], 'little')
        h1 ^= (_rotl((k1 * c1) & M64, 31) * c2) & M64
        h1 = ((_rotl(h1, 27) + h2) * 5 + 0x52DCE729) & M64
        h2 ^= (_rotl((k2 * c2) & M64, 33) * c1) & M64
        h2 = ((_rotl(h2, 31) + h1) * 5 + 0x38495AB5) & M64
    tail, k = data[n - n % 16:], [0, 0]
    for i, b in enumerate(tail):
        k[i // 8] ^= ((b - 256 if b > 127 else b) << (8 * (i % 8))) & M64
    if len(tail) > 8:
        h2 ^= (_rotl((k[1] * c2) & M64, 33) * c1) & M64
    if tail:
        h1 ^= (_rotl((k[0] * c1) & M64, 31) * c2) & M64
    h1, h2 = h1 ^ n, h2 ^ n
    h1 = (h1 + h2) & M64
    h2 = (h2 + h1) & M64
    t = (_fmix(h1) + _fmix(h2)) & M64
    t = t - (1 << 64) if t >> 63 else t
    return (1 << 63) - 1 if t == -(1 << 63) else t


def serialize(v, t):
    if t in INT_BITS or t in ('timestamp', 'varint'):
        n = INT_BITS[t] // 8 if t in INT_BITS else 8 if t == 'timestamp' else (v if v >= 0 else ~v).bit_length() // 8 + 1
        return v.to_bytes(n, 'big', signed=True)
    if t in ('uuid', 'timeuuid'):
        return uuid.UUID(v).bytes
    if t in ('double', 'float'):
        return struct.pack('>d' if t == 'double' else '>f', v)
    if t == 'boolean':
        return b'\x01' if v else b'\x00'
    return bytes.fromhex(v) if t == 'blob' else v.encode()


class Desc:
    __slots__ = ('v',)

    def __init__(self, v):
        self.v = v

    def __eq__(self, o):
        return self.v == o.v

    def __lt__(self, o):
        return o.v < self.v


def order_key(meta, key):
    """Token of the partition key, then the clustering columns in their CLUSTERING ORDER."""
    types, n = [meta['columns'][c] for c in meta['pk'] + meta['ck']], len(meta['pk'])
    parts = [serialize(v, t) for v, t in zip(key[:n], types)]
    pb = parts[0] if n == 1 else b''.join(len(b).to_bytes(2, 'big') + b + b'\x00' for b in parts)
    out = [murmur3_token(pb), pb]
    for i, c in enumerate(meta['ck'][:len(key) - n]):
        v, t = key[n + i], types[n + i]
        v = v.encode() if t in ('text', 'ascii') else bytes.fromhex(v) if t == 'blob' else \
            (uuid.UUID(v).time if t == 'timeuuid' else 0, uuid.UUID(v).bytes) if 'uuid' in t else v
        out.append(Desc(v) if meta['order'].get(c) == 'DESC' else v)
    return tuple(out)


# ------------------------------------------------------------------ CQL lexing and parsing

TOKEN_RE = re.compile(r"""(?P<ws>\s+)|(?P<cm>--[^\n]*|//[^\n]*|/\*.*?\*/)|(?P<str>'(?:[^']|'')*')
 |(?P<qid>"(?:[^"]|"")+")|(?P<uuid>[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b)
 |(?P<hex>0[xX][0-9a-fA-F]*)|(?P<float>-?(?:\d+\.\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+))
 |(?P<int>-?\d+)|(?P<id>[A-Za-z_][A-Za-z0-9_]*)|(?P<sym>[-(),;.=*{}:\[\]<>?+!])""", re.S | re.X)


def split_statements(text):
    """Splits at top-level ';': (complete statements, the unterminated rest)."""
    out, start, i, n = [], 0, 0, len(text)
    while i < n:
        c = text[i]
        if c in '\'"':
            j = i + 1
            while True:
                j = text.find(c, j)
                if j < 0:
                    return out, text[start:]
                if text[j + 1:j + 2] != c:
                    break
                j += 2
            i = j + 1
        elif text.startswith(('--', '//'), i):
            j = text.find('\n', i)
            i = n if j < 0 else j + 1
        elif text.startswith('/*', i):
            j = text.find('*/', i + 2)
            if j < 0:
                return out, text[start:]
            i = j + 2
        else:
            if c == ';':
                out.append(text[start:i])
                start = i + 1
            i += 1
    return out, text[start:]


def only_comments(text):
    return not TOKEN_RE.sub(lambda m: '' if m.lastgroup in ('ws', 'cm') else m.group(), text).strip()


class Parser:
    def __init__(self, text):
        self.text, self.toks, self.i, pos = text, [], 0, 0
        while pos < len(text):
            m = TOKEN_RE.match(text, pos)
            if not m:
                self.fail(Tok('sym', text[pos], pos))
            if m.lastgroup not in ('ws', 'cm'):
                self.toks.append(Tok(m.lastgroup, m.group(), pos))
            pos = m.end()

    def fail(self, tok=None):
        tok = tok or self.peek()
        pos = tok.pos if tok else len(self.text.rstrip())
        word = tok.val if tok else '<EOF>'
        raise CqlError('SyntaxException', "line %d:%d no viable alternative at input '%s' (%s[%s]...)" % (
            self.text.count('\n', 0, pos) + 1, pos - self.text.rfind('\n', 0, pos) - 1, word,
            self.text[max(0, pos - 30):pos].lstrip(), word))

    def peek(self, k=0):
        return self.toks[self.i + k] if self.i + k < len(self.toks) else None

    def kw(self, *words):
        if all((self.peek(k) or Tok('', '', 0)).kind == 'id' and self.peek(k).val.lower() == w
               for k, w in enumerate(words)):
            self.i += len(words)
            return True
        return False

    def sym(self, s):
        t = self.peek()
        if t and t.kind == 'sym' and t.val == s:
            self.i += 1
            return True
        return False

    def expect(self, *what):
        if not (self.sym(what[0]) if len(what) == 1 and not what[0].isalpha() else self.kw(*what)):
            self.fail()

    def many(self, fn, sep=','):
        out = [fn()]
        while self.kw(sep) if sep.isalpha() else self.sym(sep):
            out.append(fn())
        return out

    def paren(self, fn):
        self.expect('(')
        out = self.many(fn)
        self.expect(')')
        return out

    def name(self):
        t = self.peek()
        if not t or t.kind not in ('id', 'qid'):
            self.fail()
        self.i += 1
        return t.val.lower() if t.kind == 'id' else t.val[1:-1].replace('""', '"')

    def qname(self):
        a = self.name()
        return (a, self.name()) if self.sym('.') else (None, a)

    def literal(self):
        t = self.peek()
        if t is None:
            self.fail()
        self.i += 1
        low = t.val.lower()
        if t.kind == 'str':
            v = t.val[1:-1].replace("''", "'")
            return Lit('STRING', v, v)
        if t.kind in ('int', 'float', 'uuid', 'hex'):
            return Lit({'int': 'INTEGER', 'float': 'FLOAT'}.get(t.kind, t.kind.upper()), t.val, t.val)
        if t.kind == 'sym' and t.val == '-' and self.kw('infinity'):
            return Lit('FLOAT', '-Infinity', '-Infinity')
        if t.kind == 'id' and low in ('true', 'false', 'null', 'nan', 'infinity'):
            kind = {'true': 'BOOLEAN', 'false': 'BOOLEAN', 'null': 'NULL'}.get(low, 'FLOAT')
            return Lit(kind, low == 'true' if kind == 'BOOLEAN' else None if kind == 'NULL' else t.val, low)
        if t.kind == 'id' and self.sym('('):
            args = [] if self.sym(')') else [self.literal()]
            if args:
                self.expect(')')
            return Lit('FUNC', (low, args), low + '()')
        self.i -= 1
        self.fail()

    def option(self):
        """A keyspace or table option: `name = literal` or `name = {'k': v, ..}`."""
        key = self.name()
        self.expect('=')
        if not self.sym('{'):
            return key, self.literal()
        items = {}
        while not self.sym('}'):
            if items:
                self.expect(',')
            k = self.literal()
            self.expect(':')
            v = self.literal()
            items[str(k.val)] = v.val if v.kind == 'STRING' else v.text
        return key, items

    def statement(self):
        t, nxt = self.peek(), self.peek(1)
        word = t.val.lower() if t and t.kind == 'id' else ''
        if word in ('create', 'drop') and nxt and nxt.val.lower() in ('keyspace', 'table', 'columnfamily'):
            self.i += 2
            word += '_keyspace' if nxt.val.lower() == 'keyspace' else '_table'
        elif word in ('desc', 'describe', 'truncate', 'use', 'insert', 'update', 'delete', 'select'):
            self.i += 1
            word = 'describe' if word == 'desc' else word
        else:
            self.fail()
        st = getattr(self, 'p_' + word)()
        st.setdefault('kind', word)
        self.sym(';')
        if self.peek():
            self.fail()
        return st

    def p_create_keyspace(self):
        st = {'ine': self.kw('if', 'not', 'exists'), 'ks': self.name()}
        self.expect('with')
        st['opts'] = dict(self.many(self.option, 'and'))
        return st

    def p_drop_keyspace(self):
        return {'ie': self.kw('if', 'exists'), 'ks': self.name()}

    def p_create_table(self):
        st = {'ine': self.kw('if', 'not', 'exists'), 'cols': [], 'pk': [], 'opts': {}, 'order': {}}
        st['ks'], st['table'] = self.qname()
        self.expect('(')
        while True:
            if self.kw('primary', 'key'):
                self.expect('(')
                pk = self.paren(self.name) if self.peek() and self.peek().val == '(' else [self.name()]
                st['pk'].append((pk, self.many(self.name) if self.sym(',') else []))
                self.expect(')')
            else:
                col, typ = self.name(), self.name()
                if self.peek() and (self.peek().val == '<' or self.peek().val.lower() == 'static'):
                    self.fail()  # collections and static columns are not modelled
                st['cols'].append((col, 'text' if typ == 'varchar' else typ))
                if self.kw('primary', 'key'):
                    st['pk'].append(([col], []))
            if not self.sym(',') or (self.peek() and self.peek().val == ')'):
                break
        self.expect(')')
        if self.kw('with'):
            while True:
                if self.kw('clustering', 'order', 'by'):
                    st['order'].update(self.paren(self.order_item))
                else:
                    key, val = self.option()
                    st['opts'][key] = val
                if not self.kw('and'):
                    break
        return st

    def order_item(self):
        c = self.name()
        if self.kw('desc'):
            return c, 'DESC'
        self.kw('asc')
        return c, 'ASC'

    def p_drop_table(self):
        st = {'ie': self.kw('if', 'exists')}
        st['ks'], st['table'] = self.qname()
        return st

    def p_truncate(self):
        self.kw('table') or self.kw('columnfamily')
        ks, table = self.qname()
        return {'ks': ks, 'table': table}

    def p_use(self):
        return {'ks': self.name()}

    def using(self):
        if self.kw('using'):
            self.expect('timestamp')
            return int(self.literal().val)
        return None

    def where(self):
        def cond():
            col = self.name()
            if self.kw('in'):
                return col, self.paren(self.literal)
            self.expect('=')
            return col, [self.literal()]
        return self.many(cond, 'and') if self.kw('where') else []

    def p_insert(self):
        self.expect('into')
        st = {}
        st['ks'], st['table'] = self.qname()
        st['cols'] = self.paren(self.name)
        self.expect('values')
        st['vals'] = self.paren(self.literal)
        st['ts'] = self.using()
        return st

    def p_update(self):
        st = {}
        st['ks'], st['table'] = self.qname()
        st['ts'] = self.using()
        self.expect('set')
        st['sets'] = self.many(lambda: (self.name(), self.sym('=') and self.literal() or self.fail()))
        st['where'] = self.where()
        return st

    def p_delete(self):
        st = {'cols': [] if self.kw('from') else self.many(self.name)}
        if st['cols']:
            self.expect('from')
        st['ks'], st['table'] = self.qname()
        st['ts'] = self.using()
        st['where'] = self.where()
        return st

    def p_select(self):
        def selector():
            t, nxt = self.peek(), self.peek(1)
            if t and t.val.lower() == 'count' and nxt and nxt.val == '(':
                self.i += 2
                self.sym('*') or self.literal()
                self.expect(')')
                item = ('count(*)', 'count')
            else:
                item = (self.name(),) * 2
            return (item[0], self.name()) if self.kw('as') else item
        st = {'sel': '*' if self.sym('*') else self.many(selector)}
        self.expect('from')
        st['ks'], st['table'] = self.qname()
        st['where'] = self.where()
        st['limit'] = int(self.literal().val) if self.kw('limit') else None
        st['filtering'] = self.kw('allow', 'filtering')
        return st

    def p_describe(self):
        self.kw('full')
        if self.kw('schema'):
            return {'what': 'schema'}
        if self.kw('keyspace'):
            return {'what': 'keyspace', 'name': self.name() if self.peek() else None}
        what = 'table' if self.kw('table') or self.kw('columnfamily') else 'any'
        ks, name = self.qname()
        return {'what': what, 'ks': ks, 'name': name}


# ------------------------------------------------------------------ values

def parse_timestamp(s):
    m = re.fullmatch(r'(\d{4})-(\d\d)-(\d\d)(?:[ T](\d\d):(\d\d)(?::(\d\d)(?:\.(\d{1,3}))?)?)?\s*(Z|[+-]\d\d:?\d\d)?',
                     s.strip())
    if not m:
        raise invalid("Unable to coerce '%s' to a formatted date (long)", s)
    y, mo, d, h, mi, sec, frac, tz = m.groups()
    dt = datetime.datetime(int(y), int(mo), int(d), int(h or 0), int(mi or 0), int(sec or 0),
                           tzinfo=datetime.timezone.utc)
    ms = int(dt.timestamp()) * 1000 + int((frac or '0').ljust(3, '0'))
    if tz and tz != 'Z':
        ms -= (1 if tz[0] == '+' else -1) * (int(tz[1:3]) * 60 + int(tz[-2:])) * 60000
    return ms


def convert(lit, typ, col):
    """A literal as a value of column `col` (type `typ`), JSON-able: int, str, float, bool or None."""
    k, v = lit.kind, lit.val
    if k == 'NULL':
        return None
    if k == 'FUNC':
        name, args = v
        if name in ('now', 'uuid') and typ in ('uuid', 'timeuuid') and (name == 'now' or typ == 'uuid'):
            return str(uuid.uuid1() if name == 'now' else uuid.uuid4())
        if typ in ('timestamp', 'bigint') and (name == 'currenttimestamp' or (
                name in ('totimestamp', 'tounixtimestamp') and args and args[0].kind == 'FUNC')):
            return int(time.time() * 1000)
        raise invalid('Type error: cannot assign result of function %s to %s (type %s)', name, col, typ)
    ok = {'STRING': ('text', 'ascii', 'timestamp'), 'INTEGER': tuple(INT_BITS) + ('varint', 'double', 'float', 'timestamp'),
          'FLOAT': ('double', 'float'), 'UUID': ('uuid', 'timeuuid'), 'BOOLEAN': ('boolean',), 'HEX': ('blob',)}
    if typ not in ok.get(k, ()) or (k == 'HEX' and len(v) % 2):
        raise invalid('Invalid %s constant (%s) for "%s" of type %s', k, lit.text, col, typ)
    if typ in INT_BITS or typ == 'varint' or (typ == 'timestamp' and k == 'INTEGER'):
        n, bits = int(v), INT_BITS.get(typ)
        if bits and not -(1 << (bits - 1)) <= n < 1 << (bits - 1):
            raise invalid("Unable to make %s from '%s'", typ, v)
        return n
    if typ in ('double', 'float'):
        return float(v)
    if typ == 'timestamp':
        return parse_timestamp(v)
    return v.lower() if k == 'UUID' else v[2:].lower() if k == 'HEX' else v


def fmt_value(v, t, quote=False):
    """A value as cqlsh 6.1 (Cassandra 4.1) displays it."""
    t = t[7:-1] if t.startswith('frozen<') else t
    if v is None:
        return 'null'
    if t.startswith('map<'):
        kt, vt = (s.strip() for s in t[4:-1].split(',', 1))
        return '{%s}' % ', '.join('%s: %s' % (fmt_value(a, kt, True), fmt_value(b, vt, True)) for a, b in v)
    if t.startswith('set<'):
        return '{%s}' % ', '.join(fmt_value(x, t[4:-1], True) for x in v)
    if t in ('text', 'ascii'):
        s = v.replace('\\', '\\\\')
        s = "'%s'" % s.replace("'", "''") if quote else s
        return re.sub(r'[\x00-\x1f\x7f-\xa0]', lambda m: repr(m.group())[1:-1], s)
    if t == 'boolean':
        return str(v)
    if t in ('double', 'float'):
        if math.isnan(v) or math.isinf(v):
            return 'NaN' if math.isnan(v) else 'Infinity' if v > 0 else '-Infinity'
        exp = int(math.log10(abs(v))) if abs(v) > sys.float_info.epsilon else -sys.maxsize - 1
        return '%.*g' % (5 + exp + 1 if -4 <= exp < 5 else 5, v)
    if t == 'timestamp':
        try:
            epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
            return (epoch + datetime.timedelta(milliseconds=v)).strftime('%Y-%m-%d %H:%M:%S.%f%z')
        except OverflowError:
            return str(v)
    return '0x' + v if t == 'blob' else str(v)


def dwidth(s):
    return sum(2 if unicodedata.east_asian_width(ch) in 'WF' else 1 for ch in s)


def cql_name(n):
    return n if re.fullmatch(r'[a-z][a-z0-9_]*', n) and n not in RESERVED else '"%s"' % n.replace('"', '""')


def render_option(key, val):
    """A table option as DESCRIBE prints it."""
    if isinstance(val, Lit):
        return "'%s'" % val.val.replace("'", "''") if val.kind == 'STRING' else val.text
    val, pkg = dict(val), {'compaction': 'org.apache.cassandra.db.compaction.', 'compression': 'org.apache.cassandra.io.compress.'}
    if key == 'compaction':
        val = dict({'max_threshold': '32', 'min_threshold': '4'}, **val)
    if key in pkg and '.' not in val.get('class', '.'):
        val['class'] = pkg[key] + val['class']
    keys = sorted(val, key=lambda k: (k != 'class' or key != 'compaction', k))
    return '{%s}' % ', '.join("'%s': '%s'" % (k, str(val[k]).replace("'", "''")) for k in keys)


def keyspace_cql(ks, k):
    rep = k['replication']
    items = ["'class': '%s'" % rep['class'].replace(LOCATOR, '')] + [
        "'%s': '%s'" % kv for kv in sorted(rep.items()) if kv[0] != 'class']
    return 'CREATE KEYSPACE %s WITH replication = {%s}  AND durable_writes = %s;' % (
        cql_name(ks), ', '.join(items), str(k['durable_writes']).lower())


def table_cql(ks, name, meta, internals=False):
    """CREATE TABLE as 4.1's DESCRIBE prints it; `internals`: as in a snapshot's schema.cql."""
    pk, ck, cols = meta['pk'], meta['ck'], meta['columns']
    simple = len(pk) == 1 and not ck
    body = ['    %s %s%s' % (cql_name(c), cols[c], ' PRIMARY KEY' if simple and c == pk[0] else '')
            for c in pk + ck + sorted((c for c in cols if c not in pk + ck), key=str.encode)]
    if not simple:
        p = cql_name(pk[0]) if len(pk) == 1 else '(%s)' % ', '.join(map(cql_name, pk))
        body.append('    PRIMARY KEY (%s)' % ', '.join([p] + [cql_name(c) for c in ck]))
    withs = ['ID = %s' % meta['id']] if internals else []
    if ck:
        withs.append('CLUSTERING ORDER BY (%s)' % ', '.join('%s %s' % (cql_name(c), meta['order'][c]) for c in ck))
    withs += ['%s = %s' % kv for kv in dict(TABLE_OPTIONS, **meta['options']).items()]
    return 'CREATE TABLE %s%s.%s (\n%s\n) WITH %s;' % ('IF NOT EXISTS ' if internals else '', cql_name(ks),
                                                     cql_name(name), ',\n'.join(body), '\n    AND '.join(withs))


# ------------------------------------------------------------------ SSTables

class Table:
    def __init__(self, ks, name, meta, tid, tdir):
        self.ks, self.name, self.meta, self.id, self.dir = ks, name, meta, tid, tdir
        self.mem, self.mpdel, self.mem_seq, self.max_gen = {}, {}, 0, 0
        self.sst = {}  # generation -> {'comps': {component: file name}, 'rows': .., 'pdel': ..}
        self.floor = (meta or {}).get('truncated_seq', 0)  # commit log entries up to here are on disk

    def files(self):
        return [os.path.join(self.dir, f) for s in self.sst.values() for f in s['comps'].values()]


def merge_row(dst, m, d, cells):
    """Merges a row [marker ts, deletion ts, {col: [value, ts]}] into `dst`: the newest wins."""
    dst[0] = m if dst[0] is None or (m is not None and m > dst[0]) else dst[0]
    dst[1] = d if dst[1] is None or (d is not None and d > dst[1]) else dst[1]
    for c, (v, ts) in cells.items():
        cur = dst[2].get(c)
        if cur is None or ts > cur[1] or (ts == cur[1] and v is None):
            dst[2][c] = [v, ts]


def read_data(path):
    rows, pdel = {}, {}
    with open(path, 'rb') as f:
        for line in filter(bytes.strip, f):
            r = json.loads(line)
            if 'p' in r:
                pdel[tuple(r['p'])] = r['d']
            else:
                rows[tuple(r['k'])] = [r.get('m'), r.get('d'), {c: list(x) for c, x in r.get('c', {}).items()}]
    return rows, pdel


def scan_sstables(d):
    gens = {}
    for f in os.listdir(d) if os.path.isdir(d) else []:
        m = SST_RE.match(f)
        if m and os.path.isfile(os.path.join(d, f)):
            gens.setdefault(int(m.group(2)), {})[m.group(3)] = f
    return gens


def check_sstable(d, comps):
    """Why the SSTable `comps` in `d` cannot be loaded, or None."""
    data = os.path.join(d, comps.get('Data.db', next(iter(comps.values()))))
    for c in ('Data.db', 'TOC.txt', 'Digest.crc32'):
        if c not in comps:
            return 'Missing component %s of SSTable %s' % (c, data)
    with open(os.path.join(d, comps['TOC.txt'])) as f:
        missing = [c for c in f.read().split() if c not in comps]
    if missing:
        return 'Missing component(s) %s of SSTable %s (listed in TOC.txt)' % (', '.join(missing), data)
    with open(data, 'rb') as f, open(os.path.join(d, comps['Digest.crc32'])) as g:
        actual, expected = zlib.crc32(f.read()), g.read().strip()
    if expected != str(actual):
        return 'Corrupted: %s (digest mismatch: Digest.crc32 says %s, Data.db has %d)' % (data, expected, actual)
    try:
        read_data(data)
    except (ValueError, KeyError, TypeError):
        return 'Corrupted: %s (unreadable row)' % data
    return None


# ------------------------------------------------------------------ the node

class Node:
    def __init__(self, root, auto_snapshot):
        self.root, self.auto_snapshot, self.started = root, auto_snapshot, time.time()
        self.data, self.cl_dir = os.path.join(root, 'data'), os.path.join(root, 'commitlog')
        for d in (self.data, self.cl_dir, os.path.join(root, 'hints'), os.path.join(root, 'saved_caches')):
            os.makedirs(d, exist_ok=True)
        self.lock = threading.RLock()
        local = os.path.join(root, 'node.json')
        if not os.path.exists(local):
            tokens = sorted(random.randint(-(1 << 63) + 1, (1 << 63) - 1) for _ in range(16))
            atomic_write(local, json.dumps({'host_id': str(uuid.uuid4()), 'tokens': [str(t) for t in tokens]}))
        with open(local) as f:
            self.local = json.load(f)
        self.schema_path = os.path.join(root, 'schema.json')
        self.schema = {'keyspaces': {}}
        if os.path.exists(self.schema_path):
            with open(self.schema_path) as f:
                self.schema = json.load(f)
        self.seq, self.last_ts, self.tables = 0, 0, {}
        for ks, names in SYSTEM_TABLES.items():
            for t in names.split():
                self.open_table(ks, t, None, system_table_id(ks, t))
        for ks, k in self.schema['keyspaces'].items():
            for t, meta in k['tables'].items():
                self.open_table(ks, t, meta, meta['id'])
        self.replay()

    # -- storage
    def open_table(self, ks, name, meta, tid):
        tab = Table(ks, name, meta, tid, os.path.join(self.data, ks, '%s-%s' % (name, tid.replace('-', ''))))
        os.makedirs(tab.dir, exist_ok=True)
        for gen, comps in scan_sstables(tab.dir).items():
            tab.max_gen = max(tab.max_gen, gen)
            if 'TOC.txt' in comps and 'Data.db' in comps:
                self.attach(tab, gen, comps)
        self.tables[tid] = tab

    def attach(self, tab, gen, comps):
        rows, pdel = read_data(os.path.join(tab.dir, comps['Data.db']))
        tab.sst[gen] = {'comps': comps, 'rows': rows, 'pdel': pdel}
        try:
            with open(os.path.join(tab.dir, comps['Statistics.db'])) as f:
                stats = json.load(f)
        except (OSError, ValueError, KeyError):
            return
        if stats.get('host_id') == self.local['host_id']:  # as Cassandra, trust only our own replay positions
            tab.floor = max(tab.floor, stats.get('max_seq', 0))
            self.seq = max(self.seq, tab.floor)

    def replay(self):
        self.seq = max([self.seq] + [t.floor for t in self.tables.values()])
        segs = [f for f in os.listdir(self.cl_dir) if re.fullmatch(r'CommitLog-7-\d+\.log', f)]
        for seg in sorted(segs, key=lambda s: int(s[12:-4])):
            with open(os.path.join(self.cl_dir, seg), 'rb') as f:
                for line in f:
                    try:
                        rec = json.loads(line)
                    except ValueError:
                        continue  # a torn last write
                    self.seq = max(self.seq, rec['s'])
                    tab = self.tables.get(rec['t'])
                    if tab and tab.meta and rec['s'] > tab.floor:
                        self.apply(tab, rec)
        self.cl_fd = None
        self.cl_open()
        self.cl_recycle()

    def cl_open(self):
        ms = int(time.time() * 1000)
        while os.path.exists(os.path.join(self.cl_dir, 'CommitLog-7-%d.log' % ms)):
            ms += 1
        self.cl_fd = os.open(os.path.join(self.cl_dir, 'CommitLog-7-%d.log' % ms),
                             os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def cl_recycle(self):
        """Once every memtable is flushed, the commit log segments are dropped."""
        if not any(t.mem or t.mpdel for t in self.tables.values()):
            os.close(self.cl_fd)
            for f in os.listdir(self.cl_dir):
                os.unlink(os.path.join(self.cl_dir, f))
            self.cl_open()

    def apply(self, tab, rec):
        tab.mem_seq = max(tab.mem_seq, rec['s'])
        if 'p' in rec:
            pk = tuple(rec['p'])
            tab.mpdel[pk] = max(tab.mpdel.get(pk, rec['d']), rec['d'])
        else:
            merge_row(tab.mem.setdefault(tuple(rec['k']), [None, None, {}]), rec.get('m'), rec.get('d'), rec.get('c', {}))

    def write(self, tab, rec):
        self.seq += 1
        rec = dict(rec, s=self.seq, t=tab.id)
        os.write(self.cl_fd, (json.dumps(rec, separators=(',', ':')) + '\n').encode())
        self.apply(tab, rec)

    def timestamp(self, given=None):
        if given is None:
            given = self.last_ts = max(time.time_ns() // 1000, self.last_ts + 1)
        return given

    def save_schema(self):
        atomic_write(self.schema_path, json.dumps(self.schema, indent=1, sort_keys=True))

    def flush(self, tab):
        if not (tab.mem or tab.mpdel):
            return
        tab.max_gen += 1
        gen, rows, pdel, js = tab.max_gen, tab.mem, tab.mpdel, lambda o: json.dumps(o, separators=(',', ':'))
        lines = [js({'p': list(k), 'd': d}) for k, d in sorted(pdel.items(), key=lambda i: order_key(tab.meta, i[0]))]
        for k, (m, d, cells) in sorted(rows.items(), key=lambda i: order_key(tab.meta, i[0])):
            lines.append(js(dict({'k': list(k), 'c': cells}, **{a: b for a, b in (('m', m), ('d', d)) if b is not None})))
        data = ''.join(line + '\n' for line in lines).encode()
        stamps = [ts for _, d, cells in rows.values() for ts in [d] + [c[1] for c in cells.values()] if ts]
        keys = [list(k) for k in rows]
        content = {
            'Data.db': data, 'Index.db': ''.join(js(k) + '\n' for k in keys),
            'Summary.db': js({'partitions': len(keys), 'first': keys[:1], 'last': keys[-1:]}),
            'Filter.db': js({'stand-in bloom filter of keys': len(keys), 'fp_chance': 0.01}),
            'CompressionInfo.db': js({'class': 'LZ4Compressor', 'chunk_length_in_kb': 16, 'data_length': len(data)}),
            'Statistics.db': js({'table_id': tab.id, 'host_id': self.local['host_id'], 'max_seq': tab.mem_seq,
                                 'min_timestamp': min(stamps + list(pdel.values()), default=0),
                                 'max_timestamp': max(stamps + list(pdel.values()), default=0), 'rows': len(rows)}),
            'Digest.crc32': str(zlib.crc32(data)), 'TOC.txt': ''.join(c + '\n' for c in COMPONENTS)}
        names = {c: 'nb-%d-big-%s' % (gen, c) for c in COMPONENTS}
        for c in COMPONENTS:  # TOC.txt last: an SSTable without it is incomplete
            atomic_write(os.path.join(tab.dir, names[c]), content[c])
        tab.sst[gen] = {'comps': names, 'rows': rows, 'pdel': pdel}
        tab.floor, tab.mem, tab.mpdel = max(tab.floor, tab.mem_seq), {}, {}
        self.cl_recycle()

    def live_rows(self, tab):
        rows, pdel = {}, {}
        for s in [tab.sst[g] for g in sorted(tab.sst)] + [{'rows': tab.mem, 'pdel': tab.mpdel}]:
            for k, (m, d, cells) in s['rows'].items():
                merge_row(rows.setdefault(k, [None, None, {}]), m, d, cells)
            for pk, ts in s['pdel'].items():
                pdel[pk] = max(pdel.get(pk, ts), ts)
        n, out = len(tab.meta['pk']), []
        for k, (m, d, cells) in rows.items():
            dead = max(-1 if d is None else d, pdel.get(k[:n], -1))
            vals = {c: v for c, (v, ts) in cells.items() if ts > dead and v is not None}
            if (m is not None and m > dead) or vals:
                out.append((k, vals))
        return sorted(out, key=lambda r: order_key(tab.meta, r[0]))

    def delete_live(self, tab):
        for f in tab.files():
            os.unlink(f)
        tab.sst, tab.mem, tab.mpdel = {}, {}, {}

    def snapshot_table(self, tab, tag, flush=True):
        if flush:
            self.flush(tab)
        sdir = os.path.join(tab.dir, 'snapshots', tag)
        os.makedirs(sdir, exist_ok=True)
        for f in tab.files():
            os.link(f, os.path.join(sdir, os.path.basename(f)))
        now = time.time()
        datafiles = [s['comps']['Data.db'] for _, s in sorted(tab.sst.items())]
        atomic_write(os.path.join(sdir, 'manifest.json'), '{"files":%s,"created_at":%d.%03d000000,"expires_at":null}' % (
            json.dumps(datafiles, separators=(',', ':')), now, now % 1 * 1000))
        if tab.meta:
            atomic_write(os.path.join(sdir, 'schema.cql'), table_cql(tab.ks, tab.name, tab.meta, internals=True) + '\n')

    def find(self, ks, name):
        return next((t for t in self.tables.values() if t.ks == ks and t.name == name), None)

    def keyspace_tables(self, ks):
        return sorted((t for t in self.tables.values() if t.ks == ks), key=lambda t: t.name)

    def all_keyspaces(self):
        return list(SYSTEM_TABLES) + sorted(self.schema['keyspaces'])

    def drop(self, tab):
        if self.auto_snapshot:
            self.snapshot_table(tab, 'dropped-%d-%s' % (time.time() * 1000, tab.name))
        self.delete_live(tab)
        del self.tables[tab.id]
        for d in (tab.dir, os.path.dirname(tab.dir)):
            if os.path.isdir(d) and not os.listdir(d):
                os.rmdir(d)

    # -- CQL
    def execute(self, text, ks):
        st = Parser(text).statement()
        with self.lock:
            return getattr(self, 'x_' + st['kind'])(st, ks) or {'type': 'void'}

    def keyspace(self, name):
        if name in SYSTEM_TABLES:
            raise CqlError('Unauthorized', '%s keyspace is not user-modifiable.' % name)
        return self.schema['keyspaces'].get(name)

    def table(self, st, ks, write=False):
        ks = st['ks'] or ks
        if ks is None:
            raise invalid('No keyspace has been specified. USE a keyspace, or explicitly specify keyspace.tablename')
        if ks not in self.schema['keyspaces'] and ks not in SYSTEM_TABLES:
            raise invalid('keyspace %s does not exist', ks)
        if write and ks in SYSTEM_TABLES:
            raise CqlError('Unauthorized', '%s keyspace is not user-modifiable.' % ks)
        tab = self.find(ks, st['table'])
        if tab is None:
            raise invalid('table %s does not exist', st['table'])
        return tab

    def x_use(self, st, _):
        if st['ks'] not in self.all_keyspaces():
            raise invalid("Keyspace '%s' does not exist", st['ks'])
        return {'type': 'set_keyspace', 'keyspace': st['ks']}

    def x_create_keyspace(self, st, _):
        if self.keyspace(st['ks']) is not None:
            if st['ine']:
                return
            raise CqlError('AlreadyExists', "Keyspace '%s' already exists" % st['ks'])
        for k in st['opts']:
            if k not in ('replication', 'durable_writes'):
                raise CqlError('SyntaxException', "Unknown property '%s'" % k)
        rep = st['opts'].get('replication')
        if not isinstance(rep, dict) or 'class' not in rep:
            raise CqlError('ConfigurationException', 'Missing replication strategy class')
        cls = rep['class'] if '.' in rep['class'] else LOCATOR + rep['class']
        if cls not in (LOCATOR + 'SimpleStrategy', LOCATOR + 'NetworkTopologyStrategy'):
            raise CqlError('ConfigurationException', "Unable to find replication strategy class '%s'" % cls)
        opts = {k: v for k, v in rep.items() if k != 'class'}
        if cls.endswith('.SimpleStrategy') and 'replication_factor' not in opts:
            raise CqlError('ConfigurationException', 'SimpleStrategy requires a replication_factor strategy option.')
        if cls.endswith('.NetworkTopologyStrategy') and 'replication_factor' in opts:
            opts[DC] = opts.pop('replication_factor')
        dw = st['opts'].get('durable_writes')
        self.schema['keyspaces'][st['ks']] = {'replication': dict(opts, **{'class': cls}), 'tables': {},
                                              'durable_writes': dw is None or str(dw.val).lower() == 'true'}
        self.save_schema()

    def x_drop_keyspace(self, st, _):
        if self.keyspace(st['ks']) is None:
            if st['ie']:
                return
            raise invalid("Keyspace '%s' doesn't exist", st['ks'])
        for tab in self.keyspace_tables(st['ks']):
            self.drop(tab)
        del self.schema['keyspaces'][st['ks']]
        self.save_schema()

    def x_create_table(self, st, ks):
        ks, name = st['ks'] or ks, st['table']
        if ks is None:
            raise invalid('No keyspace has been specified. USE a keyspace, or explicitly specify keyspace.tablename')
        k = self.keyspace(ks)
        if k is None:
            raise invalid("Keyspace '%s' doesn't exist", ks)
        if name in k['tables']:
            if st['ine']:
                return
            raise CqlError('AlreadyExists', "Table '%s.%s' already exists" % (ks, name))
        cols = {}
        for c, t in st['cols']:
            if c in cols:
                raise invalid('Duplicate column %s declaration for table %s.%s', c, ks, name)
            if t not in TYPES:
                raise CqlError('SyntaxException', "line 1:0 no viable alternative at input '%s' (stand-in: "
                                                  "unsupported type)" % t)
            cols[c] = t
        if len(st['pk']) != 1:
            raise invalid("No PRIMARY KEY specifed for table '%s' (exactly one required)", name) if not st['pk'] \
                else invalid('Multiple PRIMARY KEYs specified (exactly one required)')
        pk, ck = st['pk'][0]
        for c in pk + ck:
            if c not in cols:
                raise invalid('Unknown definition %s referenced in PRIMARY KEY', c)
        for c in st['order']:
            if c not in ck:
                raise invalid('Only clustering key columns can be defined in CLUSTERING ORDER directive: %s', c)
        tid, opts = str(uuid.uuid4()), {}
        for key, v in st['opts'].items():
            if key == 'id' and isinstance(v, Lit) and v.kind == 'UUID':
                tid = v.val.lower()
                if tid in self.tables:
                    raise invalid('Table id %s is already used by %s.%s', tid, self.tables[tid].ks, self.tables[tid].name)
            elif key not in dict(TABLE_OPTIONS):
                raise CqlError('SyntaxException', "Unknown property '%s'" % key)
            else:
                opts[key] = render_option(key, v)
        k['tables'][name] = meta = {'id': tid, 'columns': cols, 'pk': pk, 'ck': ck, 'options': opts, 'truncated_seq': 0,
                                    'order': {c: st['order'].get(c, 'ASC') for c in ck}}
        self.save_schema()
        self.open_table(ks, name, meta, tid)

    def x_drop_table(self, st, ks):
        ks = st['ks'] or ks
        k = self.keyspace(ks) if ks else None
        if k is None:
            raise invalid("Keyspace '%s' doesn't exist", ks)
        if st['table'] not in k['tables']:
            if st['ie']:
                return
            raise invalid("Table '%s.%s' doesn't exist", ks, st['table'])
        self.drop(self.find(ks, st['table']))
        del k['tables'][st['table']]
        self.save_schema()

    def x_truncate(self, st, ks):
        tab = self.table(st, ks, write=True)
        if self.auto_snapshot:
            self.snapshot_table(tab, 'truncated-%d-%s' % (time.time() * 1000, tab.name))
        tab.meta['truncated_seq'] = tab.floor = self.seq  # the commit log up to here is not replayed
        self.save_schema()
        self.delete_live(tab)
        self.cl_recycle()

    def keys(self, tab, conds, full):
        """WHERE col = v / col IN (..) on key columns -> the key tuples (maybe a clustering prefix)."""
        meta, given = tab.meta, {}
        for col, lits in conds:
            if col not in meta['columns']:
                raise invalid('Undefined column name %s in table %s.%s', col, tab.ks, tab.name)
            if col not in meta['pk'] + meta['ck']:
                raise invalid('Non PRIMARY KEY columns found in where clause: %s', col)
            given[col] = [convert(lit, meta['columns'][col], col) for lit in lits]
            if None in given[col]:
                raise invalid('Invalid null value in condition for column %s', col)
        missing = [c for c in meta['pk'] if c not in given]
        if missing:
            raise invalid('Some partition key parts are missing: %s', ', '.join(missing))
        parts = [given[c] for c in meta['pk']]
        for i, c in enumerate(meta['ck']):
            if c not in given:
                if full or any(x in given for x in meta['ck'][i:]):
                    raise invalid('Some clustering keys are missing: %s', ', '.join(x for x in meta['ck'][i:] if x not in given))
                break
            parts.append(given[c])
        keys = [()]
        for p in parts:
            keys = [k + (v,) for k in keys for v in p]
        return keys

    def check_columns(self, tab, cols):
        for c in cols:
            if c not in tab.meta['columns']:
                raise invalid('Undefined column name %s in table %s.%s', c, tab.ks, tab.name)

    def x_insert(self, st, ks):
        tab = self.table(st, ks, write=True)
        meta, key_cols = tab.meta, tab.meta['pk'] + tab.meta['ck']
        if len(st['cols']) != len(st['vals']):
            raise invalid('Unmatched column names/values')
        self.check_columns(tab, st['cols'])
        if len(set(st['cols'])) != len(st['cols']):
            raise invalid('Multiple definitions found for column %s', next(c for c in st['cols'] if st['cols'].count(c) > 1))
        vals = {c: convert(lit, meta['columns'][c], c) for c, lit in zip(st['cols'], st['vals'])}
        for what, cols in (('partition key parts', meta['pk']), ('clustering keys', meta['ck'])):
            if any(c not in vals for c in cols):
                raise invalid('Some %s are missing: %s', what, ', '.join(c for c in cols if c not in vals))
        for c in key_cols:
            if vals[c] is None:
                raise invalid('Invalid null value in condition for column %s', c)
        ts = self.timestamp(st['ts'])
        self.write(tab, {'k': [vals[c] for c in key_cols], 'm': ts,
                         'c': {c: [v, ts] for c, v in vals.items() if c not in key_cols}})

    def x_update(self, st, ks):
        tab = self.table(st, ks, write=True)
        self.check_columns(tab, [c for c, _ in st['sets']])
        for c, _ in st['sets']:
            if c in tab.meta['pk'] + tab.meta['ck']:
                raise invalid('PRIMARY KEY part %s found in SET part', c)
        ts = self.timestamp(st['ts'])
        cells = {c: [convert(lit, tab.meta['columns'][c], c), ts] for c, lit in st['sets']}
        for key in self.keys(tab, st['where'], True):
            self.write(tab, {'k': list(key), 'c': cells})

    def x_delete(self, st, ks):
        tab = self.table(st, ks, write=True)
        self.check_columns(tab, st['cols'])
        nk = len(tab.meta['pk'] + tab.meta['ck'])
        ts = self.timestamp(st['ts'])
        for key in self.keys(tab, st['where'], bool(st['cols'])):
            if st['cols']:
                self.write(tab, {'k': list(key), 'c': {c: [None, ts] for c in st['cols']}})
            elif len(key) == nk:
                self.write(tab, {'k': list(key), 'd': ts})
            elif len(key) == len(tab.meta['pk']):
                self.write(tab, {'p': list(key), 'd': ts})
            else:  # a clustering prefix: the rows it covers
                for k, _ in self.live_rows(tab):
                    if k[:len(key)] == key:
                        self.write(tab, {'k': list(k), 'd': ts})

    def x_select(self, st, ks):
        tab = self.table(st, ks)
        meta, rows = (tab.meta, self.live_rows(tab)) if tab.meta else self.system_rows(tab, st)
        pk, ck, cols = meta['pk'], meta['ck'], meta['columns']
        conds = []
        for col, lits in st['where']:
            if col not in cols:
                raise invalid('Undefined column name %s in table %s.%s', col, tab.ks, tab.name)
            conds.append(((pk + ck).index(col) if col in pk + ck else col, [convert(x, cols[col], col) for x in lits]))
        restricted = {c for c, _ in st['where']}
        pk_done = set(pk) <= restricted
        prefix = next((i for i, c in enumerate(ck) if c not in restricted), len(ck))
        if ((restricted & set(pk) and not pk_done) or restricted - set(pk + ck)
                or (restricted & set(ck) and (not pk_done or restricted & set(ck[prefix:])))) and not st['filtering']:
            raise invalid('Cannot execute this query as it might involve data filtering and thus may have unpredictable '
                          'performance. If you want to execute this query despite the performance unpredictability, '
                          'use ALLOW FILTERING')
        rows = [(k, v) for k, v in rows if all((k[c] if isinstance(c, int) else v.get(c)) in want for c, want in conds)]
        if st['sel'] != '*' and any(c == 'count(*)' for c, _ in st['sel']):
            if len(st['sel']) > 1:
                raise invalid('Only COUNT(*) alone is supported by this stand-in')
            return {'type': 'rows', 'columns': [[st['sel'][0][1], 'bigint']], 'rows': [[len(rows)]],
                    'warnings': [] if pk_done else ['Aggregation query used without partition key']}
        names = [(c, c) for c in pk + ck + sorted(set(cols) - set(pk + ck), key=str.encode)] if st['sel'] == '*' \
            else st['sel']
        for c, _ in names:
            if c not in cols:
                raise invalid('Undefined column name %s in table %s.%s', c, tab.ks, tab.name)
        out = [[k[(pk + ck).index(c)] if c in pk + ck else v.get(c) for c, _ in names] for k, v in rows[:st['limit']]]
        return {'type': 'rows', 'columns': [[a, cols[c]] for c, a in names], 'rows': out, 'warnings': []}

    def system_rows(self, tab, st):
        """system_schema.keyspaces and .tables and system.local from the schema; other system tables are empty."""
        meta, rows = {'pk': ['key'], 'ck': [], 'order': {}, 'columns': {'key': 'text'}}, []
        if (tab.ks, tab.name) == ('system_schema', 'keyspaces'):
            meta.update(pk=['keyspace_name'], columns={'keyspace_name': 'text', 'durable_writes': 'boolean',
                                                       'replication': 'frozen<map<text, text>>'})
            for ks in SYSTEM_TABLES:
                rf = SYSTEM_RF[ks]
                rep = [['class', LOCATOR + ('SimpleStrategy' if rf else 'LocalStrategy')]] + ([['replication_factor', rf]] if rf else [])
                rows.append(((ks,), {'durable_writes': True, 'replication': rep}))
            for ks, k in self.schema['keyspaces'].items():
                rep = [['class', k['replication']['class']]] + sorted([a, b] for a, b in k['replication'].items() if a != 'class')
                rows.append(((ks,), {'durable_writes': k['durable_writes'], 'replication': rep}))
        elif (tab.ks, tab.name) == ('system_schema', 'tables'):
            meta.update(pk=['keyspace_name'], ck=['table_name'], columns={
                'keyspace_name': 'text', 'table_name': 'text', 'comment': 'text', 'default_time_to_live': 'int',
                'gc_grace_seconds': 'int', 'id': 'uuid'})
            for t in self.tables.values():
                opts = dict(TABLE_OPTIONS, **(t.meta or {'options': {}})['options'])
                rows.append(((t.ks, t.name), {'id': t.id, 'comment': opts['comment'][1:-1].replace("''", "'"),
                                              'default_time_to_live': int(opts['default_time_to_live']),
                                              'gc_grace_seconds': int(opts['gc_grace_seconds'])}))
        elif (tab.ks, tab.name) == ('system', 'local'):
            meta['columns'] = dict.fromkeys(['key', 'bootstrapped', 'cluster_name', 'cql_version', 'data_center',
                                             'partitioner', 'rack', 'release_version'], 'text')
            meta['columns'].update(host_id='uuid', tokens='set<text>')
            rows.append((('local',), {'bootstrapped': 'COMPLETED', 'cluster_name': CLUSTER, 'cql_version': '3.4.6',
                                      'data_center': DC, 'host_id': self.local['host_id'], 'rack': RACK,
                                      'partitioner': 'org.apache.cassandra.dht.Murmur3Partitioner',
                                      'release_version': RELEASE, 'tokens': sorted(self.local['tokens'])}))
        elif st['sel'] != '*':
            meta['columns'].update({c: 'text' for c, _ in st['sel'] if c != 'count(*)'})
        return meta, sorted(rows, key=lambda r: order_key(meta, r[0]))

    def x_describe(self, st, ks):
        if st['what'] == 'schema':
            return {'type': 'describe', 'statements': [s for k in sorted(self.schema['keyspaces'])
                                                       for s in self.describe_keyspace(k)]}
        name = st['name']
        if st['what'] == 'keyspace' or (st['what'] == 'any' and st['ks'] is None and name in self.schema['keyspaces']):
            name = name or ks
            if name not in self.schema['keyspaces']:
                raise invalid("'%s' not found in keyspaces", name)
            return {'type': 'describe', 'statements': self.describe_keyspace(name)}
        k = st['ks'] or ks
        if k not in self.schema['keyspaces']:
            raise invalid("'%s' not found in keyspaces", k)
        meta = self.schema['keyspaces'][k]['tables'].get(name)
        if meta is None:
            raise invalid("'%s' not found in keyspace '%s'", name, k)
        return {'type': 'describe', 'statements': [table_cql(k, name, meta)]}

    def describe_keyspace(self, k):
        ksm = self.schema['keyspaces'][k]
        return [keyspace_cql(k, ksm)] + [table_cql(k, t, ksm['tables'][t]) for t in sorted(ksm['tables'])]

    # -- nodetool
    def nodetool(self, name, args):
        with self.lock:
            try:
                return getattr(self, 'nt_' + name)(args)
            except ToolError as e:
                if e.rc == 1:
                    return 1, e.prefix + BAD_USE % e.msg, ''
                return 2, e.prefix, 'error: %s\n-- StackTrace --\n%s: %s\n\tat stand-in nodetool (cassandra.py)\n' % (
                    e.msg, e.exc, e.msg)

    def load(self):
        return sum(os.path.getsize(f) for t in self.tables.values() for f in t.files() if os.path.exists(f))

    def nt_status(self, args):
        _, pos = cmd_args(args, {'-r': False, '--resolve-ip': False})
        owns_hdr, owns, note = 'Owns (effective)', '100.0%', ''
        if pos and pos[0] not in self.all_keyspaces():
            return 1, '\nError: The keyspace %s, does not exist\n' % pos[0], ''
        if not pos and len({json.dumps(k['replication'], sort_keys=True) for k in self.schema['keyspaces'].values()}) > 1:
            owns_hdr, owns = 'Owns', '?'
            note = "Note: Non-system keyspaces don't have the same replication settings, effective ownership " \
                   "information is meaningless\n"
        table = [['--', 'Address', 'Load', 'Tokens', owns_hdr, 'Host ID', 'Rack'],
                 ['UN', '127.0.0.1', size_str(self.load()), str(len(self.local['tokens'])), owns, self.local['host_id'], RACK]]
        widths = [max(len(r[i]) for r in table) for i in range(7)]
        lines = ''.join('  '.join(r[i].ljust(widths[i]) for i in range(7)) + '\n' for r in table)
        return 0, 'Datacenter: %s\n%s\nStatus=Up/Down\n|/ State=Normal/Leaving/Joining/Moving\n%s\n%s' % (
            DC, '=' * len('Datacenter: ' + DC), lines, note), ''

    def nt_info(self, args):
        opts, _ = cmd_args(args, {'-T': False, '--tokens': False})
        toks = self.local['tokens']
        rows = [('ID', self.local['host_id']), ('Gossip active', 'true'), ('Native Transport active', 'true'),
                ('Load', size_str(self.load())), ('Generation No', int(self.started)),
                ('Uptime (seconds)', int(time.time() - self.started)), ('Heap Memory (MB)', '%.2f / %.2f' % (
                    __import__('resource').getrusage(0).ru_maxrss / 1024, 1024)),
                ('Off Heap Memory (MB)', '0.00'), ('Data Center', DC), ('Rack', RACK), ('Exceptions', 0),
                ('Percent Repaired', '100.0%')]
        rows += [('Token', t) for t in toks] if opts else [('Token', '(invoke with -T/--tokens to see all %d tokens)' % len(toks))]
        return 0, ''.join('%-23s: %s\n' % r for r in rows), ''

    def nt_version(self, args):
        return 0, 'ReleaseVersion: %s\n' % RELEASE, ''

    def nt_flush(self, args):
        _, pos = cmd_args(args, {})
        for ks in pos[:1] or self.all_keyspaces():
            if ks not in self.all_keyspaces():
                raise ToolError('Keyspace [%s] does not exist.' % ks, rc=1)
            tabs = self.keyspace_tables(ks)
            for name in pos[1:]:
                if not any(t.name == name for t in tabs):
                    raise ToolError('Unknown keyspace/cf pair (%s.%s)' % (ks, name), rc=1)
            for t in tabs:
                if t.meta and (len(pos) < 2 or t.name in pos[1:]):
                    self.flush(t)
        return 0, '', ''

    def nt_snapshot(self, args):
        opts, pos = cmd_args(args, dict.fromkeys(['-t', '--tag', '-cf', '--column-family', '--table', '-kt', '--kt-list',
                                                  '-kc', '--kc.list'], True) | {'-sf': False, '--skip-flush': False})
        tag = opts.get('-t', opts.get('--tag', str(int(time.time() * 1000))))
        table = opts.get('-cf', opts.get('--column-family', opts.get('--table')))
        kt = (opts.get('-kt') or opts.get('--kt-list') or opts.get('-kc') or opts.get('--kc.list') or '').replace(' ', '')
        skip = '-sf' in opts or '--skip-flush' in opts
        out = 'Requested creating snapshot(s) for [%s] with snapshot name [%s] and options {skipFlush=%s}\n' % (
            kt or ', '.join(pos) or 'all keyspaces', tag, str(skip).lower())
        try:
            targets = []
            if kt and (pos or table):
                raise ToolError('When specifying the Keyspace table list (using -kt,--kt-list,-kc,--kc.list), you must '
                                'not also specify keyspaces to snapshot')
            if table and len(pos) != 1:
                raise ToolError('When specifying the table for a snapshot, you must specify one and only one keyspace')
            for ks, name in [i.partition('.')[::2] for i in kt.split(',')] if kt else [(k, table) for k in pos or self.all_keyspaces()]:
                if ks not in self.all_keyspaces():
                    raise ToolError('Keyspace %s does not exist' % ks)
                tabs = [t for t in self.keyspace_tables(ks) if not name or t.name == name]
                if name and not tabs:
                    raise ToolError('Unknown keyspace/cf pair (%s.%s)' % (ks, name), rc=1)
                targets += tabs
            if any(os.path.exists(os.path.join(t.dir, 'snapshots', tag)) for t in targets):
                raise ToolError('Snapshot %s already exists.' % tag)
            for t in targets:
                self.snapshot_table(t, tag, flush=not skip)
        except ToolError as e:
            e.prefix = out
            raise
        return 0, out + 'Snapshot directory: %s\n' % tag, ''

    def nt_listsnapshots(self, args):
        cmd_args(args, {'-nt': False, '--no-ttl': False})
        rows, total = [], 0
        for t in sorted(self.tables.values(), key=lambda t: (t.ks, t.name)):
            sroot = os.path.join(t.dir, 'snapshots')
            for tag in sorted(os.listdir(sroot)) if os.path.isdir(sroot) else []:
                d, live = os.path.join(sroot, tag), set(os.listdir(t.dir))
                sizes = {f: os.path.getsize(os.path.join(d, f)) for f in os.listdir(d)}
                true = sum(n for f, n in sizes.items() if f not in live)  # what the snapshot alone holds
                try:
                    with open(os.path.join(d, 'manifest.json')) as f:
                        created = datetime.datetime.fromtimestamp(float(json.load(f)['created_at']), datetime.timezone.utc)
                    created = created.isoformat(timespec='milliseconds').replace('+00:00', 'Z')
                except (OSError, ValueError, KeyError):
                    created = ''
                total += true
                rows.append([tag, t.ks, t.name, size_str(true), size_str(sum(sizes.values())), created, ''])
        if not rows:
            return 0, 'Snapshot Details: \nThere are no snapshots\n', ''
        rows = [['Snapshot name', 'Keyspace name', 'Column family name', 'True size', 'Size on disk', 'Creation time',
                 'Expiration time']] + sorted(rows)
        widths = [max(len(r[i]) for r in rows) for i in range(7)]
        text = ''.join(' '.join(r[i].ljust(widths[i]) for i in range(7)) + '\n' for r in rows)
        return 0, 'Snapshot Details: \n%s\nTotal TrueDiskSpaceUsed: %s\n\n' % (text, size_str(total)), ''

    def nt_clearsnapshot(self, args):
        opts, pos = cmd_args(args, {'-t': True, '--all': False})
        tag = opts.get('-t', '')
        if bool(tag) == ('--all' in opts):
            raise ToolError('Specify only one of snapshot name or --all' if tag else 'Specify snapshot name or --all',
                            exc='java.lang.RuntimeException')
        for sroot in [s for ks in pos or os.listdir(self.data) for s in glob_dirs(os.path.join(self.data, ks), 'snapshots')]:
            for s in os.listdir(sroot):
                if not tag or s == tag:
                    shutil.rmtree(os.path.join(sroot, s))
            if not os.listdir(sroot):
                os.rmdir(sroot)
        return 0, 'Requested clearing snapshot(s) for [%s] with %s\n' % (
            ', '.join(pos) or 'all keyspaces', 'snapshot name [%s]' % tag if tag else '[all snapshots]'), ''

    def load_new(self, tab, src):
        """Loads the SSTables in `src` the table does not know, all or nothing: the problems, if any."""
        known = {f for s in tab.sst.values() for f in s['comps'].values()} if src == tab.dir else set()
        cands = {g: c for g, c in scan_sstables(src).items() if not set(c.values()) <= known}
        problems = [p for p in (check_sstable(src, c) for c in cands.values()) if p]
        if problems:
            return problems
        tab.max_gen = max([tab.max_gen] + list(cands))
        for gen in sorted(cands):
            tab.max_gen += 1
            names = {comp: '%s-%d-big-%s' % (f[:2], tab.max_gen, comp) for comp, f in cands[gen].items()}
            for comp, f in cands[gen].items():
                shutil.move(os.path.join(src, f), os.path.join(tab.dir, names[comp]))
            self.attach(tab, tab.max_gen, names)
        return []

    def loadable(self, ks, name):
        if ks not in self.all_keyspaces():
            raise ToolError('Unknown keyspace %s' % ks, exc='java.lang.AssertionError')
        tab = self.find(ks, name)
        if tab is None or not tab.meta:
            raise ToolError('Unknown keyspace/cf pair (%s.%s)' % (ks, name), rc=1)
        return tab

    def nt_refresh(self, args):
        out = 'nodetool refresh is deprecated, use nodetool import instead\n'
        try:
            _, pos = cmd_args(args, {})
            if len(pos) != 2:
                raise ToolError('refresh requires ks and cf args', rc=1)
            tab = self.loadable(*pos)
            problems = self.load_new(tab, tab.dir)
            if problems:
                raise ToolError('Failed to load new SSTables of %s.%s, nothing was loaded: %s' % (
                    pos[0], pos[1], '; '.join(problems)), exc='org.apache.cassandra.io.sstable.CorruptSSTableException')
        except ToolError as e:
            e.prefix = out
            raise
        return 0, out, ''

    def nt_import(self, args):
        flags = '-l --keep-level -r --keep-repaired -v --no-verify -t --no-tokens -c --no-invalidate-caches -q --quick ' \
                '-e --extended-verify'
        opts, pos = cmd_args(args, dict.fromkeys(flags.split(), False))
        if len(pos) < 3:
            raise ToolError('import requires keyspace, table name and directories', rc=1)
        tab = self.loadable(pos[0], pos[1])
        failed = [d for d in pos[2:] if not os.path.isdir(d) or self.load_new(tab, os.path.abspath(d))]
        out = 'Doing a quick import - skipping sstable verification and row cache invalidation\n' \
            if {'-q', '--quick'} & set(opts) else ''
        if failed:
            return 1, out, 'Some directories failed to import, check server logs for details:\n' + ''.join(
                d + '\n' for d in failed)
        return 0, out, ''


def glob_dirs(kdir, sub):
    return [os.path.join(kdir, d, sub) for d in (os.listdir(kdir) if os.path.isdir(kdir) else [])
            if os.path.isdir(os.path.join(kdir, d, sub))]


def cmd_args(args, spec):
    """airline-style options of a nodetool command (spec: option -> takes a value); `--` ends them."""
    opts, pos, i = {}, [], 0
    while i < len(args):
        a = args[i]
        if a == '--':
            return opts, pos + args[i + 1:]
        if a in spec:
            if spec[a] and i + 1 >= len(args):
                raise ToolError("Required values for option '%s' not provided" % a.lstrip('-'), rc=1)
            opts[a] = args[i + 1] if spec[a] else True
            i += spec[a]
        elif a.startswith('-') and len(a) > 1:
            raise ToolError('Found unexpected parameters: [%s]' % a, rc=1)
        else:
            pos.append(a)
        i += 1
    return opts, pos


# ------------------------------------------------------------------ server and connections

def serve(argv):
    p = optparse.OptionParser(prog='cassandra.py serve')
    for o in ('--data-dir', '--cql-port-file', '--jmx-port-file', '--credentials-file'):
        p.add_option(o)
    p.add_option('--host', default='127.0.0.1', help='address to listen on')
    p.add_option('--no-auto-snapshot', action='store_true')
    o, _ = p.parse_args(argv)
    if not (o.data_dir and o.cql_port_file and o.jmx_port_file):
        p.error('--data-dir, --cql-port-file and --jmx-port-file are required')
    creds = None
    if o.credentials_file:
        with open(o.credentials_file) as f:
            creds = tuple(f.readline().rstrip('\r\n').partition(':')[::2])
    node = Node(os.path.abspath(o.data_dir), not o.no_auto_snapshot)

    def cql(req, authed):
        if req.get('op') == 'startup':
            if creds and req.get('user') is None:
                return {'auth_error': 'Remote end requires authentication'}
            if creds and (req.get('user'), req.get('password')) != creds:
                return {'auth_error': 'Error from server: code=0100 [Bad credentials] message="Provided username %s '
                                      'and/or password are incorrect"' % req.get('user')}
            return {'ok': True, 'authed': True}
        if not authed:
            return {'error': {'class': 'Unauthorized', 'message': 'not authenticated'}}
        try:
            return node.execute(req['cql'], req.get('keyspace'))
        except CqlError as e:
            return {'error': {'class': e.cls, 'message': e.text()}}

    def jmx(req, _):
        if creds and not req.get('user'):
            return {'auth_error': 'Authentication failed! Credentials required'}
        if creds and (req.get('user'), req.get('password')) != creds:
            return {'auth_error': 'Authentication failed! Invalid username or password'}
        rc, out, err = node.nodetool(req['cmd'], req['args'])
        return {'rc': rc, 'out': out, 'err': err}

    class Handler(socketserver.StreamRequestHandler):
        def handle(self):
            authed = False
            for line in self.rfile:
                try:
                    resp = self.server.answer(json.loads(line), authed)
                    authed = authed or resp.get('authed', False)
                except Exception as e:  # a stand-in bug: the client shows it, the node lives on
                    resp = {'error': {'class': 'ServerError', 'message': 'stand-in failure: %r' % e}}
                self.wfile.write((json.dumps(resp) + '\n').encode())
                self.wfile.flush()

    class Server(socketserver.ThreadingTCPServer):
        daemon_threads = allow_reuse_address = True

    servers = []
    for answer, port_file in ((cql, o.cql_port_file), (jmx, o.jmx_port_file)):
        s = Server((o.host, 0), Handler)
        s.answer = answer
        threading.Thread(target=s.serve_forever, daemon=True).start()
        servers.append(s)
        atomic_write(port_file, '%d\n' % s.server_address[1])
    sys.stderr.write('stand-in Cassandra %s: data %s, CQL port %d, JMX port %d\n' % (
        RELEASE, node.root, servers[0].server_address[1], servers[1].server_address[1]))
    sys.stderr.flush()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    return 0


class Conn:
    def __init__(self, host, port, timeout):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.settimeout(None)
        self.f = self.sock.makefile('rwb')

    def call(self, req):
        self.f.write((json.dumps(req) + '\n').encode())
        self.f.flush()
        line = self.f.readline()
        if not line:
            raise ConnectionError('the stand-in node closed the connection')
        return json.loads(line)


# ------------------------------------------------------------------ cqlsh

def is_file_secure(path):
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return True
    return (os.getuid() == 0 or st.st_uid == os.getuid()) and not stat.S_IMODE(st.st_mode) & (stat.S_IRGRP | stat.S_IROTH)


def cqlsh(argv):
    p = optparse.OptionParser(prog='cqlsh.py', usage='Usage: %prog [options] [host [port]]',
                              description='CQL Shell for Apache Cassandra (stand-in)')
    p.add_option('-C', '--color', action='store_true', dest='color')
    p.add_option('--no-color', action='store_false', dest='color')
    for o in ('-u/--username', '-p/--password', '-k/--keyspace', '-f/--file', '-e/--execute', '--cqlshrc', '--encoding',
              '--cqlversion', '--connect-timeout', '--request-timeout', '--browser'):
        p.add_option(*o.split('/'))
    for o in ('--ssl', '--debug', '-t/--tty', '--insecure-password-without-warning'):
        p.add_option(*o.split('/'), action='store_true')
    p.add_option('--protocol-version', type='int')
    o, args = p.parse_args(argv)
    default_rc = os.path.expanduser('~/.cassandra/cqlshrc')
    rc = os.path.expanduser(o.cqlshrc or default_rc)
    if not os.path.exists(rc) and o.cqlshrc:
        print('\nWarning: Specified cqlshrc location `%s` does not exist.  Using `%s` instead.\n' % (rc, default_rc))
        rc = default_rc
    cfg = configparser.RawConfigParser()
    cfg.read(rc)

    def opt(section, key, default=None):
        return cfg.get(section, key) if cfg.has_option(section, key) else default
    user, password = opt('authentication', 'username'), opt('authentication', 'password')
    if user or password:
        if password and not is_file_secure(rc):
            sys.stderr.write('\nWarning: Password is found in an insecure cqlshrc file. The file is owned or readable '
                             'by other users on the system.')
        sys.stderr.write('\nNotice: Credentials in the cqlshrc file is deprecated and will be ignored in the future.\n'
                         'Please use a credentials file to specify the username and password.\n\n')
    if o.password is not None and not o.insecure_password_without_warning:
        sys.stderr.write('\nWarning: Using a password on the command line interface can be insecure.\n'
                         'Recommendation: use the credentials file to securely provide the password.\n\n')
    user, password = o.username or user, o.password if o.password is not None else password
    if user and password is None:
        password = getpass.getpass() if sys.stdin.isatty() else ''
    host = (args[:1] or [os.environ.get('CQLSH_HOST', opt('connection', 'hostname', '127.0.0.1'))])[0]
    port = (args[1:2] or [os.environ.get('CQLSH_PORT', opt('connection', 'port', '9042'))])[0]
    if not str(port).isdigit():
        p.error('%r is not a valid port number.' % port)
    port, source, name = int(port), sys.stdin, '<stdin>'
    if o.execute is None and o.file is not None:
        try:
            source, name = open(o.file, encoding='utf-8-sig'), o.file
        except OSError as e:
            sys.exit("Can't open %r: %s" % (o.file, e))
    try:
        addr = socket.gethostbyname(host)
    except OSError:
        addr = host
    endpoint = '%s:%d' % (addr, port)
    try:
        conn = Conn(addr, port, float(o.connect_timeout or 5))
    except OSError as e:
        err = type(e)(e.errno, 'Tried connecting to [%r]. Last error: %s' % ((addr, port), e.strerror or e))
        sys.exit('Connection error: %r' % (('Unable to connect to any servers', {endpoint: err}),))
    r = conn.call({'op': 'startup', 'user': user or None, 'password': password if user else None})
    if 'auth_error' in r:
        msg = r['auth_error']
        msg = 'Failed to authenticate to %s: %s' % (endpoint, msg) if msg.startswith('Error from server') else msg
        sys.exit("Connection error: ('Unable to connect to any servers', {%r: AuthenticationFailed(%r)})" % (endpoint, msg))
    shell = Shell(conn, name)
    if o.keyspace:
        r = conn.call({'op': 'query', 'cql': 'USE %s' % o.keyspace})
        if 'error' in r:
            sys.exit('Connection error: %s' % r['error']['message'])
        shell.keyspace = r['keyspace']
    if o.execute is not None:
        shell.onecmd(o.execute if o.execute.endswith(';') else o.execute + ';')
    else:
        for line in source:
            shell.lineno += 1  # as cqlsh: counted when read, so a statement ending on line N reports N + 1
            shell.buf += line
            if shell.onecmd(shell.buf):
                shell.buf = ''
            if shell.stop:
                break
        if shell.buf.strip() and not shell.stop and not shell.onecmd(shell.buf, eof=True):
            shell.printerr('Incomplete statement at end of file')
    sys.stdout.flush()
    return 2 if shell.error else 0


class Shell:
    """cqlsh's batch mode: statements from -e, -f or stdin; results to stdout, errors to stderr."""
    NEWLINE_COMMANDS = ('describe', 'desc', 'consistency', 'paging', 'exit', 'quit')

    def __init__(self, conn, name):
        self.conn, self.name, self.lineno, self.buf, self.out = conn, name, 1, '', sys.stdout
        self.keyspace, self.page_size, self.error, self.stop = None, 100, False, False

    def printerr(self, text):
        self.error = True
        self.out.flush()
        sys.stderr.write('%s:%d:%s\n' % (self.name, self.lineno, text))
        sys.stderr.flush()

    def onecmd(self, text, eof=False):
        """Runs the statements of `text` if the last one is complete (else False: more lines needed)."""
        stmts, rest = split_statements(text)
        if not only_comments(rest):
            if stmts or rest.split()[0].lower() not in self.NEWLINE_COMMANDS or not (rest.endswith('\n') or eof):
                return False
            stmts = [rest]
        for st in stmts:
            if not only_comments(st):
                self.statement(st.strip())
        return True

    def statement(self, text):
        word, rest = (text.split(None, 1) + [''])[:2]
        word, rest = word.lower(), rest.strip().upper()
        if word in ('exit', 'quit'):
            self.stop = True
        elif word == 'consistency':
            if rest not in 'ANY ONE TWO THREE QUORUM ALL LOCAL_ONE LOCAL_QUORUM EACH_QUORUM SERIAL LOCAL_SERIAL'.split():
                return print('Current consistency level is ONE.') if not rest else self.printerr('Improper consistency command.')
            print('Consistency level set to %s.' % rest)
        elif word == 'paging':
            if rest == 'OFF':
                self.page_size = None
                print('Disabled Query paging.')
            else:
                self.page_size = int(rest) if rest.isdigit() else 100
                print('Now Query paging is enabled\nPage size: %d' % self.page_size)
        else:
            r = self.conn.call({'op': 'query', 'cql': text, 'keyspace': self.keyspace})
            if 'error' in r:
                e = r['error']
                if word in ('describe', 'desc'):  # cqlsh shows just the server's message
                    self.printerr(e['message'].partition('message=')[2].strip('"') or e['message'])
                else:
                    self.printerr('%s: %s' % (e['class'], e['message']))
            elif r['type'] == 'set_keyspace':
                self.keyspace = r['keyspace']
            elif r['type'] == 'rows':
                self.print_rows(r['columns'], r['rows'])
                if r['warnings']:
                    self.out.write('\nWarnings :\n' + ''.join(w + '\n\n' for w in r['warnings']))
            elif r['type'] == 'describe':
                self.out.write(''.join('\n%s\n' % s for s in r['statements']))
        self.out.flush()

    def print_rows(self, cols, rows):
        """As cqlsh prints results when not on a tty, page by page (column widths are per page)."""
        w, names = self.out.write, [c[0] for c in cols]
        size = self.page_size or max(1, len(rows))
        w('\n')
        for n, page in enumerate([rows[i:i + size] for i in range(0, len(rows), size)] or [[]]):
            vals = [[fmt_value(v, t) for v, (_, t) in zip(row, cols)] for row in page]
            widths = [max([dwidth(h)] + [dwidth(r[i]) for r in vals]) for i, h in enumerate(names)]
            if n == 0:
                w(' ' + ' | '.join(h + ' ' * (wd - dwidth(h)) for h, wd in zip(names, widths)).rstrip() + '\n')
                w('-%s-\n' % '-+-'.join('-' * wd for wd in widths) + ('\n' if not page else ''))
            for r in vals:
                w(' ' + ' | '.join(' ' * (wd - dwidth(x)) + x for x, wd in zip(r, widths)) + '\n')
        w('\n(%d rows)\n' % len(rows))


# ------------------------------------------------------------------ nodetool

NODETOOL_COMMANDS = ('status', 'info', 'version', 'flush', 'snapshot', 'listsnapshots', 'clearsnapshot', 'refresh',
                     'import')
GLOBAL_OPTS = {'-h': 'host', '--host': 'host', '-p': 'port', '--port': 'port', '-u': 'user', '--username': 'user',
               '-pw': 'password', '--password': 'password', '-pwf': 'pwfile', '--password-file': 'pwfile'}


def nodetool(argv):
    g = {'host': '127.0.0.1', 'port': '7199', 'user': '', 'password': '', 'pwfile': ''}
    rest, i = [], 0
    while i < len(argv):
        if argv[i] == '--':
            rest += argv[i:]
            break
        if argv[i] in GLOBAL_OPTS and i + 1 < len(argv):
            g[GLOBAL_OPTS[argv[i]]] = argv[i + 1]
            i += 1
        elif argv[i] not in ('-pp', '--print-port'):
            rest.append(argv[i])
        i += 1
    if not rest:
        print('usage: nodetool [(-h <host> | --host <host>)] [(-p <port> | --port <port>)]\n'
              '        [(-pw <password> | --password <password>)]\n'
              '        [(-pwf <passwordFilePath> | --password-file <passwordFilePath>)]\n'
              '        [(-u <username> | --username <username>)] <command> [<args>]\n\n'
              'The commands of this stand-in are:\n    ' + '\n    '.join(NODETOOL_COMMANDS))
        return 0
    if rest[0] not in NODETOOL_COMMANDS:
        sys.stdout.write(BAD_USE % ('Found unexpected parameters: [%s]' % ', '.join(rest)))
        return 1
    password = g['password']
    if g['user'] and g['pwfile']:  # JMX password file: `user password` lines
        try:
            with open(g['pwfile']) as f:
                password = next((p[1] for p in map(str.split, f) if len(p) > 1 and p[0] == g['user']), password)
        except OSError as e:
            sys.stderr.write('error: %s (%s)\n-- StackTrace --\njava.io.FileNotFoundException: %s (%s)\n'
                             % (g['pwfile'], e.strerror, g['pwfile'], e.strerror))
            return 2
    if g['user'] and not password and sys.stdin.isatty():
        password = getpass.getpass('Password:')
    fail = "nodetool: Failed to connect to '%s:%s' - %%s: '%%s'.\n" % (g['host'], g['port'])
    try:
        conn = Conn(g['host'], int(g['port']), 10)
    except ConnectionRefusedError:
        sys.stderr.write(fail % ('ConnectException', 'Connection refused (Connection refused)'))
        return 1
    except socket.gaierror as e:
        sys.stderr.write(fail % ('UnknownHostException', '%s: %s' % (g['host'], e.strerror)))
        return 1
    except OSError as e:
        sys.stderr.write(fail % ('ConnectException', e.strerror or e))
        return 1
    r = conn.call({'user': g['user'] or None, 'password': password, 'cmd': rest[0], 'args': rest[1:]})
    if 'auth_error' in r or 'error' in r:
        sys.stderr.write(fail % ('SecurityException', r['auth_error']) if 'auth_error' in r
                         else 'error: %s\n' % r['error']['message'])
        return 1 if 'auth_error' in r else 2
    sys.stdout.write(r['out'])
    sys.stdout.flush()
    sys.stderr.write(r['err'])
    return r['rc']


def main(argv):
    modes = {'serve': serve, 'cqlsh': cqlsh, 'nodetool': nodetool}
    if not argv or argv[0] not in modes:
        sys.stderr.write('usage: cassandra.py serve|cqlsh|nodetool ARGS (see the module docstring)\n')
        return 2
    try:
        return modes[argv[0]](argv[1:])
    except BrokenPipeError:
        return 1


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
