/*
 * test_util.c - unit tests for the generic helpers (util.c), password
 * hashing (passwd.c) and CIDR handling (netaddr.c).
 */
#include "autoconf.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>

#include "netaddr.h"
#include "passwd.h"
#include "util.h"

/* base64 */

START_TEST(test_b64_vectors)
{
	static const struct { const char *plain, *enc; } v[] = {
		{ "", "" }, { "f", "Zg==" }, { "fo", "Zm8=" }, { "foo", "Zm9v" },
		{ "foob", "Zm9vYg==" }, { "fooba", "Zm9vYmE=" },
		{ "foobar", "Zm9vYmFy" },
	};
	unsigned char out[32];
	size_t i;
	long n;

	for (i = 0; i < nitems(v); i++) {
		char *e = util_b64_encode(v[i].plain, strlen(v[i].plain));

		ck_assert_str_eq(e, v[i].enc);
		free(e);
		n = util_b64_decode(v[i].enc, strlen(v[i].enc), out);
		ck_assert_int_eq(n, (long)strlen(v[i].plain));
		ck_assert(memcmp(out, v[i].plain, (size_t)n) == 0);
	}
}
END_TEST

START_TEST(test_b64_roundtrip_binary)
{
	unsigned char in[300], out[3 * 400 / 4 + 3];
	size_t len;

	for (len = 0; len < sizeof(in); len += 7) {
		char *e;
		long n;

		util_random(in, len);
		e = util_b64_encode(in, len);
		ck_assert_uint_eq(strlen(e), 4 * ((len + 2) / 3));
		ck_assert(strchr(e, '\n') == NULL);
		n = util_b64_decode(e, strlen(e), out);
		ck_assert_int_eq(n, (long)len);
		ck_assert(memcmp(in, out, len) == 0);
		free(e);
	}
}
END_TEST

START_TEST(test_b64_malformed)
{
	static const char *bad[] = {
		"Zm9", "Zm9vY", "Zm9v!A==", "Z===", "=AAA", "Zg=a", "Zm 9v",
		"Zm9v\nYmFy", "Zg=A",
	};
	unsigned char out[64];
	size_t i;

	for (i = 0; i < nitems(bad); i++)
		ck_assert_msg(util_b64_decode(bad[i], strlen(bad[i]), out) == -1,
		    "accepted \"%s\"", bad[i]);
}
END_TEST

START_TEST(test_b64url)
{
	/* 0xfb 0xff 0xfe: "+//+" in the standard alphabet */
	static const unsigned char raw[] = { 0xfb, 0xff, 0xfe, 0x41 };
	static const char *bad[] = { "-_-!", "ab+c", "ab/c", "ab=c", "a", "a b" };
	unsigned char out[16];
	char *e;
	size_t i;

	e = util_b64url_encode(raw, sizeof(raw));
	ck_assert_str_eq(e, "-__-QQ");		/* no '+', '/' or padding */
	ck_assert_int_eq(util_b64url_decode(e, strlen(e), out),
	    (long)sizeof(raw));
	ck_assert_mem_eq(out, raw, sizeof(raw));
	free(e);
	ck_assert_int_eq(util_b64url_decode("", 0, out), 0);
	for (i = 0; i < nitems(bad); i++)
		ck_assert_msg(util_b64url_decode(bad[i], strlen(bad[i]), out) ==
		    -1, "accepted \"%s\"", bad[i]);
}
END_TEST

/* durations and sizes */

START_TEST(test_durations)
{
	static const struct { const char *s; long v; } ok[] = {
		{ "0", 0 }, { "90", 90 }, { "30s", 30 }, { "5m", 300 },
		{ "1h", 3600 }, { "5d", 432000 }, { "2w", 1209600 },
	};
	static const char *bad[] = { "", "5x", "-1", "abc", "1.5h", "h",
	    "99999999999d", "5 m", "184467440737095516160" };
	const char *err;
	long v;
	size_t i;

	for (i = 0; i < nitems(ok); i++) {
		err = NULL;
		ck_assert_msg(util_parse_duration(ok[i].s, &v, &err) == 0,
		    "%s: %s", ok[i].s, err ? err : "");
		ck_assert_int_eq(v, ok[i].v);
	}
	for (i = 0; i < nitems(bad); i++) {
		err = NULL;
		ck_assert_msg(util_parse_duration(bad[i], &v, &err) == -1,
		    "accepted \"%s\"", bad[i]);
		ck_assert_ptr_nonnull(err);
	}
}
END_TEST

