"""A wire-faithful Elasticsearch stand-in (one node, 8.14.3 or 7.17.6) for the sandbox.

Elasticsearch cannot be installed here, so this aiohttp server answers the part of the REST API that
PlaceOS and the exporter use, with the real status codes, headers and error bodies, so that the
official `elasticsearch` Python client (8.x, sync and async) accepts it unchanged.

Built from internals §4 (Elasticsearch in PlaceOS): one index per mirrored table named after the table
(`sys`, `mod`, `driver`, `zone`, `authority`, `user`, `api_key`, ...); search-ingest mirrors rows with
`/_bulk` and checks `GET /_cluster/health` (green/yellow healthy, red or non-2xx unhealthy); rest-api
lists with `/<index>/_search` and `/<index>/_count` and turns `hits.total` into `X-Total-Count`. The
partner-environment compose runs `elasticsearch:8.14.3` (Era C) or `7.17.6` (Era A), single node,
health-checked with `GET /_cat/health` (internals §8).

Run: `python -m sandbox.standins.elasticsearch --port P --data-dir DIR [--version 8.14.3|7.17.6]
[--password PW]`. Listens on 127.0.0.1:P, logs to stderr, exits 0 on SIGTERM/SIGINT.

What it reproduces
------------------
* `X-Elastic-Product: Elasticsearch` on every response (7.14+), which is the 8.x client's product check.
* Media types as the server's RestCompatibleVersionHelper checks them: `application/json` and
  `application/x-ndjson` always work; `application/vnd.elasticsearch+json; compatible-with=N` works for
  N = major and major-1 (8.x: 8 and 7; 7.17: 7 and 6). Anything else is HTTP 400
  `media_type_header_exception` "Invalid media-type value on headers [Accept, Content-Type]" caused by a
  `status_exception` "Accept version must be either version 8 or 7, but found 9. Accept=..." (wording
  confirmed from real 8.x reports, e.g. elastic/elasticsearch-py#2923, and the 8.x source). An Accept
  header listing several types (a comma) is a media range and is ignored, as the real parser does.
  8.x answers in the vnd type it was asked for (`application/vnd.elasticsearch+json;compatible-with=8`),
  else `application/json`; 7.x always answers `application/json; charset=UTF-8` (elastic/apm-server#6426).
  With `compatible-with=7` (or on 7.17) document and hit bodies carry `"_type": "_doc"`.
  A body with a Content-Type that is not JSON/NDJSON is 406 `Content-Type header [...] is not supported`.
* The 8.x Python client against a 7.17 server: the client rewrites every `application/json` it sends
  (Accept and Content-Type, including headers you pass with `headers=` or `.options(headers=...)`) to
  `application/vnd.elasticsearch+json; compatible-with=8` (elasticsearch/_sync/client/_base.py
  `mimetype_header_to_compat`, applied after merging user headers), so overriding headers does NOT
  help, and 7.17 rejects every call with a body or a plain Accept (`info()`, `search()`, `ping()` is
  False). What works: a node class that puts plain `application/json` / `application/x-ndjson` back on
  the wire just before sending, e.g.
  `class PlainJsonNode(Urllib3HttpNode)` (or `AiohttpHttpNode` for `AsyncElasticsearch`) whose
  `perform_request` replaces `application/vnd.elasticsearch+X; compatible-with=N` by `application/X`
  in the Accept and Content-Type headers, passed as `Elasticsearch(url, node_class=PlainJsonNode)`.
  Raw `perform_request` calls with explicit `compatible-with=7` headers also work (the client's rewrite
  does not touch vnd types). Quirk kept from the real parser: `cat.*` calls still work unmodified,
  because their Accept `text/plain,application/...` is a media range.
  ASSUMED (no 7.17 source or capture found): the 7.17 rejection has the same shape as 8.x with
  "Accept version must be either version 7 or 6, but found 8".
* `GET|HEAD /` info; `GET /_cluster/health[/<index>]` with `wait_for_status`, `timeout` and `level`
  (a red cluster answers 200 with `"status": "red"`; a wait that runs out answers 408 with
  `"timed_out": true`, as RestClusterHealthAction does; a missing named index waits, then 408 red);
  `GET /_cat/health`, `GET /_cat/indices[/<pattern>]` (text with `v`/`h`/`s`, or `format=json`).
* Indices: `PUT`, `HEAD`, `GET`, `DELETE /<index>` (real name validation, `resource_already_exists_exception`,
  404 `index_not_found_exception` body; 8.x refuses wildcard deletes, action.destructive_requires_name),
  `/_refresh`, `/<index>/_refresh`. Index names are PlaceOS table names (internals §4).
* Documents: `PUT|POST /<index>/_doc/<id>` (`op_type=create`), `POST /<index>/_doc`,
  `PUT|POST /<index>/_create/<id>`, `POST /<index>/_update/<id>` (`doc`, `upsert`, `doc_as_upsert`, noop),
  `GET|HEAD|DELETE /<index>/_doc/<id>`, `POST|PUT /_bulk` and `/<index>/_bulk` (index/create/update/delete,
  per-item `status`/`error`, top-level `errors`; malformed NDJSON is a 400 for the whole request).
  Writes auto-create the index. Versions, `_seq_no`, `_primary_term` behave like one shard.
* `GET|POST /[<index>/]_search` and `_count`: `from`/`size` (10 000 result window), `track_total_hits`
  (default 10 000 then `"relation": "gte"`, `false`, a number), `rest_total_hits_as_int`, `q=` with
  `df`/`default_operator`, `sort` (body or `field:desc` param), `_source` filtering, `post_filter`, and
  the queries `match_all`, `match_none`, `term`, `terms`, `ids`, `exists`, `prefix`, `wildcard`, `range`,
  `match`, `match_phrase`, `multi_match`, `query_string`, `simple_query_string`, `bool`
  (must/filter/should/must_not/minimum_should_match) and `constant_score`. Unknown index: 404
  `index_not_found_exception`; unknown query: 400 `parsing_exception` "unknown query [x]".
* Security (only with `--password`): HTTP basic for user `elastic`; a missing or wrong credential is 401
  `security_exception` ("missing authentication credentials for REST request [...]" / "unable to
  authenticate user [elastic] for REST request [...]") with the `WWW-Authenticate` challenges in the
  headers and in the body. `POST|PUT /_security/user/[<name>/]_password {"password": ...}` changes the
  password (the sandbox's `wrong-credentials` break). `POST|PUT /_security/api_key` creates a key
  (`id`, `api_key`, `encoded`) for `Authorization: ApiKey base64(id:api_key)`; `DELETE
  /_security/api_key {"ids": [...]}` invalidates; `GET /_security/_authenticate`. Without `--password`
  security is off, and `/_security/*` is the real 500 "Security must be explicitly enabled ...".
  `--password` seeds the password on first start only (like ELASTIC_PASSWORD); after a change the stored
  one wins, also across restarts.
* Red cluster (sandbox-controlled, see below): searches and counts on red indices are 503
  `search_phase_execution_exception` "all shards failed" with empty `root_cause`/`failed_shards` (the
  body operators post from red clusters; no_shard_available_action_exception per shard); if only some
  searched indices are red the answer is 200 with `_shards.failed` and `failures`. A GET of a document is
  503 `no_shard_available_action_exception`. Writes wait up to `timeout` (default 1m, as real) for the
  primary, then fail per item with 503 `unavailable_shards_exception`. Red/yellow is shown by
  `_cluster/health`, `_cat/health` and the `health` column of `_cat/indices`.
* Garbage (bad JSON, duplicate keys, bad NDJSON, wrong types) is a 400 with an Elasticsearch error body;
  a route that does not exist is 400 `{"error": "no handler found for uri [...] and method [...]"}`, a
  wrong method 405 "Incorrect HTTP method ...". An unexpected bug is a 500 `exception` body, never a
  traceback on the wire.

Data (indices, documents, API keys, the password hash, the health colour) lives in
`<data-dir>/state.json`, rewritten atomically (temp file, fsync, rename) after every change, so a restart
after SIGKILL finds it.

Sandbox-only control routes (no real API exists for these; no auth, JSON bodies, 200 on success)
-----------------------------------------------------------------------------------------------
* `POST /_sandbox/health {"status": "green"|"yellow"|"red", "indices": [..]?}`: set the cluster colour;
  with `indices` only those indices are red (default: all). Persisted.
* `GET /_sandbox/ready`: 200 `{"ready": true}` once serving.

Sources: confirmed vs assumed
-----------------------------
Confirmed from source or public reports: the client side (read in the installed elasticsearch 8.19 /
elastic-transport 8.19), the 8.x media-type checks and wording (RestCompatibleVersionHelper, RestRequest
MediaTypeHeaderException, reports of "found 9"), 7.x answering `application/json; charset=UTF-8`.
From memory of the server source, not re-checked here: 408 for a timed-out health wait, the flat 406 /
405 / "no handler found" bodies, the security_exception wording, the red-cluster search body (empty
`root_cause`), `unavailable_shards_exception` for writes. Assumed: the 7.17 rejection wording (above).

What it does not do
-------------------
Text analysis is approximated (lowercase word tokens, no stemming); `term` on an unmapped string also
accepts the whole value (real dynamic mapping would only match a token, mapped `keyword` fields are
exact); `query_string` is a case-insensitive substring match per term (`field:term`, `+`/`-`, `AND`/
`OR`/`NOT`, `*` wildcards), not the Lucene grammar; scores are a constant 1.0. Documents are searchable at
once (as if every write had `refresh=true`). No aggregations, scroll/PIT/search_after, join
(`has_child`), nested, scripts, aliases, templates, mappings beyond remembering them, other media types
(YAML/CBOR/Smile), unknown-URL-parameter validation, `filter_path`, or multi-node behaviour; these answer
400 or are ignored, as listed in the code. Build hashes and dates in `GET /` are illustrative; number,
flavor, Lucene and wire-compatibility versions are the real ones for each release.
"""

from sandbox.standins.elasticsearch.protocol import VERSIONS, ServerVersion
from sandbox.standins.elasticsearch.server import Server, main, make_app, serve
from sandbox.standins.elasticsearch.storage import Store

__all__ = ["VERSIONS", "Server", "ServerVersion", "Store", "main", "make_app", "serve"]
