/*
 * util.c - generic helpers: allocation, strings, base64, durations, sizes,
 * randomness. Nothing here knows about mail.
 */
#include "autoconf.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/crypto.h>

#include "util.h"
#include "log.h"

void *
xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (p == NULL)
		fatalx("out of memory (%zu bytes)", n);
	return p;
}

void *
xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);

	if (p == NULL)
		fatalx("out of memory (%zu x %zu bytes)", n, size);
	return p;
}

void *
xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);

	if (q == NULL)
		fatalx("out of memory (%zu bytes)", n);
	return q;
}

char *
xstrdup(const char *s)
{
	char *p = strdup(s);

	if (p == NULL)
		fatalx("out of memory");
	return p;
}

char *
xstrndup(const char *s, size_t n)
{
	char *p = strndup(s, n);

	if (p == NULL)
		fatalx("out of memory");
	return p;
}

char *
xvasprintf(const char *fmt, va_list ap)
{
	char *p;

	if (vasprintf(&p, fmt, ap) < 0)
		fatalx("out of memory");
	return p;
}

char *
xasprintf(const char *fmt, ...)
{
	va_list ap;
	char *p;

	va_start(ap, fmt);
	p = xvasprintf(fmt, ap);
	va_end(ap);
	return p;
}

void
fatalx(const char *fmt, ...)
{
	va_list ap;
	char *msg;

	va_start(ap, fmt);
	if (vasprintf(&msg, fmt, ap) < 0)
		msg = NULL;
	va_end(ap);
	log_msg(LOG_LVL_ERR, "event=fatal reason=\"%s\"", msg ? msg : fmt);
	abort();
}

size_t
util_strlcpy(char *dst, const char *src, size_t size)
{
	size_t n = strlen(src);

	if (size > 0) {
		size_t c = n < size - 1 ? n : size - 1;
		memcpy(dst, src, c);
		dst[c] = '\0';
	}
	return n;
}

void
util_lower(char *s)
{
	for (; *s; s++)
		if (*s >= 'A' && *s <= 'Z')
			*s = (char)(*s - 'A' + 'a');
}

char *
util_trim(char *s)
{
	char *e;

	while (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r' ||
	    e[-1] == '\n'))
		*--e = '\0';
	return s;
}

char *
util_b64_encode(const void *data, size_t len)
{
	char *out = xmalloc(4 * ((len + 2) / 3) + 1);

	EVP_EncodeBlock((unsigned char *)out, data, (int)len);
	return out;
}

long
util_b64_decode(const char *in, size_t len, unsigned char *out)
{
	size_t i, pad = 0;
	int n;

	if (len == 0)
		return 0;
	if (len % 4 != 0 || len > (size_t)0x7fffffff)
		return -1;
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)in[i];
		if (!(isalnum(c) || c == '+' || c == '/' || c == '='))
			return -1;
		if (c == '=' && i < len - 2)
			return -1;
	}
	if (in[len - 1] == '=')
		pad++;
	if (in[len - 2] == '=')
		pad++;
	if (pad == 1 && in[len - 2] == '=')
		return -1;
	n = EVP_DecodeBlock(out, (const unsigned char *)in, (int)len);
	if (n < 0)
		return -1;
	return (long)n - (long)pad;
}

char *
util_b64url_encode(const void *data, size_t len)
{
	char *s = util_b64_encode(data, len);
	size_t i;

	for (i = 0; s[i] != '\0'; i++) {
		if (s[i] == '+')
			s[i] = '-';
		else if (s[i] == '/')
			s[i] = '_';
		else if (s[i] == '=') {
			s[i] = '\0';
			break;
		}
	}
	return s;
}

long
util_b64url_decode(const char *in, size_t len, unsigned char *out)
{
	char *std;
	size_t i, n;
	long r;

	if (len % 4 == 1)
		return -1;
	n = len + (4 - len % 4) % 4;
	std = xmalloc(n + 1);
	for (i = 0; i < len; i++) {
		if (in[i] == '-')
			std[i] = '+';
		else if (in[i] == '_')
			std[i] = '/';
		else if ((in[i] >= 'A' && in[i] <= 'Z') ||
		    (in[i] >= 'a' && in[i] <= 'z') ||
		    (in[i] >= '0' && in[i] <= '9'))
			std[i] = in[i];
		else {
			free(std);
			return -1;
		}
	}
	for (; i < n; i++)
		std[i] = '=';
	std[n] = '\0';
	r = util_b64_decode(std, n, out);
	free(std);
	return r;
}

