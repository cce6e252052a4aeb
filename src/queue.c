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

#include "events.h"
#include "log.h"
#include "queue.h"
#include "store.h"
#include "suppress.h"
#include "tracking.h"
#include "util.h"

/* Crockford base32: ASCII order equals numeric order */
static const char queue_b32[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

#define QUEUE_RCPT_KEY_LEN	(QUEUE_ID_LEN + 2)
#define QUEUE_SCHED_KEY_LEN	(8 + QUEUE_ID_LEN)
#define QUEUE_RCPTS_MAX		65535	/* 2-byte index in the rcpts key */
/* bodies: qid = the message (as received, or as prepared); qid + 2-byte
 * index = a recipient's own prepared copy; qid + QUEUE_HEAD_MARK = the
 * header lines prepare put in front of the received bytes, when that is
 * all it changed (the message is then this head + the qid value) */
#define QUEUE_HEAD_KEY_LEN	(QUEUE_ID_LEN + 1)
#define QUEUE_HEAD_MARK		'>'

enum queue_kind {
	QUEUE_REQ_SUBMIT = 0,	/* a new message */
	QUEUE_REQ_UPDATE,	/* recipient results of a delivery attempt */
	QUEUE_REQ_PREPARED,	/* prepared bytes of a message (prepare.c) */
	QUEUE_REQ_EXEC,		/* queue_exec(): a function in the txn */
};

struct queue_req {
	TAILQ_ENTRY(queue_req)	 entry;
	enum queue_kind		 kind;
	char			 qid[QUEUE_ID_LEN + 1];
	struct queue_rcpt_update *upd;	/* QUEUE_REQ_UPDATE: own copies */
	size_t			 nupd;
	char			*tenant;
	char			*mail_from;
	char			*header_from;
	char			*message_id;
	char			**rcpts;
	size_t			 nrcpts;
	json_t			*client;	/* own deep copy */
	char			*envid, *ret;	/* DSN parameters (or NULL) */
	char			**notify, **orcpt;	/* nrcpts each, or NULL */
	int			 aux_db;	/* queue_envelope's aux record */
	void			*aux_key;
	size_t			 aux_keylen;
	char			*aux_val;
	struct evbuffer		*body;
	struct evbuffer		**rbodies;	/* QUEUE_REQ_PREPARED copies */
	unsigned		*ridx;
	size_t			 nrbodies;
	queue_exec_fn		 exec_fn;	/* QUEUE_REQ_EXEC */
	void			(*exec_free)(void *);
	void			*exec_arg;
	size_t			 size;
	uint64_t		 enq_ms;	/* util_now_ms() at enqueue */
	int64_t			 received_at;
	queue_done_cb		 cb;
	void			*arg;
	int			 cancelled;	/* main thread only */
	int			 status;	/* set by the writer */
	int			 gone;		/* update: message not there */
	char			*err;
};

TAILQ_HEAD(queue_reqs, queue_req);

struct queue {
	struct store		*store;
	struct event_base	*base;
	struct event		*ev_done;
	struct event		*ev_prune;	/* retention timer */
	long			 retention;	/* seconds; main thread */
	int			 prune_busy;	/* main thread */
	pthread_t		 thread;
	pthread_mutex_t		 mtx;
	pthread_cond_t		 cond;
	struct queue_reqs	 pending;	/* mtx */
	size_t			 npending;	/* mtx */
	size_t			 nurgent;	/* mtx: someone waits on these */
	struct queue_reqs	 done;		/* mtx */
	int			 stopping;	/* mtx */
	uint64_t		 commits;	/* mtx */
	uint64_t		 messages;	/* mtx */
	uint64_t		 updates;	/* mtx */
	queue_notify_cb		 notify;	/* main thread only */
	void			*notify_arg;
	/* queue id state, main thread only */
	uint64_t		 last_ms;
	uint32_t		 last_rand;
};

static void *queue_writer(void *);
static void queue_done(evutil_socket_t, short, void *);
static json_t *queue_get_json(MDB_txn *, MDB_dbi, const void *, size_t);
static int queue_del_bodies(struct store *, MDB_txn *, const char *,
    size_t);

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

/* queue_req_urgent - 1 when someone waits for this request's commit (a
 * client for its 250, an admin action); prepared bodies and delivery
 * results are background work */
static int
queue_req_urgent(const struct queue_req *r)
{
	return r->kind == QUEUE_REQ_SUBMIT || r->kind == QUEUE_REQ_EXEC;
}

/* queue_strv_dup - own copies of n strings (NULL entries stay NULL), or
 * NULL when v is */
static char **
queue_strv_dup(const char *const *v, size_t n)
{
	char **out;
	size_t i;

	if (v == NULL)
		return NULL;
	out = xcalloc(n ? n : 1, sizeof(*out));
	for (i = 0; i < n; i++)
		out[i] = v[i] != NULL ? xstrdup(v[i]) : NULL;
	return out;
}

/* queue_strv_free - what queue_strv_dup made */
static void
queue_strv_free(char **v, size_t n)
{
	size_t i;

	if (v == NULL)
		return;
	for (i = 0; i < n; i++)
		free(v[i]);
	free(v);
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
	queue_strv_free(r->notify, r->nrcpts);
	queue_strv_free(r->orcpt, r->nrcpts);
	free(r->envid);
	free(r->ret);
	for (i = 0; i < r->nupd; i++) {
		free((char *)r->upd[i].status);
		free((char *)r->upd[i].enhanced);
		free((char *)r->upd[i].text);
		free((char *)r->upd[i].relay);
		free((char *)r->upd[i].category);
	}
	free(r->upd);
	if (r->client)
		json_decref(r->client);
	if (r->body)
		evbuffer_free(r->body);
	for (i = 0; i < r->nrbodies; i++)
		evbuffer_free(r->rbodies[i]);
	free(r->rbodies);
	free(r->ridx);
	if (r->exec_free != NULL)
		r->exec_free(r->exec_arg);
	free(r->aux_key);
	free(r->aux_val);
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
	pthread_condattr_t ca;

	if (pthread_condattr_init(&ca) != 0 ||
	    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) != 0 ||
	    pthread_mutex_init(&q->mtx, NULL) != 0 ||
	    pthread_cond_init(&q->cond, &ca) != 0)
		fatalx("queue_new: pthread init failed");
	pthread_condattr_destroy(&ca);
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
	if (q->ev_prune != NULL)
		event_free(q->ev_prune);
	q->ev_prune = NULL;	/* a prune still queued finishes below */
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

/* queue_enqueue - hand request r to the writer thread; what names the
 * caller in the fatal message when the queue is already stopping */
static struct queue_req *
queue_enqueue(struct queue *q, struct queue_req *r, const char *what)
{
	int urgent = queue_req_urgent(r);

	r->enq_ms = util_now_ms();
	pthread_mutex_lock(&q->mtx);
	if (q->stopping)
		fatalx("%s: queue is stopping", what);
	TAILQ_INSERT_TAIL(&q->pending, r, entry);
	q->npending++;
	q->nurgent += urgent;
	/* the writer waits for a first request, and lingers over
	 * background ones until an urgent one or enough of them come */
	if (urgent || q->npending == 1 || q->npending >= QUEUE_LINGER_REQS)
		pthread_cond_signal(&q->cond);
	pthread_mutex_unlock(&q->mtx);
	return r;
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
	r->envid = envl->envid ? xstrdup(envl->envid) : NULL;
	r->ret = envl->ret ? xstrdup(envl->ret) : NULL;
	r->notify = queue_strv_dup(envl->notify, r->nrcpts);
	r->orcpt = queue_strv_dup(envl->orcpt, r->nrcpts);
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
	if (envl->aux_key != NULL && envl->aux_keylen > 0) {
		r->aux_db = envl->aux_db;
		r->aux_key = xmalloc(envl->aux_keylen);
		memcpy(r->aux_key, envl->aux_key, envl->aux_keylen);
		r->aux_keylen = envl->aux_keylen;
		r->aux_val = envl->aux_val ? xstrdup(envl->aux_val) : NULL;
	}
	r->cb = cb;
	r->arg = arg;
	if (qid_r != NULL)
		memcpy(qid_r, r->qid, QUEUE_ID_LEN + 1);

	return queue_enqueue(q, r, "queue_submit");
}

void
queue_cancel(struct queue_req *r)
{
	r->cancelled = 1;
}

struct queue_req *
queue_update(struct queue *q, const char *qid,
    const struct queue_rcpt_update *u, size_t n, queue_done_cb cb, void *arg)
{
	struct queue_req *r = xcalloc(1, sizeof(*r));
	size_t i;

	r->kind = QUEUE_REQ_UPDATE;
	util_strlcpy(r->qid, qid, sizeof(r->qid));
	r->upd = xcalloc(n ? n : 1, sizeof(*r->upd));
	r->nupd = n;
	for (i = 0; i < n; i++) {
		r->upd[i] = u[i];
		r->upd[i].status = xstrdup(u[i].status ? u[i].status :
		    "deferred");
		r->upd[i].enhanced = xstrdup(u[i].enhanced ? u[i].enhanced : "");
		r->upd[i].text = xstrdup(u[i].text ? u[i].text : "");
		r->upd[i].relay = u[i].relay ? xstrdup(u[i].relay) : NULL;
		r->upd[i].category = u[i].category ? xstrdup(u[i].category) :
		    NULL;
	}
	r->cb = cb;
	r->arg = arg;

	return queue_enqueue(q, r, "queue_update");
}

struct queue_req *
queue_set_prepared(struct queue *q, const char *qid, struct evbuffer *body,
    struct evbuffer *const *rbodies, const unsigned *idx, size_t n,
    queue_done_cb cb, void *arg)
{
	struct queue_req *r = xcalloc(1, sizeof(*r));
	size_t i;

	r->kind = QUEUE_REQ_PREPARED;
	util_strlcpy(r->qid, qid, sizeof(r->qid));
	if (body != NULL) {
		if ((r->body = evbuffer_new()) == NULL ||
		    evbuffer_add_buffer(r->body, body) != 0)
			fatalx("queue_set_prepared: evbuffer failed");
		r->size = evbuffer_get_length(r->body);
	}
	r->rbodies = xcalloc(n ? n : 1, sizeof(*r->rbodies));
	r->ridx = xcalloc(n ? n : 1, sizeof(*r->ridx));
	r->nrbodies = n;
	for (i = 0; i < n; i++) {
		if ((r->rbodies[i] = evbuffer_new()) == NULL ||
		    evbuffer_add_buffer(r->rbodies[i], rbodies[i]) != 0)
			fatalx("queue_set_prepared: evbuffer failed");
		r->ridx[i] = idx[i];
		r->size += evbuffer_get_length(r->rbodies[i]);
	}
	r->cb = cb;
	r->arg = arg;

	return queue_enqueue(q, r, "queue_set_prepared");
}

struct queue_req *
queue_exec(struct queue *q, queue_exec_fn fn, void (*free_fn)(void *),
    void *arg, queue_done_cb cb, void *cbarg)
{
	struct queue_req *r = xcalloc(1, sizeof(*r));

	r->kind = QUEUE_REQ_EXEC;
	r->exec_fn = fn;
	r->exec_free = free_fn;
	r->exec_arg = arg;
	r->cb = cb;
	r->arg = cbarg;

	return queue_enqueue(q, r, "queue_exec");
}

void
queue_set_notify(struct queue *q, queue_notify_cb fn, void *arg)
{
	q->notify = fn;
	q->notify_arg = arg;
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

/* queue_sched_key - schedule key: 8-byte big-endian time + queue id */
static void
queue_sched_key(unsigned char key[QUEUE_SCHED_KEY_LEN], int64_t t,
    const char *qid)
{
	uint64_t v = t < 0 ? 0 : (uint64_t)t;
	int b;

	for (b = 0; b < 8; b++)
		key[b] = (unsigned char)(v >> (56 - 8 * b));
	memcpy(key + 8, qid, QUEUE_ID_LEN);
}

/* queue_sched_time - the time of a schedule key */
static int64_t
queue_sched_time(const unsigned char *key)
{
	uint64_t v = 0;
	int b;

	for (b = 0; b < 8; b++)
		v = v << 8 | key[b];
	return (int64_t)v;
}

/* queue_rcpt_active - a recipient still to be tried */
static int
queue_rcpt_active(const json_t *rc)
{
	const char *st = json_string_value(json_object_get(rc, "status"));

	return st != NULL && (strcmp(st, "queued") == 0 ||
	    strcmp(st, "deferred") == 0);
}

/* queue_active_min - earliest next_attempt of the active recipients, -1
 * when none is active: the message's one key in the schedule */
static int64_t
queue_active_min(json_t *const *recs, size_t n)
{
	int64_t min = -1, na;
	size_t i;

	for (i = 0; i < n; i++) {
		if (recs[i] == NULL || !queue_rcpt_active(recs[i]))
			continue;
		na = json_integer_value(json_object_get(recs[i],
		    "next_attempt"));
		if (min < 0 || na < min)
			min = na;
	}
	return min;
}

/* queue_rcpts_load - the recipient records of qid by index into recs[n]
 * (NULL where absent); 0 or an LMDB error */
static int
queue_rcpts_load(MDB_txn *txn, MDB_dbi dbi, const char *qid, json_t **recs,
    size_t n)
{
	unsigned char rkey[QUEUE_RCPT_KEY_LEN];
	MDB_cursor *cur;
	MDB_val key, val;
	const unsigned char *k;
	size_t idx;
	int rc;

	memcpy(rkey, qid, QUEUE_ID_LEN);
	rkey[QUEUE_ID_LEN] = rkey[QUEUE_ID_LEN + 1] = 0;
	if ((rc = mdb_cursor_open(txn, dbi, &cur)) != 0)
		return rc;
	key.mv_size = sizeof(rkey);
	key.mv_data = rkey;
	for (rc = mdb_cursor_get(cur, &key, &val, MDB_SET_RANGE); rc == 0;
	    rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT)) {
		k = key.mv_data;
		if (key.mv_size != QUEUE_RCPT_KEY_LEN ||
		    memcmp(k, qid, QUEUE_ID_LEN) != 0)
			break;
		idx = (size_t)k[QUEUE_ID_LEN] << 8 | k[QUEUE_ID_LEN + 1];
		if (idx < n && recs[idx] == NULL)
			recs[idx] = json_loadb(val.mv_data, val.mv_size, 0,
			    NULL);
	}
	mdb_cursor_close(cur);
	return rc == MDB_NOTFOUND ? 0 : rc;
}

/* queue_resched - move qid's schedule key from old to new (-1: none) */
static int
queue_resched(MDB_txn *txn, MDB_dbi dbi, const char *qid, int64_t old,
    int64_t new)
{
	unsigned char skey[QUEUE_SCHED_KEY_LEN];
	MDB_val key = { sizeof(skey), skey }, val = { 0, (void *)"" };
	int rc;

	if (old == new)
		return 0;
	if (old >= 0) {
		queue_sched_key(skey, old, qid);
		rc = mdb_del(txn, dbi, &key, NULL);
		if (rc != 0 && rc != MDB_NOTFOUND)
			return rc;
	}
	if (new >= 0) {
		queue_sched_key(skey, new, qid);
		if ((rc = mdb_put(txn, dbi, &key, &val, 0)) != 0)
			return rc;
	}
	return 0;
}

/* queue_suppress - the suppression record of a hard bounce, inside txn:
 * reason "CODE ENH text" of the bounce */
static int
queue_suppress(MDB_txn *txn, struct store *st, const json_t *msg,
    const json_t *rec, const struct queue_rcpt_update *u, const char *qid)
{
	char *reason;
	int rc;

	reason = xasprintf("%d%s%s %s", u->code, u->enhanced[0] ? " " : "",
	    u->enhanced, u->text);
	rc = suppress_put_txn(st, txn, json_string_value(json_object_get(msg,
	    "tenant")), json_string_value(json_object_get(rec, "address")),
	    reason, u->category, "bounce", qid);
	free(reason);
	return rc == MDB_BAD_VALSIZE ? 0 : rc;
}

/* queue_write_update - apply one attempt's recipient results inside txn:
 * the rcpts records and the message's schedule key change together. A
 * recipient already delivered or bounced is never changed again. */
static int
queue_write_update(struct queue *q, MDB_txn *txn, struct queue_req *r,
    int64_t now, const char **err_r)
{
	struct store *st = q->store;
	MDB_dbi drc = store_dbi(st, DB_RCPTS);
	unsigned char rkey[QUEUE_RCPT_KEY_LEN];
	const struct queue_rcpt_update *u;
	json_t *msg, **recs, *rec, *reply;
	int64_t old, new;
	size_t n, i;
	int rc = 0;

	msg = queue_get_json(txn, store_dbi(st, DB_MESSAGES), r->qid,
	    QUEUE_ID_LEN);
	if (msg == NULL) {
		r->gone = 1;		/* deleted meanwhile: nothing to do */
		return 0;
	}
	n = (size_t)json_integer_value(json_object_get(msg, "nrcpts"));
	if (n > QUEUE_RCPTS_MAX)
		n = QUEUE_RCPTS_MAX;
	recs = xcalloc(n ? n : 1, sizeof(*recs));
	if ((rc = queue_rcpts_load(txn, drc, r->qid, recs, n)) != 0)
		goto fail;
	old = queue_active_min(recs, n);
	memcpy(rkey, r->qid, QUEUE_ID_LEN);
	for (i = 0; i < r->nupd; i++) {
		u = &r->upd[i];
		if (u->idx >= n || (rec = recs[u->idx]) == NULL ||
		    !queue_rcpt_active(rec))
			continue;
		json_object_set_new(rec, "status", json_string(u->status));
		if (u->count_attempt)
			json_object_set_new(rec, "attempts", json_integer(
			    json_integer_value(json_object_get(rec,
			    "attempts")) + 1));
		reply = json_pack("{s:i, s:o, s:o}", "code", u->code,
		    "enhanced", events_jstr(u->enhanced), "text",
		    events_jstr(u->text));
		if (reply == NULL)
			fatalx("queue: json_pack failed");
		if (u->relay != NULL)
			json_object_set_new(reply, "relay",
			    events_jstr(u->relay));
		if (u->category != NULL && u->category[0] != '\0')
			json_object_set_new(reply, "category",
			    events_jstr(u->category));
		json_object_set_new(rec, "last_reply", reply);
		json_object_set_new(rec, "updated_at", json_integer(now));
		json_object_set_new(rec, "next_attempt", json_integer(
		    queue_rcpt_active(rec) ? u->next_attempt : 0));
		rkey[QUEUE_ID_LEN] = (unsigned char)(u->idx >> 8);
		rkey[QUEUE_ID_LEN + 1] = (unsigned char)(u->idx & 0xff);
		if ((rc = queue_put_json(txn, drc, rkey, sizeof(rkey), rec,
		    0)) != 0)
			goto fail;
		/* a hard bounce lists the address (an address that cannot be
		 * listed is skipped, not an error) */
		if (u->suppress && strcmp(u->status, "bounced") == 0 &&
		    (rc = queue_suppress(txn, st, msg, rec, u, r->qid)) != 0)
			goto fail;
		/* its event, in the same transaction */
		if ((rc = events_update_txn(txn, st, msg, rec)) != 0)
			goto fail;
	}
	new = queue_active_min(recs, n);
	if ((rc = queue_resched(txn, store_dbi(st, DB_SCHEDULE), r->qid, old,
	    new)) != 0)
		goto fail;
	if (new < 0 && old >= 0) {
		/* every recipient is final: nothing will send the bytes
		 * again (a DSN is made from the copy in memory), so they go
		 * now, as a Postfix queue file would; the records stay */
		json_object_set_new(msg, "stage", json_string("done"));
		rc = queue_put_json(txn, store_dbi(st, DB_MESSAGES), r->qid,
		    QUEUE_ID_LEN, msg, 0);
		if (rc == 0)
			rc = queue_del_bodies(st, txn, r->qid, n);
	}
fail:
	for (i = 0; i < n; i++)
		if (recs[i] != NULL)
			json_decref(recs[i]);
	free(recs);
	json_decref(msg);
	if (rc != 0)
		*err_r = rc == MDB_MAP_FULL ? "queue storage full" :
		    "queue write failed";
	return rc;
}

/* queue_put_body - bytes of buf under key in bodies (overwriting) */
static int
queue_put_body(struct queue *q, MDB_txn *txn, const void *k, size_t klen,
    struct evbuffer *buf)
{
	MDB_val key = { klen, (void *)k }, val;
	size_t len = evbuffer_get_length(buf);
	int rc;

	val.mv_size = len;
	val.mv_data = NULL;
	if ((rc = mdb_put(txn, store_dbi(q->store, DB_BODIES), &key, &val,
	    MDB_RESERVE)) != 0)
		return rc;
	if (len > 0 &&
	    evbuffer_copyout(buf, val.mv_data, len) != (ev_ssize_t)len)
		fatalx("queue: evbuffer_copyout short");
	return 0;
}

/* queue_head_key - the key of qid's prepared head */
static void
queue_head_key(unsigned char key[QUEUE_HEAD_KEY_LEN], const char *qid)
{
	memcpy(key, qid, QUEUE_ID_LEN);
	key[QUEUE_ID_LEN] = QUEUE_HEAD_MARK;
}

/* queue_del_bodies - every stored byte of qid's message (as received or
 * prepared, the prepared head, the copies of recipients 0..nrcpts-1),
 * inside txn; what is not there is no error */
static int
queue_del_bodies(struct store *st, MDB_txn *txn, const char *qid,
    size_t nrcpts)
{
	unsigned char key[QUEUE_RCPT_KEY_LEN];
	MDB_dbi dbi = store_dbi(st, DB_BODIES);
	MDB_val k;
	size_t i;
	int rc;

	memcpy(key, qid, QUEUE_ID_LEN);
	k.mv_data = key;
	for (i = 0; i < nrcpts; i++) {
		key[QUEUE_ID_LEN] = (unsigned char)(i >> 8);
		key[QUEUE_ID_LEN + 1] = (unsigned char)(i & 0xff);
		k.mv_size = QUEUE_RCPT_KEY_LEN;
		if ((rc = mdb_del(txn, dbi, &k, NULL)) != 0 &&
		    rc != MDB_NOTFOUND)
			return rc;
	}
	key[QUEUE_ID_LEN] = QUEUE_HEAD_MARK;
	k.mv_size = QUEUE_HEAD_KEY_LEN;
	if ((rc = mdb_del(txn, dbi, &k, NULL)) != 0 && rc != MDB_NOTFOUND)
		return rc;
	k.mv_size = QUEUE_ID_LEN;
	if ((rc = mdb_del(txn, dbi, &k, NULL)) != 0 && rc != MDB_NOTFOUND)
		return rc;
	return 0;
}

/* queue_put_prepared - store the prepared message body: when it is the
 * stored bytes with header lines in front (DKIM-Signature, ARC-*), only
 * those lines are written, not the whole message again */
static int
queue_put_prepared(struct queue *q, MDB_txn *txn, const char *qid,
    struct evbuffer *body)
{
	unsigned char hkey[QUEUE_HEAD_KEY_LEN];
	MDB_dbi dbi = store_dbi(q->store, DB_BODIES);
	MDB_val key = { QUEUE_ID_LEN, (void *)qid }, orig, head;
	size_t len = evbuffer_get_length(body), hlen;
	const unsigned char *p;
	int rc;

	queue_head_key(hkey, qid);
	key.mv_size = QUEUE_ID_LEN;
	if (mdb_get(txn, dbi, &key, &orig) == 0 && orig.mv_size <= len) {
		hlen = len - orig.mv_size;
		p = evbuffer_pullup(body, -1);
		if (p != NULL && memcmp(p + hlen, orig.mv_data,
		    orig.mv_size) == 0) {
			key.mv_size = sizeof(hkey);
			key.mv_data = hkey;
			head.mv_size = hlen;
			head.mv_data = (void *)p;
			return mdb_put(txn, dbi, &key, &head, 0);
		}
	}
	key.mv_size = sizeof(hkey);
	key.mv_data = hkey;
	if ((rc = mdb_del(txn, dbi, &key, NULL)) != 0 && rc != MDB_NOTFOUND)
		return rc;
	return queue_put_body(q, txn, qid, QUEUE_ID_LEN, body);
}

/* queue_get_body - qid's message bytes (prepared head, if any, and body)
 * appended to buf, inside txn */
static int
queue_get_body(struct store *st, MDB_txn *txn, const char *qid,
    struct evbuffer *buf)
{
	unsigned char hkey[QUEUE_HEAD_KEY_LEN];
	MDB_dbi dbi = store_dbi(st, DB_BODIES);
	MDB_val key, head, val;
	int rc;

	queue_head_key(hkey, qid);
	key.mv_size = sizeof(hkey);
	key.mv_data = hkey;
	if ((rc = mdb_get(txn, dbi, &key, &head)) != 0 && rc != MDB_NOTFOUND)
		return -1;
	key.mv_size = QUEUE_ID_LEN;
	key.mv_data = (void *)qid;
	if (mdb_get(txn, dbi, &key, &val) != 0)
		return -1;
	if (rc == 0 && evbuffer_add(buf, head.mv_data, head.mv_size) != 0)
		return -1;
	return evbuffer_add(buf, val.mv_data, val.mv_size);
}

/* queue_write_prepared - a message's prepared bytes and stage, inside
 * txn; a message already prepared (or gone) is left alone */
static int
queue_write_prepared(struct queue *q, MDB_txn *txn, struct queue_req *r,
    const char **err_r)
{
	unsigned char rkey[QUEUE_RCPT_KEY_LEN];
	const char *stage;
	json_t *msg;
	size_t i;
	int rc = 0;

	msg = queue_get_json(txn, store_dbi(q->store, DB_MESSAGES), r->qid,
	    QUEUE_ID_LEN);
	if (msg == NULL) {
		r->gone = 1;
		return 0;
	}
	stage = json_string_value(json_object_get(msg, "stage"));
	if (stage != NULL && (strcmp(stage, "prepared") == 0 ||
	    strcmp(stage, "done") == 0)) {
		json_decref(msg);
		return 0;
	}
	if (r->body != NULL) {
		rc = queue_put_prepared(q, txn, r->qid, r->body);
		json_object_set_new(msg, "prepared_size", json_integer(
		    (json_int_t)evbuffer_get_length(r->body)));
	}
	memcpy(rkey, r->qid, QUEUE_ID_LEN);
	for (i = 0; rc == 0 && i < r->nrbodies; i++) {
		rkey[QUEUE_ID_LEN] = (unsigned char)(r->ridx[i] >> 8);
		rkey[QUEUE_ID_LEN + 1] = (unsigned char)(r->ridx[i] & 0xff);
		rc = queue_put_body(q, txn, rkey, sizeof(rkey), r->rbodies[i]);
	}
	if (rc == 0) {
		json_object_set_new(msg, "stage", json_string("prepared"));
		if (r->nrbodies > 0)
			json_object_set_new(msg, "personalised", json_true());
		rc = queue_put_json(txn, store_dbi(q->store, DB_MESSAGES),
		    r->qid, QUEUE_ID_LEN, msg, 0);
	}
	json_decref(msg);
	if (rc != 0)
		*err_r = rc == MDB_MAP_FULL ? "queue storage full" :
		    "queue write failed";
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

	if (r->kind == QUEUE_REQ_UPDATE)
		return queue_write_update(q, txn, r, now, err_r);
	if (r->kind == QUEUE_REQ_PREPARED)
		return queue_write_prepared(q, txn, r, err_r);
	if (r->kind == QUEUE_REQ_EXEC) {
		if ((rc = r->exec_fn(txn, st, r->exec_arg)) != 0)
			*err_r = rc == MDB_MAP_FULL ? "queue storage full" :
			    "queue write failed";
		return rc;
	}
	if (r->nrcpts == 0 || r->nrcpts > QUEUE_RCPTS_MAX) {
		*err_r = "bad number of recipients";
		return EINVAL;
	}
	msg = json_pack("{s:s, s:o, s:o, s:o, s:o, s:I, s:I, s:O, s:I, s:s}",
	    "id", r->qid, "tenant", events_jstr(r->tenant),
	    "mail_from", events_jstr(r->mail_from),
	    "header_from", events_jstr(r->header_from),
	    "message_id", events_jstr(r->message_id),
	    "size", (json_int_t)r->size, "received_at",
	    (json_int_t)r->received_at, "client", r->client,
	    "nrcpts", (json_int_t)r->nrcpts, "stage", "received");
	if (msg == NULL)
		fatalx("queue: json_pack failed");
	if (r->envid != NULL)
		json_object_set_new(msg, "envid", events_jstr(r->envid));
	if (r->ret != NULL)
		json_object_set_new(msg, "ret", events_jstr(r->ret));
	rc = queue_put_json(txn, store_dbi(st, DB_MESSAGES), r->qid,
	    QUEUE_ID_LEN, msg, MDB_NOOVERWRITE);
	/* one "queued" event per recipient, in the same transaction */
	if (rc == 0)
		rc = events_queued_txn(txn, st, msg,
		    (const char *const *)r->rcpts, r->nrcpts);
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
		    "address", events_jstr(r->rcpts[i]), "status", "queued",
		    "attempts", 0, "last_reply", "", "updated_at",
		    (json_int_t)now, "next_attempt", (json_int_t)now);
		if (rc_obj == NULL)
			fatalx("queue: json_pack failed");
		if (r->notify != NULL && r->notify[i] != NULL)
			json_object_set_new(rc_obj, "notify",
			    events_jstr(r->notify[i]));
		if (r->orcpt != NULL && r->orcpt[i] != NULL)
			json_object_set_new(rc_obj, "orcpt",
			    events_jstr(r->orcpt[i]));
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
	if (r->aux_key != NULL) {
		key.mv_size = r->aux_keylen;
		key.mv_data = r->aux_key;
		val.mv_size = r->aux_val ? strlen(r->aux_val) : QUEUE_ID_LEN;
		val.mv_data = r->aux_val ? r->aux_val : r->qid;
		if ((rc = mdb_put(txn, store_dbi(st, (enum store_db)r->aux_db),
		    &key, &val, MDB_NOOVERWRITE)) != 0) {
			*err_r = rc == MDB_KEYEXIST ? "duplicate record" :
			    rc == MDB_MAP_FULL ? "queue storage full" :
			    "queue write failed";
			return rc;
		}
	}
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
			events_txn_end(0);
			return rc;
		}
	}
	if ((rc = mdb_txn_commit(txn)) != 0) {
		events_txn_end(0);
		*err_r = rc == MDB_MAP_FULL ? "queue storage full" :
		    "queue commit failed";
		return rc;
	}
	events_txn_end(1);
	return 0;
}

