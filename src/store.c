/*
 * store.c - the LMDB environment under data_dir and the configuration
 * records in it: tenants, users, sender domains (with their allowed local
 * parts) and relay networks. petreld and petrelctl open the same
 * environment at once; every function here runs exactly one transaction,
 * commits all of its change or nothing, and never holds the write lock
 * across slow work (password hashing happens before the transaction).
 * Values are compact JSON. queue.c and later modules use the remaining
 * named databases through store_env()/store_dbi().
 */
#include "autoconf.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "domain.h"
#include "limits.h"
#include "log.h"
#include "netaddr.h"
#include "passwd.h"
#include "store.h"
#include "util.h"

#define STORE_MAP_DEFAULT	(8ULL * 1024 * 1024 * 1024)
#define STORE_MAXDBS		16
#define STORE_MAXREADERS	256
#define STORE_SHOW_MAX		80	/* bytes of a bad name quoted back */

#define STORE_POLICY_SLOTS	64	/* cached domain policies */
#define STORE_SECRETS_MAX	8	/* named secrets in DB_META */

/*
 * A parsed copy of a domain record's policy fields, reused while the record's
 * stored bytes are unchanged: a full JSON parse of the record (it carries the
 * DKIM keys) per MAIL FROM and header From was most of the daemon's CPU time.
 * Comparing the raw bytes keeps the cache exact, with no invalidation to miss
 * when petrelctl changes a record.
 */
struct store_policy {
	char	 domain[DOMAIN_MAX_LEN + 1];
	void	*raw;
	size_t	 rawlen;
	char	*tenant;
	char	*status;
	json_t	*senders;
};

struct store {
	MDB_env	*env;
	MDB_dbi	 dbi[DB_COUNT];
	pthread_mutex_t		 policy_mtx;
	struct store_policy	 policy[STORE_POLICY_SLOTS];
	/* store_secret's cache: the few named secrets, once read */
	struct {
		char		 name[32];
		unsigned char	 v[STORE_SECRET_LEN];
	}			 secrets[STORE_SECRETS_MAX];
	size_t			 nsecrets;
};

static void store_policy_free(struct store_policy *);

static const char *store_db_names[DB_COUNT] = {
	[DB_TENANTS] = "tenants",
	[DB_USERS] = "users",
	[DB_DOMAINS] = "domains",
	[DB_NETWORKS] = "networks",
	[DB_APIKEYS] = "apikeys",
	[DB_MESSAGES] = "messages",
	[DB_BODIES] = "bodies",
	[DB_RCPTS] = "rcpts",
	[DB_SCHEDULE] = "schedule",
	[DB_EVENTS] = "events",
	[DB_SUPPRESSIONS] = "suppressions",
	[DB_META] = "meta",
	[DB_EVENTIDX] = "eventidx",
	[DB_WEBHOOKS] = "webhooks",
};

/* store_seterr - set a malloc'd message in *err_r when err_r is not NULL */
static void PRINTFLIKE(2, 3)
store_seterr(char **err_r, const char *fmt, ...)
{
	va_list ap;

	if (err_r == NULL)
		return;
	va_start(ap, fmt);
	*err_r = xvasprintf(fmt, ap);
	va_end(ap);
}

/* store_mdberr - user-facing message for an LMDB error code */
static void
store_mdberr(char **err_r, const char *what, int rc)
{
	if (rc == MDB_MAP_FULL)
		store_seterr(err_r, "store full");
	else
		store_seterr(err_r, "store error (%s): %s", what,
		    mdb_strerror(rc));
}

/* store_show - printable, bounded copy of untrusted text for messages */
static char *
store_show(const char *s)
{
	return util_sanitize(s, STORE_SHOW_MAX);
}

int
store_open(const char *data_dir, uint64_t map_size, struct store **s_r,
    char **err_r)
{
	struct store *s;
	MDB_txn *txn;
	int rc, dead = 0, i;

	if (mkdir(data_dir, 0700) == -1 && errno != EEXIST) {
		store_seterr(err_r, "cannot create data_dir %s: %s", data_dir,
		    strerror(errno));
		return -1;
	}
	s = xcalloc(1, sizeof(*s));
	pthread_mutex_init(&s->policy_mtx, NULL);
	if ((rc = mdb_env_create(&s->env)) != 0) {
		store_seterr(err_r, "cannot create LMDB environment: %s",
		    mdb_strerror(rc));
		free(s);
		return -1;
	}
	if ((rc = mdb_env_set_maxdbs(s->env, STORE_MAXDBS)) != 0 ||
	    (rc = mdb_env_set_maxreaders(s->env, STORE_MAXREADERS)) != 0 ||
	    (rc = mdb_env_set_mapsize(s->env,
	    (size_t)(map_size ? map_size : STORE_MAP_DEFAULT))) != 0) {
		store_seterr(err_r, "cannot configure LMDB: %s",
		    mdb_strerror(rc));
		goto fail;
	}
	/* MDB_NOTLS: read transactions are handed between threads. Syncing
	 * stays on: commits are durable. */
	if ((rc = mdb_env_open(s->env, data_dir, MDB_NOTLS, 0600)) != 0) {
		store_seterr(err_r, "cannot open store in %s: %s", data_dir,
		    mdb_strerror(rc));
		goto fail;
	}
	/* reader slots left by a killed process would pin old pages */
	if (mdb_reader_check(s->env, &dead) == 0 && dead > 0)
		log_info("event=store_stale_readers cleared=%d", dead);
	if ((rc = mdb_txn_begin(s->env, NULL, 0, &txn)) != 0) {
		store_mdberr(err_r, "begin", rc);
		goto fail;
	}
	for (i = 0; i < DB_COUNT; i++) {
		if ((rc = mdb_dbi_open(txn, store_db_names[i], MDB_CREATE,
		    &s->dbi[i])) != 0) {
			mdb_txn_abort(txn);
			store_seterr(err_r, "cannot open database %s: %s",
			    store_db_names[i], rc == MDB_MAP_FULL ?
			    "store full" : mdb_strerror(rc));
			goto fail;
		}
	}
	if ((rc = mdb_txn_commit(txn)) != 0) {
		store_mdberr(err_r, "commit", rc);
		goto fail;
	}
	*s_r = s;
	return 0;
fail:
	mdb_env_close(s->env);
	free(s);
	return -1;
}

