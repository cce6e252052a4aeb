/*
 * queue.h - the durable queue in LMDB. New messages go to one store-writer
 * thread that applies every pending request in one write transaction and
 * one sync (group commit), then hands the results back to the main event
 * loop, which sends the 250s of that batch. Nothing is acknowledged before
 * its transaction is committed.
 *
 * Records (named databases from store.h):
 *   messages  qid -> JSON {"id","tenant","mail_from","header_from",
 *                          "message_id","size","received_at","client":{...},
 *                          "nrcpts","stage"}
 *   bodies    qid -> raw message bytes (CRLF lines, as received plus the
 *                    headers Petrel added)
 *   rcpts     qid + 2-byte big-endian index -> JSON {"address","status",
 *                    "attempts","last_reply","updated_at","next_attempt"}
 *             status: queued (never tried), deferred (tried, will be
 *             retried at next_attempt), delivered, bounced (final: never
 *             changed again). last_reply: "" until the first attempt, then
 *             {"code","enhanced","text"[,"relay"]} (code 0 when no server
 *             answered, e.g. a DNS failure; text sanitised). next_attempt
 *             is 0 once final.
 *   schedule  8-byte big-endian next_attempt (unix s) + qid -> ""
 *             exactly one key per message with active (queued/deferred)
 *             recipients: the earliest next_attempt among them; none once
 *             every recipient is final (the message's stage is then
 *             "done", its records stay for message show).
 * A queue id is time-ordered and unique: 48-bit milliseconds + 24 random
 * bits, printed as 14 upper-case base32 characters. 14 characters hold 70
 * bits, so the printed time field is the low 46 bits of the milliseconds
 * (enough until the year 4199). The alphabet is Crockford's
 * (0-9 A-Z without I L O U), whose ASCII order is its numeric order, so
 * ids sort by time as strings and as LMDB keys. The 24 low bits start at
 * a random 23-bit value each millisecond and count up for further ids in
 * the same millisecond, so ids strictly increase within one process; a
 * clash with an id of an earlier process is refused (MDB_NOOVERWRITE).
 */
#ifndef PETREL_QUEUE_H
#define PETREL_QUEUE_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include <lmdb.h>

struct event_base;
struct evbuffer;
struct store;
struct queue;
struct queue_req;

#define QUEUE_ID_LEN 14

/* Envelope of a new message. Strings are copied by queue_submit. */
struct queue_envelope {
	const char	*tenant;
	const char	*mail_from;	/* "" for the null sender */
	const char	*header_from;	/* address of the RFC 5322 From */
	const char	*message_id;
	const char	*const *rcpts;
	size_t		 nrcpts;
	json_t		*client;	/* borrowed: {"ip","helo","tls","auth"} */
	/* SMTP DSN parameters (RFC 3461), all optional (NULL): ENVID and
	 * RET ("FULL"/"HDRS") of the message; NOTIFY ("NEVER" or a list of
	 * SUCCESS, FAILURE, DELAY) and ORCPT ("type;address") per recipient,
	 * as arrays of nrcpts whose entries may be NULL. Copied. */
	const char	*envid;
	const char	*ret;
	const char	*const *notify;
	const char	*const *orcpt;
	/* Optional extra record written with MDB_NOOVERWRITE in the
	 * message's own transaction (the HTTP API's operation id: the
	 * operation and its message are committed together or not at all).
	 * An existing key fails the submit with err "duplicate record".
	 * aux_db is an enum store_db; aux_key NULL = none. Copied. */
	int		 aux_db;
	const void	*aux_key;
	size_t		 aux_keylen;
	const char	*aux_val;	/* NUL-terminated; NULL: the qid */
};

/* Result callback, run on the main loop thread. status 0: committed, qid
 * is the queue id. status -1: not stored (err: reason; the caller answers
 * 452 4.3.1). Never called after queue_cancel(req). err is one of
 * "queue storage full" (MDB_MAP_FULL), "queue id collision",
 * "queue write failed", "queue commit failed", "duplicate record" (aux),
 * "bad number of recipients"
 * (0 or more than 65535). */