/* queue_fail - mark r as not stored */
static void
queue_fail(struct queue_req *r, int rc, const char *reason)
{
	r->status = -1;
	r->err = xstrdup(reason);
	if (r->kind != QUEUE_REQ_SUBMIT) {
		log_warn("qid=%s event=%s status=failed reason=\"%s\" "
		    "error=\"%s\"", r->qid, r->kind == QUEUE_REQ_UPDATE ?
		    "update" : "prepared", reason, mdb_strerror(rc));
		return;
	}
	log_warn("qid=%s tenant=%s status=failed reason=\"%s\" error=\"%s\"",
	    r->qid, r->tenant, reason, mdb_strerror(rc));
}

/* queue_ok - r is committed */
static void
queue_ok(struct queue_req *r)
{
	r->status = 0;
	if (r->kind != QUEUE_REQ_SUBMIT) {
		if (r->gone) {
			r->status = -1;
			r->err = xstrdup("no such message");
		}
		return;
	}
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
	uint64_t commits = 0, stored = 0, updates = 0;
	size_t i;
	int rc;

	rc = queue_write_batch(q, reqs, n, &bad, &err);
	if (rc == 0) {
		commits = 1;
		for (i = 0; i < n; i++) {
			if (reqs[i]->kind == QUEUE_REQ_SUBMIT)
				stored++;
			else
				updates++;
			queue_ok(reqs[i]);
		}
	} else if (n == 1) {
		queue_fail(reqs[0], rc, err);
	} else {
		log_warn("queue: batch of %zu failed (%s), retrying one by one",
		    n, mdb_strerror(rc));
		for (i = 0; i < n; i++) {
			rc = queue_write_batch(q, &reqs[i], 1, &bad, &err);
			if (rc == 0) {
				commits++;
				if (reqs[i]->kind == QUEUE_REQ_SUBMIT)
					stored++;
				else
					updates++;
				queue_ok(reqs[i]);
			} else
				queue_fail(reqs[i], rc, err);
		}
	}
	pthread_mutex_lock(&q->mtx);
	q->commits += commits;
	q->messages += stored;
	q->updates += updates;
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
	struct timespec ts;
	size_t n, bytes, i;
	uint64_t t0, now, until;

	batch = xcalloc(QUEUE_BATCH_MAX_REQS, sizeof(*batch));
	pthread_mutex_lock(&q->mtx);
	for (;;) {
		while (TAILQ_EMPTY(&q->pending) && !q->stopping)
			pthread_cond_wait(&q->cond, &q->mtx);
		if (TAILQ_EMPTY(&q->pending))
			break;		/* stopping and drained */
		/* only background work: let more of it gather, so that a
		 * stream of delivery results and prepared bodies shares
		 * commits (and syncs) instead of taking one each */
		while (!q->stopping && q->nurgent == 0 &&
		    q->npending < QUEUE_LINGER_REQS) {
			now = util_now_ms();
			until = TAILQ_FIRST(&q->pending)->enq_ms +
			    QUEUE_LINGER_MS;
			if (now >= until)
				break;
			clock_gettime(CLOCK_MONOTONIC, &ts);
			ts.tv_nsec += (long)(until - now) * 1000000;
			ts.tv_sec += ts.tv_nsec / 1000000000;
			ts.tv_nsec %= 1000000000;
			pthread_cond_timedwait(&q->cond, &q->mtx, &ts);
		}
		n = bytes = 0;
		while ((r = TAILQ_FIRST(&q->pending)) != NULL &&
		    n < QUEUE_BATCH_MAX_REQS &&
		    (n == 0 || bytes + r->size <= QUEUE_BATCH_MAX_BYTES)) {
			TAILQ_REMOVE(&q->pending, r, entry);
			q->npending--;
			q->nurgent -= queue_req_urgent(r);
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
		/* a new message is committed: delivery may start */
		if (r->kind == QUEUE_REQ_SUBMIT && r->status == 0 &&
		    q->notify != NULL)
			q->notify(q->notify_arg, r->qid);
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

/* queue_rcpts_json - the recipients of qid as an array, in index order,
 * each with its "index" */
static json_t *
queue_rcpts_json(struct store *st, MDB_txn *txn, const char *qid)
{
	const unsigned char *k;
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
		if ((o = json_loadb(val.mv_data, val.mv_size, 0, NULL)) == NULL)
			continue;
		k = key.mv_data;
		json_object_set_new(o, "index", json_integer(
		    (json_int_t)k[QUEUE_ID_LEN] << 8 | k[QUEUE_ID_LEN + 1]));
		json_array_append_new(arr, o);
	}
	mdb_cursor_close(cur);
	return arr;
}

json_t *
queue_show_json(struct store *st, const char *qid)
{
	return queue_load(st, qid, NULL);
}

/* queue_idcmp - qsort order of queue ids (time order) */
static int
queue_idcmp(const void *a, const void *b)
{
	return strcmp(a, b);
}

json_t *
queue_list_json(struct store *st)
{
	MDB_txn *txn;
	MDB_cursor *cur;
	MDB_val key, val;
	json_t *list = json_array(), *msg, *rcpts, *rc_obj, *item, *cat;
	char qid[QUEUE_ID_LEN + 1];
	const char *status;
	json_int_t next, na, received;
	char (*ids)[QUEUE_ID_LEN + 1] = NULL;
	int64_t now = util_now();
	size_t i, j, active, queued, nids = 0, capids = 0;
	int rc;

	if (mdb_txn_begin(store_env(st), NULL, MDB_RDONLY, &txn) != 0)
		return list;
	/* the messages with a recipient still to deliver are the ones in
	 * the schedule index: finished ones (kept for message_retention)
	 * are not read at all; listed in queue id (arrival) order */
	if (mdb_cursor_open(txn, store_dbi(st, DB_SCHEDULE), &cur) != 0) {
		mdb_txn_abort(txn);
		return list;
	}
	for (rc = mdb_cursor_get(cur, &key, &val, MDB_FIRST); rc == 0;
	    rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT)) {
		if (key.mv_size != QUEUE_SCHED_KEY_LEN)
			continue;
		if (nids == capids) {
			capids = capids ? 2 * capids : 64;
			ids = xrealloc(ids, capids * sizeof(*ids));
		}
		memcpy(ids[nids], (char *)key.mv_data + 8, QUEUE_ID_LEN);
		ids[nids++][QUEUE_ID_LEN] = '\0';
	}
	mdb_cursor_close(cur);
	if (nids > 1)
		qsort(ids, nids, sizeof(*ids), queue_idcmp);
	for (j = 0; j < nids; j++) {
		if (j > 0 && strcmp(ids[j], ids[j - 1]) == 0)
			continue;
		memcpy(qid, ids[j], sizeof(qid));
		if ((msg = queue_get_json(txn, store_dbi(st, DB_MESSAGES), qid,
		    QUEUE_ID_LEN)) == NULL)
			continue;
		rcpts = queue_rcpts_json(st, txn, qid);
		active = queued = 0;
		next = 0;
		cat = NULL;	/* the first deferred recipient's category */
		json_array_foreach(rcpts, i, rc_obj) {
			status = json_string_value(json_object_get(rc_obj,
			    "status"));
			if (status == NULL || (strcmp(status, "queued") != 0 &&
			    strcmp(status, "deferred") != 0))
				continue;
			active++;
			if (strcmp(status, "queued") == 0)
				queued++;
			else if (cat == NULL)
				cat = json_incref(json_object_get(json_object_get(
				    rc_obj, "last_reply"), "category"));
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
			if (item != NULL && json_is_string(cat))
				json_object_set(item, "category", cat);
			if (item != NULL)
				json_array_append_new(list, item);
		}
		json_decref(cat);
		json_decref(msg);
	}
	free(ids);
	mdb_txn_abort(txn);
	return list;
}

int
queue_body_get(struct store *st, const char *qid, struct evbuffer *buf)
{
	MDB_txn *txn;
	int ret;

	if (queue_id_valid(qid) != 0)
		return -1;
	if (mdb_txn_begin(store_env(st), NULL, MDB_RDONLY, &txn) != 0)
		return -1;
	ret = queue_get_body(st, txn, qid, buf);
	mdb_txn_abort(txn);
	return ret;
}

int
queue_rcpt_body_get(struct store *st, const char *qid, unsigned idx,
    struct evbuffer *buf)
{
	unsigned char rkey[QUEUE_RCPT_KEY_LEN];
	MDB_txn *txn;
	MDB_val key, val;
	int ret = -1;

	if (queue_id_valid(qid) != 0 || idx > QUEUE_RCPTS_MAX)
		return -1;
	if (mdb_txn_begin(store_env(st), NULL, MDB_RDONLY, &txn) != 0)
		return -1;
	memcpy(rkey, qid, QUEUE_ID_LEN);
	rkey[QUEUE_ID_LEN] = (unsigned char)(idx >> 8);
	rkey[QUEUE_ID_LEN + 1] = (unsigned char)(idx & 0xff);
	key.mv_size = sizeof(rkey);
	key.mv_data = rkey;
	if (mdb_get(txn, store_dbi(st, DB_BODIES), &key, &val) == 0 &&
	    evbuffer_add(buf, val.mv_data, val.mv_size) == 0)
		ret = 0;
	mdb_txn_abort(txn);
	return ret;
}

json_t *
queue_load(struct store *st, const char *qid, struct evbuffer *body)
{
	MDB_txn *txn;
	json_t *msg;

	if (queue_id_valid(qid) != 0)
		return NULL;
	if (mdb_txn_begin(store_env(st), NULL, MDB_RDONLY, &txn) != 0)
		return NULL;
	msg = queue_get_json(txn, store_dbi(st, DB_MESSAGES), qid,
	    QUEUE_ID_LEN);
	if (msg != NULL && !json_is_object(msg)) {
		json_decref(msg);
		msg = NULL;
	}
	if (msg != NULL) {
		json_object_set_new(msg, "recipients",
		    queue_rcpts_json(st, txn, qid));
		if (body != NULL && queue_get_body(st, txn, qid, body) != 0) {
			json_decref(msg);
			msg = NULL;
		}
	}
	mdb_txn_abort(txn);
	return msg;
}

size_t
queue_scan_due(struct store *st, int64_t now, size_t max,
    int (*skip)(void *, const char *), void *arg,
    char (*qids)[QUEUE_ID_LEN + 1])
{
	MDB_txn *txn;
	MDB_cursor *cur;
	MDB_val key, val;
	char qid[QUEUE_ID_LEN + 1];
	size_t n = 0;
	int rc;

	if (max == 0)
		return 0;
	if (mdb_txn_begin(store_env(st), NULL, MDB_RDONLY, &txn) != 0)
		return 0;
	if (mdb_cursor_open(txn, store_dbi(st, DB_SCHEDULE), &cur) != 0) {
		mdb_txn_abort(txn);
		return 0;
	}
	for (rc = mdb_cursor_get(cur, &key, &val, MDB_FIRST); rc == 0 &&
	    n < max; rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT)) {
		if (key.mv_size != QUEUE_SCHED_KEY_LEN)
			continue;
		if (queue_sched_time(key.mv_data) > now)
			break;
		memcpy(qid, (char *)key.mv_data + 8, QUEUE_ID_LEN);
		qid[QUEUE_ID_LEN] = '\0';
		if (skip != NULL && skip(arg, qid))
			continue;
		memcpy(qids[n++], qid, sizeof(qid));
	}
	mdb_cursor_close(cur);
	mdb_txn_abort(txn);
	return n;
}