void
store_close(struct store *s)
{
	size_t i;

	if (s == NULL)
		return;
	mdb_env_close(s->env);
	for (i = 0; i < STORE_POLICY_SLOTS; i++)
		store_policy_free(&s->policy[i]);
	pthread_mutex_destroy(&s->policy_mtx);
	free(s);
}

MDB_env *
store_env(struct store *s)
{
	return s->env;
}

MDB_dbi
store_dbi(struct store *s, enum store_db db)
{
	if ((int)db < 0 || db >= DB_COUNT)
		fatalx("store_dbi: bad database %d", (int)db);
	return s->dbi[db];
}

/* Transaction and record helpers. */

static int
store_begin(struct store *s, int rdonly, MDB_txn **txn_r, char **err_r)
{
	int rc;

	rc = mdb_txn_begin(s->env, NULL, rdonly ? MDB_RDONLY : 0, txn_r);
	if (rc != 0) {
		store_mdberr(err_r, "begin", rc);
		return -1;
	}
	return 0;
}

static int
store_commit(MDB_txn *txn, char **err_r)
{
	int rc;

	if ((rc = mdb_txn_commit(txn)) != 0) {
		store_mdberr(err_r, "commit", rc);
		return -1;
	}
	return 0;
}

static MDB_val
store_key(const char *k)
{
	MDB_val v;

	v.mv_data = (void *)(uintptr_t)k;
	v.mv_size = strlen(k);
	return v;
}

/* store_get - the JSON value under key, a new reference or NULL */
static json_t *
store_get(struct store *s, MDB_txn *txn, enum store_db db, const char *key)
{
	MDB_val k = store_key(key), v;

	if (k.mv_size == 0 || mdb_get(txn, s->dbi[db], &k, &v) != 0)
		return NULL;
	return json_loadb(v.mv_data, v.mv_size, 0, NULL);
}

static int
store_exists(struct store *s, MDB_txn *txn, enum store_db db,
    const char *key)
{
	MDB_val k = store_key(key), v;

	return k.mv_size > 0 && mdb_get(txn, s->dbi[db], &k, &v) == 0;
}

/* store_put - write json under key; MDB_NOOVERWRITE etc. in flags */
static int
store_put(struct store *s, MDB_txn *txn, enum store_db db, const char *key,
    const json_t *val, unsigned flags, char **err_r)
{
	MDB_val k = store_key(key), v;
	char *data;
	int rc;

	if ((data = json_dumps(val, JSON_COMPACT)) == NULL) {
		store_seterr(err_r, "cannot encode record");
		return -1;
	}
	v.mv_data = data;
	v.mv_size = strlen(data);
	rc = mdb_put(txn, s->dbi[db], &k, &v, flags);
	free(data);
	if (rc != 0) {
		store_mdberr(err_r, "put", rc);
		return -1;
	}
	return 0;
}

static int
store_del(struct store *s, MDB_txn *txn, enum store_db db, const char *key,
    char **err_r)
{
	MDB_val k = store_key(key);
	int rc;

	if ((rc = mdb_del(txn, s->dbi[db], &k, NULL)) != 0) {
		store_mdberr(err_r, "delete", rc);
		return -1;
	}
	return 0;
}

/* store_list - array of every value of db, optionally only those whose
 * "tenant" field equals tenant */
static json_t *
store_list(struct store *s, enum store_db db, const char *tenant)
{
	MDB_txn *txn;
	MDB_cursor *c;
	MDB_val k, v;
	json_t *arr = json_array(), *o;
	const char *t;
	int op = MDB_FIRST;

	if (store_begin(s, 1, &txn, NULL) == -1)
		return arr;
	if (mdb_cursor_open(txn, s->dbi[db], &c) != 0) {
		mdb_txn_abort(txn);
		return arr;
	}
	while (mdb_cursor_get(c, &k, &v, op) == 0) {
		op = MDB_NEXT;
		if ((o = json_loadb(v.mv_data, v.mv_size, 0, NULL)) == NULL)
			continue;
		t = json_string_value(json_object_get(o, "tenant"));
		if (tenant && (t == NULL || strcmp(tenant, t) != 0)) {
			json_decref(o);
			continue;
		}
		json_array_append_new(arr, o);
	}
	mdb_cursor_close(c);
	mdb_txn_abort(txn);
	return arr;
}

