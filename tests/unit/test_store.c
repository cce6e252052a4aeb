/*
 * test_store.c - unit tests for the LMDB store (tenants, users, domains,
 * senders, networks, a second process on the same environment) and for
 * domain.c (normalisation, new records with DKIM keys, DNS records).
 * Every test gets its own data_dir under /tmp.
 */
#include "autoconf.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <check.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "config.h"
#include "domain.h"
#include "netaddr.h"
#include "passwd.h"
#include "store.h"
#include "util.h"

#define MAP_SIZE (64ULL * 1024 * 1024)

static char tmpdir[64];
static char datadir[128];
static struct store *S;
static struct petrel_conf conf;

static void
setup_dir(void)
{
	util_strlcpy(tmpdir, "/tmp/petrel-test-store.XXXXXX", sizeof(tmpdir));
	ck_assert_ptr_nonnull(mkdtemp(tmpdir));
	/* data_dir itself does not exist yet: store_open creates it */
	snprintf(datadir, sizeof(datadir), "%s/data", tmpdir);
	memset(&conf, 0, sizeof(conf));
	conf.hostname = "mx.petrel.test";
	conf.smtp_bind_address = "192.0.2.10";
	conf.managed_zone = "mail.petrel.test";
	S = NULL;
}

static void
teardown_dir(void)
{
	char path[512];
	DIR *d;
	struct dirent *de;

	store_close(S);
	S = NULL;
	if ((d = opendir(datadir)) != NULL) {
		while ((de = readdir(d)) != NULL) {
			if (de->d_name[0] == '.')
				continue;
			snprintf(path, sizeof(path), "%s/%s", datadir,
			    de->d_name);
			unlink(path);
		}
		closedir(d);
		rmdir(datadir);
	}
	rmdir(tmpdir);
}

static void
setup_store(void)
{
	char *err = NULL;

	setup_dir();
	ck_assert_msg(store_open(datadir, MAP_SIZE, &S, &err) == 0, "%s",
	    err ? err : "");
}

/* expect_err - run a store call that must fail with exactly msg */
#define expect_err(call, msg) do {					\
	char *err_ = NULL;						\
	ck_assert_int_eq((call), -1);					\
	ck_assert_ptr_nonnull(err_);					\
	ck_assert_str_eq(err_, (msg));					\
	free(err_);							\
} while (0)
#define ERR (&err_)

#define expect_ok(call) do {						\
	char *err_ = NULL;						\
	ck_assert_msg((call) == 0, "%s", err_ ? err_ : "(no message)");	\
} while (0)

/* a hand-made, key-less domain record (no key generation) */
static json_t *
mini_domain(const char *name, const char *tenant, const char *status)
{
	return json_pack("{s:s, s:s, s:s, s:s, s:s, s:[], s:[], s:[]}",
	    "domain", name, "tenant", tenant, "kind", "custom",
	    "status", status, "token", "tok", "keys", "records", "senders");
}

static struct sockaddr *
sa_of(const char *ip, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (strchr(ip, ':')) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;

		s6->sin6_family = AF_INET6;
		ck_assert_int_eq(inet_pton(AF_INET6, ip, &s6->sin6_addr), 1);
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)ss;

		s4->sin_family = AF_INET;
		ck_assert_int_eq(inet_pton(AF_INET, ip, &s4->sin_addr), 1);
	}
	return (struct sockaddr *)ss;
}

/* lookup_is - store_network_lookup(ip) equals want (NULL = none) */
static void
lookup_is(const char *ip, const char *want)
{
	struct sockaddr_storage ss;
	char *t = store_network_lookup(S, sa_of(ip, &ss));

	if (want == NULL)
		ck_assert_msg(t == NULL, "%s: got %s", ip, t ? t : "");
	else {
		ck_assert_msg(t != NULL, "%s: no match", ip);
		ck_assert_str_eq(t, want);
	}
	free(t);
}

/* Environment */

START_TEST(test_open_creates_dir)
{
	struct stat st;
	char path[512];
	int i;

	ck_assert_int_eq(stat(datadir, &st), 0);
	ck_assert(S_ISDIR(st.st_mode));
	ck_assert_int_eq(st.st_mode & 077, 0);
	snprintf(path, sizeof(path), "%s/data.mdb", datadir);
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_int_eq(st.st_mode & 077, 0);
	for (i = 0; i < DB_COUNT; i++) {
		MDB_txn *txn;
		MDB_stat ms;

		ck_assert_int_eq(mdb_txn_begin(store_env(S), NULL, MDB_RDONLY,
		    &txn), 0);
		ck_assert_int_eq(mdb_stat(txn, store_dbi(S, i), &ms), 0);
		ck_assert_uint_eq(ms.ms_entries, 0);
		mdb_txn_abort(txn);
	}
}
END_TEST

START_TEST(test_open_bad_dir)
{
	char *err = NULL;
	struct store *s2 = NULL;

	ck_assert_int_eq(store_open("/nonexistent-petrel/x/y", MAP_SIZE, &s2,
	    &err), -1);
	ck_assert_ptr_nonnull(err);
	ck_assert(strstr(err, "/nonexistent-petrel/x/y") != NULL);
	free(err);
}
END_TEST