/* queue_flush_one - inside txn: every active recipient of qid due at now,
 * its schedule key moved from old to now */
static int
queue_flush_one(struct store *st, MDB_txn *txn, const char *qid,
    int64_t old, int64_t now)
{
	MDB_dbi drc = store_dbi(st, DB_RCPTS);
	unsigned char rkey[QUEUE_RCPT_KEY_LEN];
	json_t **recs;
	size_t i;
	int rc;

	recs = xcalloc(QUEUE_RCPTS_MAX, sizeof(*recs));
	rc = queue_rcpts_load(txn, drc, qid, recs, QUEUE_RCPTS_MAX);
	memcpy(rkey, qid, QUEUE_ID_LEN);
	for (i = 0; i < QUEUE_RCPTS_MAX; i++) {
		if (recs[i] == NULL)
			continue;
		if (rc == 0 && queue_rcpt_active(recs[i])) {
			json_object_set_new(recs[i], "next_attempt",
			    json_integer(now));
			rkey[QUEUE_ID_LEN] = (unsigned char)(i >> 8);
			rkey[QUEUE_ID_LEN + 1] = (unsigned char)(i & 0xff);
			rc = queue_put_json(txn, drc, rkey, sizeof(rkey),
			    recs[i], 0);
		}
		json_decref(recs[i]);
	}
	free(recs);
	if (rc == 0)
		rc = queue_resched(txn, store_dbi(st, DB_SCHEDULE), qid, old,
		    now);
	return rc;
}

