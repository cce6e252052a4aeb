/*
 * dkim.c - DKIM signatures for outbound mail (RFC 6376 with rsa-sha256,
 * RFC 8463 ed25519-sha256) and the shared message machinery that arc.c
 * builds on: header parsing, canonicalisation, tag lists, key records.
 *
 * Keys come from the domain record (domain.h) as PKCS#8 PEM and are parsed
 * once into an EVP_PKEY cache keyed by the PEM's SHA-256; an EVP_PKEY is
 * safe to share between threads for signing. See dkim.h for why signing
 * does not go through libopendkim.
 */
#include "autoconf.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "dkim.h"
#include "limits.h"
#include "metrics.h"
#include "smtp_parse.h"
#include "util.h"

/* headers signed when present (RFC 6376 5.4.1 and the list) */
static const char *const dkim_signed_headers[] = {
	"From", "To", "Cc", "Subject", "Date", "Message-ID", "MIME-Version",
	"Content-Type", "Content-Transfer-Encoding", "Reply-To",
	"List-Unsubscribe", "List-Unsubscribe-Post",
};

#define IS_WSP(c)	((c) == ' ' || (c) == '\t')

/* ------------------------------------------------------------ buffers */

void
dkim_buf_add(struct dkim_buf *b, const void *p, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 256;

		while (cap < b->len + n + 1)
			cap *= 2;
		b->p = xrealloc(b->p, cap);
		b->cap = cap;
	}
	if (n)
		memcpy(b->p + b->len, p, n);
	b->len += n;
	b->p[b->len] = '\0';
}

void
dkim_buf_str(struct dkim_buf *b, const char *s)
{
	dkim_buf_add(b, s, strlen(s));
}

void
dkim_buf_free(struct dkim_buf *b)
{
	free(b->p);
	b->p = NULL;
	b->len = b->cap = 0;
}

/* ------------------------------------------------------------ parsing */

/* dkim_msg_parse - header fields up to the empty line, then the body */
int
dkim_msg_parse(const char *msg, size_t len, struct dkim_msg *m,
    const char **err_r)
{
	size_t pos = 0, cap = 0;

	memset(m, 0, sizeof(*m));
	while (pos < len) {
		size_t start = pos, colon = 0;

		if (len - pos >= 2 && msg[pos] == '\r' && msg[pos + 1] == '\n') {
			m->body = msg + pos + 2;
			m->bodylen = len - pos - 2;
			return 0;
		}
		if (IS_WSP(msg[pos])) {
			*err_r = "header section starts with a continuation";
			goto fail;
		}
		/* one field: lines until one not starting with WSP */
		for (;;) {
			while (pos < len && msg[pos] != '\r' && msg[pos] != '\n') {
				if (colon == 0 && msg[pos] == ':')
					colon = pos;
				pos++;
			}
			if (pos + 1 >= len || msg[pos] != '\r' ||
			    msg[pos + 1] != '\n') {
				*err_r = pos >= len ?
				    "header section not terminated" :
				    "bare CR or LF in header section";
				goto fail;
			}
			pos += 2;
			if (pos >= len || !IS_WSP(msg[pos]))
				break;
		}
		if (colon == 0 || colon == start) {
			*err_r = "header field without a name";
			goto fail;
		}
		if (m->nhdrs >= DKIM_HEADERS_MAX) {
			*err_r = "too many header fields";
			goto fail;
		}
		if (m->nhdrs == cap) {
			cap = cap ? cap * 2 : 32;
			m->hdrs = xrealloc(m->hdrs, cap * sizeof(*m->hdrs));
		}
		{
			size_t nl = colon - start;

			while (nl > 0 && IS_WSP(msg[start + nl - 1]))
				nl--;
			m->hdrs[m->nhdrs].name = msg + start;
			m->hdrs[m->nhdrs].namelen = nl;
			m->hdrs[m->nhdrs].raw = msg + start;
			m->hdrs[m->nhdrs].rawlen = pos - start;
			m->nhdrs++;
		}
	}
	/* no empty line: all header, empty body */
	m->body = msg + len;
	m->bodylen = 0;
	return 0;
fail:
	dkim_msg_clear(m);
	return -1;
}

