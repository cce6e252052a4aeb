/*
 * smtp_parse.c - bounded, allocation-free parsers used by the inbound SMTP
 * session (smtp_server.c): command splitting, RFC 5321 paths and ESMTP
 * parameters, RFC 3461 xtext, SIZE, the DATA/BDAT byte state machine and
 * the RFC 5322 header section scan with From extraction.
 *
 * Rule throughout: reject rather than repair. A bare CR or LF is an error,
 * never a line end; control bytes never pass through a decoder.
 */
#include "autoconf.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <string.h>
#include <strings.h>

#include "smtp_parse.h"

#define ISDIGIT(c)	((c) >= '0' && (c) <= '9')
#define ISALPHA(c)	(((c) >= 'a' && (c) <= 'z') || ((c) >= 'A' && (c) <= 'Z'))
#define ISALNUM(c)	(ISDIGIT(c) || ISALPHA(c))
#define ISWSP(c)	((c) == ' ' || (c) == '\t')

/* smtp_cmd_split - verb and argument of a command line */
int
smtp_cmd_split(const char *line, size_t len, char *verb, const char **arg_r,
    size_t *arglen_r)
{
	size_t i = 0, v = 0;

	while (i < len && line[i] != ' ') {
		unsigned char c = (unsigned char)line[i];
		if (v + 1 >= SMTP_VERB_MAX || !ISALPHA(c))
			return -1;
		verb[v++] = (char)toupper(c);
		i++;
	}
	verb[v] = '\0';
	if (v == 0)
		return -1;
	while (i < len && line[i] == ' ')
		i++;
	*arg_r = line + i;
	*arglen_r = len - i;
	/* trailing spaces are tolerated (some clients send them) */
	while (*arglen_r > 0 && (*arg_r)[*arglen_r - 1] == ' ')
		(*arglen_r)--;
	return 0;
}

/* smtp_prefix - case-insensitive prefix test over a counted string */
int
smtp_prefix(const char *s, size_t len, const char *prefix)
{
	size_t n = strlen(prefix);

	return len >= n && strncasecmp(s, prefix, n) == 0;
}

/* smtp_valid_utf8 - well-formed UTF-8 (no overlongs, no surrogates) */
int
smtp_valid_utf8(const unsigned char *s, size_t len)
{
	size_t i = 0, n, k;
	uint32_t cp;

	while (i < len) {
		unsigned char c = s[i];
		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) {
			n = 1;
			cp = c & 0x1f;
		} else if (c >= 0xe0 && c <= 0xef) {
			n = 2;
			cp = c & 0x0f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			n = 3;
			cp = c & 0x07;
		} else
			return 0;
		if (i + n >= len)
			return 0;
		for (k = 1; k <= n; k++) {
			if (i + k >= len || (s[i + k] & 0xc0) != 0x80)
				return 0;
			cp = (cp << 6) | (s[i + k] & 0x3f);
		}
		if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
		    (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
			return 0;
		i += n + 1;
	}
	return 1;
}

static int
is_atext(unsigned char c, int utf8)
{
	if (ISALNUM(c))
		return 1;
	if (c >= 0x80)
		return utf8;
	return c != 0 && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL;
}

/* valid_label - RFC 5321 sub-domain: Let-dig [Ldh-str] */
static int
valid_label(const unsigned char *s, size_t len, int utf8)
{
	size_t i;

	if (len == 0 || len > 63)
		return 0;
	for (i = 0; i < len; i++) {
		unsigned char c = s[i];
		if (ISALNUM(c) || (c >= 0x80 && utf8))
			continue;
		if (c == '-' && i != 0 && i != len - 1)
			continue;
		return 0;
	}
	return 1;
}

