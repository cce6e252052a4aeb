/*
 * queue.c - the durable queue: new messages go into LMDB through one
 * store-writer thread (group commit), and readers for petrelctl and the
 * HTTP API look at the same records with their own read transactions.
 *
 * Flow of a new message:
 *   main loop: queue_submit() copies the envelope, moves the body out of
 *   the session's evbuffer, assigns the queue id and appends the request
 *   to the pending list (mutex + condvar).
 *   writer thread: takes every pending request (up to a batch bound),
 *   writes all of them in one write transaction and one mdb_txn_commit
 *   (LMDB syncs on commit), moves them to the done list and wakes the main
 *   loop with event_active().
 *   main loop: queue_done() runs each callback (the session sends its 250
 *   or 452) and frees the request.
 * While the writer is committing, new requests pile up and go in the next
 * batch: concurrent sessions share one fsync.
 *
 * A message is in all four databases (messages, bodies, rcpts, schedule)
 * or in none: they are written in the same transaction. When a batch
 * fails (MDB_MAP_FULL, I/O error), nothing of it remains; when it held
 * more than one request, each request is retried alone so that one huge
 * message does not take the others of its batch down with it.
 */
#include "autoconf.h"

#include <sys/queue.h>

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <jansson.h>
#include <lmdb.h>

#include "log.h"
#include "queue.h"
#include "store.h"
#include "util.h"