START_TEST(test_store_full)
{
	char *err = NULL, name[32];
	int i, rc = 0;

	store_close(S);
	S = NULL;
	teardown_dir();
	setup_dir();
	ck_assert_msg(store_open(datadir, 256 * 1024, &S, &err) == 0, "%s",
	    err ? err : "");
	for (i = 0; i < 100000 && rc == 0; i++) {
		snprintf(name, sizeof(name), "t%d", i);
		rc = store_tenant_add(S, name, &err);
	}
	ck_assert_int_eq(rc, -1);
	ck_assert_str_eq(err, "store full");
	free(err);
	/* what was committed before is intact and readable */
	ck_assert(store_tenant_exists(S, "t0"));
	ck_assert(!store_tenant_exists(S, name));
}
END_TEST

/* Tenants */

START_TEST(test_tenants)
{
	json_t *list;

	expect_ok(store_tenant_add(S, "acme", ERR));
	expect_ok(store_tenant_add(S, "beta-2.x_y", ERR));
	expect_err(store_tenant_add(S, "acme", ERR),
	    "tenant \"acme\" already exists");
	expect_err(store_tenant_add(S, "Acme", ERR),
	    "invalid tenant name \"Acme\": name must start with a lower-case "
	    "letter or a digit");
	expect_err(store_tenant_add(S, "ac me", ERR),
	    "invalid tenant name \"ac me\": name may only contain a-z, 0-9 "
	    "and . _ -");
	expect_err(store_tenant_add(S, "", ERR),
	    "invalid tenant name \"\": empty name");
	expect_err(store_tenant_add(S, "-x", ERR),
	    "invalid tenant name \"-x\": name must start with a lower-case "
	    "letter or a digit");
	expect_err(store_tenant_add(S,
	    "a1234567890123456789012345678901234567890123456789012345678901234",
	    ERR), "invalid tenant name "
	    "\"a1234567890123456789012345678901234567890123456789012345678901234\""
	    ": name too long (max 64 characters)");
	ck_assert(store_tenant_exists(S, "acme"));
	ck_assert(!store_tenant_exists(S, "nope"));
	ck_assert(!store_tenant_exists(S, ""));

	list = store_tenant_list(S);
	ck_assert_uint_eq(json_array_size(list), 2);
	ck_assert_str_eq(json_string_value(json_object_get(
	    json_array_get(list, 0), "name")), "acme");
	ck_assert(json_integer_value(json_object_get(json_array_get(list, 0),
	    "created")) > 0);
	json_decref(list);

	expect_err(store_tenant_del(S, "nope", ERR),
	    "tenant \"nope\" does not exist");
	expect_ok(store_tenant_del(S, "beta-2.x_y", ERR));
	ck_assert(!store_tenant_exists(S, "beta-2.x_y"));
	list = store_tenant_list(S);
	ck_assert_uint_eq(json_array_size(list), 1);
	json_decref(list);
}
END_TEST

START_TEST(test_tenant_del_cascades)
{
	json_t *d, *list;
	char *t = NULL, *h = NULL;

	expect_ok(store_tenant_add(S, "acme", ERR));
	expect_ok(store_tenant_add(S, "other", ERR));
	expect_ok(store_user_add(S, "acme", "app", "pw-acme", ERR));
	d = mini_domain("acme.example", "acme", "verified");
	expect_ok(store_domain_add(S, d, ERR));
	json_decref(d);
	d = mini_domain("acme2.example", "acme", "verified");
	expect_ok(store_domain_add(S, d, ERR));
	json_decref(d);
	d = mini_domain("other.example", "other", "verified");
	expect_ok(store_domain_add(S, d, ERR));
	json_decref(d);
	expect_ok(store_network_add(S, "acme", "10.0.0.0/8", ERR));
	expect_ok(store_network_add(S, "other", "192.168.0.0/16", ERR));

	expect_ok(store_tenant_del(S, "acme", ERR));

	ck_assert_int_eq(store_user_lookup(S, "app", &t, &h), -1);
	ck_assert_ptr_null(store_domain_get(S, "acme.example"));
	ck_assert_ptr_null(store_domain_get(S, "acme2.example"));
	lookup_is("10.1.2.3", NULL);
	/* the other tenant keeps everything */
	d = store_domain_get(S, "other.example");
	ck_assert_ptr_nonnull(d);
	json_decref(d);
	lookup_is("192.168.1.1", "other");
	list = store_domain_list(S, NULL);
	ck_assert_uint_eq(json_array_size(list), 1);
	json_decref(list);
	list = store_network_list(S);
	ck_assert_uint_eq(json_array_size(list), 1);
	json_decref(list);
	/* the name is free again */
	expect_ok(store_tenant_add(S, "acme", ERR));
	expect_ok(store_network_add(S, "acme", "10.0.0.0/8", ERR));
}
END_TEST

/* Users: three KDF calls in all */

/* prefix_key - "acme", "acme2" or "acm" by i % 3, NUL, i in 5 digits */
static size_t
prefix_key(char *buf, int i)
{
	const char *t = i % 3 == 0 ? "acme" : i % 3 == 1 ? "acme2" : "acm";
	size_t tl = strlen(t);
	char num[16];

	snprintf(num, sizeof(num), "%05d", i);
	memcpy(buf, t, tl + 1);
	memcpy(buf + tl + 1, num, 5);
	return tl + 1 + 5;
}

