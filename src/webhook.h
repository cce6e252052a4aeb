/*
 * webhook.h - tenants' webhooks: HTTP(S) endpoints that receive the
 * tenant's events (events.h) as signed JSON batches, at least once, in
 * sequence order.
 *
 * Records (the webhooks named database, store.h):
 *   "w/" ID -> JSON {"id","tenant","url","events":[types],"secret",
 *                    "created"}   (events [] = every type)
 *   "c/" ID -> decimal sequence: the last event the endpoint acknowledged
 *              (2xx); events after it are the webhook's backlog.
 * petrelctl writes "w/" records and the initial cursor (the newest event
 * at creation: a new webhook gets what happens from then on); petreld's
 * dispatcher moves the cursor through the store writer (queue_exec), so
 * it is durable and never goes back.
 *
 * Delivery: each webhook has at most one request in flight, a POST of up
 * to WEBHOOK_BATCH_MAX events as a JSON array, with
 *   Content-Type: application/json
 *   X-Petrel-Webhook-Id: ID
 *   X-Petrel-Timestamp: unix seconds
 *   X-Petrel-Signature: sha256=hex(HMAC-SHA256(key, timestamp "." body))
 * where key is the secret exactly as printed by `petrelctl webhook add`
 * (its base64 text, as bytes). A 2xx answer acknowledges the batch; any
 * other answer, a connection failure or WEBHOOK_TIMEOUT seconds without
 * an answer is retried after 1, 2, 4 ... seconds (at most
 * WEBHOOK_BACKOFF_MAX). Receivers may see a batch again after a failure
 * or a restart: events carry their "id" for deduplication.
 */
#ifndef PETREL_WEBHOOK_H
#define PETREL_WEBHOOK_H

#include <stdint.h>
#include <lmdb.h>
#include <jansson.h>

struct dns;
struct event_base;
struct queue;
struct store;

#define WEBHOOK_BATCH_MAX	100	/* events per POST */
#define WEBHOOK_TIMEOUT		10	/* seconds per request */
#define WEBHOOK_BACKOFF_MAX	300	/* seconds between retries */
#define WEBHOOK_POLL_MS		250	/* look for new events */
#define WEBHOOK_URL_MAX		2048
#define WEBHOOK_MAX		1000	/* webhooks over all tenants */
#define WEBHOOK_PER_TENANT_MAX	10
#define WEBHOOK_SECRET_BYTES	32
#define WEBHOOK_BACKLOG_SCAN	1000000	/* events counted per webhook for
					   the backlog gauge */

/* --- petrelctl (own write transaction) --- */

/* webhook_add - a new webhook of tenant for url (http:// or https://),
 * types "a,b" (NULL or "": every type). *id_r and *secret_r (malloc'd)
 * are the new id and the signing secret, shown once. -1 and *err_r. */
int webhook_add(struct store *, const char *tenant, const char *url,
    const char *types, char **id_r, char **secret_r, char **err_r);
/* webhook_list - the webhooks of tenant (NULL: all), without secrets,
 * each with its "cursor" */
json_t *webhook_list(struct store *, const char *tenant);
/* webhook_del - delete webhook id of tenant; -1 and *err_r */
int webhook_del(struct store *, const char *tenant, const char *id,
    char **err_r);
/* webhook_tenant_purge_txn - inside txn, tenant's webhooks with their
 * cursors (tenant deletion); *n_r: how many */
int webhook_tenant_purge_txn(MDB_txn *, struct store *, const char *tenant,
    int *n_r, char **err_r);

/* --- events.c's pruning (writer thread, inside txn) --- */

/* webhook_cursors_txn - [{"tenant","mask","cursor"}] of every webhook */
json_t *webhook_cursors_txn(MDB_txn *, struct store *);
/* webhook_unacked - 1 when a webhook of tenant wants an event of type
 * with sequence seq and has not acknowledged it */
int webhook_unacked(const json_t *cursors, const char *tenant,
    const char *type, uint64_t seq);

/* --- petreld: the dispatcher on the main loop --- */

/* webhook_start - dispatch every webhook's events on base (webhooks
 * added or deleted by petrelctl are picked up within WEBHOOK_POLL_MS).
 * dns resolves host names; ca_file (NULL: the system's CAs) verifies
 * https endpoints. Registers the petrel_webhook_backlog gauge. -1 and
 * *err_r (malloc'd) on failure. */
int webhook_start(struct event_base *, struct queue *, struct store *,
    struct dns *, const char *ca_file, char **err_r);
/* webhook_stop - abandon requests in flight (their events stay in the
 * backlog), unregister the gauge, free everything. Before queue_free. */
void webhook_stop(void);

#endif