long
queue_flush(struct store *st, char **err_r)
{
	MDB_txn *txn;
	MDB_cursor *cur;
	MDB_val key, val;
	unsigned char skey[QUEUE_SCHED_KEY_LEN];
	char (*qids)[QUEUE_ID_LEN + 1] = NULL;
	int64_t *olds = NULL, now = util_now();
	size_t n = 0, cap = 0, i;
	int rc;

	*err_r = NULL;
	if ((rc = mdb_txn_begin(store_env(st), NULL, 0, &txn)) != 0) {
		*err_r = xasprintf("cannot write the queue: %s",
		    mdb_strerror(rc));
		return -1;
	}
	if ((rc = mdb_cursor_open(txn, store_dbi(st, DB_SCHEDULE), &cur)) != 0)
		goto fail;
	for (i = 0; i < 8; i++)
		skey[i] = (unsigned char)((uint64_t)(now + 1) >> (56 - 8 * i));
	key.mv_size = 8;
	key.mv_data = skey;
	/* collect first: the loop below changes the schedule */
	for (rc = mdb_cursor_get(cur, &key, &val, MDB_SET_RANGE); rc == 0;
	    rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT)) {
		if (key.mv_size != QUEUE_SCHED_KEY_LEN)
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 64;
			qids = xrealloc(qids, cap * sizeof(*qids));
			olds = xrealloc(olds, cap * sizeof(*olds));
		}
		memcpy(qids[n], (char *)key.mv_data + 8, QUEUE_ID_LEN);
		qids[n][QUEUE_ID_LEN] = '\0';
		olds[n++] = queue_sched_time(key.mv_data);
	}
	mdb_cursor_close(cur);
	for (i = 0, rc = 0; i < n && rc == 0; i++)
		rc = queue_flush_one(st, txn, qids[i], olds[i], now);
	free(qids);
	free(olds);
	if (rc != 0)
		goto fail;
	if ((rc = mdb_txn_commit(txn)) != 0) {
		*err_r = xasprintf("cannot flush the queue: %s",
		    mdb_strerror(rc));
		return -1;
	}
	return (long)n;
