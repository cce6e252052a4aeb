/*
 * suppress.h - the per-tenant suppression list: addresses Petrel no
 * longer delivers to (deliver.c gives such a recipient the final status
 * "suppressed", without a DSN).
 *
 * Records in the named database "suppressions" (store.h DB_SUPPRESSIONS):
 *   tenant + NUL + lower-cased address -> JSON {"address", "reason",
 *       "source": "bounce"|"manual"|"unsubscribe", "created"
 *       [, "category" (bounces: bounce.h's name)] [, "qid" (the message
 *       that bounced or carried the unsubscribe link)]}
 * An address is compared case-insensitively (the whole address is
 * lower-cased: local parts that differ only in case are one mailbox in
 * practice). Adding an address that is listed replaces its record.
 *
 * Entries are added by a hard bounce (queue.c's writer, in the same
 * transaction as the bounce: suppress_put_txn), by petrelctl suppression
 * add, by PUT /suppressions/ADDRESS and by one-click unsubscribe (POST
 * /u/TOKEN, unsub.h). Each function runs its own transaction (except
 * suppress_put_txn); errors: -1 and a malloc'd *err_r (may be NULL).
 */
#ifndef PETREL_SUPPRESS_H
#define PETREL_SUPPRESS_H

#include <lmdb.h>
#include <jansson.h>

struct store;

#define SUPPRESS_REASON_MAX	512	/* reason text kept */

/* suppress_valid_address - 0 when addr can be listed (local@domain, at
 * most ADDRESS_MAX_LEN bytes, no control characters, spaces or '<>'),
 * else -1 and a static *err_r */
int suppress_valid_address(const char *addr, const char **err_r);

/* suppress_add - list address for tenant (tenant must exist). reason may
 * be NULL (a default per source); category and qid may be NULL. */
int suppress_add(struct store *, const char *tenant, const char *address,
    const char *reason, const char *category, const char *source,
    const char *qid, char **err_r);
/* suppress_put_txn - the same inside the caller's write transaction
 * (no tenant check); returns 0 or an LMDB error code (MDB_BAD_VALSIZE for
 * an address that cannot be listed) */
int suppress_put_txn(struct store *, MDB_txn *, const char *tenant,
    const char *address, const char *reason, const char *category,
    const char *source, const char *qid);
/* suppress_del - remove address from tenant's list; -1 with *err_r
 * "not on the suppression list" when absent */
/* suppress_tenant_purge_txn - inside txn, tenant's whole list (tenant
 * deletion); *n_r: the number of addresses */
int suppress_tenant_purge_txn(MDB_txn *, struct store *, const char *tenant,
    int *n_r, char **err_r);
int suppress_del(struct store *, const char *tenant, const char *address,
    char **err_r);
/* suppress_get - the record of address, NULL when not listed */
json_t *suppress_get(struct store *, const char *tenant,
    const char *address);
/* suppress_list - array of tenant's records, ordered by address */
json_t *suppress_list(struct store *, const char *tenant);
/* suppress_check - 1 when address is listed for tenant (*reason_r, may be
 * NULL, gets a malloc'd "reason (source)" text), else 0 */
int suppress_check(struct store *, const char *tenant, const char *address,
    char **reason_r);

#endif
