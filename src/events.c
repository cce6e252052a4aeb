/*
 * events.c - the delivery event log (see events.h): records appended by
 * the store-writer thread inside the transactions of the changes they
 * describe, a per-tenant index for GET /events and webhooks, the request
 * log line of each event, petrelctl log search, and retention pruning.
 *
 * The writer keeps the last sequence number in memory (loaded from the
 * last key of the events database on first use). Events appended in a
 * transaction that then aborts give their numbers back
 * (events_txn_end(0)), so the sequence has no holes and always grows:
 * pruning never removes the newest event, so a restart continues after it
 * even when everything older has expired.
 */
#include "autoconf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <event2/event.h>
#include <jansson.h>
#include <lmdb.h>

#include "events.h"
#include "log.h"
#include "queue.h"
#include "store.h"
#include "util.h"
#include "webhook.h"

#define EVENTS_KEY_LEN		8
#define EVENTS_TENANT_MAX	64
#define EVENTS_IDX_KEY_MAX	(EVENTS_TENANT_MAX + 1 + EVENTS_KEY_LEN)
#define EVENTS_LOGVAL_MAX	256

static const char *events_types[] = {
	"queued", "delivered", "deferred", "bounced", "suppressed",
	"rejected", "opened", "clicked", "unsubscribed",
};

/* writer thread only: the sequence and the log lines of the open txn */
static uint64_t	 ev_seq;
static int	 ev_seq_loaded;
static int	 ev_in_txn;
static uint64_t	 ev_seq_begin;
static char	**ev_lines;
static size_t	 ev_nlines, ev_caplines;

/* main thread: the prune timer */
static struct event	*ev_prune_timer;
static struct queue	*ev_queue;
static struct store	*ev_store;
static long		 ev_retention;
static int		 ev_prune_busy;

int
events_type_valid(const char *type)
{
	return events_type_bit(type) != 0 ? 0 : -1;
}

unsigned
events_type_bit(const char *type)
{
	size_t i;

	if (type == NULL)
		return 0;
	for (i = 0; i < nitems(events_types); i++)
		if (strcmp(type, events_types[i]) == 0)
			return 1U << i;
	return 0;
}

int
events_types_parse(const char *csv, unsigned *mask_r, const char **err_r)
{
	char *s, *tok, *save = NULL;
	unsigned mask = 0, b;

	*mask_r = 0;
	if (csv == NULL || *csv == '\0')
		return 0;
	s = xstrdup(csv);
	for (tok = strtok_r(s, ",", &save); tok != NULL;
	    tok = strtok_r(NULL, ",", &save)) {
		tok = util_trim(tok);
		if (*tok == '\0')
			continue;
		if ((b = events_type_bit(tok)) == 0) {
			free(s);
			*err_r = "unknown event type (queued, delivered, "
			    "deferred, bounced, suppressed, rejected, opened, "
			    "clicked, unsubscribed)";
			return -1;
		}
		mask |= b;
	}
	free(s);
	*mask_r = mask;
	return 0;
}

/* events_key - the 8-byte big-endian key of seq */
static void
events_key(unsigned char k[EVENTS_KEY_LEN], uint64_t seq)
{
	int b;

	for (b = 0; b < EVENTS_KEY_LEN; b++)
		k[b] = (unsigned char)(seq >> (56 - 8 * b));
}

/* events_key_seq - the sequence of an 8-byte key */
static uint64_t
events_key_seq(const unsigned char *k)
{
	uint64_t v = 0;
	int b;

	for (b = 0; b < EVENTS_KEY_LEN; b++)
		v = v << 8 | k[b];
	return v;
}

/* events_idx_key - tenant NUL seq; its length, 0 when tenant is too long */
static size_t
events_idx_key(unsigned char *k, const char *tenant, uint64_t seq)
{
	size_t tl = strlen(tenant);

	if (tl > EVENTS_TENANT_MAX)
		return 0;
	memcpy(k, tenant, tl);
	k[tl] = '\0';
	events_key(k + tl + 1, seq);
	return tl + 1 + EVENTS_KEY_LEN;
}