fail:
	mdb_txn_abort(txn);
	*err_r = xasprintf("cannot flush the queue: %s", mdb_strerror(rc));
	return -1;
}

/* queue_delete_txn - every record of qid inside txn: recipients, schedule
 * entry, bodies, tracked links, message. MDB_NOTFOUND when there is no
 * such message. */
static int
queue_delete_txn(struct store *st, MDB_txn *txn, const char *qid)
{
	MDB_val key;
	json_t *msg, **recs;
	unsigned char rkey[QUEUE_RCPT_KEY_LEN];
	int64_t old;
	size_t n, i;
	int rc;

	msg = queue_get_json(txn, store_dbi(st, DB_MESSAGES), qid,
	    QUEUE_ID_LEN);
	if (msg == NULL)
		return MDB_NOTFOUND;
	/* the recipients are 0..nrcpts-1 (queue_write_one) */
	n = (size_t)json_integer_value(json_object_get(msg, "nrcpts"));
	if (n > QUEUE_RCPTS_MAX)
		n = QUEUE_RCPTS_MAX;
	recs = xcalloc(n ? n : 1, sizeof(*recs));
	rc = queue_rcpts_load(txn, store_dbi(st, DB_RCPTS), qid, recs, n);
	old = queue_active_min(recs, n);
	memcpy(rkey, qid, QUEUE_ID_LEN);
	for (i = 0; i < n; i++) {
		if (recs[i] == NULL)
			continue;
		json_decref(recs[i]);
		if (rc != 0)
			continue;
		rkey[QUEUE_ID_LEN] = (unsigned char)(i >> 8);
		rkey[QUEUE_ID_LEN + 1] = (unsigned char)(i & 0xff);
		key.mv_size = sizeof(rkey);
		key.mv_data = rkey;
		rc = mdb_del(txn, store_dbi(st, DB_RCPTS), &key, NULL);
	}
	free(recs);
	json_decref(msg);
	if (rc == 0)
		rc = queue_resched(txn, store_dbi(st, DB_SCHEDULE), qid, old,
		    -1);
	if (rc == 0)
		rc = queue_del_bodies(st, txn, qid, n);
	if (rc == 0)
		rc = tracking_del_txn(txn, st, qid);
	key.mv_size = QUEUE_ID_LEN;
	key.mv_data = (void *)qid;
	if (rc == 0)
		rc = mdb_del(txn, store_dbi(st, DB_MESSAGES), &key, NULL);
	return rc;
}

