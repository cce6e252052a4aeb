/*
 * webhook.c - webhook records (petrelctl) and the dispatcher that POSTs
 * each tenant's events to its endpoints (see webhook.h).
 *
 * The dispatcher lives on the main loop and never blocks it: a timer
 * every WEBHOOK_POLL_MS re-reads the webhook records (one read
 * transaction), and for each webhook that has nothing in flight and whose
 * backoff has passed reads up to WEBHOOK_BATCH_MAX of its tenant's events
 * after its cursor (LMDB readers never wait for the writer). A batch goes
 * out on a fresh evhttp connection (host names resolved through dns.c,
 * https through bufferevent_openssl with peer verification); the answer
 * moves the in-memory cursor and, through a queue_exec() write, the
 * durable one. Memory is bounded: one batch per webhook, WEBHOOK_MAX
 * webhooks. Mail delivery shares nothing with it but the event loop.
 */
#include "autoconf.h"

#include <sys/queue.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>
#include <lmdb.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "dns.h"
#include "events.h"
#include "log.h"
#include "metrics.h"
#include "queue.h"
#include "store.h"
#include "util.h"
#include "webhook.h"

#define WEBHOOK_ID_LEN		14	/* "wh" + 12 base32 */
#define WEBHOOK_KEY_MAX		(2 + WEBHOOK_ID_LEN + 1)

/* one webhook in the dispatcher */
struct wh {
	TAILQ_ENTRY(wh)		 entry;
	char			 id[WEBHOOK_ID_LEN + 1];
	char			*tenant;
	char			*url;
	char			*secret;
	unsigned		 mask;
	uint64_t		 cursor;	/* acknowledged */
	uint64_t		 saved;		/* last durable write asked */
	int			 seen;		/* in the last reload */
	int			 deleted;	/* gone from the store */
	/* the request in flight */
	int			 busy;
	struct dns_req		*dreq;
	struct evhttp_connection *evcon;
	char			*body;		/* the batch */
	uint64_t		 batch_last;
	size_t			 batch_n;
	char			*host;		/* of url, no brackets */
	char			*pathq;		/* path[?query] */
	int			 port;
	int			 https;
	/* retries */
	unsigned		 failures;
	uint64_t		 next_ms;	/* monotonic: not before */
};
TAILQ_HEAD(whs, wh);

static struct {
	struct event_base	*base;
	struct queue		*queue;
	struct store		*store;
	struct dns		*dns;
	SSL_CTX			*ssl;
	struct event		*timer;
	struct whs		 list;
	int			 running;
	/* connections whose request ended: freed outside evhttp's
	 * callbacks, at the next tick (libevent does not free a connection
	 * that failed to connect, even with free_on_completion) */
	struct evhttp_connection **dead;
	size_t			 ndead, capdead;
} wd;

/* webhook_bury - free evcon later, outside any of its callbacks */
static void
webhook_bury(struct evhttp_connection *evcon)
{
	if (evcon == NULL)
		return;
	if (wd.ndead == wd.capdead) {
		wd.capdead = wd.capdead ? wd.capdead * 2 : 16;
		wd.dead = xrealloc(wd.dead, wd.capdead * sizeof(*wd.dead));
	}
	wd.dead[wd.ndead++] = evcon;
}

/* webhook_graveyard - free the buried connections */
static void
webhook_graveyard(void)
{
	size_t i;

	for (i = 0; i < wd.ndead; i++)
		evhttp_connection_free(wd.dead[i]);
	wd.ndead = 0;
}

/* --- records --- */

/* webhook_key - "w/ID" or "c/ID" */
static size_t
webhook_key(char *buf, char kind, const char *id)
{
	int n = snprintf(buf, WEBHOOK_KEY_MAX, "%c/%s", kind, id);

	return n > 0 && n < WEBHOOK_KEY_MAX ? (size_t)n : 0;
}

/* webhook_url_check - http(s)://host[:port][/path]; 0 or -1 with *err_r.
 * Out-params (may be NULL) get the parts, malloc'd. */