/* valid_literal - "[IPv4]", "[IPv6:...]" or a general address literal */
static int
valid_literal(const char *s, size_t len)
{
	char buf[DOMAIN_MAX_LEN + 1];
	unsigned char addr[16];
	size_t i, n;

	if (len < 3 || s[0] != '[' || s[len - 1] != ']')
		return 0;
	n = len - 2;
	if (n >= sizeof(buf))
		return 0;
	memcpy(buf, s + 1, n);
	buf[n] = '\0';
	if (inet_pton(AF_INET, buf, addr) == 1)
		return 1;
	if (n > 5 && strncasecmp(buf, "IPv6:", 5) == 0)
		return inet_pton(AF_INET6, buf + 5, addr) == 1;
	/* General-address-literal = Standardized-tag ":" 1*dcontent */
	for (i = 0; i < n && buf[i] != ':'; i++)
		if (!ISALNUM((unsigned char)buf[i]) && buf[i] != '-')
			return 0;
	if (i == 0 || i >= n - 1)
		return 0;
	for (i++; i < n; i++) {
		unsigned char c = (unsigned char)buf[i];
		if (c < 33 || c > 126 || c == '[' || c == '\\' || c == ']')
			return 0;
	}
	return 1;
}

/* smtp_valid_domain - domain name or address literal */
int
smtp_valid_domain(const char *s, size_t len, int allow_utf8)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t start = 0, i;

	if (len == 0)
		return 0;
	if (s[0] == '[')
		return valid_literal(s, len);
	if (len > DOMAIN_MAX_LEN)
		return 0;
	if (allow_utf8 && !smtp_valid_utf8(u, len))
		return 0;
	for (i = 0; i <= len; i++) {
		if (i == len || s[i] == '.') {
			if (!valid_label(u + start, i - start, allow_utf8))
				return 0;
			start = i + 1;
		}
	}
	return 1;
}

/* valid_local - Dot-string or Quoted-string (RFC 5321 4.1.2) */
static int
valid_local(const char *s, size_t len, int utf8)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t i;

	if (len == 0)
		return 0;
	if (u[0] == '"') {
		if (len < 2 || u[len - 1] != '"')
			return 0;
		for (i = 1; i < len - 1; i++) {
			unsigned char c = u[i];
			if (c == '\\') {
				if (i + 1 >= len - 1 || u[i + 1] < 32 ||
				    u[i + 1] > 126)
					return 0;
				i++;
				continue;
			}
			if (c == '"')
				return 0;
			if ((c >= 32 && c <= 126) || (c >= 0x80 && utf8))
				continue;
			return 0;
		}
		return !utf8 || smtp_valid_utf8(u, len);
	}
	if (u[0] == '.' || u[len - 1] == '.')
		return 0;
	for (i = 0; i < len; i++) {
		if (u[i] == '.') {
			if (u[i + 1] == '.')
				return 0;
			continue;
		}
		if (!is_atext(u[i], utf8))
			return 0;
	}
	return !utf8 || smtp_valid_utf8(u, len);
}

/* skip_quoted - from an opening '"' to just past its closing quote, or 0 */
static size_t
skip_quoted(const char *s, size_t len, size_t i)
{
	for (i++; i < len; i++) {
		if (s[i] == '\\') {
			i++;
			continue;
		}
		if (s[i] == '"')
			return i + 1;
	}
	return 0;
}

int
smtp_8bit(const char *p, const char *end)
{
	for (; p < end; p++)
		if ((unsigned char)*p > 127)
			return 1;
	return 0;
}

int
smtp_has_keyword(const char *p, const char *end, const char *kw)
{
	size_t kl = strlen(kw);
	const char *w;

	while (p < end) {
		while (p < end && *p == ' ')
			p++;
		for (w = p; p < end && *p != ' '; p++)
			;
		if ((size_t)(p - w) == kl && strncasecmp(w, kw, kl) == 0)
			return 1;
	}
	return 0;
}

/* smtp_parse_path - "<>" or "<[route:]local@domain>" */
int
smtp_parse_path(const char *s, size_t len, int allow_utf8, int allow_null,
    struct smtp_path *p, size_t *used_r, const char **err_r)
{
	size_t i, gt, at, lstart, dlen, j;

