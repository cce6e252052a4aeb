/*
 * apikey.c - access keys of the HTTP API in the "apikeys" database: create,
 * list, delete (petrelctl, the admin API) and the two look-ups behind
 * authentication (Bearer: by hash; HMAC-SHA256: by trying every key).
 * See apikey.h for the record layout. Every function runs one LMDB
 * transaction of its own; the key material never leaves this file except
 * as the one base64 copy apikey_add returns.
 */
#include "autoconf.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lmdb.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include "apikey.h"
#include "config.h"
#include "limits.h"
#include "store.h"
#include "util.h"

#define APIKEY_REC_KEY		'k'
#define APIKEY_REC_NAME		'n'
#define APIKEY_IDX_MAX		(1 + 2 * (NAME_MAX_LEN + 1))

/* apikey_idx - 'n' + tenant + NUL + name into buf; returns the length */
static size_t
apikey_idx(const char *tenant, const char *name, unsigned char *buf)
{
	size_t tl = strlen(tenant), nl = strlen(name);

	buf[0] = APIKEY_REC_NAME;
	memcpy(buf + 1, tenant, tl);
	buf[1 + tl] = '\0';
	memcpy(buf + 2 + tl, name, nl);
	return 2 + tl + nl;
}

/* apikey_reckey - 'k' + hash */
static void
apikey_reckey(const unsigned char hash[APIKEY_HASH_LEN],
    unsigned char out[1 + APIKEY_HASH_LEN])
{
	out[0] = APIKEY_REC_KEY;
	memcpy(out + 1, hash, APIKEY_HASH_LEN);
}

/* apikey_mdberr - user-facing text of an LMDB failure */
static void
apikey_mdberr(char **err_r, const char *what, int rc)
{
	if (err_r != NULL)
		*err_r = rc == MDB_MAP_FULL ? xstrdup("store full") :
		    xasprintf("store error (%s): %s", what, mdb_strerror(rc));
}

/* apikey_tenant_created - the "created" of tenant's record in txn; -1 when
 * the tenant does not exist */
static int64_t
apikey_tenant_created(struct store *st, MDB_txn *txn, const char *tenant)
{
	MDB_val k, v;
	json_t *o;
	int64_t created;

	k.mv_data = (void *)(uintptr_t)tenant;
	k.mv_size = strlen(tenant);
	if (k.mv_size == 0 ||
	    mdb_get(txn, store_dbi(st, DB_TENANTS), &k, &v) != 0)
		return -1;
	if ((o = json_loadb(v.mv_data, v.mv_size, 0, NULL)) == NULL)
		return -1;
	created = (int64_t)json_integer_value(json_object_get(o, "created"));
	json_decref(o);
	return created;
}

/* apikey_check_names - tenant and name are valid names; message if not */
static int
apikey_check_names(const char *tenant, const char *name, char **err_r)
{
	const char *why;
	char *show;

	if (store_valid_name(tenant, &why) == -1) {
		show = util_sanitize(tenant, NAME_MAX_LEN + 1);
		*err_r = xasprintf("invalid tenant name \"%s\": %s", show, why);
		free(show);
		return -1;
	}
	if (name != NULL && store_valid_name(name, &why) == -1) {
		show = util_sanitize(name, NAME_MAX_LEN + 1);
		*err_r = xasprintf("invalid api key name \"%s\": %s", show, why);
		free(show);
		return -1;
	}
	return 0;
}

