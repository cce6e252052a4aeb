/*
 * test_bounce.c - unit tests for the classification of delivery failures
 * (bounce.c): categories from enhanced status codes and reply texts, and
 * which failures put the recipient on the suppression list.
 */
#include "autoconf.h"

#include <stdlib.h>
#include <string.h>

#include <check.h>

#include "bounce.h"
#include "util.h"

struct bcase {
	int		 code;
	const char	*enh;
	const char	*text;
	int		 local;
	const char	*cat;
	int		 suppress;
};

static void
check_cases(const struct bcase *c, size_t n)
{
	const char *cat;
	size_t i;
	int sup;

	for (i = 0; i < n; i++) {
		sup = -1;
		cat = bounce_classify(c[i].code, c[i].enh, c[i].text, c[i].local,
		    &sup);
		ck_assert_msg(strcmp(cat, c[i].cat) == 0,
		    "%d %s \"%s\" local=%d: got %s, want %s", c[i].code,
		    c[i].enh ? c[i].enh : "(null)", c[i].text ? c[i].text : "",
		    c[i].local, cat, c[i].cat);
		ck_assert_msg(sup == c[i].suppress,
		    "%d %s \"%s\": suppress %d, want %d", c[i].code,
		    c[i].enh ? c[i].enh : "(null)", c[i].text ? c[i].text : "",
		    sup, c[i].suppress);
		ck_assert_int_eq(bounce_valid_category(cat), 0);
	}
}

START_TEST(test_hard)
{
	static const struct bcase c[] = {
		{ 550, "5.1.1", "no such user: <bad@dest.test>", 0, "hard", 1 },
		{ 550, "5.1.1", "user unknown, see our policy", 0, "hard", 1 },
		{ 553, "5.1.3", "bad address syntax", 1, "hard", 1 },
		/* remote 5.1.2: the server says the domain is bad */
		{ 550, "5.1.2", "bad destination system", 0, "hard", 1 },
		{ 550, "5.2.1", "mailbox disabled", 0, "hard", 1 },
		{ 550, "5.0.0", "Requested action not taken: mailbox "
		    "unavailable", 0, "hard", 1 },
		{ 550, "", "User unknown", 0, "hard", 1 },
		{ 554, NULL, "no such mailbox here", 0, "hard", 1 },
		/* about the sender or the message: not the address */
		{ 553, "5.1.7", "invalid sender address", 1, "hard", 0 },
		{ 550, "5.1.8", "bad sender domain", 0, "hard", 0 },
		{ 552, "5.3.4", "message too big", 0, "hard", 0 },
		{ 550, "5.6.7", "SMTPUTF8 needed", 1, "hard", 0 },
		{ 554, "5.5.1", "protocol error", 0, "hard", 0 },
		{ 554, "", "transaction failed", 0, "hard", 0 },
	};

	check_cases(c, nitems(c));
}
END_TEST

START_TEST(test_soft)
{
	static const struct bcase c[] = {
		{ 451, "4.3.0", "try again later", 0, "soft", 0 },
		{ 421, "4.4.2", "connection dropped", 1, "soft", 0 },
		{ 451, "4.4.1", "all MX hosts failed", 1, "soft", 0 },
		{ 450, "", "try later", 0, "soft", 0 },
		{ 452, "4.3.1", "insufficient system storage", 0, "soft", 0 },
		{ 0, "", "", 1, "soft", 0 },
		{ 451, "4.x.y", "garbage code", 0, "soft", 0 },
	};

	check_cases(c, nitems(c));
}
END_TEST

START_TEST(test_mailbox_full)
{
	static const struct bcase c[] = {
		{ 452, "4.2.2", "mailbox full", 0, "mailbox_full", 0 },
		{ 552, "5.2.2", "over quota", 0, "mailbox_full", 0 },
		{ 452, "", "Mailbox is FULL", 0, "mailbox_full", 0 },
		{ 552, "5.2.0", "user is over quota", 0, "mailbox_full", 0 },
		{ 552, NULL, "Requested mail action aborted: exceeded storage "
		    "allocation", 0, "mailbox_full", 0 },
	};

	check_cases(c, nitems(c));
}
END_TEST

START_TEST(test_policy)
{
	static const struct bcase c[] = {
		{ 554, "5.7.1", "relay denied", 0, "policy", 0 },
		{ 451, "4.7.1", "greylisted", 0, "policy", 0 },
		{ 550, "5.7.26", "unauthenticated mail is prohibited", 0,
		    "policy", 0 },
		{ 554, "", "rejected as SPAM", 0, "policy", 0 },
		{ 550, "5.0.0", "blocked: listed at zen.spamhaus.org", 0,
		    "policy", 0 },
		{ 421, "", "your IP is on our blacklist", 0, "policy", 0 },
	};

	check_cases(c, nitems(c));
}
END_TEST

START_TEST(test_dns_tls_expired)
{
	static const struct bcase c[] = {
		{ 556, "5.1.10", "Domain x.test does not accept mail (null MX)",
		    1, "dns", 0 },
		{ 550, "5.1.2", "Host or domain name not found: x.test "
		    "(NXDOMAIN)", 1, "dns", 0 },
		{ 451, "4.4.3", "MX lookup failed: SERVFAIL", 1, "dns", 0 },
		{ 451, "4.4.4", "unable to route", 0, "dns", 0 },
		{ 451, "4.7.5", "TLS handshake failed", 1, "tls", 0 },
		{ 451, "4.7.10", "STARTTLS required but not offered", 1, "tls",
		    0 },
		{ 530, "5.7.11", "encryption required", 0, "tls", 0 },
		{ 451, "4.4.7", "Message expired after 3 s in the queue; last "
		    "error: greylisted", 0, "expired", 0 },
		{ 550, "5.4.7", "delivery time expired", 0, "expired", 0 },
	};

	check_cases(c, nitems(c));
}
END_TEST

START_TEST(test_categories)
{
	ck_assert_int_eq(bounce_valid_category("hard"), 0);
	ck_assert_int_eq(bounce_valid_category("mailbox_full"), 0);
	ck_assert_int_eq(bounce_valid_category("expired"), 0);
	ck_assert_int_eq(bounce_valid_category("Hard"), -1);
	ck_assert_int_eq(bounce_valid_category(""), -1);
	ck_assert_int_eq(bounce_valid_category(NULL), -1);
	/* NULL suppress_r is allowed */
	ck_assert_str_eq(bounce_classify(550, "5.1.1", NULL, 0, NULL), "hard");
}
END_TEST

static Suite *
bounce_suite(void)
{
	Suite *s = suite_create("bounce");
	TCase *tc = tcase_create("classify");

	tcase_add_test(tc, test_hard);
	tcase_add_test(tc, test_soft);
	tcase_add_test(tc, test_mailbox_full);
	tcase_add_test(tc, test_policy);
	tcase_add_test(tc, test_dns_tls_expired);
	tcase_add_test(tc, test_categories);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(bounce_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