/* store_del_tenant_rows - delete every value of db owned by tenant: the
 * keys are collected first, then deleted, so the scan never walks a cursor
 * over its own deletions */
static int
store_del_tenant_rows(struct store *s, MDB_txn *txn, enum store_db db,
    const char *tenant, int *n_r, char **err_r)
{
	MDB_cursor *c;
	MDB_val k, v;
	json_t *o, *keys = json_array(), *key;
	const char *t;
	size_t i;
	int rc, op = MDB_FIRST;

	if ((rc = mdb_cursor_open(txn, s->dbi[db], &c)) != 0) {
		json_decref(keys);
		store_mdberr(err_r, "cursor", rc);
		return -1;
	}
	while ((rc = mdb_cursor_get(c, &k, &v, op)) == 0) {
		op = MDB_NEXT;
		if ((o = json_loadb(v.mv_data, v.mv_size, 0, NULL)) == NULL)
			continue;
		t = json_string_value(json_object_get(o, "tenant"));
		if (t && strcmp(t, tenant) == 0)
			json_array_append_new(keys,
			    json_stringn_nocheck(k.mv_data, k.mv_size));
		json_decref(o);
	}
	mdb_cursor_close(c);
	if (rc != MDB_NOTFOUND) {
		json_decref(keys);
		store_mdberr(err_r, "scan", rc);
		return -1;
	}
	json_array_foreach(keys, i, key) {
		k.mv_data = (void *)(uintptr_t)json_string_value(key);
		k.mv_size = json_string_length(key);
		if ((rc = mdb_del(txn, s->dbi[db], &k, NULL)) != 0) {
			json_decref(keys);
			store_mdberr(err_r, "delete", rc);
			return -1;
		}
		(*n_r)++;
	}
	json_decref(keys);
	return 0;
}

/* Names */

/* store_check_name - [a-z0-9][a-z0-9<extra>]{0,63} */
static int
store_check_name(const char *name, const char *extra, const char **err_r)
{
	const char *p;
	size_t n = strnlen(name, NAME_MAX_LEN + 1);

	if (n == 0) {
		*err_r = "empty name";
		return -1;
	}
	if (n > NAME_MAX_LEN) {
		*err_r = "name too long (max 64 characters)";
		return -1;
	}
	if (!((name[0] >= 'a' && name[0] <= 'z') ||
	    (name[0] >= '0' && name[0] <= '9'))) {
		*err_r = "name must start with a lower-case letter or a digit";
		return -1;
	}
	for (p = name; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
		    strchr(extra, *p) != NULL)) {
			*err_r = "name may only contain a-z, 0-9 and . _ -";
			return -1;
		}
	return 0;
}

int
store_valid_name(const char *name, const char **err_r)
{
	return store_check_name(name, "._-", err_r);
}

int
store_valid_username(const char *name, const char **err_r)
{
	if (store_check_name(name, "._-@+", err_r) == -1) {
		if (strcmp(*err_r, "name may only contain a-z, 0-9 and . _ -")
		    == 0)
			*err_r = "user name may only contain a-z, 0-9 and . _ - @ +";
		return -1;
	}
	return 0;
}

/* store_bad_name - "invalid <what> name "x": reason" */
static void
store_bad_name(char **err_r, const char *what, const char *name,
    const char *why)
{
	char *show = store_show(name);

	store_seterr(err_r, "invalid %s name \"%s\": %s", what, show, why);
	free(show);
}

static void
store_no_tenant(char **err_r, const char *name)
{
	char *show = store_show(name);

	store_seterr(err_r, "tenant \"%s\" does not exist", show);
	free(show);
}

/* Tenants */

int
store_tenant_add(struct store *s, const char *name, char **err_r)
{
	MDB_txn *txn;
	json_t *o;
	const char *why;
	int rc;

	if (store_valid_name(name, &why) == -1) {
		store_bad_name(err_r, "tenant", name, why);
		return -1;
	}
	if (store_begin(s, 0, &txn, err_r) == -1)
		return -1;
	if (store_exists(s, txn, DB_TENANTS, name)) {
		mdb_txn_abort(txn);
		store_seterr(err_r, "tenant \"%s\" already exists", name);
		return -1;
	}
	o = json_pack("{s:s, s:I}", "name", name, "created",
	    (json_int_t)util_now());
	rc = store_put(s, txn, DB_TENANTS, name, o, MDB_NOOVERWRITE, err_r);
	json_decref(o);
	if (rc == -1) {
		mdb_txn_abort(txn);
		return -1;
	}
	return store_commit(txn, err_r);
}

