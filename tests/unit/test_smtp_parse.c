/*
 * test_smtp_parse.c - unit tests for the SMTP parsers (smtp_parse.c):
 * command splitting, paths, parameters, xtext, SIZE, the DATA/BDAT byte
 * state machine (dot-unstuffing and every smuggling variant) and the
 * header section / From extraction.
 */
#include "autoconf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>

#include "smtp_parse.h"
#include "util.h"

/* commands */

START_TEST(test_cmd_split)
{
	char verb[SMTP_VERB_MAX];
	const char *arg;
	size_t alen;

	ck_assert_int_eq(smtp_cmd_split("mail FROM:<a@b>", 15, verb, &arg,
	    &alen), 0);
	ck_assert_str_eq(verb, "MAIL");
	ck_assert_uint_eq(alen, 10);
	ck_assert(memcmp(arg, "FROM:<a@b>", 10) == 0);

	ck_assert_int_eq(smtp_cmd_split("QUIT", 4, verb, &arg, &alen), 0);
	ck_assert_str_eq(verb, "QUIT");
	ck_assert_uint_eq(alen, 0);

	ck_assert_int_eq(smtp_cmd_split("EHLO   x  ", 10, verb, &arg, &alen),
	    0);
	ck_assert_uint_eq(alen, 1);
	ck_assert_int_eq(arg[0], 'x');

	ck_assert_int_eq(smtp_cmd_split("", 0, verb, &arg, &alen), -1);
	ck_assert_int_eq(smtp_cmd_split(" NOOP", 5, verb, &arg, &alen), -1);
	ck_assert_int_eq(smtp_cmd_split("AVERYLONGVERBINDEED", 19, verb, &arg,
	    &alen), -1);
	ck_assert_int_eq(smtp_cmd_split("NO\x01P", 4, verb, &arg, &alen), -1);
}
END_TEST

/* paths */

static int
path(const char *s, int utf8, int null, struct smtp_path *p, size_t *used)
{
	const char *err = NULL;
	size_t u = 0;
	int rc = smtp_parse_path(s, strlen(s), utf8, null, p, &u, &err);

	if (used)
		*used = u;
	if (rc != SMTP_PATH_OK)
		ck_assert_ptr_nonnull(err);
	return rc;
}

START_TEST(test_path_basic)
{
	struct smtp_path p;
	size_t used;

	ck_assert_int_eq(path("<john@example.com> SIZE=10", 0, 0, &p, &used),
	    0);
	ck_assert_str_eq(p.local, "john");
	ck_assert_str_eq(p.domain, "example.com");
	ck_assert_uint_eq(used, 18);
	ck_assert_int_eq(p.null, 0);

	ck_assert_int_eq(path("<>", 0, 1, &p, &used), 0);
	ck_assert_int_eq(p.null, 1);
	ck_assert_uint_eq(used, 2);
	ck_assert_int_eq(path("<>", 0, 0, &p, &used), SMTP_PATH_SYNTAX);

	/* quoted local part with a space, '@' and a quoted-pair */
	ck_assert_int_eq(path("<\"j doe@x\\\"\"@example.com>", 0, 0, &p,
	    NULL), 0);
	ck_assert_str_eq(p.local, "\"j doe@x\\\"\"");
	ck_assert_str_eq(p.domain, "example.com");

	/* source route is accepted and ignored */
	ck_assert_int_eq(path("<@a.example,@b.example:u@c.example>", 0, 0, &p,
	    NULL), 0);
	ck_assert_str_eq(p.local, "u");
	ck_assert_str_eq(p.domain, "c.example");

	/* address literals */
	ck_assert_int_eq(path("<u@[192.0.2.1]>", 0, 0, &p, NULL), 0);
	ck_assert_str_eq(p.domain, "[192.0.2.1]");
	ck_assert_int_eq(path("<u@[IPv6:2001:db8::1]>", 0, 0, &p, NULL), 0);
	ck_assert_int_eq(path("<u@[300.1.1.1]>", 0, 0, &p, NULL),
	    SMTP_PATH_SYNTAX);
}
END_TEST