json_t *
events_jstr(const char *s)
{
	json_t *j;
	char *c;
	size_t i;

	if (s == NULL)
		return json_null();
	if ((j = json_string(s)) != NULL)
		return j;
	c = xstrdup(s);
	for (i = 0; c[i] != '\0'; i++)
		if ((unsigned char)c[i] >= 0x80)
			c[i] = '?';
	if ((j = json_string(c)) == NULL)
		fatalx("events: json_string failed");
	free(c);
	return j;
}

/* events_str - string member of o, or "" */
static const char *
events_str(const json_t *o, const char *key)
{
	const char *s = json_string_value(json_object_get(o, key));

	return s != NULL ? s : "";
}

/* events_logval - a value for a key=value log field: no spaces, quotes,
 * controls or backslashes; "-" when empty */
static void
events_logval(const char *in, char *out, size_t outlen)
{
	size_t i;

	if (in == NULL || *in == '\0') {
		util_strlcpy(out, "-", outlen);
		return;
	}
	for (i = 0; in[i] != '\0' && i + 1 < outlen; i++) {
		unsigned char c = (unsigned char)in[i];

		out[i] = (c <= 0x20 || c == 0x7f || c == '"' || c == '\\') ?
		    '?' : (char)c;
	}
	out[i] = '\0';
}

/* events_time - RFC 3339 UTC with milliseconds */
static void
events_time(char *buf, size_t len)
{
	struct timespec ts;
	struct tm tm;
	char tmp[32];
	int ms;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(tmp, sizeof(tmp), "%Y-%m-%dT%H:%M:%S", &tm);
	ms = (int)(ts.tv_nsec / 1000000) % 1000;
	if (snprintf(buf, len, "%.20s.%03dZ", tmp, ms) >= (int)len)
		fatalx("events: time buffer too small");
}

/* events_time_parse - unix seconds of an events_time string, -1 if bad */
static int64_t
events_time_parse(const char *s)
{
	struct tm tm;
	int y, mo, d, h, mi, se;

	if (s == NULL || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d", &y, &mo, &d,
	    &h, &mi, &se) != 6)
		return -1;
	memset(&tm, 0, sizeof(tm));
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_sec = se;
	return (int64_t)timegm(&tm);
}

/* events_category - the bounce category of a failed attempt, from its
 * enhanced status code (the same classes as metrics.c) */
static const char *
events_category(const char *type, const char *enh)
{
	int c, s, d;

	if (enh == NULL || sscanf(enh, "%d.%d.%d", &c, &s, &d) != 3)
		return strcmp(type, "bounced") == 0 ? "hard" : "soft";
	if (s == 4 && d == 7)
		return "expired";
	if (s == 2 && d == 2)
		return "mailbox_full";
	if (s == 7 && (d == 4 || d == 5 || d == 10))
		return "tls";
	if (s == 7)
		return "policy";
	if ((s == 4 && (d == 3 || d == 4)) || (s == 1 && d == 2))
		return "dns";
	if (strcmp(type, "bounced") == 0 || c == 5)
		return "hard";
	return "soft";
}

