/*
 * passwd.c - password hashes for SMTP AUTH users. scrypt through OpenSSL 3's
 * EVP_KDF, encoded as "$scrypt$ln=15,r=8,p=1$<salt b64>$<hash b64>" so the
 * parameters can grow later without breaking stored hashes. Verification
 * parses the parameters with tight bounds (a stored record must not make us
 * burn gigabytes of memory) and compares in constant time.
 */
#include "autoconf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>

#include "limits.h"
#include "passwd.h"
#include "util.h"

#define PASSWD_LN	15
#define PASSWD_R	8
#define PASSWD_P	1
#define PASSWD_SALT_LEN	16
#define PASSWD_HASH_LEN	32
#define PASSWD_MAXMEM	(64ULL * 1024 * 1024)

/* bounds accepted when verifying a stored hash */
#define PASSWD_LN_MAX	20
#define PASSWD_R_MAX	32
#define PASSWD_P_MAX	16
#define PASSWD_SALT_MAX	64
#define PASSWD_HASH_MIN	16
#define PASSWD_HASH_MAX	64
#define PASSWD_ENC_MAX	512
#define PASSWD_MEM_MAX	(256ULL * 1024 * 1024)	/* 128*r*N */

/* passwd_kdf - scrypt(pw, salt) into out; 0 ok, -1 on failure */
static int
passwd_kdf(const char *pw, const unsigned char *salt, size_t saltlen,
    unsigned ln, unsigned r, unsigned p, unsigned char *out, size_t outlen)
{
	EVP_KDF *kdf;
	EVP_KDF_CTX *kctx;
	OSSL_PARAM params[7], *q = params;
	uint64_t n = (uint64_t)1 << ln;
	uint32_t r32 = r, p32 = p;
	uint64_t maxmem = PASSWD_MAXMEM;
	int rc;

	/* scrypt needs 128*r*N bytes (plus 128*r*p); leave room above it */
	if ((uint64_t)128 * r * n + (uint64_t)128 * r * p + 65536 > maxmem)
		maxmem = (uint64_t)128 * r * n + (uint64_t)128 * r * p +
		    1024 * 1024;
	if ((kdf = EVP_KDF_fetch(NULL, "SCRYPT", NULL)) == NULL)
		return -1;
	kctx = EVP_KDF_CTX_new(kdf);
	EVP_KDF_free(kdf);
	if (kctx == NULL)
		return -1;
	*q++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_PASSWORD,
	    (void *)(uintptr_t)pw, strlen(pw));
	*q++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT,
	    (void *)(uintptr_t)salt, saltlen);
	*q++ = OSSL_PARAM_construct_uint64(OSSL_KDF_PARAM_SCRYPT_N, &n);
	*q++ = OSSL_PARAM_construct_uint32(OSSL_KDF_PARAM_SCRYPT_R, &r32);
	*q++ = OSSL_PARAM_construct_uint32(OSSL_KDF_PARAM_SCRYPT_P, &p32);
	*q++ = OSSL_PARAM_construct_uint64(OSSL_KDF_PARAM_SCRYPT_MAXMEM,
	    &maxmem);
	*q = OSSL_PARAM_construct_end();
	rc = EVP_KDF_derive(kctx, out, outlen, params);
	EVP_KDF_CTX_free(kctx);
	return rc == 1 ? 0 : -1;
}

char *
passwd_hash(const char *pw)
{
	unsigned char salt[PASSWD_SALT_LEN], hash[PASSWD_HASH_LEN];
	char *s64, *h64, *enc;

	util_random(salt, sizeof(salt));
	if (passwd_kdf(pw, salt, sizeof(salt), PASSWD_LN, PASSWD_R, PASSWD_P,
	    hash, sizeof(hash)) == -1)
		fatalx("scrypt key derivation failed");
	s64 = util_b64_encode(salt, sizeof(salt));
	h64 = util_b64_encode(hash, sizeof(hash));
	enc = xasprintf("$scrypt$ln=%d,r=%d,p=%d$%s$%s", PASSWD_LN, PASSWD_R,
	    PASSWD_P, s64, h64);
	OPENSSL_cleanse(hash, sizeof(hash));
	free(s64);
	free(h64);
	return enc;
}

/* passwd_param - parse "name=<digits>" at *pp up to the next ',' or '$' */
static int
passwd_param(const char **pp, const char *name, unsigned min, unsigned max,
    unsigned *v_r)
{
	const char *p = *pp;
	size_t nl = strlen(name);
	unsigned v = 0;
	int digits = 0;

	if (strncmp(p, name, nl) != 0 || p[nl] != '=')
		return -1;
	p += nl + 1;
	while (*p >= '0' && *p <= '9') {
		if (++digits > 3)
			return -1;
		v = v * 10 + (unsigned)(*p - '0');
		p++;
	}
	if (digits == 0 || v < min || v > max)
		return -1;
	*v_r = v;
	*pp = p;
	return 0;
}

/* passwd_b64_field - decode the base64 field [p, '$' or NUL) into out */
static long
passwd_b64_field(const char **pp, int last, unsigned char *out, size_t outmax)
{
	const char *p = *pp, *e;
	size_t len;
	long n;

	e = last ? p + strlen(p) : strchr(p, '$');
	if (e == NULL)
		return -1;
	len = (size_t)(e - p);
	if (len == 0 || 3 * len / 4 + 3 > outmax)
		return -1;
	if ((n = util_b64_decode(p, len, out)) <= 0)
		return -1;
	*pp = e;
	return n;
}

int
passwd_verify(const char *pw, const char *encoded)
{
	unsigned char salt[PASSWD_SALT_MAX + 3], want[PASSWD_HASH_MAX + 3];
	unsigned char got[PASSWD_HASH_MAX];
	const char *p = encoded;
	unsigned ln, r, pp;
	long saltlen, hashlen;
	int rc;

	if (pw == NULL || encoded == NULL ||
	    strnlen(encoded, PASSWD_ENC_MAX + 1) > PASSWD_ENC_MAX ||
	    strnlen(pw, PASSWORD_MAX_LEN + 1) > PASSWORD_MAX_LEN)
		return -1;
	if (strncmp(p, "$scrypt$", 8) != 0)
		return -1;
	p += 8;
	if (passwd_param(&p, "ln", 1, PASSWD_LN_MAX, &ln) == -1 || *p++ != ',')
		return -1;
	if (passwd_param(&p, "r", 1, PASSWD_R_MAX, &r) == -1 || *p++ != ',')
		return -1;
	if (passwd_param(&p, "p", 1, PASSWD_P_MAX, &pp) == -1 || *p++ != '$')
		return -1;
	if ((uint64_t)128 * r * ((uint64_t)1 << ln) > PASSWD_MEM_MAX)
		return -1;
	if ((saltlen = passwd_b64_field(&p, 0, salt, sizeof(salt))) < 8 ||
	    *p++ != '$')
		return -1;
	if ((hashlen = passwd_b64_field(&p, 1, want, sizeof(want))) <
	    PASSWD_HASH_MIN || hashlen > PASSWD_HASH_MAX)
		return -1;
	if (passwd_kdf(pw, salt, (size_t)saltlen, ln, r, pp, got,
	    (size_t)hashlen) == -1)
		return -1;
	rc = util_ct_compare(got, want, (size_t)hashlen);
	OPENSSL_cleanse(got, sizeof(got));
	return rc == 0 ? 0 : -1;
}
