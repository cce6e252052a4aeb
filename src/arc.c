/*
 * arc.c - ARC sealing (RFC 8617), written on OpenSSL and the message
 * primitives of dkim.c. A seal validates the incoming chain (RFC 8617
 * 5.2: structure, the cv= of every seal, the newest AMS, every AS), then
 * adds instance N+1: the AAR carries this hop's authentication results,
 * the AMS is a DKIM-style signature (no v=, i= instead) over the same
 * headers as our DKIM signature plus the DKIM-Signature fields, and the
 * AS signs every ARC set in instance order (AAR, AMS, AS) with relaxed
 * header canonicalisation, its own b= empty.
 */
#include "autoconf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/pem.h>

#include "arc.h"
#include "dkim.h"
#include "dns.h"
#include "util.h"

enum { SET_AAR = 0, SET_AMS, SET_AS, SET_N };

static const char *const arc_names[SET_N] = {
	"ARC-Authentication-Results", "ARC-Message-Signature", "ARC-Seal",
};

/* one instance's headers (index into the parsed message, or -1) */
struct arc_set {
	long	h[SET_N];
};

int
arc_key_load(const char *domain, const char *selector, const char *key_file,
    struct arc_key **k_r, char **err_r)
{
	FILE *fp;
	EVP_PKEY *pk;
	struct arc_key *k;

	if (domain == NULL || selector == NULL || key_file == NULL) {
		*err_r = xstrdup("arc_domain, arc_selector and arc_key_file "
		    "must all be set");
		return -1;
	}
	if ((fp = fopen(key_file, "r")) == NULL) {
		*err_r = xasprintf("cannot open %s", key_file);
		return -1;
	}
	pk = PEM_read_PrivateKey(fp, NULL, NULL, NULL);
	fclose(fp);
	if (pk == NULL || EVP_PKEY_get_base_id(pk) != EVP_PKEY_RSA) {
		EVP_PKEY_free(pk);
		*err_r = xasprintf("%s: not an RSA private key", key_file);
		return -1;
	}
	k = xcalloc(1, sizeof(*k));
	k->domain = xstrdup(domain);
	util_lower(k->domain);
	k->selector = xstrdup(selector);
	k->pkey = pk;
	*k_r = k;
	return 0;
}

void
arc_key_free(struct arc_key *k)
{
	if (k == NULL)
		return;
	free(k->domain);
	free(k->selector);
	EVP_PKEY_free(k->pkey);
	free(k);
}

/* hdr_value - the bytes after "Name:" */
static const char *
hdr_value(const struct dkim_hdr *h, size_t *len_r)
{
	const char *c = memchr(h->raw, ':', h->rawlen);

	*len_r = h->rawlen - (size_t)(c + 1 - h->raw);
	return c + 1;
}

static char *
hdr_tag(const struct dkim_hdr *h, const char *tag)
{
	size_t len;
	const char *v = hdr_value(h, &len);

	return dkim_tag(v, len, tag);
}

/* arc_collect - ARC headers by instance; -1 (why) when malformed.
 * sets has ARC_INSTANCE_MAX + 1 slots; *n_r the highest instance. */
