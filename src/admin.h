/*
 * admin.h - operator actions on tenants, users, sender domains, relay
 * networks and API keys, with petrelctl's validation and error texts, for
 * the HTTP admin API (http_api.c, /admin/...) and petrelctl alike: one
 * implementation over store_*, domain_*, verify_* and apikey_*.
 *
 * Every function may block (key generation, scrypt, DNS for verification,
 * the LMDB write lock): petreld calls them on a worker thread. Errors: -1
 * or NULL with a malloc'd *err_r, and *status_r (may be NULL) an HTTP
 * status for it: 400 invalid input, 404 unknown tenant/domain/key/network,
 * 409 already exists, 500 storage failure.
 *
 * JSON shapes: tenants {"name","created"}; users {"user","tenant",
 * "created"} (never the hash); domains as `petrelctl domain show --json`
 * {"domain","tenant","kind","status","records":[{"type","name","value",
 * "purpose","status"}],...} (never private keys); networks {"cidr",
 * "tenant","created"}; api keys {"name","tenant","created"}, and once, at
 * creation, "connection_string".
 */
#ifndef PETREL_ADMIN_H
#define PETREL_ADMIN_H

#include <jansson.h>

struct store;
struct petrel_conf;

json_t *admin_tenant_list(struct store *);
json_t *admin_tenant_add(struct store *, const char *name, int *status_r,
    char **err_r);
int admin_tenant_del(struct store *, const char *name, int *status_r,
    char **err_r);

json_t *admin_user_list(struct store *, const char *tenant, int *status_r,
    char **err_r);
json_t *admin_user_add(struct store *, const char *tenant, const char *user,
    const char *password, int *status_r, char **err_r);
int admin_user_del(struct store *, const char *tenant, const char *user,
    int *status_r, char **err_r);

/* admin_domain_add - domain NULL: a managed domain under managed_zone */
json_t *admin_domain_add(struct store *, const struct petrel_conf *,
    const char *tenant, const char *domain, int *status_r, char **err_r);
json_t *admin_domain_get(struct store *, const char *domain, int *status_r,
    char **err_r);
json_t *admin_domain_list(struct store *, const char *tenant, int *status_r,
    char **err_r);
int admin_domain_del(struct store *, const char *domain, int *status_r,
    char **err_r);
/* admin_domain_verify - look the records up now (verify_domain_sync) and
 * return the domain's view afterwards */
json_t *admin_domain_verify(struct store *, const struct petrel_conf *,
    const char *domain, int *status_r, char **err_r);
/* admin_domain_view - the public view of a stored domain record */
json_t *admin_domain_view(const json_t *rec);
/* admin_strip_secrets - remove private key material, password hashes and
 * secrets wherever they appear in j, so no output path can leak them */
void admin_strip_secrets(json_t *j);

json_t *admin_network_list(struct store *);
/* admin_cidr_arg - the canonical form of a CIDR argument into out; -1
 * and *err_r ("invalid network ...") when it is not one */
int admin_cidr_arg(const char *in, char *out, size_t len, int *status_r,
    char **err_r);
json_t *admin_network_add(struct store *, const char *tenant,
    const char *cidr, int *status_r, char **err_r);
int admin_network_del(struct store *, const char *cidr, int *status_r,
    char **err_r);

json_t *admin_apikey_list(struct store *, const char *tenant, int *status_r,
    char **err_r);
json_t *admin_apikey_add(struct store *, const struct petrel_conf *,
    const char *tenant, const char *name, int *status_r, char **err_r);
int admin_apikey_del(struct store *, const char *tenant, const char *name,
    int *status_r, char **err_r);

#endif
