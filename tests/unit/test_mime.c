/*
 * test_mime.c - unit tests for the MIME builder (mime.c): the encoders
 * (quoted-printable, base64 lines, RFC 2047 words), addr-spec validation,
 * every validation error with its JSON target, and the structure built for
 * each combination of text, html, inline and regular attachments, checked
 * with Petrel's own header scanner (smtp_parse.c) and line rules.
 *
 * JSON in this file is written with ' for " (see j()).
 */
#include "autoconf.h"

#include <stdlib.h>
#include <string.h>

#include <check.h>
#include <event2/buffer.h>
#include <jansson.h>

#include "mime.h"
#include "smtp_parse.h"
#include "util.h"

/* j - JSON from a C literal written with ' instead of " */
static json_t *
j(const char *s)
{
	json_error_t e;
	char *t = xstrdup(s), *p;
	json_t *v;

	for (p = t; *p; p++)
		if (*p == '\'')
			*p = '"';
	v = json_loads(t, JSON_REJECT_DUPLICATES, &e);
	if (v == NULL)
		ck_abort_msg("bad test JSON: %s: %s", e.text, t);
	free(t);
	return v;
}

/* evstr - the buffer's contents as a NUL-terminated string */
static char *
evstr(struct evbuffer *b, size_t *len_r)
{
	size_t len = evbuffer_get_length(b);
	char *s = xmalloc(len + 1);

	evbuffer_remove(b, s, len);
	s[len] = '\0';
	if (len_r != NULL)
		*len_r = len;
	return s;
}

/* qp - mime_qp_encode of a string */
static char *
qp(const char *s)
{
	struct evbuffer *b = evbuffer_new();
	char *r;

	mime_qp_encode((const unsigned char *)s, strlen(s), b);
	r = evstr(b, NULL);
	evbuffer_free(b);
	return r;
}

/* unqp - decode quoted-printable (test oracle) */
static char *
unqp(const char *s)
{
	char *r = xmalloc(strlen(s) + 1), *o = r;
	unsigned int x;

	while (*s) {
		if (s[0] == '=' && s[1] == '\r' && s[2] == '\n')
			s += 3;
		else if (s[0] == '=') {
			ck_assert(sscanf(s + 1, "%2X", &x) == 1);
			*o++ = (char)x;
			s += 3;
		} else
			*o++ = *s++;
	}
	*o = '\0';
	return r;
}

/* check_lines - CRLF everywhere, no bare CR/LF/NUL, lines <= max, and
 * the text ends with CRLF */
static void
check_lines_end(const char *m, size_t len, size_t max, int crlf_end)
{
	size_t i, start = 0;

	for (i = 0; i < len; i++) {
		if (m[i] == '\r') {
			ck_assert_msg(i + 1 < len && m[i + 1] == '\n',
			    "bare CR at %zu", i);
			ck_assert_msg(i - start <= max, "line of %zu > %zu: "
			    "%.40s", i - start, max, m + start);
			i++;
			start = i + 1;
		} else {
			ck_assert_msg(m[i] != '\n', "bare LF at %zu", i);
			ck_assert_msg(m[i] != '\0', "NUL at %zu", i);
		}
	}
	if (crlf_end)
		ck_assert_uint_eq(start, len);
}

static void
check_lines(const char *m, size_t len, size_t max)
{
	check_lines_end(m, len, max, 1);
}

/* ---- quoted-printable */

START_TEST(test_qp_basic)
{
	static const struct { const char *in, *out; } v[] = {
		{ "hello", "hello" },
		{ "a=b", "a=3Db" },
		{ "caf\xc3\xa9", "caf=C3=A9" },
		{ "trailing \r\nnext", "trailing=20\r\nnext" },
		{ "tab\t\r\n", "tab=09\r\n" },
		{ "end ", "end=20" },
		{ "in the middle ok", "in the middle ok" },
		{ "\r\n\r\n", "\r\n\r\n" },
		{ "ctl\x01", "ctl=01" },
		{ "~!", "~!" },
	};
	size_t i;

	for (i = 0; i < nitems(v); i++) {
		char *e = qp(v[i].in);

		ck_assert_str_eq(e, v[i].out);
		free(e);
	}
}
END_TEST

START_TEST(test_qp_soft_breaks)
{
	char in[400], *e, *d, *line, *save;
	size_t n, i;

	/* exactly 76 characters: no break; 77: one soft break */
	memset(in, 'a', 76);
	in[76] = '\0';
	e = qp(in);
	ck_assert_str_eq(e, in);
	free(e);
	in[76] = 'b';
	in[77] = '\0';
	e = qp(in);
	ck_assert_uint_eq(strlen(e), 80);
	ck_assert(strncmp(e + 75, "=\r\nab", 5) == 0);
	free(e);

	/* escapes are never split; every line <= 76; decodes back */
	for (n = 1; n < 130; n++) {
		for (i = 0; i < n; i++)
			in[i] = "a\xc3\xa9= \t"[i % 6];
		in[n] = '\0';
		e = qp(in);
		check_lines_end(e, strlen(e), 76, 0);
		d = unqp(e);
		ck_assert_str_eq(d, in);
		free(d);
		for (line = strtok_r(e, "\r\n", &save); line != NULL;
		    line = strtok_r(NULL, "\r\n", &save)) {
			size_t l = strlen(line);

			ck_assert_uint_le(l, 76);
			/* no line ends in white space or a cut escape */
			ck_assert(line[l - 1] != ' ' && line[l - 1] != '\t');
			ck_assert(l < 2 || line[l - 2] != '=');
		}
		free(e);
	}
}
END_TEST