START_TEST(test_sizes)
{
	static const struct { const char *s; uint64_t v; } ok[] = {
		{ "1000", 1000 }, { "10k", 10240 }, { "10K", 10240 },
		{ "25M", 25ULL << 20 }, { "1G", 1ULL << 30 }, { "8G", 8ULL << 30 },
	};
	static const char *bad[] = { "", "10q", "k", "-5M", "1.5G",
	    "99999999999999999999" };
	const char *err;
	uint64_t v;
	size_t i;

	for (i = 0; i < nitems(ok); i++) {
		ck_assert_msg(util_parse_size(ok[i].s, &v, &err) == 0, "%s",
		    ok[i].s);
		ck_assert_uint_eq(v, ok[i].v);
	}
	for (i = 0; i < nitems(bad); i++) {
		err = NULL;
		ck_assert_msg(util_parse_size(bad[i], &v, &err) == -1,
		    "accepted \"%s\"", bad[i]);
		ck_assert_ptr_nonnull(err);
	}
	ck_assert_int_eq(util_parse_uint("42", 1, 100, &v, &err), 0);
	ck_assert_uint_eq(v, 42);
	ck_assert_int_eq(util_parse_uint("420", 1, 100, &v, &err), -1);
	ck_assert_int_eq(util_parse_uint("0", 1, 100, &v, &err), -1);
}
END_TEST

/* strings */

START_TEST(test_strlcpy)
{
	char buf[8];

	memset(buf, 'x', sizeof(buf));
	ck_assert_uint_eq(util_strlcpy(buf, "hello", sizeof(buf)), 5);
	ck_assert_str_eq(buf, "hello");
	ck_assert_uint_eq(util_strlcpy(buf, "truncated!", sizeof(buf)), 10);
	ck_assert_str_eq(buf, "truncat");
	ck_assert_uint_eq(util_strlcpy(buf, "1234567", sizeof(buf)), 7);
	ck_assert_str_eq(buf, "1234567");
	buf[0] = 'z';
	ck_assert_uint_eq(util_strlcpy(buf, "abc", 0), 3);
	ck_assert_int_eq(buf[0], 'z');
	ck_assert_uint_eq(util_strlcpy(buf, "abc", 1), 3);
	ck_assert_str_eq(buf, "");
}
END_TEST

START_TEST(test_strings_misc)
{
	char s[] = "  MiXeD Case\t\r\n", id[17], hex[9];
	char *t, *san;
	int i;

	t = util_trim(s);
	ck_assert_str_eq(t, "MiXeD Case");
	util_lower(t);
	ck_assert_str_eq(t, "mixed case");
	util_random_id(id, 16);
	ck_assert_uint_eq(strlen(id), 16);
	for (i = 0; i < 16; i++)
		ck_assert(strchr("abcdefghijklmnopqrstuvwxyz234567", id[i]));
	util_hex("\x01\xab\xff\x00", 4, hex);
	ck_assert_str_eq(hex, "01abff00");
	ck_assert_int_eq(util_ct_compare("abcd", "abcd", 4), 0);
	ck_assert_int_ne(util_ct_compare("abcd", "abce", 4), 0);
	san = util_sanitize("a\r\nb\x7f" "c", 100);
	ck_assert_str_eq(san, "a??b?c");
	free(san);
}
END_TEST

/* passwd: every KDF call costs ~100 ms, so only four of them */

START_TEST(test_passwd_hash_verify)
{
	char *h1, *h2;

	h1 = passwd_hash("correct horse");
	h2 = passwd_hash("correct horse");
	ck_assert(strncmp(h1, "$scrypt$ln=15,r=8,p=1$", 22) == 0);
	/* salt: 16 bytes = 24 b64 chars, hash: 32 bytes = 44 */
	ck_assert_uint_eq(strlen(h1), 22 + 24 + 1 + 44);
	ck_assert_str_ne(h1, h2);
	ck_assert_int_eq(passwd_verify("correct horse", h1), 0);
	ck_assert_int_eq(passwd_verify("correct horsE", h2), -1);
	free(h1);
	free(h2);
}
END_TEST

/* a well-formed salt (16 bytes) and hash (32 bytes) under broken headers */
#define T_SALT "c2FsdHNhbHRzYWx0c2FsdA=="
#define T_HASH "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="

