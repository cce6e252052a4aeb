/*
 * domain.c - sender domains as records: name normalisation (libidn2 turns
 * U-labels into A-labels, everything is stored lower-case), a new domain's
 * ownership token and DKIM key pairs (RSA-2048 + Ed25519, OpenSSL), and the
 * DNS records the tenant must publish, derived from the keys and petrel.conf.
 * store.c keeps these records as JSON; nothing here touches LMDB.
 */
#include "autoconf.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <limits.h>

#include <idn2.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "config.h"
#include "domain.h"
#include "limits.h"
#include "util.h"

#define DOMAIN_INPUT_MAX	1024	/* bytes of raw (U-label) input */
#define DOMAIN_LABEL_MAX	63
#define DOMAIN_TOKEN_LEN	32
#define DOMAIN_SELID_LEN	6
#define DOMAIN_MANAGED_ID_LEN	12
#define DOMAIN_RSA_BITS		2048

/* domain_check_ldh - validate an ASCII, lower-case name in place */
static int
domain_check_ldh(const char *d, const char **err_r)
{
	const char *label = d, *p;
	size_t len = strlen(d), n;
	int labels = 0, numeric_tld = 1;

	if (len == 0) {
		*err_r = "empty domain";
		return -1;
	}
	if (len > DOMAIN_MAX_LEN) {
		*err_r = "domain too long (max 253 characters)";
		return -1;
	}
	for (;;) {
		for (p = label; *p && *p != '.'; p++)
			if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
			    *p == '-')) {
				*err_r = "invalid character in domain (letters, "
				    "digits and hyphens only)";
				return -1;
			}
		n = (size_t)(p - label);
		if (n == 0) {
			*err_r = "empty label in domain";
			return -1;
		}
		if (n > DOMAIN_LABEL_MAX) {
			*err_r = "label too long (max 63 characters)";
			return -1;
		}
		if (label[0] == '-' || label[n - 1] == '-') {
			*err_r = "label must not start or end with a hyphen";
			return -1;
		}
		labels++;
		numeric_tld = strspn(label, "0123456789") == n;
		if (*p == '\0')
			break;
		label = p + 1;
	}
	if (labels < 2) {
		*err_r = "domain needs at least two labels (e.g. example.com)";
		return -1;
	}
	if (numeric_tld) {
		*err_r = "top-level label must not be numeric";
		return -1;
	}
	return 0;
}

int
domain_normalize(const char *in, char *out, size_t outlen,
    const char **err_r)
{
	char buf[DOMAIN_INPUT_MAX + 1], *idn = NULL;
	const char *p;
	size_t len;
	int ascii = 1, rc;

	len = strnlen(in, DOMAIN_INPUT_MAX + 1);
	if (len > DOMAIN_INPUT_MAX) {
		*err_r = "domain too long (max 253 characters)";
		return -1;
	}
	memcpy(buf, in, len + 1);
	/* one trailing dot (absolute form) is accepted and dropped */
	if (len > 1 && buf[len - 1] == '.')
		buf[--len] = '\0';
	for (p = buf; *p; p++) {
		if ((unsigned char)*p >= 0x80)
			ascii = 0;
		else if ((unsigned char)*p <= 0x20 || *p == 0x7f) {
			*err_r = "invalid character in domain (letters, "
			    "digits and hyphens only)";
			return -1;
		}
	}
	if (!ascii) {
		rc = idn2_to_ascii_8z(buf, &idn,
		    IDN2_NONTRANSITIONAL | IDN2_NFC_INPUT);
		if (rc != IDN2_OK) {
			*err_r = "invalid internationalized domain name";
			return -1;
		}
		if (util_strlcpy(buf, idn, sizeof(buf)) >= sizeof(buf)) {
			idn2_free(idn);
			*err_r = "domain too long (max 253 characters)";
			return -1;
		}
		idn2_free(idn);
	}
	util_lower(buf);
	if (domain_check_ldh(buf, err_r) == -1)
		return -1;
	if (util_strlcpy(out, buf, outlen) >= outlen) {
		*err_r = "domain too long";
		return -1;
	}
	return 0;
}

void
domain_managed_name(const struct petrel_conf *conf, char *buf, size_t len)
{
	char id[DOMAIN_MANAGED_ID_LEN + 1];
	const char *zone = conf && conf->managed_zone ? conf->managed_zone :
	    "petrel.invalid";

	util_random_id(id, DOMAIN_MANAGED_ID_LEN);
	snprintf(buf, len, "%s.%s", id, zone);
}