/* store_del_prefix - exactly the keys starting with the prefix, over many
 * pages, with neighbours that differ only after the tenant's name */
START_TEST(test_del_prefix)
{
	MDB_txn *txn;
	MDB_val k, v;
	char key[16];
	int i, n = 0;

	ck_assert_int_eq(mdb_txn_begin(store_env(S), NULL, 0, &txn), 0);
	for (i = 0; i < 2000; i++) {
		k.mv_size = prefix_key(key, i);
		k.mv_data = key;
		v.mv_size = 1;
		v.mv_data = "x";
		ck_assert_int_eq(mdb_put(txn, store_dbi(S, DB_SUPPRESSIONS),
		    &k, &v, 0), 0);
	}
	expect_ok(store_del_prefix(S, txn, DB_SUPPRESSIONS, "acme", 5, &n,
	    ERR));
	ck_assert_int_eq(n, 667);
	ck_assert_int_eq(mdb_txn_commit(txn), 0);
	ck_assert_int_eq(mdb_txn_begin(store_env(S), NULL, MDB_RDONLY, &txn),
	    0);
	for (i = 0; i < 2000; i++) {
		k.mv_size = prefix_key(key, i);
		k.mv_data = key;
		ck_assert_int_eq(mdb_get(txn, store_dbi(S, DB_SUPPRESSIONS),
		    &k, &v), i % 3 == 0 ? MDB_NOTFOUND : 0);
	}
	mdb_txn_abort(txn);
}
END_TEST

START_TEST(test_users)
{
	char *t = NULL, *h = NULL;
	json_t *list, *u;

	expect_err(store_user_add(S, "ghost", "app", "pw", ERR),
	    "tenant \"ghost\" does not exist");
	expect_ok(store_tenant_add(S, "acme", ERR));
	expect_ok(store_tenant_add(S, "beta", ERR));
	expect_ok(store_user_add(S, "acme", "app1@acme", "s3cret pw", ERR));
	expect_err(store_user_add(S, "beta", "app1@acme", "x", ERR),
	    "user \"app1@acme\" already exists (tenant \"acme\")");
	expect_err(store_user_add(S, "acme", "App1", "x", ERR),
	    "invalid user name \"App1\": name must start with a lower-case "
	    "letter or a digit");
	expect_err(store_user_add(S, "acme", "a b", "x", ERR),
	    "invalid user name \"a b\": user name may only contain a-z, 0-9 "
	    "and . _ - @ +");
	expect_err(store_user_add(S, "acme", "app2", "", ERR),
	    "password must not be empty");

	/* AUTH may send the name in any case */
	ck_assert_int_eq(store_user_lookup(S, "APP1@acme", &t, &h), 0);
	ck_assert_str_eq(t, "acme");
	ck_assert(strncmp(h, "$scrypt$", 8) == 0);
	ck_assert_int_eq(passwd_verify("s3cret pw", h), 0);
	ck_assert_int_eq(passwd_verify("s3cret pW", h), -1);
	free(t);
	free(h);
	ck_assert_int_eq(store_user_lookup(S, "nobody", &t, &h), -1);

	list = store_user_list(S, "acme", NULL);
	ck_assert_uint_eq(json_array_size(list), 1);
	u = json_array_get(list, 0);
	ck_assert_str_eq(json_string_value(json_object_get(u, "user")),
	    "app1@acme");
	ck_assert_ptr_null(json_object_get(u, "hash"));
	json_decref(list);
	list = store_user_list(S, "beta", NULL);
	ck_assert_uint_eq(json_array_size(list), 0);
	json_decref(list);
	ck_assert_ptr_null(store_user_list(S, "ghost", NULL));

	expect_err(store_user_del(S, "beta", "app1@acme", ERR),
	    "user \"app1@acme\" does not exist (tenant \"beta\")");
	expect_ok(store_user_del(S, "acme", "app1@acme", ERR));
	ck_assert_int_eq(store_user_lookup(S, "app1@acme", &t, &h), -1);
	expect_err(store_user_del(S, "acme", "app1@acme", ERR),
	    "user \"app1@acme\" does not exist (tenant \"acme\")");
}
END_TEST

/* domain.c */