START_TEST(test_passwd_malformed)
{
	static const char *bad[] = {
		"", "$scrypt$", "$scrypt$ln=15,r=8,p=1$", "plain-text",
		"$bcrypt$ln=15,r=8,p=1$" T_SALT "$" T_HASH,
		"$scrypt$ln=21,r=8,p=1$" T_SALT "$" T_HASH,	/* cost bound */
		"$scrypt$ln=0,r=8,p=1$" T_SALT "$" T_HASH,
		"$scrypt$ln=20,r=8,p=1$" T_SALT "$" T_HASH,	/* 1 GiB */
		"$scrypt$ln=15,r=99,p=1$" T_SALT "$" T_HASH,
		"$scrypt$ln=15,r=8,p=99$" T_SALT "$" T_HASH,
		"$scrypt$ln=15,r=8$" T_SALT "$" T_HASH,
		"$scrypt$r=8,ln=15,p=1$" T_SALT "$" T_HASH,
		"$scrypt$ln=15,r=8,p=1,x=1$" T_SALT "$" T_HASH,
		"$scrypt$ln=0015,r=8,p=1$" T_SALT "$" T_HASH,
		"$scrypt$ln=,r=8,p=1$" T_SALT "$" T_HASH,
		"$scrypt$ln=15,r=8,p=1$" T_SALT,
		"$scrypt$ln=15,r=8,p=1$$" T_SALT T_HASH,
		"$scrypt$ln=15,r=8,p=1$" T_SALT "$",
		"$scrypt$ln=15,r=8,p=1$" T_SALT "$AAAA",	/* short hash */
		"$scrypt$ln=15,r=8,p=1$" T_SALT "$!!!!" T_HASH,
		"$scrypt$ln=15,r=8,p=1$c2Fs$" T_HASH,		/* short salt */
		"$scrypt$ln=15,r=8,p=1$" T_SALT "$" T_HASH "$",
	};
	size_t i;

	for (i = 0; i < nitems(bad); i++)
		ck_assert_msg(passwd_verify("pw", bad[i]) == -1, "accepted %s",
		    bad[i]);
	ck_assert_int_eq(passwd_verify("pw", NULL), -1);
}
END_TEST

/* netaddr */

static void
sa4(struct sockaddr_in *sin, const char *ip)
{
	memset(sin, 0, sizeof(*sin));
	sin->sin_family = AF_INET;
	ck_assert_int_eq(inet_pton(AF_INET, ip, &sin->sin_addr), 1);
}

static void
sa6(struct sockaddr_in6 *sin6, const char *ip)
{
	memset(sin6, 0, sizeof(*sin6));
	sin6->sin6_family = AF_INET6;
	ck_assert_int_eq(inet_pton(AF_INET6, ip, &sin6->sin6_addr), 1);
}

START_TEST(test_cidr_parse)
{
	static const struct { const char *in, *out; int family; } ok[] = {
		{ "10.0.0.0/8", "10.0.0.0/8", AF_INET },
		{ "127.0.0.1", "127.0.0.1/32", AF_INET },
		{ "0.0.0.0/0", "0.0.0.0/0", AF_INET },
		{ "192.168.1.128/25", "192.168.1.128/25", AF_INET },
		{ "2001:DB8::/32", "2001:db8::/32", AF_INET6 },
		{ "2001:0db8:0000::/48", "2001:db8::/48", AF_INET6 },
		{ "::1", "::1/128", AF_INET6 },
		{ "::/0", "::/0", AF_INET6 },
	};
	static const char *bad[] = { "", "/8", "10.0.0.0/", "10.0.0.0/33",
	    "10.0.0.0/-1", "10.0.0.0/8x", "10.0.0.0/1234", "::/129",
	    "garbage", "10.0.0/8", "10.0.0.0.0/8", "300.0.0.0/8",
	    "10.0.0.0 /8", "fe80::1%eth0/64" };
	struct cidr c;
	char buf[NETADDR_CIDR_STRLEN];
	const char *err;
	size_t i;

	for (i = 0; i < nitems(ok); i++) {
		err = NULL;
		ck_assert_msg(netaddr_parse_cidr(ok[i].in, &c, &err) == 0,
		    "%s: %s", ok[i].in, err ? err : "");
		ck_assert_int_eq(c.family, ok[i].family);
		netaddr_cidr_str(&c, buf, sizeof(buf));
		ck_assert_str_eq(buf, ok[i].out);
	}
	for (i = 0; i < nitems(bad); i++) {
		err = NULL;
		ck_assert_msg(netaddr_parse_cidr(bad[i], &c, &err) == -1,
		    "accepted \"%s\"", bad[i]);
		ck_assert_ptr_nonnull(err);
	}
	ck_assert_int_eq(netaddr_parse_cidr("10.0.0.0/33", &c, &err), -1);
	ck_assert(strstr(err, "0-32") != NULL);
}
END_TEST