START_TEST(test_path_bad)
{
	struct smtp_path p;
	static const char *bad[] = {
		"john@example.com", "<john@example.com", "<john>", "<@x:>",
		"<.john@example.com>", "<jo..hn@example.com>",
		"<john.@example.com>", "<john@-example.com>",
		"<john@exa_mple.com>", "<john@example..com>", "<jo hn@x.com>",
		"<\"unterminated@x.com>", "<john@>", "<@x.com,y.com:a@b.c>",
		"<a\x01@example.com>",
	};
	char big[300];
	size_t i;

	for (i = 0; i < nitems(bad); i++)
		ck_assert_msg(path(bad[i], 0, 0, &p, NULL) != 0, "accepted %s",
		    bad[i]);
	/* local part of 65 octets */
	memset(big, 'a', sizeof(big));
	big[0] = '<';
	memcpy(big + 66, "@x.com>", 8);
	ck_assert_int_eq(path(big, 0, 0, &p, NULL), SMTP_PATH_TOOLONG);
}
END_TEST

START_TEST(test_path_utf8)
{
	struct smtp_path p;

	/* non-ASCII without SMTPUTF8: its own code (553 5.6.7) */
	ck_assert_int_eq(path("<j\xc3\xb6rg@example.com>", 0, 0, &p, NULL),
	    SMTP_PATH_UTF8);
	ck_assert_int_eq(path("<user@b\xc3\xbc" "cher.example>", 0, 0, &p,
	    NULL), SMTP_PATH_UTF8);
	ck_assert_int_eq(path("<j\xc3\xb6rg@b\xc3\xbc" "cher.example>", 1, 0,
	    &p, NULL), 0);
	ck_assert_int_eq(p.utf8, 1);
	ck_assert_str_eq(p.local, "j\xc3\xb6rg");
	ck_assert_str_eq(p.domain, "b\xc3\xbc" "cher.example");
	/* malformed UTF-8 is refused even with SMTPUTF8 */
	ck_assert_int_eq(path("<j\xc3rg@example.com>", 1, 0, &p, NULL),
	    SMTP_PATH_SYNTAX);
	ck_assert_int_eq(path("<a@\xed\xa0\x80.example>", 1, 0, &p, NULL),
	    SMTP_PATH_SYNTAX);
	ck_assert_int_eq(smtp_valid_utf8((const unsigned char *)"\xc0\xaf", 2),
	    0);
	ck_assert_int_eq(smtp_valid_utf8((const unsigned char *)
	    "\xf0\x9f\x98\x80", 4), 1);
}
END_TEST

/* parameters */

START_TEST(test_params)
{
	const char *s = " SIZE=100 SMTPUTF8  BODY=8BITMIME", *p = s;
	const char *end = s + strlen(s), *err = NULL;
	struct smtp_param prm;

	ck_assert_int_eq(smtp_param_next(&p, end, &prm, &err), 1);
	ck_assert(smtp_param_is(&prm, "size"));
	ck_assert_uint_eq(prm.vallen, 3);
	ck_assert_int_eq(smtp_param_next(&p, end, &prm, &err), 1);
	ck_assert(smtp_param_is(&prm, "SMTPUTF8"));
	ck_assert_ptr_null(prm.val);
	ck_assert_int_eq(smtp_param_next(&p, end, &prm, &err), 1);
	ck_assert(smtp_param_is(&prm, "BODY"));
	ck_assert_int_eq(smtp_param_next(&p, end, &prm, &err), 0);

	s = "SIZE=";
	p = s;
	ck_assert_int_eq(smtp_param_next(&p, s + 5, &prm, &err), -1);
	s = "ORCPT=a\x01" "b";
	p = s;
	ck_assert_int_eq(smtp_param_next(&p, s + 9, &prm, &err), -1);
	s = "=x";
	p = s;
	ck_assert_int_eq(smtp_param_next(&p, s + 2, &prm, &err), -1);
	s = "ENVID=\xc3\xa9";
	p = s;
	ck_assert_int_eq(smtp_param_next(&p, s + 8, &prm, &err), -1);
}
END_TEST

