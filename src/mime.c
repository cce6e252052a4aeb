/*
 * mime.c - the MIME builder behind POST /emails:send (http_api.c). Takes
 * the ACS EmailMessage JSON, validates every field first (naming the JSON
 * path of the first offending one, as ACS does), then writes the message:
 * header section (From, To, Cc, Reply-To, Subject, Date, Message-ID,
 * MIME-Version, custom headers) and the body tree
 *
 *   multipart/mixed                  when there are regular attachments
 *     multipart/related              when there are inline (contentId) ones
 *       multipart/alternative        when there are both text and html
 *         text/plain, text/html
 *       inline parts (Content-ID)
 *     attachment parts
 *
 * with every level skipped when it would hold a single part. Nothing here
 * does I/O or keeps state; the message is built in a private evbuffer and
 * moved to the caller's only when complete.
 */
#include "autoconf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <event2/buffer.h>
#include <openssl/evp.h>

#include "domain.h"
#include "limits.h"
#include "mime.h"
#include "smtp_parse.h"
#include "util.h"

#define MIME_MSGID_RANDOM	24	/* base32 chars of the Message-ID */
#define MIME_BOUNDARY_RANDOM	24	/* base32 chars of a boundary */
#define MIME_EW_LINE		76	/* RFC 2047 2: lines holding words */
#define MIME_RFC2231_SEG	60	/* chars per filename*N* section */
#define MIME_SUBJECT_WORD_MAX	MIME_HEADER_VALUE_MAX /* longer: encode */
#define MIME_TARGET_NAME_MAX	80	/* header name shown in a target */

/* Header fields the application may not set through "headers". */
static const char *const mime_reserved[] = {
	"From", "To", "Cc", "Bcc", "Date", "Message-ID", "Sender", "Reply-To",
	"MIME-Version", "Content-Type", "Content-Transfer-Encoding",
	"Received", "DKIM-Signature", "Return-Path", "Subject",
};

struct mime_addr {
	char		*addr;		/* normalised */
	const char	*name;		/* displayName (borrowed), NULL: none */
	size_t		 namelen;
};

struct mime_att {
	const char	*name;		/* borrowed from the JSON */
	size_t		 namelen;
	const char	*ctype;
	const char	*cid;		/* NULL: regular attachment */
	unsigned char	*data;
	size_t		 len;
};

struct mime_text {
	char		*s;		/* CRLF-normalised copy */
	size_t		 len;
	int		 qp;		/* quoted-printable, else 7bit */
};

struct mime_ctx {
	const struct mime_opts *opts;
	int		 rc;
	char		*code, *target, *msg;

	char		*sender, *sender_domain;
	const char	*subject;
	size_t		 subjlen;
	struct mime_text text, html;
	struct mime_addr *to, *cc, *bcc, *rt;
	size_t		 nto, ncc, nbcc, nrt;
	struct mime_att	*att;
	size_t		 natt, ninline;
	const json_t	*headers;
	int		 tracking_disabled;
	char		 bnd[64];	/* boundary base; levels add ".N" */
};

/* Header field writer: tracks the column for folding. */
struct mime_hw {
	struct evbuffer	*b;
	size_t		 col;		/* octets on the current line */
	size_t		 ntok;		/* tokens written in this field */
	int		 ewline;	/* current line holds an encoded word */
};

/* mime_fail - record the first error; returns -1 */
static int PRINTFLIKE(4, 5)
mime_fail(struct mime_ctx *c, int rc, char *target, const char *fmt, ...)
{
	va_list ap;

	if (c->msg != NULL) {
		free(target);
		return -1;
	}
	c->rc = rc;
	c->code = xstrdup(rc == MIME_ETOOBIG ? "RequestEntityTooLarge" :
	    "BadRequest");
	c->target = target;
	va_start(ap, fmt);
	c->msg = xvasprintf(fmt, ap);
	va_end(ap);
	return -1;
}

/* mime_path - "prefix.key" (or "key" without prefix), malloc'd */
static char *
mime_path(const char *prefix, const char *key)
{
	if (prefix == NULL)
		return xstrdup(key);
	return xasprintf("%s.%s", prefix, key);
}

/* mime_u8len - length of the UTF-8 sequence starting with byte c */
static size_t
mime_u8len(unsigned char c)
{
	if (c < 0xc0)
		return 1;
	if (c < 0xe0)
		return 2;
	if (c < 0xf0)
		return 3;
	if (c < 0xf8)
		return 4;
	return 1;
}

/* mime_is_atext - RFC 5322 atext */
static int
mime_is_atext(unsigned char c)
{
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	    (c >= '0' && c <= '9'))
		return 1;
	return c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL;
}

/* mime_is_token - RFC 2045 token character */
static int
mime_is_token(unsigned char c)
{
	return c > 0x20 && c < 0x7f && strchr("()<>@,;:\\\"/[]?=", c) == NULL;
}

/* mime_check_text - well-formed UTF-8 without NUL, CR, LF or other control
 * bytes (tab allowed when tab is set). NULL when fine, else the reason. */
static const char *
mime_check_text(const char *s, size_t len, int tab)
{
	size_t i;

	for (i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)s[i];

		if (ch == '\0')
			return "must not contain NUL bytes";
		if (ch == '\r' || ch == '\n')
			return "must not contain CR or LF";
		if ((ch < 0x20 && !(tab && ch == '\t')) || ch == 0x7f)
			return "must not contain control characters";
	}
	if (!smtp_valid_utf8((const unsigned char *)s, len))
		return "must be valid UTF-8";
	return NULL;
}

/* ---------------------------------------------------------------------
 * Encoders
 */

/* mime_qp_encode - see mime.h */
void
mime_qp_encode(const unsigned char *s, size_t len, struct evbuffer *out)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t i, col = 0, eol;
	char rep[3];
	size_t rlen;

	for (i = 0; i < len; i++) {
		unsigned char ch = s[i];
		int last;

		if (ch == '\r' && i + 1 < len && s[i + 1] == '\n') {
			evbuffer_add(out, "\r\n", 2);
			col = 0;
			i++;
			continue;
		}
		/* last character of its line (before CRLF or the end)? */
		eol = i + 1;
		last = eol == len || (s[eol] == '\r' && eol + 1 < len &&
		    s[eol + 1] == '\n');
		if ((ch >= 33 && ch <= 126 && ch != '=') ||
		    ((ch == ' ' || ch == '\t') && !last)) {
			rep[0] = (char)ch;
			rlen = 1;
		} else {
			rep[0] = '=';
			rep[1] = hex[ch >> 4];
			rep[2] = hex[ch & 0x0f];
			rlen = 3;
		}
		/* a line holds at most MIME_QP_COL characters, the soft
		 * break's '=' included, so only a line's last character may
		 * reach the final column */
		if (col + rlen > (last ? MIME_QP_COL : MIME_QP_COL - 1)) {
			evbuffer_add(out, "=\r\n", 3);
			col = 0;
		}
		evbuffer_add(out, rep, rlen);
		col += rlen;
	}
}

