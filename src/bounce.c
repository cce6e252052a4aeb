/*
 * bounce.c - classification of delivery failures into categories (see
 * bounce.h). A table-free decision list: the specific enhanced status
 * codes first, then the reply text where the code is generic, then the
 * reply class.
 */
#include "autoconf.h"

#include <stddef.h>
#include <string.h>

#include "bounce.h"
#include "util.h"

#define BOUNCE_TEXT_MAX	512	/* reply text looked at */

/* an enhanced status code: class.subject.detail, -1 fields when none */
struct bounce_esc {
	int	cls;
	int	subject;
	int	detail;
};

static const char *const bounce_names[] = {
	BOUNCE_HARD, BOUNCE_SOFT, BOUNCE_POLICY, BOUNCE_MAILBOX_FULL,
	BOUNCE_DNS, BOUNCE_TLS, BOUNCE_EXPIRED,
};

/* texts saying the mailbox is over its quota */
static const char *const bounce_full_texts[] = {
	"mailbox full", "mailbox is full", "mailbox_full", "quota",
	"exceeded storage", "storage allocation", "insufficient storage",
	"mail box full", "inbox is full", "user is over",
};

/* texts saying the message was refused for policy or reputation */
static const char *const bounce_policy_texts[] = {
	"spam", "blocked", "blacklist", "black list", "blocklist",
	"block list", "denylist", "policy", "reputation", "spamhaus",
	"listed at", "listed on", "rbl", "dnsbl", "junk",
	"not authorized", "unauthenticated", "dmarc",
};

/* texts saying the address does not exist */
static const char *const bounce_user_texts[] = {
	"user unknown", "unknown user", "no such user", "no such mailbox",
	"unknown recipient", "recipient unknown", "does not exist",
	"invalid recipient", "address rejected", "mailbox unavailable",
	"mailbox not found", "no mailbox", "user not found",
	"account disabled", "account has been disabled", "unrouteable",
};

/* bounce_parse_num - decimal 0..999 at s, up to the next '.' or end;
 * returns the value and advances *s, -1 on malformed input */
static int
bounce_parse_num(const char **s)
{
	const char *p = *s;
	int v = 0, n = 0;

	while (*p >= '0' && *p <= '9' && n < 3) {
		v = v * 10 + (*p - '0');
		p++;
		n++;
	}
	if (n == 0)
		return -1;
	*s = p;
	return v;
}

/* bounce_parse_esc - "c.s.d" into e (every field -1 when malformed) */
static void
bounce_parse_esc(const char *enh, struct bounce_esc *e)
{
	const char *p = enh;

	e->cls = e->subject = e->detail = -1;
	if (p == NULL || (*p != '2' && *p != '4' && *p != '5') || p[1] != '.')
		return;
	e->cls = *p - '0';
	p += 2;
	if ((e->subject = bounce_parse_num(&p)) < 0 || *p != '.')
		goto bad;
	p++;
	if ((e->detail = bounce_parse_num(&p)) < 0 || *p != '\0')
		goto bad;
	return;
bad:
	e->cls = e->subject = e->detail = -1;
}

/* bounce_lower - a lower-case copy of text (bounded) into buf */
static void
bounce_lower(const char *text, char *buf, size_t len)
{
	size_t i;

	util_strlcpy(buf, text != NULL ? text : "", len);
	for (i = 0; buf[i] != '\0'; i++)
		if (buf[i] >= 'A' && buf[i] <= 'Z')
			buf[i] = (char)(buf[i] - 'A' + 'a');
}

/* bounce_match - does the lower-case text hold one of the n words? */
static int
bounce_match(const char *text, const char *const *words, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (strstr(text, words[i]) != NULL)
			return 1;
	return 0;
}

const char *
bounce_classify(int code, const char *enh, const char *text, int local,
    int *suppress_r)
{
	char lower[BOUNCE_TEXT_MAX];
	struct bounce_esc e;
	int cls, generic, s, d;
	int suppress = 0;
	const char *cat;

	bounce_parse_esc(enh, &e);
	bounce_lower(text, lower, sizeof(lower));
	cls = e.cls >= 0 ? e.cls : code / 100;
	if (cls != 4 && cls != 5)
		cls = code >= 500 && code < 600 ? 5 : 4;
	s = e.subject;
	d = e.detail;
	/* a generic code: none, or x.0.0 */
	generic = s < 0 || (s == 0 && d == 0);

	if (s == 4 && d == 7)
		cat = BOUNCE_EXPIRED;
	else if ((s == 1 && d == 10) || (local && s == 1 && d == 2) ||
	    (s == 4 && (d == 3 || d == 4)))
		cat = BOUNCE_DNS;
	else if (s == 7 && (d == 5 || d == 10 || d == 11))
		cat = BOUNCE_TLS;
	else if ((s == 2 && d == 2) || ((generic || s == 2) &&
	    bounce_match(lower, bounce_full_texts,
	    nitems(bounce_full_texts))))
		cat = BOUNCE_MAILBOX_FULL;
	else if (cls == 5 && s == 1)
		cat = BOUNCE_HARD;
	else if (s == 7 || (generic && bounce_match(lower,
	    bounce_policy_texts, nitems(bounce_policy_texts))))
		cat = BOUNCE_POLICY;
	else if (cls == 5)
		cat = BOUNCE_HARD;
	else
		cat = BOUNCE_SOFT;

	if (strcmp(cat, BOUNCE_HARD) == 0) {
		if (s == 1)
			/* 5.1.7 and 5.1.8 are about the sender */
			suppress = d != 7 && d != 8;
		else if (generic)
			/* a bare 5xx: the standard 550 texts say "mailbox
			 * unavailable"; anything else is not proof enough */
			suppress = code == 550 || code == 551 || code == 553 ||
			    bounce_match(lower, bounce_user_texts,
			    nitems(bounce_user_texts));
		else
			suppress = s == 0 || s == 2 || s == 4;
	}
	if (suppress_r != NULL)
		*suppress_r = suppress;
	return cat;
}

int
bounce_valid_category(const char *s)
{
	size_t i;

	if (s == NULL)
		return -1;
	for (i = 0; i < nitems(bounce_names); i++)
		if (strcmp(s, bounce_names[i]) == 0)
			return 0;
	return -1;
}