START_TEST(test_qp_soft_break_before_trailing_space)
{
	char in[100], *e, *d;

	/* 75 'x' then a space at the very end: the encoded space (3 chars)
	 * cannot join the first line */
	memset(in, 'x', 75);
	in[75] = ' ';
	in[76] = '\0';
	e = qp(in);
	ck_assert_str_eq(e + 75, "=\r\n=20");
	d = unqp(e);
	ck_assert_str_eq(d, in);
	free(d);
	free(e);
}
END_TEST

/* ---- base64 */

START_TEST(test_b64_lines)
{
	static const size_t sizes[] = { 0, 1, 2, 3, 56, 57, 58, 114, 1000 };
	unsigned char data[1000], dec[1000];
	struct evbuffer *b;
	size_t i, len, o;
	char *s, *p, *nl;

	for (i = 0; i < nitems(sizes); i++) {
		util_random(data, sizes[i]);
		b = evbuffer_new();
		mime_b64_encode(data, sizes[i], b);
		s = evstr(b, &len);
		evbuffer_free(b);
		if (sizes[i] == 0) {
			ck_assert_uint_eq(len, 0);
			free(s);
			continue;
		}
		check_lines(s, len, 76);
		ck_assert_uint_eq(len, 4 * ((sizes[i] + 2) / 3) +
		    2 * ((sizes[i] + 56) / 57));
		for (o = 0, p = s; *p; p = nl + 2) {
			long n;

			nl = strstr(p, "\r\n");
			ck_assert(nl != NULL);
			/* every line but the last is exactly 76 */
			if (nl[2] != '\0')
				ck_assert_int_eq(nl - p, 76);
			n = util_b64_decode(p, (size_t)(nl - p), dec + o);
			ck_assert_int_ge(n, 0);
			o += (size_t)n;
		}
		ck_assert_uint_eq(o, sizes[i]);
		ck_assert(memcmp(dec, data, o) == 0);
		free(s);
	}
}
END_TEST

/* ---- RFC 2047 */

/* ew_decode - payload bytes of one encoded word (test oracle) */
static size_t
ew_decode(const char *w, unsigned char *out)
{
	size_t len = strlen(w), n = 0;
	const char *p;
	unsigned int x;
	long r;

	ck_assert(strncmp(w, "=?utf-8?", 8) == 0);
	ck_assert(strcmp(w + len - 2, "?=") == 0);
	if (w[8] == 'b') {
		r = util_b64_decode(w + 10, len - 12, out);
		ck_assert_int_ge(r, 0);
		return (size_t)r;
	}
	ck_assert(w[8] == 'q');
	for (p = w + 10; p < w + len - 2; ) {
		if (*p == '_') {
			out[n++] = ' ';
			p++;
		} else if (*p == '=') {
			ck_assert(sscanf(p + 1, "%2X", &x) == 1);
			out[n++] = (unsigned char)x;
			p += 3;
		} else {
			ck_assert(strchr("?= \t", *p) == NULL);
			out[n++] = (unsigned char)*p++;
		}
	}
	return n;
}

START_TEST(test_ew_q_ascii)
{
	char w[MIME_EW_MAX + 1];
	const char *s = "Hello World?";
	size_t pos = 0, n;

	n = mime_ew_next((const unsigned char *)s, strlen(s), &pos, 0, 75, w);
	ck_assert_str_eq(w, "=?utf-8?q?Hello_World=3F?=");
	ck_assert_uint_eq(n, strlen(w));
	ck_assert_uint_eq(pos, strlen(s));
}
END_TEST

START_TEST(test_ew_split_multibyte)
{
	/* euro (3 bytes), emoji (4 bytes), e-acute (2 bytes), ASCII */
	static const char *texts[] = {
		"\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac"
		"\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac",
		"\xf0\x9f\x98\x80\xf0\x9f\x98\x80\xf0\x9f\x98\x80" "a\xf0\x9f\x98"
		"\x80\xf0\x9f\x98\x80",
		"caf\xc3\xa9 cr\xc3\xa8me br\xc3\xbbl\xc3\xa9" "e \xc3\xa0 la "
		"fran\xc3\xa7" "aise, tr\xc3\xa8s long",
	};
	unsigned char dec[512], all[512];
	char w[MIME_EW_MAX + 1];
	size_t t, maxlen, pos, n, o;
	int b;

	for (t = 0; t < nitems(texts); t++) {
		const unsigned char *s = (const unsigned char *)texts[t];
		size_t len = strlen(texts[t]);

		for (b = 0; b <= 1; b++) {
			for (maxlen = MIME_EW_MIN; maxlen <= MIME_EW_MAX;
			    maxlen++) {
				for (pos = 0, o = 0; pos < len; ) {
					size_t before = pos;

					n = mime_ew_next(s, len, &pos, b,
					    maxlen, w);
					ck_assert_uint_le(n, maxlen);
					ck_assert_uint_eq(n, strlen(w));
					ck_assert_uint_gt(pos, before);
					n = ew_decode(w, dec);
					ck_assert_uint_eq(n, pos - before);
					/* each word is valid UTF-8 alone */
					ck_assert(smtp_valid_utf8(dec, n));
					memcpy(all + o, dec, n);
					o += n;
				}
				ck_assert_uint_eq(o, len);
				ck_assert(memcmp(all, s, len) == 0);
			}
		}
	}
}
END_TEST