int
store_tenant_del_txn(struct store *s, MDB_txn *txn, const char *name,
    int counts[3], char **err_r)
{
	counts[0] = counts[1] = counts[2] = 0;
	if (!store_exists(s, txn, DB_TENANTS, name)) {
		store_no_tenant(err_r, name);
		return -1;
	}
	if (store_del_tenant_rows(s, txn, DB_USERS, name, &counts[0],
	    err_r) == -1 ||
	    store_del_tenant_rows(s, txn, DB_DOMAINS, name, &counts[1],
	    err_r) == -1 ||
	    store_del_tenant_rows(s, txn, DB_NETWORKS, name, &counts[2],
	    err_r) == -1 ||
	    store_del(s, txn, DB_TENANTS, name, err_r) == -1)
		return -1;
	return 0;
}

int
store_tenant_del(struct store *s, const char *name, char **err_r)
{
	MDB_txn *txn;
	int n[3];

	if (store_begin(s, 0, &txn, err_r) == -1)
		return -1;
	if (store_tenant_del_txn(s, txn, name, n, err_r) == -1) {
		mdb_txn_abort(txn);
		return -1;
	}
	if (store_commit(txn, err_r) == -1)
		return -1;
	log_info("event=tenant_deleted tenant=%s users=%d domains=%d "
	    "networks=%d", name, n[0], n[1], n[2]);
	return 0;
}

int
store_del_prefix(struct store *s, MDB_txn *txn, enum store_db db,
    const void *prefix, size_t len, int *n_r, char **err_r)
{
	MDB_cursor *c;
	MDB_val k, v;
	int rc;

	if ((rc = mdb_cursor_open(txn, s->dbi[db], &c)) != 0) {
		store_mdberr(err_r, "cursor", rc);
		return -1;
	}
	k.mv_data = (void *)(uintptr_t)prefix;
	k.mv_size = len;
	/* after mdb_cursor_del the cursor stands on the next key, which
	 * MDB_NEXT returns without moving on */
	rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
	while (rc == 0 && k.mv_size >= len &&
	    memcmp(k.mv_data, prefix, len) == 0) {
		if ((rc = mdb_cursor_del(c, 0)) != 0)
			break;
		(*n_r)++;
		rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
	}
	mdb_cursor_close(c);
	if (rc != 0 && rc != MDB_NOTFOUND) {
		store_mdberr(err_r, "delete", rc);
		return -1;
	}
	return 0;
}

int
store_tenant_exists(struct store *s, const char *name)
{
	MDB_txn *txn;
	int r;

	if (store_begin(s, 1, &txn, NULL) == -1)
		return 0;
	r = store_exists(s, txn, DB_TENANTS, name);
	mdb_txn_abort(txn);
	return r;
}

json_t *
store_tenant_list(struct store *s)
{
	return store_list(s, DB_TENANTS, NULL);
}

/* Users */

/* store_user_check_new - tenant exists and user does not; in txn, or in a
 * read transaction of its own when txn is NULL */
static int
store_user_check_new(struct store *s, MDB_txn *txn, const char *tenant,
    const char *user, char **err_r)
{
	MDB_txn *rtxn = txn;
	json_t *old;
	const char *ot;
	int rc = -1;

	if (txn == NULL && store_begin(s, 1, &rtxn, err_r) == -1)
		return -1;
	if (!store_exists(s, rtxn, DB_TENANTS, tenant))
		store_no_tenant(err_r, tenant);
	else if ((old = store_get(s, rtxn, DB_USERS, user)) != NULL ||
	    store_exists(s, rtxn, DB_USERS, user)) {
		ot = json_string_value(json_object_get(old, "tenant"));
		store_seterr(err_r, "user \"%s\" already exists (tenant \"%s\")",
		    user, ot ? ot : "?");
		json_decref(old);
	} else
		rc = 0;
	if (txn == NULL)
		mdb_txn_abort(rtxn);
	return rc;
}

int
store_user_add(struct store *s, const char *tenant, const char *user,
    const char *password, char **err_r)
{
	MDB_txn *txn;
	json_t *o;
	const char *why;
	char *hash;
	int rc;

	if (store_valid_username(user, &why) == -1) {
		store_bad_name(err_r, "user", user, why);
		return -1;
	}
	if (password == NULL || *password == '\0') {
		store_seterr(err_r, "password must not be empty");
		return -1;
	}
	if (strnlen(password, PASSWORD_MAX_LEN + 1) > PASSWORD_MAX_LEN) {
		store_seterr(err_r, "password too long (max %d bytes)",
		    PASSWORD_MAX_LEN);
		return -1;
	}
	/* checked here and again under the write lock: the slow KDF runs
	 * between the two, outside any transaction */
	if (store_user_check_new(s, NULL, tenant, user, err_r) == -1)
		return -1;
	hash = passwd_hash(password);
	if (store_begin(s, 0, &txn, err_r) == -1) {
		free(hash);
		return -1;
	}
	if (store_user_check_new(s, txn, tenant, user, err_r) == -1) {
		mdb_txn_abort(txn);
		free(hash);
		return -1;
	}
	o = json_pack("{s:s, s:s, s:s, s:I}", "user", user, "tenant", tenant,
	    "hash", hash, "created", (json_int_t)util_now());
	free(hash);
	rc = store_put(s, txn, DB_USERS, user, o, MDB_NOOVERWRITE, err_r);
	json_decref(o);
	if (rc == -1) {
		mdb_txn_abort(txn);
		return -1;
	}
	return store_commit(txn, err_r);
}