/* domain_ossl_err - malloc'd message with OpenSSL's last error */
static char *
domain_ossl_err(const char *what)
{
	char e[256];

	ERR_error_string_n(ERR_get_error(), e, sizeof(e));
	ERR_clear_error();
	return xasprintf("%s: %s", what, e);
}

/* domain_pem - PKCS#8 PEM of the private key, malloc'd, NULL on failure */
static char *
domain_pem(EVP_PKEY *pk)
{
	BIO *bio = BIO_new(BIO_s_mem());
	char *data, *pem = NULL;
	long n;

	if (bio == NULL)
		return NULL;
	if (PEM_write_bio_PrivateKey(bio, pk, NULL, NULL, 0, NULL, NULL) == 1 &&
	    (n = BIO_get_mem_data(bio, &data)) > 0)
		pem = xstrndup(data, (size_t)n);
	BIO_free(bio);
	return pem;
}

/* domain_key_json - {"selector","alg","private","public","created","state"} */
static json_t *
domain_key_json(EVP_PKEY *pk, int rsa, const char *selector,
    const char *state, char **err_r)
{
	unsigned char *der = NULL, raw[64];
	size_t rawlen = sizeof(raw);
	char *pub, *pem;
	json_t *k;
	int n;

	if (rsa) {
		if ((n = i2d_PUBKEY(pk, &der)) <= 0) {
			*err_r = domain_ossl_err("cannot encode RSA public key");
			return NULL;
		}
		pub = util_b64_encode(der, (size_t)n);
		OPENSSL_free(der);
	} else {
		if (EVP_PKEY_get_raw_public_key(pk, raw, &rawlen) != 1 ||
		    rawlen != 32) {
			*err_r = domain_ossl_err("cannot encode Ed25519 public key");
			return NULL;
		}
		pub = util_b64_encode(raw, rawlen);
	}
	if ((pem = domain_pem(pk)) == NULL) {
		free(pub);
		*err_r = domain_ossl_err("cannot encode private key");
		return NULL;
	}
	k = json_pack("{s:s, s:s, s:s, s:s, s:I, s:s}",
	    "selector", selector,
	    "alg", rsa ? "rsa-sha256" : "ed25519-sha256",
	    "private", pem,
	    "public", pub,
	    "created", (json_int_t)util_now(),
	    "state", state);
	OPENSSL_cleanse(pem, strlen(pem));
	free(pem);
	free(pub);
	if (k == NULL)
		*err_r = xstrdup("out of memory building key record");
	return k;
}

