/*
 * apikey.h - access keys of the HTTP API (ACS-style connection strings).
 * A key is 32 random bytes, shown once, base64, by `petrelctl apikey add`.
 *
 * Records in the named database "apikeys" (store.h DB_APIKEYS), keys
 * start with a one-byte kind:
 *   'k' + SHA-256(key)           -> JSON {"tenant","name","created",
 *                                   "tenant_created","secret"}
 *   'n' + tenant + NUL + name    -> SHA-256(key) (32 bytes): the index
 *                                   behind `apikey list|del TENANT NAME`
 *   'o' + tenant + NUL + op id   -> reserved for http_api.c (operations)
 * "secret" is the key itself (base64): HMAC-SHA256 verification needs it.
 * It lives only in the LMDB environment under data_dir (mode 0600), is
 * never logged and never returned by apikey_list. "tenant_created" binds
 * the key to one incarnation of the tenant: once the tenant is deleted
 * (or deleted and created again) the key no longer authenticates.
 *
 * HMAC requests do not name their key, so apikey_hmac_find computes the
 * HMAC with every stored key, in one read transaction, and compares each
 * in constant time: linear in the number of keys (about a microsecond per
 * key; fine for hundreds or a few thousands).
 */
#ifndef PETREL_APIKEY_H
#define PETREL_APIKEY_H

#include <stddef.h>
#include <jansson.h>
#include <lmdb.h>

struct store;
struct petrel_conf;

#define APIKEY_LEN		32	/* random bytes of a key */
#define APIKEY_HASH_LEN		32	/* SHA-256 */
#define APIKEY_HMAC_LEN		32	/* HMAC-SHA256 */
#define APIKEY_REC_OP		'o'	/* key prefix of operation records */

/* apikey_add - create a key for tenant named name (NULL: "key-" and six
 * random characters). *name_r (may be NULL) receives the name and
 * *key_b64_r the key in base64: the only copy the caller will ever see.
 * Both malloc'd. -1 and *err_r (malloc'd) on error. */
int apikey_add(struct store *, const char *tenant, const char *name,
    char **name_r, char **key_b64_r, char **err_r);
/* apikey_del - delete the key tenant/name */
int apikey_del(struct store *, const char *tenant, const char *name,
    char **err_r);
/* apikey_tenant_purge_txn - inside txn, every key of tenant and its
 * operation records (tenant deletion); *n_r: the number of keys */
int apikey_tenant_purge_txn(MDB_txn *, struct store *, const char *tenant,
    int *n_r, char **err_r);
/* apikey_list - array of {"name","tenant","created"} (never the key);
 * NULL + *err_r when the tenant does not exist */
json_t *apikey_list(struct store *, const char *tenant, char **err_r);

/* apikey_endpoint - the endpoint of connection strings: apikey_endpoint
 * when set, else https://<first listen_https address>/ (host "*": the
 * hostname), else http://<first listen_http address>/, with a final '/';
 * malloc'd */
char *apikey_endpoint(const struct petrel_conf *);

/* apikey_bearer - the tenant and name (malloc'd) of the raw key; 0 found,
 * -1 unknown key or tenant gone */
int apikey_bearer(struct store *, const unsigned char *key, size_t len,
    char **tenant_r, char **name_r);
/* apikey_hmac_find - the key whose HMAC-SHA256 over msg equals sig;
 * 0 with tenant and name (malloc'd), -1 none */
int apikey_hmac_find(struct store *, const void *msg, size_t len,
    const unsigned char sig[APIKEY_HMAC_LEN], char **tenant_r,
    char **name_r);

#endif