static int
webhook_url_parse(const char *url, int *https_r, char **host_r, int *port_r,
    char **pathq_r, const char **err_r)
{
	struct evhttp_uri *u;
	const char *scheme, *host, *path, *query;
	size_t i, len = strlen(url);
	int port, https;

	if (len == 0 || len > WEBHOOK_URL_MAX) {
		*err_r = "URL empty or too long";
		return -1;
	}
	for (i = 0; i < len; i++)
		if ((unsigned char)url[i] <= 0x20 || url[i] == 0x7f) {
			*err_r = "URL with spaces or control characters";
			return -1;
		}
	if ((u = evhttp_uri_parse_with_flags(url, 0)) == NULL) {
		*err_r = "malformed URL";
		return -1;
	}
	scheme = evhttp_uri_get_scheme(u);
	host = evhttp_uri_get_host(u);
	if (scheme == NULL || (strcasecmp(scheme, "http") != 0 &&
	    strcasecmp(scheme, "https") != 0)) {
		evhttp_uri_free(u);
		*err_r = "URL scheme must be http or https";
		return -1;
	}
	if (host == NULL || *host == '\0' || evhttp_uri_get_userinfo(u) !=
	    NULL || evhttp_uri_get_fragment(u) != NULL) {
		evhttp_uri_free(u);
		*err_r = "URL needs a host (and no user or fragment)";
		return -1;
	}
	https = strcasecmp(scheme, "https") == 0;
	port = evhttp_uri_get_port(u);
	if (port == 0 || port > 65535) {
		evhttp_uri_free(u);
		*err_r = "bad port in URL";
		return -1;
	}
	if (port < 0)
		port = https ? 443 : 80;
	if (https_r)
		*https_r = https;
	if (port_r)
		*port_r = port;
	if (host_r) {
		len = strlen(host);
		/* [IPv6] */
		if (len > 2 && host[0] == '[' && host[len - 1] == ']')
			*host_r = xstrndup(host + 1, len - 2);
		else
			*host_r = xstrdup(host);
	}
	if (pathq_r) {
		path = evhttp_uri_get_path(u);
		query = evhttp_uri_get_query(u);
		*pathq_r = xasprintf("%s%s%s", path && *path ? path : "/",
		    query ? "?" : "", query ? query : "");
	}
	evhttp_uri_free(u);
	return 0;
}

/* webhook_mask - the type mask of a record's "events" array */
static unsigned
webhook_mask(const json_t *rec)
{
	const json_t *v;
	unsigned mask = 0;
	size_t i;

	json_array_foreach(json_object_get(rec, "events"), i, v)
		mask |= events_type_bit(json_string_value(v));
	return mask;
}

/* webhook_get_cursor - the stored cursor of id inside txn, 0 if none */
static uint64_t
webhook_get_cursor(MDB_txn *txn, struct store *st, const char *id)
{
	char k[WEBHOOK_KEY_MAX], buf[24];
	MDB_val key, val;
	uint64_t v = 0;
	const char *err;

	key.mv_size = webhook_key(k, 'c', id);
	key.mv_data = k;
	if (key.mv_size == 0 ||
	    mdb_get(txn, store_dbi(st, DB_WEBHOOKS), &key, &val) != 0 ||
	    val.mv_size == 0 || val.mv_size >= sizeof(buf))
		return 0;
	memcpy(buf, val.mv_data, val.mv_size);
	buf[val.mv_size] = '\0';
	if (util_parse_uint(buf, 0, UINT64_MAX, &v, &err) == -1)
		return 0;
	return v;
}

/* webhook_put_cursor - store seq as id's cursor inside txn */
static int
webhook_put_cursor(MDB_txn *txn, struct store *st, const char *id,
    uint64_t seq)
{
	char k[WEBHOOK_KEY_MAX], buf[24];
	MDB_val key, val;

	key.mv_size = webhook_key(k, 'c', id);
	key.mv_data = k;
	val.mv_size = (size_t)snprintf(buf, sizeof(buf), "%llu",
	    (unsigned long long)seq);
	val.mv_data = buf;
	return mdb_put(txn, store_dbi(st, DB_WEBHOOKS), &key, &val, 0);
}

/* webhook_records - every "w/" record (array) inside txn */
static json_t *
webhook_records(MDB_txn *txn, struct store *st)
{
	MDB_cursor *cur;
	MDB_val key, val;
	json_t *arr = json_array(), *rec;
	int rc;

	if (mdb_cursor_open(txn, store_dbi(st, DB_WEBHOOKS), &cur) != 0)
		return arr;
	key.mv_size = 2;
	key.mv_data = (void *)"w/";
	for (rc = mdb_cursor_get(cur, &key, &val, MDB_SET_RANGE); rc == 0;
	    rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT)) {
		if (key.mv_size < 2 || memcmp(key.mv_data, "w/", 2) != 0)
			break;
		if ((rec = json_loadb(val.mv_data, val.mv_size, 0, NULL)) !=
		    NULL && json_is_object(rec))
			json_array_append_new(arr, rec);
		else if (rec != NULL)
			json_decref(rec);
	}
	mdb_cursor_close(cur);
	return arr;
}