int
domain_add_keys(json_t *rec, const char *state, char **err_r)
{
	char id[DOMAIN_SELID_LEN + 1], sel[DOMAIN_SELID_LEN + 3];
	EVP_PKEY *rsa = NULL, *ed = NULL;
	json_t *keys, *kr = NULL, *ke = NULL, *k;
	size_t i;
	int clash;

	if ((keys = json_object_get(rec, "keys")) == NULL ||
	    !json_is_array(keys)) {
		keys = json_array();
		json_object_set_new(rec, "keys", keys);
	}
	/* a fresh selector id, not used by any key of this domain */
	do {
		util_random_id(id, DOMAIN_SELID_LEN);
		clash = 0;
		json_array_foreach(keys, i, k) {
			const char *s = json_string_value(
			    json_object_get(k, "selector"));
			if (s && strlen(s) == DOMAIN_SELID_LEN + 2 &&
			    strncmp(s + 1, id, DOMAIN_SELID_LEN) == 0)
				clash = 1;
		}
	} while (clash);

	if ((rsa = EVP_RSA_gen(DOMAIN_RSA_BITS)) == NULL) {
		*err_r = domain_ossl_err("RSA key generation failed");
		goto fail;
	}
	if ((ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519")) == NULL) {
		*err_r = domain_ossl_err("Ed25519 key generation failed");
		goto fail;
	}
	snprintf(sel, sizeof(sel), "p%sr", id);
	if ((kr = domain_key_json(rsa, 1, sel, state, err_r)) == NULL)
		goto fail;
	snprintf(sel, sizeof(sel), "p%se", id);
	if ((ke = domain_key_json(ed, 0, sel, state, err_r)) == NULL)
		goto fail;
	json_array_append_new(keys, kr);
	json_array_append_new(keys, ke);
	EVP_PKEY_free(rsa);
	EVP_PKEY_free(ed);
	return 0;
fail:
	json_decref(kr);
	json_decref(ke);
	EVP_PKEY_free(rsa);
	EVP_PKEY_free(ed);
	return -1;
}

/* domain_spf_value - the SPF TXT value for this installation, malloc'd */
static char *
domain_spf_value(const struct petrel_conf *conf)
{
	unsigned char a[16];
	char host[256];

	if (conf && conf->spf_include && *conf->spf_include)
		return xasprintf("v=spf1 include:%s -all", conf->spf_include);
	if (conf && conf->smtp_bind_address && *conf->smtp_bind_address) {
		if (inet_pton(AF_INET, conf->smtp_bind_address, a) == 1)
			return xasprintf("v=spf1 ip4:%s -all",
			    conf->smtp_bind_address);
		if (inet_pton(AF_INET6, conf->smtp_bind_address, a) == 1)
			return xasprintf("v=spf1 ip6:%s -all",
			    conf->smtp_bind_address);
	}
	if (conf && conf->hostname && *conf->hostname)
		return xasprintf("v=spf1 a:%s -all", conf->hostname);
	if (gethostname(host, sizeof(host)) == -1)
		util_strlcpy(host, "localhost", sizeof(host));
	host[sizeof(host) - 1] = '\0';
	return xasprintf("v=spf1 a:%s -all", host);
}

/* domain_old_status - status of the old record with the same name+value */
static const char *
domain_old_status(const json_t *old, const char *name, const char *value)
{
	const json_t *r;
	size_t i;

	json_array_foreach(old, i, r) {
		const char *n = json_string_value(json_object_get(r, "name"));
		const char *v = json_string_value(json_object_get(r, "value"));
		const char *st = json_string_value(json_object_get(r, "status"));

		if (n && v && st && strcmp(n, name) == 0 &&
		    strcmp(v, value) == 0)
			return st;
	}
	return NULL;
}

/* domain_key_gone - a retired key whose grace (queue_lifetime since it
 * retired) is over: no message in the queue can carry its signature */
static int
domain_key_gone(const struct petrel_conf *conf, const json_t *k)
{
	const char *state = json_string_value(json_object_get(k, "state"));

	return state != NULL && strcmp(state, "retired") == 0 &&
	    json_integer_value(json_object_get(k, "retired")) +
	    (conf != NULL ? conf->queue_lifetime : 0) <= util_now();
}

int
domain_retired_expired(const struct petrel_conf *conf, const json_t *rec)
{
	const json_t *k, *r;
	const char *sel, *name;
	size_t i, j, n;

	json_array_foreach(json_object_get(rec, "keys"), i, k) {
		if (!domain_key_gone(conf, k) || (sel = json_string_value(
		    json_object_get(k, "selector"))) == NULL)
			continue;
		n = strlen(sel);
		json_array_foreach(json_object_get(rec, "records"), j, r) {
			name = json_string_value(json_object_get(r, "name"));
			if (name != NULL && strncmp(name, sel, n) == 0 &&
			    strncmp(name + n, "._domainkey.", 12) == 0)
				return 1;
		}
	}
	return 0;
}

/* domain_add_record - append one TXT record to recs */
static void
domain_add_record(json_t *recs, const json_t *old, int managed,
    const char *purpose, const char *name, const char *value)
{
	const char *st = managed ? "verified" : "pending", *prev;

	if (old && (prev = domain_old_status(old, name, value)) != NULL)
		st = prev;
	json_array_append_new(recs, json_pack("{s:s, s:s, s:s, s:s, s:s}",
	    "type", "TXT", "name", name, "value", value, "purpose", purpose,
	    "status", st));
}

void
domain_rebuild_records(const struct petrel_conf *conf, json_t *rec)
{
	const char *d = json_string_value(json_object_get(rec, "domain"));
	const char *token = json_string_value(json_object_get(rec, "token"));
	const char *kind = json_string_value(json_object_get(rec, "kind"));
	json_t *old = json_object_get(rec, "records"), *recs, *keys, *k;
	int managed = kind && strcmp(kind, "managed") == 0;
	char *name, *value;
	size_t i;

	if (d == NULL)
		return;
	if (old)
		json_incref(old);
	recs = json_array();

	name = xasprintf("_petrel.%s", d);
	value = xasprintf("petrel-verification=%s", token ? token : "");
	domain_add_record(recs, old, managed, "ownership", name, value);
	free(name);
	free(value);

	value = domain_spf_value(conf);
	domain_add_record(recs, old, managed, "spf", d, value);
	free(value);

	/* a retired key stays published for queue_lifetime: messages signed
	 * with it may still be queued */
	keys = json_object_get(rec, "keys");
	json_array_foreach(keys, i, k) {
		const char *sel = json_string_value(json_object_get(k, "selector"));
		const char *alg = json_string_value(json_object_get(k, "alg"));
		const char *pub = json_string_value(json_object_get(k, "public"));

		if (sel == NULL || alg == NULL || pub == NULL ||
		    domain_key_gone(conf, k))
			continue;
		name = xasprintf("%s._domainkey.%s", sel, d);
		value = xasprintf("v=DKIM1; k=%s; p=%s",
		    strncmp(alg, "ed25519", 7) == 0 ? "ed25519" : "rsa", pub);
		domain_add_record(recs, old, managed, "dkim", name, value);
		free(name);
		free(value);
	}

	name = xasprintf("_dmarc.%s", d);
	domain_add_record(recs, old, managed, "dmarc", name,
	    "v=DMARC1; p=none; adkim=r; aspf=r");
	free(name);

	json_object_set_new(rec, "records", recs);
	json_decref(old);
}

json_t *
domain_new(const struct petrel_conf *conf, const char *tenant,
    const char *name, int managed, char **err_r)
{
	char token[DOMAIN_TOKEN_LEN + 1];
	json_t *rec;

	util_random_id(token, DOMAIN_TOKEN_LEN);
	rec = json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:[], s:[], "
	    "s:b}",
	    "domain", name,
	    "tenant", tenant,
	    "kind", managed ? "managed" : "custom",
	    "status", managed ? "verified" : "pending",
	    "token", token,
	    "created", (json_int_t)util_now(),
	    "checked_at", (json_int_t)0,
	    "keys", "senders",
	    "unsubscribe", 0);
	if (rec == NULL) {
		*err_r = xstrdup("cannot build domain record");
		return NULL;
	}
	if (domain_add_keys(rec, "active", err_r) == -1) {
		json_decref(rec);
		return NULL;
	}
	domain_rebuild_records(conf, rec);
	return rec;
}