static int
arc_collect(const struct dkim_msg *m, struct arc_set *sets, int *n_r,
    const char **why_r)
{
	size_t i;
	int t, n = 0, k;

	for (k = 0; k <= ARC_INSTANCE_MAX; k++)
		for (t = 0; t < SET_N; t++)
			sets[k].h[t] = -1;
	*n_r = 0;
	for (i = 0; i < m->nhdrs; i++) {
		char *iv, *end;
		long inst;

		for (t = 0; t < SET_N; t++)
			if (m->hdrs[i].namelen == strlen(arc_names[t]) &&
			    strncasecmp(m->hdrs[i].name, arc_names[t],
			    m->hdrs[i].namelen) == 0)
				break;
		if (t == SET_N)
			continue;
		if ((iv = hdr_tag(&m->hdrs[i], "i")) == NULL) {
			*why_r = "ARC header without i=";
			return -1;
		}
		inst = strtol(iv, &end, 10);
		if (*iv == '\0' || *end != '\0' || inst < 1 ||
		    inst > ARC_INSTANCE_MAX) {
			free(iv);
			*why_r = "ARC header with a bad i=";
			return -1;
		}
		free(iv);
		if (inst > n)
			*n_r = (int)inst;
		if (sets[inst].h[t] != -1) {
			*why_r = "duplicate ARC header for one instance";
			return -1;
		}
		sets[inst].h[t] = (long)i;
		if (inst > n)
			n = (int)inst;
	}
	*n_r = n;
	for (k = 1; k <= n; k++)
		for (t = 0; t < SET_N; t++)
			if (sets[k].h[t] == -1) {
				*why_r = "incomplete ARC set";
				return -1;
			}
	return 0;
}

/* arc_key_fetch - the public key for d/s through the lookup */
static EVP_PKEY *
arc_key_fetch(arc_txt_fn txt, void *arg, const char *d, const char *s,
    int *alg_r, const char **why_r)
{
	char *name, *rec = NULL;
	EVP_PKEY *pk;
	int r;

	if (!dns_name_valid(d) || !dns_name_valid(s)) {
		*why_r = "bad d= or s=";
		return NULL;
	}
	name = xasprintf("%s._domainkey.%s", s, d);
	r = txt(arg, name, &rec);
	free(name);
	if (r != 0) {
		*why_r = r > 0 ? "no key record" : "key lookup failed";
		return NULL;
	}
	pk = dkim_key_public(rec, alg_r, why_r);
	free(rec);
	return pk;
}

/* arc_verify_data - check b= of header h over data, with the key of its
 * d=/s=; 0 ok */
static int
arc_verify_data(const struct dkim_hdr *h, const struct dkim_buf *data,
    arc_txt_fn txt, void *arg, const char **why_r)
{
	char *a = hdr_tag(h, "a"), *d = hdr_tag(h, "d"), *s = hdr_tag(h, "s");
	char *b = hdr_tag(h, "b");
	unsigned char dg[32], *sig = NULL;
	unsigned int dglen = sizeof(dg);
	EVP_PKEY *pk = NULL;
	long slen;
	int alg = -1, kalg = -1, r = -1;

	if (a == NULL || d == NULL || s == NULL || b == NULL) {
		*why_r = "signature without a=, d=, s= or b=";
		goto out;
	}
	if (strcmp(a, "rsa-sha256") == 0)
		alg = DKIM_ALG_RSA_SHA256;
	else if (strcmp(a, "ed25519-sha256") == 0)
		alg = DKIM_ALG_ED25519_SHA256;
	else {
		*why_r = "unsupported a=";
		goto out;
	}
	util_lower(d);
	if ((pk = arc_key_fetch(txt, arg, d, s, &kalg, why_r)) == NULL)
		goto out;
	if (kalg != alg) {
		*why_r = "key type does not match a=";
		goto out;
	}
	sig = xmalloc(strlen(b) * 3 / 4 + 3);
	if ((slen = util_b64_decode(b, strlen(b), sig)) <= 0) {
		*why_r = "bad base64 in b=";
		goto out;
	}
	if (EVP_Digest(data->p, data->len, dg, &dglen, EVP_sha256(), NULL) != 1)
		fatalx("arc: SHA-256 failed");
	if (dkim_verify_digest(pk, alg, dg, sig, (size_t)slen) != 0) {
		*why_r = "signature does not verify";
		goto out;
	}
	r = 0;
out:
	EVP_PKEY_free(pk);
	free(sig);
	free(a);
	free(d);
	free(s);
	free(b);
	return r;
}