START_TEST(test_domain_normalize)
{
	static const struct { const char *in, *out; } ok[] = {
		{ "example.com", "example.com" },
		{ "Example.COM.", "example.com" },
		{ "bücher.example", "xn--bcher-kva.example" },
		{ "BÜCHER.Example", "xn--bcher-kva.example" },
		{ "xn--bcher-kva.example", "xn--bcher-kva.example" },
		{ "a-b.c-d.example", "a-b.c-d.example" },
		{ "123.example", "123.example" },
	};
	static const char *bad[] = {
		"", ".", "example", "example.", "-bad.example", "bad-.example",
		"a..example", ".example.com", "example.com..", "exa mple.com",
		"ex_ample.com", "ex@mple.com", "1.2.3.4", "a\r\n.example",
		"a\x01.example", "\xff\xfe.example",
	};
	char out[DOMAIN_MAX_LEN + 1], label[80], big[400];
	const char *err;
	size_t i;

	for (i = 0; i < nitems(ok); i++) {
		err = NULL;
		ck_assert_msg(domain_normalize(ok[i].in, out, sizeof(out),
		    &err) == 0, "%s: %s", ok[i].in, err ? err : "");
		ck_assert_str_eq(out, ok[i].out);
	}
	for (i = 0; i < nitems(bad); i++) {
		err = NULL;
		ck_assert_msg(domain_normalize(bad[i], out, sizeof(out),
		    &err) == -1, "accepted \"%s\" as %s", bad[i], out);
		ck_assert_ptr_nonnull(err);
	}
	ck_assert_int_eq(domain_normalize("-bad.example", out, sizeof(out),
	    &err), -1);
	ck_assert_str_eq(err, "label must not start or end with a hyphen");
	ck_assert_int_eq(domain_normalize("example", out, sizeof(out), &err),
	    -1);
	ck_assert(strstr(err, "two labels") != NULL);

	/* a 63-character label is fine, 64 is not */
	memset(label, 'a', 63);
	snprintf(label + 63, sizeof(label) - 63, ".example");
	ck_assert_int_eq(domain_normalize(label, out, sizeof(out), &err), 0);
	memset(label, 'a', 64);
	snprintf(label + 64, sizeof(label) - 64, ".example");
	ck_assert_int_eq(domain_normalize(label, out, sizeof(out), &err), -1);
	ck_assert_str_eq(err, "label too long (max 63 characters)");

	/* 253 characters total is the limit */
	memset(big, 0, sizeof(big));
	for (i = 0; i < 4; i++)
		memcpy(big + 64 * i, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
		    "aaaaaaaaaaaaaaa.", 64);
	big[253] = '\0';	/* 4*64 = 256 -> cut to 253, ends "aaa" */
	ck_assert_int_eq(domain_normalize(big, out, sizeof(out), &err), 0);
	ck_assert_uint_eq(strlen(out), 253);
	big[253] = 'a';
	big[254] = '\0';
	ck_assert_int_eq(domain_normalize(big, out, sizeof(out), &err), -1);
	ck_assert(strstr(err, "253") != NULL);
}
END_TEST

/* find_record - the n-th record of purpose in rec */
static json_t *
find_record(json_t *rec, const char *purpose, int n)
{
	json_t *r;
	size_t i;

	json_array_foreach(json_object_get(rec, "records"), i, r)
		if (strcmp(json_string_value(json_object_get(r, "purpose")),
		    purpose) == 0 && n-- == 0)
			return r;
	return NULL;
}

static const char *
jstr(json_t *o, const char *key)
{
	const char *s = json_string_value(json_object_get(o, key));

	ck_assert_msg(s != NULL, "no string \"%s\"", key);
	return s;
}

/* check_dkim_value - the DKIM TXT value of key k parses as it should */
static void
check_dkim_value(json_t *k, const char *value)
{
	unsigned char der[1024];
	const unsigned char *p = der;
	const char *pub, *alg = jstr(k, "alg"), *pem = jstr(k, "private");
	EVP_PKEY *pk;
	BIO *bio;
	long n;

	if (strcmp(alg, "rsa-sha256") == 0) {
		ck_assert(strncmp(value, "v=DKIM1; k=rsa; p=", 18) == 0);
		pub = value + 18;
		ck_assert_str_eq(pub, jstr(k, "public"));
		n = util_b64_decode(pub, strlen(pub), der);
		ck_assert(n > 0);
		pk = d2i_PUBKEY(NULL, &p, n);
		ck_assert_ptr_nonnull(pk);
		ck_assert_int_eq(EVP_PKEY_get_base_id(pk), EVP_PKEY_RSA);
		ck_assert_int_eq(EVP_PKEY_get_bits(pk), 2048);
		EVP_PKEY_free(pk);
	} else {
		ck_assert_str_eq(alg, "ed25519-sha256");
		ck_assert(strncmp(value, "v=DKIM1; k=ed25519; p=", 22) == 0);
		pub = value + 22;
		ck_assert_str_eq(pub, jstr(k, "public"));
		n = util_b64_decode(pub, strlen(pub), der);
		ck_assert_int_eq(n, 32);
	}
	/* the private key is PKCS#8 PEM and belongs to the public one */
	ck_assert(strncmp(pem, "-----BEGIN PRIVATE KEY-----", 27) == 0);
	bio = BIO_new_mem_buf(pem, -1);
	pk = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
	BIO_free(bio);
	ck_assert_ptr_nonnull(pk);
	if (strcmp(alg, "rsa-sha256") == 0) {
		unsigned char *d2 = NULL;
		int m = i2d_PUBKEY(pk, &d2);

		ck_assert_int_eq(m, n);
		ck_assert(memcmp(d2, der, (size_t)m) == 0);
		OPENSSL_free(d2);
	} else {
		unsigned char raw[32];
		size_t rl = sizeof(raw);

		ck_assert_int_eq(EVP_PKEY_get_raw_public_key(pk, raw, &rl), 1);
		ck_assert(memcmp(raw, der, 32) == 0);
	}
	EVP_PKEY_free(pk);
}