/* ---- addresses */

START_TEST(test_valid_addr)
{
	static const struct { const char *in, *norm; } ok[] = {
		{ "a@example.com", "a@example.com" },
		{ "First.Last+tag@Example.COM", "First.Last+tag@example.com" },
		{ "\"john doe\"@example.org", "\"john doe\"@example.org" },
		{ "\"a\\\"b\"@example.org", "\"a\\\"b\"@example.org" },
		{ "x@B\xc3\xbc" "cher.example", "x@xn--bcher-kva.example" },
		{ "o'neil@example.com", "o'neil@example.com" },
	};
	static const char *bad[] = {
		"", "a", "@example.com", "a@", ".a@example.com",
		"a..b@example.com", "a.@example.com", "a b@example.com",
		"j\xc3\xb6@example.com", "a@[192.0.2.1]", "a@localhost",
		"a@-bad.example", "a@exa mple.com", "\"open@example.com",
		"a@b@example.com", "<a@example.com>", "a@example..com",
		"\"\"@example.com",
		"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
		"aaaaa@example.com",
	};
	const char *err;
	char *norm, *dom;
	size_t i;

	for (i = 0; i < nitems(ok); i++) {
		ck_assert_msg(mime_valid_addr(ok[i].in, strlen(ok[i].in),
		    &norm, &dom, &err) == 0, "%s: %s", ok[i].in, err);
		ck_assert_str_eq(norm, ok[i].norm);
		ck_assert_str_eq(dom, strrchr(ok[i].norm, '@') + 1);
		free(norm);
		free(dom);
	}
	for (i = 0; i < nitems(bad); i++) {
		err = NULL;
		ck_assert_msg(mime_valid_addr(bad[i], strlen(bad[i]), &norm,
		    NULL, &err) == -1, "accepted %s", bad[i]);
		ck_assert(norm == NULL && err != NULL);
	}
}
END_TEST

/* ---- validation errors */

#define BASE "{'senderAddress':'sender@example.com'," \
	"'content':{'subject':'Hi','plainText':'text'}," \
	"'recipients':{'to':[{'address':'to@example.org'}]}}"

/* build_rc - mime_build of BASE merged with patch; returns rc and, on
 * error, the target ("(null)" when none) and code */
static int
build_rc(json_t *msg, const struct mime_opts *o, char **target_r,
    char **code_r)
{
	struct evbuffer *out = evbuffer_new();
	struct mime_info info;
	char *code, *target, *m;
	int rc;

	rc = mime_build(msg, o, out, &info, &code, &target, &m);
	if (rc == MIME_OK) {
		ck_assert(code == NULL && target == NULL && m == NULL);
		mime_info_free(&info);
		*target_r = NULL;
		*code_r = NULL;
	} else {
		/* nothing written, nothing returned in info */
		ck_assert_uint_eq(evbuffer_get_length(out), 0);
		ck_assert(info.sender == NULL && info.nrcpts == 0);
		ck_assert(code != NULL && m != NULL && m[0] != '\0');
		*target_r = target != NULL ? target : xstrdup("(null)");
		*code_r = code;
		free(m);
	}
	evbuffer_free(out);
	return rc;
}

static json_t *
patched(const char *patch)
{
	json_t *base = j(BASE), *p;

	if (patch != NULL) {
		p = j(patch);
		ck_assert(json_object_update_recursive(base, p) == 0);
		json_decref(p);
	}
	return base;
}

START_TEST(test_base_ok)
{
	json_t *m = patched(NULL);
	char *t, *c;

	ck_assert_int_eq(build_rc(m, NULL, &t, &c), MIME_OK);
	json_decref(m);
}
END_TEST