int
webhook_add(struct store *st, const char *tenant, const char *url,
    const char *types, char **id_r, char **secret_r, char **err_r)
{
	unsigned char raw[WEBHOOK_SECRET_BYTES];
	char id[WEBHOOK_ID_LEN + 1], k[WEBHOOK_KEY_MAX], created[32];
	const char *why = NULL;
	json_t *rec, *evs, *all, *v;
	MDB_txn *txn;
	MDB_val key, val;
	unsigned mask;
	size_t i, n = 0;
	char *s, *secret;
	int rc;

	*id_r = *secret_r = *err_r = NULL;
	if (!store_tenant_exists(st, tenant)) {
		*err_r = xasprintf("no such tenant: %s", tenant);
		return -1;
	}
	if (webhook_url_parse(url, NULL, NULL, NULL, NULL, &why) == -1 ||
	    events_types_parse(types, &mask, &why) == -1) {
		*err_r = xstrdup(why);
		return -1;
	}
	evs = json_array();
	for (i = 0; i < 32; i++)
		if (mask & (1U << i)) {
			/* back to names, in the canonical order */
			static const char *names[] = { "queued", "delivered",
			    "deferred", "bounced", "suppressed", "rejected",
			    "opened", "clicked", "unsubscribed" };
			if (i < nitems(names))
				json_array_append_new(evs, json_string(names[i]));
		}
	util_random(raw, sizeof(raw));
	secret = util_b64_encode(raw, sizeof(raw));
	OPENSSL_cleanse(raw, sizeof(raw));
	memcpy(id, "wh", 2);
	util_random_id(id + 2, WEBHOOK_ID_LEN - 2);
	{
		time_t now = (time_t)util_now();
		struct tm tm;

		gmtime_r(&now, &tm);
		strftime(created, sizeof(created), "%Y-%m-%dT%H:%M:%SZ", &tm);
	}
	rec = json_pack("{s:s, s:s, s:s, s:o, s:s, s:s}", "id", id, "tenant",
	    tenant, "url", url, "events", evs, "secret", secret, "created",
	    created);
	if (rec == NULL)
		fatalx("webhook: json_pack failed");

	if ((rc = mdb_txn_begin(store_env(st), NULL, 0, &txn)) != 0) {
		*err_r = xasprintf("cannot write the store: %s",
		    mdb_strerror(rc));
		goto fail;
	}
	all = webhook_records(txn, st);
	json_array_foreach(all, i, v)
		if (strcmp(json_string_value(json_object_get(v, "tenant")) ?
		    json_string_value(json_object_get(v, "tenant")) : "",
		    tenant) == 0)
			n++;
	if (json_array_size(all) >= WEBHOOK_MAX ||
	    n >= WEBHOOK_PER_TENANT_MAX) {
		json_decref(all);
		mdb_txn_abort(txn);
		*err_r = xasprintf("too many webhooks (at most %d per tenant)",
		    WEBHOOK_PER_TENANT_MAX);
		goto fail;
	}
	json_decref(all);
	s = json_dumps(rec, JSON_COMPACT | JSON_PRESERVE_ORDER);
	key.mv_size = webhook_key(k, 'w', id);
	key.mv_data = k;
	val.mv_size = strlen(s);
	val.mv_data = s;
	rc = mdb_put(txn, store_dbi(st, DB_WEBHOOKS), &key, &val,
	    MDB_NOOVERWRITE);
	OPENSSL_cleanse(s, strlen(s));
	free(s);
	/* from now on: the newest event is acknowledged already */
	if (rc == 0) {
		MDB_cursor *cur;
		MDB_val ek, ev;
		uint64_t last = 0;
		int b;

		if ((rc = mdb_cursor_open(txn, store_dbi(st, DB_EVENTS),
		    &cur)) == 0) {
			if (mdb_cursor_get(cur, &ek, &ev, MDB_LAST) == 0 &&
			    ek.mv_size == 8)
				for (b = 0; b < 8; b++)
					last = last << 8 |
					    ((unsigned char *)ek.mv_data)[b];
			mdb_cursor_close(cur);
			rc = webhook_put_cursor(txn, st, id, last);
		}
	}
	if (rc != 0 || (rc = mdb_txn_commit(txn)) != 0) {
		if (rc != 0)
			mdb_txn_abort(txn);
		*err_r = xasprintf("cannot add the webhook: %s",
		    mdb_strerror(rc));
		goto fail;
	}
	json_decref(rec);
	*id_r = xstrdup(id);
	*secret_r = secret;
	return 0;
fail:
	json_decref(rec);
	OPENSSL_cleanse(secret, strlen(secret));
	free(secret);
	return -1;
}

