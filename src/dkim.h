/*
 * dkim.h - DKIM signing of outbound messages (RFC 6376, RFC 8463) and the
 * message primitives that ARC (arc.c) shares with it: header parsing,
 * relaxed/simple canonicalisation, tag lists, key records.
 *
 * Signing is done here with OpenSSL EVP rather than through libopendkim's
 * dkim_sign(): libopendkim re-parses the PEM key and builds a fresh key
 * object for every message, which measured 290 RSA-2048 signatures/s on
 * one core against ~3,300/s for a cached EVP_PKEY. Keys are parsed once
 * and cached (keyed by the PEM's SHA-256), so rotation needs no flush.
 * Verification of incoming signatures (authres.c) uses libopendkim.
 *
 * Every function is safe to call from several threads at once.
 * Messages are the raw bytes as queued: CRLF line ends, header section,
 * empty line, body. A bare CR or LF in the header section is an error.
 */
#ifndef PETREL_DKIM_H
#define PETREL_DKIM_H

#include <stddef.h>
#include <jansson.h>
#include <openssl/evp.h>

#define DKIM_HEADERS_MAX	1000	/* header fields examined per message */
#define DKIM_TXT_MAX		4096	/* bytes of one key record */
#define DKIM_KEY_CACHE_MAX	4096	/* parsed private keys kept */

enum dkim_alg { DKIM_ALG_RSA_SHA256 = 0, DKIM_ALG_ED25519_SHA256 };
enum dkim_canon { DKIM_C_SIMPLE = 0, DKIM_C_RELAXED };

/* one header field: name (no colon), raw bytes including the final CRLF */
struct dkim_hdr {
	const char	*name;
	size_t		 namelen;
	const char	*raw;
	size_t		 rawlen;
};

/* a parsed message; points into the caller's bytes */
struct dkim_msg {
	struct dkim_hdr	*hdrs;
	size_t		 nhdrs;
	const char	*body;
	size_t		 bodylen;
	int		 bh_done;	/* bh holds the relaxed body hash */
	unsigned char	 bh[32];	/* (dkim_sign_one, once per parse) */
};

/* growable byte buffer */
struct dkim_buf {
	char	*p;
	size_t	 len, cap;
};

void dkim_buf_add(struct dkim_buf *, const void *, size_t);
void dkim_buf_str(struct dkim_buf *, const char *);
void dkim_buf_free(struct dkim_buf *);

/* dkim_msg_parse - split msg into header fields and body. 0, or -1 with
 * *err_r (static) */
int dkim_msg_parse(const char *msg, size_t len, struct dkim_msg *m,
    const char **err_r);
void dkim_msg_clear(struct dkim_msg *);
/* dkim_msg_count - instances of header name */
size_t dkim_msg_count(const struct dkim_msg *, const char *name);

/* dkim_canon_header - canonical form of one raw header field (relaxed:
 * "name:value\r\n"; simple: the raw bytes), appended to out; with
 * strip_crlf the final CRLF is left out (the signature header itself) */
void dkim_canon_header(int canon, const char *raw, size_t len,
    int strip_crlf, struct dkim_buf *out);
/* dkim_canon_hlist - canonical headers named by an h= list ("from:to"),
 * each taken bottom-up as RFC 6376 5.4.2 says; missing ones add nothing */
void dkim_canon_hlist(int canon, const struct dkim_msg *, const char *hlist,
    struct dkim_buf *out);
/* dkim_body_hash - SHA-256 of the canonical body (32 bytes) */
void dkim_body_hash(int canon, const char *body, size_t len,
    unsigned char out[32]);
/* dkim_strip_b - raw header with the b= tag's value removed, malloc'd */
char *dkim_strip_b(const char *raw, size_t len, size_t *outlen_r);
/* dkim_tag - value of tag in a tag list (whitespace removed), malloc'd,
 * or NULL. value points after "Name:" of a header field. */
char *dkim_tag(const char *value, size_t len, const char *tag);
/* dkim_from_domain - domain of the (single) From header, lower case,
 * malloc'd; NULL when absent, repeated or unparsable */
char *dkim_from_domain(const struct dkim_msg *);

/* dkim_key_private - parsed private key for a PEM, from the cache;
 * the caller EVP_PKEY_free()s it. NULL + *err_r (static). */
EVP_PKEY *dkim_key_private(const char *pem, const char **err_r);
/* dkim_key_public - public key from a DNS key record ("v=DKIM1; k=..;
 * p=.."); *alg_r the record's k= as enum dkim_alg. NULL + *err_r. */
EVP_PKEY *dkim_key_public(const char *txt, int *alg_r, const char **err_r);

/* dkim_sign_digest / dkim_verify_digest - RSA PKCS#1 v1.5 with SHA-256
 * (alg RSA) or pure Ed25519 (RFC 8463) over a SHA-256 digest */
int dkim_sign_digest(EVP_PKEY *, int alg, const unsigned char dg[32],
    unsigned char **sig_r, size_t *siglen_r);
int dkim_verify_digest(EVP_PKEY *, int alg, const unsigned char dg[32],
    const unsigned char *sig, size_t siglen);

/* dkim_sign_one - one signature header field "NAME: PREFIX; a=..; c=
 * relaxed/relaxed; d=; s=; t=; h=; bh=; b=" (folded, CRLF-ended) over m
 * with hlist (colon-separated, as it goes into h=). prefix: "v=1" for
 * DKIM, "i=N" for ARC-Message-Signature. NULL + *err_r (static). */
char *dkim_sign_one(EVP_PKEY *, int alg, struct dkim_msg *m,
    const char *name, const char *prefix, const char *d, const char *s,
    const char *hlist, const char **err_r);
/* dkim_fold_b64 - append base64 of sig to out, folded with CRLF TAB */
void dkim_fold_b64(struct dkim_buf *, const unsigned char *, size_t, size_t col);
/* dkim_sign_hlist - the h= list for m: each of the signed headers present
 * (once per instance), From once more (oversigning), then, with
 * with_dkim, every DKIM-Signature. malloc'd. */
char *dkim_sign_hlist(const struct dkim_msg *, int with_dkim);

/* dkim_sign_message - the DKIM-Signature header fields to prepend to msg
 * (one per active key: rsa-sha256 and ed25519-sha256), d= the record's
 * domain, relaxed/relaxed. 0, or -1 with *err_r (malloc'd). */
int dkim_sign_message(const json_t *domain_rec, const char *msg, size_t len,
    char **headers_r, char **err_r);

#endif