int
apikey_add(struct store *st, const char *tenant, const char *name,
    char **name_r, char **key_b64_r, char **err_r)
{
	unsigned char key[APIKEY_LEN], hash[APIKEY_HASH_LEN];
	unsigned char rk[1 + APIKEY_HASH_LEN], idx[APIKEY_IDX_MAX];
	char gen[16], rnd[7], *b64 = NULL, *data = NULL, *nm;
	MDB_txn *txn = NULL;
	MDB_val k, v;
	json_t *o = NULL;
	int64_t tcreated;
	int rc;

	*key_b64_r = NULL;
	if (apikey_check_names(tenant, name, err_r) == -1)
		return -1;
	if (name == NULL) {
		util_random_id(rnd, sizeof(rnd) - 1);
		snprintf(gen, sizeof(gen), "key-%s", rnd);
		name = gen;
	}
	util_random(key, sizeof(key));
	SHA256(key, sizeof(key), hash);
	b64 = util_b64_encode(key, sizeof(key));
	explicit_bzero(key, sizeof(key));

	if ((rc = mdb_txn_begin(store_env(st), NULL, 0, &txn)) != 0) {
		apikey_mdberr(err_r, "begin", rc);
		goto fail;
	}
	if ((tcreated = apikey_tenant_created(st, txn, tenant)) < 0) {
		*err_r = xasprintf("unknown tenant: %s", tenant);
		goto fail;
	}
	k.mv_data = idx;
	k.mv_size = apikey_idx(tenant, name, idx);
	v.mv_data = hash;
	v.mv_size = sizeof(hash);
	if ((rc = mdb_put(txn, store_dbi(st, DB_APIKEYS), &k, &v,
	    MDB_NOOVERWRITE)) != 0) {
		if (rc == MDB_KEYEXIST)
			*err_r = xasprintf("api key \"%s\" already exists for "
			    "tenant %s", name, tenant);
		else
			apikey_mdberr(err_r, "put", rc);
		goto fail;
	}
	o = json_pack("{s:s, s:s, s:I, s:I, s:s}", "tenant", tenant, "name",
	    name, "created", (json_int_t)util_now(), "tenant_created",
	    (json_int_t)tcreated, "secret", b64);
	if (o == NULL || (data = json_dumps(o, JSON_COMPACT)) == NULL)
		fatalx("apikey_add: cannot encode record");
	apikey_reckey(hash, rk);
	k.mv_data = rk;
	k.mv_size = sizeof(rk);
	v.mv_data = data;
	v.mv_size = strlen(data);
	if ((rc = mdb_put(txn, store_dbi(st, DB_APIKEYS), &k, &v,
	    MDB_NOOVERWRITE)) != 0) {
		apikey_mdberr(err_r, "put", rc);
		goto fail;
	}
	rc = mdb_txn_commit(txn);
	txn = NULL;
	if (rc != 0) {
		apikey_mdberr(err_r, "commit", rc);
		goto fail;
	}
	nm = xstrdup(name);
	if (name_r != NULL)
		*name_r = nm;
	else
		free(nm);
	*key_b64_r = b64;
	explicit_bzero(data, strlen(data));
	free(data);
	json_decref(o);
	return 0;
fail:
	if (txn != NULL)
		mdb_txn_abort(txn);
	if (data != NULL) {
		explicit_bzero(data, strlen(data));
		free(data);
	}
	json_decref(o);
	explicit_bzero(b64, strlen(b64));
	free(b64);
	return -1;
}

int
apikey_del(struct store *st, const char *tenant, const char *name,
    char **err_r)
{
	unsigned char rk[1 + APIKEY_HASH_LEN], idx[APIKEY_IDX_MAX];
	MDB_txn *txn;
	MDB_val k, v;
	int rc;

	if (apikey_check_names(tenant, name, err_r) == -1)
		return -1;
	if ((rc = mdb_txn_begin(store_env(st), NULL, 0, &txn)) != 0) {
		apikey_mdberr(err_r, "begin", rc);
		return -1;
	}
	k.mv_data = idx;
	k.mv_size = apikey_idx(tenant, name, idx);
	if ((rc = mdb_get(txn, store_dbi(st, DB_APIKEYS), &k, &v)) != 0 ||
	    v.mv_size != APIKEY_HASH_LEN) {
		mdb_txn_abort(txn);
		if (rc == 0 || rc == MDB_NOTFOUND)
			*err_r = xasprintf("no api key \"%s\" for tenant %s",
			    name, tenant);
		else
			apikey_mdberr(err_r, "get", rc);
		return -1;
	}
	apikey_reckey(v.mv_data, rk);
	if ((rc = mdb_del(txn, store_dbi(st, DB_APIKEYS), &k, NULL)) != 0)
		goto fail;
	k.mv_data = rk;
	k.mv_size = sizeof(rk);
	if ((rc = mdb_del(txn, store_dbi(st, DB_APIKEYS), &k, NULL)) != 0 &&
	    rc != MDB_NOTFOUND)
		goto fail;
	if ((rc = mdb_txn_commit(txn)) != 0) {
		apikey_mdberr(err_r, "commit", rc);
		return -1;
	}
	return 0;
fail:
	mdb_txn_abort(txn);
	apikey_mdberr(err_r, "delete", rc);
	return -1;
}