int
store_user_del(struct store *s, const char *tenant, const char *user,
    char **err_r)
{
	MDB_txn *txn;
	json_t *o;
	const char *ot;
	char *show;

	if (store_begin(s, 0, &txn, err_r) == -1)
		return -1;
	o = store_get(s, txn, DB_USERS, user);
	ot = json_string_value(json_object_get(o, "tenant"));
	if (o == NULL || (tenant && (ot == NULL || strcmp(ot, tenant) != 0))) {
		mdb_txn_abort(txn);
		json_decref(o);
		show = store_show(user);
		if (tenant) {
			char *tshow = store_show(tenant);

			store_seterr(err_r,
			    "user \"%s\" does not exist (tenant \"%s\")", show,
			    tshow);
			free(tshow);
		} else
			store_seterr(err_r, "user \"%s\" does not exist", show);
		free(show);
		return -1;
	}
	json_decref(o);
	if (store_del(s, txn, DB_USERS, user, err_r) == -1) {
		mdb_txn_abort(txn);
		return -1;
	}
	return store_commit(txn, err_r);
}

json_t *
store_user_list(struct store *s, const char *tenant, char **err_r)
{
	json_t *arr, *o;
	size_t i;

	if (tenant && !store_tenant_exists(s, tenant)) {
		store_no_tenant(err_r, tenant);
		return NULL;
	}
	arr = store_list(s, DB_USERS, tenant);
	json_array_foreach(arr, i, o)
		json_object_del(o, "hash");
	return arr;
}

int
store_user_lookup(struct store *s, const char *user, char **tenant_r,
    char **hash_r)
{
	char key[NAME_MAX_LEN + 1];
	MDB_txn *txn;
	json_t *o;
	const char *t, *h;
	int rc = -1;

	/* user names are stored lower-case; AUTH may send any case */
	if (util_strlcpy(key, user, sizeof(key)) >= sizeof(key))
		return -1;
	util_lower(key);
	if (store_begin(s, 1, &txn, NULL) == -1)
		return -1;
	o = store_get(s, txn, DB_USERS, key);
	mdb_txn_abort(txn);
	t = json_string_value(json_object_get(o, "tenant"));
	h = json_string_value(json_object_get(o, "hash"));
	if (t && h) {
		*tenant_r = xstrdup(t);
		*hash_r = xstrdup(h);
		rc = 0;
	}
	json_decref(o);
	return rc;
}

/* Domains */

/* store_domain_name - the normalised name of rec, or NULL + error */
static const char *
store_domain_name(const json_t *rec, char **err_r)
{
	const char *d = json_string_value(json_object_get(rec, "domain"));
	char norm[DOMAIN_MAX_LEN + 1], *show;
	const char *why;

	if (d == NULL) {
		store_seterr(err_r, "domain record without a name");
		return NULL;
	}
	if (domain_normalize(d, norm, sizeof(norm), &why) == -1) {
		show = store_show(d);
		store_seterr(err_r, "invalid domain \"%s\": %s", show, why);
		free(show);
		return NULL;
	}
	if (strcmp(norm, d) != 0) {
		show = store_show(d);
		store_seterr(err_r, "invalid domain \"%s\": not normalised "
		    "(use \"%s\")", show, norm);
		free(show);
		return NULL;
	}
	return d;
}

/* store_domain_key - lower-cased, normalised lookup key of an input name */
static int
store_domain_key(const char *in, char key[DOMAIN_MAX_LEN + 1])
{
	const char *why;

	return domain_normalize(in, key, DOMAIN_MAX_LEN + 1, &why);
}

int
store_domain_add(struct store *s, json_t *rec, char **err_r)
{
	const char *d, *tenant;
	MDB_txn *txn;

	if ((d = store_domain_name(rec, err_r)) == NULL)
		return -1;
	if ((tenant = json_string_value(json_object_get(rec, "tenant"))) ==
	    NULL) {
		store_seterr(err_r, "domain \"%s\" has no tenant", d);
		return -1;
	}
	if (store_begin(s, 0, &txn, err_r) == -1)
		return -1;
	if (!store_exists(s, txn, DB_TENANTS, tenant)) {
		mdb_txn_abort(txn);
		store_no_tenant(err_r, tenant);
		return -1;
	}
	if (store_exists(s, txn, DB_DOMAINS, d)) {
		mdb_txn_abort(txn);
		store_seterr(err_r, "domain \"%s\" already exists", d);
		return -1;
	}
	if (store_put(s, txn, DB_DOMAINS, d, rec, MDB_NOOVERWRITE,
	    err_r) == -1) {
		mdb_txn_abort(txn);
		return -1;
	}
	return store_commit(txn, err_r);
}