json_t *
webhook_list(struct store *st, const char *tenant)
{
	MDB_txn *txn;
	json_t *all, *out = json_array(), *v;
	const char *t, *id;
	size_t i;

	if (mdb_txn_begin(store_env(st), NULL, MDB_RDONLY, &txn) != 0)
		return out;
	all = webhook_records(txn, st);
	json_array_foreach(all, i, v) {
		t = json_string_value(json_object_get(v, "tenant"));
		id = json_string_value(json_object_get(v, "id"));
		if (t == NULL || id == NULL ||
		    (tenant != NULL && strcmp(t, tenant) != 0))
			continue;
		json_object_del(v, "secret");
		json_object_set_new(v, "cursor", json_integer((json_int_t)
		    webhook_get_cursor(txn, st, id)));
		json_array_append(out, v);
	}
	json_decref(all);
	mdb_txn_abort(txn);
	return out;
}

/* webhook_del_txn - inside txn, webhook id's record and its cursor (which
 * may not exist yet); 0 or an LMDB error */
static int
webhook_del_txn(MDB_txn *txn, struct store *st, const char *id)
{
	char k[WEBHOOK_KEY_MAX];
	MDB_val key;
	int rc;

	key.mv_size = webhook_key(k, 'w', id);
	key.mv_data = k;
	if ((rc = mdb_del(txn, store_dbi(st, DB_WEBHOOKS), &key, NULL)) != 0)
		return rc;
	key.mv_size = webhook_key(k, 'c', id);
	key.mv_data = k;
	rc = mdb_del(txn, store_dbi(st, DB_WEBHOOKS), &key, NULL);
	return rc == MDB_NOTFOUND ? 0 : rc;
}

int
webhook_del(struct store *st, const char *tenant, const char *id,
    char **err_r)
{
	char k[WEBHOOK_KEY_MAX];
	MDB_txn *txn;
	MDB_val key, val;
	json_t *rec;
	const char *t;
	int rc;

	*err_r = NULL;
	if ((key.mv_size = webhook_key(k, 'w', id)) == 0 ||
	    strlen(id) != WEBHOOK_ID_LEN) {
		*err_r = xasprintf("no such webhook: %s", id);
		return -1;
	}
	key.mv_data = k;
	if ((rc = mdb_txn_begin(store_env(st), NULL, 0, &txn)) != 0) {
		*err_r = xasprintf("cannot write the store: %s",
		    mdb_strerror(rc));
		return -1;
	}
	if (mdb_get(txn, store_dbi(st, DB_WEBHOOKS), &key, &val) != 0 ||
	    (rec = json_loadb(val.mv_data, val.mv_size, 0, NULL)) == NULL) {
		mdb_txn_abort(txn);
		*err_r = xasprintf("no such webhook: %s", id);
		return -1;
	}
	t = json_string_value(json_object_get(rec, "tenant"));
	if (t == NULL || strcmp(t, tenant) != 0) {
		json_decref(rec);
		mdb_txn_abort(txn);
		*err_r = xasprintf("no such webhook for tenant %s: %s", tenant,
		    id);
		return -1;
	}
	json_decref(rec);
	rc = webhook_del_txn(txn, st, id);
	if (rc != 0 || (rc = mdb_txn_commit(txn)) != 0) {
		if (rc != 0)
			mdb_txn_abort(txn);
		*err_r = xasprintf("cannot delete the webhook: %s",
		    mdb_strerror(rc));
		return -1;
	}
	return 0;
}

int
webhook_tenant_purge_txn(MDB_txn *txn, struct store *st, const char *tenant,
    int *n_r, char **err_r)
{
	json_t *all = webhook_records(txn, st), *v;
	const char *id, *t;
	size_t i;
	int rc = 0;

	*n_r = 0;
	json_array_foreach(all, i, v) {
		id = json_string_value(json_object_get(v, "id"));
		t = json_string_value(json_object_get(v, "tenant"));
		if (id == NULL || t == NULL || strcmp(t, tenant) != 0)
			continue;
		if ((rc = webhook_del_txn(txn, st, id)) != 0)
			break;
		(*n_r)++;
	}
	json_decref(all);
	if (rc != 0) {
		*err_r = xasprintf("cannot delete the webhooks: %s",
		    mdb_strerror(rc));
		return -1;
	}
	return 0;
}