json_t *
domain_public_view(const json_t *rec)
{
	json_t *v = json_deep_copy(rec), *k;
	size_t i;

	if (v == NULL)
		return NULL;
	json_array_foreach(json_object_get(v, "keys"), i, k)
		json_object_del(k, "private");
	return v;
}

/* domain_print_zone_value - value as zone-file strings of <= 255 bytes */
static void
domain_print_zone_value(const char *v, FILE *fp)
{
	size_t len = strlen(v), off = 0, n;

	do {
		n = len - off > 255 ? 255 : len - off;
		fprintf(fp, "%s\"%.*s\"", off ? " " : "", (int)n, v + off);
		off += n;
	} while (off < len);
}

void
domain_print_records(const json_t *rec, FILE *fp)
{
	const char *d = json_string_value(json_object_get(rec, "domain"));
	const char *st = json_string_value(json_object_get(rec, "status"));
	const json_t *r;
	size_t i;

	fprintf(fp, "DNS records for %s (domain status: %s)\n",
	    d ? d : "?", st ? st : "?");
	json_array_foreach(json_object_get(rec, "records"), i, r) {
		const char *purpose = json_string_value(
		    json_object_get(r, "purpose"));
		const char *type = json_string_value(json_object_get(r, "type"));
		const char *name = json_string_value(json_object_get(r, "name"));
		const char *value = json_string_value(json_object_get(r, "value"));
		const char *rst = json_string_value(json_object_get(r, "status"));

		if (name == NULL || value == NULL)
			continue;
		fprintf(fp, "\n%-10s %s  (%s)\n", purpose ? purpose : "?",
		    type ? type : "TXT", rst ? rst : "pending");
		fprintf(fp, "  name:  %s\n", name);
		fprintf(fp, "  value: %s\n", value);
		fprintf(fp, "  zone:  %s. 3600 IN %s ", name, type ? type : "TXT");
		domain_print_zone_value(value, fp);
		fputc('\n', fp);
	}
}