int
store_domain_put(struct store *s, json_t *rec, char **err_r)
{
	const char *d;
	MDB_txn *txn;

	if ((d = store_domain_name(rec, err_r)) == NULL)
		return -1;
	if (store_begin(s, 0, &txn, err_r) == -1)
		return -1;
	if (!store_exists(s, txn, DB_DOMAINS, d)) {
		mdb_txn_abort(txn);
		store_seterr(err_r, "domain \"%s\" does not exist", d);
		return -1;
	}
	if (store_put(s, txn, DB_DOMAINS, d, rec, 0, err_r) == -1) {
		mdb_txn_abort(txn);
		return -1;
	}
	return store_commit(txn, err_r);
}

json_t *
store_domain_get(struct store *s, const char *domain)
{
	char key[DOMAIN_MAX_LEN + 1];
	MDB_txn *txn;
	json_t *o;

	if (store_domain_key(domain, key) == -1)
		return NULL;
	if (store_begin(s, 1, &txn, NULL) == -1)
		return NULL;
	o = store_get(s, txn, DB_DOMAINS, key);
	mdb_txn_abort(txn);
	return o;
}

int
store_domain_del(struct store *s, const char *domain, char **err_r)
{
	char key[DOMAIN_MAX_LEN + 1], *show;
	MDB_txn *txn;

	if (store_domain_key(domain, key) == -1) {
		show = store_show(domain);
		store_seterr(err_r, "domain \"%s\" does not exist", show);
		free(show);
		return -1;
	}
	if (store_begin(s, 0, &txn, err_r) == -1)
		return -1;
	if (!store_exists(s, txn, DB_DOMAINS, key)) {
		mdb_txn_abort(txn);
		store_seterr(err_r, "domain \"%s\" does not exist", key);
		return -1;
	}
	if (store_del(s, txn, DB_DOMAINS, key, err_r) == -1) {
		mdb_txn_abort(txn);
		return -1;
	}
	return store_commit(txn, err_r);
}

json_t *
store_domain_list(struct store *s, const char *tenant)
{
	return store_list(s, DB_DOMAINS, tenant);
}

/* Senders */

/* store_valid_localpart - RFC 5322 dot-atom text, at most 64 bytes */
static int
store_valid_localpart(const char *lp, const char **err_r)
{
	static const char atext[] = "!#$%&'*+-/=?^_`{|}~";
	size_t n = strnlen(lp, LOCALPART_MAX_LEN + 1);
	const char *p;

	if (n == 0) {
		*err_r = "empty local part";
		return -1;
	}
	if (n > LOCALPART_MAX_LEN) {
		*err_r = "local part too long (max 64 characters)";
		return -1;
	}
	if (lp[0] == '.' || lp[n - 1] == '.' || strstr(lp, "..") != NULL) {
		*err_r = "local part must not start or end with a dot or "
		    "contain two dots in a row";
		return -1;
	}
	for (p = lp; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		    (*p >= '0' && *p <= '9') || *p == '.' ||
		    strchr(atext, *p) != NULL)) {
			*err_r = "invalid character in local part";
			return -1;
		}
	return 0;
}

/* store_senders_find - index of lp in the senders array, -1 if absent */
static int
store_senders_find(const json_t *senders, const char *lp)
{
	const json_t *v;
	size_t i;

	json_array_foreach(senders, i, v)
		if (json_string_value(v) &&
		    strcasecmp(json_string_value(v), lp) == 0)
			return (int)i;
	return -1;
}

/* store_sender_edit - add (add=1) or remove localpart for domain */
static int
store_sender_edit(struct store *s, const char *domain, const char *localpart,
    int add, char **err_r)
{
	char key[DOMAIN_MAX_LEN + 1], lp[LOCALPART_MAX_LEN + 1], *show;
	const char *why;
	MDB_txn *txn;
	json_t *rec, *senders;
	int idx;

	if (store_domain_key(domain, key) == -1) {
		show = store_show(domain);
		store_seterr(err_r, "domain \"%s\" does not exist", show);
		free(show);
		return -1;
	}
	if (store_valid_localpart(localpart, &why) == -1) {
		show = store_show(localpart);
		store_seterr(err_r, "invalid local part \"%s\": %s", show, why);
		free(show);
		return -1;
	}
	util_strlcpy(lp, localpart, sizeof(lp));
	util_lower(lp);
	if (store_begin(s, 0, &txn, err_r) == -1)
		return -1;
	if ((rec = store_get(s, txn, DB_DOMAINS, key)) == NULL) {
		mdb_txn_abort(txn);
		store_seterr(err_r, "domain \"%s\" does not exist", key);
		return -1;
	}
	senders = json_object_get(rec, "senders");
	if (!json_is_array(senders)) {
		senders = json_array();
		json_object_set_new(rec, "senders", senders);
	}
	idx = store_senders_find(senders, lp);
	if (add && idx >= 0) {
		store_seterr(err_r, "sender \"%s@%s\" already exists", lp, key);
		goto fail;
	}
	if (!add && idx < 0) {
		store_seterr(err_r, "sender \"%s@%s\" does not exist", lp, key);
		goto fail;
	}
	if (add)
		json_array_append_new(senders, json_string(lp));
	else
		json_array_remove(senders, (size_t)idx);
	if (store_put(s, txn, DB_DOMAINS, key, rec, 0, err_r) == -1)
		goto fail;
	json_decref(rec);
	return store_commit(txn, err_r);
fail:
	json_decref(rec);
	mdb_txn_abort(txn);
	return -1;
}