	memset(p, 0, sizeof(*p));
	if (len < 2 || s[0] != '<') {
		*err_r = "address must be enclosed in <>";
		return SMTP_PATH_SYNTAX;
	}
	if (s[1] == '>') {
		if (!allow_null) {
			*err_r = "null address not allowed here";
			return SMTP_PATH_SYNTAX;
		}
		p->null = 1;
		*used_r = 2;
		return SMTP_PATH_OK;
	}
	/* find the closing '>' outside a quoted local part */
	for (gt = 1; gt < len; gt++) {
		if (s[gt] == '"') {
			size_t q = skip_quoted(s, len, gt);
			if (q == 0)
				break;
			gt = q - 1;
			continue;
		}
		if (s[gt] == '>')
			break;
	}
	if (gt >= len) {
		*err_r = "missing '>'";
		return SMTP_PATH_SYNTAX;
	}
	for (j = 1; j < gt; j++) {
		if ((unsigned char)s[j] >= 0x80) {
			p->utf8 = 1;
			if (!allow_utf8) {
				*err_r = "non-ASCII address without SMTPUTF8";
				return SMTP_PATH_UTF8;
			}
		}
	}
	i = 1;
	if (s[i] == '@') {
		/* source route: @a,@b: - syntax-checked, then ignored */
		size_t colon = i;
		while (colon < gt && s[colon] != ':')
			colon++;
		if (colon >= gt) {
			*err_r = "bad source route";
			return SMTP_PATH_SYNTAX;
		}
		while (i < colon) {
			size_t e = i + 1;
			if (s[i] != '@') {
				*err_r = "bad source route";
				return SMTP_PATH_SYNTAX;
			}
			while (e < colon && s[e] != ',')
				e++;
			if (!smtp_valid_domain(s + i + 1, e - i - 1,
			    allow_utf8)) {
				*err_r = "bad source route";
				return SMTP_PATH_SYNTAX;
			}
			i = e < colon ? e + 1 : e;
		}
		i = colon + 1;
	}
	lstart = i;
	if (i < gt && s[i] == '"') {
		size_t q = skip_quoted(s, gt, i);
		if (q == 0) {
			*err_r = "bad quoted local part";
			return SMTP_PATH_SYNTAX;
		}
		at = q;
	} else {
		at = i;
		while (at < gt && s[at] != '@')
			at++;
	}
	if (at >= gt || s[at] != '@') {
		*err_r = "address needs a domain";
		return SMTP_PATH_SYNTAX;
	}
	if (at - lstart > LOCALPART_MAX_LEN) {
		*err_r = "local part too long";
		return SMTP_PATH_TOOLONG;
	}
	if (!valid_local(s + lstart, at - lstart, allow_utf8)) {
		*err_r = "bad local part";
		return SMTP_PATH_SYNTAX;
	}
	dlen = gt - at - 1;
	if (dlen > DOMAIN_MAX_LEN + 2) {
		*err_r = "domain too long";
		return SMTP_PATH_TOOLONG;
	}
	if (!smtp_valid_domain(s + at + 1, dlen, allow_utf8)) {
		*err_r = "bad domain";
		return SMTP_PATH_SYNTAX;
	}
	memcpy(p->local, s + lstart, at - lstart);
	p->local[at - lstart] = '\0';
	memcpy(p->domain, s + at + 1, dlen);
	p->domain[dlen] = '\0';
	*used_r = gt + 1;
	return SMTP_PATH_OK;
}