START_TEST(test_domain_new)
{
	json_t *rec, *r, *keys, *k, *pv;
	char *err = NULL, *buf = NULL, name[300], id[7];
	const char *sel;
	size_t len = 0, i;
	FILE *fp;

	rec = domain_new(&conf, "acme", "example.com", 0, &err);
	ck_assert_msg(rec != NULL, "%s", err ? err : "");
	ck_assert_str_eq(jstr(rec, "domain"), "example.com");
	ck_assert_str_eq(jstr(rec, "tenant"), "acme");
	ck_assert_str_eq(jstr(rec, "kind"), "custom");
	ck_assert_str_eq(jstr(rec, "status"), "pending");
	ck_assert_uint_eq(strlen(jstr(rec, "token")), 32);
	ck_assert(json_is_array(json_object_get(rec, "senders")));
	ck_assert(json_is_false(json_object_get(rec, "unsubscribe")));

	/* ownership, spf, two dkim, dmarc */
	ck_assert_uint_eq(json_array_size(json_object_get(rec, "records")), 5);
	json_array_foreach(json_object_get(rec, "records"), i, r) {
		ck_assert_str_eq(jstr(r, "type"), "TXT");
		ck_assert_str_eq(jstr(r, "status"), "pending");
	}
	r = find_record(rec, "ownership", 0);
	ck_assert_ptr_nonnull(r);
	ck_assert_str_eq(jstr(r, "name"), "_petrel.example.com");
	snprintf(name, sizeof(name), "petrel-verification=%s",
	    jstr(rec, "token"));
	ck_assert_str_eq(jstr(r, "value"), name);
	r = find_record(rec, "spf", 0);
	ck_assert_str_eq(jstr(r, "name"), "example.com");
	ck_assert_str_eq(jstr(r, "value"), "v=spf1 ip4:192.0.2.10 -all");
	r = find_record(rec, "dmarc", 0);
	ck_assert_str_eq(jstr(r, "name"), "_dmarc.example.com");
	ck_assert_str_eq(jstr(r, "value"), "v=DMARC1; p=none; adkim=r; aspf=r");

	keys = json_object_get(rec, "keys");
	ck_assert_uint_eq(json_array_size(keys), 2);
	sel = jstr(json_array_get(keys, 0), "selector");
	ck_assert_uint_eq(strlen(sel), 8);
	ck_assert_int_eq(sel[0], 'p');
	ck_assert_int_eq(sel[7], 'r');
	memcpy(id, sel + 1, 6);
	id[6] = '\0';
	sel = jstr(json_array_get(keys, 1), "selector");
	ck_assert_int_eq(sel[7], 'e');
	ck_assert(strncmp(sel + 1, id, 6) == 0);
	json_array_foreach(keys, i, k) {
		ck_assert_str_eq(jstr(k, "state"), "active");
		r = find_record(rec, "dkim", (int)i);
		ck_assert_ptr_nonnull(r);
		snprintf(name, sizeof(name), "%s._domainkey.example.com",
		    jstr(k, "selector"));
		ck_assert_str_eq(jstr(r, "name"), name);
		check_dkim_value(k, jstr(r, "value"));
	}

	/* the public view has no private key; the record keeps it */
	pv = domain_public_view(rec);
	json_array_foreach(json_object_get(pv, "keys"), i, k) {
		ck_assert_ptr_null(json_object_get(k, "private"));
		ck_assert_ptr_nonnull(json_object_get(k, "public"));
	}
	ck_assert_ptr_nonnull(json_object_get(json_array_get(keys, 0),
	    "private"));
	json_decref(pv);

	/* the printout holds every name and every value in full */
	fp = open_memstream(&buf, &len);
	domain_print_records(rec, fp);
	fclose(fp);
	json_array_foreach(json_object_get(rec, "records"), i, r) {
		ck_assert(strstr(buf, jstr(r, "name")) != NULL);
		ck_assert_msg(strstr(buf, jstr(r, "value")) != NULL,
		    "value of %s missing", jstr(r, "name"));
	}
	ck_assert(strstr(buf, "-----BEGIN") == NULL);
	free(buf);

	/* SPF follows the configuration */
	conf.smtp_bind_address = "2001:db8::25";
	domain_rebuild_records(&conf, rec);
	ck_assert_str_eq(jstr(find_record(rec, "spf", 0), "value"),
	    "v=spf1 ip6:2001:db8::25 -all");
	conf.smtp_bind_address = NULL;
	domain_rebuild_records(&conf, rec);
	ck_assert_str_eq(jstr(find_record(rec, "spf", 0), "value"),
	    "v=spf1 a:mx.petrel.test -all");
	conf.spf_include = "_spf.petrel.test";
	domain_rebuild_records(&conf, rec);
	ck_assert_str_eq(jstr(find_record(rec, "spf", 0), "value"),
	    "v=spf1 include:_spf.petrel.test -all");

	/* rotation: a new pending pair, statuses of unchanged records kept */
	json_object_set_new(find_record(rec, "ownership", 0), "status",
	    json_string("verified"));
	ck_assert_int_eq(domain_add_keys(rec, "pending", &err), 0);
	ck_assert_uint_eq(json_array_size(keys), 4);
	ck_assert_str_eq(jstr(json_array_get(keys, 2), "state"), "pending");
	ck_assert(strncmp(jstr(json_array_get(keys, 2), "selector") + 1, id, 6)
	    != 0);
	domain_rebuild_records(&conf, rec);
	ck_assert_uint_eq(json_array_size(json_object_get(rec, "records")), 7);
	ck_assert_str_eq(jstr(find_record(rec, "ownership", 0), "status"),
	    "verified");
	ck_assert_str_eq(jstr(find_record(rec, "dkim", 3), "status"),
	    "pending");
	check_dkim_value(json_array_get(keys, 3),
	    jstr(find_record(rec, "dkim", 3), "value"));
	/* retired keys are no longer published */
	json_object_set_new(json_array_get(keys, 0), "state",
	    json_string("retired"));
	domain_rebuild_records(&conf, rec);
	ck_assert_uint_eq(json_array_size(json_object_get(rec, "records")), 6);
	json_decref(rec);
}
END_TEST

