/*
 * tracking.c - engagement tracking (see tracking.h): the HTML rewriter,
 * per-message state of the prepare stage, tokens, and the lookups behind
 * /t/o/TOKEN and /t/c/TOKEN.
 *
 * The rewriter works on the MIME structure and only ever changes the
 * bodies of text/html parts; headers, boundaries, other parts, preamble
 * and epilogue are copied byte for byte. Inside an HTML part it changes
 * only href values of <a> tags and adds one <img>: a small bounded
 * scanner, because no Debian-packaged library rewrites attributes in
 * place (libxml2's HTML parser would re-serialise, i.e. change, the
 * whole document).
 *
 * Machine detection (tracking_lookup): HEAD requests, user agents of
 * known link scanners, security gateways, prefetchers and HTTP
 * libraries, a missing user agent, any hit on a recipient whose delivery
 * is not (yet) recorded, and clicks within tracking_machine_window of
 * the delivery are flagged "machine": true. Google's and Yahoo's image
 * proxies fetch the pixel when the user opens the message (then cache
 * it), so their opens count as human. Apple Mail Privacy Protection
 * prefetches through proxies with a browser user agent; it cannot be
 * told apart by user agent and is not detected (it would need Apple's
 * egress address list).
 */
#include "autoconf.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <jansson.h>
#include <lmdb.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "config.h"
#include "events.h"
#include "log.h"
#include "mime.h"
#include "queue.h"
#include "store.h"
#include "tracking.h"
#include "unsub.h"
#include "util.h"

#define TRK_SECRET_LEN		32
#define TRK_MAC_LEN		16	/* HMAC-SHA256 truncated: 128 bits */
#define TRK_SECRET_KEY		"tracking_secret"
#define TRK_MAC_LABEL		"petrel-track-v1"
#define TRK_VERSION		1
#define TRK_PAYLOAD_OPEN	(2 + QUEUE_ID_LEN + 2)
#define TRK_PAYLOAD_CLICK	(TRK_PAYLOAD_OPEN + 2)
#define TRK_REC_PREFIX		"trk:"
#define TRK_REC_KEY_LEN		(sizeof(TRK_REC_PREFIX) - 1 + QUEUE_ID_LEN)

const unsigned char tracking_gif[] = {
	'G', 'I', 'F', '8', '9', 'a', 0x01, 0x00, 0x01, 0x00, 0x80, 0x00,
	0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01,
	0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00,
	0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b
};
const size_t tracking_gif_len = sizeof(tracking_gif);

/* --- the rewriter --- */

/* what one walk needs */
struct trk_walk {
	const struct tracking_rw *rw;
	json_t		*links;
	size_t		 nlinks;	/* links rewritten so far */
	size_t		 nparts;
	int		 pixel_done;
	int		 changes;
};

/* one change in a decoded HTML text: [from, to) replaced by text */
struct trk_edit {
	size_t	 from;
	size_t	 to;
	char	*text;
};

#define TRK_EDITS_MAX	(TRACKING_LINKS_MAX + 1)

static int
trk_ci_prefix(const unsigned char *p, size_t n, const char *s)
{
	size_t l = strlen(s);

	return n >= l && strncasecmp((const char *)p, s, l) == 0;
}

static int
trk_space(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f';
}

/* trk_find_ci - first case-insensitive occurrence of s in p[0..n), or
 * (size_t)-1 */
static size_t
trk_find_ci(const unsigned char *p, size_t n, const char *s)
{
	size_t l = strlen(s), i;

	for (i = 0; l <= n && i <= n - l; i++)
		if (strncasecmp((const char *)p + i, s, l) == 0)
			return i;
	return (size_t)-1;
}

/* trk_header_end - length of the header block of an entity (through the
 * CRLF of its last field; 0 when it starts with the empty line) and the
 * offset of its body; -1 when there is no empty line within bounds */
static int
trk_header_end(const unsigned char *p, size_t n, size_t *hlen_r,
    size_t *body_r)
{
	size_t i, lim = n < TRACKING_HEADER_MAX ? n : TRACKING_HEADER_MAX;

	if (n >= 2 && p[0] == '\r' && p[1] == '\n') {
		*hlen_r = 0;
		*body_r = 2;
		return 0;
	}
	for (i = 0; i + 3 < lim; i++)
		if (p[i] == '\r' && p[i + 1] == '\n' && p[i + 2] == '\r' &&
		    p[i + 3] == '\n') {
			*hlen_r = i + 2;
			*body_r = i + 4;
			return 0;
		}
	return -1;
}

/* trk_header_get - the unfolded value of the first field name in the
 * header block h[0..n), malloc'd (at most 4 KiB), or NULL */
static char *
trk_header_get(const unsigned char *h, size_t n, const char *name)
{
	size_t nl = strlen(name), i = 0, j, k, o;
	char *v;

	while (i < n) {
		/* i is at the start of a line */
		if (trk_ci_prefix(h + i, n - i, name)) {
			j = i + nl;
			while (j < n && (h[j] == ' ' || h[j] == '\t'))
				j++;
			if (j < n && h[j] == ':') {
				j++;
				/* the value runs to a CRLF not followed by
				 * WSP */
				for (k = j; k < n; k++)
					if (h[k] == '\r' && k + 1 < n &&
					    h[k + 1] == '\n' && (k + 2 >= n ||
					    (h[k + 2] != ' ' && h[k + 2] != '\t')))
						break;
				if (k - j > 4096)
					k = j + 4096;
				v = xmalloc(k - j + 1);
				for (o = 0; j < k; j++)
					if (h[j] != '\r' && h[j] != '\n')
						v[o++] = (char)h[j];
				v[o] = '\0';
				return v;
			}
		}
		while (i < n && !(h[i] == '\n'))
			i++;
		i++;
	}
	return NULL;
}