/* smtp_param_next - next "KEY[=VALUE]" */
int
smtp_param_next(const char **pp, const char *end, struct smtp_param *prm,
    const char **err_r)
{
	const char *p = *pp;

	while (p < end && *p == ' ')
		p++;
	if (p >= end) {
		*pp = p;
		return 0;
	}
	memset(prm, 0, sizeof(*prm));
	prm->key = p;
	while (p < end && *p != ' ' && *p != '=') {
		unsigned char c = (unsigned char)*p;
		if (!ISALNUM(c) && !(c == '-' && p != prm->key)) {
			*err_r = "bad parameter keyword";
			return -1;
		}
		p++;
	}
	prm->keylen = (size_t)(p - prm->key);
	if (prm->keylen == 0) {
		*err_r = "empty parameter keyword";
		return -1;
	}
	if (p < end && *p == '=') {
		prm->val = ++p;
		while (p < end && *p != ' ') {
			unsigned char c = (unsigned char)*p;
			if (c < 33 || c > 126 || c == '=') {
				*err_r = "bad byte in parameter value";
				return -1;
			}
			p++;
		}
		prm->vallen = (size_t)(p - prm->val);
		if (prm->vallen == 0) {
			*err_r = "empty parameter value";
			return -1;
		}
	}
	*pp = p;
	return 1;
}

int
smtp_param_is(const struct smtp_param *prm, const char *key)
{
	return strlen(key) == prm->keylen &&
	    strncasecmp(prm->key, key, prm->keylen) == 0;
}

static int
hexval(unsigned char c)
{
	if (ISDIGIT(c))
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* smtp_xtext_decode - RFC 3461 section 4 */
int
smtp_xtext_decode(const char *in, size_t len, char *out, size_t outlen,
    const char **err_r)
{
	size_t i, o = 0;

	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)in[i];
		if (c == '+') {
			int h, l;
			if (i + 2 >= len) {
				*err_r = "truncated xtext escape";
				return -1;
			}
			h = hexval((unsigned char)in[i + 1]);
			l = hexval((unsigned char)in[i + 2]);
			if (h < 0 || l < 0) {
				*err_r = "bad xtext escape";
				return -1;
			}
			c = (unsigned char)(h * 16 + l);
			i += 2;
			if (c < 0x20 || c == 0x7f) {
				*err_r = "control character in xtext";
				return -1;
			}
		} else if (c < 33 || c > 126 || c == '=') {
			*err_r = "bad byte in xtext";
			return -1;
		}
		if (o + 1 >= outlen) {
			*err_r = "xtext too long";
			return -1;
		}
		out[o++] = (char)c;
	}
	if (outlen == 0) {
		*err_r = "xtext too long";
		return -1;
	}
	out[o] = '\0';
	return 0;
}

/* smtp_parse_size - 1..20 digits into uint64 */
int
smtp_parse_size(const char *s, size_t len, uint64_t *v_r)
{
	uint64_t v = 0;
	size_t i;

	if (len == 0 || len > 20)
		return -1;
	for (i = 0; i < len; i++) {
		unsigned d;
		if (!ISDIGIT((unsigned char)s[i]))
			return -1;
		d = (unsigned)(s[i] - '0');
		if (v > (UINT64_MAX - d) / 10)
			return -1;
		v = v * 10 + d;
	}
	*v_r = v;
	return 0;
}

/* DATA byte states */
enum { DS_BOL, DS_MID, DS_CR, DS_DOT, DS_DOTCR };

void
smtp_data_init(struct smtp_data *d, enum smtp_data_mode mode,
    size_t line_max, size_t header_max)
{
	memset(d, 0, sizeof(*d));
	d->mode = mode;
	d->st = DS_BOL;
	d->in_header = 1;
	d->line_max = line_max;
	d->header_max = header_max;
}

/* data_byte - account one content byte of the current line */
static inline void
data_byte(struct smtp_data *d, unsigned char c, unsigned char *out,
    size_t *o)
{
	out[(*o)++] = c;
	d->size++;
	d->linelen++;
	if (d->linelen + 2 > d->line_max)
		d->flags |= SMTP_DATA_LONGLINE;
	if (d->in_header) {
		if (c == 0)
			d->flags |= SMTP_DATA_NUL;
		if (d->size > d->header_max)
			d->flags |= SMTP_DATA_HDRBIG;
	}
}