START_TEST(test_cidr_host_bits)
{
	struct cidr c;
	const char *err = NULL;

	ck_assert_int_eq(netaddr_parse_cidr("10.0.0.1/8", &c, &err), -1);
	ck_assert_str_eq(err, "host bits set; did you mean 10.0.0.0/8?");
	ck_assert_int_eq(netaddr_parse_cidr("192.168.1.200/25", &c, &err), -1);
	ck_assert_str_eq(err,
	    "host bits set; did you mean 192.168.1.128/25?");
	ck_assert_int_eq(netaddr_parse_cidr("2001:db8::1/32", &c, &err), -1);
	ck_assert_str_eq(err, "host bits set; did you mean 2001:db8::/32?");
}
END_TEST

START_TEST(test_cidr_match)
{
	struct sockaddr_in sin;
	struct sockaddr_in6 sin6;
	struct cidr c8, c25, c6, call4, call6;
	const char *err;
	char buf[INET6_ADDRSTRLEN];

	ck_assert_int_eq(netaddr_parse_cidr("127.0.0.0/8", &c8, &err), 0);
	ck_assert_int_eq(netaddr_parse_cidr("192.168.1.128/25", &c25, &err), 0);
	ck_assert_int_eq(netaddr_parse_cidr("2001:db8::/32", &c6, &err), 0);
	ck_assert_int_eq(netaddr_parse_cidr("0.0.0.0/0", &call4, &err), 0);
	ck_assert_int_eq(netaddr_parse_cidr("::/0", &call6, &err), 0);

	sa4(&sin, "127.1.2.3");
	ck_assert_int_eq(netaddr_match(&c8, (struct sockaddr *)&sin), 1);
	ck_assert_int_eq(netaddr_match(&c6, (struct sockaddr *)&sin), 0);
	ck_assert_int_eq(netaddr_match(&call4, (struct sockaddr *)&sin), 1);
	netaddr_str((struct sockaddr *)&sin, buf, sizeof(buf));
	ck_assert_str_eq(buf, "127.1.2.3");
	sa4(&sin, "128.0.0.1");
	ck_assert_int_eq(netaddr_match(&c8, (struct sockaddr *)&sin), 0);
	sa4(&sin, "192.168.1.128");
	ck_assert_int_eq(netaddr_match(&c25, (struct sockaddr *)&sin), 1);
	sa4(&sin, "192.168.1.255");
	ck_assert_int_eq(netaddr_match(&c25, (struct sockaddr *)&sin), 1);
	sa4(&sin, "192.168.1.127");
	ck_assert_int_eq(netaddr_match(&c25, (struct sockaddr *)&sin), 0);

	/* a v4-mapped peer on a dual-stack socket is an IPv4 peer */
	sa6(&sin6, "::ffff:127.0.0.1");
	ck_assert_int_eq(netaddr_match(&c8, (struct sockaddr *)&sin6), 1);
	ck_assert_int_eq(netaddr_match(&call6, (struct sockaddr *)&sin6), 0);
	sa6(&sin6, "::ffff:10.0.0.1");
	ck_assert_int_eq(netaddr_match(&c8, (struct sockaddr *)&sin6), 0);

	sa6(&sin6, "2001:db8:ffff::1");
	ck_assert_int_eq(netaddr_match(&c6, (struct sockaddr *)&sin6), 1);
	ck_assert_int_eq(netaddr_match(&c8, (struct sockaddr *)&sin6), 0);
	ck_assert_int_eq(netaddr_match(&call6, (struct sockaddr *)&sin6), 1);
	netaddr_str((struct sockaddr *)&sin6, buf, sizeof(buf));
	ck_assert_str_eq(buf, "2001:db8:ffff::1");
	sa6(&sin6, "2001:db9::1");
	ck_assert_int_eq(netaddr_match(&c6, (struct sockaddr *)&sin6), 0);
}
END_TEST

static Suite *
util_suite(void)
{
	Suite *s = suite_create("util");
	TCase *tc;

	tc = tcase_create("util");
	tcase_add_test(tc, test_b64_vectors);
	tcase_add_test(tc, test_b64_roundtrip_binary);
	tcase_add_test(tc, test_b64_malformed);
	tcase_add_test(tc, test_b64url);
	tcase_add_test(tc, test_durations);
	tcase_add_test(tc, test_sizes);
	tcase_add_test(tc, test_strlcpy);
	tcase_add_test(tc, test_strings_misc);
	suite_add_tcase(s, tc);

	tc = tcase_create("passwd");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_passwd_hash_verify);
	tcase_add_test(tc, test_passwd_malformed);
	suite_add_tcase(s, tc);

	tc = tcase_create("netaddr");
	tcase_add_test(tc, test_cidr_parse);
	tcase_add_test(tc, test_cidr_host_bits);
	tcase_add_test(tc, test_cidr_match);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(util_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