void
dkim_msg_clear(struct dkim_msg *m)
{
	free(m->hdrs);
	memset(m, 0, sizeof(*m));
}

static int
hdr_is(const struct dkim_hdr *h, const char *name, size_t nlen)
{
	return h->namelen == nlen && strncasecmp(h->name, name, nlen) == 0;
}

size_t
dkim_msg_count(const struct dkim_msg *m, const char *name)
{
	size_t i, n = 0, nlen = strlen(name);

	for (i = 0; i < m->nhdrs; i++)
		if (hdr_is(&m->hdrs[i], name, nlen))
			n++;
	return n;
}

/* ------------------------------------------------------------ canonical */

void
dkim_canon_header(int canon, const char *raw, size_t len, int strip_crlf,
    struct dkim_buf *out)
{
	size_t i = 0, colon;
	int ws = 0, started = 0;

	if (canon == DKIM_C_SIMPLE) {
		if (strip_crlf && len >= 2 && raw[len - 2] == '\r')
			len -= 2;
		dkim_buf_add(out, raw, len);
		return;
	}
	colon = 0;
	while (colon < len && raw[colon] != ':')
		colon++;
	/* name lower-cased, WSP before the colon dropped */
	for (i = 0; i < colon; i++) {
		char c = raw[i];

		if (IS_WSP(c) || c == '\r' || c == '\n')
			continue;
		if (c >= 'A' && c <= 'Z')
			c += 'a' - 'A';
		dkim_buf_add(out, &c, 1);
	}
	dkim_buf_add(out, ":", 1);
	/* value: unfolded, WSP runs -> one SP, none at either end */
	for (i = colon + 1; i < len; i++) {
		char c = raw[i];

		if (c == '\r' || c == '\n')
			continue;
		if (IS_WSP(c)) {
			ws = 1;
			continue;
		}
		if (ws && started)
			dkim_buf_add(out, " ", 1);
		ws = 0;
		started = 1;
		dkim_buf_add(out, &c, 1);
	}
	if (!strip_crlf)
		dkim_buf_add(out, "\r\n", 2);
}

void
dkim_canon_hlist(int canon, const struct dkim_msg *m, const char *hlist,
    struct dkim_buf *out)
{
	unsigned char *used = xcalloc(m->nhdrs ? m->nhdrs : 1, 1);
	const char *p = hlist;

	while (*p != '\0') {
		const char *e = p;
		size_t nlen;

		while (*e != '\0' && *e != ':')
			e++;
		/* trim FWS around the name */
		{
			const char *a = p, *z = e;

			while (a < z && (IS_WSP(*a) || *a == '\r' || *a == '\n'))
				a++;
			while (z > a && (IS_WSP(z[-1]) || z[-1] == '\r' ||
			    z[-1] == '\n'))
				z--;
			nlen = (size_t)(z - a);
			if (nlen > 0) {
				size_t i = m->nhdrs;

				while (i > 0) {
					i--;
					if (!used[i] &&
					    hdr_is(&m->hdrs[i], a, nlen)) {
						used[i] = 1;
						dkim_canon_header(canon,
						    m->hdrs[i].raw,
						    m->hdrs[i].rawlen, 0, out);
						break;
					}
				}
			}
		}
		p = *e == ':' ? e + 1 : e;
	}
	free(used);
}

/* body_emit - buffered digest update */
struct body_out {
	EVP_MD_CTX	*md;
	char		 buf[4096];
	size_t		 n;
};

static void
body_put(struct body_out *o, const char *p, size_t n)
{
	if (o->n + n > sizeof(o->buf)) {
		EVP_DigestUpdate(o->md, o->buf, o->n);
		o->n = 0;
		if (n > sizeof(o->buf)) {
			EVP_DigestUpdate(o->md, p, n);
			return;
		}
	}
	memcpy(o->buf + o->n, p, n);
	o->n += n;
}