/* data_eol - a real CRLF ends the current line */
static inline void
data_eol(struct smtp_data *d, unsigned char *out, size_t *o)
{
	if (d->in_header) {
		if (d->linelen == 0) {
			d->in_header = 0;
			d->header_len = d->size;
		} else if (d->size + 2 > d->header_max)
			d->flags |= SMTP_DATA_HDRBIG;
	}
	out[(*o)++] = '\r';
	out[(*o)++] = '\n';
	d->size += 2;
	d->linelen = 0;
}

/* data_run - n content bytes without CR or LF, in one go: the same
 * accounting as n calls of data_byte (sizes only grow, so checking the
 * limits once at the end of the run sets the same flags) */
static inline void
data_run(struct smtp_data *d, const unsigned char *p, size_t n,
    unsigned char *out, size_t *o)
{
	memcpy(out + *o, p, n);
	*o += n;
	d->size += n;
	d->linelen += n;
	if (d->linelen + 2 > d->line_max)
		d->flags |= SMTP_DATA_LONGLINE;
	if (d->in_header) {
		if (memchr(p, '\0', n) != NULL)
			d->flags |= SMTP_DATA_NUL;
		if (d->size > d->header_max)
			d->flags |= SMTP_DATA_HDRBIG;
	}
}

/* data_bare - a bare CR or LF: flagged, kept as content, never a line end */
static inline void
data_bare(struct smtp_data *d, unsigned char c, unsigned char *out,
    size_t *o)
{
	d->flags |= SMTP_DATA_BARE;
	data_byte(d, c, out, o);
}

size_t
smtp_data_feed(struct smtp_data *d, const unsigned char *in, size_t len,
    unsigned char *out, size_t *outlen_r, int *done_r)
{
	const unsigned char *cr, *lf;
	size_t i, o = 0, end;

	*done_r = 0;
	for (i = 0; i < len; i++) {
		unsigned char c = in[i];

		switch (d->st) {
		case DS_BOL:
			if (c == '.' && d->mode == SMTP_DATA_DOT) {
				d->st = DS_DOT;
				break;
			}
			/* FALLTHROUGH */
		case DS_MID:
			if (c == '\r')
				d->st = DS_CR;
			else if (c == '\n') {
				data_bare(d, c, out, &o);
				d->st = DS_MID;
			} else {
				/* the rest of the line up to its CR or LF */
				cr = memchr(in + i, '\r', len - i);
				end = cr != NULL ? (size_t)(cr - in) : len;
				if ((lf = memchr(in + i, '\n', end - i)) != NULL)
					end = (size_t)(lf - in);
				data_run(d, in + i, end - i, out, &o);
				i = end - 1;
				d->st = DS_MID;
			}
			break;
		case DS_CR:
			if (c == '\n') {
				data_eol(d, out, &o);
				d->st = DS_BOL;
			} else if (c == '\r') {
				data_bare(d, '\r', out, &o);	/* stays CR */
			} else {
				data_bare(d, '\r', out, &o);
				data_byte(d, c, out, &o);
				d->st = DS_MID;
			}
			break;
		case DS_DOT:
			/* the leading dot is removed (transparency) */
			d->linelen++;
			if (c == '\r')
				d->st = DS_DOTCR;
			else if (c == '\n') {
				data_bare(d, c, out, &o);
				d->st = DS_MID;
			} else {
				data_byte(d, c, out, &o);
				d->st = DS_MID;
			}
			break;
		case DS_DOTCR:
			if (c == '\n') {
				/* CRLF "." CRLF: the end */
				if (d->in_header)
					d->header_len = d->size;
				d->in_header = 0;
				d->st = DS_BOL;
				*outlen_r = o;
				*done_r = 1;
				return i + 1;
			}
			data_bare(d, '\r', out, &o);
			if (c == '\r')
				d->st = DS_CR;
			else {
				data_byte(d, c, out, &o);
				d->st = DS_MID;
			}
			break;
		}
	}
	*outlen_r = o;
	return len;
}