int
queue_delete(struct store *st, const char *qid, char **err_r)
{
	MDB_txn *txn;
	int rc;

	*err_r = NULL;
	if (queue_id_valid(qid) != 0) {
		*err_r = xstrdup("invalid queue id");
		return -1;
	}
	if ((rc = mdb_txn_begin(store_env(st), NULL, 0, &txn)) != 0) {
		*err_r = xasprintf("cannot write the queue: %s",
		    mdb_strerror(rc));
		return -1;
	}
	if ((rc = queue_delete_txn(st, txn, qid)) == MDB_NOTFOUND) {
		mdb_txn_abort(txn);
		*err_r = xasprintf("no such message: %s", qid);
		return -1;
	}
	if (rc != 0) {
		mdb_txn_abort(txn);
		*err_r = xasprintf("cannot delete %s: %s", qid,
		    mdb_strerror(rc));
		return -1;
	}
	if ((rc = mdb_txn_commit(txn)) != 0) {
		*err_r = xasprintf("cannot delete %s: %s", qid,
		    mdb_strerror(rc));
		return -1;
	}
	return 0;
}

/* Retention: a message whose recipients are all final keeps its records
 * (message show, tracking) for message_retention after it was received;
 * its bytes went when it was done (queue_write_update). */

struct queue_prune {
	struct queue	*q;
	int64_t		 cutoff;	/* unix seconds: received before goes */
	uint64_t	 deleted;	/* set by the writer */
	int		 more;		/* the batch was full */
};