void
dkim_body_hash(int canon, const char *body, size_t len, unsigned char out[32])
{
	struct body_out o;
	size_t pos = 0, empty = 0, nonempty = 0;
	unsigned int olen = 32;

	o.md = EVP_MD_CTX_new();
	o.n = 0;
	if (o.md == NULL || EVP_DigestInit_ex(o.md, EVP_sha256(), NULL) != 1)
		fatalx("dkim: cannot initialise SHA-256");
	while (pos < len) {
		size_t eol = pos, next, i, start;
		int ws = 0, have = 0;

		while (eol < len && !(body[eol] == '\r' && eol + 1 < len &&
		    body[eol + 1] == '\n'))
			eol++;
		next = eol < len ? eol + 2 : len;
		/* a line is empty when nothing remains after canonicalising */
		if (canon == DKIM_C_SIMPLE) {
			have = eol > pos;
		} else {
			for (i = pos; i < eol; i++)
				if (!IS_WSP(body[i])) {
					have = 1;
					break;
				}
		}
		if (!have) {
			empty++;
			pos = next;
			continue;
		}
		for (; empty > 0; empty--)
			body_put(&o, "\r\n", 2);
		nonempty = 1;
		if (canon == DKIM_C_SIMPLE) {
			body_put(&o, body + pos, eol - pos);
		} else {
			start = pos;
			for (i = pos; i < eol; i++) {
				if (IS_WSP(body[i])) {
					if (!ws && i > start)
						body_put(&o, body + start,
						    i - start);
					ws = 1;
					continue;
				}
				if (ws) {
					body_put(&o, " ", 1);
					start = i;
					ws = 0;
				}
			}
			if (!ws && i > start)
				body_put(&o, body + start, i - start);
		}
		body_put(&o, "\r\n", 2);
		pos = next;
	}
	/* simple: an empty body is one CRLF (RFC 6376 3.4.3) */
	if (!nonempty && canon == DKIM_C_SIMPLE)
		body_put(&o, "\r\n", 2);
	if (o.n)
		EVP_DigestUpdate(o.md, o.buf, o.n);
	EVP_DigestFinal_ex(o.md, out, &olen);
	EVP_MD_CTX_free(o.md);
}

char *
dkim_strip_b(const char *raw, size_t len, size_t *outlen_r)
{
	struct dkim_buf b = { 0 };
	size_t i = 0, colon = 0;

	while (colon < len && raw[colon] != ':')
		colon++;
	dkim_buf_add(&b, raw, colon < len ? colon + 1 : len);
	i = colon + 1;
	while (i < len) {
		/* at the start of a tag: copy up to '=', check its name */
		size_t ts = i, te, ns, ne;

		while (i < len && raw[i] != '=' && raw[i] != ';')
			i++;
		ns = ts;
		ne = i;
		while (ns < ne && (IS_WSP(raw[ns]) || raw[ns] == '\r' ||
		    raw[ns] == '\n'))
			ns++;
		while (ne > ns && (IS_WSP(raw[ne - 1]) || raw[ne - 1] == '\r' ||
		    raw[ne - 1] == '\n'))
			ne--;
		if (i < len && raw[i] == '=' && ne - ns == 1 && raw[ns] == 'b') {
			dkim_buf_add(&b, raw + ts, i + 1 - ts);
			te = i + 1;
			while (te < len && raw[te] != ';')
				te++;
			/* keep a trailing CRLF of the field */
			if (te == len && len >= 2 && raw[len - 2] == '\r')
				dkim_buf_add(&b, "\r\n", 2);
			i = te;
			if (i < len) {
				dkim_buf_add(&b, ";", 1);
				i++;
			}
			continue;
		}
		while (i < len && raw[i] != ';')
			i++;
		if (i < len)
			i++;
		dkim_buf_add(&b, raw + ts, i - ts);
	}
	*outlen_r = b.len;
	return b.p ? b.p : xstrdup("");
}

