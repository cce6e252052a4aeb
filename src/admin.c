/*
 * admin.c - operator actions with petrelctl's validation and texts, over
 * store_*, domain_*, verify_* and apikey_*, returning JSON: the
 * implementation behind the HTTP admin API (see admin.h). Nothing here
 * touches the event loop; every function may block.
 */
#include "autoconf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin.h"
#include "apikey.h"
#include "config.h"
#include "domain.h"
#include "events.h"
#include "limits.h"
#include "log.h"
#include "netaddr.h"
#include "store.h"
#include "suppress.h"
#include "util.h"
#include "verify.h"
#include "webhook.h"

/* admin_fail - set *err_r (formatted) and *status_r */
static void PRINTFLIKE(3, 4)
admin_fail(int *status_r, char **err_r, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	*err_r = xvasprintf(fmt, ap);
	va_end(ap);
	if (status_r != NULL && *status_r == 0)
		*status_r = 400;
}

/* admin_status - the HTTP status of a store/domain error text */
static void
admin_status(const char *err, int *status_r)
{
	if (status_r == NULL)
		return;
	if (err == NULL || strncmp(err, "store ", 6) == 0 ||
	    strncmp(err, "cannot ", 7) == 0)
		*status_r = 500;
	else if (strstr(err, "already exists") != NULL)
		*status_r = 409;
	else if (strstr(err, "does not exist") != NULL ||
	    strncmp(err, "unknown ", 8) == 0 || strncmp(err, "no ", 3) == 0)
		*status_r = 404;
	else
		*status_r = 400;
}

/* admin_store_err - pass a store error on, with its status */
static void
admin_store_err(char *err, const char *fallback, int *status_r,
    char **err_r)
{
	if (err == NULL)
		err = xstrdup(fallback);
	admin_status(err, status_r);
	*err_r = err;
}

void
admin_strip_secrets(json_t *j)
{
	const char *key;
	json_t *v, *tmp;
	size_t i;

	if (json_is_object(j)) {
		json_object_foreach_safe(j, tmp, key, v) {
			if (strcmp(key, "private") == 0 ||
			    strcmp(key, "hash") == 0 ||
			    strcmp(key, "secret") == 0)
				json_object_del(j, key);
			else
				admin_strip_secrets(v);
		}
	} else if (json_is_array(j))
		json_array_foreach(j, i, v)
			admin_strip_secrets(v);
}

/* admin_tenant_check - petrelctl's "unknown tenant: X" */
static int
admin_tenant_check(struct store *st, const char *tenant, int *status_r,
    char **err_r)
{
	const char *why;
	char *show;

	if (store_valid_name(tenant, &why) == -1 ||
	    store_tenant_exists(st, tenant) <= 0) {
		show = util_sanitize(tenant, NAME_MAX_LEN + 1);
		if (status_r != NULL)
			*status_r = 404;
		admin_fail(status_r, err_r, "unknown tenant: %s", show);
		free(show);
		return -1;
	}
	return 0;
}

/* admin_domain_arg - normalise a domain as petrelctl does */
static int
admin_domain_arg(const char *in, char out[DOMAIN_MAX_LEN + 1],
    int *status_r, char **err_r)
{
	const char *err = NULL;
	char *show;

	if (domain_normalize(in, out, DOMAIN_MAX_LEN + 1, &err) == -1) {
		show = util_sanitize(in, DOMAIN_MAX_LEN + 1);
		admin_fail(status_r, err_r, "invalid domain \"%s\": %s", show,
		    err != NULL ? err : "malformed");
		free(show);
		return -1;
	}
	return 0;
}

/* admin_domain_rec - the stored record of a domain argument */
static json_t *
admin_domain_rec(struct store *st, const char *arg,
    char name[DOMAIN_MAX_LEN + 1], int *status_r, char **err_r)
{
	json_t *rec;

	if (admin_domain_arg(arg, name, status_r, err_r) == -1)
		return NULL;
	if ((rec = store_domain_get(st, name)) == NULL) {
		if (status_r != NULL)
			*status_r = 404;
		admin_fail(status_r, err_r, "unknown domain: %s", name);
	}
	return rec;
}

/* --- tenants --- */