START_TEST(test_xtext)
{
	char out[64];
	const char *err = NULL;

	ck_assert_int_eq(smtp_xtext_decode("rfc822+3Ba@b", 12, out,
	    sizeof(out), &err), 0);
	ck_assert_str_eq(out, "rfc822;a@b");
	ck_assert_int_eq(smtp_xtext_decode("a+2Bb", 5, out, sizeof(out),
	    &err), 0);
	ck_assert_str_eq(out, "a+b");
	/* CR, LF, NUL and other controls never come out of the decoder */
	ck_assert_int_eq(smtp_xtext_decode("a+0D+0Ab", 8, out, sizeof(out),
	    &err), -1);
	ck_assert_int_eq(smtp_xtext_decode("a+0Ab", 5, out, sizeof(out),
	    &err), -1);
	ck_assert_int_eq(smtp_xtext_decode("a+00", 4, out, sizeof(out),
	    &err), -1);
	ck_assert_int_eq(smtp_xtext_decode("a+7F", 4, out, sizeof(out),
	    &err), -1);
	/* malformed escapes and raw bytes */
	ck_assert_int_eq(smtp_xtext_decode("a+0", 3, out, sizeof(out),
	    &err), -1);
	ck_assert_int_eq(smtp_xtext_decode("a+ZZ", 4, out, sizeof(out),
	    &err), -1);
	ck_assert_int_eq(smtp_xtext_decode("a=b", 3, out, sizeof(out),
	    &err), -1);
	ck_assert_int_eq(smtp_xtext_decode("a\rb", 3, out, sizeof(out),
	    &err), -1);
	/* no room */
	ck_assert_int_eq(smtp_xtext_decode("abcdef", 6, out, 4, &err), -1);
}
END_TEST

START_TEST(test_size)
{
	uint64_t v;

	ck_assert_int_eq(smtp_parse_size("0", 1, &v), 0);
	ck_assert_uint_eq(v, 0);
	ck_assert_int_eq(smtp_parse_size("36700160", 8, &v), 0);
	ck_assert_uint_eq(v, 36700160);
	ck_assert_int_eq(smtp_parse_size("18446744073709551615", 20, &v), 0);
	ck_assert(v == UINT64_MAX);
	ck_assert_int_eq(smtp_parse_size("18446744073709551616", 20, &v), -1);
	ck_assert_int_eq(smtp_parse_size("99999999999999999999", 20, &v), -1);
	ck_assert_int_eq(smtp_parse_size("000000000000000000001", 21, &v),
	    -1);
	ck_assert_int_eq(smtp_parse_size("", 0, &v), -1);
	ck_assert_int_eq(smtp_parse_size("-1", 2, &v), -1);
	ck_assert_int_eq(smtp_parse_size("+1", 2, &v), -1);
	ck_assert_int_eq(smtp_parse_size("1k", 2, &v), -1);
	ck_assert_int_eq(smtp_parse_size(" 1", 2, &v), -1);
}
END_TEST

/* DATA byte machine */

struct feed_result {
	char	 out[4096];
	size_t	 outlen;
	size_t	 used;
	int	 done;
	int	 flags;
	uint64_t header_len;
};

/* feed - run the machine over s in pieces of step bytes */
static void
feed(enum smtp_data_mode mode, const char *s, size_t len, size_t step,
    struct feed_result *r)
{
	struct smtp_data d;
	unsigned char out[4096 + 2];
	size_t off = 0, n, o, used;
	int done = 0;

