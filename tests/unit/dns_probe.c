/*
 * dns_probe.c - command-line driver of the dns module for
 * tests/integration/test_dns.py. Prints one result in a stable text form:
 *
 *   dns_probe [-t MS] RESOLVER mx DOMAIN     status OK
 *   dns_probe [-t MS] RESOLVER a HOST        10 mx1.example.test 192.0.2.1,2001:db8::1
 *   dns_probe [-t MS] RESOLVER txt NAME      status OK / txt "joined text"
 *   dns_probe [-t MS] RESOLVER cancel DOMAIN cancellation checks, "cancel OK"
 *   dns_probe [-t MS] RESOLVER free DOMAIN   dns_free() with requests pending
 *   dns_probe - parse-mx HEX                 rdata parser: "mx PREF NAME"
 *   dns_probe - parse-txt HEX                or "malformed"; "txt \"...\""
 *
 * RESOLVER is "IP[:PORT]" or "-" for the system's resolv.conf. A host whose
 * addresses failed temporarily prints "-" and "tempfail". Non-OK results
 * print "error TEXT". Exit 0 when a result was printed, 1 on a failed
 * check, 2 on usage or set-up errors.
 */
#include "autoconf.h"

#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "dns.h"
#include "log.h"
#include "util.h"

static struct event_base *base;
static int outstanding;
static int failed;

/* probe_addr - printable address */
static void
probe_addr(const struct sockaddr_storage *ss, char *buf, size_t len)
{
	if (ss->ss_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr,
		    buf, len);
	else if (ss->ss_family == AF_INET6)
		inet_ntop(AF_INET6,
		    &((const struct sockaddr_in6 *)ss)->sin6_addr, buf, len);
	else
		util_strlcpy(buf, "?", len);
}

/* probe_print_mx - the result, one host per line */
static void
probe_print_mx(const struct dns_mx_result *res)
{
	char a[INET6_ADDRSTRLEN];
	size_t i, j;

	printf("status %s\n", dns_status_str(res->status));
	if (res->error != NULL)
		printf("error %s\n", res->error);
	if (res->implicit)
		printf("implicit\n");
	if (res->status == DNS_OK)
		printf("ttl %d\n", res->ttl);
	for (i = 0; i < res->nhosts; i++) {
		const struct dns_mx_host *h = &res->hosts[i];

		printf("%d %s ", h->pref, h->name);
		if (h->naddrs == 0)
			printf("-");
		for (j = 0; j < h->naddrs; j++) {
			probe_addr(&h->addrs[j], a, sizeof(a));
			printf("%s%s", j ? "," : "", a);
		}
		if (h->status != DNS_OK)
			printf(" %s", h->status == DNS_TEMPFAIL ? "tempfail" :
			    dns_status_str(h->status));
		printf("\n");
	}
}

/* probe_done - one expected callback arrived */
static void
probe_done(void)
{
	if (--outstanding == 0)
		event_base_loopbreak(base);
}

static void
probe_mx_cb(const struct dns_mx_result *res, void *arg)
{
	struct dns_mx_result *copy;

	/* print from a deep copy: exercises dns_mx_result_dup() */
	copy = dns_mx_result_dup(res);
	probe_print_mx(copy);
	dns_mx_result_free(copy);
	probe_done();
}

static void
probe_txt_cb(const struct dns_txt_result *res, void *arg)
{
	size_t i, j;

	printf("status %s\n", dns_status_str(res->status));
	if (res->error != NULL)
		printf("error %s\n", res->error);
	for (i = 0; i < res->ntxt; i++) {
		printf("txt \"");
		for (j = 0; j < res->txt_len[i]; j++) {
			unsigned char c = (unsigned char)res->txt[i][j];

			if (c < 0x20 || c > 0x7e || c == '"' || c == '\\')
				printf("\\%03u", c);
			else
				putchar(c);
		}
		printf("\"\n");
	}
	probe_done();
}

/* cancellation checks: a request cancelled at once, one cancelled from
 * inside another's callback; neither may call back */
static struct dns_req *victim;
static int victim_done;

static void
probe_never_cb(const struct dns_mx_result *res, void *arg)
{
	printf("FAIL: callback of a cancelled request (%s)\n",
	    (const char *)arg);
	failed = 1;
}

static void
probe_victim_cb(const struct dns_mx_result *res, void *arg)
{
	/* answered in the same ub_process() batch before the canceller */
	victim_done = 1;
	victim = NULL;
	probe_done();
}

static void
probe_canceller_cb(const struct dns_mx_result *res, void *arg)
{
	printf("status %s\n", dns_status_str(res->status));
	if (victim != NULL) {
		dns_cancel(victim);
		victim = NULL;
		probe_done();	/* no callback will come for it */
	}
	probe_done();
}

static void
probe_grace(evutil_socket_t fd, short what, void *arg)
{
	event_base_loopbreak(base);
}

/* probe_unhex - hex text to bytes; -1 when not hex */
static long
probe_unhex(const char *hex, unsigned char *out, size_t outsz)
{
	size_t n = strlen(hex), i;
	unsigned int b;

	if (n % 2 != 0 || n / 2 > outsz)
		return -1;
	for (i = 0; i < n / 2; i++) {
		if (sscanf(hex + 2 * i, "%2x", &b) != 1)
			return -1;
		out[i] = (unsigned char)b;
	}
	return (long)(n / 2);
}