static const struct {
	const char	*patch;
	const char	*target;
} errcases[] = {
	{ "{'senderAddress':null}", "senderAddress" },
	{ "{'senderAddress':5}", "senderAddress" },
	{ "{'senderAddress':'nobody'}", "senderAddress" },
	{ "{'senderAddress':'Name <a@example.com>'}", "senderAddress" },
	{ "{'content':null}", "content" },
	{ "{'content':'text'}", "content" },
	{ "{'content':{'subject':null}}", "content.subject" },
	{ "{'content':{'subject':3}}", "content.subject" },
	{ "{'content':{'subject':'a\\r\\nBcc: x@example.com'}}",
	    "content.subject" },
	{ "{'content':{'subject':'a\\u0001b'}}", "content.subject" },
	{ "{'content':{'plainText':null}}", "content" },
	{ "{'content':{'plainText':''}}", "content" },
	{ "{'content':{'plainText':5}}", "content.plainText" },
	{ "{'content':{'html':true}}", "content.html" },
	{ "{'recipients':null}", "recipients" },
	{ "{'recipients':[]}", "recipients" },
	{ "{'recipients':{'to':null}}", "recipients" },
	{ "{'recipients':{'to':[]}}", "recipients" },
	{ "{'recipients':{'to':'to@example.org'}}", "recipients.to" },
	{ "{'recipients':{'to':[5]}}", "recipients.to[0]" },
	{ "{'recipients':{'to':[{}]}}", "recipients.to[0].address" },
	{ "{'recipients':{'to':[{'address':7}]}}",
	    "recipients.to[0].address" },
	{ "{'recipients':{'to':[{'address':'x'}]}}",
	    "recipients.to[0].address" },
	{ "{'recipients':{'to':[{'address':'a@example.org'},"
	    "{'address':'b@@example.org'}]}}", "recipients.to[1].address" },
	{ "{'recipients':{'cc':[{'address':'a@example'}]}}",
	    "recipients.cc[0].address" },
	{ "{'recipients':{'bcc':[{'address':'a@ex ample.org'}]}}",
	    "recipients.bcc[0].address" },
	{ "{'recipients':{'to':[{'address':'a@example.org',"
	    "'displayName':5}]}}", "recipients.to[0].displayName" },
	{ "{'recipients':{'to':[{'address':'a@example.org',"
	    "'displayName':'a\\nb'}]}}", "recipients.to[0].displayName" },
	{ "{'recipients':{'to':[{'address':'a@example.org',"
	    "'displayName':'a\\tb'}]}}", "recipients.to[0].displayName" },
	{ "{'replyTo':{'address':'a@example.org'}}", "replyTo" },
	{ "{'replyTo':[{'address':'bad'}]}", "replyTo[0].address" },
	{ "{'attachments':{}}", "attachments" },
	{ "{'attachments':['x']}", "attachments[0]" },
	{ "{'attachments':[{'contentType':'text/plain',"
	    "'contentInBase64':'QQ=='}]}", "attachments[0].name" },
	{ "{'attachments':[{'name':'a\\nb','contentType':'text/plain',"
	    "'contentInBase64':'QQ=='}]}", "attachments[0].name" },
	{ "{'attachments':[{'name':'a','contentType':'png',"
	    "'contentInBase64':'QQ=='}]}", "attachments[0].contentType" },
	{ "{'attachments':[{'name':'a','contentType':'text/plain; x=y',"
	    "'contentInBase64':'QQ=='}]}", "attachments[0].contentType" },
	{ "{'attachments':[{'name':'a','contentType':'text/plain'}]}",
	    "attachments[0].contentInBase64" },
	{ "{'attachments':[{'name':'a','contentType':'text/plain',"
	    "'contentInBase64':'QQ=='},{'name':'b','contentType':'text/plain',"
	    "'contentInBase64':'!!!!'}]}", "attachments[1].contentInBase64" },
	{ "{'attachments':[{'name':'a','contentType':'text/plain',"
	    "'contentInBase64':'QQ'}]}", "attachments[0].contentInBase64" },
	{ "{'attachments':[{'name':'a','contentType':'image/png',"
	    "'contentInBase64':'QQ==','contentId':'a b'}]}",
	    "attachments[0].contentId" },
	{ "{'attachments':[{'name':'a','contentType':'image/png',"
	    "'contentInBase64':'QQ==','contentId':'<x>'}]}",
	    "attachments[0].contentId" },
	{ "{'attachments':[{'name':'a','contentType':'image/png',"
	    "'contentInBase64':'QQ==','contentId':'x'},{'name':'b',"
	    "'contentType':'image/png','contentInBase64':'QQ==',"
	    "'contentId':'x'}]}", "attachments[1].contentId" },
	{ "{'headers':['X-A']}", "headers" },
	{ "{'headers':{'X-Foo':5}}", "headers.X-Foo" },
	{ "{'headers':{'X-Foo':'a\\r\\nBcc: evil@example.com'}}",
	    "headers.X-Foo" },
	{ "{'headers':{'X-Foo':'a\\nb'}}", "headers.X-Foo" },
	{ "{'headers':{'X-Foo':'a\\rb'}}", "headers.X-Foo" },
	{ "{'headers':{'From':'x@example.com'}}", "headers.From" },
	{ "{'headers':{'message-id':'<x@y>'}}", "headers.message-id" },
	{ "{'headers':{'BCC':'x@example.com'}}", "headers.BCC" },
	{ "{'headers':{'Date':'x'}}", "headers.Date" },
	{ "{'headers':{'Sender':'x'}}", "headers.Sender" },
	{ "{'headers':{'DKIM-Signature':'x'}}", "headers.DKIM-Signature" },
	{ "{'headers':{'Return-Path':'x'}}", "headers.Return-Path" },
	{ "{'headers':{'Received':'x'}}", "headers.Received" },
	{ "{'headers':{'MIME-Version':'2.0'}}", "headers.MIME-Version" },
	{ "{'headers':{'Content-Transfer-Encoding':'8bit'}}",
	    "headers.Content-Transfer-Encoding" },
	{ "{'headers':{'Content-Type':'text/plain'}}",
	    "headers.Content-Type" },
	{ "{'headers':{'Reply-To':'x@example.com'}}", "headers.Reply-To" },
	{ "{'headers':{'To':'x@example.com'}}", "headers.To" },
	{ "{'headers':{'Cc':'x@example.com'}}", "headers.Cc" },
	{ "{'headers':{'Bad Name':'x'}}", "headers.Bad Name" },
	{ "{'headers':{'X:Y':'x'}}", "headers.X:Y" },
	{ "{'headers':{'':'x'}}", "headers." },
	{ "{'headers':{'X-\\u00e9':'x'}}", "headers.X-\xc3\xa9" },
	{ "{'userEngagementTrackingDisabled':'yes'}",
	    "userEngagementTrackingDisabled" },
};