int
store_sender_add(struct store *s, const char *domain, const char *localpart,
    char **err_r)
{
	return store_sender_edit(s, domain, localpart, 1, err_r);
}

int
store_sender_del(struct store *s, const char *domain, const char *localpart,
    char **err_r)
{
	return store_sender_edit(s, domain, localpart, 0, err_r);
}

/* store_policy_free - release one cache slot's contents */
static void
store_policy_free(struct store_policy *p)
{
	free(p->raw);
	free(p->tenant);
	free(p->status);
	json_decref(p->senders);
	memset(p, 0, sizeof(*p));
}

/* store_policy_slot - the cache slot of a domain (FNV-1a of the name) */
static struct store_policy *
store_policy_slot(struct store *s, const char *domain)
{
	uint32_t h = 2166136261u;

	for (; *domain; domain++)
		h = (h ^ (unsigned char)*domain) * 16777619u;
	return &s->policy[h % STORE_POLICY_SLOTS];
}

/* store_policy_check - the sender check against a cached policy */
static int
store_policy_check(const struct store_policy *p, const char *tenant,
    const char *localpart, const char **reason_r)
{
	/* ownership first: do not tell a tenant about another's domain */
	if (p->tenant == NULL || tenant == NULL || strcmp(p->tenant, tenant) != 0)
		*reason_r = "domain belongs to another tenant";
	else if (p->status == NULL || strcmp(p->status, "verified") != 0)
		*reason_r = "domain not verified";
	else if (json_array_size(p->senders) > 0 &&
	    (localpart == NULL || store_senders_find(p->senders, localpart) < 0))
		*reason_r = "local part not allowed";
	else
		return 0;
	return -1;
}

int
store_sender_check(struct store *s, const char *tenant,
    const char *localpart, const char *domain, const char **reason_r)
{
	char key[DOMAIN_MAX_LEN + 1];
	struct store_policy *p;
	MDB_txn *txn;
	MDB_val k, v;
	json_t *rec;
	const char *t, *st;
	int rc;

	*reason_r = "unknown domain";
	if (store_domain_key(domain, key) == -1)
		return -1;
	if (store_begin(s, 1, &txn, NULL) == -1) {
		*reason_r = "store unavailable";
		return -1;
	}
	k = store_key(key);
	if (mdb_get(txn, s->dbi[DB_DOMAINS], &k, &v) != 0) {
		mdb_txn_abort(txn);
		return -1;
	}
	pthread_mutex_lock(&s->policy_mtx);
	p = store_policy_slot(s, key);
	if (strcmp(p->domain, key) != 0 || p->rawlen != v.mv_size ||
	    memcmp(p->raw, v.mv_data, v.mv_size) != 0) {
		store_policy_free(p);
		if ((rec = json_loadb(v.mv_data, v.mv_size, 0, NULL)) == NULL) {
			pthread_mutex_unlock(&s->policy_mtx);
			mdb_txn_abort(txn);
			return -1;
		}
		util_strlcpy(p->domain, key, sizeof(p->domain));
		p->raw = xmalloc(v.mv_size);
		memcpy(p->raw, v.mv_data, v.mv_size);
		p->rawlen = v.mv_size;
		t = json_string_value(json_object_get(rec, "tenant"));
		st = json_string_value(json_object_get(rec, "status"));
		p->tenant = t ? xstrdup(t) : NULL;
		p->status = st ? xstrdup(st) : NULL;
		p->senders = json_incref(json_object_get(rec, "senders"));
		json_decref(rec);
	}
	mdb_txn_abort(txn);
	rc = store_policy_check(p, tenant, localpart, reason_r);
	pthread_mutex_unlock(&s->policy_mtx);
	return rc;
}

/* Networks */

int
store_network_add(struct store *s, const char *tenant, const char *cidr,
    char **err_r)
{
	char key[NETADDR_CIDR_STRLEN], *show;
	struct cidr c;
	const char *why;
	MDB_txn *txn;
	json_t *o, *old;
	int rc;

	if (netaddr_parse_cidr(cidr, &c, &why) == -1) {
		show = store_show(cidr);
		store_seterr(err_r, "invalid network \"%s\": %s", show, why);
		free(show);
		return -1;
	}
	netaddr_cidr_str(&c, key, sizeof(key));
	if (store_begin(s, 0, &txn, err_r) == -1)
		return -1;
	if (!store_exists(s, txn, DB_TENANTS, tenant)) {
		mdb_txn_abort(txn);
		store_no_tenant(err_r, tenant);
		return -1;
	}
	if ((old = store_get(s, txn, DB_NETWORKS, key)) != NULL ||
	    store_exists(s, txn, DB_NETWORKS, key)) {
		const char *ot = json_string_value(json_object_get(old, "tenant"));

		store_seterr(err_r, "network %s already exists (tenant \"%s\")",
		    key, ot ? ot : "?");
		json_decref(old);
		mdb_txn_abort(txn);
		return -1;
	}
	o = json_pack("{s:s, s:s, s:I}", "cidr", key, "tenant", tenant,
	    "created", (json_int_t)util_now());
	rc = store_put(s, txn, DB_NETWORKS, key, o, MDB_NOOVERWRITE, err_r);
	json_decref(o);
	if (rc == -1) {
		mdb_txn_abort(txn);
		return -1;
	}
	return store_commit(txn, err_r);
}