START_TEST(test_domain_managed)
{
	json_t *rec, *r;
	char *err = NULL, name[DOMAIN_MAX_LEN + 1], norm[DOMAIN_MAX_LEN + 1];
	const char *e;
	size_t i;

	domain_managed_name(&conf, name, sizeof(name));
	ck_assert_uint_eq(strlen(name), 12 + 1 + strlen("mail.petrel.test"));
	ck_assert_str_eq(name + 13, "mail.petrel.test");
	for (i = 0; i < 12; i++)
		ck_assert(strchr("abcdefghijklmnopqrstuvwxyz234567", name[i]));
	ck_assert_int_eq(domain_normalize(name, norm, sizeof(norm), &e), 0);
	ck_assert_str_eq(norm, name);

	rec = domain_new(&conf, "acme", name, 1, &err);
	ck_assert_ptr_nonnull(rec);
	ck_assert_str_eq(jstr(rec, "kind"), "managed");
	ck_assert_str_eq(jstr(rec, "status"), "verified");
	ck_assert_uint_eq(json_array_size(json_object_get(rec, "records")), 5);
	json_array_foreach(json_object_get(rec, "records"), i, r)
		ck_assert_str_eq(jstr(r, "status"), "verified");
	json_decref(rec);
}
END_TEST

/* Domains in the store */

START_TEST(test_store_domains)
{
	json_t *d, *got, *list;

	d = mini_domain("example.com", "ghost", "pending");
	expect_err(store_domain_add(S, d, ERR),
	    "tenant \"ghost\" does not exist");
	json_decref(d);
	expect_ok(store_tenant_add(S, "acme", ERR));
	expect_ok(store_tenant_add(S, "beta", ERR));
	d = mini_domain("Example.com", "acme", "pending");
	expect_err(store_domain_add(S, d, ERR), "invalid domain "
	    "\"Example.com\": not normalised (use \"example.com\")");
	json_decref(d);
	d = mini_domain("bad_name.com", "acme", "pending");
	expect_err(store_domain_add(S, d, ERR), "invalid domain "
	    "\"bad_name.com\": invalid character in domain (letters, digits "
	    "and hyphens only)");
	json_decref(d);

	d = mini_domain("example.com", "acme", "pending");
	expect_ok(store_domain_add(S, d, ERR));
	expect_err(store_domain_add(S, d, ERR),
	    "domain \"example.com\" already exists");
	json_decref(d);
	d = mini_domain("example.com", "beta", "pending");
	expect_err(store_domain_add(S, d, ERR),
	    "domain \"example.com\" already exists");
	json_decref(d);
	d = mini_domain("beta.example", "beta", "pending");
	expect_ok(store_domain_add(S, d, ERR));
	json_decref(d);

	got = store_domain_get(S, "EXAMPLE.Com.");
	ck_assert_ptr_nonnull(got);
	ck_assert_str_eq(jstr(got, "tenant"), "acme");
	ck_assert_str_eq(jstr(got, "status"), "pending");
	json_object_set_new(got, "status", json_string("verified"));
	expect_ok(store_domain_put(S, got, ERR));
	json_decref(got);
	got = store_domain_get(S, "example.com");
	ck_assert_str_eq(jstr(got, "status"), "verified");
	json_decref(got);
	ck_assert_ptr_null(store_domain_get(S, "nope.example"));
	ck_assert_ptr_null(store_domain_get(S, "not a domain"));

	d = mini_domain("other.example", "acme", "pending");
	expect_err(store_domain_put(S, d, ERR),
	    "domain \"other.example\" does not exist");
	json_decref(d);

	list = store_domain_list(S, "acme");
	ck_assert_uint_eq(json_array_size(list), 1);
	json_decref(list);
	list = store_domain_list(S, NULL);
	ck_assert_uint_eq(json_array_size(list), 2);
	json_decref(list);
	list = store_domain_list(S, "ghost");
	ck_assert_uint_eq(json_array_size(list), 0);
	json_decref(list);

	expect_ok(store_domain_del(S, "Beta.Example", ERR));
	expect_err(store_domain_del(S, "beta.example", ERR),
	    "domain \"beta.example\" does not exist");
	ck_assert_ptr_null(store_domain_get(S, "beta.example"));
}
END_TEST