/* Crockford base32: ASCII order equals numeric order */
static const char queue_b32[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

#define QUEUE_RCPT_KEY_LEN	(QUEUE_ID_LEN + 2)
#define QUEUE_SCHED_KEY_LEN	(8 + QUEUE_ID_LEN)
#define QUEUE_RCPTS_MAX		65535	/* 2-byte index in the rcpts key */

struct queue_req {
	TAILQ_ENTRY(queue_req)	 entry;
	char			 qid[QUEUE_ID_LEN + 1];
	char			*tenant;
	char			*mail_from;
	char			*header_from;
	char			*message_id;
	char			**rcpts;
	size_t			 nrcpts;
	json_t			*client;	/* own deep copy */
	struct evbuffer		*body;
	size_t			 size;
	int64_t			 received_at;
	queue_done_cb		 cb;
	void			*arg;
	int			 cancelled;	/* main thread only */
	int			 status;	/* set by the writer */
	char			*err;
};

TAILQ_HEAD(queue_reqs, queue_req);

struct queue {
	struct store		*store;
	struct event_base	*base;
	struct event		*ev_done;
	pthread_t		 thread;
	pthread_mutex_t		 mtx;
	pthread_cond_t		 cond;
	struct queue_reqs	 pending;	/* mtx */
	struct queue_reqs	 done;		/* mtx */
	int			 stopping;	/* mtx */
	uint64_t		 commits;	/* mtx */
	uint64_t		 messages;	/* mtx */
	/* queue id state, main thread only */
	uint64_t		 last_ms;
	uint32_t		 last_rand;
};

static void *queue_writer(void *);
static void queue_done(evutil_socket_t, short, void *);

/* queue_wall_ms - wall-clock milliseconds since the epoch */
static uint64_t
queue_wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* queue_make_id - next time-ordered id; strictly increasing in-process */
static void
queue_make_id(struct queue *q, char out[QUEUE_ID_LEN + 1])
{
	unsigned char rb[3];
	uint64_t ms = queue_wall_ms(), hi, lo;
	uint32_t r;
	int i;

	if (ms <= q->last_ms) {
		/* same millisecond or clock stepped back: count on */
		ms = q->last_ms;
		r = q->last_rand + 1;
		if (r > 0xffffff) {
			ms++;
			util_random(rb, sizeof(rb));
			r = ((uint32_t)rb[0] << 16 | (uint32_t)rb[1] << 8 | rb[2]) & 0x7fffff;
		}
	} else {
		util_random(rb, sizeof(rb));
		/* top bit clear: leaves room to count within one millisecond */
		r = ((uint32_t)rb[0] << 16 | (uint32_t)rb[1] << 8 | rb[2]) & 0x7fffff;
	}
	q->last_ms = ms;
	q->last_rand = r;

	/* 70 bits: 46 of time, 24 of counter/random; hi holds the top 40
	 * bits (8 chars), lo the low 30 bits (6 chars) */
	ms &= (UINT64_C(1) << 46) - 1;
	hi = ms >> 6;
	lo = (ms & 0x3f) << 24 | r;
	for (i = 7; i >= 0; i--) {
		out[i] = queue_b32[hi & 31];
		hi >>= 5;
	}
	for (i = 13; i >= 8; i--) {
		out[i] = queue_b32[lo & 31];
		lo >>= 5;
	}
	out[QUEUE_ID_LEN] = '\0';
}

int
queue_id_valid(const char *s)
{
	size_t i;

	if (s == NULL || strlen(s) != QUEUE_ID_LEN)
		return -1;
	for (i = 0; i < QUEUE_ID_LEN; i++)
		if (s[i] == '\0' || strchr(queue_b32, s[i]) == NULL)
			return -1;
	return 0;
}

/* queue_req_free - release a request (main thread) */
static void
queue_req_free(struct queue_req *r)
{
	size_t i;

	free(r->tenant);
	free(r->mail_from);
	free(r->header_from);
	free(r->message_id);
	for (i = 0; i < r->nrcpts; i++)
		free(r->rcpts[i]);
	free(r->rcpts);
	if (r->client)
		json_decref(r->client);
	if (r->body)
		evbuffer_free(r->body);
	free(r->err);
	free(r);
}

struct queue *
queue_new(struct store *store, struct event_base *base)
{
	struct queue *q = xcalloc(1, sizeof(*q));
	unsigned int flags = 0;
	int rc;

	q->store = store;
	q->base = base;
	TAILQ_INIT(&q->pending);
	TAILQ_INIT(&q->done);
	if (pthread_mutex_init(&q->mtx, NULL) != 0 ||
	    pthread_cond_init(&q->cond, NULL) != 0)
		fatalx("queue_new: pthread init failed");
	q->ev_done = event_new(base, -1, 0, queue_done, q);
	if (q->ev_done == NULL)
		fatalx("queue_new: event_new failed");
	if (mdb_env_get_flags(store_env(store), &flags) == 0 &&
	    (flags & (MDB_NOSYNC | MDB_NOMETASYNC)))
		log_warn("queue: store opened without sync on commit: "
		    "acknowledged mail may be lost on a crash");
	if ((rc = pthread_create(&q->thread, NULL, queue_writer, q)) != 0)
		fatalx("queue_new: pthread_create: %s", strerror(rc));
	return q;
}

void
queue_free(struct queue *q)
{
	if (q == NULL)
		return;
	pthread_mutex_lock(&q->mtx);
	q->stopping = 1;
	pthread_cond_signal(&q->cond);
	pthread_mutex_unlock(&q->mtx);
	pthread_join(q->thread, NULL);
	/* the writer flushed everything: run what is left here */
	queue_done(-1, 0, q);
	event_free(q->ev_done);
	pthread_cond_destroy(&q->cond);
	pthread_mutex_destroy(&q->mtx);
	free(q);
}

struct queue_req *
queue_submit(struct queue *q, const struct queue_envelope *envl,
    struct evbuffer *body, queue_done_cb cb, void *arg,
    char qid_r[QUEUE_ID_LEN + 1])
{
	struct queue_req *r = xcalloc(1, sizeof(*r));
	size_t i;

	queue_make_id(q, r->qid);
	r->tenant = xstrdup(envl->tenant ? envl->tenant : "");
	r->mail_from = xstrdup(envl->mail_from ? envl->mail_from : "");
	r->header_from = xstrdup(envl->header_from ? envl->header_from : "");
	r->message_id = xstrdup(envl->message_id ? envl->message_id : "");
	r->nrcpts = envl->nrcpts;
	r->rcpts = xcalloc(r->nrcpts ? r->nrcpts : 1, sizeof(char *));
	for (i = 0; i < r->nrcpts; i++)
		r->rcpts[i] = xstrdup(envl->rcpts[i]);
	/* the writer thread owns this copy: no shared jansson refcounts */
	r->client = envl->client ? json_deep_copy(envl->client) : json_object();
	if (r->client == NULL)
		fatalx("queue_submit: out of memory");
	if ((r->body = evbuffer_new()) == NULL)
		fatalx("queue_submit: evbuffer_new failed");
	if (body != NULL && evbuffer_add_buffer(r->body, body) != 0)
		fatalx("queue_submit: evbuffer_add_buffer failed");
	r->size = evbuffer_get_length(r->body);
	r->received_at = util_now();
	r->cb = cb;
	r->arg = arg;
	if (qid_r != NULL)
		memcpy(qid_r, r->qid, QUEUE_ID_LEN + 1);

	pthread_mutex_lock(&q->mtx);
	if (q->stopping)
		fatalx("queue_submit: queue is stopping");
	TAILQ_INSERT_TAIL(&q->pending, r, entry);
	pthread_cond_signal(&q->cond);
	pthread_mutex_unlock(&q->mtx);
	return r;
}

void
queue_cancel(struct queue_req *r)
{
	r->cancelled = 1;
}

/* queue_jstr - s as a JSON string; bytes that are not UTF-8 (a header
 * value can hold anything) become '?' rather than failing the message */
static json_t *
queue_jstr(const char *s)
{
	json_t *j;
	char *c;
	size_t i;

	if ((j = json_string(s)) != NULL)
		return j;
	c = xstrdup(s);
	for (i = 0; c[i] != '\0'; i++)
		if ((unsigned char)c[i] >= 0x80)
			c[i] = '?';
	if ((j = json_string(c)) == NULL)
		fatalx("queue: json_string failed");
	free(c);
	return j;
}

/* queue_put_json - store obj under key, compact */
static int
queue_put_json(MDB_txn *txn, MDB_dbi dbi, const void *k, size_t klen,
    json_t *obj, unsigned int flags)
{
	MDB_val key = { klen, (void *)k }, val;
	char *s;
	int rc;

	if ((s = json_dumps(obj, JSON_COMPACT)) == NULL)
		fatalx("queue: json_dumps failed");
	val.mv_size = strlen(s);
	val.mv_data = s;
	rc = mdb_put(txn, dbi, &key, &val, flags);
	free(s);
	return rc;
}

/* queue_write_one - all records of one message, inside txn */
static int
queue_write_one(struct queue *q, MDB_txn *txn, struct queue_req *r,
    int64_t now, const char **err_r)
{
	struct store *st = q->store;
	unsigned char rkey[QUEUE_RCPT_KEY_LEN], skey[QUEUE_SCHED_KEY_LEN];
	MDB_val key = { QUEUE_ID_LEN, r->qid }, val;
	json_t *msg, *rc_obj;
	uint64_t na;
	size_t i;
	int rc, b;

	if (r->nrcpts == 0 || r->nrcpts > QUEUE_RCPTS_MAX) {
		*err_r = "bad number of recipients";
		return EINVAL;
	}
	msg = json_pack("{s:s, s:o, s:o, s:o, s:o, s:I, s:I, s:O, s:I, s:s}",
	    "id", r->qid, "tenant", queue_jstr(r->tenant),
	    "mail_from", queue_jstr(r->mail_from),
	    "header_from", queue_jstr(r->header_from),
	    "message_id", queue_jstr(r->message_id),
	    "size", (json_int_t)r->size, "received_at",
	    (json_int_t)r->received_at, "client", r->client,
	    "nrcpts", (json_int_t)r->nrcpts, "stage", "received");
	if (msg == NULL)
		fatalx("queue: json_pack failed");
	rc = queue_put_json(txn, store_dbi(st, DB_MESSAGES), r->qid,
	    QUEUE_ID_LEN, msg, MDB_NOOVERWRITE);
	json_decref(msg);
	if (rc != 0)
		goto fail;

	val.mv_size = r->size;
	val.mv_data = NULL;
	if ((rc = mdb_put(txn, store_dbi(st, DB_BODIES), &key, &val,
	    MDB_RESERVE | MDB_NOOVERWRITE)) != 0)
		goto fail;
	if (r->size > 0 &&
	    evbuffer_copyout(r->body, val.mv_data, r->size) != (ev_ssize_t)r->size)
		fatalx("queue: evbuffer_copyout short");

	memcpy(rkey, r->qid, QUEUE_ID_LEN);
	for (i = 0; i < r->nrcpts; i++) {
		rkey[QUEUE_ID_LEN] = (unsigned char)(i >> 8);
		rkey[QUEUE_ID_LEN + 1] = (unsigned char)(i & 0xff);
		rc_obj = json_pack("{s:o, s:s, s:i, s:s, s:I, s:I}",
		    "address", queue_jstr(r->rcpts[i]), "status", "queued",
		    "attempts", 0, "last_reply", "", "updated_at",
		    (json_int_t)now, "next_attempt", (json_int_t)now);
		if (rc_obj == NULL)
			fatalx("queue: json_pack failed");
		rc = queue_put_json(txn, store_dbi(st, DB_RCPTS), rkey,
		    sizeof(rkey), rc_obj, MDB_NOOVERWRITE);
		json_decref(rc_obj);
		if (rc != 0)
			goto fail;
	}

	na = (uint64_t)now;
	for (b = 0; b < 8; b++)
		skey[b] = (unsigned char)(na >> (56 - 8 * b));
	memcpy(skey + 8, r->qid, QUEUE_ID_LEN);
	key.mv_size = sizeof(skey);
	key.mv_data = skey;
	val.mv_size = 0;
	val.mv_data = (void *)"";
	if ((rc = mdb_put(txn, store_dbi(st, DB_SCHEDULE), &key, &val, 0)) != 0)
		goto fail;
	return 0;

fail:
	if (rc == MDB_MAP_FULL)
		*err_r = "queue storage full";
	else if (rc == MDB_KEYEXIST)
		*err_r = "queue id collision";
	else
		*err_r = "queue write failed";
	return rc;
}

/* queue_write_batch - reqs[0..n) in one transaction and one commit.
 * 0, or the LMDB error with *bad_r the failing request (NULL when the
 * commit itself failed) and *err_r a reason. */
static int
queue_write_batch(struct queue *q, struct queue_req **reqs, size_t n,
    struct queue_req **bad_r, const char **err_r)
{
	MDB_txn *txn;
	int64_t now = util_now();
	size_t i;
	int rc;

	*bad_r = NULL;
	if ((rc = mdb_txn_begin(store_env(q->store), NULL, 0, &txn)) != 0) {
		*err_r = "queue write failed";
		return rc;
	}
	for (i = 0; i < n; i++) {
		if ((rc = queue_write_one(q, txn, reqs[i], now, err_r)) != 0) {
			*bad_r = reqs[i];
			mdb_txn_abort(txn);
			return rc;
		}
	}
	if ((rc = mdb_txn_commit(txn)) != 0) {
		*err_r = rc == MDB_MAP_FULL ? "queue storage full" :
		    "queue commit failed";
		return rc;
	}
	return 0;
}

/* queue_fail - mark r as not stored */
static void
queue_fail(struct queue_req *r, int rc, const char *reason)
{
	r->status = -1;
	r->err = xstrdup(reason);
	log_warn("qid=%s tenant=%s status=failed reason=\"%s\" error=\"%s\"",
	    r->qid, r->tenant, reason, mdb_strerror(rc));
}

/* queue_ok - r is committed */
static void
queue_ok(struct queue_req *r)
{
	r->status = 0;
	log_info("qid=%s tenant=%s from=<%s> header_from=<%s> size=%zu "
	    "nrcpts=%zu status=queued", r->qid, r->tenant, r->mail_from,
	    r->header_from, r->size, r->nrcpts);
}

/* queue_process - write one batch; on failure retry its members alone */
static void
queue_process(struct queue *q, struct queue_req **reqs, size_t n)
{
	struct queue_req *bad;
	const char *err = NULL;
	uint64_t commits = 0, stored = 0;
	size_t i;
	int rc;

	rc = queue_write_batch(q, reqs, n, &bad, &err);
	if (rc == 0) {
		commits = 1;
		stored = n;
		for (i = 0; i < n; i++)
			queue_ok(reqs[i]);
	} else if (n == 1) {
		queue_fail(reqs[0], rc, err);
	} else {
		log_warn("queue: batch of %zu failed (%s), retrying one by one",
		    n, mdb_strerror(rc));
		for (i = 0; i < n; i++) {
			rc = queue_write_batch(q, &reqs[i], 1, &bad, &err);
			if (rc == 0) {
				commits++;
				stored++;
				queue_ok(reqs[i]);
			} else
				queue_fail(reqs[i], rc, err);
		}
	}
	pthread_mutex_lock(&q->mtx);
	q->commits += commits;
	q->messages += stored;
	pthread_mutex_unlock(&q->mtx);
}

/* queue_writer - the store-writer thread: group commit until stopped and
 * drained */
static void *
queue_writer(void *arg)
{
	struct queue *q = arg;
	struct queue_req **batch;
	struct queue_req *r;
	size_t n, bytes, i;
	uint64_t t0;

	batch = xcalloc(QUEUE_BATCH_MAX_REQS, sizeof(*batch));
	pthread_mutex_lock(&q->mtx);
	for (;;) {
		while (TAILQ_EMPTY(&q->pending) && !q->stopping)
			pthread_cond_wait(&q->cond, &q->mtx);
		if (TAILQ_EMPTY(&q->pending))
			break;		/* stopping and drained */
		n = bytes = 0;
		while ((r = TAILQ_FIRST(&q->pending)) != NULL &&
		    n < QUEUE_BATCH_MAX_REQS &&
		    (n == 0 || bytes + r->size <= QUEUE_BATCH_MAX_BYTES)) {
			TAILQ_REMOVE(&q->pending, r, entry);
			batch[n++] = r;
			bytes += r->size;
		}
		pthread_mutex_unlock(&q->mtx);

		t0 = util_now_ms();
		queue_process(q, batch, n);
		log_debug("event=queue_commit n=%zu bytes=%zu ms=%llu", n, bytes,
		    (unsigned long long)(util_now_ms() - t0));

		pthread_mutex_lock(&q->mtx);
		for (i = 0; i < n; i++)
			TAILQ_INSERT_TAIL(&q->done, batch[i], entry);
		if (!q->stopping)
			event_active(q->ev_done, 0, 0);
	}
	pthread_mutex_unlock(&q->mtx);
	free(batch);
	return NULL;
}

/* queue_done - main loop: answer every finished request */
static void
queue_done(evutil_socket_t fd, short what, void *arg)
{
	struct queue *q = arg;
	struct queue_reqs done;
	struct queue_req *r;

	TAILQ_INIT(&done);
	pthread_mutex_lock(&q->mtx);
	TAILQ_CONCAT(&done, &q->done, entry);
	pthread_mutex_unlock(&q->mtx);
	while ((r = TAILQ_FIRST(&done)) != NULL) {
		TAILQ_REMOVE(&done, r, entry);
		if (!r->cancelled && r->cb != NULL)
			r->cb(r->arg, r->status, r->qid, r->err);
		queue_req_free(r);
	}
}

void
queue_stats(struct queue *q, uint64_t *commits_r, uint64_t *messages_r)
{
	pthread_mutex_lock(&q->mtx);
	if (commits_r)
		*commits_r = q->commits;
	if (messages_r)
		*messages_r = q->messages;
	pthread_mutex_unlock(&q->mtx);
}

/* Readers */

/* queue_get_json - parse the JSON value at key in dbi, NULL if absent */
static json_t *
queue_get_json(MDB_txn *txn, MDB_dbi dbi, const void *k, size_t klen)
{
	MDB_val key = { klen, (void *)k }, val;

	if (mdb_get(txn, dbi, &key, &val) != 0)
		return NULL;
	return json_loadb(val.mv_data, val.mv_size, 0, NULL);
}

/* queue_rcpts_json - the recipients of qid as an array, in index order */
static json_t *
queue_rcpts_json(struct store *st, MDB_txn *txn, const char *qid)
{
	unsigned char rkey[QUEUE_RCPT_KEY_LEN];
	MDB_cursor *cur;
	MDB_val key, val;
	json_t *arr = json_array(), *o;
	int rc;

	memcpy(rkey, qid, QUEUE_ID_LEN);
	rkey[QUEUE_ID_LEN] = rkey[QUEUE_ID_LEN + 1] = 0;
	if (mdb_cursor_open(txn, store_dbi(st, DB_RCPTS), &cur) != 0)
		return arr;
	key.mv_size = sizeof(rkey);
	key.mv_data = rkey;
	for (rc = mdb_cursor_get(cur, &key, &val, MDB_SET_RANGE); rc == 0;
	    rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT)) {
		if (key.mv_size != QUEUE_RCPT_KEY_LEN ||
		    memcmp(key.mv_data, qid, QUEUE_ID_LEN) != 0)
			break;
		if ((o = json_loadb(val.mv_data, val.mv_size, 0, NULL)) != NULL)
			json_array_append_new(arr, o);
	}
	mdb_cursor_close(cur);
	return arr;
}