int
store_network_del(struct store *s, const char *cidr, char **err_r)
{
	char key[NETADDR_CIDR_STRLEN], *show;
	struct cidr c;
	const char *why;
	MDB_txn *txn;

	if (netaddr_parse_cidr(cidr, &c, &why) == -1) {
		show = store_show(cidr);
		store_seterr(err_r, "invalid network \"%s\": %s", show, why);
		free(show);
		return -1;
	}
	netaddr_cidr_str(&c, key, sizeof(key));
	if (store_begin(s, 0, &txn, err_r) == -1)
		return -1;
	if (!store_exists(s, txn, DB_NETWORKS, key)) {
		mdb_txn_abort(txn);
		store_seterr(err_r, "network %s does not exist", key);
		return -1;
	}
	if (store_del(s, txn, DB_NETWORKS, key, err_r) == -1) {
		mdb_txn_abort(txn);
		return -1;
	}
	return store_commit(txn, err_r);
}

json_t *
store_network_list(struct store *s)
{
	return store_list(s, DB_NETWORKS, NULL);
}

char *
store_network_lookup(struct store *s, const struct sockaddr *sa)
{
	char key[NETADDR_CIDR_STRLEN], *best = NULL;
	int best_prefix = -1, op = MDB_FIRST;
	MDB_txn *txn;
	MDB_cursor *c;
	MDB_val k, v;
	struct cidr cd;
	const char *why, *t;
	json_t *o;

	if (store_begin(s, 1, &txn, NULL) == -1)
		return NULL;
	if (mdb_cursor_open(txn, s->dbi[DB_NETWORKS], &c) != 0) {
		mdb_txn_abort(txn);
		return NULL;
	}
	while (mdb_cursor_get(c, &k, &v, op) == 0) {
		op = MDB_NEXT;
		if (k.mv_size >= sizeof(key))
			continue;
		memcpy(key, k.mv_data, k.mv_size);
		key[k.mv_size] = '\0';
		if (netaddr_parse_cidr(key, &cd, &why) == -1 ||
		    cd.prefix <= best_prefix || !netaddr_match(&cd, sa))
			continue;
		if ((o = json_loadb(v.mv_data, v.mv_size, 0, NULL)) == NULL)
			continue;
		if ((t = json_string_value(json_object_get(o, "tenant"))) !=
		    NULL) {
			free(best);
			best = xstrdup(t);
			best_prefix = cd.prefix;
		}
		json_decref(o);
	}
	mdb_cursor_close(c);
	mdb_txn_abort(txn);
	return best;
}

/* Secrets */

int
store_secret(struct store *s, const char *name, int create,
    unsigned char out[STORE_SECRET_LEN])
{
	MDB_val key = store_key(name), val;
	MDB_txn *txn;
	unsigned char fresh[STORE_SECRET_LEN];
	size_t i;
	int rc, found = 0;

	if (strlen(name) >= sizeof(s->secrets[0].name))
		return -1;
	pthread_mutex_lock(&s->policy_mtx);
	for (i = 0; i < s->nsecrets; i++)
		if (strcmp(s->secrets[i].name, name) == 0) {
			memcpy(out, s->secrets[i].v, STORE_SECRET_LEN);
			pthread_mutex_unlock(&s->policy_mtx);
			return 0;
		}
	if (mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn) == 0) {
		if (mdb_get(txn, s->dbi[DB_META], &key, &val) == 0 &&
		    val.mv_size == STORE_SECRET_LEN) {
			memcpy(out, val.mv_data, STORE_SECRET_LEN);
			found = 1;
		}
		mdb_txn_abort(txn);
	}
	if (!found && create && mdb_txn_begin(s->env, NULL, 0, &txn) == 0) {
		util_random(fresh, sizeof(fresh));
		val.mv_size = sizeof(fresh);
		val.mv_data = fresh;
		rc = mdb_put(txn, s->dbi[DB_META], &key, &val, MDB_NOOVERWRITE);
		if (rc == MDB_KEYEXIST && val.mv_size == STORE_SECRET_LEN) {
			/* another process was first: val is its secret */
			memcpy(out, val.mv_data, STORE_SECRET_LEN);
			mdb_txn_abort(txn);
			found = 1;
		} else if (rc == 0 && mdb_txn_commit(txn) == 0) {
			memcpy(out, fresh, STORE_SECRET_LEN);
			found = 1;
		} else if (rc != 0)
			mdb_txn_abort(txn);
		explicit_bzero(fresh, sizeof(fresh));
	}
	if (found && s->nsecrets < STORE_SECRETS_MAX) {
		util_strlcpy(s->secrets[s->nsecrets].name, name,
		    sizeof(s->secrets[0].name));
		memcpy(s->secrets[s->nsecrets].v, out, STORE_SECRET_LEN);
		s->nsecrets++;
	}
	pthread_mutex_unlock(&s->policy_mtx);
	return found ? 0 : -1;
}