START_TEST(test_errors)
{
	json_t *m = patched(errcases[_i].patch);
	char *t, *c;
	int rc;

	rc = build_rc(m, NULL, &t, &c);
	ck_assert_msg(rc == MIME_EINVAL, "%s: rc %d", errcases[_i].patch, rc);
	ck_assert_str_eq(c, "BadRequest");
	ck_assert_msg(strcmp(t, errcases[_i].target) == 0, "%s: target %s",
	    errcases[_i].patch, t);
	free(t);
	free(c);
	json_decref(m);
}
END_TEST

START_TEST(test_error_root)
{
	json_t *m = j("['not','an','object']");
	char *t, *c;

	ck_assert_int_eq(build_rc(m, NULL, &t, &c), MIME_EINVAL);
	ck_assert_str_eq(t, "(null)");
	free(t);
	free(c);
	json_decref(m);
}
END_TEST

START_TEST(test_error_nul_in_header_value)
{
	json_t *m = patched("{'headers':{}}");
	char *t, *c;

	json_object_set_new(json_object_get(m, "headers"), "X-Nul",
	    json_stringn("a\0b", 3));
	ck_assert_int_eq(build_rc(m, NULL, &t, &c), MIME_EINVAL);
	ck_assert_str_eq(t, "headers.X-Nul");
	free(t);
	free(c);
	json_decref(m);
}
END_TEST

START_TEST(test_error_too_many_recipients)
{
	json_t *m = patched(NULL), *to, *bcc;
	char addr[64], *t, *c;
	struct mime_opts o;
	size_t i;

	to = json_object_get(json_object_get(m, "recipients"), "to");
	bcc = json_array();
	json_object_set_new(json_object_get(m, "recipients"), "bcc", bcc);
	for (i = 1; i < 30; i++) {
		snprintf(addr, sizeof(addr), "t%zu@example.org", i);
		json_array_append_new(to, json_pack("{s:s}", "address", addr));
	}
	for (i = 0; i < 20; i++) {
		snprintf(addr, sizeof(addr), "b%zu@example.org", i);
		json_array_append_new(bcc, json_pack("{s:s}", "address",
		    addr));
	}
	/* 50: fine */
	ck_assert_int_eq(build_rc(m, NULL, &t, &c), MIME_OK);
	json_array_append_new(bcc, json_pack("{s:s}", "address",
	    "one-more@example.org"));
	ck_assert_int_eq(build_rc(m, NULL, &t, &c), MIME_EINVAL);
	ck_assert_str_eq(t, "recipients");
	free(t);
	free(c);
	/* the limit is an option */
	memset(&o, 0, sizeof(o));
	o.max_rcpts = 60;
	ck_assert_int_eq(build_rc(m, &o, &t, &c), MIME_OK);
	json_decref(m);
}
END_TEST

START_TEST(test_error_attachment_too_big)
{
	json_t *m = patched("{'attachments':[{'name':'a','contentType':"
	    "'application/octet-stream','contentInBase64':'QUJDRA=='},"
	    "{'name':'b','contentType':'application/octet-stream',"
	    "'contentInBase64':'QUJDRA=='}]}");
	struct mime_opts o;
	char *t, *c;

	memset(&o, 0, sizeof(o));
	o.max_attach = 8;		/* exactly 4 + 4 decoded bytes */
	ck_assert_int_eq(build_rc(m, &o, &t, &c), MIME_OK);
	o.max_attach = 7;
	ck_assert_int_eq(build_rc(m, &o, &t, &c), MIME_ETOOBIG);
	ck_assert_str_eq(t, "attachments[1].contentInBase64");
	ck_assert_str_eq(c, "RequestEntityTooLarge");
	free(t);
	free(c);
	o.max_attach = 3;
	ck_assert_int_eq(build_rc(m, &o, &t, &c), MIME_ETOOBIG);
	ck_assert_str_eq(t, "attachments[0].contentInBase64");
	free(t);
	free(c);
	json_decref(m);
}
END_TEST

/* ---- structure */

struct built {
	char		*msg;
	size_t		 len;
	size_t		 hdrlen;	/* header section, without blank line */
	struct mime_info info;
};

static void
build_ok(json_t *m, const struct mime_opts *o, struct built *r)
{
	struct evbuffer *out = evbuffer_new();
	char *code, *target, *msg, *end;
	int rc;

	rc = mime_build(m, o, out, &r->info, &code, &target, &msg);
	ck_assert_msg(rc == MIME_OK, "%s: %s", target, msg);
	r->msg = evstr(out, &r->len);
	ck_assert_uint_eq(r->len, r->info.size);
	evbuffer_free(out);
	check_lines(r->msg, r->len, MIME_LINE_MAX);
	end = strstr(r->msg, "\r\n\r\n");
	ck_assert(end != NULL);
	r->hdrlen = (size_t)(end - r->msg) + 2;
}

static void
built_free(struct built *r)
{
	free(r->msg);
	mime_info_free(&r->info);
}

/* header_ok - Petrel's SMTP side accepts the header section: well formed,
 * exactly one From holding exactly the sender, one Date, one Message-ID */