/* mime_b64_encode - see mime.h */
void
mime_b64_encode(const unsigned char *s, size_t len, struct evbuffer *out)
{
	unsigned char line[MIME_B64_COL + 3];
	size_t i, n;
	int w;

	for (i = 0; i < len; i += n) {
		n = len - i < MIME_B64_COL / 4 * 3 ? len - i :
		    MIME_B64_COL / 4 * 3;
		w = EVP_EncodeBlock(line, s + i, (int)n);
		line[w++] = '\r';
		line[w++] = '\n';
		evbuffer_add(out, line, (size_t)w);
	}
}

/* mime_q_safe - RFC 2047 5(3): characters a Q word may carry as is */
static int
mime_q_safe(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	    (c >= '0' && c <= '9') || c == '!' || c == '*' || c == '+' ||
	    c == '-' || c == '/';
}

/* mime_ew_next - see mime.h */
size_t
mime_ew_next(const unsigned char *s, size_t len, size_t *pos, int b,
    size_t maxlen, char *out)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t i = *pos, j, o, budget, clen, k, q;

	if (maxlen > MIME_EW_MAX)
		maxlen = MIME_EW_MAX;
	if (maxlen < MIME_EW_MIN)
		fatalx("mime_ew_next: maxlen %zu too small", maxlen);
	budget = maxlen - 12;		/* "=?utf-8?x?" + "?=" */
	memcpy(out, b ? "=?utf-8?b?" : "=?utf-8?q?", 10);
	o = 10;
	j = i;
	if (b) {
		size_t maxbytes = budget / 4 * 3;

		while (j < len) {
			clen = mime_u8len(s[j]);
			if (clen > len - j)
				clen = len - j;
			if (j + clen - i > maxbytes)
				break;
			j += clen;
		}
		o += (size_t)EVP_EncodeBlock((unsigned char *)out + o, s + i,
		    (int)(j - i));
	} else {
		while (j < len) {
			clen = mime_u8len(s[j]);
			if (clen > len - j)
				clen = len - j;
			for (q = 0, k = 0; k < clen; k++)
				q += mime_q_safe(s[j + k]) || s[j + k] == ' ' ?
				    1 : 3;
			if (o - 10 + q > budget)
				break;
			for (k = 0; k < clen; k++) {
				unsigned char ch = s[j + k];

				if (ch == ' ')
					out[o++] = '_';
				else if (mime_q_safe(ch))
					out[o++] = (char)ch;
				else {
					out[o++] = '=';
					out[o++] = hex[ch >> 4];
					out[o++] = hex[ch & 0x0f];
				}
			}
			j += clen;
		}
	}
	out[o++] = '?';
	out[o++] = '=';
	out[o] = '\0';
	*pos = j;
	return o;
}

/* mime_ew_use_b - B when it is shorter than Q for this text */
static int
mime_ew_use_b(const unsigned char *s, size_t len)
{
	size_t i, q = 0;

	for (i = 0; i < len; i++)
		q += mime_q_safe(s[i]) || s[i] == ' ' ? 1 : 3;
	return q > (len + 2) / 3 * 4;
}

/* mime_valid_addr - see mime.h */
int
mime_valid_addr(const char *addr, size_t len, char **norm_r,
    char **domain_r, const char **err_r)
{
	char dom[1024], norm[DOMAIN_MAX_LEN + 1];
	size_t i, at, dlen;

	*norm_r = NULL;
	if (domain_r != NULL)
		*domain_r = NULL;
	if (len == 0) {
		*err_r = "empty address";
		return -1;
	}
	if (len > ADDRESS_MAX_LEN + 64) {
		*err_r = "address too long";
		return -1;
	}
	if (addr[0] == '"') {
		/* quoted-string: qtext, space, tab and quoted-pairs */
		for (i = 1; i < len && addr[i] != '"'; i++) {
			unsigned char ch = (unsigned char)addr[i];

			if (ch == '\\') {
				if (++i >= len)
					break;
				ch = (unsigned char)addr[i];
				if ((ch < 0x20 && ch != '\t') || ch >= 0x7f) {
					*err_r = "invalid quoted-pair in local"
					    " part";
					return -1;
				}
				continue;
			}
			if (ch >= 0x80) {
				*err_r = "non-ASCII local part is not "
				    "supported";
				return -1;
			}
			if ((ch < 0x20 && ch != '\t') || ch == 0x7f) {
				*err_r = "control character in local part";
				return -1;
			}
		}
		if (i >= len) {
			*err_r = "unterminated quoted local part";
			return -1;
		}
		at = i + 1;
		if (at >= len || addr[at] != '@') {
			*err_r = "missing '@' after quoted local part";
			return -1;
		}
		if (at == 2) {
			*err_r = "empty quoted local part";
			return -1;
		}
	} else {
		for (at = 0; at < len && addr[at] != '@'; at++) {
			unsigned char ch = (unsigned char)addr[at];

			if (ch >= 0x80) {
				*err_r = "non-ASCII local part is not "
				    "supported";
				return -1;
			}
			if (ch == '.') {
				if (at == 0 || addr[at - 1] == '.') {
					*err_r = "misplaced '.' in local part";
					return -1;
				}
			} else if (!mime_is_atext(ch)) {
				*err_r = "invalid character in local part";
				return -1;
			}
		}
		if (at == len) {
			*err_r = "missing '@'";
			return -1;
		}
		if (at == 0) {
			*err_r = "empty local part";
			return -1;
		}
		if (addr[at - 1] == '.') {
			*err_r = "misplaced '.' in local part";
			return -1;
		}
	}
	if (at > LOCALPART_MAX_LEN) {
		*err_r = "local part too long (max 64 characters)";
		return -1;
	}
	dlen = len - at - 1;
	if (dlen == 0) {
		*err_r = "empty domain";
		return -1;
	}
	if (addr[at + 1] == '[') {
		*err_r = "address literals are not supported";
		return -1;
	}
	if (dlen >= sizeof(dom)) {
		*err_r = "domain too long";
		return -1;
	}
	memcpy(dom, addr + at + 1, dlen);
	dom[dlen] = '\0';
	if (memchr(dom, '\0', dlen) != NULL || memchr(dom, '@', dlen) != NULL) {
		*err_r = "invalid character in domain";
		return -1;
	}
	if (domain_normalize(dom, norm, sizeof(norm), err_r) == -1)
		return -1;
	*norm_r = xasprintf("%.*s@%s", (int)at, addr, norm);
	if (domain_r != NULL)
		*domain_r = xstrdup(norm);
	return 0;
}

/* ---------------------------------------------------------------------
 * Validation
 */

/* mime_get_string - obj[key] as a string. Absent or null: *s_r = NULL and
 * an error when required. Wrong type: error. */
