/*
 * store.h - the LMDB environment under data_dir and the tenant, user,
 * domain, sender and relay-network records in it. petreld and petrelctl
 * open the same environment; LMDB's locking makes that safe, and readers
 * see every committed change at their next read transaction, so petrelctl's
 * changes take effect in a running petreld without a restart.
 *
 * Named databases (all opened by store_open, key -> value):
 *   tenants   name                 -> JSON {"name","created"}
 *   users     username             -> JSON {"user","tenant","hash","created"}
 *             (usernames are unique across tenants: AUTH names the user)
 *   domains   domain (A-label)     -> JSON domain record (see domain.h)
 *   networks  canonical CIDR       -> JSON {"cidr","tenant","created"}
 *   apikeys, messages, bodies, rcpts, schedule, events, suppressions:
 *             reserved for queue.c and later modules.
 *
 * Every function runs its own transaction and either commits all of its
 * change or nothing. Errors: -1 and a malloc'd *err_r for the user
 * (err_r may be NULL).
 */
#ifndef PETREL_STORE_H
#define PETREL_STORE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <lmdb.h>
#include <jansson.h>

enum store_db {
	DB_TENANTS, DB_USERS, DB_DOMAINS, DB_NETWORKS, DB_APIKEYS,
	DB_MESSAGES, DB_BODIES, DB_RCPTS, DB_SCHEDULE, DB_EVENTS,
	DB_SUPPRESSIONS, DB_META,
	DB_EVENTIDX,	/* events.h: tenant NUL sequence -> "" */
	DB_WEBHOOKS,	/* webhook.h: webhooks and their cursors */
	DB_COUNT
};

struct store;

/* store_open - create data_dir (0700) if needed and open the environment
 * (files mode 0600). map_size in bytes (0 = default 8 GiB). */
int store_open(const char *data_dir, uint64_t map_size, struct store **s_r,
    char **err_r);
void store_close(struct store *);
MDB_env *store_env(struct store *);
MDB_dbi store_dbi(struct store *, enum store_db);

/* tenant names: [a-z0-9][a-z0-9._-]{0,63} */
int store_valid_name(const char *name, const char **err_r);
/* user names: [a-z0-9][a-z0-9._@+-]{0,63} (lower-case; store_user_lookup
 * lower-cases what AUTH sends before the lookup) */
int store_valid_username(const char *name, const char **err_r);

int store_tenant_add(struct store *, const char *name, char **err_r);
/* store_tenant_del - removes the tenant with its users, domains and networks */
int store_tenant_del(struct store *, const char *name, char **err_r);
/* store_tenant_del_txn - inside txn, the tenant record with its users,
 * domains and networks; their counts in counts[0..2] */
int store_tenant_del_txn(struct store *, MDB_txn *, const char *name,
    int counts[3], char **err_r);
/* store_del_prefix - inside txn, every key of db that starts with
 * prefix[0..len); adds their number to *n_r */
int store_del_prefix(struct store *, MDB_txn *, enum store_db,
    const void *prefix, size_t len, int *n_r, char **err_r);
int store_tenant_exists(struct store *, const char *name);
json_t *store_tenant_list(struct store *);	/* array of tenant objects */

int store_user_add(struct store *, const char *tenant, const char *user,
    const char *password, char **err_r);
/* store_user_del - tenant NULL: whichever tenant owns user */
int store_user_del(struct store *, const char *tenant, const char *user,
    char **err_r);
/* store_user_list - array of {"user","tenant","created"} (no hashes);
 * tenant NULL = all; NULL + *err_r when the tenant does not exist */
json_t *store_user_list(struct store *, const char *tenant, char **err_r);
/* store_user_lookup - the stored hash and tenant of user (malloc'd);
 * 0 found, -1 not found. The caller runs passwd_verify (slow) itself,
 * outside any transaction. */
int store_user_lookup(struct store *, const char *user, char **tenant_r,
    char **hash_r);

/* domains: the record's name must be normalised (domain_normalize); the
 * lookup functions normalise what they are given (case, IDN, final dot).
 * get/list return full records including private keys: show users only
 * domain_public_view() of them. rec is not consumed. */
int store_domain_add(struct store *, json_t *rec, char **err_r);
/* store_domain_put - replace an existing record */
int store_domain_put(struct store *, json_t *rec, char **err_r);
json_t *store_domain_get(struct store *, const char *domain);
int store_domain_del(struct store *, const char *domain, char **err_r);
json_t *store_domain_list(struct store *, const char *tenant /* or NULL */);

/* sender local-parts allowed for a domain (empty list = any) */
int store_sender_add(struct store *, const char *domain,
    const char *localpart, char **err_r);
int store_sender_del(struct store *, const char *domain,
    const char *localpart, char **err_r);

/* store_sender_check - may tenant send as localpart@domain? 0 yes; -1 with
 * *reason_r a static string: "unknown domain", "domain not verified",
 * "domain belongs to another tenant", "local part not allowed". */
int store_sender_check(struct store *, const char *tenant,
    const char *localpart, const char *domain, const char **reason_r);

int store_network_add(struct store *, const char *tenant, const char *cidr,
    char **err_r);
int store_network_del(struct store *, const char *cidr, char **err_r);
json_t *store_network_list(struct store *);
/* store_network_lookup - tenant of the most specific network holding sa,
 * malloc'd, or NULL */
char *store_network_lookup(struct store *, const struct sockaddr *sa);

/* store_secret - a named 32-byte secret kept in the meta db (HMAC keys
 * of unsubscribe and tracking tokens): read it, or when create is set and
 * there is none yet make one (a concurrent maker in another process wins
 * and its secret is returned). Cached per store; safe from any thread.
 * 0, or -1 (none, or a storage error). */
#define STORE_SECRET_LEN	32
int store_secret(struct store *, const char *name, int create,
    unsigned char out[STORE_SECRET_LEN]);

#endif