json_t *
webhook_cursors_txn(MDB_txn *txn, struct store *st)
{
	json_t *all = webhook_records(txn, st), *out = json_array(), *v, *o;
	const char *id;
	size_t i;

	json_array_foreach(all, i, v) {
		if ((id = json_string_value(json_object_get(v, "id"))) == NULL)
			continue;
		o = json_pack("{s:O, s:I, s:I}", "tenant",
		    json_object_get(v, "tenant"), "mask",
		    (json_int_t)webhook_mask(v), "cursor", (json_int_t)
		    webhook_get_cursor(txn, st, id));
		if (o != NULL)
			json_array_append_new(out, o);
	}
	json_decref(all);
	return out;
}

int
webhook_unacked(const json_t *cursors, const char *tenant, const char *type,
    uint64_t seq)
{
	const json_t *v;
	const char *t;
	unsigned mask;
	size_t i;

	json_array_foreach(cursors, i, v) {
		t = json_string_value(json_object_get(v, "tenant"));
		mask = (unsigned)json_integer_value(json_object_get(v, "mask"));
		if (t == NULL || strcmp(t, tenant) != 0)
			continue;
		if (mask != 0 && (events_type_bit(type) & mask) == 0)
			continue;
		if (seq > (uint64_t)json_integer_value(json_object_get(v,
		    "cursor")))
			return 1;
	}
	return 0;
}

/* --- dispatcher --- */

struct webhook_cur {
	char		id[WEBHOOK_ID_LEN + 1];
	uint64_t	seq;
};

/* webhook_cursor_fn - writer: move id's cursor forward to seq (a deleted
 * webhook's stays deleted) */
static int
webhook_cursor_fn(MDB_txn *txn, struct store *st, void *arg)
{
	struct webhook_cur *c = arg;
	char k[WEBHOOK_KEY_MAX];
	MDB_val key, val;

	key.mv_size = webhook_key(k, 'w', c->id);
	key.mv_data = k;
	if (mdb_get(txn, store_dbi(st, DB_WEBHOOKS), &key, &val) != 0)
		return 0;
	if (webhook_get_cursor(txn, st, c->id) >= c->seq)
		return 0;
	return webhook_put_cursor(txn, st, c->id, c->seq);
}

/* webhook_save - make w's cursor durable */
static void
webhook_save(struct wh *w)
{
	struct webhook_cur *c;

	if (w->cursor <= w->saved || wd.queue == NULL)
		return;
	c = xcalloc(1, sizeof(*c));
	memcpy(c->id, w->id, sizeof(c->id));
	c->seq = w->cursor;
	w->saved = w->cursor;
	queue_exec(wd.queue, webhook_cursor_fn, free, c, NULL, NULL);
}

/* webhook_wh_free - forget w (nothing in flight) */
static void
webhook_wh_free(struct wh *w)
{
	if (w->dreq != NULL)
		dns_cancel(w->dreq);
	if (w->evcon != NULL)
		evhttp_connection_free(w->evcon);
	free(w->tenant);
	free(w->url);
	if (w->secret != NULL) {
		OPENSSL_cleanse(w->secret, strlen(w->secret));
		free(w->secret);
	}
	free(w->body);
	free(w->host);
	free(w->pathq);
	free(w);
}

/* webhook_find - the dispatcher's webhook id */
static struct wh *
webhook_find(const char *id)
{
	struct wh *w;

	TAILQ_FOREACH(w, &wd.list, entry)
		if (strcmp(w->id, id) == 0)
			return w;
	return NULL;
}