typedef void (*queue_done_cb)(void *arg, int status, const char *qid,
    const char *err);

/* queue_new - start the writer thread; results are delivered on base */
struct queue *queue_new(struct store *, struct event_base *base);
/* queue_free - flush pending requests (their callbacks run, synchronously
 * from queue_free on the calling thread: call it on the main thread),
 * stop the thread. No queue_submit after it has begun. */
void queue_free(struct queue *);
/* queue_submit - hand over envelope and message bytes (the evbuffer's
 * contents are moved out; body is empty afterwards). Returns a handle valid
 * until the callback runs. The qid is assigned at once: *qid_r (may be
 * NULL) receives it for logging. */
struct queue_req *queue_submit(struct queue *, const struct queue_envelope *,
    struct evbuffer *body, queue_done_cb cb, void *arg,
    char qid_r[QUEUE_ID_LEN + 1]);
/* queue_cancel - the session went away: the commit still happens (never
 * lose what may be acknowledged) but cb will not be called */
void queue_cancel(struct queue_req *);

/* Readers for petrelctl and the HTTP API (own read transaction). */
/* queue_list_json - array of {"id","tenant","mail_from","nrcpts","size",
 * "received_at","age","next_attempt","status"} for messages not yet done */
json_t *queue_list_json(struct store *);
/* queue_show_json - the message record with its "recipients" array, or
 * NULL when unknown */
json_t *queue_show_json(struct store *, const char *qid);

/* Additions for the delivery side and tests. */
/* queue_id_valid - 0 when s is a syntactically valid queue id */
int queue_id_valid(const char *s);
/* queue_body_get - append the stored message bytes of qid to buf (own read
 * transaction); 0 found, -1 unknown */
int queue_body_get(struct store *, const char *qid, struct evbuffer *buf);
/* queue_stats - write transactions committed and messages stored so far
 * (either pointer may be NULL); callable from any thread */
void queue_stats(struct queue *, uint64_t *commits_r, uint64_t *messages_r);

/*
 * Delivery side.
 *
 * queue_update - record the results of one delivery attempt through the
 * writer thread (same group commit as new messages): the recipients'
 * records and the message's schedule key change in one transaction. cb
 * runs on the main loop once committed: status 0 done; -1 with err
 * "no such message" (deleted meanwhile) or a storage error. Strings are
 * copied.
 */
struct queue_rcpt_update {
	unsigned	 idx;		/* recipient index in the message */
	const char	*status;	/* "delivered", "bounced", "deferred" */
	int		 count_attempt;	/* 1: attempts + 1 */
	int		 code;		/* reply code, 0 when none */
	const char	*enhanced;	/* "5.1.1" or "" */
	const char	*text;		/* sanitised reply text */
	const char	*relay;		/* "host[ip]:port" or NULL */
	int64_t		 next_attempt;	/* deferred: when to retry */
	/* issue 7 (suppress helper): category of a failure (bounce.h's
	 * name, NULL for none), kept as last_reply.category; suppress: a
	 * "bounced" result also lists the recipient on the tenant's
	 * suppression list (suppress.h, source "bounce") in the same
	 * transaction. status may also be "suppressed" (final, no
	 * attempt). */
	const char	*category;
	int		 suppress;
};

struct queue_req *queue_update(struct queue *, const char *qid,
    const struct queue_rcpt_update *, size_t n, queue_done_cb cb, void *arg);

/* queue_set_notify - fn(arg, qid) runs on the main loop after each new
 * message is committed (after its submit callback); NULL turns it off */
typedef void (*queue_notify_cb)(void *arg, const char *qid);
void queue_set_notify(struct queue *, queue_notify_cb fn, void *arg);

/* queue_load - message record with "recipients" (as queue_show_json) and
 * its bytes appended to body (none when body is NULL), in one read
 * transaction; NULL when unknown */
json_t *queue_load(struct store *, const char *qid, struct evbuffer *body);