	memset(r, 0, sizeof(*r));
	smtp_data_init(&d, mode, SMTP_TEXT_LINE_MAX, 200);
	while (off < len && !done) {
		n = len - off < step ? len - off : step;
		used = smtp_data_feed(&d, (const unsigned char *)s + off, n,
		    out, &o, &done);
		ck_assert(r->outlen + o < sizeof(r->out));
		memcpy(r->out + r->outlen, out, o);
		r->outlen += o;
		off += used;
	}
	if (mode == SMTP_DATA_CHUNK) {
		smtp_data_finish(&d, out, &o);
		memcpy(r->out + r->outlen, out, o);
		r->outlen += o;
	}
	r->out[r->outlen] = '\0';
	r->used = off;
	r->done = done;
	r->flags = d.flags;
	r->header_len = d.header_len;
}

START_TEST(test_data_plain)
{
	static const char msg[] =
	    "From: a@b.example\r\nSubject: x\r\n\r\n..leading dot\r\nbody\r\n"
	    ".\r\nNEXT";
	struct feed_result r;
	size_t step;

	for (step = 1; step <= sizeof(msg); step++) {
		feed(SMTP_DATA_DOT, msg, sizeof(msg) - 1, step, &r);
		ck_assert_int_eq(r.done, 1);
		ck_assert_int_eq(r.flags, 0);
		ck_assert_str_eq(r.out, "From: a@b.example\r\nSubject: x\r\n"
		    "\r\n.leading dot\r\nbody\r\n");
		/* "NEXT" is left for the command reader */
		ck_assert_uint_eq(r.used, sizeof(msg) - 1 - 4);
		ck_assert_uint_eq(r.header_len, 31);
	}
	/* empty message */
	feed(SMTP_DATA_DOT, ".\r\n", 3, 1, &r);
	ck_assert_int_eq(r.done, 1);
	ck_assert_uint_eq(r.outlen, 0);
}
END_TEST

/* every smuggling variant: none ends the data, each is flagged bare */
START_TEST(test_data_smuggling)
{
	static const char *variants[] = {
		"\n.\n", "\r\n.\n", "\n.\r\n", "\r.\r\n", "\r\n.\r",
		"\r\n.\r\r\n", "\n.\r", "\r\n\n.\r\n", "\r\n.\r.\r\n",
	};
	char msg[512];
	struct feed_result r;
	size_t i, len, step;

	for (i = 0; i < nitems(variants); i++) {
		for (step = 1; step <= 7; step += 6) {
			len = (size_t)snprintf(msg, sizeof(msg),
			    "From: a@b.example\r\n\r\nhello%sMAIL FROM:<x@y>"
			    "\r\nRCPT TO:<z@w>\r\nDATA\r\nsmuggled",
			    variants[i]);
			feed(SMTP_DATA_DOT, msg, len, step, &r);
			ck_assert_msg(r.done == 0, "variant %zu ended DATA",
			    i);
			ck_assert_uint_eq(r.used, len);
			ck_assert_msg(r.flags & SMTP_DATA_BARE,
			    "variant %zu not flagged", i);
			/* with a real end marker it ends there, once */
			len = (size_t)snprintf(msg, sizeof(msg),
			    "From: a@b.example\r\n\r\nhello%sX\r\n.\r\n",
			    variants[i]);
			feed(SMTP_DATA_DOT, msg, len, step, &r);
			ck_assert_int_eq(r.done, 1);
			ck_assert_uint_eq(r.used, len);
			ck_assert(r.flags & SMTP_DATA_BARE);
		}
	}
	/* a bare LF right at the start of a line also counts */
	feed(SMTP_DATA_DOT, "a\r\n\nb\r\n.\r\n", 10, 1, &r);
	ck_assert_int_eq(r.done, 1);
	ck_assert(r.flags & SMTP_DATA_BARE);
}
END_TEST