/* probe_parse - run one rdata parser on hex input */
static int
probe_parse(const char *mode, const char *hex)
{
	unsigned char rdata[70000];
	char out[70001], name[DNS_NAME_MAX + 1];
	long len;
	size_t olen, i;
	int pref;

	if ((len = probe_unhex(hex, rdata, sizeof(rdata))) < 0)
		return 2;
	if (strcmp(mode, "parse-mx") == 0) {
		/* a small output buffer must be refused, not overrun */
		if (dns_parse_mx(rdata, (size_t)len, &pref, name, 4) == 0 &&
		    strlen(name) >= 4)
			return 1;
		if (dns_parse_mx(rdata, (size_t)len, &pref, name,
		    sizeof(name)) == -1)
			printf("malformed\n");
		else
			printf("mx %d %s\n", pref, name[0] ? name : ".");
		return 0;
	}
	if (strcmp(mode, "parse-txt") == 0) {
		if (dns_parse_txt(rdata, (size_t)len, out, sizeof(out),
		    &olen) == -1)
			printf("malformed\n");
		else {
			printf("txt \"");
			for (i = 0; i < olen; i++) {
				unsigned char c = (unsigned char)out[i];

				if (c < 0x20 || c > 0x7e || c == '"' ||
				    c == '\\')
					printf("\\%03u", c);
				else
					putchar(c);
			}
			printf("\"\n");
		}
		return 0;
	}
	return 2;
}

static void
usage(void)
{
	fprintf(stderr, "usage: dns_probe [-t ms] resolver "
	    "mx|a|txt|cancel|free name\n");
	exit(2);
}

int
main(int argc, char *argv[])
{
	struct dns *dns;
	const char *resolver, *mode, *name;
	struct timeval tv;
	char *err = NULL;
	uint64_t ms = 0;
	const char *perr;
	int ch;

	log_init(1, "dns_probe");
	log_set_level(getenv("DNS_PROBE_DEBUG") ? LOG_LVL_DEBUG : LOG_LVL_WARN);
	while ((ch = getopt(argc, argv, "t:")) != -1) {
		switch (ch) {
		case 't':
			if (util_parse_uint(optarg, 1, 3600000, &ms,
			    &perr) == -1)
				usage();
			break;
		default:
			usage();
		}
	}
	argc -= optind;
	argv += optind;
	if (argc != 3)
		usage();
	resolver = strcmp(argv[0], "-") == 0 ? NULL : argv[0];
	mode = argv[1];
	name = argv[2];
	if (strncmp(mode, "parse-", 6) == 0) {
		if ((ch = probe_parse(mode, name)) == 2)
			usage();
		return ch;
	}

	if ((base = event_base_new()) == NULL) {
		fprintf(stderr, "event_base_new failed\n");
		return 2;
	}
	if ((dns = dns_new(base, resolver, &err)) == NULL) {
		fprintf(stderr, "dns_new: %s\n", err);
		free(err);
		event_base_free(base);
		return 2;
	}
	if (ms > 0)
		dns_set_timeout(dns, (unsigned int)ms);

	if (strcmp(mode, "mx") == 0) {
		outstanding = 1;
		dns_mx(dns, name, probe_mx_cb, NULL);
	} else if (strcmp(mode, "a") == 0) {
		outstanding = 1;
		dns_a(dns, name, probe_mx_cb, NULL);
	} else if (strcmp(mode, "txt") == 0) {
		outstanding = 1;
		dns_txt(dns, name, probe_txt_cb, NULL);
	} else if (strcmp(mode, "cancel") == 0) {
		struct dns_req *r;

		/* cancelled before the loop runs */
		r = dns_mx(dns, name, probe_never_cb, "immediate");
		dns_cancel(r);
		/* a deferred failure (invalid name) cancelled before it runs */
		r = dns_mx(dns, "bad name!", probe_never_cb, "deferred");
		dns_cancel(r);
		r = dns_txt(dns, name, NULL, NULL);
		dns_cancel(r);
		outstanding = 2;
		dns_mx(dns, name, probe_canceller_cb, NULL);
		victim = dns_mx(dns, name, probe_victim_cb, NULL);
		if (dns_pending(dns) != 2) {
			printf("FAIL: pending %zu, want 2\n",
			    dns_pending(dns));
			failed = 1;
		}
	} else if (strcmp(mode, "free") == 0) {
		dns_mx(dns, name, probe_never_cb, "freed");
		dns_txt(dns, name, NULL, NULL);
		dns_a(dns, name, probe_never_cb, "freed");
		dns_mx(dns, "bad name!", probe_never_cb, "freed-deferred");
		dns_free(dns);
		event_base_loop(base, EVLOOP_NONBLOCK);
		event_base_free(base);
		printf("free OK\n");
		return 0;
	} else
		usage();

	event_base_dispatch(base);
	if (outstanding != 0) {
		printf("FAIL: loop ended with %d outstanding\n", outstanding);
		failed = 1;
	}
	if (strcmp(mode, "cancel") == 0) {
		struct event *grace;

		/* answers to cancelled queries would arrive about now */
		grace = evtimer_new(base, probe_grace, NULL);
		tv.tv_sec = 0;
		tv.tv_usec = 300 * 1000;
		evtimer_add(grace, &tv);
		event_base_dispatch(base);
		event_free(grace);
		if (dns_pending(dns) != 0) {
			printf("FAIL: pending %zu after the end\n",
			    dns_pending(dns));
			failed = 1;
		}
		printf("cancel %s victim=%s\n", failed ? "FAIL" : "OK",
		    victim_done ? "answered" : "cancelled");
	}
	dns_free(dns);
	event_base_free(base);
	fflush(stdout);
	return failed ? 1 : 0;
}