/* webhook_reload - bring the list in line with the store */
static void
webhook_reload(void)
{
	MDB_txn *txn;
	json_t *all, *v;
	struct wh *w, *next;
	const char *id, *tenant, *url, *secret;
	size_t i;

	if (mdb_txn_begin(store_env(wd.store), NULL, MDB_RDONLY, &txn) != 0)
		return;
	TAILQ_FOREACH(w, &wd.list, entry)
		w->seen = 0;
	all = webhook_records(txn, wd.store);
	json_array_foreach(all, i, v) {
		id = json_string_value(json_object_get(v, "id"));
		tenant = json_string_value(json_object_get(v, "tenant"));
		url = json_string_value(json_object_get(v, "url"));
		secret = json_string_value(json_object_get(v, "secret"));
		if (id == NULL || strlen(id) != WEBHOOK_ID_LEN ||
		    tenant == NULL || url == NULL || secret == NULL)
			continue;
		if ((w = webhook_find(id)) != NULL && w->deleted)
			continue;	/* re-added while its request ended */
		if (w == NULL) {
			w = xcalloc(1, sizeof(*w));
			memcpy(w->id, id, WEBHOOK_ID_LEN + 1);
			w->tenant = xstrdup(tenant);
			w->url = xstrdup(url);
			w->secret = xstrdup(secret);
			w->cursor = w->saved = webhook_get_cursor(txn,
			    wd.store, id);
			TAILQ_INSERT_TAIL(&wd.list, w, entry);
			log_info("event=webhook_load id=%s tenant=%s cursor=%llu",
			    w->id, w->tenant, (unsigned long long)w->cursor);
		}
		w->mask = webhook_mask(v);
		w->seen = 1;
	}
	json_decref(all);
	mdb_txn_abort(txn);
	for (w = TAILQ_FIRST(&wd.list); w != NULL; w = next) {
		next = TAILQ_NEXT(w, entry);
		if (w->seen)
			continue;
		if (w->deleted)
			continue;
		log_info("event=webhook_unload id=%s tenant=%s", w->id,
		    w->tenant);
		if (w->busy)
			w->deleted = 1;	/* freed when its request ends */
		else {
			TAILQ_REMOVE(&wd.list, w, entry);
			webhook_wh_free(w);
		}
	}
}

/* webhook_done - the batch of w ended: ok 1 acknowledged */
static void
webhook_done(struct wh *w, int ok, int status, const char *why)
{
	unsigned shift;

	w->busy = 0;
	webhook_bury(w->evcon);
	w->evcon = NULL;
	w->dreq = NULL;
	free(w->body);
	w->body = NULL;
	if (w->deleted) {
		TAILQ_REMOVE(&wd.list, w, entry);
		webhook_wh_free(w);
		return;
	}
	if (ok) {
		log_info("event=webhook id=%s tenant=%s status=%d events=%zu "
		    "last=%llu", w->id, w->tenant, status, w->batch_n,
		    (unsigned long long)w->batch_last);
		w->cursor = w->batch_last;
		w->failures = 0;
		w->next_ms = 0;
		webhook_save(w);
		return;
	}
	w->failures++;
	shift = w->failures - 1 > 9 ? 9 : w->failures - 1;
	w->next_ms = util_now_ms() + 1000ULL * ((1U << shift) >
	    WEBHOOK_BACKOFF_MAX ? WEBHOOK_BACKOFF_MAX : (1U << shift));
	log_warn("event=webhook id=%s tenant=%s status=failed code=%d "
	    "reason=\"%s\" failures=%u retry_in=%llums", w->id, w->tenant,
	    status, why, w->failures,
	    (unsigned long long)(w->next_ms - util_now_ms()));
}

/* webhook_response - evhttp: the endpoint answered, or the request
 * failed (req NULL or code 0) */
static void
webhook_response(struct evhttp_request *req, void *arg)
{
	struct wh *w = arg;
	int code = req != NULL ? evhttp_request_get_response_code(req) : 0;

	if (code >= 200 && code <= 299)
		webhook_done(w, 1, code, "");
	else
		webhook_done(w, 0, code, code == 0 ? "no answer (connection "
		    "failed or timed out)" : "endpoint answered non-2xx");
}

/* webhook_sign - hex HMAC-SHA256(secret, ts "." body) into out (65) */
static void
webhook_sign(const char *secret, const char *ts, const char *body,
    char out[65])
{
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int maclen = 0;
	size_t tl = strlen(ts), bl = strlen(body);
	char *msg = xmalloc(tl + 1 + bl);

	memcpy(msg, ts, tl);
	msg[tl] = '.';
	memcpy(msg + tl + 1, body, bl);
	if (HMAC(EVP_sha256(), secret, (int)strlen(secret),
	    (unsigned char *)msg, tl + 1 + bl, mac, &maclen) == NULL ||
	    maclen != 32)
		fatalx("webhook: HMAC failed");
	free(msg);
	util_hex(mac, 32, out);
}

