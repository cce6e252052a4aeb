/*
 * events.h - the delivery event log: one record per state change of a
 * recipient (queued, delivered, deferred, bounced, suppressed) and per
 * refusal or engagement (rejected, opened, clicked, unsubscribed), kept in
 * LMDB in commit order. It is the request log (petrelctl log search), the
 * source of webhooks (webhook.h) and of GET /events.
 *
 * Records (named databases from store.h):
 *   events     8-byte big-endian sequence -> event JSON
 *              {"id":"SEQ","time":"RFC 3339 UTC","type","tenant","qid",
 *               "message_id","recipient","details":{...}}
 *   eventidx   tenant NUL sequence(8, big-endian) -> "" (per tenant order)
 *
 * Writing: only the store-writer thread (queue.c) appends, inside the
 * write transaction of the change an event describes, so an event exists
 * exactly when its change is committed, and sequence order is commit
 * order. The sequence is kept in memory by the writer (loaded from the
 * last key on first use, rolled back when a transaction aborts). queue.c
 * calls events_queued_txn() / events_update_txn() from its writers and
 * events_txn_end() after each commit or abort; everything else goes
 * through events_emit(), a writer request group-committed like the rest.
 * After a commit each event is logged as one line:
 *   event=TYPE id=SEQ qid=... message_id=... tenant=... rcpt=... result=...
 *
 * Retention: events older than event_retention are pruned by petreld
 * (events_start()) in writer batches, by age, whether or not a webhook
 * has acknowledged them; a log line counts the unacknowledged ones
 * dropped (a webhook down for longer than the retention loses them, and
 * can still not block the store from being cleaned).
 */
#ifndef PETREL_EVENTS_H
#define PETREL_EVENTS_H

#include <stddef.h>
#include <stdint.h>
#include <lmdb.h>
#include <jansson.h>

struct event_base;
struct queue;
struct store;

#define EVENTS_LIST_MAX		1000	/* GET /events page size bound */
#define EVENTS_LIST_DEFAULT	100
#define EVENTS_DETAIL_MAX	1024	/* bytes of a reply text kept */
#define EVENTS_PRUNE_BATCH	5000	/* events deleted per transaction */
#define EVENTS_PRUNE_INTERVAL	3600	/* seconds between prune runs */

/* events_type_valid - 0 when type is one of the event types */
int events_type_valid(const char *type);
/* events_types_parse - "a,b,c" -> bit set of types (0 = none given);
 * -1 and *err_r (static) on an unknown type */
int events_types_parse(const char *csv, unsigned *mask_r, const char **err_r);
/* events_type_bit - the bit of type in a mask, 0 when unknown */
unsigned events_type_bit(const char *type);

/* --- writer thread (queue.c) --- */

/* events_queued_txn - one "queued" event per recipient of a new message
 * (msg: the message record; rcpts: addresses) inside txn */
int events_queued_txn(MDB_txn *, struct store *, const json_t *msg,
    const char *const *rcpts, size_t n);
/* events_update_txn - the event of one recipient's new record rec (its
 * "status" names the type) of message msg, inside txn */
int events_update_txn(MDB_txn *, struct store *, const json_t *msg,
    const json_t *rec);
/* events_append_txn - append ev (an object with type, tenant, ...; "id"
 * and "time" are set here) inside txn; LMDB error or 0 */
int events_append_txn(MDB_txn *, struct store *, json_t *ev);
/* events_jstr - s as a JSON string (null for NULL); bytes that are not
 * UTF-8 (a header value can hold anything) become '?' rather than failing
 * the record. Used for event and queue records alike. */
json_t *events_jstr(const char *s);
/* events_txn_end - the transaction of the events appended since the last
 * call was committed (1: log them) or aborted (0: forget them and their
 * sequence numbers) */
void events_txn_end(int committed);

/* --- any thread of petreld --- */

/* events_emit - an event not tied to a queue change (rejected, opened,
 * clicked, unsubscribed): appended by the writer in its next group
 * commit. Strings are copied, details (may be NULL) is consumed. qid,
 * message_id, rcpt may be NULL. Main thread (it uses env->queue). */
void events_emit(struct queue *, const char *type, const char *tenant,
    const char *qid, const char *message_id, const char *rcpt,
    json_t *details);

/* --- readers (own read transaction) --- */

/* events_last_seq - the newest sequence number, 0 when none */
uint64_t events_last_seq(struct store *);
/* events_list - tenant's events after since, in order, at most limit,
 * only types in mask (0 = all). *next_r: the sequence to pass as since
 * next time (the last one looked at; since when none). */
json_t *events_list(struct store *, const char *tenant, uint64_t since,
    size_t limit, unsigned mask, uint64_t *next_r);
/* events_tenant_purge_txn - inside txn, tenant's index (tenant deletion):
 * neither GET /events nor a webhook of a new tenant of the same name
 * sees the old one's events */
int events_tenant_purge_txn(MDB_txn *, struct store *, const char *tenant,
    char **err_r);
/* events_count_after - tenant's events after since of types in mask,
 * counting at most max */
uint64_t events_count_after(struct store *, const char *tenant,
    uint64_t since, unsigned mask, uint64_t max);
/* events_search - every event whose Message-ID (with or without <>),
 * queue id and recipient (case-insensitive) match those given (NULL: any),
 * of tenant when not NULL, in order; at least one of the first three */
json_t *events_search(struct store *, const char *message_id,
    const char *qid, const char *rcpt, const char *tenant);
/* events_format_line - one human-readable line of an event (malloc'd) */
char *events_format_line(const json_t *ev);

/* --- petreld --- */

/* events_start - prune events older than retention seconds now and every
 * EVENTS_PRUNE_INTERVAL, through the writer */
void events_start(struct event_base *, struct queue *, struct store *,
    long retention);
void events_stop(void);

#endif