static int
mime_get_string(struct mime_ctx *c, const json_t *obj, const char *prefix,
    const char *key, int required, const char **s_r, size_t *len_r)
{
	json_t *v = json_object_get(obj, key);

	*s_r = NULL;
	*len_r = 0;
	if (v == NULL || json_is_null(v)) {
		if (required)
			return mime_fail(c, MIME_EINVAL, mime_path(prefix, key),
			    "%s is required", key);
		return 0;
	}
	if (!json_is_string(v))
		return mime_fail(c, MIME_EINVAL, mime_path(prefix, key),
		    "%s must be a string", key);
	*s_r = json_string_value(v);
	*len_r = json_string_length(v);
	return 0;
}

/* mime_addrs - an array of {address, displayName} at path */
static int
mime_addrs(struct mime_ctx *c, const json_t *v, const char *path,
    size_t max, struct mime_addr **list_r, size_t *n_r)
{
	struct mime_addr *list;
	const char *err, *s;
	size_t i, n, len;
	char *p;

	if (v == NULL || json_is_null(v))
		return 0;
	if (!json_is_array(v))
		return mime_fail(c, MIME_EINVAL, xstrdup(path),
		    "%s must be an array", path);
	n = json_array_size(v);
	if (n > max)
		return mime_fail(c, MIME_EINVAL, xstrdup(path),
		    "too many addresses in %s (max %zu)", path, max);
	*list_r = list = xcalloc(n ? n : 1, sizeof(*list));
	for (i = 0; i < n; i++) {
		const json_t *e = json_array_get(v, i);
		int rc;

		p = xasprintf("%s[%zu]", path, i);
		if (!json_is_object(e)) {
			rc = mime_fail(c, MIME_EINVAL, p, "%s must be an object"
			    " with an address", p);
			return rc;
		}
		if (mime_get_string(c, e, p, "address", 1, &s, &len) == -1) {
			free(p);
			return -1;
		}
		if (mime_valid_addr(s, len, &list[i].addr, NULL, &err) == -1) {
			rc = mime_fail(c, MIME_EINVAL,
			    mime_path(p, "address"), "invalid email address: "
			    "%s", err);
			free(p);
			return rc;
		}
		(*n_r)++;
		if (mime_get_string(c, e, p, "displayName", 0, &s, &len) ==
		    -1) {
			free(p);
			return -1;
		}
		if (s != NULL && len > 0) {
			if (len > MIME_DISPLAY_NAME_MAX) {
				rc = mime_fail(c, MIME_EINVAL,
				    mime_path(p, "displayName"), "displayName "
				    "too long (max %d bytes)",
				    MIME_DISPLAY_NAME_MAX);
				free(p);
				return rc;
			}
			if ((err = mime_check_text(s, len, 0)) != NULL) {
				rc = mime_fail(c, MIME_EINVAL,
				    mime_path(p, "displayName"), "displayName "
				    "%s", err);
				free(p);
				return rc;
			}
			list[i].name = s;
			list[i].namelen = len;
		}
		free(p);
	}
	return 0;
}

/* mime_body_text - CRLF-normalised copy of a body and its encoding */
static void
mime_body_text(const char *s, size_t len, struct mime_text *t)
{
	size_t i, o = 0, col = 0;
	int qp = 0;

	t->s = xmalloc(2 * len + 1);
	for (i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)s[i];

		if (ch == '\r' || ch == '\n') {
			if (ch == '\r' && i + 1 < len && s[i + 1] == '\n')
				i++;
			if (o > 0 && (t->s[o - 1] == ' ' ||
			    t->s[o - 1] == '\t'))
				qp = 1;		/* trailing white space */
			t->s[o++] = '\r';
			t->s[o++] = '\n';
			col = 0;
			continue;
		}
		if (ch >= 0x80 || (ch < 0x20 && ch != '\t') || ch == 0x7f)
			qp = 1;
		if (++col > MIME_FOLD_COL)
			qp = 1;
		t->s[o++] = (char)ch;
	}
	if (o > 0 && (t->s[o - 1] == ' ' || t->s[o - 1] == '\t'))
		qp = 1;
	t->s[o] = '\0';
	t->len = o;
	t->qp = qp;
}

/* mime_content - content{subject, plainText, html} */
static int
mime_content(struct mime_ctx *c, const json_t *root)
{
	const json_t *content = json_object_get(root, "content");
	const char *s, *err;
	size_t len;

	if (content == NULL || json_is_null(content))
		return mime_fail(c, MIME_EINVAL, xstrdup("content"),
		    "content is required");
	if (!json_is_object(content))
		return mime_fail(c, MIME_EINVAL, xstrdup("content"),
		    "content must be an object");
	if (mime_get_string(c, content, "content", "subject", 1, &c->subject,
	    &c->subjlen) == -1)
		return -1;
	if (c->subjlen > MIME_SUBJECT_MAX)
		return mime_fail(c, MIME_EINVAL, xstrdup("content.subject"),
		    "subject too long (max %d bytes)", MIME_SUBJECT_MAX);
	if ((err = mime_check_text(c->subject, c->subjlen, 1)) != NULL)
		return mime_fail(c, MIME_EINVAL, xstrdup("content.subject"),
		    "subject %s", err);

	if (mime_get_string(c, content, "content", "plainText", 0, &s, &len)
	    == -1)
		return -1;
	if (s != NULL && len > MIME_BODY_MAX)
		return mime_fail(c, MIME_ETOOBIG, xstrdup("content.plainText"),
		    "plainText too large (max %d bytes)", MIME_BODY_MAX);
	if (s != NULL && memchr(s, '\0', len) != NULL)
		return mime_fail(c, MIME_EINVAL, xstrdup("content.plainText"),
		    "plainText must not contain NUL bytes");
	if (s != NULL && len > 0)
		mime_body_text(s, len, &c->text);

	if (mime_get_string(c, content, "content", "html", 0, &s, &len) == -1)
		return -1;
	if (s != NULL && len > MIME_BODY_MAX)
		return mime_fail(c, MIME_ETOOBIG, xstrdup("content.html"),
		    "html too large (max %d bytes)", MIME_BODY_MAX);
	if (s != NULL && memchr(s, '\0', len) != NULL)
		return mime_fail(c, MIME_EINVAL, xstrdup("content.html"),
		    "html must not contain NUL bytes");
	if (s != NULL && len > 0)
		mime_body_text(s, len, &c->html);

	if (c->text.s == NULL && c->html.s == NULL)
		return mime_fail(c, MIME_EINVAL, xstrdup("content"),
		    "content needs plainText or html (or both)");
	return 0;
}