/* webhook_post - send w's batch to addr (numeric) */
static void
webhook_post(struct wh *w, const char *addr)
{
	struct evhttp_request *req;
	struct evkeyvalq *oh;
	struct bufferevent *bev = NULL;
	SSL *ssl = NULL;
	char ts[24], sig[65], sighdr[80], hosthdr[DNS_NAME_MAX + 16];
	unsigned char tmp[16];
	int literal;

	literal = inet_pton(AF_INET, w->host, tmp) == 1 ||
	    inet_pton(AF_INET6, w->host, tmp) == 1;
	if (w->https) {
		if ((ssl = SSL_new(wd.ssl)) == NULL) {
			webhook_done(w, 0, 0, "cannot create a TLS session");
			return;
		}
		if (!literal) {
			SSL_set_tlsext_host_name(ssl, w->host);
			SSL_set1_host(ssl, w->host);
		} else
			X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl),
			    w->host);
		bev = bufferevent_openssl_socket_new(wd.base, -1, ssl,
		    BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE |
		    BEV_OPT_DEFER_CALLBACKS);
		if (bev == NULL) {
			SSL_free(ssl);
			webhook_done(w, 0, 0, "cannot create a TLS session");
			return;
		}
		bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
		w->evcon = evhttp_connection_base_bufferevent_new(wd.base, NULL,
		    bev, addr, (unsigned short)w->port);
	} else
		w->evcon = evhttp_connection_base_new(wd.base, NULL, addr,
		    (unsigned short)w->port);
	if (w->evcon == NULL) {
		if (bev != NULL)
			bufferevent_free(bev);
		webhook_done(w, 0, 0, "cannot create a connection");
		return;
	}
	evhttp_connection_set_timeout(w->evcon, WEBHOOK_TIMEOUT);
	evhttp_connection_set_retries(w->evcon, 0);
	if ((req = evhttp_request_new(webhook_response, w)) == NULL)
		fatalx("webhook: evhttp_request_new failed");
	snprintf(ts, sizeof(ts), "%lld", (long long)util_now());
	webhook_sign(w->secret, ts, w->body, sig);
	snprintf(sighdr, sizeof(sighdr), "sha256=%s", sig);
	if (strchr(w->host, ':') != NULL)
		snprintf(hosthdr, sizeof(hosthdr), "[%s]:%d", w->host, w->port);
	else
		snprintf(hosthdr, sizeof(hosthdr), "%s:%d", w->host, w->port);
	oh = evhttp_request_get_output_headers(req);
	evhttp_add_header(oh, "Host", hosthdr);
	evhttp_add_header(oh, "User-Agent", "Petrel-Webhook/" PACKAGE_VERSION);
	evhttp_add_header(oh, "Content-Type", "application/json");
	evhttp_add_header(oh, "Connection", "close");
	evhttp_add_header(oh, "X-Petrel-Webhook-Id", w->id);
	evhttp_add_header(oh, "X-Petrel-Timestamp", ts);
	evhttp_add_header(oh, "X-Petrel-Signature", sighdr);
	evbuffer_add(evhttp_request_get_output_buffer(req), w->body,
	    strlen(w->body));
	if (evhttp_make_request(w->evcon, req, EVHTTP_REQ_POST, w->pathq) !=
	    0) {
		/* the request is freed by evhttp on failure */
		webhook_done(w, 0, 0, "cannot send the request");
		return;
	}
}

/* webhook_dns_done - the endpoint's address */
static void
webhook_dns_done(const struct dns_mx_result *r, void *arg)
{
	struct wh *w = arg;
	char addr[INET6_ADDRSTRLEN];
	const struct sockaddr_storage *ss;

	w->dreq = NULL;
	if (r->status != DNS_OK || r->nhosts == 0 ||
	    r->hosts[0].naddrs == 0) {
		webhook_done(w, 0, 0, r->error ? r->error :
		    "endpoint host name does not resolve");
		return;
	}
	ss = &r->hosts[0].addrs[0];
	if (ss->ss_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr,
		    addr, sizeof(addr));
	else
		inet_ntop(AF_INET6,
		    &((const struct sockaddr_in6 *)ss)->sin6_addr, addr,
		    sizeof(addr));
	webhook_post(w, addr);
}