static void
header_ok(const struct built *r)
{
	struct smtp_hdrinfo h;
	char local[LOCALPART_MAX_LEN + 1], dom[DOMAIN_MAX_LEN + 1], *a;
	const char *err;

	ck_assert_msg(smtp_header_scan(r->msg, r->hdrlen, &h, &err) == 0,
	    "%s", err);
	ck_assert_uint_eq(h.nfrom, 1);
	ck_assert_uint_eq(h.ndate, 1);
	ck_assert_uint_eq(h.nmsgid, 1);
	ck_assert_int_eq(smtp_header_from(r->msg + h.from_off, h.from_len,
	    local, dom, &err), SMTP_FROM_OK);
	a = xasprintf("%s@%s", local, dom);
	ck_assert_str_eq(a, r->info.header_from);
	free(a);
	ck_assert(strncmp(r->msg + h.msgid_off + (r->msg[h.msgid_off] == ' '),
	    r->info.message_id, strlen(r->info.message_id)) == 0);
}

/* count - occurrences of s in the message */
static size_t
count(const struct built *r, const char *s)
{
	size_t n = 0;
	const char *p = r->msg;

	while ((p = strstr(p, s)) != NULL) {
		n++;
		p += strlen(s);
	}
	return n;
}

#define ATT_INLINE "{'name':'logo.png','contentType':'image/png'," \
	"'contentInBase64':'iVBORw0KGgo=','contentId':'logo@x'}"
#define ATT_FILE "{'name':'a.bin','contentType':'application/octet-stream'," \
	"'contentInBase64':'AAEC'}"

static const struct {
	const char	*content;	/* content patch */
	const char	*atts;		/* attachments array */
	const char	*top;		/* top Content-Type */
	int		 alt, related, mixed;
} shapes[] = {
	{ "{'plainText':'t'}", NULL, "text/plain", 0, 0, 0 },
	{ "{'plainText':null,'html':'<b>h</b>'}", NULL, "text/html", 0, 0,
	    0 },
	{ "{'html':'<b>h</b>'}", NULL, "multipart/alternative", 1, 0, 0 },
	{ "{'html':'<img src=cid:logo@x>'}", "[" ATT_INLINE "]",
	    "multipart/related", 1, 1, 0 },
	{ "{'plainText':'t'}", "[" ATT_INLINE "]", "multipart/related", 0,
	    1, 0 },
	{ "{'plainText':'t'}", "[" ATT_FILE "]", "multipart/mixed", 0, 0,
	    1 },
	{ "{'html':'h'}", "[" ATT_FILE "]", "multipart/mixed", 1, 0, 1 },
	{ "{'html':'<img src=cid:logo@x>'}", "[" ATT_FILE "," ATT_INLINE
	    "]", "multipart/mixed", 1, 1, 1 },
	{ "{'plainText':null,'html':'<img src=cid:logo@x>'}",
	    "[" ATT_INLINE "," ATT_FILE "]", "multipart/mixed", 0, 1, 1 },
};

START_TEST(test_shapes)
{
	json_t *m = patched(NULL), *p;
	struct mime_opts o;
	struct built r;
	char *top;

	p = j(shapes[_i].content);
	json_object_update(json_object_get(m, "content"), p);
	json_decref(p);
	if (shapes[_i].atts != NULL)
		json_object_set_new(m, "attachments", j(shapes[_i].atts));
	memset(&o, 0, sizeof(o));
	o.boundary_seed = "T";
	build_ok(m, &o, &r);
	header_ok(&r);
	top = xasprintf("\r\nContent-Type: %s", shapes[_i].top);
	ck_assert_msg(strstr(r.msg, top) != NULL &&
	    (size_t)(strstr(r.msg, top) - r.msg) < r.hdrlen, "top %s",
	    shapes[_i].top);
	free(top);
	ck_assert_uint_eq(count(&r, "MIME-Version: 1.0\r\n"), 1);
	ck_assert_uint_eq(count(&r, "multipart/alternative;"),
	    (size_t)shapes[_i].alt);
	ck_assert_uint_eq(count(&r, "multipart/related;"),
	    (size_t)shapes[_i].related);
	ck_assert_uint_eq(count(&r, "multipart/mixed;"),
	    (size_t)shapes[_i].mixed);
	/* every opened multipart is closed once */
	ck_assert_uint_eq(count(&r, "\r\n--=_T.1--\r\n"),
	    (size_t)shapes[_i].mixed);
	ck_assert_uint_eq(count(&r, "\r\n--=_T.2--\r\n"),
	    (size_t)shapes[_i].related);
	ck_assert_uint_eq(count(&r, "\r\n--=_T.3--\r\n"),
	    (size_t)shapes[_i].alt);
	if (shapes[_i].related) {
		ck_assert_uint_eq(count(&r, "Content-ID: <logo@x>\r\n"), 1);
		ck_assert_uint_eq(count(&r, "Content-Disposition: inline;"),
		    1);
	}
	if (shapes[_i].mixed)
		ck_assert_uint_eq(count(&r, "Content-Disposition: "
		    "attachment;\r\n filename=\"a.bin\"\r\n"), 1);
	built_free(&r);
	json_decref(m);
}
END_TEST