json_t *
admin_tenant_list(struct store *st)
{
	json_t *l = store_tenant_list(st);

	return l != NULL ? l : json_array();
}

json_t *
admin_tenant_add(struct store *st, const char *name, int *status_r,
    char **err_r)
{
	const char *verr;
	char *err = NULL;

	if (store_valid_name(name, &verr) == -1) {
		admin_fail(status_r, err_r, "invalid tenant name: %s", verr);
		return NULL;
	}
	if (store_tenant_add(st, name, &err) == -1) {
		admin_store_err(err, "cannot add tenant", status_r, err_r);
		return NULL;
	}
	return json_pack("{s:s}", "name", name);
}

int
admin_tenant_del(struct store *st, const char *name, int *status_r,
    char **err_r)
{
	char *err = NULL;
	MDB_txn *txn;
	int n[3], nkeys = 0, nsupp = 0, nhooks = 0, rc;

	if (admin_tenant_check(st, name, status_r, err_r) == -1)
		return -1;
	/* one transaction: everything the tenant owns goes, so a new
	 * tenant of the same name inherits none of it (no webhook posting
	 * its events to the old owner's URL, no old suppressions) */
	if ((rc = mdb_txn_begin(store_env(st), NULL, 0, &txn)) != 0) {
		err = xasprintf("store error (begin): %s", mdb_strerror(rc));
		goto fail;
	}
	if (store_tenant_del_txn(st, txn, name, n, &err) == -1 ||
	    apikey_tenant_purge_txn(txn, st, name, &nkeys, &err) == -1 ||
	    suppress_tenant_purge_txn(txn, st, name, &nsupp, &err) == -1 ||
	    webhook_tenant_purge_txn(txn, st, name, &nhooks, &err) == -1 ||
	    events_tenant_purge_txn(txn, st, name, &err) == -1) {
		mdb_txn_abort(txn);
		goto fail;
	}
	if ((rc = mdb_txn_commit(txn)) != 0) {
		err = xstrdup(rc == MDB_MAP_FULL ? "store full" :
		    mdb_strerror(rc));
		goto fail;
	}
	log_info("event=tenant_deleted tenant=%s users=%d domains=%d "
	    "networks=%d apikeys=%d suppressions=%d webhooks=%d", name,
	    n[0], n[1], n[2], nkeys, nsupp, nhooks);
	return 0;
fail:
	admin_store_err(err, "cannot delete tenant", status_r, err_r);
	return -1;
}

/* --- users --- */

json_t *
admin_user_list(struct store *st, const char *tenant, int *status_r,
    char **err_r)
{
	json_t *l;
	char *err = NULL;

	if (admin_tenant_check(st, tenant, status_r, err_r) == -1)
		return NULL;
	if ((l = store_user_list(st, tenant, &err)) == NULL) {
		admin_store_err(err, "cannot list users", status_r, err_r);
		return NULL;
	}
	admin_strip_secrets(l);
	return l;
}

json_t *
admin_user_add(struct store *st, const char *tenant, const char *user,
    const char *password, int *status_r, char **err_r)
{
	char *err = NULL;

	if (admin_tenant_check(st, tenant, status_r, err_r) == -1)
		return NULL;
	if (strlen(password) > PASSWORD_MAX_LEN) {
		admin_fail(status_r, err_r, "password too long");
		return NULL;
	}
	if (password[0] == '\0') {
		admin_fail(status_r, err_r, "empty password");
		return NULL;
	}
	if (strpbrk(password, "\r\n") != NULL) {
		admin_fail(status_r, err_r, "password contains a CR or LF");
		return NULL;
	}
	if (store_user_add(st, tenant, user, password, &err) == -1) {
		admin_store_err(err, "cannot add user", status_r, err_r);
		return NULL;
	}
	return json_pack("{s:s, s:s}", "user", user, "tenant", tenant);
}

int
admin_user_del(struct store *st, const char *tenant, const char *user,
    int *status_r, char **err_r)
{
	char *err = NULL;

	if (admin_tenant_check(st, tenant, status_r, err_r) == -1)
		return -1;
	if (store_user_del(st, tenant, user, &err) == -1) {
		admin_store_err(err, "cannot delete user", status_r, err_r);
		return -1;
	}
	return 0;
}

