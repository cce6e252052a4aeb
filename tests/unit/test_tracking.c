/*
 * test_tracking.c - unit tests for the engagement-tracking rewriter
 * (tracking.c): links of <a> tags in text/html parts rewritten and the
 * open pixel inserted, through 7bit, quoted-printable and base64 bodies,
 * inside multipart structures, with everything else byte-identical; and
 * the list of user agents counted as machines.
 */
#include "autoconf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>
#include <event2/buffer.h>
#include <jansson.h>

#include "tracking.h"
#include "util.h"

#define OPEN_URL	"https://t.test/t/o/OPEN"

/* click_url for the tests: https://t.test/t/c/N */
static char *
click(void *arg, size_t n, const char *url)
{
	(void)arg;
	(void)url;
	return xasprintf("https://t.test/t/c/%zu", n);
}

/* run - rewrite msg; the result (malloc'd, NUL-terminated) and the
 * change count */
static char *
run(const char *msg, const struct tracking_rw *rw, json_t *links, int *n_r)
{
	struct evbuffer *out = evbuffer_new();
	const char *err = NULL;
	size_t len;
	char *s;

	*n_r = tracking_rewrite((const unsigned char *)msg, strlen(msg), rw,
	    out, links, &err);
	len = evbuffer_get_length(out);
	s = xmalloc(len + 1);
	evbuffer_remove(out, s, len);
	s[len] = '\0';
	evbuffer_free(out);
	return s;
}

static void
rw_init(struct tracking_rw *rw, int opens, int clicks)
{
	memset(rw, 0, sizeof(*rw));
	rw->open_url = opens ? OPEN_URL : NULL;
	rw->click_url = clicks ? click : NULL;
	rw->skip[0] = "https://t.test/t/";
	rw->skip[1] = "https://t.test/u/";
}

/* qp_decode - a small independent decoder for checking */
static char *
qp_decode(const char *s, size_t n)
{
	char *o = xmalloc(n + 1), h[3];
	size_t i, k = 0;

	for (i = 0; i < n; i++) {
		if (s[i] == '=' && i + 2 < n && s[i + 1] == '\r' &&
		    s[i + 2] == '\n') {
			i += 2;
			continue;
		}
		if (s[i] == '=' && i + 2 < n) {
			h[0] = s[i + 1];
			h[1] = s[i + 2];
			h[2] = '\0';
			o[k++] = (char)strtol(h, NULL, 16);
			i += 2;
			continue;
		}
		o[k++] = s[i];
	}
	o[k] = '\0';
	return o;
}

/* max_line - longest line (without CRLF) of s[0..n) */
static size_t
max_line(const char *s, size_t n)
{
	size_t i, col = 0, m = 0;

	for (i = 0; i < n; i++) {
		if (s[i] == '\r' && i + 1 < n && s[i + 1] == '\n') {
			col = 0;
			i++;
			continue;
		}
		if (++col > m)
			m = col;
	}
	return m;
}