START_TEST(test_store_domain_full_record)
{
	json_t *rec, *got;
	char *err = NULL, *a, *b;

	expect_ok(store_tenant_add(S, "acme", ERR));
	rec = domain_new(&conf, "acme", "xn--bcher-kva.example", 0, &err);
	ck_assert_ptr_nonnull(rec);
	expect_ok(store_domain_add(S, rec, ERR));
	got = store_domain_get(S, "bücher.example");
	ck_assert_ptr_nonnull(got);
	a = json_dumps(rec, JSON_SORT_KEYS);
	b = json_dumps(got, JSON_SORT_KEYS);
	ck_assert_str_eq(a, b);
	free(a);
	free(b);
	json_decref(got);
	json_decref(rec);
}
END_TEST

/* Senders */

START_TEST(test_senders)
{
	json_t *d, *got;
	const char *why = NULL;
	char lp65[66];

	expect_ok(store_tenant_add(S, "acme", ERR));
	expect_ok(store_tenant_add(S, "beta", ERR));
	d = mini_domain("example.com", "acme", "verified");
	expect_ok(store_domain_add(S, d, ERR));
	json_decref(d);
	d = mini_domain("pending.example", "acme", "pending");
	expect_ok(store_domain_add(S, d, ERR));
	json_decref(d);

	/* no senders listed: any local part */
	ck_assert_int_eq(store_sender_check(S, "acme", "anyone", "example.com",
	    &why), 0);
	ck_assert_int_eq(store_sender_check(S, "acme", "x", "nope.example",
	    &why), -1);
	ck_assert_str_eq(why, "unknown domain");
	ck_assert_int_eq(store_sender_check(S, "beta", "x", "example.com",
	    &why), -1);
	ck_assert_str_eq(why, "domain belongs to another tenant");
	ck_assert_int_eq(store_sender_check(S, "acme", "x", "pending.example",
	    &why), -1);
	ck_assert_str_eq(why, "domain not verified");
	/* another tenant learns nothing about the status */
	ck_assert_int_eq(store_sender_check(S, "beta", "x", "pending.example",
	    &why), -1);
	ck_assert_str_eq(why, "domain belongs to another tenant");

	expect_ok(store_sender_add(S, "Example.COM", "Info", ERR));
	expect_ok(store_sender_add(S, "example.com", "no-reply+x", ERR));
	expect_err(store_sender_add(S, "example.com", "INFO", ERR),
	    "sender \"info@example.com\" already exists");
	expect_err(store_sender_add(S, "nope.example", "info", ERR),
	    "domain \"nope.example\" does not exist");
	expect_err(store_sender_add(S, "example.com", ".info", ERR),
	    "invalid local part \".info\": local part must not start or end "
	    "with a dot or contain two dots in a row");
	expect_err(store_sender_add(S, "example.com", "a..b", ERR),
	    "invalid local part \"a..b\": local part must not start or end "
	    "with a dot or contain two dots in a row");
	expect_err(store_sender_add(S, "example.com", "a b", ERR),
	    "invalid local part \"a b\": invalid character in local part");
	expect_err(store_sender_add(S, "example.com", "a@b", ERR),
	    "invalid local part \"a@b\": invalid character in local part");
	expect_err(store_sender_add(S, "example.com", "", ERR),
	    "invalid local part \"\": empty local part");
	memset(lp65, 'a', 65);
	lp65[65] = '\0';
	ck_assert_int_eq(store_sender_add(S, "example.com", lp65, NULL), -1);

	got = store_domain_get(S, "example.com");
	ck_assert_uint_eq(json_array_size(json_object_get(got, "senders")), 2);
	ck_assert_str_eq(json_string_value(json_array_get(
	    json_object_get(got, "senders"), 0)), "info");
	json_decref(got);

	ck_assert_int_eq(store_sender_check(S, "acme", "INFO", "EXAMPLE.com",
	    &why), 0);
	ck_assert_int_eq(store_sender_check(S, "acme", "No-Reply+X",
	    "example.com", &why), 0);
	ck_assert_int_eq(store_sender_check(S, "acme", "sales", "example.com",
	    &why), -1);
	ck_assert_str_eq(why, "local part not allowed");

	expect_ok(store_sender_del(S, "example.com", "INFO", ERR));
	expect_err(store_sender_del(S, "example.com", "info", ERR),
	    "sender \"info@example.com\" does not exist");
	ck_assert_int_eq(store_sender_check(S, "acme", "info", "example.com",
	    &why), -1);
	expect_ok(store_sender_del(S, "example.com", "no-reply+x", ERR));
	/* the list is empty again: any local part */
	ck_assert_int_eq(store_sender_check(S, "acme", "info", "example.com",
	    &why), 0);
}
END_TEST

/* Networks */