/* events_logline - the request log line of ev */
static char *
events_logline(const json_t *ev)
{
	const json_t *det = json_object_get(ev, "details");
	char qid[EVENTS_LOGVAL_MAX], mid[EVENTS_LOGVAL_MAX],
	    ten[EVENTS_LOGVAL_MAX], rcpt[EVENTS_LOGVAL_MAX],
	    relay[EVENTS_LOGVAL_MAX], reply[EVENTS_LOGVAL_MAX + 64],
	    reason[EVENTS_LOGVAL_MAX + 64], *text, *p;
	const char *type = events_str(ev, "type");
	json_int_t code;

	events_logval(events_str(ev, "qid"), qid, sizeof(qid));
	events_logval(events_str(ev, "message_id"), mid, sizeof(mid));
	events_logval(events_str(ev, "tenant"), ten, sizeof(ten));
	events_logval(events_str(ev, "recipient"), rcpt, sizeof(rcpt));
	reply[0] = reason[0] = '\0';
	code = json_integer_value(json_object_get(det, "code"));
	if (json_object_get(det, "text") != NULL ||
	    json_object_get(det, "reason") != NULL) {
		text = util_sanitize(json_object_get(det, "text") ?
		    events_str(det, "text") : events_str(det, "reason"), 200);
		for (p = text; *p != '\0'; p++)
			if (*p == '"' || *p == '\\')
				*p = '?';
		snprintf(reply, sizeof(reply), " reply=\"%lld%s%s %s\"",
		    (long long)code, *events_str(det, "enhanced") ? " " : "",
		    events_str(det, "enhanced"), text);
		free(text);
	}
	if (json_object_get(det, "relay") != NULL) {
		events_logval(events_str(det, "relay"), relay, sizeof(relay));
		snprintf(reason, sizeof(reason), " relay=%s attempts=%lld",
		    relay, (long long)json_integer_value(json_object_get(det,
		    "attempts")));
	}
	return xasprintf("event=%s id=%s qid=%s message_id=%s tenant=%s "
	    "rcpt=%s result=%s%s%s", type, events_str(ev, "id"), qid, mid,
	    ten, rcpt, type, reason, reply);
}

/* events_next_seq - the next sequence number inside txn (writer) */
static int
events_next_seq(MDB_txn *txn, struct store *st, uint64_t *seq_r)
{
	MDB_cursor *cur;
	MDB_val key, val;
	int rc;

	if (!ev_seq_loaded) {
		if ((rc = mdb_cursor_open(txn, store_dbi(st, DB_EVENTS),
		    &cur)) != 0)
			return rc;
		rc = mdb_cursor_get(cur, &key, &val, MDB_LAST);
		mdb_cursor_close(cur);
		if (rc == 0 && key.mv_size == EVENTS_KEY_LEN)
			ev_seq = events_key_seq(key.mv_data);
		else if (rc != 0 && rc != MDB_NOTFOUND)
			return rc;
		ev_seq_loaded = 1;
	}
	if (!ev_in_txn) {
		ev_in_txn = 1;
		ev_seq_begin = ev_seq;
	}
	*seq_r = ++ev_seq;
	return 0;
}

int
events_append_txn(MDB_txn *txn, struct store *st, json_t *ev)
{
	unsigned char k[EVENTS_KEY_LEN], ik[EVENTS_IDX_KEY_MAX];
	char idbuf[24], tbuf[40];
	const char *tenant, *type;
	MDB_val key, val;
	size_t iklen;
	uint64_t seq;
	char *s;
	int rc;

	tenant = events_str(ev, "tenant");
	type = events_str(ev, "type");
	if ((rc = events_next_seq(txn, st, &seq)) != 0)
		return rc;
	snprintf(idbuf, sizeof(idbuf), "%llu", (unsigned long long)seq);
	events_time(tbuf, sizeof(tbuf));
	json_object_set_new(ev, "id", json_string(idbuf));
	json_object_set_new(ev, "time", json_string(tbuf));
	if ((s = json_dumps(ev, JSON_COMPACT | JSON_PRESERVE_ORDER)) == NULL)
		fatalx("events: json_dumps failed");
	events_key(k, seq);
	key.mv_size = sizeof(k);
	key.mv_data = k;
	val.mv_size = strlen(s);
	val.mv_data = s;
	rc = mdb_put(txn, store_dbi(st, DB_EVENTS), &key, &val, MDB_APPEND);
	free(s);
	if (rc != 0)
		return rc;
	if ((iklen = events_idx_key(ik, tenant, seq)) > 0) {
		key.mv_size = iklen;
		key.mv_data = ik;
		val.mv_size = strlen(type);
		val.mv_data = (void *)type;
		if ((rc = mdb_put(txn, store_dbi(st, DB_EVENTIDX), &key, &val,
		    0)) != 0)
			return rc;
	}
	if (log_verbosity >= LOG_LVL_INFO) {
		if (ev_nlines == ev_caplines) {
			ev_caplines = ev_caplines ? ev_caplines * 2 : 64;
			ev_lines = xrealloc(ev_lines, ev_caplines *
			    sizeof(*ev_lines));
		}
		ev_lines[ev_nlines++] = events_logline(ev);
	}
	return 0;
}