char *
dkim_tag(const char *value, size_t len, const char *tag)
{
	size_t i = 0, tlen = strlen(tag);

	while (i < len) {
		size_t ns, ne, vs, ve;
		char *out;
		size_t j, k;

		while (i < len && (IS_WSP(value[i]) || value[i] == '\r' ||
		    value[i] == '\n'))
			i++;
		ns = i;
		while (i < len && value[i] != '=' && value[i] != ';')
			i++;
		ne = i;
		while (ne > ns && (IS_WSP(value[ne - 1]) ||
		    value[ne - 1] == '\r' || value[ne - 1] == '\n'))
			ne--;
		if (i >= len || value[i] == ';') {
			i++;
			continue;
		}
		vs = ++i;
		while (i < len && value[i] != ';')
			i++;
		ve = i;
		i++;
		if (ne - ns != tlen || strncmp(value + ns, tag, tlen) != 0)
			continue;
		out = xmalloc(ve - vs + 1);
		for (j = vs, k = 0; j < ve; j++)
			if (!IS_WSP(value[j]) && value[j] != '\r' &&
			    value[j] != '\n')
				out[k++] = value[j];
		out[k] = '\0';
		return out;
	}
	return NULL;
}

/* dkim_from_domain - the domain of the one mailbox of the one From field,
 * read as the SMTP server's policy check reads it (smtp_header_from:
 * display names and comments skipped), lower case, no trailing dot */
char *
dkim_from_domain(const struct dkim_msg *m)
{
	const struct dkim_hdr *h = NULL;
	const char *v, *err;
	char local[LOCALPART_MAX_LEN + 1], dom[DOMAIN_MAX_LEN + 1];
	size_t i, n;

	for (i = 0; i < m->nhdrs; i++)
		if (hdr_is(&m->hdrs[i], "from", 4)) {
			if (h != NULL)
				return NULL;
			h = &m->hdrs[i];
		}
	if (h == NULL)
		return NULL;
	v = (const char *)memchr(h->raw, ':', h->rawlen) + 1;
	if (smtp_header_from(v, (size_t)(h->raw + h->rawlen - v), local, dom,
	    &err) != SMTP_FROM_OK || dom[0] == '\0')
		return NULL;
	util_lower(dom);
	if ((n = strlen(dom)) > 0 && dom[n - 1] == '.')
		dom[n - 1] = '\0';
	return xstrdup(dom);
}

/* ------------------------------------------------------------ keys */

struct key_ent {
	unsigned char	 id[32];
	EVP_PKEY	*pk;
	struct key_ent	*next;
};

static pthread_mutex_t key_lock = PTHREAD_MUTEX_INITIALIZER;
static struct key_ent *key_cache;
static size_t key_count;

EVP_PKEY *
dkim_key_private(const char *pem, const char **err_r)
{
	unsigned char id[32];
	unsigned int idlen = sizeof(id);
	struct key_ent *e;
	EVP_PKEY *pk = NULL;
	BIO *bio;

	if (EVP_Digest(pem, strlen(pem), id, &idlen, EVP_sha256(), NULL) != 1)
		fatalx("dkim: SHA-256 failed");
	pthread_mutex_lock(&key_lock);
	for (e = key_cache; e != NULL; e = e->next)
		if (memcmp(e->id, id, sizeof(id)) == 0) {
			pk = e->pk;
			EVP_PKEY_up_ref(pk);
			break;
		}
	pthread_mutex_unlock(&key_lock);
	if (pk != NULL)
		return pk;

	if ((bio = BIO_new_mem_buf(pem, -1)) == NULL)
		fatalx("dkim: out of memory");
	pk = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
	BIO_free(bio);
	if (pk == NULL) {
		*err_r = "cannot parse private key";
		return NULL;
	}
	pthread_mutex_lock(&key_lock);
	if (key_count >= DKIM_KEY_CACHE_MAX) {
		/* crude but bounded: start over */
		while (key_cache != NULL) {
			e = key_cache->next;
			EVP_PKEY_free(key_cache->pk);
			free(key_cache);
			key_cache = e;
		}
		key_count = 0;
	}
	e = xcalloc(1, sizeof(*e));
	memcpy(e->id, id, sizeof(id));
	e->pk = pk;
	EVP_PKEY_up_ref(pk);
	e->next = key_cache;
	key_cache = e;
	key_count++;
	pthread_mutex_unlock(&key_lock);
	return pk;
}