/* arc_verify_ams - the AMS at index hi over m */
static int
arc_verify_ams(const struct dkim_msg *m, size_t hi, arc_txt_fn txt,
    void *arg, const char **why_r)
{
	const struct dkim_hdr *h = &m->hdrs[hi];
	char *c = hdr_tag(h, "c"), *hl = hdr_tag(h, "h"), *bh = hdr_tag(h, "bh");
	char *stripped = NULL, *slash;
	int hc = DKIM_C_SIMPLE, bc = DKIM_C_SIMPLE, r = -1;
	unsigned char body[32], want[40];
	size_t slen;
	struct dkim_buf data = { 0 };

	if (hl == NULL || bh == NULL) {
		*why_r = "AMS without h= or bh=";
		goto out;
	}
	if (c != NULL) {
		if ((slash = strchr(c, '/')) != NULL)
			*slash++ = '\0';
		if (strcmp(c, "relaxed") == 0)
			hc = DKIM_C_RELAXED;
		else if (strcmp(c, "simple") != 0) {
			*why_r = "bad c=";
			goto out;
		}
		if (slash != NULL && strcmp(slash, "relaxed") == 0)
			bc = DKIM_C_RELAXED;
		else if (slash != NULL && strcmp(slash, "simple") != 0) {
			*why_r = "bad c=";
			goto out;
		}
	}
	if (strcasestr(hl, "arc-seal") != NULL) {
		*why_r = "AMS signs ARC-Seal";
		goto out;
	}
	dkim_body_hash(bc, m->body, m->bodylen, body);
	if (strlen(bh) > 44 || util_b64_decode(bh, strlen(bh), want) != 32 ||
	    memcmp(want, body, 32) != 0) {
		*why_r = "AMS body hash mismatch";
		goto out;
	}
	dkim_canon_hlist(hc, m, hl, &data);
	stripped = dkim_strip_b(h->raw, h->rawlen, &slen);
	dkim_canon_header(hc, stripped, slen, 1, &data);
	r = arc_verify_data(h, &data, txt, arg, why_r);
out:
	dkim_buf_free(&data);
	free(stripped);
	free(c);
	free(hl);
	free(bh);
	return r;
}

/* arc_seal_data - what the AS of instance upto signs: every set 1..upto,
 * the last seal with b= empty (given as raw bytes when last != NULL) */
static void
arc_seal_data(const struct dkim_msg *m, const struct arc_set *sets, int upto,
    const char *last_raw, size_t last_len, struct dkim_buf *out)
{
	int k, t;

	for (k = 1; k <= upto; k++)
		for (t = 0; t < SET_N; t++) {
			const struct dkim_hdr *h = &m->hdrs[sets[k].h[t]];

			if (k == upto && t == SET_AS) {
				dkim_canon_header(DKIM_C_RELAXED, last_raw,
				    last_len, 1, out);
			} else
				dkim_canon_header(DKIM_C_RELAXED, h->raw,
				    h->rawlen, 0, out);
		}
}

/* arc_validate_parsed - RFC 8617 5.2 on a parsed message */
static int
arc_validate_parsed(const struct dkim_msg *m, struct arc_set *sets,
    arc_txt_fn txt, void *arg, int *n_r, const char **why_r)
{
	int n, k;

	*why_r = NULL;
	if (arc_collect(m, sets, &n, why_r) == -1) {
		*n_r = n;
		return ARC_CV_FAIL;
	}
	*n_r = n;
	if (n == 0)
		return ARC_CV_NONE;
	for (k = 1; k <= n; k++) {
		char *cv = hdr_tag(&m->hdrs[sets[k].h[SET_AS]], "cv");
		int ok = cv != NULL && strcmp(cv, k == 1 ? "none" : "pass") == 0;

		free(cv);
		if (!ok) {
			*why_r = "a seal's cv= breaks the chain";
			return ARC_CV_FAIL;
		}
	}
	if (arc_verify_ams(m, (size_t)sets[n].h[SET_AMS], txt, arg,
	    why_r) != 0)
		return ARC_CV_FAIL;
	for (k = n; k >= 1; k--) {
		const struct dkim_hdr *as = &m->hdrs[sets[k].h[SET_AS]];
		struct dkim_buf data = { 0 };
		size_t slen;
		char *stripped = dkim_strip_b(as->raw, as->rawlen, &slen);
		int r;

		arc_seal_data(m, sets, k, stripped, slen, &data);
		free(stripped);
		r = arc_verify_data(as, &data, txt, arg, why_r);
		dkim_buf_free(&data);
		if (r != 0)
			return ARC_CV_FAIL;
	}
	return ARC_CV_PASS;
}