void
events_txn_end(int committed)
{
	size_t i;

	if (!committed && ev_in_txn)
		ev_seq = ev_seq_begin;
	ev_in_txn = 0;
	for (i = 0; i < ev_nlines; i++) {
		if (committed)
			log_info("%s", ev_lines[i]);
		free(ev_lines[i]);
	}
	ev_nlines = 0;
}

/* events_new - an event object without id and time */
static json_t *
events_new(const char *type, const char *tenant, const char *qid,
    const char *message_id, const char *rcpt, json_t *details)
{
	json_t *ev;

	ev = json_pack("{s:n, s:n, s:s, s:o, s:o, s:o, s:o, s:o}",
	    "id", "time", "type", type,
	    "tenant", events_jstr(tenant ? tenant : ""),
	    "qid", qid ? events_jstr(qid) : json_null(),
	    "message_id", message_id ? events_jstr(message_id) : json_null(),
	    "recipient", rcpt ? events_jstr(rcpt) : json_null(),
	    "details", details ? details : json_object());
	if (ev == NULL)
		fatalx("events: json_pack failed");
	return ev;
}

int
events_queued_txn(MDB_txn *txn, struct store *st, const json_t *msg,
    const char *const *rcpts, size_t n)
{
	json_t *ev, *det;
	size_t i;
	int rc = 0;

	for (i = 0; i < n && rc == 0; i++) {
		det = json_pack("{s:O?, s:O?}", "mail_from",
		    json_object_get(msg, "mail_from"), "size",
		    json_object_get(msg, "size"));
		ev = events_new("queued", events_str(msg, "tenant"),
		    events_str(msg, "id"), events_str(msg, "message_id"),
		    rcpts[i], det);
		rc = events_append_txn(txn, st, ev);
		json_decref(ev);
	}
	return rc;
}

int
events_update_txn(MDB_txn *txn, struct store *st, const json_t *msg,
    const json_t *rec)
{
	const json_t *reply = json_object_get(rec, "last_reply");
	const char *type = events_str(rec, "status"), *cat;
	json_t *ev, *det;
	char *text;
	int rc;

	if (events_type_bit(type) == 0 || strcmp(type, "queued") == 0)
		return 0;
	det = json_object();
	json_object_set_new(det, "attempts", json_integer(json_integer_value(
	    json_object_get(rec, "attempts"))));
	if (json_is_object(reply)) {
		json_object_set_new(det, "code", json_integer(
		    json_integer_value(json_object_get(reply, "code"))));
		json_object_set_new(det, "enhanced",
		    events_jstr(events_str(reply, "enhanced")));
		text = xstrndup(events_str(reply, "text"), EVENTS_DETAIL_MAX);
		json_object_set_new(det, "text", events_jstr(text));
		free(text);
		if (json_object_get(reply, "relay") != NULL)
			json_object_set_new(det, "relay",
			    events_jstr(events_str(reply, "relay")));
	}
	if (strcmp(type, "bounced") == 0 || strcmp(type, "deferred") == 0 ||
	    strcmp(type, "suppressed") == 0) {
		cat = json_string_value(json_object_get(reply, "category"));
		if (cat == NULL)
			cat = json_string_value(json_object_get(rec,
			    "category"));
		if (cat == NULL && strcmp(type, "suppressed") != 0)
			cat = events_category(type, json_is_object(reply) ?
			    events_str(reply, "enhanced") : NULL);
		if (cat != NULL)
			json_object_set_new(det, "category", events_jstr(cat));
	}
	if (strcmp(type, "deferred") == 0)
		json_object_set_new(det, "next_attempt", json_integer(
		    json_integer_value(json_object_get(rec, "next_attempt"))));
	ev = events_new(type, events_str(msg, "tenant"), events_str(msg, "id"),
	    events_str(msg, "message_id"), events_str(rec, "address"), det);
	rc = events_append_txn(txn, st, ev);
	json_decref(ev);
	return rc;
}