EVP_PKEY *
dkim_key_public(const char *txt, int *alg_r, const char **err_r)
{
	char *k, *p, *v;
	unsigned char *der = NULL;
	const unsigned char *dp;
	long dlen;
	EVP_PKEY *pk = NULL;
	size_t tlen = strlen(txt);

	if (tlen > DKIM_TXT_MAX) {
		*err_r = "key record too long";
		return NULL;
	}
	v = dkim_tag(txt, tlen, "v");
	if (v != NULL && strcmp(v, "DKIM1") != 0) {
		free(v);
		*err_r = "key record is not v=DKIM1";
		return NULL;
	}
	free(v);
	k = dkim_tag(txt, tlen, "k");
	p = dkim_tag(txt, tlen, "p");
	if (p == NULL || *p == '\0') {
		*err_r = p ? "key revoked" : "key record without p=";
		goto out;
	}
	der = xmalloc(strlen(p) * 3 / 4 + 3);
	if ((dlen = util_b64_decode(p, strlen(p), der)) < 0) {
		*err_r = "bad base64 in p=";
		goto out;
	}
	if (k == NULL || strcmp(k, "rsa") == 0) {
		*alg_r = DKIM_ALG_RSA_SHA256;
		dp = der;
		pk = d2i_PUBKEY(NULL, &dp, dlen);
		if (pk == NULL || EVP_PKEY_get_base_id(pk) != EVP_PKEY_RSA) {
			EVP_PKEY_free(pk);
			pk = NULL;
			*err_r = "bad RSA public key";
		}
	} else if (strcmp(k, "ed25519") == 0) {
		*alg_r = DKIM_ALG_ED25519_SHA256;
		if (dlen != 32 || (pk = EVP_PKEY_new_raw_public_key(
		    EVP_PKEY_ED25519, NULL, der, 32)) == NULL)
			*err_r = "bad Ed25519 public key";
	} else
		*err_r = "unknown key type";
out:
	free(k);
	free(p);
	free(der);
	return pk;
}

int
dkim_sign_digest(EVP_PKEY *pk, int alg, const unsigned char dg[32],
    unsigned char **sig_r, size_t *siglen_r)
{
	size_t slen = (size_t)EVP_PKEY_get_size(pk);
	unsigned char *sig = xmalloc(slen);
	int ok = 0;

	if (alg == DKIM_ALG_RSA_SHA256) {
		EVP_PKEY_CTX *c = EVP_PKEY_CTX_new(pk, NULL);

		ok = c != NULL && EVP_PKEY_sign_init(c) == 1 &&
		    EVP_PKEY_CTX_set_rsa_padding(c, RSA_PKCS1_PADDING) == 1 &&
		    EVP_PKEY_CTX_set_signature_md(c, EVP_sha256()) == 1 &&
		    EVP_PKEY_sign(c, sig, &slen, dg, 32) == 1;
		EVP_PKEY_CTX_free(c);
	} else {
		EVP_MD_CTX *c = EVP_MD_CTX_new();

		ok = c != NULL &&
		    EVP_DigestSignInit(c, NULL, NULL, NULL, pk) == 1 &&
		    EVP_DigestSign(c, sig, &slen, dg, 32) == 1;
		EVP_MD_CTX_free(c);
	}
	if (!ok) {
		free(sig);
		return -1;
	}
	*sig_r = sig;
	*siglen_r = slen;
	return 0;
}

int
dkim_verify_digest(EVP_PKEY *pk, int alg, const unsigned char dg[32],
    const unsigned char *sig, size_t siglen)
{
	int ok;

	if (alg == DKIM_ALG_RSA_SHA256) {
		EVP_PKEY_CTX *c = EVP_PKEY_CTX_new(pk, NULL);

		ok = c != NULL && EVP_PKEY_verify_init(c) == 1 &&
		    EVP_PKEY_CTX_set_rsa_padding(c, RSA_PKCS1_PADDING) == 1 &&
		    EVP_PKEY_CTX_set_signature_md(c, EVP_sha256()) == 1 &&
		    EVP_PKEY_verify(c, sig, siglen, dg, 32) == 1;
		EVP_PKEY_CTX_free(c);
	} else {
		EVP_MD_CTX *c = EVP_MD_CTX_new();

		ok = c != NULL &&
		    EVP_DigestVerifyInit(c, NULL, NULL, NULL, pk) == 1 &&
		    EVP_DigestVerify(c, sig, siglen, dg, 32) == 1;
		EVP_MD_CTX_free(c);
	}
	return ok ? 0 : -1;
}