/* mime_recipients - recipients{to, cc, bcc} */
static int
mime_recipients(struct mime_ctx *c, const json_t *root)
{
	const json_t *r = json_object_get(root, "recipients");
	size_t max = c->opts->max_rcpts ? c->opts->max_rcpts : MIME_RCPT_MAX;

	if (r == NULL || json_is_null(r))
		return mime_fail(c, MIME_EINVAL, xstrdup("recipients"),
		    "recipients is required");
	if (!json_is_object(r))
		return mime_fail(c, MIME_EINVAL, xstrdup("recipients"),
		    "recipients must be an object");
	if (mime_addrs(c, json_object_get(r, "to"), "recipients.to", max,
	    &c->to, &c->nto) == -1 ||
	    mime_addrs(c, json_object_get(r, "cc"), "recipients.cc", max,
	    &c->cc, &c->ncc) == -1 ||
	    mime_addrs(c, json_object_get(r, "bcc"), "recipients.bcc", max,
	    &c->bcc, &c->nbcc) == -1)
		return -1;
	if (c->nto + c->ncc + c->nbcc == 0)
		return mime_fail(c, MIME_EINVAL, xstrdup("recipients"),
		    "at least one recipient (to, cc or bcc) is required");
	if (c->nto + c->ncc + c->nbcc > max)
		return mime_fail(c, MIME_EINVAL, xstrdup("recipients"),
		    "too many recipients: %zu (max %zu)",
		    c->nto + c->ncc + c->nbcc, max);
	return 0;
}

/* mime_valid_ctype - "type/subtype" of RFC 2045 tokens */
static int
mime_valid_ctype(const char *s, size_t len)
{
	size_t i, slash = 0, nslash = 0;

	if (len == 0 || len > MIME_CONTENT_TYPE_MAX)
		return 0;
	for (i = 0; i < len; i++) {
		if (s[i] == '/') {
			slash = i;
			nslash++;
		} else if (!mime_is_token((unsigned char)s[i]))
			return 0;
	}
	return nslash == 1 && slash > 0 && slash < len - 1;
}

/* mime_valid_cid - contentId: atext, '.' and '@' */
static int
mime_valid_cid(const char *s, size_t len)
{
	size_t i;

	if (len == 0 || len > MIME_CONTENT_ID_MAX)
		return 0;
	for (i = 0; i < len; i++)
		if (!mime_is_atext((unsigned char)s[i]) && s[i] != '.' &&
		    s[i] != '@')
			return 0;
	return 1;
}

/* mime_attachment - one element of attachments[] */
static int
mime_attachment(struct mime_ctx *c, const json_t *e, const char *p,
    struct mime_att *a, size_t *total)
{
	size_t max = c->opts->max_attach ? c->opts->max_attach :
	    MIME_ATTACH_MAX;
	const char *s, *err;
	size_t len, i;
	long n;

	if (!json_is_object(e))
		return mime_fail(c, MIME_EINVAL, xstrdup(p),
		    "%s must be an object", p);
	if (mime_get_string(c, e, p, "name", 1, &a->name, &a->namelen) == -1)
		return -1;
	if (a->namelen == 0 || a->namelen > MIME_FILENAME_MAX)
		return mime_fail(c, MIME_EINVAL, mime_path(p, "name"),
		    "name must be 1 to %d bytes", MIME_FILENAME_MAX);
	if ((err = mime_check_text(a->name, a->namelen, 0)) != NULL)
		return mime_fail(c, MIME_EINVAL, mime_path(p, "name"),
		    "name %s", err);

	if (mime_get_string(c, e, p, "contentType", 1, &a->ctype, &len) == -1)
		return -1;
	if (!mime_valid_ctype(a->ctype, len))
		return mime_fail(c, MIME_EINVAL, mime_path(p, "contentType"),
		    "contentType must be a MIME type such as "
		    "application/pdf");

	if (mime_get_string(c, e, p, "contentId", 0, &s, &len) == -1)
		return -1;
	if (s != NULL) {
		if (!mime_valid_cid(s, len))
			return mime_fail(c, MIME_EINVAL,
			    mime_path(p, "contentId"), "contentId must be 1 to"
			    " %d characters of letters, digits and "
			    "!#$%%&'*+-/=?^_`{|}~.@", MIME_CONTENT_ID_MAX);
		for (i = 0; a != c->att + i; i++)
			if (c->att[i].cid != NULL &&
			    strcmp(c->att[i].cid, s) == 0)
				return mime_fail(c, MIME_EINVAL,
				    mime_path(p, "contentId"),
				    "duplicate contentId");
		a->cid = s;
	}

	if (mime_get_string(c, e, p, "contentInBase64", 1, &s, &len) == -1)
		return -1;
	/* bound before allocating: decoded size is at most 3/4 of it */
	if (len / 4 * 3 > max - *total + 2)
		return mime_fail(c, MIME_ETOOBIG,
		    mime_path(p, "contentInBase64"), "attachments exceed the "
		    "limit of %zu bytes", max);
	a->data = xmalloc(len / 4 * 3 + 3);
	if ((n = util_b64_decode(s, len, a->data)) < 0)
		return mime_fail(c, MIME_EINVAL,
		    mime_path(p, "contentInBase64"), "contentInBase64 is not "
		    "valid base64");
	a->len = (size_t)n;
	if (a->len > max - *total)
		return mime_fail(c, MIME_ETOOBIG,
		    mime_path(p, "contentInBase64"), "attachments exceed the "
		    "limit of %zu bytes", max);
	*total += a->len;
	return 0;
}

/* mime_attachments - attachments[] */
static int
mime_attachments(struct mime_ctx *c, const json_t *root)
{
	const json_t *v = json_object_get(root, "attachments");
	size_t i, n, total = 0;
	char *p;
	int rc;

	if (v == NULL || json_is_null(v))
		return 0;
	if (!json_is_array(v))
		return mime_fail(c, MIME_EINVAL, xstrdup("attachments"),
		    "attachments must be an array");
	n = json_array_size(v);
	if (n > MIME_ATTACH_COUNT_MAX)
		return mime_fail(c, MIME_EINVAL, xstrdup("attachments"),
		    "too many attachments (max %d)", MIME_ATTACH_COUNT_MAX);
	c->att = xcalloc(n ? n : 1, sizeof(*c->att));
	for (i = 0; i < n; i++) {
		p = xasprintf("attachments[%zu]", i);
		c->natt++;
		rc = mime_attachment(c, json_array_get(v, i), p, &c->att[i],
		    &total);
		free(p);
		if (rc == -1)
			return -1;
		if (c->att[i].cid != NULL)
			c->ninline++;
	}
	return 0;
}

/* mime_header_target - "headers.NAME", the name sanitised and bounded */
static char *
mime_header_target(const char *name)
{
	char *s = util_sanitize(name, MIME_TARGET_NAME_MAX), *t;

	t = xasprintf("headers.%s", s);
	free(s);
	return t;
}