/* events_emit_fn - writer: append the event of events_emit */
static int
events_emit_fn(MDB_txn *txn, struct store *st, void *arg)
{
	return events_append_txn(txn, st, arg);
}

/* events_emit_free - the event is written (or failed) */
static void
events_emit_free(void *arg)
{
	json_decref(arg);
}

void
events_emit(struct queue *q, const char *type, const char *tenant,
    const char *qid, const char *message_id, const char *rcpt,
    json_t *details)
{
	json_t *ev;

	if (events_type_bit(type) == 0) {
		if (details != NULL)
			json_decref(details);
		log_warn("event=events status=error reason=\"unknown event "
		    "type\"");
		return;
	}
	/* a deep copy: the writer thread owns it until the free */
	ev = events_new(type, tenant, qid, message_id, rcpt, details);
	queue_exec(q, events_emit_fn, events_emit_free, ev, NULL, NULL);
}

/* --- readers --- */

uint64_t
events_last_seq(struct store *st)
{
	MDB_txn *txn;
	MDB_cursor *cur;
	MDB_val key, val;
	uint64_t seq = 0;

	if (mdb_txn_begin(store_env(st), NULL, MDB_RDONLY, &txn) != 0)
		return 0;
	if (mdb_cursor_open(txn, store_dbi(st, DB_EVENTS), &cur) == 0) {
		if (mdb_cursor_get(cur, &key, &val, MDB_LAST) == 0 &&
		    key.mv_size == EVENTS_KEY_LEN)
			seq = events_key_seq(key.mv_data);
		mdb_cursor_close(cur);
	}
	mdb_txn_abort(txn);
	return seq;
}

/* events_idx_walk - call fn for each index entry of tenant after since
 * whose type is in mask (0 = all), until fn returns non-zero; *last_r the
 * last sequence looked at */
static void
events_idx_walk(MDB_txn *txn, struct store *st, const char *tenant,
    uint64_t since, unsigned mask, int (*fn)(MDB_txn *, struct store *,
    uint64_t, void *), void *arg, uint64_t *last_r)
{
	unsigned char ik[EVENTS_IDX_KEY_MAX];
	char type[32];
	MDB_cursor *cur;
	MDB_val key, val;
	size_t iklen, tl = strlen(tenant);
	uint64_t seq;
	int rc;

	*last_r = since;
	if (since == UINT64_MAX ||
	    (iklen = events_idx_key(ik, tenant, since + 1)) == 0)
		return;
	if (mdb_cursor_open(txn, store_dbi(st, DB_EVENTIDX), &cur) != 0)
		return;
	key.mv_size = iklen;
	key.mv_data = ik;
	for (rc = mdb_cursor_get(cur, &key, &val, MDB_SET_RANGE); rc == 0;
	    rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT)) {
		if (key.mv_size != iklen || memcmp(key.mv_data, tenant, tl) != 0 ||
		    ((unsigned char *)key.mv_data)[tl] != '\0')
			break;
		seq = events_key_seq((unsigned char *)key.mv_data + tl + 1);
		if (mask != 0) {
			if (val.mv_size >= sizeof(type))
				continue;
			memcpy(type, val.mv_data, val.mv_size);
			type[val.mv_size] = '\0';
			if ((events_type_bit(type) & mask) == 0) {
				*last_r = seq;
				continue;
			}
		}
		if (fn(txn, st, seq, arg) != 0)
			break;
		*last_r = seq;
	}
	mdb_cursor_close(cur);
}

