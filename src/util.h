/*
 * util.h - generic helpers with nothing mail-specific: allocation that never
 * returns NULL, bounded string copies, base64 (OpenSSL EVP), durations and
 * sizes as written in petrel.conf, random identifiers.
 */
#ifndef PETREL_UTIL_H
#define PETREL_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdarg.h>

#define PRINTFLIKE(f, a) __attribute__((format(printf, f, a)))
#define NORETURN __attribute__((noreturn))
#define nitems(a) (sizeof(a) / sizeof((a)[0]))

void *xmalloc(size_t);
void *xcalloc(size_t, size_t);
void *xrealloc(void *, size_t);
char *xstrdup(const char *);
char *xstrndup(const char *, size_t);
char *xasprintf(const char *, ...) PRINTFLIKE(1, 2);
char *xvasprintf(const char *, va_list);
void fatalx(const char *, ...) PRINTFLIKE(1, 2) NORETURN;

/* strlcpy semantics: returns strlen(src); truncated when >= size */
size_t util_strlcpy(char *dst, const char *src, size_t size);
/* lower-case ASCII in place */
void util_lower(char *);
/* trim ASCII whitespace at both ends, in place; returns s */
char *util_trim(char *s);

/* base64 (no line breaks). encode returns a malloc'd NUL-terminated string.
 * decode returns the decoded length or -1 on malformed input; out must hold
 * at least 3*len/4+3 bytes. */
char *util_b64_encode(const void *data, size_t len);
long util_b64_decode(const char *in, size_t len, unsigned char *out);
/* the URL-safe alphabet ('-' and '_'), without padding (RFC 4648 5), for
 * tokens in URLs; decode takes exactly [A-Za-z0-9_-] */
char *util_b64url_encode(const void *data, size_t len);
long util_b64url_decode(const char *in, size_t len, unsigned char *out);

/* "90", "30s", "5m", "1h", "5d" -> seconds. -1 and *err_r on error. */
int util_parse_duration(const char *s, long *secs_r, const char **err_r);
/* "1000", "10k", "25M", "1G" (binary multiples) -> bytes */
int util_parse_size(const char *s, uint64_t *bytes_r, const char **err_r);
/* plain decimal unsigned with bounds */
int util_parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *v_r,
    const char **err_r);

/* fill buf with cryptographically random bytes (fatal on failure) */
void util_random(void *buf, size_t len);
/* random lower-case base32 string of n chars into buf (buf holds n+1) */
void util_random_id(char *buf, size_t n);
/* hex encode len bytes into out (2*len+1 bytes) */
void util_hex(const void *in, size_t len, char *out);
/* constant-time compare of equal-length buffers; 0 when equal */
int util_ct_compare(const void *a, const void *b, size_t len);

/* monotonic milliseconds and wall-clock seconds */
uint64_t util_now_ms(void);
int64_t util_now(void);

/* JSON string escaping helper for plain-text output of untrusted data:
 * replaces control bytes with '?' into a new string */
char *util_sanitize(const char *s, size_t maxlen);

#endif