/* mime_custom_headers - headers{} */
static int
mime_custom_headers(struct mime_ctx *c, const json_t *root)
{
	const json_t *h = json_object_get(root, "headers");
	const char *key, *err, *s;
	json_t *v;
	size_t i, len, n;

	if (h == NULL || json_is_null(h))
		return 0;
	if (!json_is_object(h))
		return mime_fail(c, MIME_EINVAL, xstrdup("headers"),
		    "headers must be an object");
	if (json_object_size(h) > MIME_HEADERS_MAX)
		return mime_fail(c, MIME_EINVAL, xstrdup("headers"),
		    "too many headers (max %d)", MIME_HEADERS_MAX);
	json_object_foreach((json_t *)h, key, v) {
		n = strlen(key);
		if (n == 0 || n > MIME_HEADER_NAME_MAX)
			return mime_fail(c, MIME_EINVAL,
			    mime_header_target(key), "header name must be 1 to"
			    " %d characters", MIME_HEADER_NAME_MAX);
		for (i = 0; i < n; i++)
			if ((unsigned char)key[i] < 33 ||
			    (unsigned char)key[i] > 126 || key[i] == ':')
				return mime_fail(c, MIME_EINVAL,
				    mime_header_target(key), "header name may"
				    " hold printable ASCII except ':' only");
		for (i = 0; i < nitems(mime_reserved); i++)
			if (strcasecmp(key, mime_reserved[i]) == 0)
				return mime_fail(c, MIME_EINVAL,
				    mime_header_target(key), "header %s may "
				    "not be set", mime_reserved[i]);
		if (strncasecmp(key, "Content-", 8) == 0)
			return mime_fail(c, MIME_EINVAL,
			    mime_header_target(key), "Content-* headers may "
			    "not be set");
		if (!json_is_string(v))
			return mime_fail(c, MIME_EINVAL,
			    mime_header_target(key), "header value must be a "
			    "string");
		s = json_string_value(v);
		len = json_string_length(v);
		if (len > MIME_HEADER_VALUE_MAX)
			return mime_fail(c, MIME_EINVAL,
			    mime_header_target(key), "header value too long "
			    "(max %d bytes)", MIME_HEADER_VALUE_MAX);
		if ((err = mime_check_text(s, len, 1)) != NULL)
			return mime_fail(c, MIME_EINVAL,
			    mime_header_target(key), "header value %s", err);
	}
	c->headers = h;
	return 0;
}

/* mime_validate - every field, in document order of the ACS schema */
static int
mime_validate(struct mime_ctx *c, const json_t *root)
{
	const json_t *v;
	const char *s, *err;
	size_t len;

	if (!json_is_object(root))
		return mime_fail(c, MIME_EINVAL, NULL,
		    "the request body must be a JSON object");
	if (mime_get_string(c, root, NULL, "senderAddress", 1, &s, &len) == -1)
		return -1;
	if (mime_valid_addr(s, len, &c->sender, &c->sender_domain, &err) == -1)
		return mime_fail(c, MIME_EINVAL, xstrdup("senderAddress"),
		    "invalid senderAddress: %s", err);
	if (mime_content(c, root) == -1 || mime_recipients(c, root) == -1)
		return -1;
	if (mime_addrs(c, json_object_get(root, "replyTo"), "replyTo",
	    MIME_REPLYTO_MAX, &c->rt, &c->nrt) == -1)
		return -1;
	if (mime_attachments(c, root) == -1 ||
	    mime_custom_headers(c, root) == -1)
		return -1;
	v = json_object_get(root, "userEngagementTrackingDisabled");
	if (v != NULL && !json_is_null(v)) {
		if (!json_is_boolean(v))
			return mime_fail(c, MIME_EINVAL,
			    xstrdup("userEngagementTrackingDisabled"),
			    "userEngagementTrackingDisabled must be a "
			    "boolean");
		c->tracking_disabled = json_is_true(v);
	}
	return 0;
}

/* ---------------------------------------------------------------------
 * Header fields
 */

/* mime_hw_start - begin field "name:" */
static void
mime_hw_start(struct mime_hw *h, struct evbuffer *b, const char *name)
{
	h->b = b;
	evbuffer_add_printf(b, "%s:", name);
	h->col = strlen(name) + 1;
	h->ntok = 0;
	h->ewline = 0;
}

/* mime_hw_fold - continue the field on a new line */
static void
mime_hw_fold(struct mime_hw *h)
{
	evbuffer_add(h->b, "\r\n", 2);
	h->col = 0;
	h->ewline = 0;
}

/* mime_hw_tok_r - " token", folding first when it (and reserve more
 * characters glued after it) would pass the column */
static void
mime_hw_tok_r(struct mime_hw *h, const char *t, size_t len, size_t reserve)
{
	size_t lim = h->ewline ? MIME_EW_LINE : MIME_FOLD_COL;

	if (h->ntok > 0 && h->col + 1 + len + reserve > lim)
		mime_hw_fold(h);
	evbuffer_add(h->b, " ", 1);
	evbuffer_add(h->b, t, len);
	h->col += 1 + len;
	h->ntok++;
}

/* mime_hw_tok - " token", folding first when it would pass the column */
static void
mime_hw_tok(struct mime_hw *h, const char *t, size_t len)
{
	mime_hw_tok_r(h, t, len, 0);
}

/* mime_hw_glue - text attached to the previous token (",") */
static void
mime_hw_glue(struct mime_hw *h, const char *t, size_t len)
{
	evbuffer_add(h->b, t, len);
	h->col += len;
}

/* mime_ew_len - length of s[0..len) as one encoded word */
static size_t
mime_ew_len(const unsigned char *s, size_t len, int b)
{
	size_t i, q = 0;

	if (b)
		return 12 + (len + 2) / 3 * 4;
	for (i = 0; i < len; i++)
		q += mime_q_safe(s[i]) || s[i] == ' ' ? 1 : 3;
	return 12 + q;
}

/* mime_hw_words - s as RFC 2047 encoded words, lines <= 76 characters
 * with one column kept for a following ','. When the rest fits in one
 * word on a fresh line but not on this one, fold rather than split: a
 * split leaves adjacent encoded words, whose separating white space RFC
 * 2047 6.2 readers drop but some (Python's address parser) keep. In a
 * phrase even the first word may go to the next line. */
static void
mime_hw_words(struct mime_hw *h, const char *s, size_t len, int phrase)
{
	const unsigned char *u = (const unsigned char *)s;
	char word[MIME_EW_MAX + 1];
	size_t pos = 0, avail, n, need;
	int b = mime_ew_use_b(u, len);

	while (pos < len) {
		avail = h->col + 2 < MIME_EW_LINE ?
		    MIME_EW_LINE - h->col - 2 : 0;
		need = mime_ew_len(u + pos, len - pos, b);
		if (avail < MIME_EW_MIN || ((h->ntok > 0 || phrase) &&
		    need > avail && need <= MIME_EW_LINE - 2)) {
			mime_hw_fold(h);
			avail = MIME_EW_LINE - 2;
		}
		n = mime_ew_next(u, len, &pos, b, avail, word);
		evbuffer_add(h->b, " ", 1);
		evbuffer_add(h->b, word, n);
		h->col += 1 + n;
		h->ntok++;
		h->ewline = 1;
	}
}

/* mime_hw_text - unstructured ASCII text, folded before white space that
 * precedes a word when the line would pass MIME_FOLD_COL */