/* webhook_kick - if w is idle and due, send its next batch */
static void
webhook_kick(struct wh *w, uint64_t now_ms)
{
	const char *why = NULL;
	unsigned char tmp[16];
	json_t *evs;
	uint64_t next;

	if (w->busy || w->deleted || now_ms < w->next_ms)
		return;
	evs = events_list(wd.store, w->tenant, w->cursor, WEBHOOK_BATCH_MAX,
	    w->mask, &next);
	if (json_array_size(evs) == 0) {
		json_decref(evs);
		if (next > w->cursor) {
			/* only events the webhook does not want */
			w->cursor = next;
			webhook_save(w);
		}
		return;
	}
	free(w->host);
	free(w->pathq);
	w->host = w->pathq = NULL;
	if (webhook_url_parse(w->url, &w->https, &w->host, &w->port, &w->pathq,
	    &why) == -1) {
		json_decref(evs);
		w->busy = 1;
		webhook_done(w, 0, 0, why);
		return;
	}
	w->batch_n = json_array_size(evs);
	w->batch_last = next;
	if ((w->body = json_dumps(evs, JSON_COMPACT | JSON_PRESERVE_ORDER)) ==
	    NULL)
		fatalx("webhook: json_dumps failed");
	json_decref(evs);
	w->busy = 1;
	if (inet_pton(AF_INET, w->host, tmp) == 1 ||
	    inet_pton(AF_INET6, w->host, tmp) == 1) {
		webhook_post(w, w->host);
		return;
	}
	if (wd.dns == NULL) {
		webhook_done(w, 0, 0, "no resolver");
		return;
	}
	w->dreq = dns_a(wd.dns, w->host, webhook_dns_done, w);
}

/* webhook_tick - timer: reload, send what is due */
static void
webhook_tick(evutil_socket_t fd, short what, void *arg)
{
	struct timeval tv = { 0, WEBHOOK_POLL_MS * 1000 };
	struct wh *w, *next;
	uint64_t now = util_now_ms();

	(void)fd;
	(void)what;
	(void)arg;
	webhook_graveyard();
	webhook_reload();
	for (w = TAILQ_FIRST(&wd.list); w != NULL; w = next) {
		next = TAILQ_NEXT(w, entry);
		webhook_kick(w, now);
	}
	evtimer_add(wd.timer, &tv);
}

/* webhook_backlog - gauge: events not yet acknowledged, all webhooks */
static double
webhook_backlog(void *arg)
{
	struct wh *w;
	double n = 0;

	(void)arg;
	TAILQ_FOREACH(w, &wd.list, entry)
		if (!w->deleted)
			n += (double)events_count_after(wd.store, w->tenant, w->cursor,
		    w->mask, WEBHOOK_BACKLOG_SCAN);
	return n;
}

int
webhook_start(struct event_base *base, struct queue *q, struct store *st,
    struct dns *dns, const char *ca_file, char **err_r)
{
	struct timeval tv = { 0, WEBHOOK_POLL_MS * 1000 };

	*err_r = NULL;
	memset(&wd, 0, sizeof(wd));
	TAILQ_INIT(&wd.list);
	wd.base = base;
	wd.queue = q;
	wd.store = st;
	wd.dns = dns;
	if ((wd.ssl = SSL_CTX_new(TLS_client_method())) == NULL) {
		*err_r = xstrdup("cannot create the webhook TLS context");
		return -1;
	}
	SSL_CTX_set_min_proto_version(wd.ssl, TLS1_2_VERSION);
	SSL_CTX_set_verify(wd.ssl, SSL_VERIFY_PEER, NULL);
	if (ca_file != NULL ? SSL_CTX_load_verify_locations(wd.ssl, ca_file,
	    NULL) != 1 : SSL_CTX_set_default_verify_paths(wd.ssl) != 1) {
		*err_r = xasprintf("webhook_ca_file %s: cannot load",
		    ca_file ? ca_file : "(system)");
		SSL_CTX_free(wd.ssl);
		wd.ssl = NULL;
		return -1;
	}
	if ((wd.timer = evtimer_new(base, webhook_tick, NULL)) == NULL)
		fatalx("webhook: evtimer_new failed");
	evtimer_add(wd.timer, &tv);
	metrics_register_gauge("petrel_webhook_backlog", "Events not yet "
	    "acknowledged by webhook endpoints, summed over webhooks.",
	    webhook_backlog, NULL);
	wd.running = 1;
	return 0;
}

void
webhook_stop(void)
{
	struct wh *w;

	if (!wd.running)
		return;
	metrics_register_gauge("petrel_webhook_backlog", "Events not yet "
	    "acknowledged by webhook endpoints, summed over webhooks.", NULL,
	    NULL);
	event_free(wd.timer);
	while ((w = TAILQ_FIRST(&wd.list)) != NULL) {
		TAILQ_REMOVE(&wd.list, w, entry);
		webhook_wh_free(w);
	}
	webhook_graveyard();
	free(wd.dead);
	SSL_CTX_free(wd.ssl);
	memset(&wd, 0, sizeof(wd));
}