/* --- domains --- */

json_t *
admin_domain_view(const json_t *rec)
{
	static const char *const rkeys[] = {
		"type", "name", "value", "purpose", "status"
	};
	static const char *const extra[] = {
		"created", "checked_at", "senders", "keys", "unsubscribe",
		"tracking"
	};
	json_t *pub, *out, *records, *r, *o, *v;
	const char *s;
	size_t i, k;

	pub = domain_public_view(rec);
	out = json_object();
	for (k = 0; k < 4; k++) {
		static const char *const top[] = {
			"domain", "tenant", "kind", "status"
		};
		s = json_string_value(json_object_get(pub, top[k]));
		json_object_set_new(out, top[k], json_string(s ? s : ""));
	}
	records = json_array();
	json_array_foreach(json_object_get(pub, "records"), i, r) {
		o = json_object();
		for (k = 0; k < nitems(rkeys); k++) {
			s = json_string_value(json_object_get(r, rkeys[k]));
			json_object_set_new(o, rkeys[k], json_string(s ? s : ""));
		}
		json_array_append_new(records, o);
	}
	json_object_set_new(out, "records", records);
	for (k = 0; k < nitems(extra); k++)
		if ((v = json_object_get(pub, extra[k])) != NULL)
			json_object_set(out, extra[k], v);
	json_decref(pub);
	admin_strip_secrets(out);
	return out;
}

json_t *
admin_domain_add(struct store *st, const struct petrel_conf *cf,
    const char *tenant, const char *domain, int *status_r, char **err_r)
{
	char name[DOMAIN_MAX_LEN + 1], *err = NULL;
	const char *t;
	json_t *rec, *view;

	if (admin_tenant_check(st, tenant, status_r, err_r) == -1)
		return NULL;
	if (domain == NULL)
		domain_managed_name(cf, name, sizeof(name));
	else {
		if (admin_domain_arg(domain, name, status_r, err_r) == -1)
			return NULL;
		if ((rec = store_domain_get(st, name)) != NULL) {
			t = json_string_value(json_object_get(rec, "tenant"));
			if (status_r != NULL)
				*status_r = 409;
			admin_fail(status_r, err_r, "domain %s already exists "
			    "(tenant %s)", name, t ? t : "?");
			json_decref(rec);
			return NULL;
		}
	}
	if ((rec = domain_new(cf, tenant, name, domain == NULL, &err)) ==
	    NULL) {
		admin_store_err(err, "cannot create domain", status_r, err_r);
		return NULL;
	}
	if (store_domain_add(st, rec, &err) == -1) {
		json_decref(rec);
		admin_store_err(err, "cannot add domain", status_r, err_r);
		return NULL;
	}
	view = admin_domain_view(rec);
	json_decref(rec);
	return view;
}

json_t *
admin_domain_get(struct store *st, const char *domain, int *status_r,
    char **err_r)
{
	char name[DOMAIN_MAX_LEN + 1];
	json_t *rec, *view;

	if ((rec = admin_domain_rec(st, domain, name, status_r, err_r)) ==
	    NULL)
		return NULL;
	view = admin_domain_view(rec);
	json_decref(rec);
	return view;
}

json_t *
admin_domain_list(struct store *st, const char *tenant, int *status_r,
    char **err_r)
{
	json_t *l, *out, *d;
	size_t i;

	if (tenant != NULL &&
	    admin_tenant_check(st, tenant, status_r, err_r) == -1)
		return NULL;
	if ((l = store_domain_list(st, tenant)) == NULL)
		return json_array();
	out = json_array();
	json_array_foreach(l, i, d)
		json_array_append_new(out, admin_domain_view(d));
	json_decref(l);
	return out;
}

int
admin_domain_del(struct store *st, const char *domain, int *status_r,
    char **err_r)
{
	char name[DOMAIN_MAX_LEN + 1], *err = NULL;
	json_t *rec;

	if ((rec = admin_domain_rec(st, domain, name, status_r, err_r)) ==
	    NULL)
		return -1;
	json_decref(rec);
	if (store_domain_del(st, name, &err) == -1) {
		admin_store_err(err, "cannot delete domain", status_r, err_r);
		return -1;
	}
	return 0;
}