/* trk_ctype - lower-case "type/subtype" of a Content-Type value into
 * type (holds 128), and the value of parameter pname (malloc'd) into
 * *param_r when wanted (NULL when absent) */
static void
trk_ctype(const char *v, char type[128], const char *pname, char **param_r)
{
	const char *p = v, *s;
	size_t n = 0, pl;
	char *out;

	if (param_r != NULL)
		*param_r = NULL;
	while (*p == ' ' || *p == '\t')
		p++;
	for (; *p != '\0' && *p != ';' && *p != ' ' && *p != '\t' && n < 127;
	    p++)
		type[n++] = (char)(*p >= 'A' && *p <= 'Z' ? *p - 'A' + 'a' : *p);
	type[n] = '\0';
	if (param_r == NULL)
		return;
	pl = strlen(pname);
	while ((p = strchr(p, ';')) != NULL) {
		p++;
		while (*p == ' ' || *p == '\t')
			p++;
		if (strncasecmp(p, pname, pl) != 0)
			continue;
		s = p + pl;
		while (*s == ' ' || *s == '\t')
			s++;
		if (*s != '=')
			continue;
		s++;
		while (*s == ' ' || *s == '\t')
			s++;
		out = xmalloc(strlen(s) + 1);
		n = 0;
		if (*s == '"') {
			for (s++; *s != '\0' && *s != '"'; s++) {
				if (*s == '\\' && s[1] != '\0')
					s++;
				out[n++] = *s;
			}
		} else
			while (*s != '\0' && *s != ';' && *s != ' ' &&
			    *s != '\t')
				out[n++] = *s++;
		out[n] = '\0';
		*param_r = out;
		return;
	}
}