json_t *
queue_show_json(struct store *st, const char *qid)
{
	MDB_txn *txn;
	json_t *msg;

	if (queue_id_valid(qid) != 0)
		return NULL;
	if (mdb_txn_begin(store_env(st), NULL, MDB_RDONLY, &txn) != 0)
		return NULL;
	msg = queue_get_json(txn, store_dbi(st, DB_MESSAGES), qid,
	    QUEUE_ID_LEN);
	if (msg != NULL && json_is_object(msg))
		json_object_set_new(msg, "recipients",
		    queue_rcpts_json(st, txn, qid));
	else if (msg != NULL) {
		json_decref(msg);
		msg = NULL;
	}
	mdb_txn_abort(txn);
	return msg;
}

json_t *
queue_list_json(struct store *st)
{
	MDB_txn *txn;
	MDB_cursor *cur;
	MDB_val key, val;
	json_t *list = json_array(), *msg, *rcpts, *rc_obj, *item;
	char qid[QUEUE_ID_LEN + 1];
	const char *status;
	json_int_t next, na, received;
	int64_t now = util_now();
	size_t i, active, queued;
	int rc;

	if (mdb_txn_begin(store_env(st), NULL, MDB_RDONLY, &txn) != 0)
		return list;
	if (mdb_cursor_open(txn, store_dbi(st, DB_MESSAGES), &cur) != 0) {
		mdb_txn_abort(txn);
		return list;
	}
	for (rc = mdb_cursor_get(cur, &key, &val, MDB_FIRST); rc == 0;
	    rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT)) {
		if (key.mv_size != QUEUE_ID_LEN)
			continue;
		memcpy(qid, key.mv_data, QUEUE_ID_LEN);
		qid[QUEUE_ID_LEN] = '\0';
		if ((msg = json_loadb(val.mv_data, val.mv_size, 0, NULL)) == NULL)
			continue;
		rcpts = queue_rcpts_json(st, txn, qid);
		active = queued = 0;
		next = 0;
		json_array_foreach(rcpts, i, rc_obj) {
			status = json_string_value(json_object_get(rc_obj,
			    "status"));
			if (status == NULL || (strcmp(status, "queued") != 0 &&
			    strcmp(status, "deferred") != 0))
				continue;
			active++;
			if (strcmp(status, "queued") == 0)
				queued++;
			na = json_integer_value(json_object_get(rc_obj,
			    "next_attempt"));
			if (active == 1 || na < next)
				next = na;
		}
		json_decref(rcpts);
		if (active > 0) {
			received = json_integer_value(json_object_get(msg,
			    "received_at"));
			item = json_pack("{s:s, s:O?, s:O?, s:O?, s:O?, s:I, s:I, "
			    "s:I, s:s}",
			    "id", qid,
			    "tenant", json_object_get(msg, "tenant"),
			    "mail_from", json_object_get(msg, "mail_from"),
			    "nrcpts", json_object_get(msg, "nrcpts"),
			    "size", json_object_get(msg, "size"),
			    "received_at", received,
			    "age", (json_int_t)(now - received),
			    "next_attempt", next,
			    "status", queued ? "queued" : "deferred");
			if (item != NULL)
				json_array_append_new(list, item);
		}
		json_decref(msg);
	}
	mdb_cursor_close(cur);
	mdb_txn_abort(txn);
	return list;
}

int
queue_body_get(struct store *st, const char *qid, struct evbuffer *buf)
{
	MDB_txn *txn;
	MDB_val key, val;
	int ret = -1;

	if (queue_id_valid(qid) != 0)
		return -1;
	if (mdb_txn_begin(store_env(st), NULL, MDB_RDONLY, &txn) != 0)
		return -1;
	key.mv_size = QUEUE_ID_LEN;
	key.mv_data = (void *)qid;
	if (mdb_get(txn, store_dbi(st, DB_BODIES), &key, &val) == 0 &&
	    evbuffer_add(buf, val.mv_data, val.mv_size) == 0)
		ret = 0;
	mdb_txn_abort(txn);
	return ret;
}