START_TEST(test_data_chunk)
{
	static const char msg[] = "From: a@b.example\r\n\r\nx\r\n.\r\nMAIL "
	    "FROM:<e@f>\r\n";
	struct feed_result r;

	/* BDAT: no dot processing, CRLF.CRLF is plain content */
	feed(SMTP_DATA_CHUNK, msg, sizeof(msg) - 1, 3, &r);
	ck_assert_int_eq(r.done, 0);
	ck_assert_int_eq(r.flags, 0);
	ck_assert_str_eq(r.out, msg);
	/* bare LF and bare CR are flagged in chunks too */
	feed(SMTP_DATA_CHUNK, "a\nb\r\n", 5, 1, &r);
	ck_assert(r.flags & SMTP_DATA_BARE);
	feed(SMTP_DATA_CHUNK, "a\rb\r\n", 5, 1, &r);
	ck_assert(r.flags & SMTP_DATA_BARE);
	/* a CR at the very end of the last chunk is bare */
	feed(SMTP_DATA_CHUNK, "a\r\nb\r", 5, 2, &r);
	ck_assert(r.flags & SMTP_DATA_BARE);
	/* a missing final CRLF is added */
	feed(SMTP_DATA_CHUNK, "a: b\r\n\r\nbody", 12, 5, &r);
	ck_assert_int_eq(r.flags, 0);
	ck_assert_str_eq(r.out, "a: b\r\n\r\nbody\r\n");
}
END_TEST

START_TEST(test_data_limits)
{
	char *msg = xmalloc(5000);
	struct feed_result r;
	size_t n;

	/* line of 999 octets + CRLF: too long (limit 1000 incl. CRLF) */
	n = (size_t)snprintf(msg, 5000, "a: b\r\n\r\n");
	memset(msg + n, 'x', 999);
	memcpy(msg + n + 999, "\r\n.\r\n", 5);
	feed(SMTP_DATA_DOT, msg, n + 999 + 5, 64, &r);
	ck_assert(r.flags & SMTP_DATA_LONGLINE);
	/* 998 is fine */
	memcpy(msg + n + 998, "\r\n.\r\n", 5);
	feed(SMTP_DATA_DOT, msg, n + 998 + 5, 64, &r);
	ck_assert_int_eq(r.done, 1);
	ck_assert_int_eq(r.flags & SMTP_DATA_LONGLINE, 0);
	/* header section over its limit (200 in this test) */
	n = 0;
	while (n < 400)
		n += (size_t)snprintf(msg + n, 5000 - n, "To: x@y\r\n");
	memcpy(msg + n, "\r\nbody\r\n.\r\n", 11);
	feed(SMTP_DATA_DOT, msg, n + 11, 100, &r);
	ck_assert_int_eq(r.done, 1);
	ck_assert(r.flags & SMTP_DATA_HDRBIG);
	free(msg);
}
END_TEST

/* whole-line runs and byte-at-a-time feeding agree on every input: random
 * strings over the bytes that matter (CR, LF, dot, NUL, text) */
START_TEST(test_data_runs)
{
	static const char alpha[] = "ab\r\n.\0";
	char msg[300];
	struct feed_result whole, bytes;
	unsigned seed = 12345;
	size_t len, i;
	int iter, mode;

	for (iter = 0; iter < 4000; iter++) {
		len = 1 + (size_t)(iter % (int)sizeof(msg));
		for (i = 0; i < len; i++) {
			seed = seed * 1103515245u + 12345u;
			msg[i] = alpha[(seed >> 16) % (sizeof(alpha) - 1)];
		}
		mode = iter % 2 ? SMTP_DATA_DOT : SMTP_DATA_CHUNK;
		feed((enum smtp_data_mode)mode, msg, len, len, &whole);
		feed((enum smtp_data_mode)mode, msg, len, 1, &bytes);
		ck_assert_uint_eq(whole.outlen, bytes.outlen);
		ck_assert(memcmp(whole.out, bytes.out, whole.outlen) == 0);
		ck_assert_uint_eq(whole.used, bytes.used);
		ck_assert_int_eq(whole.done, bytes.done);
		ck_assert_int_eq(whole.flags, bytes.flags);
		ck_assert_uint_eq(whole.header_len, bytes.header_len);
	}
	/* a NUL counts in the header section only, in a run or alone */
	feed(SMTP_DATA_DOT, "a: b\0c\r\n\r\nx\r\n.\r\n", 16, 16, &whole);
	ck_assert(whole.flags & SMTP_DATA_NUL);
	feed(SMTP_DATA_DOT, "a: b\r\n\r\nx\0y\r\n.\r\n", 16, 16, &whole);
	ck_assert_int_eq(whole.done, 1);
	ck_assert_int_eq(whole.flags & SMTP_DATA_NUL, 0);
}
END_TEST