static void
mime_hw_text(struct mime_hw *h, const char *s, size_t len)
{
	size_t i = 0, j, k;

	if (len > 0) {
		evbuffer_add(h->b, " ", 1);
		h->col++;
	}
	while (i < len) {
		for (j = i; j < len && (s[j] == ' ' || s[j] == '\t'); j++)
			;
		for (k = j; k < len && s[k] != ' ' && s[k] != '\t'; k++)
			;
		if (j > i && k > j && h->ntok > 0 &&
		    h->col + (k - i) > MIME_FOLD_COL) {
			mime_hw_fold(h);
		}
		evbuffer_add(h->b, s + i, k - i);
		h->col += k - i;
		h->ntok++;
		i = k;
	}
}

/* mime_needs_ew - text that must go out as encoded words: non-ASCII,
 * something that would read as an encoded word, or a word too long to
 * fold */
static int
mime_needs_ew(const char *s, size_t len, size_t maxword)
{
	size_t i, run = 0;

	for (i = 0; i < len; i++) {
		if ((unsigned char)s[i] >= 0x80)
			return 1;
		if (s[i] == '=' && i + 1 < len && s[i + 1] == '?')
			return 1;
		run = s[i] == ' ' || s[i] == '\t' ? 0 : run + 1;
		if (run > maxword)
			return 1;
	}
	return 0;
}

/* mime_hw_unstructured - an unstructured value (Subject, custom headers) */
static void
mime_hw_unstructured(struct mime_hw *h, const char *s, size_t len)
{
	if (mime_needs_ew(s, len, MIME_SUBJECT_WORD_MAX))
		mime_hw_words(h, s, len, 0);
	else
		mime_hw_text(h, s, len);
}

/* mime_plain_atom - an ASCII word that can stand as an atom */
static int
mime_plain_atom(const char *s, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++)
		if (!mime_is_atext((unsigned char)s[i]))
			return 0;
	return len > 0 && !mime_needs_ew(s, len, MIME_DISPLAY_NAME_MAX);
}

/* mime_hw_phrase - a display name: atoms, a quoted-string, or, with
 * non-ASCII text, encoded words for the runs of words that need them and
 * plain atoms between (short runs keep to one word each) */
static void
mime_hw_phrase(struct mime_hw *h, const char *s, size_t len)
{
	size_t i, j, k, m;
	int atoms = 1, spaces = 0;
	char *q;

	for (i = 0; i < len; i++) {
		if (s[i] == ' ') {
			if (i == 0 || i == len - 1 || s[i - 1] == ' ')
				atoms = 0, spaces = 1;
		} else if (s[i] == '\t')
			atoms = 0, spaces = 1;
		else if (!mime_is_atext((unsigned char)s[i]))
			atoms = 0;
	}
	if (mime_needs_ew(s, len, MIME_DISPLAY_NAME_MAX) ||
	    memchr(s, '\t', len) != NULL) {
		if (spaces) {
			/* white space that words cannot carry */
			mime_hw_words(h, s, len, 1);
			return;
		}
		for (i = 0; i < len; i = k + 1) {
			for (j = i; j < len && s[j] != ' '; j++)
				;
			if (mime_plain_atom(s + i, j - i)) {
				mime_hw_tok(h, s + i, j - i);
				k = j;
				continue;
			}
			/* extend the run over words that are no atoms */
			for (k = j; k < len; k = m) {
				for (m = k + 1; m < len && s[m] != ' '; m++)
					;
				if (mime_plain_atom(s + k + 1, m - k - 1))
					break;
			}
			mime_hw_words(h, s + i, k - i, 1);
		}
		return;
	}
	if (atoms) {
		for (i = 0; i < len; i = j + 1) {
			for (j = i; j < len && s[j] != ' '; j++)
				;
			mime_hw_tok(h, s + i, j - i);
		}
		return;
	}
	q = xmalloc(2 * len + 3);
	j = 0;
	q[j++] = '"';
	for (i = 0; i < len; i++) {
		if (s[i] == '"' || s[i] == '\\')
			q[j++] = '\\';
		q[j++] = s[i];
	}
	q[j++] = '"';
	mime_hw_tok(h, q, j);
	free(q);
}

/* mime_hw_addrs - an address list field */
static void
mime_hw_addrs(struct evbuffer *b, const char *name,
    const struct mime_addr *list, size_t n)
{
	struct mime_hw h;
	size_t i;
	char *t;

	if (n == 0)
		return;
	mime_hw_start(&h, b, name);
	for (i = 0; i < n; i++) {
		if (list[i].name != NULL) {
			mime_hw_phrase(&h, list[i].name, list[i].namelen);
			t = xasprintf("<%s>", list[i].addr);
		} else
			t = xstrdup(list[i].addr);
		mime_hw_tok_r(&h, t, strlen(t), i + 1 < n);
		free(t);
		if (i + 1 < n)
			mime_hw_glue(&h, ",", 1);
	}
	evbuffer_add(b, "\r\n", 2);
}