START_TEST(test_single_html_7bit)
{
	static const char msg[] =
	    "From: a@x.test\r\nSubject: hi\r\nContent-Type: text/html; "
	    "charset=utf-8\r\n\r\n"
	    "<html><body><p>Hello</p>\r\n"
	    "<a href=\"https://example.test/a?x=1&amp;y=2\">one</a>\r\n"
	    "<A class='b' HREF='http://example.test/b'>two</A>\r\n"
	    "<a href=https://example.test/c>three</a>\r\n"
	    "<a href=\"mailto:x@example.test\">mail</a>\r\n"
	    "<a href=\"#top\">top</a> <a href=\"cid:img1\">cid</a>\r\n"
	    "<a href=\"https://t.test/u/TOKEN\">unsubscribe</a>\r\n"
	    "<!-- <a href=\"https://example.test/comment\">c</a> -->\r\n"
	    "<script>var s = '<a href=\"https://example.test/js\">';</script>\r\n"
	    "<abbr href=\"https://example.test/abbr\">no</abbr>\r\n"
	    "</body></html>\r\n";
	struct tracking_rw rw;
	json_t *links = json_array();
	char *out;
	int n;

	rw_init(&rw, 1, 1);
	out = run(msg, &rw, links, &n);
	ck_assert_int_eq(n, 4);			/* 3 links + pixel */
	ck_assert_int_eq(json_array_size(links), 3);
	ck_assert_str_eq(json_string_value(json_array_get(links, 0)),
	    "https://example.test/a?x=1&y=2");
	ck_assert_str_eq(json_string_value(json_array_get(links, 1)),
	    "http://example.test/b");
	ck_assert_str_eq(json_string_value(json_array_get(links, 2)),
	    "https://example.test/c");
	/* the header is untouched */
	ck_assert(strncmp(out, msg, strstr(msg, "\r\n\r\n") - msg + 4) == 0);
	ck_assert_ptr_nonnull(strstr(out,
	    "<a href=\"https://t.test/t/c/0\">one</a>"));
	ck_assert_ptr_nonnull(strstr(out,
	    "<A class='b' HREF='https://t.test/t/c/1'>two</A>"));
	ck_assert_ptr_nonnull(strstr(out,
	    "<a href=\"https://t.test/t/c/2\">three</a>"));
	ck_assert_ptr_nonnull(strstr(out, "href=\"mailto:x@example.test\""));
	ck_assert_ptr_nonnull(strstr(out, "href=\"#top\""));
	ck_assert_ptr_nonnull(strstr(out, "href=\"cid:img1\""));
	ck_assert_ptr_nonnull(strstr(out, "href=\"https://t.test/u/TOKEN\""));
	ck_assert_ptr_nonnull(strstr(out, "https://example.test/comment"));
	ck_assert_ptr_nonnull(strstr(out, "https://example.test/js"));
	ck_assert_ptr_nonnull(strstr(out, "https://example.test/abbr"));
	ck_assert_ptr_nonnull(strstr(out, "<img src=\"" OPEN_URL "\" width=\"1\" "
	    "height=\"1\" alt=\"\" style=\"display:none\"></body></html>\r\n"));
	ck_assert_ptr_null(strstr(out, "example.test/a?"));
	free(out);
	json_decref(links);

	/* opens only: links stay, the pixel goes in */
	rw_init(&rw, 1, 0);
	out = run(msg, &rw, NULL, &n);
	ck_assert_int_eq(n, 1);
	ck_assert_int_eq(strlen(out), strlen(msg) + strlen("<img src=\""
	    OPEN_URL "\" width=\"1\" height=\"1\" alt=\"\" "
	    "style=\"display:none\">"));
	free(out);

	/* neither: byte-identical */
	rw_init(&rw, 0, 0);
	out = run(msg, &rw, NULL, &n);
	ck_assert_int_eq(n, 0);
	ck_assert_str_eq(out, msg);
	free(out);
}
END_TEST

START_TEST(test_multipart_qp)
{
	static const char plain[] =
	    "Content-Type: text/plain; charset=utf-8\r\n"
	    "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
	    "See https://example.test/plain =E2=9C=93\r\n";
	static const char html[] =
	    "Content-Type: text/html; charset=\"utf-8\"\r\n"
	    "Content-Transfer-Encoding: Quoted-Printable\r\n\r\n"
	    "<html><body><p>Caf=C3=A9 <a href=3D\"https://example.test/very/long/pa=\r\n"
	    "th?q=3D1\">link</a></p>\r\n"
	    "</body></html>\r\n";
	char *msg, *out, *p, *q, *dec;
	struct tracking_rw rw;
	json_t *links = json_array();
	int n;

	msg = xasprintf("From: a@x.test\r\nMIME-Version: 1.0\r\n"
	    "Content-Type: multipart/alternative;\r\n boundary=\"=_b1\"\r\n"
	    "\r\npreamble\r\n--=_b1\r\n%s\r\n--=_b1\r\n%s\r\n--=_b1--\r\n"
	    "epilogue\r\n", plain, html);
	rw_init(&rw, 1, 1);
	out = run(msg, &rw, links, &n);
	ck_assert_int_eq(n, 2);
	ck_assert_int_eq(json_array_size(links), 1);
	ck_assert_str_eq(json_string_value(json_array_get(links, 0)),
	    "https://example.test/very/long/path?q=1");
	/* everything up to the html part's body is byte-identical */
	p = strstr(msg, "<html>");
	ck_assert(strncmp(out, msg, (size_t)(p - msg)) == 0);
	/* and so is the end */
	ck_assert(strcmp(out + strlen(out) - strlen("\r\n--=_b1--\r\n"
	    "epilogue\r\n"), "\r\n--=_b1--\r\nepilogue\r\n") == 0);
	/* the html body decodes to the rewritten html; QP lines <= 76 */
	q = strstr(out + (p - msg), "\r\n--=_b1--");
	ck_assert_ptr_nonnull(q);
	ck_assert_uint_le(max_line(out + (p - msg), (size_t)(q - out - (p -
	    msg))), 76);
	dec = qp_decode(out + (p - msg), (size_t)(q - out - (p - msg)));
	ck_assert_str_eq(dec, "<html><body><p>Caf\xc3\xa9 <a href=\""
	    "https://t.test/t/c/0\">link</a></p>\r\n<img src=\"" OPEN_URL
	    "\" width=\"1\" height=\"1\" alt=\"\" style=\"display:none\">"
	    "</body></html>\r\n");
	free(dec);
	free(out);
	free(msg);
	json_decref(links);
}
END_TEST