/* queue_prune_fn - writer: delete up to QUEUE_PRUNE_BATCH done messages
 * received before the cutoff (ids are in time order: stop at the first
 * newer one) */
static int
queue_prune_fn(MDB_txn *txn, struct store *st, void *arg)
{
	struct queue_prune *p = arg;
	char (*qids)[QUEUE_ID_LEN + 1];
	MDB_cursor *cur;
	MDB_val key, val;
	const char *stage;
	json_t *msg;
	size_t n = 0, i;
	int rc;

	p->deleted = 0;
	p->more = 0;
	if ((rc = mdb_cursor_open(txn, store_dbi(st, DB_MESSAGES), &cur)) != 0)
		return rc;
	qids = xcalloc(QUEUE_PRUNE_BATCH, sizeof(*qids));
	for (rc = mdb_cursor_get(cur, &key, &val, MDB_FIRST); rc == 0;
	    rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT)) {
		if (key.mv_size != QUEUE_ID_LEN ||
		    (msg = json_loadb(val.mv_data, val.mv_size, 0, NULL)) ==
		    NULL)
			continue;
		if (json_integer_value(json_object_get(msg, "received_at")) >=
		    p->cutoff) {
			json_decref(msg);
			break;
		}
		stage = json_string_value(json_object_get(msg, "stage"));
		if (stage != NULL && strcmp(stage, "done") == 0) {
			if (n == QUEUE_PRUNE_BATCH) {
				p->more = 1;
				json_decref(msg);
				break;
			}
			memcpy(qids[n], key.mv_data, QUEUE_ID_LEN);
			qids[n++][QUEUE_ID_LEN] = '\0';
		}
		json_decref(msg);
	}
	mdb_cursor_close(cur);
	if (rc == MDB_NOTFOUND)
		rc = 0;
	for (i = 0; i < n && rc == 0; i++)
		if ((rc = queue_delete_txn(st, txn, qids[i])) == 0)
			p->deleted++;
	free(qids);
	return rc;
}