/* mime_date - RFC 5322 date-time in UTC, locale-independent */
static void
mime_date(time_t t, char *buf, size_t len)
{
	static const char *const wd[] = { "Sun", "Mon", "Tue", "Wed", "Thu",
	    "Fri", "Sat" };
	static const char *const mo[] = { "Jan", "Feb", "Mar", "Apr", "May",
	    "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
	struct tm tm;

	if (gmtime_r(&t, &tm) == NULL)
		fatalx("mime: gmtime failed");
	snprintf(buf, len, "%s, %02d %s %04d %02d:%02d:%02d +0000",
	    wd[tm.tm_wday % 7], tm.tm_mday, mo[tm.tm_mon % 12],
	    tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* mime_valid_hostname - a Message-ID right side we can write as is */
static int
mime_valid_hostname(const char *s)
{
	size_t i, n = strlen(s);

	if (n == 0 || n > DOMAIN_MAX_LEN)
		return 0;
	for (i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') ||
		    (s[i] >= 'A' && s[i] <= 'Z') ||
		    (s[i] >= '0' && s[i] <= '9') || s[i] == '-' ||
		    s[i] == '.'))
			return 0;
	return 1;
}

/* ---------------------------------------------------------------------
 * Body
 */

/* mime_param - one Content-Type / Content-Disposition parameter on its
 * own continuation line: quoted ASCII, or RFC 2231 (charset utf-8, split
 * into sections on character boundaries) when the value is not ASCII */
static void
mime_param(struct evbuffer *b, const char *attr, const char *s, size_t len)
{
	static const char hex[] = "0123456789ABCDEF";
	char seg[MIME_RFC2231_SEG + 16];
	size_t i, k, clen, o, nseg = 0, enc;
	int ascii = 1;

	for (i = 0; i < len; i++)
		if ((unsigned char)s[i] >= 0x80 || (unsigned char)s[i] < 0x20)
			ascii = 0;
	if (ascii) {
		evbuffer_add_printf(b, ";\r\n %s=\"", attr);
		for (i = 0; i < len; i++) {
			if (s[i] == '"' || s[i] == '\\')
				evbuffer_add(b, "\\", 1);
			evbuffer_add(b, s + i, 1);
		}
		evbuffer_add(b, "\"", 1);
		return;
	}
	/* total encoded length decides between one section and several */
	for (i = 0, enc = 0; i < len; i++)
		enc += mime_is_token((unsigned char)s[i]) && s[i] != '*' &&
		    s[i] != '\'' && s[i] != '%' ? 1 : 3;
	o = 0;
	for (i = 0; i < len; i += clen) {
		clen = mime_u8len((unsigned char)s[i]);
		if (clen > len - i)
			clen = len - i;
		if (o > 0 && o + 3 * clen > MIME_RFC2231_SEG) {
			evbuffer_add_printf(b, ";\r\n %s*%zu*=%s%.*s", attr,
			    nseg, nseg == 0 ? "utf-8''" : "", (int)o, seg);
			nseg++;
			o = 0;
		}
		for (k = 0; k < clen; k++) {
			unsigned char ch = (unsigned char)s[i + k];

			if (mime_is_token(ch) && ch != '*' && ch != '\'' &&
			    ch != '%')
				seg[o++] = (char)ch;
			else {
				seg[o++] = '%';
				seg[o++] = hex[ch >> 4];
				seg[o++] = hex[ch & 0x0f];
			}
		}
	}
	if (nseg == 0 && enc <= MIME_RFC2231_SEG)
		evbuffer_add_printf(b, ";\r\n %s*=utf-8''%.*s", attr, (int)o,
		    seg);
	else
		evbuffer_add_printf(b, ";\r\n %s*%zu*=%s%.*s", attr, nseg,
		    nseg == 0 ? "utf-8''" : "", (int)o, seg);
}

/* mime_write_text - a text/SUBTYPE entity (headers, blank line, body) */
static void
mime_write_text(struct evbuffer *b, const char *subtype,
    const struct mime_text *t)
{
	evbuffer_add_printf(b, "Content-Type: text/%s; charset=utf-8\r\n"
	    "Content-Transfer-Encoding: %s\r\n\r\n", subtype,
	    t->qp ? "quoted-printable" : "7bit");
	if (t->qp)
		mime_qp_encode((const unsigned char *)t->s, t->len, b);
	else
		evbuffer_add(b, t->s, t->len);
}

/* mime_write_att - an attachment entity */
static void
mime_write_att(struct evbuffer *b, const struct mime_att *a)
{
	evbuffer_add_printf(b, "Content-Type: %s", a->ctype);
	mime_param(b, "name", a->name, a->namelen);
	evbuffer_add_printf(b, "\r\nContent-Disposition: %s",
	    a->cid != NULL ? "inline" : "attachment");
	mime_param(b, "filename", a->name, a->namelen);
	evbuffer_add(b, "\r\n", 2);
	if (a->cid != NULL)
		evbuffer_add_printf(b, "Content-ID: <%s>\r\n", a->cid);
	evbuffer_add(b, "Content-Transfer-Encoding: base64\r\n\r\n", 37);
	mime_b64_encode(a->data, a->len, b);
}

/* mime_delim - "CRLF--boundary CRLF" between parts (the CRLF before the
 * dashes belongs to the delimiter, RFC 2046 5.1.1) */
static void
mime_delim(struct mime_ctx *c, struct evbuffer *b, int level, int close)
{
	evbuffer_add_printf(b, "\r\n--%s.%d%s\r\n", c->bnd, level,
	    close ? "--" : "");
}

/* mime_write_alt - text, html or multipart/alternative of both */
static void
mime_write_alt(struct mime_ctx *c, struct evbuffer *b)
{
	if (c->text.s == NULL) {
		mime_write_text(b, "html", &c->html);
		return;
	}
	if (c->html.s == NULL) {
		mime_write_text(b, "plain", &c->text);
		return;
	}
	evbuffer_add_printf(b, "Content-Type: multipart/alternative;\r\n"
	    " boundary=\"%s.3\"\r\n\r\n"
	    "This is a multi-part message in MIME format.\r\n", c->bnd);
	mime_delim(c, b, 3, 0);
	mime_write_text(b, "plain", &c->text);
	mime_delim(c, b, 3, 0);
	mime_write_text(b, "html", &c->html);
	mime_delim(c, b, 3, 1);
}

/* mime_write_related - the alternative plus inline parts */
static void
mime_write_related(struct mime_ctx *c, struct evbuffer *b)
{
	size_t i;

	if (c->ninline == 0) {
		mime_write_alt(c, b);
		return;
	}
	evbuffer_add_printf(b, "Content-Type: multipart/related;\r\n"
	    " type=\"%s\";\r\n boundary=\"%s.2\"\r\n\r\n",
	    c->text.s != NULL && c->html.s != NULL ? "multipart/alternative" :
	    c->html.s != NULL ? "text/html" : "text/plain", c->bnd);
	mime_delim(c, b, 2, 0);
	mime_write_alt(c, b);
	for (i = 0; i < c->natt; i++) {
		if (c->att[i].cid == NULL)
			continue;
		mime_delim(c, b, 2, 0);
		mime_write_att(b, &c->att[i]);
	}
	mime_delim(c, b, 2, 1);
}

/* mime_write_mixed - everything plus regular attachments */
static void
mime_write_mixed(struct mime_ctx *c, struct evbuffer *b)
{
	size_t i;

	if (c->natt == c->ninline) {
		mime_write_related(c, b);
		return;
	}
	evbuffer_add_printf(b, "Content-Type: multipart/mixed;\r\n"
	    " boundary=\"%s.1\"\r\n\r\n"
	    "This is a multi-part message in MIME format.\r\n", c->bnd);
	mime_delim(c, b, 1, 0);
	mime_write_related(c, b);
	for (i = 0; i < c->natt; i++) {
		if (c->att[i].cid != NULL)
			continue;
		mime_delim(c, b, 1, 0);
		mime_write_att(b, &c->att[i]);
	}
	mime_delim(c, b, 1, 1);
}

/* mime_boundary - a boundary base that no 7bit body contains (QP and
 * base64 bodies cannot hold "=_") */
static void
mime_boundary(struct mime_ctx *c)
{
	char rnd[MIME_BOUNDARY_RANDOM + 1];
	size_t n;

	if (c->opts->boundary_seed != NULL)
		snprintf(c->bnd, sizeof(c->bnd), "=_%.40s",
		    c->opts->boundary_seed);
	else {
		util_random_id(rnd, MIME_BOUNDARY_RANDOM);
		snprintf(c->bnd, sizeof(c->bnd), "=_%s", rnd);
	}
	for (;;) {
		n = strlen(c->bnd);
		if (!((c->text.s != NULL && !c->text.qp &&
		    memmem(c->text.s, c->text.len, c->bnd, n) != NULL) ||
		    (c->html.s != NULL && !c->html.qp &&
		    memmem(c->html.s, c->html.len, c->bnd, n) != NULL)))
			break;
		if (n + 9 >= sizeof(c->bnd))
			fatalx("mime: no usable boundary");
		util_random_id(rnd, 8);
		util_strlcpy(c->bnd + n, rnd, sizeof(c->bnd) - n);
	}
}

/* mime_write - header section and body into b */
static void
mime_write(struct mime_ctx *c, struct evbuffer *b, char **msgid_r)
{
	const char *host = c->opts->hostname, *key;
	char date[64], rnd[MIME_MSGID_RANDOM + 1];
	struct mime_hw h;
	json_t *v;
	size_t len;

	if (host == NULL || !mime_valid_hostname(host))
		host = "localhost";
	util_random_id(rnd, MIME_MSGID_RANDOM);
	*msgid_r = xasprintf("<%s@%s>", rnd, host);
	mime_date(c->opts->now ? c->opts->now : time(NULL), date,
	    sizeof(date));

	evbuffer_add_printf(b, "From: %s\r\n", c->sender);
	mime_hw_addrs(b, "To", c->to, c->nto);
	mime_hw_addrs(b, "Cc", c->cc, c->ncc);
	mime_hw_addrs(b, "Reply-To", c->rt, c->nrt);
	mime_hw_start(&h, b, "Subject");
	mime_hw_unstructured(&h, c->subject, c->subjlen);
	evbuffer_add(b, "\r\n", 2);
	evbuffer_add_printf(b, "Date: %s\r\nMessage-ID: %s\r\n", date,
	    *msgid_r);
	if (c->headers != NULL) {
		json_object_foreach((json_t *)c->headers, key, v) {
			len = json_string_length(v);
			mime_hw_start(&h, b, key);
			mime_hw_unstructured(&h, json_string_value(v), len);
			evbuffer_add(b, "\r\n", 2);
		}
	}
	evbuffer_add(b, "MIME-Version: 1.0\r\n", 19);
	mime_boundary(c);
	mime_write_mixed(c, b);
	/* a single text part may end without a line break */
	len = evbuffer_get_length(b);
	if (len >= 2) {
		struct evbuffer_ptr p;
		char tail[2];

		if (evbuffer_ptr_set(b, &p, len - 2, EVBUFFER_PTR_SET) == -1 ||
		    evbuffer_copyout_from(b, &p, tail, 2) != 2)
			fatalx("mime: evbuffer tail");
		if (tail[0] == '\r' && tail[1] == '\n')
			return;
	}
	evbuffer_add(b, "\r\n", 2);
}

/* mime_rcpts - to + cc + bcc, case-insensitively deduplicated */
static void
mime_rcpts(struct mime_ctx *c, struct mime_info *info)
{
	const struct mime_addr *lists[3] = { c->to, c->cc, c->bcc };
	size_t counts[3] = { c->nto, c->ncc, c->nbcc };
	size_t l, i, k;

	info->rcpts = xcalloc(c->nto + c->ncc + c->nbcc + 1,
	    sizeof(*info->rcpts));
	for (l = 0; l < 3; l++) {
		for (i = 0; i < counts[l]; i++) {
			for (k = 0; k < info->nrcpts; k++)
				if (strcasecmp(info->rcpts[k],
				    lists[l][i].addr) == 0)
					break;
			if (k == info->nrcpts)
				info->rcpts[info->nrcpts++] =
				    xstrdup(lists[l][i].addr);
		}
	}
}

/* mime_ctx_free - release the parsed message */
static void
mime_ctx_free(struct mime_ctx *c)
{
	struct mime_addr *lists[4] = { c->to, c->cc, c->bcc, c->rt };
	size_t counts[4] = { c->nto, c->ncc, c->nbcc, c->nrt };
	size_t l, i;

	for (l = 0; l < 4; l++) {
		for (i = 0; i < counts[l]; i++)
			free(lists[l][i].addr);
		free(lists[l]);
	}
	for (i = 0; i < c->natt; i++)
		free(c->att[i].data);
	free(c->att);
	free(c->text.s);
	free(c->html.s);
	free(c->sender);
	free(c->sender_domain);
	free(c->code);
	free(c->target);
	free(c->msg);
}

/* mime_build - see mime.h */
int
mime_build(const json_t *email_message, const struct mime_opts *opts,
    struct evbuffer *out, struct mime_info *info_r, char **err_code_r,
    char **err_target_r, char **err_msg_r)
{
	static const struct mime_opts defaults;
	struct mime_ctx c;
	struct evbuffer *b;
	int rc;

	memset(&c, 0, sizeof(c));
	memset(info_r, 0, sizeof(*info_r));
	*err_code_r = *err_target_r = *err_msg_r = NULL;
	c.opts = opts != NULL ? opts : &defaults;
	if (mime_validate(&c, email_message) == -1) {
		rc = c.rc;
		*err_code_r = c.code;
		*err_target_r = c.target;
		*err_msg_r = c.msg;
		c.code = c.target = c.msg = NULL;
		mime_ctx_free(&c);
		return rc;
	}
	if ((b = evbuffer_new()) == NULL)
		fatalx("mime: evbuffer_new failed");
	mime_write(&c, b, &info_r->message_id);
	info_r->sender = xstrdup(c.sender);
	info_r->sender_domain = xstrdup(c.sender_domain);
	info_r->header_from = xstrdup(c.sender);
	info_r->tracking_disabled = c.tracking_disabled;
	mime_rcpts(&c, info_r);
	info_r->size = evbuffer_get_length(b);
	if (evbuffer_add_buffer(out, b) == -1)
		fatalx("mime: evbuffer_add_buffer failed");
	evbuffer_free(b);
	mime_ctx_free(&c);
	return MIME_OK;
}

/* mime_info_free - see mime.h */
void
mime_info_free(struct mime_info *info)
{
	size_t i;

	for (i = 0; i < info->nrcpts; i++)
		free(info->rcpts[i]);
	free(info->rcpts);
	free(info->sender);
	free(info->sender_domain);
	free(info->header_from);
	free(info->message_id);
	memset(info, 0, sizeof(*info));
}

/* mime_info_json - see mime.h */
json_t *
mime_info_json(const struct mime_info *info)
{
	json_t *o, *a;
	size_t i;

	a = json_array();
	for (i = 0; i < info->nrcpts; i++)
		json_array_append_new(a, json_string(info->rcpts[i]));
	o = json_pack("{s:s?, s:s?, s:s?, s:s?, s:o, s:b, s:I}",
	    "sender", info->sender, "sender_domain", info->sender_domain,
	    "header_from", info->header_from, "message_id", info->message_id,
	    "recipients", a, "tracking_disabled", info->tracking_disabled,
	    "size", (json_int_t)info->size);
	if (o == NULL)
		fatalx("mime: json_pack failed");
	return o;
}