START_TEST(test_base64_nested)
{
	static const char html[] = "<p><a href=\"https://example.test/x\">x"
	    "</a></p>";
	char *b64, *msg, *out, *p, *q, *clean, *dec;
	struct tracking_rw rw;
	json_t *links = json_array();
	unsigned char buf[1024];
	size_t i, k;
	long dl;
	int n;

	b64 = util_b64_encode(html, strlen(html));
	msg = xasprintf("From: a@x.test\r\n"
	    "Content-Type: multipart/mixed; boundary=outer\r\n\r\n"
	    "--outer\r\nContent-Type: multipart/related; boundary=inner\r\n"
	    "\r\n--inner\r\nContent-Type: text/html\r\n"
	    "Content-Transfer-Encoding: base64\r\n\r\n%s\r\n--inner--\r\n"
	    "\r\n--outer\r\nContent-Type: text/html; name=a.html\r\n"
	    "Content-Disposition: attachment; filename=a.html\r\n\r\n"
	    "<a href=\"https://example.test/attached\">a</a>\r\n"
	    "--outer--\r\n", b64);
	rw_init(&rw, 1, 1);
	out = run(msg, &rw, links, &n);
	ck_assert_int_eq(n, 2);
	ck_assert_int_eq(json_array_size(links), 1);
	/* the attachment is left alone */
	ck_assert_ptr_nonnull(strstr(out, "<a href=\"https://example.test/"
	    "attached\">a</a>\r\n--outer--\r\n"));
	p = strstr(out, "base64\r\n\r\n") + strlen("base64\r\n\r\n");
	q = strstr(p, "\r\n--inner--");
	ck_assert_ptr_nonnull(q);
	ck_assert_uint_le(max_line(p, (size_t)(q - p)), 76);
	clean = xmalloc((size_t)(q - p) + 1);
	for (i = 0, k = 0; p + i < q; i++)
		if (p[i] != '\r' && p[i] != '\n')
			clean[k++] = p[i];
	dl = util_b64_decode(clean, k, buf);
	ck_assert_int_gt(dl, 0);
	dec = xstrndup((char *)buf, (size_t)dl);
	ck_assert_str_eq(dec, "<p><a href=\"https://t.test/t/c/0\">x</a></p>"
	    "<img src=\"" OPEN_URL "\" width=\"1\" height=\"1\" alt=\"\" "
	    "style=\"display:none\">");
	free(dec);
	free(clean);
	free(out);
	free(msg);
	free(b64);
	json_decref(links);
}
END_TEST