struct events_list_ctx {
	json_t	*arr;
	size_t	 limit;
};

/* events_list_one - append event seq; stop at the limit */
static int
events_list_one(MDB_txn *txn, struct store *st, uint64_t seq, void *arg)
{
	struct events_list_ctx *c = arg;
	unsigned char k[EVENTS_KEY_LEN];
	MDB_val key = { sizeof(k), k }, val;
	json_t *ev;

	if (json_array_size(c->arr) >= c->limit)
		return 1;
	events_key(k, seq);
	if (mdb_get(txn, store_dbi(st, DB_EVENTS), &key, &val) == 0 &&
	    (ev = json_loadb(val.mv_data, val.mv_size, 0, NULL)) != NULL)
		json_array_append_new(c->arr, ev);
	return 0;
}

json_t *
events_list(struct store *st, const char *tenant, uint64_t since,
    size_t limit, unsigned mask, uint64_t *next_r)
{
	struct events_list_ctx c;
	MDB_txn *txn;

	c.arr = json_array();
	c.limit = limit;
	*next_r = since;
	if (limit == 0 || tenant == NULL)
		return c.arr;
	if (mdb_txn_begin(store_env(st), NULL, MDB_RDONLY, &txn) != 0)
		return c.arr;
	events_idx_walk(txn, st, tenant, since, mask, events_list_one, &c,
	    next_r);
	mdb_txn_abort(txn);
	return c.arr;
}

struct events_count_ctx {
	uint64_t	n, max;
};

/* events_count_one - count; stop at max */
static int
events_count_one(MDB_txn *txn, struct store *st, uint64_t seq, void *arg)
{
	struct events_count_ctx *c = arg;

	(void)txn;
	(void)st;
	(void)seq;
	if (c->n >= c->max)
		return 1;
	c->n++;
	return 0;
}

uint64_t
events_count_after(struct store *st, const char *tenant, uint64_t since,
    unsigned mask, uint64_t max)
{
	struct events_count_ctx c = { 0, max };
	MDB_txn *txn;
	uint64_t last;

	if (mdb_txn_begin(store_env(st), NULL, MDB_RDONLY, &txn) != 0)
		return 0;
	events_idx_walk(txn, st, tenant, since, mask, events_count_one, &c,
	    &last);
	mdb_txn_abort(txn);
	return c.n;
}

int
events_tenant_purge_txn(MDB_txn *txn, struct store *st, const char *tenant,
    char **err_r)
{
	int n = 0;

	/* index keys are tenant NUL seq; the events stay until pruned */
	return store_del_prefix(st, txn, DB_EVENTIDX, tenant,
	    strlen(tenant) + 1, &n, err_r);
}

/* events_mid_eq - Message-IDs equal, ignoring the angle brackets */
static int
events_mid_eq(const char *a, const char *b)
{
	size_t la, lb;

	if (*a == '<')
		a++;
	if (*b == '<')
		b++;
	la = strlen(a);
	lb = strlen(b);
	if (la > 0 && a[la - 1] == '>')
		la--;
	if (lb > 0 && b[lb - 1] == '>')
		lb--;
	return la > 0 && la == lb && memcmp(a, b, la) == 0;
}