int
apikey_tenant_purge_txn(MDB_txn *txn, struct store *st, const char *tenant,
    int *n_r, char **err_r)
{
	unsigned char pfx[APIKEY_IDX_MAX], *rks = NULL;
	size_t len, i, nk = 0;
	MDB_cursor *c;
	MDB_val k, v;
	int rc, nops = 0;

	*n_r = 0;
	/* the keys' records, found through their names ('n' tenant NUL):
	 * collected first, then deleted, so no cursor walks its own
	 * deletions */
	len = apikey_idx(tenant, "", pfx);
	if ((rc = mdb_cursor_open(txn, store_dbi(st, DB_APIKEYS), &c)) != 0) {
		apikey_mdberr(err_r, "cursor", rc);
		return -1;
	}
	k.mv_data = pfx;
	k.mv_size = len;
	for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0 &&
	    k.mv_size > len && memcmp(k.mv_data, pfx, len) == 0;
	    rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
		if (v.mv_size != APIKEY_HASH_LEN)
			continue;
		rks = xrealloc(rks, (nk + 1) * (1 + APIKEY_HASH_LEN));
		apikey_reckey(v.mv_data, rks + nk++ * (1 + APIKEY_HASH_LEN));
	}
	mdb_cursor_close(c);
	for (i = 0; i < nk && (rc == 0 || rc == MDB_NOTFOUND); i++) {
		k.mv_data = rks + i * (1 + APIKEY_HASH_LEN);
		k.mv_size = 1 + APIKEY_HASH_LEN;
		rc = mdb_del(txn, store_dbi(st, DB_APIKEYS), &k, NULL);
	}
	free(rks);
	if (rc != 0 && rc != MDB_NOTFOUND) {
		apikey_mdberr(err_r, "delete", rc);
		return -1;
	}
	/* the names, then the operation records ('o' tenant NUL opid) */
	if (store_del_prefix(st, txn, DB_APIKEYS, pfx, len, n_r,
	    err_r) == -1)
		return -1;
	pfx[0] = APIKEY_REC_OP;
	return store_del_prefix(st, txn, DB_APIKEYS, pfx, len, &nops, err_r);
}

/* apikey_get - the record under 'k' + hash, or NULL */
static json_t *
apikey_get(struct store *st, MDB_txn *txn,
    const unsigned char hash[APIKEY_HASH_LEN])
{
	unsigned char rk[1 + APIKEY_HASH_LEN];
	MDB_val k, v;

	apikey_reckey(hash, rk);
	k.mv_data = rk;
	k.mv_size = sizeof(rk);
	if (mdb_get(txn, store_dbi(st, DB_APIKEYS), &k, &v) != 0)
		return NULL;
	return json_loadb(v.mv_data, v.mv_size, 0, NULL);
}

json_t *
apikey_list(struct store *st, const char *tenant, char **err_r)
{
	unsigned char idx[APIKEY_IDX_MAX];
	MDB_txn *txn;
	MDB_cursor *c;
	MDB_val k, v;
	json_t *arr, *o;
	size_t plen;
	int rc, op;

	if (apikey_check_names(tenant, NULL, err_r) == -1)
		return NULL;
	if ((rc = mdb_txn_begin(store_env(st), NULL, MDB_RDONLY, &txn)) != 0) {
		apikey_mdberr(err_r, "begin", rc);
		return NULL;
	}
	if (apikey_tenant_created(st, txn, tenant) < 0) {
		mdb_txn_abort(txn);
		*err_r = xasprintf("unknown tenant: %s", tenant);
		return NULL;
	}
	if ((rc = mdb_cursor_open(txn, store_dbi(st, DB_APIKEYS), &c)) != 0) {
		mdb_txn_abort(txn);
		apikey_mdberr(err_r, "cursor", rc);
		return NULL;
	}
	arr = json_array();
	plen = apikey_idx(tenant, "", idx);
	k.mv_data = idx;
	k.mv_size = plen;
	for (op = MDB_SET_RANGE; mdb_cursor_get(c, &k, &v, op) == 0;
	    op = MDB_NEXT) {
		if (k.mv_size < plen || memcmp(k.mv_data, idx, plen) != 0)
			break;
		if (v.mv_size != APIKEY_HASH_LEN ||
		    (o = apikey_get(st, txn, v.mv_data)) == NULL)
			continue;
		json_array_append_new(arr, json_pack("{s:O?, s:O?, s:O?}",
		    "name", json_object_get(o, "name"), "tenant",
		    json_object_get(o, "tenant"), "created",
		    json_object_get(o, "created")));
		json_decref(o);
	}
	mdb_cursor_close(c);
	mdb_txn_abort(txn);
	return arr;
}

/* apikey_valid - rec's tenant still exists as the incarnation the key was
 * made for; copies tenant and name out */