/* header section */

START_TEST(test_header_scan)
{
	static const char h1[] = "From: \"A\" <a@b.example>\r\nSubject: x\r\n"
	    " folded\r\nMessage-ID: <1@x>\r\nDate: now\r\n";
	struct smtp_hdrinfo h;
	const char *err = NULL;

	ck_assert_int_eq(smtp_header_scan(h1, sizeof(h1) - 1, &h, &err), 0);
	ck_assert_uint_eq(h.nfrom, 1);
	ck_assert_uint_eq(h.nmsgid, 1);
	ck_assert_uint_eq(h.ndate, 1);
	ck_assert_uint_eq(h.from_len, 18);
	ck_assert(memcmp(h1 + h.from_off, " \"A\" <a@b.example>", 18) == 0);
	ck_assert(memcmp(h1 + h.msgid_off, " <1@x>", 6) == 0);

	ck_assert_int_eq(smtp_header_scan("no colon here\r\n", 15, &h, &err),
	    -1);
	ck_assert_int_eq(smtp_header_scan(" starts folded\r\n", 16, &h,
	    &err), -1);
	ck_assert_int_eq(smtp_header_scan("A: b\nC: d\r\n", 11, &h, &err),
	    -1);
	ck_assert_int_eq(smtp_header_scan("A: b\rC: d\r\n", 11, &h, &err),
	    -1);
	ck_assert_int_eq(smtp_header_scan(":x\r\n", 4, &h, &err), -1);
	ck_assert_int_eq(smtp_header_scan("From: a@b\r\nfrom: c@d\r\n", 22,
	    &h, &err), 0);
	ck_assert_uint_eq(h.nfrom, 2);
	/* folded From keeps its continuation */
	ck_assert_int_eq(smtp_header_scan("From: A\r\n <a@b.c>\r\n", 19, &h,
	    &err), 0);
	ck_assert_uint_eq(h.from_len, 12);
}
END_TEST

static int
from(const char *v, char *l, char *d)
{
	const char *err = NULL;

	return smtp_header_from(v, strlen(v), l, d, &err);
}

START_TEST(test_8bit_keyword)
{
	static const char a[] = "<j\xf6rg@x>", b[] = "<jorg@x>";
	static const char p[] = " SIZE=10 smtputf8  BODY=8BITMIME";

	ck_assert_int_eq(smtp_8bit(a, a + sizeof(a) - 1), 1);
	ck_assert_int_eq(smtp_8bit(b, b + sizeof(b) - 1), 0);
	ck_assert_int_eq(smtp_8bit(a, a + 2), 0);	/* stops at end */
	ck_assert_int_eq(smtp_has_keyword(p, p + sizeof(p) - 1, "SMTPUTF8"),
	    1);
	ck_assert_int_eq(smtp_has_keyword(p, p + sizeof(p) - 1, "SIZE"), 0);
	ck_assert_int_eq(smtp_has_keyword(p, p + sizeof(p) - 1, "BODY"), 0);
	ck_assert_int_eq(smtp_has_keyword(p, p + 10, "SMTPUTF8"), 0);
	ck_assert_int_eq(smtp_has_keyword(p, p + 17, "SMTPUTF8"), 1);
	ck_assert_int_eq(smtp_has_keyword(p, p + 16, "SMTPUTF8"), 0);
	ck_assert_int_eq(smtp_has_keyword(p, p, "SMTPUTF8"), 0);
}
END_TEST