/* trk_hexval - value of a hex digit, -1 if c is none */
static int
trk_hexval(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* trk_qp_decode - quoted-printable p[0..n) into out (RFC 2045 6.7:
 * trailing white space of a line is dropped, "=" CRLF is a soft break,
 * an "=" not followed by two hex digits is kept as it is) */
static void
trk_qp_decode(const unsigned char *p, size_t n, struct evbuffer *out)
{
	size_t i, j;
	unsigned char c;

	for (i = 0; i < n; i++) {
		if (p[i] == '=') {
			/* soft line break, maybe after transport padding */
			for (j = i + 1; j < n && (p[j] == ' ' || p[j] == '\t');
			    j++)
				;
			if (j + 1 < n && p[j] == '\r' && p[j + 1] == '\n') {
				i = j + 1;
				continue;
			}
			if (j == n)
				break;
			if (i + 2 < n && trk_hexval(p[i + 1]) >= 0 &&
			    trk_hexval(p[i + 2]) >= 0) {
				c = (unsigned char)(trk_hexval(p[i + 1]) << 4 |
				    trk_hexval(p[i + 2]));
				evbuffer_add(out, &c, 1);
				i += 2;
				continue;
			}
			evbuffer_add(out, "=", 1);
			continue;
		}
		if (p[i] == ' ' || p[i] == '\t') {
			/* trailing white space of a line is transport
			 * padding */
			for (j = i; j < n && (p[j] == ' ' || p[j] == '\t'); j++)
				;
			if (j == n || (j + 1 < n && p[j] == '\r' &&
			    p[j + 1] == '\n')) {
				i = j - 1;
				continue;
			}
		}
		evbuffer_add(out, p + i, 1);
	}
}

/* trk_b64_decode - base64 p[0..n) (line breaks and white space ignored)
 * into out; -1 when malformed */
static int
trk_b64_decode(const unsigned char *p, size_t n, struct evbuffer *out)
{
	char *clean = xmalloc(n + 1);
	unsigned char *dec;
	size_t i, m = 0;
	long r;

	for (i = 0; i < n; i++) {
		if (trk_space(p[i]))
			continue;
		clean[m++] = (char)p[i];
	}
	dec = xmalloc(m / 4 * 3 + 3);
	r = util_b64_decode(clean, m, dec);
	free(clean);
	if (r < 0) {
		free(dec);
		return -1;
	}
	evbuffer_add(out, dec, (size_t)r);
	free(dec);
	return 0;
}

/* trk_entity_decode - an attribute value with HTML character references
 * decoded; NULL when the result is not printable ASCII */
static char *
trk_entity_decode(const unsigned char *v, size_t n)
{
	static const struct { const char *name; char c; } named[] = {
		{ "amp;", '&' }, { "lt;", '<' }, { "gt;", '>' },
		{ "quot;", '"' }, { "apos;", '\'' }, { "#39;", '\'' },
	};
	char *out = xmalloc(n + 1);
	size_t i, o = 0, k, j;
	unsigned long code;
	int hexa;

	for (i = 0; i < n; i++) {
		if (v[i] != '&') {
			out[o++] = (char)v[i];
			continue;
		}
		for (k = 0; k < nitems(named); k++)
			if (trk_ci_prefix(v + i + 1, n - i - 1, named[k].name))
				break;
		if (k < nitems(named)) {
			out[o++] = named[k].c;
			i += strlen(named[k].name);
			continue;
		}
		if (i + 2 < n && v[i + 1] == '#') {
			hexa = v[i + 2] == 'x' || v[i + 2] == 'X';
			code = 0;
			for (j = i + 2 + (size_t)hexa; j < n && j < i + 12; j++) {
				if (v[j] >= '0' && v[j] <= '9')
					code = code * (hexa ? 16 : 10) +
					    (v[j] - '0');
				else if (hexa && ((v[j] | 0x20) >= 'a' &&
				    (v[j] | 0x20) <= 'f'))
					code = code * 16 + ((v[j] | 0x20) -
					    'a' + 10);
				else
					break;
			}
			if (j > i + 2 + (size_t)hexa && code > 0 &&
			    code < 0x80) {
				out[o++] = (char)code;
				i = (j < n && v[j] == ';') ? j : j - 1;
				continue;
			}
		}
		out[o++] = '&';
	}
	out[o] = '\0';
	return out;
}

/* trk_link_url - the URL of an href value if it is one to rewrite
 * (malloc'd), else NULL */
static char *
trk_link_url(const struct tracking_rw *rw, const unsigned char *v, size_t n)
{
	char *u, *s;
	size_t i, l;

	while (n > 0 && trk_space(v[0]))
		v++, n--;
	while (n > 0 && trk_space(v[n - 1]))
		n--;
	if (n == 0 || n > TRACKING_URL_MAX)
		return NULL;
	u = trk_entity_decode(v, n);
	l = strlen(u);
	if (!(trk_ci_prefix((unsigned char *)u, l, "http://") ||
	    trk_ci_prefix((unsigned char *)u, l, "https://")) ||
	    l > TRACKING_URL_MAX)
		goto skip;
	for (s = u; *s != '\0'; s++)
		if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
			goto skip;
	for (i = 0; i < nitems(rw->skip) && rw->skip[i] != NULL; i++)
		if (strncasecmp(u, rw->skip[i], strlen(rw->skip[i])) == 0)
			goto skip;
	return u;
skip:
	free(u);
	return NULL;
}

/* trk_html - the edits for one decoded HTML text d[0..n): links of <a>
 * tags and, when pixel, the open image. Returns the number of edits. */
static size_t
trk_html(struct trk_walk *w, const unsigned char *d, size_t n, int pixel,
    struct trk_edit *ed)
{
	const struct tracking_rw *rw = w->rw;
	size_t i = 0, ne = 0, j, lim, nstart, vs, ve, hs = 0, he = 0, e;
	size_t body_at = (size_t)-1, html_at = (size_t)-1, at, k;
	int quote, found, closed, hquote = 0;
	char *url, *nu;

	while (i < n) {
		if (d[i] != '<') {
			i++;
			continue;
		}
		if (trk_ci_prefix(d + i, n - i, "<!--")) {
			if ((e = trk_find_ci(d + i + 4, n - i - 4, "-->")) ==
			    (size_t)-1)
				break;
			i += 4 + e + 3;
			continue;
		}
		if ((trk_ci_prefix(d + i, n - i, "<script") && (i + 7 == n ||
		    trk_space(d[i + 7]) || d[i + 7] == '>')) ||
		    (trk_ci_prefix(d + i, n - i, "<style") && (i + 6 == n ||
		    trk_space(d[i + 6]) || d[i + 6] == '>'))) {
			e = trk_find_ci(d + i + 1, n - i - 1,
			    d[i + 2] == 'c' || d[i + 2] == 'C' ? "</script" :
			    "</style");
			if (e == (size_t)-1)
				break;
			i += 1 + e;
			continue;
		}
		if (trk_ci_prefix(d + i, n - i, "</body"))
			body_at = i;
		else if (trk_ci_prefix(d + i, n - i, "</html"))
			html_at = i;
		if (!(i + 2 < n && (d[i + 1] == 'a' || d[i + 1] == 'A') &&
		    (trk_space(d[i + 2]) || d[i + 2] == '>' ||
		    d[i + 2] == '/'))) {
			i++;
			continue;
		}
		/* an <a> tag: its attributes up to '>' */
		lim = n - i < TRACKING_TAG_MAX ? n : i + TRACKING_TAG_MAX;
		j = i + 2;
		found = closed = 0;
		while (j < lim) {
			while (j < lim && (trk_space(d[j]) || d[j] == '/'))
				j++;
			if (j >= lim)
				break;
			if (d[j] == '>') {
				closed = 1;
				break;
			}
			nstart = j;
			while (j < lim && !trk_space(d[j]) && d[j] != '/' &&
			    d[j] != '>' && d[j] != '=')
				j++;
			if (j == nstart)	/* a stray '=' */
				j++;
			k = j;
			while (j < lim && trk_space(d[j]))
				j++;
			if (j >= lim || d[j] != '=') {
				j = k;
				continue;
			}
			j++;
			while (j < lim && trk_space(d[j]))
				j++;
			if (j >= lim)
				break;
			quote = 0;
			if (d[j] == '"' || d[j] == '\'') {
				quote = d[j];
				vs = ++j;
				while (j < lim && d[j] != quote)
					j++;
				if (j >= lim)
					break;
				ve = j++;
			} else {
				vs = j;
				while (j < lim && !trk_space(d[j]) && d[j] != '>')
					j++;
				ve = j;
			}
			if (!found && k - nstart == 4 &&
			    strncasecmp((const char *)d + nstart, "href", 4) ==
			    0) {
				found = 1;
				hs = vs;
				he = ve;
				hquote = quote;
			}
		}
		if (!closed) {
			i += 2;
			continue;
		}
		if (found && rw->click_url != NULL &&
		    w->nlinks < TRACKING_LINKS_MAX && ne < TRK_EDITS_MAX - 1 &&
		    (url = trk_link_url(rw, d + hs, he - hs)) != NULL) {
			if ((nu = rw->click_url(rw->arg, w->nlinks, url)) !=
			    NULL) {
				ed[ne].from = hs;
				ed[ne].to = he;
				ed[ne].text = hquote ? xstrdup(nu) :
				    xasprintf("\"%s\"", nu);
				ne++;
				if (w->links != NULL)
					json_array_append_new(w->links,
					    json_string(url));
				w->nlinks++;
				free(nu);
			}
			free(url);
		}
		i = j + 1;
	}
	if (pixel && rw->open_url != NULL) {
		if (body_at != (size_t)-1)
			at = body_at;
		else if (html_at != (size_t)-1)
			at = html_at;
		else {
			/* at the end, before trailing line breaks */
			at = n;
			while (at > 0 && (d[at - 1] == '\r' || d[at - 1] == '\n'))
				at--;
		}
		/* keep the edits in order of position */
		for (k = ne; k > 0 && ed[k - 1].from > at; k--)
			ed[k] = ed[k - 1];
		ed[k].from = ed[k].to = at;
		ed[k].text = xasprintf("<img src=\"%s\" width=\"1\" "
		    "height=\"1\" alt=\"\" style=\"display:none\">",
		    rw->open_url);
		ne++;
	}
	return ne;
}

/* trk_ends_crlf - 1 when p[0..n) ends with CRLF */
static int
trk_ends_crlf(const unsigned char *p, size_t n)
{
	return n >= 2 && p[n - 2] == '\r' && p[n - 1] == '\n';
}

/* trk_html_part - the body b[0..n) of a text/html part with transfer
 * encoding cte (lower case, "" for none): rewritten into out, or copied
 * when nothing changes or it cannot be */
static void
trk_html_part(struct trk_walk *w, const char *cte, const unsigned char *b,
    size_t n, struct evbuffer *out)
{
	struct evbuffer *dec = NULL, *txt = NULL, *enc = NULL;
	struct trk_edit *ed = NULL;
	const unsigned char *d, *e;
	size_t dn, ne = 0, i, pos, el, col, nlinks0 = w->nlinks;
	size_t links0 = w->links ? json_array_size(w->links) : 0;
	int kind, pixel;

	if (strcmp(cte, "quoted-printable") == 0)
		kind = 1;
	else if (strcmp(cte, "base64") == 0)
		kind = 2;
	else if (cte[0] == '\0' || strcmp(cte, "7bit") == 0 ||
	    strcmp(cte, "8bit") == 0 || strcmp(cte, "binary") == 0)
		kind = 0;
	else
		goto copy;
	if (n > TRACKING_HTML_MAX)
		goto copy;
	if ((dec = evbuffer_new()) == NULL || (txt = evbuffer_new()) == NULL ||
	    (enc = evbuffer_new()) == NULL)
		fatalx("tracking: evbuffer_new failed");
	if (kind == 1)
		trk_qp_decode(b, n, dec);
	else if (kind == 2) {
		if (trk_b64_decode(b, n, dec) == -1)
			goto copy;
	} else
		evbuffer_add(dec, b, n);
	dn = evbuffer_get_length(dec);
	d = dn ? evbuffer_pullup(dec, -1) : (const unsigned char *)"";
	ed = xcalloc(TRK_EDITS_MAX, sizeof(*ed));
	pixel = !w->pixel_done;
	if ((ne = trk_html(w, d, dn, pixel, ed)) == 0)
		goto copy;
	pos = 0;
	for (i = 0; i < ne; i++) {
		evbuffer_add(txt, d + pos, ed[i].from - pos);
		evbuffer_add(txt, ed[i].text, strlen(ed[i].text));
		pos = ed[i].to;
	}
	evbuffer_add(txt, d + pos, dn - pos);
	el = evbuffer_get_length(txt);
	e = evbuffer_pullup(txt, -1);
	if (kind == 1)
		mime_qp_encode(e, el, enc);
	else if (kind == 2)
		mime_b64_encode(e, el, enc);
	else {
		/* lines must stay within the SMTP limit */
		for (i = 0, col = 0; i < el; i++) {
			if (e[i] == '\n')
				col = 0;
			else if (++col > TRACKING_LINE_MAX + 1)
				goto undo;
		}
		evbuffer_add(enc, e, el);
	}
	/* the CRLF before a boundary belongs to the delimiter: end the new
	 * body as the old one ended */
	el = evbuffer_get_length(enc);
	e = evbuffer_pullup(enc, -1);
	if (trk_ends_crlf(b, n) && !trk_ends_crlf(e, el)) {
		evbuffer_add(enc, "\r\n", 2);
		el += 2;
	} else if (!trk_ends_crlf(b, n) && trk_ends_crlf(e, el))
		el -= 2;
	evbuffer_remove_buffer(enc, out, el);
	if (pixel && w->rw->open_url != NULL)
		w->pixel_done = 1;
	w->changes += (int)ne;
	goto done;
undo:
	/* forget the links of this part: it goes out unchanged */
	w->nlinks = nlinks0;
	while (w->links != NULL && json_array_size(w->links) > links0)
		json_array_remove(w->links, json_array_size(w->links) - 1);
copy:
	evbuffer_add(out, b, n);
done:
	for (i = 0; ed != NULL && i < ne; i++)
		free(ed[i].text);
	free(ed);
	if (dec != NULL)
		evbuffer_free(dec);
	if (txt != NULL)
		evbuffer_free(txt);
	if (enc != NULL)
		evbuffer_free(enc);
}

static void trk_entity(struct trk_walk *, const unsigned char *, size_t,
    int depth, struct evbuffer *);

/* trk_delim - if p[i..n) starts a delimiter line "--boundary" (at the
 * start of a line), the length through its CRLF (or the end), with
 * *close_r set for "--boundary--"; else 0 */
static size_t
trk_delim(const unsigned char *p, size_t n, size_t i, const char *bnd,
    size_t bl, int *close_r)
{
	size_t j;

	if (n - i < 2 + bl || p[i] != '-' || p[i + 1] != '-' ||
	    memcmp(p + i + 2, bnd, bl) != 0)
		return 0;
	j = i + 2 + bl;
	*close_r = 0;
	if (j + 1 < n && p[j] == '-' && p[j + 1] == '-') {
		*close_r = 1;
		j += 2;
	}
	while (j < n && (p[j] == ' ' || p[j] == '\t'))
		j++;
	if (j == n)
		return j - i;
	if (j + 1 < n && p[j] == '\r' && p[j + 1] == '\n')
		return j + 2 - i;
	if (*close_r)		/* "--b--" then anything: still the end */
		return j - i;
	return 0;
}

/* trk_multipart - the body b[0..n) of a multipart entity */
static void
trk_multipart(struct trk_walk *w, const unsigned char *b, size_t n,
    const char *bnd, int depth, struct evbuffer *out)
{
	size_t bl = strlen(bnd), i = 0, dl, start = (size_t)-1, pend;
	int close = 0;

	/* i is always at the start of a line */
	while (i < n) {
		if ((dl = trk_delim(b, n, i, bnd, bl, &close)) > 0) {
			if (start != (size_t)-1) {
				/* the part ends before the CRLF of the
				 * delimiter line */
				pend = i >= start + 2 ? i - 2 : start;
				trk_entity(w, b + start, pend - start, depth + 1,
				    out);
				evbuffer_add(out, b + pend, i - pend);
			} else
				evbuffer_add(out, b, i);	/* preamble */
			evbuffer_add(out, b + i, dl);
			i += dl;
			if (close) {
				evbuffer_add(out, b + i, n - i); /* epilogue */
				return;
			}
			start = i;
			continue;
		}
		while (i < n && b[i] != '\n')
			i++;
		i++;
	}
	/* no close delimiter: the last part runs to the end */
	if (start == (size_t)-1)
		evbuffer_add(out, b, n);
	else
		trk_entity(w, b + start, n - start, depth + 1, out);
}

/* trk_entity - one MIME entity (header + body) p[0..n) into out */
static void
trk_entity(struct trk_walk *w, const unsigned char *p, size_t n, int depth,
    struct evbuffer *out)
{
	char type[128], *ct, *cd, *cte, *param = NULL;
	size_t hlen, boff, i;

	if (++w->nparts > TRACKING_PARTS_MAX ||
	    trk_header_end(p, n, &hlen, &boff) == -1) {
		evbuffer_add(out, p, n);
		return;
	}
	ct = trk_header_get(p, hlen, "Content-Type");
	trk_ctype(ct ? ct : "text/plain", type, NULL, NULL);
	if (strncmp(type, "multipart/", 10) == 0 && depth < TRACKING_DEPTH_MAX) {
		trk_ctype(ct, type, "boundary", &param);
		if (param != NULL && *param != '\0' && strlen(param) <= 70) {
			evbuffer_add(out, p, boff);
			trk_multipart(w, p + boff, n - boff, param, depth, out);
			goto done;
		}
	} else if (strcmp(type, "text/html") == 0) {
		cd = trk_header_get(p, hlen, "Content-Disposition");
		trk_ctype(ct, type, "charset", &param);
		if (param != NULL)
			util_lower(param);
		/* attachments and charsets that are not ASCII-compatible
		 * stay as they are */
		if ((cd == NULL || strncasecmp(cd + strspn(cd, " \t"),
		    "attachment", 10) != 0) && (param == NULL ||
		    (strncmp(param, "utf-16", 6) != 0 &&
		    strncmp(param, "utf-32", 6) != 0 &&
		    strncmp(param, "ucs-", 4) != 0))) {
			cte = trk_header_get(p, hlen,
			    "Content-Transfer-Encoding");
			if (cte != NULL) {
				util_lower(cte);
				for (i = 0; cte[i] == ' ' || cte[i] == '\t'; i++)
					;
				memmove(cte, cte + i, strlen(cte + i) + 1);
				cte[strcspn(cte, " \t;(")] = '\0';
			}
			evbuffer_add(out, p, boff);
			trk_html_part(w, cte ? cte : "", p + boff, n - boff,
			    out);
			free(cte);
			free(cd);
			goto done;
		}
		free(cd);
	}
	evbuffer_add(out, p, n);
done:
	free(param);
	free(ct);
}

int
tracking_rewrite(const unsigned char *msg, size_t len,
    const struct tracking_rw *rw, struct evbuffer *out, json_t *links,
    const char **err_r)
{
	struct trk_walk w;
	struct evbuffer *tmp;
	size_t hlen, boff;

	if (trk_header_end(msg, len, &hlen, &boff) == -1) {
		*err_r = "no end of the header";
		return -1;
	}
	memset(&w, 0, sizeof(w));
	w.rw = rw;
	w.links = links;
	if ((tmp = evbuffer_new()) == NULL)
		fatalx("tracking: evbuffer_new failed");
	trk_entity(&w, msg, len, 0, tmp);
	evbuffer_add_buffer(out, tmp);
	evbuffer_free(tmp);
	return w.changes;
}

/* --- tokens --- */

/* trk_secret - the HMAC key of tracking tokens (store_secret) */
static int
trk_secret(struct store *st, int create, unsigned char out[TRK_SECRET_LEN])
{
	return store_secret(st, TRK_SECRET_KEY, create, out);
}

/* trk_mac - truncated HMAC over label NUL payload */
static void
trk_mac(const unsigned char secret[TRK_SECRET_LEN], const unsigned char *pl,
    size_t plen, unsigned char mac[TRK_MAC_LEN])
{
	unsigned char msg[sizeof(TRK_MAC_LABEL) + TRK_PAYLOAD_CLICK];
	unsigned char full[EVP_MAX_MD_SIZE];
	unsigned int flen = 0;

	if (plen > TRK_PAYLOAD_CLICK)
		fatalx("trk_mac: payload too long");
	memcpy(msg, TRK_MAC_LABEL, sizeof(TRK_MAC_LABEL));	/* + NUL */
	memcpy(msg + sizeof(TRK_MAC_LABEL), pl, plen);
	if (HMAC(EVP_sha256(), secret, TRK_SECRET_LEN, msg,
	    sizeof(TRK_MAC_LABEL) + plen, full, &flen) == NULL || flen < 32)
		fatalx("trk_mac: HMAC failed");
	memcpy(mac, full, TRK_MAC_LEN);
}

/* trk_b64url_decode - util_b64url_decode, bounded by the longest token */
static long
trk_b64url_decode(const char *in, size_t len, unsigned char *out)
{
	if (len > TRACKING_TOKEN_MAX)
		return -1;
	return util_b64url_decode(in, len, out);
}

/* trk_payload - the token payload into pl; its length */
static size_t
trk_payload(int kind, const char *qid, unsigned ridx, unsigned lidx,
    unsigned char pl[TRK_PAYLOAD_CLICK])
{
	pl[0] = TRK_VERSION;
	pl[1] = (unsigned char)kind;
	memcpy(pl + 2, qid, QUEUE_ID_LEN);
	pl[2 + QUEUE_ID_LEN] = (unsigned char)(ridx >> 8);
	pl[3 + QUEUE_ID_LEN] = (unsigned char)(ridx & 0xff);
	if (kind == 'o')
		return TRK_PAYLOAD_OPEN;
	pl[4 + QUEUE_ID_LEN] = (unsigned char)(lidx >> 8);
	pl[5 + QUEUE_ID_LEN] = (unsigned char)(lidx & 0xff);
	return TRK_PAYLOAD_CLICK;
}

char *
tracking_token(struct store *st, int kind, const char *qid, unsigned ridx,
    unsigned lidx)
{
	unsigned char secret[TRK_SECRET_LEN], mac[TRK_MAC_LEN];
	unsigned char pl[TRK_PAYLOAD_CLICK];
	char *p, *m, *tok;
	size_t plen;

	if ((kind != 'o' && kind != 'c') || queue_id_valid(qid) != 0 ||
	    ridx > 0xffff || lidx > 0xffff || trk_secret(st, 1, secret) == -1)
		return NULL;
	plen = trk_payload(kind, qid, ridx, lidx, pl);
	trk_mac(secret, pl, plen, mac);
	explicit_bzero(secret, sizeof(secret));
	p = util_b64url_encode(pl, plen);
	m = util_b64url_encode(mac, sizeof(mac));
	tok = xasprintf("%s.%s", p, m);
	free(p);
	free(m);
	return tok;
}

/* trk_token_parse - verify token of kind; 0 with qid/indexes, or -1 */
static int
trk_token_parse(struct store *st, int kind, const char *token,
    char qid[QUEUE_ID_LEN + 1], unsigned *ridx_r, unsigned *lidx_r)
{
	unsigned char secret[TRK_SECRET_LEN], mac[TRK_MAC_LEN];
	unsigned char pl[TRACKING_TOKEN_MAX], got[TRACKING_TOKEN_MAX];
	const char *dot;
	size_t len, want = kind == 'o' ? TRK_PAYLOAD_OPEN : TRK_PAYLOAD_CLICK;
	long plen, mlen;
	int ok;

	if (token == NULL || (len = strlen(token)) > TRACKING_TOKEN_MAX ||
	    (dot = strchr(token, '.')) == NULL || strchr(dot + 1, '.') != NULL)
		return -1;
	if ((plen = trk_b64url_decode(token, (size_t)(dot - token), pl)) !=
	    (long)want ||
	    (mlen = trk_b64url_decode(dot + 1, len - (size_t)(dot - token) - 1,
	    got)) != TRK_MAC_LEN)
		return -1;
	if (pl[0] != TRK_VERSION || pl[1] != (unsigned char)kind)
		return -1;
	memcpy(qid, pl + 2, QUEUE_ID_LEN);
	qid[QUEUE_ID_LEN] = '\0';
	if (queue_id_valid(qid) != 0 || trk_secret(st, 0, secret) == -1)
		return -1;
	trk_mac(secret, pl, want, mac);
	explicit_bzero(secret, sizeof(secret));
	ok = util_ct_compare(mac, got, TRK_MAC_LEN) == 0;
	if (!ok)
		return -1;
	*ridx_r = (unsigned)pl[2 + QUEUE_ID_LEN] << 8 | pl[3 + QUEUE_ID_LEN];
	*lidx_r = kind == 'o' ? 0 :
	    ((unsigned)pl[4 + QUEUE_ID_LEN] << 8 | pl[5 + QUEUE_ID_LEN]);
	return 0;
}

/* --- configuration --- */

int
tracking_domain(const json_t *rec)
{
	const json_t *t = json_object_get(rec, "tracking");
	int r = 0;

	if (!json_is_object(t))
		return 0;
	if (json_is_true(json_object_get(t, "opens")))
		r |= TRACKING_OPENS;
	if (json_is_true(json_object_get(t, "clicks")))
		r |= TRACKING_CLICKS;
	return r;
}

char *
tracking_base_url(const struct petrel_conf *cf)
{
	const char *v = cf->tracking_base_url;
	size_t n;

	if (v != NULL && *v != '\0') {
		n = strlen(v);
		while (n > 0 && v[n - 1] == '/')
			n--;
		return xstrndup(v, n);
	}
	return unsub_base_url(cf);
}

/* --- the prepare stage --- */

struct tracking_msg {
	struct store	*store;
	int		 what;		/* TRACKING_OPENS | TRACKING_CLICKS */
	char		 qid[QUEUE_ID_LEN + 1];
	char		*tenant;
	char		*message_id;
	char		*base;		/* BASE */
	char		*unsub;		/* unsubscribe BASE/u/ */
	char		*self;		/* BASE/t/ */
	json_t		*links;		/* of the first copy rewritten */
	json_t		*rcpts;		/* "IDX": address */
	unsigned	 cur;		/* recipient being rewritten */
	int		 failed;	/* a token could not be made */
};

struct tracking_msg *
tracking_msg_new(struct store *st, const struct petrel_conf *cf,
    const json_t *rec, const char *qid, const char *tenant,
    const char *message_id, int disabled)
{
	struct tracking_msg *m;
	char *base, *ub;
	int what = tracking_domain(rec);

	if (what == 0 || disabled || queue_id_valid(qid) != 0)
		return NULL;
	if ((base = tracking_base_url(cf)) == NULL)
		return NULL;
	m = xcalloc(1, sizeof(*m));
	m->store = st;
	m->what = what;
	util_strlcpy(m->qid, qid, sizeof(m->qid));
	m->tenant = xstrdup(tenant ? tenant : "");
	m->message_id = xstrdup(message_id ? message_id : "");
	m->base = base;
	m->self = xasprintf("%s/t/", base);
	if ((ub = unsub_base_url(cf)) != NULL) {
		m->unsub = xasprintf("%s/u/", ub);
		free(ub);
	}
	m->rcpts = json_object();
	return m;
}

/* trk_click_url - the rewriter's callback: BASE/t/c/TOKEN */
static char *
trk_click_url(void *arg, size_t n, const char *url)
{
	struct tracking_msg *m = arg;
	char *tok, *u;

	(void)url;
	if ((tok = tracking_token(m->store, 'c', m->qid, m->cur,
	    (unsigned)n)) == NULL) {
		m->failed = 1;
		return NULL;
	}
	u = xasprintf("%s/t/c/%s", m->base, tok);
	free(tok);
	return u;
}

int
tracking_personalise(struct tracking_msg *m, unsigned idx, const char *rcpt,
    struct evbuffer *msg)
{
	struct tracking_rw rw;
	struct evbuffer *out;
	const char *err = NULL;
	char *tok = NULL, *open = NULL, key[16];
	json_t *links;
	size_t len;
	int n;

	if (m == NULL)
		return 0;
	if (idx > 0xffff)
		return -1;
	memset(&rw, 0, sizeof(rw));
	if (m->what & TRACKING_OPENS) {
		if ((tok = tracking_token(m->store, 'o', m->qid, idx, 0)) ==
		    NULL)
			return -1;
		open = xasprintf("%s/t/o/%s", m->base, tok);
		free(tok);
		rw.open_url = open;
	}
	if (m->what & TRACKING_CLICKS) {
		rw.click_url = trk_click_url;
		rw.arg = m;
	}
	rw.skip[0] = m->self;
	rw.skip[1] = m->unsub;
	m->cur = idx;
	m->failed = 0;
	len = evbuffer_get_length(msg);
	if ((out = evbuffer_new()) == NULL || (links = json_array()) == NULL)
		fatalx("tracking: out of memory");
	n = tracking_rewrite(evbuffer_pullup(msg, -1), len, &rw, out, links,
	    &err);
	free(open);
	if (n <= 0 || m->failed) {
		evbuffer_free(out);
		json_decref(links);
		return n < 0 || m->failed ? -1 : 0;
	}
	evbuffer_drain(msg, len);
	evbuffer_add_buffer(msg, out);
	evbuffer_free(out);
	if (m->links == NULL)
		m->links = links;
	else
		json_decref(links);
	snprintf(key, sizeof(key), "%u", idx);
	json_object_set_new(m->rcpts, key, json_string(rcpt));
	return 0;
}

/* what the writer stores */
struct trk_rec {
	char	 key[TRK_REC_KEY_LEN + 1];
	char	*val;
};

int
tracking_del_txn(MDB_txn *txn, struct store *st, const char *qid)
{
	char key[TRK_REC_KEY_LEN + 1];
	MDB_val k = { TRK_REC_KEY_LEN, key };
	int rc;

	snprintf(key, sizeof(key), "%s%s", TRK_REC_PREFIX, qid);
	if ((rc = mdb_del(txn, store_dbi(st, DB_META), &k, NULL)) ==
	    MDB_NOTFOUND)
		rc = 0;
	return rc;
}

/* trk_store_fn - queue_exec: put the link record (may run twice) */
static int
trk_store_fn(MDB_txn *txn, struct store *st, void *arg)
{
	struct trk_rec *r = arg;
	MDB_val k = { TRK_REC_KEY_LEN, r->key }, v = { strlen(r->val), r->val };

	return mdb_put(txn, store_dbi(st, DB_META), &k, &v, 0);
}

static void
trk_rec_free(void *arg)
{
	struct trk_rec *r = arg;

	free(r->val);
	free(r);
}

void
tracking_msg_commit(struct tracking_msg *m, struct queue *q)
{
	struct trk_rec *r;
	json_t *rec;

	if (m == NULL || json_object_size(m->rcpts) == 0)
		return;
	rec = json_pack("{s:s, s:s, s:I, s:o, s:O}", "tenant", m->tenant,
	    "message_id", m->message_id, "created", (json_int_t)util_now(),
	    "links", m->links ? json_incref(m->links) : json_array(), "rcpts",
	    m->rcpts);
	if (rec == NULL)
		fatalx("tracking: json_pack failed");
	r = xcalloc(1, sizeof(*r));
	snprintf(r->key, sizeof(r->key), "%s%s", TRK_REC_PREFIX, m->qid);
	if ((r->val = json_dumps(rec, JSON_COMPACT)) == NULL)
		fatalx("tracking: json_dumps failed");
	json_decref(rec);
	log_info("qid=%s tenant=%s event=tracking opens=%s clicks=%s links=%zu "
	    "rcpts=%zu", m->qid, m->tenant, m->what & TRACKING_OPENS ? "on" :
	    "off", m->what & TRACKING_CLICKS ? "on" : "off",
	    m->links ? json_array_size(m->links) : 0,
	    json_object_size(m->rcpts));
	queue_exec(q, trk_store_fn, trk_rec_free, r, NULL, NULL);
}

void
tracking_msg_free(struct tracking_msg *m)
{
	if (m == NULL)
		return;
	free(m->tenant);
	free(m->message_id);
	free(m->base);
	free(m->unsub);
	free(m->self);
	if (m->links != NULL)
		json_decref(m->links);
	json_decref(m->rcpts);
	free(m);
}

/* --- the /t/ endpoints --- */

int
tracking_machine_ua(const char *ua)
{
	static const char *const pat[] = {
		"bot", "crawler", "spider", "slurp", "preview", "scanner",
		"headless", "phantomjs", "curl/", "wget/", "python-",
		"python/", "go-http-client", "java/", "okhttp", "libwww",
		"httpclient", "axios", "node-fetch", "barracuda", "mimecast",
		"proofpoint", "urldefense", "ironport", "cisco", "symantec",
		"messagelabs", "trendmicro", "trend micro", "sophos",
		"fortinet", "fortiguard", "forcepoint", "fireeye",
		"safelinks", "safe links", "existence discovery",
		"facebookexternalhit", "whatsapp", "google-safety",
		"virustotal", "zgrab", "masscan", "nmap",
	};
	size_t i, n;

	if (ua == NULL || *ua == '\0')
		return 1;
	n = strlen(ua);
	for (i = 0; i < nitems(pat); i++)
		if (trk_find_ci((const unsigned char *)ua, n, pat[i]) !=
		    (size_t)-1)
			return 1;
	return 0;
}

void
tracking_hit_clear(struct tracking_hit *h)
{
	free(h->tenant);
	free(h->message_id);
	free(h->rcpt);
	free(h->url);
	memset(h, 0, sizeof(*h));
}

int
tracking_lookup(struct store *st, const struct petrel_conf *cf, int kind,
    const char *token, int head, const char *ua, struct tracking_hit *h)
{
	char qid[QUEUE_ID_LEN + 1], key[TRK_REC_KEY_LEN + 1], idxs[16];
	unsigned char rkey[QUEUE_ID_LEN + 2];
	unsigned ridx, lidx;
	const char *s, *status;
	MDB_txn *txn;
	MDB_val k, v;
	json_t *rec = NULL, *rr = NULL;
	int64_t upd, now = util_now();

	memset(h, 0, sizeof(*h));
	if (trk_token_parse(st, kind, token, qid, &ridx, &lidx) == -1)
		return -1;
	if (mdb_txn_begin(store_env(st), NULL, MDB_RDONLY, &txn) != 0)
		return -1;
	snprintf(key, sizeof(key), "%s%s", TRK_REC_PREFIX, qid);
	k.mv_size = TRK_REC_KEY_LEN;
	k.mv_data = key;
	if (mdb_get(txn, store_dbi(st, DB_META), &k, &v) == 0)
		rec = json_loadb(v.mv_data, v.mv_size, 0, NULL);
	memcpy(rkey, qid, QUEUE_ID_LEN);
	rkey[QUEUE_ID_LEN] = (unsigned char)(ridx >> 8);
	rkey[QUEUE_ID_LEN + 1] = (unsigned char)(ridx & 0xff);
	k.mv_size = sizeof(rkey);
	k.mv_data = rkey;
	if (mdb_get(txn, store_dbi(st, DB_RCPTS), &k, &v) == 0)
		rr = json_loadb(v.mv_data, v.mv_size, 0, NULL);
	mdb_txn_abort(txn);
	snprintf(idxs, sizeof(idxs), "%u", ridx);
	if (rec == NULL || (s = json_string_value(json_object_get(
	    json_object_get(rec, "rcpts"), idxs))) == NULL)
		goto fail;
	h->kind = kind;
	util_strlcpy(h->qid, qid, sizeof(h->qid));
	h->rcpt_idx = ridx;
	h->link_idx = lidx;
	h->rcpt = xstrdup(s);
	s = json_string_value(json_object_get(rec, "tenant"));
	h->tenant = xstrdup(s ? s : "");
	s = json_string_value(json_object_get(rec, "message_id"));
	h->message_id = xstrdup(s ? s : "");
	if (kind == 'c') {
		s = json_string_value(json_array_get(json_object_get(rec,
		    "links"), lidx));
		if (s == NULL) {
			tracking_hit_clear(h);
			goto fail;
		}
		h->url = xstrdup(s);
	}
	status = json_string_value(json_object_get(rr, "status"));
	upd = json_integer_value(json_object_get(rr, "updated_at"));
	if (head)
		h->why = "head";
	else if (tracking_machine_ua(ua))
		h->why = "user_agent";
	else if (rr != NULL && (status == NULL ||
	    strcmp(status, "delivered") != 0))
		h->why = "before_delivery";
	else if (kind == 'c' && rr != NULL &&
	    now - upd < cf->tracking_machine_window)
		h->why = "too_soon";
	h->machine = h->why != NULL;
	json_decref(rec);
	json_decref(rr);
	return 0;
fail:
	json_decref(rec);
	json_decref(rr);
	return -1;
}

/* trk_ua_clean - ua as printable ASCII, at most TRACKING_UA_MAX bytes */
static char *
trk_ua_clean(const char *ua)
{
	size_t i, n = ua ? strlen(ua) : 0;
	char *s;

	if (n > TRACKING_UA_MAX)
		n = TRACKING_UA_MAX;
	s = xmalloc(n + 1);
	for (i = 0; i < n; i++)
		s[i] = (ua[i] >= 0x20 && ua[i] < 0x7f) ? ua[i] : '?';
	s[n] = '\0';
	return s;
}

void
tracking_emit(struct queue *q, const struct tracking_hit *h, const char *ua,
    const char *ip)
{
	char *u = trk_ua_clean(ua);
	json_t *d;

	d = json_pack("{s:b, s:s, s:s}", "machine", h->machine, "user_agent",
	    u, "ip", ip ? ip : "");
	if (d == NULL)
		fatalx("tracking: json_pack failed");
	if (h->url != NULL)
		json_object_set_new(d, "url", json_string(h->url));
	if (h->why != NULL)
		json_object_set_new(d, "why", json_string(h->why));
	if (h->kind == 'c')
		json_object_set_new(d, "link", json_integer(h->link_idx));
	events_emit(q, h->kind == 'o' ? "opened" : "clicked", h->tenant,
	    h->qid, h->message_id, h->rcpt, d);
	free(u);
}
