"""A wire-faithful RethinkDB 2.4 stand-in that the official drivers talk to unchanged.

RethinkDB cannot be installed in the sandbox, yet PlaceOS era A keeps its whole configuration in it
(internals §2.1: `RETHINKDB_*` env, database `place_development`, the model tables, Authority looked
up by a secondary index on `domain`, API keys by id) and its health probe opens a connection to db
`rethinkdb` and runs `r.table("server_status").pluck("id","name")`, taking the first row. This
module is a small server that speaks the real protocol so that the PlaceOS simulator and the
exporter's probe use the official `rethinkdb` Python driver (sync and asyncio) exactly as against a
real server, and so that faults look the way they look in production.

What it reproduces (checked against rethinkdb/rethinkdb sources: src/client_protocol/server.cc,
json.cc, protocols.cc; src/clustering/administration/auth/scram_authenticator.cc, password.cc,
user.cc, users_artificial_table_backend.cc, authentication_error.hpp;
src/clustering/administration/servers/server_status.cc; src/rdb_protocol/term_walker.cc,
term_storage.cc, datum.cc, func.cc, order_util.cc, query_cache.cc; src/rapidjson/prettywriter.h;
test/rql_test/src/meta/table.yaml, mutation/insert.yaml):

* **Handshake V1_0**: 4-byte little-endian magic 0x34c2bdc3, then the server's NUL-terminated
  `{"max_protocol_version":0,"min_protocol_version":0,"server_version":...,"success":true}`
  (datum objects are key-sorted on the wire), then SCRAM-SHA-256 (RFC 5802/7677, no channel
  binding) with salted passwords stored as the server stores them (16-byte salt, 4096 PBKDF2
  iterations, only the salted hash kept). Failures are the server's
  `{"error":...,"error_code":N,"success":false}` followed by a closed connection: "Wrong password"
  (12), "Unknown user" (17, only after the client's proof, like the real server, which hands out a
  fake salt first), "Invalid encoding" (10), "Extensions not supported" (11), "Channel binding is
  not supported" (15), "Invalid username encoding" (18), "Other error" (20), codes 1-5 and 7-9 for
  malformed handshake JSON. The driver turns codes 10-20 into `ReqlAuthError`. Old magic numbers get
  the real plain-text `ERROR: ...` replies (V0_3/V0_4 auth-key handshakes are accepted).
* **Query protocol**: 8-byte token + 4-byte little-endian length + JSON `[type, term, optargs]`;
  replies `{"t":..,"e":..,"r":[..],"b":[..],"p":..,"n":[]}` with the same field order as
  json.cc. START, CONTINUE, STOP, NOREPLY_WAIT, SERVER_INFO, the `noreply`, `db` and `profile`
  global optargs. Every sequence comes back whole as SUCCESS_SEQUENCE; a later CONTINUE/STOP for
  that token gets the real CLIENT_ERROR "Token N not in stream cache." (the drivers send one
  CONTINUE after every SUCCESS_SEQUENCE, rethinkdb issue #5029, and ignore the reply).
  Unparseable JSON: "Client is buggy (failed to deserialize query)."; oversized queries: "Query
  size (N) greater than maximum (134217727)." then close.
* **Terms**: a compile pass like term_walker.cc ("Unrecognized TermType: N.", argument counts
  "Expected 2 arguments but found 1.", "Unrecognized optional argument `x`.") then evaluation of
  DATUM, MAKE_ARRAY, MAKE_OBJ, VAR, IMPLICIT_VAR, FUNC, FUNCALL, DB, TABLE, GET, GET_ALL (primary or
  secondary index, `multi`), FILTER (object predicates with filter_match semantics, functions,
  `default`), EQ, NE, LT, LE, GT, GE, NOT, AND, OR, BRANCH, DEFAULT, ADD, SUB, MUL, DIV, MOD,
  BRACKET, GET_FIELD, CONTAINS, HAS_FIELDS, KEYS, VALUES, PLUCK, WITHOUT, MERGE, MAP, ORDER_BY
  (fields, ASC/DESC, functions, `index`), DISTINCT, COUNT, IS_EMPTY, LIMIT, SKIP, SLICE, NTH, UNION,
  APPEND, PREPEND, TYPE_OF, COERCE_TO, UPCASE, DOWNCASE, UUID, ERROR, NOW, ISO8601, EPOCH_TIME,
  TO_EPOCH_TIME, TO_ISO8601, INSERT (`conflict` error/replace/update, generated UUID keys,
  `return_changes`), UPDATE, REPLACE, DELETE, DB_CREATE, DB_DROP, DB_LIST, TABLE_CREATE
  (`primary_key`), TABLE_DROP, TABLE_LIST, INDEX_CREATE, INDEX_DROP, INDEX_LIST, INDEX_STATUS,
  INDEX_WAIT, CONFIG, STATUS, WAIT, SYNC. Streams versus arrays follow the server (a table, a
  `get_all` or a `filter` over a table is a stream; `order_by` without an index is an array).
* **Error texts and types** as the server words them, e.g. "Database `x` does not exist." and
  "Table `db.t` does not exist." (OP_FAILED), "Table `db.t` already exists.", "Index `i` was not
  found on table `db.t`.", "No attribute `f` in object:\\n{...}" and "Cannot perform get_field on a
  non-object non-sequence `null`." (NON_EXISTENCE), "Expected type OBJECT but found NUMBER.",
  "Duplicate primary key `id`:\\n{old}\\n{new}" (with the server's tab-indented datum printing),
  "Index out of bounds: 3", with backtraces (`b`) pointing at the failing term.
* **The `rethinkdb` system database**: `server_status` (one row with `id`, `name`, `network`,
  `process` shaped as server_status.cc builds it), `users` (rows `{"id","password": bool}`; writing
  `password` changes it exactly as user.cc does: a string, `{"password","iterations"}` or `false`;
  existing connections keep working, new handshakes need the new password), plus `server_config`,
  `db_config`, `table_config`, `table_status`, `cluster_config`, `current_issues`, `jobs`, `logs`,
  `permissions`, `stats` in simplified form.
* **Persistence**: everything (databases, tables, indexes, documents, users with salted hashes,
  server id/name) lives in `<data-dir>/rethinkdb-standin.json`, rewritten atomically (temp file,
  fsync, rename) after every query that wrote, so a restart after SIGKILL finds its data. The data
  dir is locked (flock) so two processes cannot share it.

What it does NOT do: changefeeds, JavaScript, HTTP, geo, binary, GROUP/REDUCE/joins and the other
terms not listed (they fail at compile time with a COMPILE_ERROR naming the term, which a real
server would run), partial batches (SUCCESS_PARTIAL), permissions (every authenticated user may do
everything), clustering and sharding (there is no cluster port: `server_status` reports
`cluster_port` 0 and `http_admin_port` "<no http admin>"), the HTTP admin UI, SASLprep of user
names, TLS, the server's own log file. Indexes are evaluated by scanning; queries on one
connection are answered in order, one at a time. Error texts for the rarer paths (type coercion,
variables, `r.row` misuse) are close to, not copied from, the server's.

Run it as its own process (sandbox contract, sandbox/README.md)::

    python -m sandbox.standins.rethinkdb --port P --data-dir DIR [--admin-password PW]

or in-process with `RethinkDBStandIn(data_dir, port=..., admin_password=...)`: `await start()` /
`await stop()` or `async with`; `port` is the bound port (pass 0 for any free one).
"""

from sandbox.standins.rethinkdb.protocol import SERVER_VERSION
from sandbox.standins.rethinkdb.server import RethinkDBStandIn, main, supported_terms

__all__ = ["SERVER_VERSION", "RethinkDBStandIn", "main", "supported_terms"]