int
util_parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *v_r,
    const char **err_r)
{
	uint64_t v = 0;
	const char *p;

	if (*s == '\0') {
		*err_r = "empty number";
		return -1;
	}
	for (p = s; *p; p++) {
		if (*p < '0' || *p > '9') {
			*err_r = "not a number";
			return -1;
		}
		if (v > (UINT64_MAX - 9) / 10) {
			*err_r = "number too large";
			return -1;
		}
		v = v * 10 + (uint64_t)(*p - '0');
	}
	if (v < min || v > max) {
		*err_r = "number out of range";
		return -1;
	}
	*v_r = v;
	return 0;
}

static int
parse_scaled(const char *s, const char *units, const uint64_t *mult,
    uint64_t *v_r, const char **err_r)
{
	char buf[32];
	size_t n = strlen(s);
	uint64_t m = 1, v;
	const char *u;

	if (n == 0 || n >= sizeof(buf)) {
		*err_r = n ? "value too long" : "empty value";
		return -1;
	}
	memcpy(buf, s, n + 1);
	if (!isdigit((unsigned char)buf[n - 1])) {
		u = strchr(units, buf[n - 1]);
		if (u == NULL) {
			*err_r = "unknown unit";
			return -1;
		}
		m = mult[u - units];
		buf[n - 1] = '\0';
	}
	if (util_parse_uint(buf, 0, UINT64_MAX, &v, err_r) == -1)
		return -1;
	if (m != 0 && v > UINT64_MAX / m) {
		*err_r = "value too large";
		return -1;
	}
	*v_r = v * m;
	return 0;
}

int
util_parse_duration(const char *s, long *secs_r, const char **err_r)
{
	static const uint64_t mult[] = { 1, 60, 3600, 86400, 604800 };
	uint64_t v;

	if (parse_scaled(s, "smhdw", mult, &v, err_r) == -1)
		return -1;
	if (v > 10L * 365 * 86400) {
		*err_r = "duration too long";
		return -1;
	}
	*secs_r = (long)v;
	return 0;
}

int
util_parse_size(const char *s, uint64_t *bytes_r, const char **err_r)
{
	/* one multiplier per letter of the unit string */
	static const uint64_t mult[] = {
		1ULL << 10, 1ULL << 10,		/* k K */
		1ULL << 20, 1ULL << 20,		/* M m */
		1ULL << 30, 1ULL << 30,		/* G g */
		1ULL << 40			/* T */
	};

	return parse_scaled(s, "kKMmGgT", mult, bytes_r, err_r);
}

void
util_random(void *buf, size_t len)
{
	if (RAND_bytes(buf, (int)len) != 1)
		fatalx("RAND_bytes failed");
}

void
util_random_id(char *buf, size_t n)
{
	static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz234567";
	unsigned char r[64];
	size_t i;

	if (n > sizeof(r))
		fatalx("util_random_id: %zu too long", n);
	util_random(r, n);
	for (i = 0; i < n; i++)
		buf[i] = alphabet[r[i] & 31];
	buf[n] = '\0';
}

void
util_hex(const void *in, size_t len, char *out)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p = in;
	size_t i;

	for (i = 0; i < len; i++) {
		out[2 * i] = hex[p[i] >> 4];
		out[2 * i + 1] = hex[p[i] & 15];
	}
	out[2 * len] = '\0';
}

int
util_ct_compare(const void *a, const void *b, size_t len)
{
	return CRYPTO_memcmp(a, b, len) == 0 ? 0 : -1;
}

uint64_t
util_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int64_t
util_now(void)
{
	return (int64_t)time(NULL);
}

char *
util_sanitize(const char *s, size_t maxlen)
{
	size_t n = strnlen(s, maxlen), i;
	char *out = xmalloc(n + 1);

	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		out[i] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
	}
	out[n] = '\0';
	return out;
}