static int
apikey_valid(struct store *st, MDB_txn *txn, const json_t *rec,
    char **tenant_r, char **name_r)
{
	const char *t = json_string_value(json_object_get(rec, "tenant"));
	const char *n = json_string_value(json_object_get(rec, "name"));
	json_int_t tc = json_integer_value(json_object_get(rec,
	    "tenant_created"));

	if (t == NULL || n == NULL || apikey_tenant_created(st, txn, t) != tc)
		return -1;
	*tenant_r = xstrdup(t);
	*name_r = xstrdup(n);
	return 0;
}

int
apikey_bearer(struct store *st, const unsigned char *key, size_t len,
    char **tenant_r, char **name_r)
{
	unsigned char hash[APIKEY_HASH_LEN];
	MDB_txn *txn;
	json_t *o;
	int r = -1;

	if (len != APIKEY_LEN)
		return -1;
	SHA256(key, len, hash);
	if (mdb_txn_begin(store_env(st), NULL, MDB_RDONLY, &txn) != 0)
		return -1;
	if ((o = apikey_get(st, txn, hash)) != NULL) {
		r = apikey_valid(st, txn, o, tenant_r, name_r);
		json_decref(o);
	}
	mdb_txn_abort(txn);
	return r;
}

int
apikey_hmac_find(struct store *st, const void *msg, size_t len,
    const unsigned char sig[APIKEY_HMAC_LEN], char **tenant_r,
    char **name_r)
{
	unsigned char key[APIKEY_LEN * 2], mac[EVP_MAX_MD_SIZE], first = 0;
	unsigned int maclen;
	MDB_txn *txn;
	MDB_cursor *c;
	MDB_val k, v;
	json_t *o, *match = NULL;
	const char *secret;
	long klen;
	int op, r = -1;

	if (mdb_txn_begin(store_env(st), NULL, MDB_RDONLY, &txn) != 0)
		return -1;
	if (mdb_cursor_open(txn, store_dbi(st, DB_APIKEYS), &c) != 0) {
		mdb_txn_abort(txn);
		return -1;
	}
	first = APIKEY_REC_KEY;
	k.mv_data = &first;
	k.mv_size = 1;
	/* every key is tried, match or not: the time taken does not depend
	 * on which key matched */
	for (op = MDB_SET_RANGE; mdb_cursor_get(c, &k, &v, op) == 0;
	    op = MDB_NEXT) {
		if (k.mv_size < 1 || ((unsigned char *)k.mv_data)[0] !=
		    APIKEY_REC_KEY)
			break;
		if ((o = json_loadb(v.mv_data, v.mv_size, 0, NULL)) == NULL)
			continue;
		secret = json_string_value(json_object_get(o, "secret"));
		if (secret == NULL || strlen(secret) > 4 * APIKEY_LEN / 3 + 4 ||
		    (klen = util_b64_decode(secret, strlen(secret), key)) !=
		    APIKEY_LEN ||
		    HMAC(EVP_sha256(), key, (int)klen, msg, len, mac,
		    &maclen) == NULL || maclen != APIKEY_HMAC_LEN ||
		    util_ct_compare(mac, sig, APIKEY_HMAC_LEN) != 0 ||
		    match != NULL) {
			json_decref(o);
			continue;
		}
		match = o;
	}
	explicit_bzero(key, sizeof(key));
	explicit_bzero(mac, sizeof(mac));
	mdb_cursor_close(c);
	if (match != NULL) {
		r = apikey_valid(st, txn, match, tenant_r, name_r);
		json_decref(match);
	}
	mdb_txn_abort(txn);
	return r;
}

char *
apikey_endpoint(const struct petrel_conf *cf)
{
	const struct conf_listen *l;
	const char *scheme, *host;
	size_t n;

	if (cf->apikey_endpoint != NULL && cf->apikey_endpoint[0] != '\0') {
		n = strlen(cf->apikey_endpoint);
		return xasprintf("%s%s", cf->apikey_endpoint,
		    cf->apikey_endpoint[n - 1] == '/' ? "" : "/");
	}
	if (cf->listen_https.n > 0) {
		l = &cf->listen_https;
		scheme = "https";
	} else if (cf->listen_http.n > 0) {
		l = &cf->listen_http;
		scheme = "http";
	} else
		return xasprintf("https://%s/", cf->hostname ? cf->hostname :
		    "localhost");
	host = l->host[0];
	if (host == NULL || *host == '\0' || strcmp(host, "*") == 0)
		host = cf->hostname ? cf->hostname : "localhost";
	return xasprintf(strchr(host, ':') != NULL ? "%s://[%s]:%s/" :
	    "%s://%s:%s/", scheme, host, l->port[0]);
}