json_t *
events_search(struct store *st, const char *message_id, const char *qid_want,
    const char *rcpt, const char *tenant)
{
	MDB_txn *txn;
	MDB_cursor *cur;
	MDB_val key, val;
	json_t *arr = json_array(), *ev, *qids = json_object();
	const char *qid;
	int rc, match;

	if (mdb_txn_begin(store_env(st), NULL, MDB_RDONLY, &txn) != 0)
		goto out;
	if (mdb_cursor_open(txn, store_dbi(st, DB_EVENTS), &cur) != 0) {
		mdb_txn_abort(txn);
		goto out;
	}
	for (rc = mdb_cursor_get(cur, &key, &val, MDB_FIRST); rc == 0;
	    rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT)) {
		if ((ev = json_loadb(val.mv_data, val.mv_size, 0, NULL)) == NULL)
			continue;
		if (tenant != NULL && strcmp(events_str(ev, "tenant"),
		    tenant) != 0) {
			json_decref(ev);
			continue;
		}
		qid = events_str(ev, "qid");
		/* by Message-ID: then every later event of its queue ids
		 * (engagement events may carry the queue id only) */
		match = message_id != NULL ? (events_mid_eq(events_str(ev,
		    "message_id"), message_id) || (*qid != '\0' &&
		    json_object_get(qids, qid) != NULL)) : 1;
		if (match && qid_want != NULL)
			match = strcasecmp(qid, qid_want) == 0;
		if (match && rcpt != NULL)
			match = strcasecmp(events_str(ev, "recipient"),
			    rcpt) == 0;
		if (match) {
			if (*qid != '\0')
				json_object_set_new(qids, qid, json_true());
			json_array_append_new(arr, ev);
		} else
			json_decref(ev);
	}
	mdb_cursor_close(cur);
	mdb_txn_abort(txn);
out:
	json_decref(qids);
	return arr;
}

char *
events_format_line(const json_t *ev)
{
	const json_t *det = json_object_get(ev, "details");
	char *text, *line, *extra = xstrdup("");

	if (json_object_get(det, "text") != NULL ||
	    json_object_get(det, "reason") != NULL) {
		text = util_sanitize(json_object_get(det, "text") ?
		    events_str(det, "text") : events_str(det, "reason"), 200);
		free(extra);
		extra = xasprintf(" %lld%s%s %s%s%s", (long long)
		    json_integer_value(json_object_get(det, "code")),
		    *events_str(det, "enhanced") ? " " : "",
		    events_str(det, "enhanced"), text,
		    json_object_get(det, "relay") ? " relay=" : "",
		    events_str(det, "relay"));
		free(text);
	}
	line = xasprintf("%s %-12s id=%s qid=%s tenant=%s rcpt=%s%s",
	    events_str(ev, "time"), events_str(ev, "type"),
	    events_str(ev, "id"), *events_str(ev, "qid") ?
	    events_str(ev, "qid") : "-", events_str(ev, "tenant"),
	    *events_str(ev, "recipient") ? events_str(ev, "recipient") : "-",
	    extra);
	free(extra);
	text = util_sanitize(line, 4096);
	free(line);
	return text;
}

/* --- retention --- */

struct events_prune {
	int64_t		 cutoff;	/* unix seconds: older goes */
	uint64_t	 deleted;	/* set by the writer */
	uint64_t	 unacked;
	int		 more;		/* the batch was full */
};

/* events_prune_fn - writer: delete up to EVENTS_PRUNE_BATCH events older
 * than the cutoff, never the newest one */