int
arc_chain_validate(const char *msg, size_t len, arc_txt_fn txt, void *arg,
    int *n_r, const char **why_r)
{
	struct dkim_msg m;
	struct arc_set sets[ARC_INSTANCE_MAX + 1];
	int cv;

	*n_r = 0;
	if (dkim_msg_parse(msg, len, &m, why_r) == -1)
		return ARC_CV_FAIL;
	cv = arc_validate_parsed(&m, sets, txt, arg, n_r, why_r);
	dkim_msg_clear(&m);
	return cv;
}

/* arc_fold_results - AAR value: results folded at "; " */
static void
arc_fold_results(struct dkim_buf *b, const char *res)
{
	const char *p = res, *q;

	if (res == NULL || *res == '\0') {
		dkim_buf_str(b, " none");
		return;
	}
	for (;;) {
		while (*p == ' ' || *p == '\t')
			p++;
		if ((q = strchr(p, ';')) == NULL) {
			dkim_buf_str(b, "\r\n\t");
			dkim_buf_str(b, p);
			return;
		}
		dkim_buf_str(b, "\r\n\t");
		dkim_buf_add(b, p, (size_t)(q + 1 - p));
		p = q + 1;
	}
}

/* arc_text_ok - no CR, LF or control bytes in text we put in a header */
static int
arc_text_ok(const char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s < 0x20 && *s != '\t')
			return 0;
	return 1;
}