START_TEST(test_headers_and_info)
{
	json_t *m = patched("{'recipients':{'to':[{'address':"
	    "'to@Example.ORG','displayName':'Smith, John'},{'address':"
	    "'two@example.org','displayName':'Plain Name'}],'cc':[{'address':"
	    "'cc@example.org','displayName':'J\\u00f6rg'}],'bcc':[{'address':"
	    "'hidden@example.org'},{'address':'TO@example.org'}]},"
	    "'replyTo':[{'address':'r@example.org','displayName':"
	    "'Say \\\"hi\\\"'}],'headers':{'X-Campaign':'spring sale',"
	    "'List-Unsubscribe':'<mailto:u@example.com>'},"
	    "'userEngagementTrackingDisabled':true}");
	struct mime_opts o;
	struct built r;

	memset(&o, 0, sizeof(o));
	o.hostname = "mta.example.net";
	o.now = 1700000000;
	build_ok(m, &o, &r);
	header_ok(&r);
	ck_assert(strncmp(r.msg, "From: sender@example.com\r\n", 26) == 0);
	ck_assert(strstr(r.msg, "\r\nTo: \"Smith, John\" <to@example.org>,"
	    " Plain Name <two@example.org>\r\n") != NULL);
	ck_assert(strstr(r.msg, "\r\nCc: =?utf-8?") != NULL);
	ck_assert(strstr(r.msg, "\r\nReply-To: \"Say \\\"hi\\\"\" "
	    "<r@example.org>\r\n") != NULL);
	ck_assert(strstr(r.msg, "\r\nDate: Tue, 14 Nov 2023 22:13:20 +0000"
	    "\r\n") != NULL);
	ck_assert(strstr(r.msg, "\r\nX-Campaign: spring sale\r\n") != NULL);
	ck_assert(strstr(r.msg, "\r\nList-Unsubscribe: "
	    "<mailto:u@example.com>\r\n") != NULL);
	ck_assert(strstr(r.msg, "hidden") == NULL);
	ck_assert(strstr(r.msg, "Bcc") == NULL);
	ck_assert(strstr(r.info.message_id, "@mta.example.net>") != NULL);
	ck_assert(r.info.message_id[0] == '<');
	ck_assert_str_eq(r.info.sender, "sender@example.com");
	ck_assert_str_eq(r.info.sender_domain, "example.com");
	ck_assert_int_eq(r.info.tracking_disabled, 1);
	/* to, cc, bcc; TO@example.org folds into to@example.org */
	ck_assert_uint_eq(r.info.nrcpts, 4);
	ck_assert_str_eq(r.info.rcpts[0], "to@example.org");
	ck_assert_str_eq(r.info.rcpts[1], "two@example.org");
	ck_assert_str_eq(r.info.rcpts[2], "cc@example.org");
	ck_assert_str_eq(r.info.rcpts[3], "hidden@example.org");
	built_free(&r);
	json_decref(m);
}
END_TEST

START_TEST(test_folding_limits)
{
	json_t *m = patched(NULL), *to;
	char addr[64], *subj, *p, *line, *save, *hdr;
	struct built r;
	size_t i;

	/* 50 named recipients, a long non-ASCII subject */
	to = json_array();
	for (i = 0; i < 50; i++) {
		snprintf(addr, sizeof(addr), "user%zu@example.org", i);
		json_array_append_new(to, json_pack("{s:s, s:s}", "address",
		    addr, "displayName", i % 2 ? "Andr\xc3\xa9 \xe6\x97\xa5"
		    "\xe6\x9c\xac" : "Some Person"));
	}
	json_object_set_new(json_object_get(m, "recipients"), "to", to);
	subj = xmalloc(150 * 10 + 1);
	for (p = subj, i = 0; i < 150; i++) {
		memcpy(p, "\xe2\x82\xac" "abc de ", 10);
		p += 10;
	}
	*p = '\0';
	json_object_set_new(json_object_get(m, "content"), "subject",
	    json_string(subj));
	free(subj);
	build_ok(m, NULL, &r);
	header_ok(&r);
	hdr = xstrndup(r.msg, r.hdrlen);
	for (line = strtok_r(hdr, "\r\n", &save); line != NULL;
	    line = strtok_r(NULL, "\r\n", &save)) {
		/* RFC 2047 lines <= 76, all others <= 78 here */
		if (strstr(line, "=?") != NULL)
			ck_assert_msg(strlen(line) <= 76, "%s", line);
		else
			ck_assert_msg(strlen(line) <= 78, "%s", line);
		/* continuation lines start with white space, never blank */
		ck_assert(line[strspn(line, " \t")] != '\0');
	}
	free(hdr);
	ck_assert_uint_eq(count(&r, "@example.org>"), 50);
	built_free(&r);
	json_decref(m);
}
END_TEST

START_TEST(test_long_ascii_subject_folds)
{
	json_t *m = patched(NULL);
	struct built r;
	char subj[600], *p;
	size_t i;

	for (p = subj, i = 0; i < 100; i++) {
		memcpy(p, "word ", 5);
		p += 5;
	}
	p[-1] = '\0';
	json_object_set_new(json_object_get(m, "content"), "subject",
	    json_string(subj));
	build_ok(m, NULL, &r);
	/* plain text, not encoded, folded before spaces */
	ck_assert(strstr(r.msg, "=?") == NULL);
	ck_assert(strstr(r.msg, "\r\nSubject: word word") != NULL);
	ck_assert(strstr(r.msg, "word\r\n word") != NULL);
	built_free(&r);
	json_decref(m);
}
END_TEST

START_TEST(test_encoded_word_lookalike)
{
	json_t *m = patched("{'content':{'subject':'=?utf-8?q?x?= plain'}}");
	struct built r;

	build_ok(m, NULL, &r);
	/* an ASCII subject that reads as an encoded word is encoded */
	ck_assert(strstr(r.msg, "\r\nSubject: "
	    "=?utf-8?b?PT91dGYtOD9xP3g/PSBwbGFpbg==?=\r\n") != NULL);
	built_free(&r);
	json_decref(m);
}
END_TEST