void
smtp_data_finish(struct smtp_data *d, unsigned char *out, size_t *outlen_r)
{
	size_t o = 0;

	if (d->st == DS_CR || d->st == DS_DOTCR)
		data_bare(d, '\r', out, &o);
	if (d->st != DS_BOL)
		data_eol(d, out, &o);
	if (d->in_header) {
		d->in_header = 0;
		d->header_len = d->size;
	}
	d->st = DS_BOL;
	*outlen_r = o;
}

/* smtp_header_scan - validate the header section and locate fields */
int
smtp_header_scan(const char *buf, size_t len, struct smtp_hdrinfo *h,
    const char **err_r)
{
	size_t pos = 0, lend, next, i, name_len;
	size_t *cur_off = NULL, *cur_len = NULL;
	int have_field = 0;

	memset(h, 0, sizeof(*h));
	while (pos < len) {
		const char *nl = memchr(buf + pos, '\n', len - pos);
		if (nl == NULL) {
			lend = len;
			next = len;
		} else {
			next = (size_t)(nl - buf) + 1;
			if (next - pos < 2 || buf[next - 2] != '\r') {
				*err_r = "bare LF in header";
				return -1;
			}
			lend = next - 2;
		}
		if (lend == pos) {
			*err_r = "empty line in header section";
			return -1;
		}
		for (i = pos; i < lend; i++) {
			if (buf[i] == '\0' || buf[i] == '\r') {
				*err_r = "NUL or bare CR in header";
				return -1;
			}
		}
		if (ISWSP(buf[pos])) {
			if (!have_field) {
				*err_r = "continuation line without a field";
				return -1;
			}
			if (cur_len != NULL)
				*cur_len = lend - *cur_off;
			pos = next;
			continue;
		}
		for (i = pos; i < lend; i++) {
			unsigned char c = (unsigned char)buf[i];
			if (c == ':' || c < 33 || c > 126)
				break;
		}
		name_len = i - pos;
		while (i < lend && ISWSP(buf[i]))	/* obs-optional */
			i++;
		if (name_len == 0 || i >= lend || buf[i] != ':') {
			*err_r = "header line without a colon";
			return -1;
		}
		have_field = 1;
		h->nfields++;
		cur_off = cur_len = NULL;
		if (name_len == 4 && strncasecmp(buf + pos, "From", 4) == 0) {
			if (h->nfrom++ == 0) {
				cur_off = &h->from_off;
				cur_len = &h->from_len;
			}
		} else if (name_len == 10 &&
		    strncasecmp(buf + pos, "Message-ID", 10) == 0) {
			if (h->nmsgid++ == 0) {
				cur_off = &h->msgid_off;
				cur_len = &h->msgid_len;
			}
		} else if (name_len == 4 &&
		    strncasecmp(buf + pos, "Date", 4) == 0)
			h->ndate++;
		if (cur_off != NULL) {
			*cur_off = i + 1;
			*cur_len = lend - (i + 1);
		}
		pos = next;
	}
	return 0;
}

/* skip_comment - from '(' past its matching ')', or 0 when unterminated */
static size_t
skip_comment(const char *s, size_t len, size_t i)
{
	int depth = 0;

	for (; i < len; i++) {
		if (s[i] == '\\') {
			i++;
			continue;
		}
		if (s[i] == '(')
			depth++;
		else if (s[i] == ')' && --depth == 0)
			return i + 1;
	}
	return 0;
}

#define FROM_BUF (ADDRESS_MAX_LEN + 8)