int
arc_seal_message(const struct arc_key *k, const char *msg, size_t len,
    const char *authres, const char *authserv_id, arc_txt_fn txt,
    void *arg, char **headers_r, int *cv_r, char **err_r)
{
	struct dkim_msg m;
	struct arc_set sets[ARC_INSTANCE_MAX + 1];
	struct dkim_buf aar = { 0 }, as = { 0 }, data = { 0 }, out = { 0 };
	const char *why = NULL;
	char *hlist = NULL, *ams = NULL, prefix[16], tbuf[32];
	unsigned char dg[32], *sig;
	unsigned int dglen = sizeof(dg);
	size_t siglen;
	int n, cv, inst, t;

	*headers_r = NULL;
	if ((authres && !arc_text_ok(authres)) || authserv_id == NULL ||
	    !arc_text_ok(authserv_id)) {
		*err_r = xstrdup("cannot seal: control characters in results");
		return -1;
	}
	if (dkim_msg_parse(msg, len, &m, &why) == -1) {
		*err_r = xasprintf("cannot seal: %s", why);
		return -1;
	}
	cv = arc_validate_parsed(&m, sets, txt, arg, &n, &why);
	/* RFC 8617 5.1.1 step 1: a chain whose newest seal already says
	 * cv=fail is not sealed again */
	if (n > 0 && sets[n].h[SET_AS] >= 0) {
		char *last = hdr_tag(&m.hdrs[sets[n].h[SET_AS]], "cv");
		int failed = last != NULL && strcmp(last, "fail") == 0;

		free(last);
		if (failed) {
			dkim_msg_clear(&m);
			*err_r = xasprintf("not sealed: the chain already "
			    "failed (cv=fail at i=%d)", n);
			return -1;
		}
	}
	if (n >= ARC_INSTANCE_MAX) {
		dkim_msg_clear(&m);
		*err_r = xstrdup("cannot seal: ARC chain too long");
		return -1;
	}
	inst = n + 1;
	snprintf(prefix, sizeof(prefix), "i=%d", inst);

	/* AAR */
	dkim_buf_str(&aar, "ARC-Authentication-Results: ");
	dkim_buf_str(&aar, prefix);
	dkim_buf_str(&aar, "; ");
	dkim_buf_str(&aar, authserv_id);
	dkim_buf_str(&aar, ";");
	arc_fold_results(&aar, authres);
	dkim_buf_add(&aar, "\r\n", 2);

	/* AMS over the message as it leaves (our DKIM-Signature included) */
	hlist = dkim_sign_hlist(&m, 1);
	ams = dkim_sign_one(k->pkey, DKIM_ALG_RSA_SHA256, &m,
	    "ARC-Message-Signature", prefix, k->domain, k->selector, hlist,
	    &why);
	if (ams == NULL)
		goto fail;

	/* AS over sets 1..n, then ours; for a chain that fails here only
	 * over ours (RFC 8617 5.1.2) */
	snprintf(tbuf, sizeof(tbuf), "%lld", (long long)time(NULL));
	dkim_buf_str(&as, "ARC-Seal: ");
	dkim_buf_str(&as, prefix);
	dkim_buf_str(&as, "; a=rsa-sha256; t=");
	dkim_buf_str(&as, tbuf);
	dkim_buf_str(&as, "; cv=");
	dkim_buf_str(&as, cv == ARC_CV_NONE ? "none" :
	    cv == ARC_CV_PASS ? "pass" : "fail");
	dkim_buf_str(&as, ";\r\n\td=");
	dkim_buf_str(&as, k->domain);
	dkim_buf_str(&as, "; s=");
	dkim_buf_str(&as, k->selector);
	dkim_buf_str(&as, ";\r\n\tb=");
	{
		int kk;

		for (kk = 1; kk <= n && cv != ARC_CV_FAIL; kk++)
			for (t = 0; t < SET_N; t++)
				if (sets[kk].h[t] >= 0)
					dkim_canon_header(DKIM_C_RELAXED,
					    m.hdrs[sets[kk].h[t]].raw,
					    m.hdrs[sets[kk].h[t]].rawlen, 0,
					    &data);
	}
	dkim_canon_header(DKIM_C_RELAXED, aar.p, aar.len, 0, &data);
	dkim_canon_header(DKIM_C_RELAXED, ams, strlen(ams), 0, &data);
	dkim_canon_header(DKIM_C_RELAXED, as.p, as.len, 1, &data);
	if (EVP_Digest(data.p, data.len, dg, &dglen, EVP_sha256(), NULL) != 1)
		fatalx("arc: SHA-256 failed");
	if (dkim_sign_digest(k->pkey, DKIM_ALG_RSA_SHA256, dg, &sig,
	    &siglen) == -1) {
		why = "seal signing failed";
		goto fail;
	}
	dkim_fold_b64(&as, sig, siglen, 3);
	dkim_buf_add(&as, "\r\n", 2);
	free(sig);

	dkim_buf_add(&out, as.p, as.len);
	dkim_buf_str(&out, ams);
	dkim_buf_add(&out, aar.p, aar.len);
	*headers_r = out.p;
	if (cv_r != NULL)
		*cv_r = cv;
	free(hlist);
	free(ams);
	dkim_buf_free(&aar);
	dkim_buf_free(&as);
	dkim_buf_free(&data);
	dkim_msg_clear(&m);
	return 0;
fail:
	*err_r = xasprintf("cannot seal: %s", why ? why : "error");
	free(hlist);
	free(ams);
	dkim_buf_free(&aar);
	dkim_buf_free(&as);
	dkim_buf_free(&data);
	dkim_msg_clear(&m);
	return -1;
}