START_TEST(test_text_encodings)
{
	json_t *m = patched("{'content':{'plainText':'line one\\nline two\\n',"
	    "'html':'<p>caf\\u00e9</p>'}}");
	struct mime_opts o;
	struct built r;

	memset(&o, 0, sizeof(o));
	o.boundary_seed = "S";
	build_ok(m, &o, &r);
	/* LF becomes CRLF; ASCII short lines stay 7bit */
	ck_assert(strstr(r.msg, "Content-Type: text/plain; charset=utf-8\r\n"
	    "Content-Transfer-Encoding: 7bit\r\n\r\nline one\r\nline two\r\n"
	    "\r\n--=_S.3\r\n") != NULL);
	ck_assert(strstr(r.msg, "Content-Type: text/html; charset=utf-8\r\n"
	    "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
	    "<p>caf=C3=A9</p>\r\n--=_S.3--\r\n") != NULL);
	built_free(&r);
	json_decref(m);
}
END_TEST

START_TEST(test_boundary_not_in_content)
{
	json_t *m = patched("{'content':{'plainText':'--=_S.1\\n--=_S.2\\n'},"
	    "'attachments':[" ATT_FILE "]}");
	struct mime_opts o;
	struct built r;
	const char *b;

	memset(&o, 0, sizeof(o));
	o.boundary_seed = "S";
	build_ok(m, &o, &r);
	/* the text stays 7bit and the boundary moved away from "=_S.1" */
	ck_assert(strstr(r.msg, "7bit\r\n\r\n--=_S.1\r\n--=_S.2\r\n") != NULL);
	b = strstr(r.msg, "boundary=\"");
	ck_assert(b != NULL);
	ck_assert(strncmp(b, "boundary=\"=_S.1\"", 16) != 0);
	ck_assert_uint_eq(count(&r, "--=_S.1"), 1);
	built_free(&r);
	json_decref(m);
}
END_TEST

START_TEST(test_random_boundaries_and_ids)
{
	json_t *m = patched("{'attachments':[" ATT_FILE "]}");
	struct built r1, r2;
	const char *b1, *b2;

	build_ok(m, NULL, &r1);
	build_ok(m, NULL, &r2);
	b1 = strstr(r1.msg, "boundary=\"");
	b2 = strstr(r2.msg, "boundary=\"");
	ck_assert(b1 != NULL && b2 != NULL);
	ck_assert(strncmp(b1, b2, 30) != 0);
	ck_assert_str_ne(r1.info.message_id, r2.info.message_id);
	built_free(&r1);
	built_free(&r2);
	json_decref(m);
}
END_TEST

START_TEST(test_rfc2231_filename)
{
	json_t *m = patched("{'attachments':[{'name':'r\\u00e9sum\\u00e9 "
	    "\\u20ac.pdf','contentType':'application/pdf','contentInBase64':"
	    "'QQ=='},{'name':'say \\\"x\\\".txt','contentType':'text/plain',"
	    "'contentInBase64':'QQ=='}]}");
	struct built r;

	build_ok(m, NULL, &r);
	ck_assert(strstr(r.msg, "\r\n filename*=utf-8''r%C3%A9sum%C3%A9%20"
	    "%E2%82%AC.pdf\r\n") != NULL);
	ck_assert(strstr(r.msg, "\r\n name*=utf-8''r%C3%A9sum%C3%A9%20"
	    "%E2%82%AC.pdf\r\n") != NULL);
	ck_assert(strstr(r.msg, "\r\n filename=\"say \\\"x\\\".txt\"\r\n") !=
	    NULL);
	built_free(&r);
	json_decref(m);
}
END_TEST

static Suite *
mime_suite(void)
{
	Suite *s = suite_create("mime");
	TCase *tc;

	tc = tcase_create("encoders");
	tcase_add_test(tc, test_qp_basic);
	tcase_add_test(tc, test_qp_soft_breaks);
	tcase_add_test(tc, test_qp_soft_break_before_trailing_space);
	tcase_add_test(tc, test_b64_lines);
	tcase_add_test(tc, test_ew_q_ascii);
	tcase_add_test(tc, test_ew_split_multibyte);
	tcase_add_test(tc, test_valid_addr);
	suite_add_tcase(s, tc);

	tc = tcase_create("validation");
	tcase_add_test(tc, test_base_ok);
	tcase_add_loop_test(tc, test_errors, 0, (int)nitems(errcases));
	tcase_add_test(tc, test_error_root);
	tcase_add_test(tc, test_error_nul_in_header_value);
	tcase_add_test(tc, test_error_too_many_recipients);
	tcase_add_test(tc, test_error_attachment_too_big);
	suite_add_tcase(s, tc);

	tc = tcase_create("structure");
	tcase_add_loop_test(tc, test_shapes, 0, (int)nitems(shapes));
	tcase_add_test(tc, test_headers_and_info);
	tcase_add_test(tc, test_folding_limits);
	tcase_add_test(tc, test_long_ascii_subject_folds);
	tcase_add_test(tc, test_encoded_word_lookalike);
	tcase_add_test(tc, test_text_encodings);
	tcase_add_test(tc, test_boundary_not_in_content);
	tcase_add_test(tc, test_random_boundaries_and_ids);
	tcase_add_test(tc, test_rfc2231_filename);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(mime_suite());
	int nfailed;

	srunner_run_all(sr, CK_NORMAL);
	nfailed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return nfailed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