/* smtp_header_from - the single mailbox address of a From value */
int
smtp_header_from(const char *v, size_t len, char *local, char *domain,
    const char **err_r)
{
	char plain[FROM_BUF], angle[FROM_BUF], *addr;
	size_t pl = 0, al = 0, i = 0, q, at, alen;
	int nmbox = 0, seg = 0, have_angle = 0, gap = 0, spaced = 0;
	int overflow = 0;
	char last = 0;

	while (i < len) {
		char c = v[i];
		if (c == '(') {
			if ((q = skip_comment(v, len, i)) == 0) {
				*err_r = "unterminated comment in From";
				return SMTP_FROM_SYNTAX;
			}
			i = q;
			gap = 1;
			continue;
		}
		if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
			i++;
			gap = 1;
			continue;
		}
		if (c == ',') {
			if (seg)
				nmbox++;
			seg = 0;
			i++;
			continue;
		}
		if (c == ':' || c == ';') {
			*err_r = "group syntax in From";
			return SMTP_FROM_NOTONE;
		}
		if (c == '<') {
			if (have_angle) {
				*err_r = "two addresses in one From mailbox";
				return SMTP_FROM_SYNTAX;
			}
			have_angle = 1;
			seg = 1;
			for (i++; i < len && v[i] != '>'; i++) {
				if (v[i] == '"') {
					q = skip_quoted(v, len, i);
					if (q == 0)
						break;
					if (al + (q - i) >= FROM_BUF)
						overflow = 1;
					else {
						memcpy(angle + al, v + i, q - i);
						al += q - i;
					}
					i = q - 1;
					continue;
				}
				if (v[i] == ' ' || v[i] == '\t' ||
				    v[i] == '\r' || v[i] == '\n')
					continue;
				if (al + 1 >= FROM_BUF)
					overflow = 1;
				else
					angle[al++] = v[i];
			}
			if (i >= len) {
				*err_r = "unterminated <address> in From";
				return SMTP_FROM_SYNTAX;
			}
			i++;
			continue;
		}
		/* a word, a quoted string, '@' or '.' of a plain addr-spec */
		seg = 1;
		if (c == '"') {
			if ((q = skip_quoted(v, len, i)) == 0) {
				*err_r = "unterminated quoted string in From";
				return SMTP_FROM_SYNTAX;
			}
		} else
			q = i + 1;
		if (gap && pl > 0 && last != '.' && last != '@' && c != '.' &&
		    c != '@')
			spaced = 1;
		if (pl + (q - i) >= FROM_BUF)
			overflow = 1;
		else {
			memcpy(plain + pl, v + i, q - i);
			pl += q - i;
		}
		last = v[q - 1];
		gap = 0;
		i = q;
	}
	if (seg)
		nmbox++;
	if (nmbox == 0) {
		*err_r = "empty From";
		return SMTP_FROM_SYNTAX;
	}
	if (nmbox > 1) {
		*err_r = "From holds more than one address";
		return SMTP_FROM_NOTONE;
	}
	if (overflow) {
		*err_r = "From address too long";
		return SMTP_FROM_SYNTAX;
	}
	if (have_angle) {
		addr = angle;
		alen = al;
		/* obs-route "@a,@b:" inside the brackets */
		if (alen > 0 && addr[0] == '@') {
			char *colon = memchr(addr, ':', alen);
			if (colon == NULL) {
				*err_r = "bad route in From";
				return SMTP_FROM_SYNTAX;
			}
			alen -= (size_t)(colon + 1 - addr);
			addr = colon + 1;
		}
	} else {
		if (spaced) {
			*err_r = "From without <address> has several words";
			return SMTP_FROM_SYNTAX;
		}
		addr = plain;
		alen = pl;
	}
	for (at = alen; at > 0 && addr[at - 1] != '@'; at--)
		;
	if (at == 0) {
		*err_r = "From address without a domain";
		return SMTP_FROM_SYNTAX;
	}
	at--;
	if (at == 0 || at > LOCALPART_MAX_LEN ||
	    !valid_local(addr, at, 1)) {
		*err_r = "bad From local part";
		return SMTP_FROM_SYNTAX;
	}
	if (alen - at - 1 > DOMAIN_MAX_LEN ||
	    !smtp_valid_domain(addr + at + 1, alen - at - 1, 1) ||
	    addr[at + 1] == '[') {
		*err_r = "bad From domain";
		return SMTP_FROM_SYNTAX;
	}
	memcpy(local, addr, at);
	local[at] = '\0';
	memcpy(domain, addr + at + 1, alen - at - 1);
	domain[alen - at - 1] = '\0';
	return SMTP_FROM_OK;
}
