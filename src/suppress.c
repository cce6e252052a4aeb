/*
 * suppress.c - the per-tenant suppression list in LMDB (see suppress.h).
 * Keys are tenant + NUL + lower-cased address, so one tenant's entries
 * are one contiguous, address-ordered range: listing is a cursor walk
 * from the tenant's prefix, and tenants never see each other's entries.
 */
#include "autoconf.h"

#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <lmdb.h>

#include "limits.h"
#include "store.h"
#include "suppress.h"
#include "util.h"

#define SUPPRESS_KEY_MAX	(NAME_MAX_LEN + 1 + ADDRESS_MAX_LEN)

int
suppress_valid_address(const char *addr, const char **err_r)
{
	const char *at, *p;
	size_t len;

	if (addr == NULL || (len = strlen(addr)) == 0) {
		*err_r = "empty address";
		return -1;
	}
	if (len > ADDRESS_MAX_LEN) {
		*err_r = "address too long";
		return -1;
	}
	for (p = addr; *p != '\0'; p++)
		if ((unsigned char)*p <= 0x20 || *p == 0x7f || *p == '<' ||
		    *p == '>') {
			*err_r = "invalid character in address";
			return -1;
		}
	at = strrchr(addr, '@');
	if (at == NULL || at == addr || at[1] == '\0' ||
	    (size_t)(at - addr) > LOCALPART_MAX_LEN ||
	    strlen(at + 1) > DOMAIN_MAX_LEN) {
		*err_r = "not an address (local@domain)";
		return -1;
	}
	return 0;
}

/* suppress_key - tenant NUL lower(address) into key; its length, or 0
 * when either does not fit or is invalid */
static size_t
suppress_key(const char *tenant, const char *address,
    unsigned char key[SUPPRESS_KEY_MAX])
{
	const char *err;
	size_t tl, al, i;

	if (tenant == NULL || store_valid_name(tenant, &err) == -1 ||
	    suppress_valid_address(address, &err) == -1)
		return 0;
	tl = strlen(tenant);
	al = strlen(address);
	memcpy(key, tenant, tl);
	key[tl] = '\0';
	for (i = 0; i < al; i++)
		key[tl + 1 + i] = (unsigned char)(address[i] >= 'A' &&
		    address[i] <= 'Z' ? address[i] - 'A' + 'a' : address[i]);
	return tl + 1 + al;
}

/* suppress_record - the JSON record of a new entry */
static json_t *
suppress_record(const char *address, const char *reason,
    const char *category, const char *source, const char *qid)
{
	char *addr, *why;
	json_t *rec;

	addr = xstrdup(address);
	util_lower(addr);
	if (reason == NULL || reason[0] == '\0')
		reason = strcmp(source, "unsubscribe") == 0 ?
		    "unsubscribed (one-click)" : strcmp(source, "bounce") == 0 ?
		    "hard bounce" : "added by the operator";
	why = util_sanitize(reason, SUPPRESS_REASON_MAX);
	rec = json_pack("{s:s, s:s, s:s, s:I}", "address", addr, "reason", why,
	    "source", source, "created", (json_int_t)util_now());
	if (rec == NULL)
		fatalx("suppress: json_pack failed");
	if (category != NULL && category[0] != '\0')
		json_object_set_new(rec, "category", json_string(category));
	if (qid != NULL && qid[0] != '\0')
		json_object_set_new(rec, "qid", json_string(qid));
	free(addr);
	free(why);
	return rec;
}

int
suppress_put_txn(struct store *st, MDB_txn *txn, const char *tenant,
    const char *address, const char *reason, const char *category,
    const char *source, const char *qid)
{
	unsigned char kbuf[SUPPRESS_KEY_MAX];
	MDB_val key, val;
	json_t *rec;
	char *s;
	int rc;

	if ((key.mv_size = suppress_key(tenant, address, kbuf)) == 0)
		return MDB_BAD_VALSIZE;
	key.mv_data = kbuf;
	rec = suppress_record(address, reason, category,
	    source != NULL ? source : "manual", qid);
	if ((s = json_dumps(rec, JSON_COMPACT)) == NULL)
		fatalx("suppress: json_dumps failed");
	json_decref(rec);
	val.mv_size = strlen(s);
	val.mv_data = s;
	rc = mdb_put(txn, store_dbi(st, DB_SUPPRESSIONS), &key, &val, 0);
	free(s);
	return rc;
}

/* suppress_lmdb_err - the user's message for an LMDB error */
static char *
suppress_lmdb_err(int rc)
{
	if (rc == MDB_MAP_FULL)
		return xstrdup("storage full");
	return xasprintf("storage error: %s", mdb_strerror(rc));
}