START_TEST(test_networks)
{
	json_t *list;

	expect_err(store_network_add(S, "ghost", "10.0.0.0/8", ERR),
	    "tenant \"ghost\" does not exist");
	expect_ok(store_tenant_add(S, "acme", ERR));
	expect_ok(store_tenant_add(S, "beta", ERR));
	expect_ok(store_network_add(S, "acme", "10.0.0.0/8", ERR));
	expect_ok(store_network_add(S, "beta", "10.1.0.0/16", ERR));
	expect_ok(store_network_add(S, "acme", "10.1.2.3", ERR));
	expect_ok(store_network_add(S, "acme", "2001:DB8::/32", ERR));
	expect_ok(store_network_add(S, "beta", "2001:db8:1::/48", ERR));
	expect_err(store_network_add(S, "beta", "10.0.0.0/8", ERR),
	    "network 10.0.0.0/8 already exists (tenant \"acme\")");
	expect_err(store_network_add(S, "beta", "2001:db8:0::/32", ERR),
	    "network 2001:db8::/32 already exists (tenant \"acme\")");
	expect_err(store_network_add(S, "acme", "10.0.0.1/8", ERR),
	    "invalid network \"10.0.0.1/8\": host bits set; did you mean "
	    "10.0.0.0/8?");
	expect_err(store_network_add(S, "acme", "10.0.0.0/40", ERR),
	    "invalid network \"10.0.0.0/40\": prefix length out of range "
	    "(0-32)");
	expect_err(store_network_add(S, "acme", "example.com", ERR),
	    "invalid network \"example.com\": not an IPv4 or IPv6 address");

	/* longest prefix wins */
	lookup_is("10.2.0.1", "acme");
	lookup_is("10.1.9.9", "beta");
	lookup_is("10.1.2.3", "acme");
	lookup_is("::ffff:10.1.9.9", "beta");
	lookup_is("11.0.0.1", NULL);
	lookup_is("2001:db8::5", "acme");
	lookup_is("2001:db8:1::5", "beta");
	lookup_is("2001:db9::1", NULL);
	lookup_is("::1", NULL);

	list = store_network_list(S);
	ck_assert_uint_eq(json_array_size(list), 5);
	json_decref(list);

	expect_ok(store_network_del(S, "10.1.0.0/16", ERR));
	lookup_is("10.1.9.9", "acme");
	expect_err(store_network_del(S, "10.1.0.0/16", ERR),
	    "network 10.1.0.0/16 does not exist");
	expect_ok(store_network_del(S, "2001:0DB8:1:0::/48", ERR));
	lookup_is("2001:db8:1::5", "acme");
	expect_err(store_network_del(S, "10.1.0.1/16", ERR),
	    "invalid network \"10.1.0.1/16\": host bits set; did you mean "
	    "10.1.0.0/16?");
}
END_TEST

/* Two processes on one environment */

static int
read_byte(int fd)
{
	char c;

	return read(fd, &c, 1) == 1 ? c : -1;
}

START_TEST(test_two_processes)
{
	int p2c[2], c2p[2], status;
	pid_t pid;
	char *err = NULL;

	ck_assert_int_eq(pipe(p2c), 0);
	ck_assert_int_eq(pipe(c2p), 0);
	pid = fork();
	ck_assert_int_ne(pid, -1);
	if (pid == 0) {
		struct store *cs;
		int ok;

		if (store_open(datadir, MAP_SIZE, &cs, NULL) == -1)
			_exit(10);
		ok = !store_tenant_exists(cs, "late");
		if (write(c2p[1], "o", 1) != 1 || read_byte(p2c[0]) != 'g')
			_exit(11);
		/* committed by the parent after this env was opened */
		ok = ok && store_tenant_exists(cs, "late");
		ok = ok && store_tenant_add(cs, "from-child", NULL) == 0;
		store_close(cs);
		_exit(ok ? 0 : 12);
	}
	close(p2c[0]);
	close(c2p[1]);
	ck_assert_int_eq(read_byte(c2p[0]), 'o');
	/* opening while the child holds the environment open */
	ck_assert_msg(store_open(datadir, MAP_SIZE, &S, &err) == 0, "%s",
	    err ? err : "");
	expect_ok(store_tenant_add(S, "late", ERR));
	ck_assert_int_eq(write(p2c[1], "g", 1), 1);
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status));
	ck_assert_int_eq(WEXITSTATUS(status), 0);
	ck_assert(store_tenant_exists(S, "from-child"));
	close(p2c[1]);
	close(c2p[0]);
}
END_TEST

static Suite *
store_suite(void)
{
	Suite *s = suite_create("store");
	TCase *tc;

	tc = tcase_create("store");
	tcase_add_checked_fixture(tc, setup_store, teardown_dir);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_open_creates_dir);
	tcase_add_test(tc, test_open_bad_dir);
	tcase_add_test(tc, test_store_full);
	tcase_add_test(tc, test_tenants);
	tcase_add_test(tc, test_tenant_del_cascades);
	tcase_add_test(tc, test_del_prefix);
	tcase_add_test(tc, test_users);
	tcase_add_test(tc, test_store_domains);
	tcase_add_test(tc, test_store_domain_full_record);
	tcase_add_test(tc, test_senders);
	tcase_add_test(tc, test_networks);
	suite_add_tcase(s, tc);

	tc = tcase_create("domain");
	tcase_add_checked_fixture(tc, setup_dir, teardown_dir);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_domain_normalize);
	tcase_add_test(tc, test_domain_new);
	tcase_add_test(tc, test_domain_managed);
	suite_add_tcase(s, tc);

	tc = tcase_create("processes");
	tcase_add_checked_fixture(tc, setup_dir, teardown_dir);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_two_processes);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(store_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