/* ------------------------------------------------------------ signing */

void
dkim_fold_b64(struct dkim_buf *out, const unsigned char *p, size_t n,
    size_t col)
{
	char *b64 = util_b64_encode(p, n);
	size_t i, len = strlen(b64);

	for (i = 0; i < len; ) {
		size_t room = col < 76 ? 76 - col : 1, take = len - i;

		if (take > room)
			take = room;
		dkim_buf_add(out, b64 + i, take);
		i += take;
		if (i < len) {
			dkim_buf_add(out, "\r\n\t ", 4);
			col = 9;
		}
	}
	free(b64);
}

char *
dkim_sign_hlist(const struct dkim_msg *m, int with_dkim)
{
	struct dkim_buf b = { 0 };
	size_t i, n, k;

	for (i = 0; i < nitems(dkim_signed_headers); i++) {
		n = dkim_msg_count(m, dkim_signed_headers[i]);
		if (i == 0)
			n++;	/* oversign From */
		for (k = 0; k < n; k++) {
			if (b.len)
				dkim_buf_add(&b, ":", 1);
			dkim_buf_str(&b, dkim_signed_headers[i]);
		}
	}
	if (with_dkim) {
		n = dkim_msg_count(m, "DKIM-Signature");
		for (k = 0; k < n; k++)
			dkim_buf_str(&b, ":DKIM-Signature");
	}
	return b.p;
}

char *
dkim_sign_one(EVP_PKEY *pk, int alg, struct dkim_msg *m,
    const char *name, const char *prefix, const char *d, const char *s,
    const char *hlist, const char **err_r)
{
	struct dkim_buf h = { 0 }, data = { 0 };
	unsigned char bh[32], dg[32], *sig;
	unsigned int dglen = sizeof(dg);
	size_t siglen, col;
	char *bh64, tbuf[32];

	/* the RSA and Ed25519 signatures of one message share it */
	if (!m->bh_done) {
		dkim_body_hash(DKIM_C_RELAXED, m->body, m->bodylen, m->bh);
		m->bh_done = 1;
	}
	memcpy(bh, m->bh, sizeof(bh));
	bh64 = util_b64_encode(bh, sizeof(bh));
	snprintf(tbuf, sizeof(tbuf), "%lld", (long long)time(NULL));

	dkim_buf_str(&h, name);
	dkim_buf_str(&h, ": ");
	dkim_buf_str(&h, prefix);
	dkim_buf_str(&h, alg == DKIM_ALG_RSA_SHA256 ? "; a=rsa-sha256" :
	    "; a=ed25519-sha256");
	dkim_buf_str(&h, "; c=relaxed/relaxed;\r\n\td=");
	dkim_buf_str(&h, d);
	dkim_buf_str(&h, "; s=");
	dkim_buf_str(&h, s);
	dkim_buf_str(&h, "; t=");
	dkim_buf_str(&h, tbuf);
	dkim_buf_str(&h, ";\r\n\th=");
	dkim_buf_str(&h, hlist);
	dkim_buf_str(&h, ";\r\n\tbh=");
	dkim_buf_str(&h, bh64);
	dkim_buf_str(&h, ";\r\n\tb=");
	free(bh64);

	dkim_canon_hlist(DKIM_C_RELAXED, m, hlist, &data);
	dkim_canon_header(DKIM_C_RELAXED, h.p, h.len, 1, &data);
	if (EVP_Digest(data.p, data.len, dg, &dglen, EVP_sha256(), NULL) != 1)
		fatalx("dkim: SHA-256 failed");
	dkim_buf_free(&data);
	if (dkim_sign_digest(pk, alg, dg, &sig, &siglen) == -1) {
		dkim_buf_free(&h);
		*err_r = "signing failed";
		return NULL;
	}
	col = 3;
	dkim_fold_b64(&h, sig, siglen, col);
	dkim_buf_add(&h, "\r\n", 2);
	free(sig);
	return h.p;
}