static void queue_prune_arm(struct queue *, int);

/* queue_prune_done - main loop: log, go on while there is more */
static void
queue_prune_done(void *arg, int status, const char *qid, const char *err)
{
	struct queue_prune *p = arg;
	struct queue *q = p->q;

	(void)qid;
	q->prune_busy = 0;
	if (status != 0) {
		log_warn("event=queue_prune status=failed reason=\"%s\"",
		    err ? err : "?");
		queue_prune_arm(q, QUEUE_PRUNE_INTERVAL);
		return;
	}
	if (p->deleted > 0)
		log_info("event=queue_pruned deleted=%llu retention=%lds",
		    (unsigned long long)p->deleted, q->retention);
	queue_prune_arm(q, p->more ? 0 : QUEUE_PRUNE_INTERVAL);
}

/* queue_prune_cb - timer: start one prune batch */
static void
queue_prune_cb(evutil_socket_t fd, short what, void *arg)
{
	struct queue *q = arg;
	struct queue_prune *p;

	(void)fd;
	(void)what;
	if (q->prune_busy)
		return;
	p = xcalloc(1, sizeof(*p));
	p->q = q;
	p->cutoff = util_now() - q->retention;
	q->prune_busy = 1;
	queue_exec(q, queue_prune_fn, free, p, queue_prune_done, p);
}

/* queue_prune_arm - next prune run in secs */
static void
queue_prune_arm(struct queue *q, int secs)
{
	struct timeval tv = { secs, 0 };

	if (q->ev_prune != NULL)
		evtimer_add(q->ev_prune, &tv);
}

void
queue_set_retention(struct queue *q, long secs)
{
	q->retention = secs;
	if (q->ev_prune == NULL) {
		if ((q->ev_prune = evtimer_new(q->base, queue_prune_cb, q)) ==
		    NULL)
			fatalx("queue: evtimer_new failed");
		queue_prune_arm(q, 10);
	}
}

void
queue_prune_now(struct queue *q)
{
	queue_prune_arm(q, 0);
}