json_t *
admin_domain_verify(struct store *st, const struct petrel_conf *cf,
    const char *domain, int *status_r, char **err_r)
{
	char name[DOMAIN_MAX_LEN + 1], *err = NULL;
	struct verify_run *run;
	const char *kind;
	json_t *rec;

	if ((rec = admin_domain_rec(st, domain, name, status_r, err_r)) ==
	    NULL)
		return NULL;
	kind = json_string_value(json_object_get(rec, "kind"));
	if (kind == NULL || strcmp(kind, "managed") != 0) {
		if ((run = verify_domain_sync(st, cf, rec, &err)) == NULL) {
			json_decref(rec);
			admin_store_err(err, "verification failed", status_r,
			    err_r);
			return NULL;
		}
		verify_run_free(run);
	}
	json_decref(rec);
	return admin_domain_get(st, name, status_r, err_r);
}

/* --- relay networks --- */

json_t *
admin_network_list(struct store *st)
{
	json_t *l = store_network_list(st);

	return l != NULL ? l : json_array();
}

int
admin_cidr_arg(const char *in, char *out, size_t len, int *status_r,
    char **err_r)
{
	struct cidr c;
	const char *err = NULL;
	char *show;

	if (netaddr_parse_cidr(in, &c, &err) == -1) {
		show = util_sanitize(in, 128);
		admin_fail(status_r, err_r, "invalid network \"%s\": %s", show,
		    err != NULL ? err : "malformed");
		free(show);
		return -1;
	}
	netaddr_cidr_str(&c, out, len);
	return 0;
}

json_t *
admin_network_add(struct store *st, const char *tenant, const char *cidr,
    int *status_r, char **err_r)
{
	char canon[64], *err = NULL;

	if (admin_tenant_check(st, tenant, status_r, err_r) == -1 ||
	    admin_cidr_arg(cidr, canon, sizeof(canon), status_r, err_r) == -1)
		return NULL;
	if (store_network_add(st, tenant, canon, &err) == -1) {
		admin_store_err(err, "cannot add network", status_r, err_r);
		return NULL;
	}
	return json_pack("{s:s, s:s}", "cidr", canon, "tenant", tenant);
}

int
admin_network_del(struct store *st, const char *cidr, int *status_r,
    char **err_r)
{
	char canon[64], *err = NULL;

	if (admin_cidr_arg(cidr, canon, sizeof(canon), status_r, err_r) == -1)
		return -1;
	if (store_network_del(st, canon, &err) == -1) {
		admin_store_err(err, "cannot delete network", status_r, err_r);
		return -1;
	}
	return 0;
}

/* --- API keys --- */

json_t *
admin_apikey_list(struct store *st, const char *tenant, int *status_r,
    char **err_r)
{
	json_t *l;
	char *err = NULL;

	if ((l = apikey_list(st, tenant, &err)) == NULL)
		admin_store_err(err, "cannot list api keys", status_r, err_r);
	return l;
}

json_t *
admin_apikey_add(struct store *st, const struct petrel_conf *cf,
    const char *tenant, const char *name, int *status_r, char **err_r)
{
	char *err = NULL, *nm = NULL, *key = NULL, *ep, *cs;
	json_t *o;

	if (apikey_add(st, tenant, name, &nm, &key, &err) == -1) {
		admin_store_err(err, "cannot add api key", status_r, err_r);
		return NULL;
	}
	ep = apikey_endpoint(cf);
	cs = xasprintf("endpoint=%s;accesskey=%s", ep, key);
	o = json_pack("{s:s, s:s, s:s}", "name", nm, "tenant", tenant,
	    "connection_string", cs);
	explicit_bzero(key, strlen(key));
	explicit_bzero(cs, strlen(cs));
	free(key);
	free(cs);
	free(ep);
	free(nm);
	return o;
}

int
admin_apikey_del(struct store *st, const char *tenant, const char *name,
    int *status_r, char **err_r)
{
	char *err = NULL;

	if (apikey_del(st, tenant, name, &err) == -1) {
		admin_store_err(err, "cannot delete api key", status_r, err_r);
		return -1;
	}
	return 0;
}