START_TEST(test_unchanged_and_bounds)
{
	static const char plain[] = "From: a@x.test\r\nSubject: s\r\n\r\n"
	    "<a href=\"https://example.test/\">not html</a>\r\n";
	struct tracking_rw rw;
	const char *err = NULL;
	struct evbuffer *out = evbuffer_new();
	char *msg, *long_line, *o;
	int n;

	rw_init(&rw, 1, 1);
	o = run(plain, &rw, NULL, &n);
	ck_assert_int_eq(n, 0);
	ck_assert_str_eq(o, plain);
	free(o);

	/* no end of the header */
	ck_assert_int_eq(tracking_rewrite((const unsigned char *)"From: x",
	    7, &rw, out, NULL, &err), -1);
	ck_assert_ptr_nonnull(err);
	ck_assert_uint_eq(evbuffer_get_length(out), 0);
	evbuffer_free(out);

	/* a 7bit line that would pass 998 octets: the part stays as it is */
	long_line = xmalloc(990);
	memset(long_line, 'x', 989);
	long_line[989] = '\0';
	msg = xasprintf("Content-Type: text/html\r\n\r\n<a href=\"https://"
	    "e.test/\">%s</a>\r\n", long_line);
	o = run(msg, &rw, NULL, &n);
	ck_assert_int_eq(n, 0);
	ck_assert_str_eq(o, msg);
	free(o);
	free(msg);
	free(long_line);

	/* an unterminated tag and comment end the scan without harm */
	o = run("Content-Type: text/html\r\n\r\n<a href=\"https://e.test/", &rw,
	    NULL, &n);
	ck_assert_int_eq(n, 1);		/* just the pixel, at the end */
	ck_assert_ptr_nonnull(strstr(o, "<img src="));
	free(o);
	o = run("Content-Type: text/html\r\n\r\n<!-- <a href=\"https://e.test/\">",
	    &rw, NULL, &n);
	ck_assert_int_eq(n, 1);
	free(o);

	/* UTF-16 is not ASCII-compatible: left alone */
	o = run("Content-Type: text/html; charset=UTF-16\r\n\r\n<a href=\""
	    "https://e.test/\">x</a>", &rw, NULL, &n);
	ck_assert_int_eq(n, 0);
	free(o);
}
END_TEST

START_TEST(test_link_limit)
{
	struct evbuffer *b = evbuffer_new();
	struct tracking_rw rw;
	json_t *links = json_array();
	char *msg, *o;
	size_t i, len;
	int n;

	evbuffer_add_printf(b, "Content-Type: text/html\r\n\r\n");
	for (i = 0; i < TRACKING_LINKS_MAX + 5; i++)
		evbuffer_add_printf(b, "<a href=\"https://e.test/%zu\">l</a>\r\n",
		    i);
	len = evbuffer_get_length(b);
	msg = xmalloc(len + 1);
	evbuffer_remove(b, msg, len);
	msg[len] = '\0';
	evbuffer_free(b);
	rw_init(&rw, 0, 1);
	o = run(msg, &rw, links, &n);
	ck_assert_int_eq(n, TRACKING_LINKS_MAX);
	ck_assert_int_eq(json_array_size(links), TRACKING_LINKS_MAX);
	ck_assert_ptr_nonnull(strstr(o, "https://e.test/1004\""));
	ck_assert_ptr_null(strstr(o, "https://e.test/999\""));
	free(o);
	free(msg);
	json_decref(links);
}
END_TEST

START_TEST(test_machine_ua)
{
	ck_assert_int_eq(tracking_machine_ua(NULL), 1);
	ck_assert_int_eq(tracking_machine_ua(""), 1);
	ck_assert_int_eq(tracking_machine_ua("Mozilla/5.0 (compatible; "
	    "Googlebot/2.1)"), 1);
	ck_assert_int_eq(tracking_machine_ua("Barracuda Sentinel (EE)"), 1);
	ck_assert_int_eq(tracking_machine_ua("python-requests/2.28"), 1);
	ck_assert_int_eq(tracking_machine_ua("curl/7.88.1"), 1);
	ck_assert_int_eq(tracking_machine_ua("Microsoft Office Existence "
	    "Discovery"), 1);
	ck_assert_int_eq(tracking_machine_ua("Mozilla/5.0 (X11; Linux x86_64;"
	    " rv:109.0) Gecko/20100101 Firefox/115.0"), 0);
	/* Gmail fetches through its proxy when the user opens: human */
	ck_assert_int_eq(tracking_machine_ua("Mozilla/5.0 (Windows NT 5.1; "
	    "rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"), 0);
}
END_TEST

static Suite *
tracking_suite(void)
{
	Suite *s = suite_create("tracking");
	TCase *tc = tcase_create("rewrite");

	tcase_add_test(tc, test_single_html_7bit);
	tcase_add_test(tc, test_multipart_qp);
	tcase_add_test(tc, test_base64_nested);
	tcase_add_test(tc, test_unchanged_and_bounds);
	tcase_add_test(tc, test_link_limit);
	tcase_add_test(tc, test_machine_ua);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(tracking_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