/* queue_scan_due - up to max queue ids whose schedule key is due (<= now),
 * earliest first, leaving out those for which skip(arg, qid) returns
 * non-zero (skip may be NULL); writes them to qids, returns the count */
size_t queue_scan_due(struct store *, int64_t now, size_t max,
    int (*skip)(void *, const char *), void *arg,
    char (*qids)[QUEUE_ID_LEN + 1]);

/* queue_flush - every message scheduled later than now becomes due now
 * (its active recipients' next_attempt too), in one write transaction
 * (petrelctl queue flush; a running petreld sees it at its next schedule
 * scan). Returns the number of messages moved, -1 and *err_r (to free). */
long queue_flush(struct store *, char **err_r);

/* queue_delete - remove every record of qid (messages, bodies, rcpts,
 * schedule) in one write transaction; -1 and *err_r (to free) when unknown
 * or on error. A delivery in progress finds it gone and stops. */
int queue_delete(struct store *, const char *qid, char **err_r);

/* queue_set_retention - done messages (every recipient final; their bytes
 * are dropped at that point) keep their records secs after they were
 * received, then go with their tracked links; pruned by the loop's timer,
 * QUEUE_PRUNE_BATCH a write, hourly. The first call arms the timer. */
#define QUEUE_PRUNE_BATCH	1000
#define QUEUE_PRUNE_INTERVAL	3600
void queue_set_retention(struct queue *, long secs);
/* queue_prune_now - run the prune at the next loop pass (tests, reload) */
void queue_prune_now(struct queue *);

/*
 * Prepare stage (prepare.c, run by deliver.c before the first attempt).
 *
 * queue_set_prepared - through the writer thread, in one transaction:
 * replace bodies[qid] with body (the signed/sealed bytes), store each
 * per-recipient copy rbodies[i] under bodies qid + 2-byte big-endian
 * index idx[i] (n 0 when the message has no per-recipient copies), and
 * set the message record's "stage" to "prepared" ("personalised": true
 * when n > 0; "prepared_size": bytes of body). A message already
 * "prepared" is left alone (idempotent). body may be NULL to keep the
 * stored bytes (personalised messages keep their unsigned base). The
 * evbuffers' contents are moved out. cb runs on the main loop: status 0
 * committed; -1 "no such message" or a storage error.
 */
struct queue_req *queue_set_prepared(struct queue *, const char *qid,
    struct evbuffer *body, struct evbuffer *const *rbodies,
    const unsigned *idx, size_t n, queue_done_cb cb, void *arg);
/* queue_rcpt_body_get - append the prepared copy of recipient idx of qid
 * to buf; 0 found, -1 none */
int queue_rcpt_body_get(struct store *, const char *qid, unsigned idx,
    struct evbuffer *buf);

/*
 * queue_exec - run fn(txn, store, arg) on the writer thread inside its
 * next group-commit transaction (events.c and webhook.c: events not tied
 * to a queue change, webhook cursors, pruning). fn returns 0 or an LMDB
 * error, which fails it like any request; it may run more than once (a
 * failed batch is retried one request at a time), so it must not consume
 * arg. cb (may be NULL) runs on the main loop after the commit with
 * status 0 or -1; then free_fn(arg) (may be NULL).
 */
typedef int (*queue_exec_fn)(MDB_txn *, struct store *, void *arg);
struct queue_req *queue_exec(struct queue *, queue_exec_fn fn,
    void (*free_fn)(void *), void *arg, queue_done_cb cb, void *cbarg);

/* Batch bounds of the group commit: a batch closes at this many requests
 * or body bytes, whichever comes first (always at least one request). */
#define QUEUE_BATCH_MAX_REQS	256
#define QUEUE_BATCH_MAX_BYTES	(64UL * 1024 * 1024)
/* background requests (delivery results, prepared bodies) wait up to this
 * long, or until this many are pending, for company in one commit; a new
 * message or queue_exec() is committed at once, with what is pending */
#define QUEUE_LINGER_MS		5
#define QUEUE_LINGER_REQS	64

#endif