int
suppress_add(struct store *st, const char *tenant, const char *address,
    const char *reason, const char *category, const char *source,
    const char *qid, char **err_r)
{
	MDB_txn *txn;
	const char *err;
	int rc;

	if (err_r != NULL)
		*err_r = NULL;
	if (store_valid_name(tenant, &err) == -1 ||
	    store_tenant_exists(st, tenant) <= 0) {
		if (err_r != NULL)
			*err_r = xstrdup("unknown tenant");
		return -1;
	}
	if (suppress_valid_address(address, &err) == -1) {
		if (err_r != NULL)
			*err_r = xasprintf("invalid address: %s", err);
		return -1;
	}
	if ((rc = mdb_txn_begin(store_env(st), NULL, 0, &txn)) != 0)
		goto fail;
	if ((rc = suppress_put_txn(st, txn, tenant, address, reason, category,
	    source, qid)) != 0) {
		mdb_txn_abort(txn);
		goto fail;
	}
	if ((rc = mdb_txn_commit(txn)) != 0)
		goto fail;
	return 0;
fail:
	if (err_r != NULL)
		*err_r = suppress_lmdb_err(rc);
	return -1;
}

int
suppress_del(struct store *st, const char *tenant, const char *address,
    char **err_r)
{
	unsigned char kbuf[SUPPRESS_KEY_MAX];
	MDB_val key;
	MDB_txn *txn;
	int rc;

	if (err_r != NULL)
		*err_r = NULL;
	if ((key.mv_size = suppress_key(tenant, address, kbuf)) == 0) {
		if (err_r != NULL)
			*err_r = xstrdup("not on the suppression list");
		return -1;
	}
	key.mv_data = kbuf;
	if ((rc = mdb_txn_begin(store_env(st), NULL, 0, &txn)) != 0)
		goto fail;
	rc = mdb_del(txn, store_dbi(st, DB_SUPPRESSIONS), &key, NULL);
	if (rc == MDB_NOTFOUND) {
		mdb_txn_abort(txn);
		if (err_r != NULL)
			*err_r = xstrdup("not on the suppression list");
		return -1;
	}
	if (rc != 0) {
		mdb_txn_abort(txn);
		goto fail;
	}
	if ((rc = mdb_txn_commit(txn)) != 0)
		goto fail;
	return 0;
fail:
	if (err_r != NULL)
		*err_r = suppress_lmdb_err(rc);
	return -1;
}

int
suppress_tenant_purge_txn(MDB_txn *txn, struct store *st, const char *tenant,
    int *n_r, char **err_r)
{
	/* keys are tenant NUL address: the prefix includes the NUL */
	*n_r = 0;
	return store_del_prefix(st, txn, DB_SUPPRESSIONS, tenant,
	    strlen(tenant) + 1, n_r, err_r);
}

json_t *
suppress_get(struct store *st, const char *tenant, const char *address)
{
	unsigned char kbuf[SUPPRESS_KEY_MAX];
	MDB_val key, val;
	MDB_txn *txn;
	json_t *rec = NULL;

	if ((key.mv_size = suppress_key(tenant, address, kbuf)) == 0)
		return NULL;
	key.mv_data = kbuf;
	if (mdb_txn_begin(store_env(st), NULL, MDB_RDONLY, &txn) != 0)
		return NULL;
	if (mdb_get(txn, store_dbi(st, DB_SUPPRESSIONS), &key, &val) == 0)
		rec = json_loadb(val.mv_data, val.mv_size, 0, NULL);
	mdb_txn_abort(txn);
	if (rec != NULL && !json_is_object(rec)) {
		json_decref(rec);
		rec = NULL;
	}
	return rec;
}

json_t *
suppress_list(struct store *st, const char *tenant)
{
	MDB_txn *txn;
	MDB_cursor *cur;
	MDB_val key, val;
	json_t *list = json_array(), *rec;
	unsigned char prefix[NAME_MAX_LEN + 1];
	const char *err;
	size_t pl;
	int rc;

	if (list == NULL)
		fatalx("suppress: json_array failed");
	if (tenant == NULL || store_valid_name(tenant, &err) == -1)
		return list;
	pl = strlen(tenant) + 1;
	memcpy(prefix, tenant, pl);		/* with its NUL */
	if (mdb_txn_begin(store_env(st), NULL, MDB_RDONLY, &txn) != 0)
		return list;
	if (mdb_cursor_open(txn, store_dbi(st, DB_SUPPRESSIONS), &cur) != 0) {
		mdb_txn_abort(txn);
		return list;
	}
	key.mv_size = pl;
	key.mv_data = prefix;
	for (rc = mdb_cursor_get(cur, &key, &val, MDB_SET_RANGE); rc == 0;
	    rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT)) {
		if (key.mv_size <= pl || memcmp(key.mv_data, prefix, pl) != 0)
			break;
		rec = json_loadb(val.mv_data, val.mv_size, 0, NULL);
		if (json_is_object(rec))
			json_array_append_new(list, rec);
		else
			json_decref(rec);
	}
	mdb_cursor_close(cur);
	mdb_txn_abort(txn);
	return list;
}

int
suppress_check(struct store *st, const char *tenant, const char *address,
    char **reason_r)
{
	json_t *rec;
	const char *reason, *source;

	if ((rec = suppress_get(st, tenant, address)) == NULL)
		return 0;
	if (reason_r != NULL) {
		reason = json_string_value(json_object_get(rec, "reason"));
		source = json_string_value(json_object_get(rec, "source"));
		*reason_r = xasprintf("%s (%s)", reason ? reason : "listed",
		    source ? source : "manual");
	}
	json_decref(rec);
	return 1;
}