static int
events_prune_fn(MDB_txn *txn, struct store *st, void *arg)
{
	struct events_prune *p = arg;
	unsigned char ik[EVENTS_IDX_KEY_MAX];
	MDB_cursor *cur;
	MDB_val key, val, ikey;
	json_t *ev, *cursors;
	uint64_t seq, last;
	size_t iklen;
	int rc;

	p->deleted = p->unacked = 0;
	p->more = 0;
	cursors = webhook_cursors_txn(txn, st);
	if ((rc = mdb_cursor_open(txn, store_dbi(st, DB_EVENTS), &cur)) != 0)
		goto out;
	if ((rc = mdb_cursor_get(cur, &key, &val, MDB_LAST)) != 0)
		goto done;
	last = events_key_seq(key.mv_data);
	for (rc = mdb_cursor_get(cur, &key, &val, MDB_FIRST); rc == 0;
	    rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT)) {
		if (key.mv_size != EVENTS_KEY_LEN)
			continue;
		seq = events_key_seq(key.mv_data);
		if (seq >= last)
			break;
		if (p->deleted >= EVENTS_PRUNE_BATCH) {
			p->more = 1;
			break;
		}
		if ((ev = json_loadb(val.mv_data, val.mv_size, 0, NULL)) ==
		    NULL)
			continue;
		if (events_time_parse(events_str(ev, "time")) >= p->cutoff) {
			json_decref(ev);
			break;
		}
		if (webhook_unacked(cursors, events_str(ev, "tenant"),
		    events_str(ev, "type"), seq))
			p->unacked++;
		if ((iklen = events_idx_key(ik, events_str(ev, "tenant"),
		    seq)) > 0) {
			ikey.mv_size = iklen;
			ikey.mv_data = ik;
			rc = mdb_del(txn, store_dbi(st, DB_EVENTIDX), &ikey,
			    NULL);
			if (rc != 0 && rc != MDB_NOTFOUND) {
				json_decref(ev);
				break;
			}
		}
		json_decref(ev);
		if ((rc = mdb_cursor_del(cur, 0)) != 0)
			break;
		p->deleted++;
	}
done:
	mdb_cursor_close(cur);
	if (rc == MDB_NOTFOUND)
		rc = 0;
out:
	json_decref(cursors);
	return rc;
}

static void events_prune_arm(int secs);

/* events_prune_done - main loop: log, go on while there is more */
static void
events_prune_done(void *arg, int status, const char *qid, const char *err)
{
	struct events_prune *p = arg;

	(void)qid;
	ev_prune_busy = 0;
	if (status != 0) {
		log_warn("event=events_prune status=failed reason=\"%s\"",
		    err ? err : "?");
		events_prune_arm(EVENTS_PRUNE_INTERVAL);
		return;
	}
	if (p->deleted > 0)
		log_info("event=events_pruned deleted=%llu unacknowledged=%llu "
		    "retention=%lds", (unsigned long long)p->deleted,
		    (unsigned long long)p->unacked, ev_retention);
	if (p->unacked > 0)
		log_warn("event=events_pruned status=unacknowledged dropped=%llu "
		    "reason=\"older than event_retention, not acknowledged by "
		    "a webhook\"", (unsigned long long)p->unacked);
	events_prune_arm(p->more ? 0 : EVENTS_PRUNE_INTERVAL);
}

/* events_prune_cb - timer: start one prune batch */
static void
events_prune_cb(evutil_socket_t fd, short what, void *arg)
{
	struct events_prune *p;

	(void)fd;
	(void)what;
	(void)arg;
	if (ev_prune_busy || ev_queue == NULL)
		return;
	p = xcalloc(1, sizeof(*p));
	p->cutoff = util_now() - ev_retention;
	ev_prune_busy = 1;
	queue_exec(ev_queue, events_prune_fn, free, p, events_prune_done, p);
}

/* events_prune_arm - next prune run in secs */
static void
events_prune_arm(int secs)
{
	struct timeval tv = { secs, 0 };

	if (ev_prune_timer != NULL)
		evtimer_add(ev_prune_timer, &tv);
}

void
events_start(struct event_base *base, struct queue *q, struct store *st,
    long retention)
{
	ev_queue = q;
	ev_store = st;
	ev_retention = retention;
	if ((ev_prune_timer = evtimer_new(base, events_prune_cb, NULL)) ==
	    NULL)
		fatalx("events: evtimer_new failed");
	events_prune_arm(10);
}

void
events_stop(void)
{
	if (ev_prune_timer != NULL)
		event_free(ev_prune_timer);
	ev_prune_timer = NULL;
	ev_queue = NULL;
	ev_store = NULL;
}