START_TEST(test_header_from)
{
	char l[LOCALPART_MAX_LEN + 1], d[DOMAIN_MAX_LEN + 1];
	static const struct { const char *v, *local, *domain; } ok[] = {
		{ " a@b.example", "a", "b.example" },
		{ " John Doe <john@x.example>", "john", "x.example" },
		{ " \"Doe, John\" <john@x.example>", "john", "x.example" },
		{ " john@x.example (John Doe)", "john", "x.example" },
		{ " (c) <john@x.example> (d (nested))", "john", "x.example" },
		{ " =?UTF-8?B?w6lsw6g=?= <e@x.example>", "e", "x.example" },
		{ " =?utf-8?q?a_b?=\r\n <e@x.example>", "e", "x.example" },
		{ " \"q u\"@x.example", "\"q u\"", "x.example" },
		{ " <@route.example:r@x.example>", "r", "x.example" },
		{ " J\xc3\xb6rg <j\xc3\xb6rg@b\xc3\xbc" "cher.example>",
		    "j\xc3\xb6rg", "b\xc3\xbc" "cher.example" },
	};
	size_t i;

	for (i = 0; i < nitems(ok); i++) {
		ck_assert_msg(from(ok[i].v, l, d) == SMTP_FROM_OK, "case %zu",
		    i);
		ck_assert_str_eq(l, ok[i].local);
		ck_assert_str_eq(d, ok[i].domain);
	}
	/* more than one mailbox or a group: not exactly one */
	ck_assert_int_eq(from(" a@b.example, c@d.example", l, d),
	    SMTP_FROM_NOTONE);
	ck_assert_int_eq(from(" Team: a@b.example;", l, d),
	    SMTP_FROM_NOTONE);
	ck_assert_int_eq(from(" Undisclosed:;", l, d), SMTP_FROM_NOTONE);
	/* malformed */
	ck_assert_int_eq(from("", l, d), SMTP_FROM_SYNTAX);
	ck_assert_int_eq(from(" (only a comment)", l, d), SMTP_FROM_SYNTAX);
	ck_assert_int_eq(from(" John a@b.example", l, d), SMTP_FROM_SYNTAX);
	ck_assert_int_eq(from(" <a@b.example", l, d), SMTP_FROM_SYNTAX);
	ck_assert_int_eq(from(" <a@b.example> <c@d.example>", l, d),
	    SMTP_FROM_SYNTAX);
	ck_assert_int_eq(from(" <nodomain>", l, d), SMTP_FROM_SYNTAX);
	ck_assert_int_eq(from(" <a@[192.0.2.1]>", l, d), SMTP_FROM_SYNTAX);
	ck_assert_int_eq(from(" a@b.example (open", l, d), SMTP_FROM_SYNTAX);
	ck_assert_int_eq(from(" <a@bad_domain.example>", l, d),
	    SMTP_FROM_SYNTAX);
}
END_TEST

static Suite *
smtp_parse_suite(void)
{
	Suite *s = suite_create("smtp_parse");
	TCase *tc;

	tc = tcase_create("commands");
	tcase_add_test(tc, test_cmd_split);
	tcase_add_test(tc, test_path_basic);
	tcase_add_test(tc, test_path_bad);
	tcase_add_test(tc, test_path_utf8);
	tcase_add_test(tc, test_params);
	tcase_add_test(tc, test_xtext);
	tcase_add_test(tc, test_size);
	suite_add_tcase(s, tc);

	tc = tcase_create("data");
	tcase_add_test(tc, test_data_plain);
	tcase_add_test(tc, test_data_smuggling);
	tcase_add_test(tc, test_data_chunk);
	tcase_add_test(tc, test_data_limits);
	tcase_add_test(tc, test_data_runs);
	suite_add_tcase(s, tc);

	tc = tcase_create("headers");
	tcase_add_test(tc, test_header_scan);
	tcase_add_test(tc, test_header_from);
	tcase_add_test(tc, test_8bit_keyword);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(smtp_parse_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