/* dkim_sign_message1 - dkim_sign_message without the timing */
static int
dkim_sign_message1(const json_t *rec, const char *msg, size_t len,
    char **headers_r, char **err_r)
{
	struct dkim_msg m;
	struct dkim_buf out = { 0 };
	const char *d, *err = NULL;
	const json_t *keys, *k, *use[2] = { NULL, NULL };
	char *hlist;
	size_t i;
	int a;

	*headers_r = NULL;
	d = json_string_value(json_object_get(rec, "domain"));
	keys = json_object_get(rec, "keys");
	if (d == NULL || !json_is_array(keys)) {
		*err_r = xstrdup("domain record without domain or keys");
		return -1;
	}
	/* the newest active key of each algorithm */
	json_array_foreach(keys, i, k) {
		const char *alg = json_string_value(json_object_get(k, "alg"));
		const char *st = json_string_value(json_object_get(k, "state"));

		if (alg == NULL || st == NULL || strcmp(st, "active") != 0)
			continue;
		if (strcmp(alg, "rsa-sha256") == 0)
			use[DKIM_ALG_RSA_SHA256] = k;
		else if (strcmp(alg, "ed25519-sha256") == 0)
			use[DKIM_ALG_ED25519_SHA256] = k;
	}
	if (use[0] == NULL && use[1] == NULL) {
		*err_r = xasprintf("domain %s has no active DKIM key", d);
		return -1;
	}
	if (dkim_msg_parse(msg, len, &m, &err) == -1) {
		*err_r = xasprintf("cannot sign: %s", err);
		return -1;
	}
	if (dkim_msg_count(&m, "From") != 1) {
		dkim_msg_clear(&m);
		*err_r = xstrdup("cannot sign: message needs exactly one From");
		return -1;
	}
	hlist = dkim_sign_hlist(&m, 0);
	for (a = 0; a < 2; a++) {
		const char *pem, *sel;
		EVP_PKEY *pk;
		char *h;

		if (use[a] == NULL)
			continue;
		pem = json_string_value(json_object_get(use[a], "private"));
		sel = json_string_value(json_object_get(use[a], "selector"));
		if (pem == NULL || sel == NULL) {
			err = "key without private key or selector";
			goto fail;
		}
		if ((pk = dkim_key_private(pem, &err)) == NULL)
			goto fail;
		if ((EVP_PKEY_get_base_id(pk) == EVP_PKEY_RSA) !=
		    (a == DKIM_ALG_RSA_SHA256)) {
			EVP_PKEY_free(pk);
			err = "key type does not match its alg";
			goto fail;
		}
		h = dkim_sign_one(pk, a, &m, "DKIM-Signature", "v=1", d, sel,
		    hlist, &err);
		EVP_PKEY_free(pk);
		if (h == NULL)
			goto fail;
		dkim_buf_str(&out, h);
		free(h);
	}
	free(hlist);
	dkim_msg_clear(&m);
	*headers_r = out.p;
	return 0;
fail:
	free(hlist);
	dkim_msg_clear(&m);
	dkim_buf_free(&out);
	*err_r = xasprintf("cannot sign for %s: %s", d, err);
	return -1;
}

int
dkim_sign_message(const json_t *rec, const char *msg, size_t len,
    char **headers_r, char **err_r)
{
	struct timespec t0, t1;
	int rv;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	rv = dkim_sign_message1(rec, msg, len, headers_r, err_r);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	if (rv == 0)
		metrics_observe_dkim_sign((uint64_t)(t1.tv_sec - t0.tv_sec) *
		    1000000000u + (uint64_t)t1.tv_nsec - (uint64_t)t0.tv_nsec);
	return rv;
}
