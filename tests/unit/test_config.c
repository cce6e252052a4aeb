/*
 * test_config.c - petrel.conf reader: defaults, a full valid file, every
 * kind of error with its file:line and key, comments, listener lists, and
 * the duration/size parsers the reader relies on.
 */
#include "autoconf.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "util.h"

static char tmppath[64];

/* write_conf - text into a fresh temp file; returns its path */
static const char *
write_conf(const char *text)
{
	int fd;
	size_t len = strlen(text);

	util_strlcpy(tmppath, "/tmp/test_config.XXXXXX", sizeof(tmppath));
	fd = mkstemp(tmppath);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, text, len), (ssize_t)len);
	close(fd);
	return tmppath;
}

/* load_ok - load text over defaults into c, asserting success */
static void
load_ok(const char *text, struct petrel_conf *c)
{
	const char *path = write_conf(text);
	char *err = NULL;
	int rv;

	config_init(c);
	rv = config_load(path, c, &err);
	unlink(path);
	ck_assert_msg(rv == 0, "unexpected error: %s", err ? err : "(none)");
	ck_assert_ptr_null(err);
}

/* load_err - load text and assert the error message is exactly
 * "<path>:<line>: <rest>" (line 0: "<path>: <rest>") */
static void
load_err(const char *text, int line, const char *rest)
{
	struct petrel_conf c;
	const char *path = write_conf(text);
	char *err = NULL, *want;
	int rv;

	config_init(&c);
	rv = config_load(path, &c, &err);
	unlink(path);
	ck_assert_int_eq(rv, -1);
	ck_assert_ptr_nonnull(err);
	if (line > 0)
		want = xasprintf("%s:%d: %s", path, line, rest);
	else
		want = xasprintf("%s: %s", path, rest);
	ck_assert_str_eq(err, want);
	free(want);
	free(err);
	config_free(&c);
}

START_TEST(test_defaults)
{
	struct petrel_conf c;
	char host[256];
	static const long sched[] = { 300, 600, 1800, 3600, 7200, 14400 };
	int i;

	config_init(&c);
	ck_assert_int_eq(gethostname(host, sizeof(host)), 0);
	host[sizeof(host) - 1] = '\0';
	ck_assert_str_eq(c.hostname, host);
	ck_assert_str_eq(c.data_dir, "/var/lib/petrel");
	ck_assert_int_eq(c.listen_submission.n, 1);
	ck_assert_str_eq(c.listen_submission.host[0], "127.0.0.1");
	ck_assert_str_eq(c.listen_submission.port[0], "587");
	ck_assert_int_eq(c.listen_submissions.n, 1);
	ck_assert_str_eq(c.listen_submissions.host[0], "127.0.0.1");
	ck_assert_str_eq(c.listen_submissions.port[0], "465");
	ck_assert_int_eq(c.listen_relay.n, 1);
	ck_assert_str_eq(c.listen_relay.host[0], "127.0.0.1");
	ck_assert_str_eq(c.listen_relay.port[0], "25");
	ck_assert_int_eq(c.listen_http.n, 0);
	ck_assert_ptr_null(c.tls_cert);
	ck_assert_ptr_null(c.tls_key);
	ck_assert_ptr_null(c.user);
	ck_assert_ptr_null(c.resolver);
	ck_assert_ptr_null(c.resolver_addr);
	ck_assert_int_eq(c.smtp_remote_port, 25);
	ck_assert_ptr_null(c.smtp_bind_address);
	ck_assert_str_eq(c.managed_zone, "petrel.invalid");
	ck_assert_ptr_null(c.spf_include);
	ck_assert_int_eq(c.retry_schedule_n, 6);
	for (i = 0; i < 6; i++)
		ck_assert_int_eq(c.retry_schedule[i], sched[i]);
	ck_assert_int_eq(c.queue_lifetime, 5 * 86400);
	ck_assert_uint_eq(c.max_message_size, 35ULL * 1024 * 1024);
	ck_assert_uint_eq(c.max_recipients, 1000);
	ck_assert_ptr_null(c.arc_domain);
	ck_assert_ptr_null(c.arc_selector);
	ck_assert_ptr_null(c.arc_key_file);
	ck_assert_int_eq(c.log_level, LOG_LVL_INFO);
	ck_assert_uint_eq(c.max_connections, 20000);
	ck_assert_uint_eq(c.max_connections_per_ip, 100);
	ck_assert_uint_eq(c.store_map_size, 8ULL * 1024 * 1024 * 1024);
	ck_assert_ptr_null(c.path);
	config_free(&c);
	ck_assert_ptr_null(c.hostname);
	ck_assert_int_eq(c.listen_relay.n, 0);
}
END_TEST

START_TEST(test_full_file)
{
	struct petrel_conf c;

	load_ok(
	    "# Petrel test configuration\n"
	    "hostname = mx.example.net\n"
	    "data_dir = /tmp/petrel-data\n"
	    "listen_submission = 127.0.0.1:2587, [::1]:2587\n"
	    "listen_submissions = *:2465\n"
	    "listen_relay = 127.0.0.2:2525 127.0.0.3:2526,127.0.0.4:2527\n"
	    "listen_http = 127.0.0.1:8080\n"
	    "tls_cert = /etc/petrel/cert.pem\n"
	    "tls_key = /etc/petrel/key.pem\n"
	    "user = _petrel\n"
	    "resolver = 127.0.0.1:5353\n"
	    "smtp_remote_port = 2525\n"
	    "smtp_bind_address = 127.0.0.5\n"
	    "managed_zone = petrel.example.net\n"
	    "spf_include = _spf.example.net\n"
	    "retry_schedule = 30s,1m , 90, 2h\n"
	    "queue_lifetime = 2d\n"
	    "max_message_size = 10M\n"
	    "max_recipients = 50\n"
	    "arc_domain = example.net\n"
	    "arc_selector = arc1\n"
	    "arc_key_file = /etc/petrel/arc.key\n"
	    "log_level = debug\n"
	    "max_connections = 500\n"
	    "max_connections_per_ip = 10\n"
	    "store_map_size = 1G\n", &c);
	ck_assert_str_eq(c.path, tmppath);
	ck_assert_str_eq(c.hostname, "mx.example.net");
	ck_assert_str_eq(c.data_dir, "/tmp/petrel-data");
	ck_assert_int_eq(c.listen_submission.n, 2);
	ck_assert_str_eq(c.listen_submission.host[0], "127.0.0.1");
	ck_assert_str_eq(c.listen_submission.port[0], "2587");
	ck_assert_str_eq(c.listen_submission.host[1], "::1");
	ck_assert_str_eq(c.listen_submission.port[1], "2587");
	ck_assert_int_eq(c.listen_submissions.n, 1);
	ck_assert_str_eq(c.listen_submissions.host[0], "*");
	ck_assert_str_eq(c.listen_submissions.port[0], "2465");
	ck_assert_int_eq(c.listen_relay.n, 3);
	ck_assert_str_eq(c.listen_relay.host[2], "127.0.0.4");
	ck_assert_str_eq(c.listen_relay.port[2], "2527");
	ck_assert_int_eq(c.listen_http.n, 1);
	ck_assert_str_eq(c.listen_http.port[0], "8080");
	ck_assert_str_eq(c.tls_cert, "/etc/petrel/cert.pem");
	ck_assert_str_eq(c.tls_key, "/etc/petrel/key.pem");
	ck_assert_str_eq(c.user, "_petrel");
	ck_assert_str_eq(c.resolver, "127.0.0.1:5353");
	ck_assert_str_eq(c.resolver_addr, "127.0.0.1");
	ck_assert_int_eq(c.resolver_port, 5353);
	ck_assert_int_eq(c.smtp_remote_port, 2525);
	ck_assert_str_eq(c.smtp_bind_address, "127.0.0.5");
	ck_assert_str_eq(c.managed_zone, "petrel.example.net");
	ck_assert_str_eq(c.spf_include, "_spf.example.net");
	ck_assert_int_eq(c.retry_schedule_n, 4);
	ck_assert_int_eq(c.retry_schedule[0], 30);
	ck_assert_int_eq(c.retry_schedule[1], 60);
	ck_assert_int_eq(c.retry_schedule[2], 90);
	ck_assert_int_eq(c.retry_schedule[3], 7200);
	ck_assert_int_eq(c.queue_lifetime, 2 * 86400);
	ck_assert_uint_eq(c.max_message_size, 10ULL * 1024 * 1024);
	ck_assert_uint_eq(c.max_recipients, 50);
	ck_assert_str_eq(c.arc_domain, "example.net");
	ck_assert_str_eq(c.arc_selector, "arc1");
	ck_assert_str_eq(c.arc_key_file, "/etc/petrel/arc.key");
	ck_assert_int_eq(c.log_level, LOG_LVL_DEBUG);
	ck_assert_uint_eq(c.max_connections, 500);
	ck_assert_uint_eq(c.max_connections_per_ip, 10);
	ck_assert_uint_eq(c.store_map_size, 1024ULL * 1024 * 1024);
	config_free(&c);
}
END_TEST

START_TEST(test_comments_blank)
{
	struct petrel_conf c;

	load_ok(
	    "\n"
	    "# a full-line comment\n"
	    "   # an indented comment\n"
	    "\t\n"
	    "max_recipients = 7   # trailing comment\n"
	    "  data_dir=/srv/petrel#not-a-comment   \n"
	    "log_level\t=\twarn\r\n"
	    "hostname = last.example", &c);	/* no final newline */
	ck_assert_uint_eq(c.max_recipients, 7);
	ck_assert_str_eq(c.data_dir, "/srv/petrel#not-a-comment");
	ck_assert_int_eq(c.log_level, LOG_LVL_WARN);
	ck_assert_str_eq(c.hostname, "last.example");
	config_free(&c);

	/* an empty file keeps every default */
	load_ok("", &c);
	ck_assert_uint_eq(c.max_recipients, 1000);
	config_free(&c);
}
END_TEST

START_TEST(test_empty_values)
{
	struct petrel_conf c;

	load_ok(
	    "listen_relay =\n"
	    "listen_submissions = # off\n"
	    "user =\n"
	    "resolver =\n"
	    "smtp_bind_address =\n", &c);
	ck_assert_int_eq(c.listen_relay.n, 0);
	ck_assert_int_eq(c.listen_submissions.n, 0);
	ck_assert_int_eq(c.listen_submission.n, 1);
	ck_assert_ptr_null(c.user);
	ck_assert_ptr_null(c.resolver);
	ck_assert_ptr_null(c.smtp_bind_address);
	config_free(&c);
}
END_TEST

START_TEST(test_errors)
{
	load_err("# c\n\nbogus_key = 1\n", 3, "bogus_key: unknown key");
	load_err("max_recipients = 5\nlog_level = info\nmax_recipients = 6\n",
	    3, "max_recipients: duplicate key (first set on line 1)");
	load_err("max_recipients = 12x\n", 1, "max_recipients: not a number");
	load_err("max_recipients = -1\n", 1, "max_recipients: not a number");
	load_err("\n\nmax_recipients = 100001\n", 3,
	    "max_recipients: number out of range (1..100000)");
	load_err("max_recipients = 0\n", 1,
	    "max_recipients: number out of range (1..100000)");
	load_err("max_recipients = 99999999999999999999999\n", 1,
	    "max_recipients: number too large");
	load_err("smtp_remote_port = 65536\n", 1,
	    "smtp_remote_port: number out of range (1..65535)");
	load_err("max_connections = 1000001\n", 1,
	    "max_connections: number out of range (1..1000000)");
	load_err("queue_lifetime = 5y\n", 1, "queue_lifetime: unknown unit");
	load_err("queue_lifetime = d\n", 1, "queue_lifetime: empty number");
	load_err("queue_lifetime = 0\n", 1,
	    "queue_lifetime: duration out of range (1s..365d)");
	load_err("queue_lifetime = 366d\n", 1,
	    "queue_lifetime: duration out of range (1s..365d)");
	load_err("max_message_size = 35X\n", 1,
	    "max_message_size: unknown unit");
	load_err("max_message_size = 512\n", 1,
	    "max_message_size: size out of range (1k..1G)");
	load_err("store_map_size = 1M\n", 1,
	    "store_map_size: size out of range (16M..16T)");
	load_err("log_level = loud\n", 1,
	    "log_level: unknown log level (error, warn, info, debug)");
	load_err("listen_relay = 127.0.0.1\n", 1,
	    "listen_relay: expected HOST:PORT");
	load_err("listen_relay = 127.0.0.1:0\n", 1,
	    "listen_relay: port must be a number in 1..65535");
	load_err("listen_http = ::1:80\n", 1,
	    "listen_http: IPv6 address must be in brackets ([::1]:587)");
	load_err("retry_schedule =\n", 1,
	    "retry_schedule: must list at least one duration");
	load_err("retry_schedule = 5m,,1h\n", 1,
	    "retry_schedule: empty entry in list");
	load_err("retry_schedule = 5m, 1x\n", 1,
	    "retry_schedule: 1x: unknown unit");
	load_err("retry_schedule = 0\n", 1,
	    "retry_schedule: 0: duration out of range (1s..30d)");
	load_err("\nmax_recipients 5\n", 2,
	    "max_recipients: expected \"key = value\" (missing '=')");
	load_err("= 5\n", 1, "missing key before '='");
	load_err("hostname =\n", 1, "hostname: must not be empty");
	load_err("data_dir =   # none\n", 1, "data_dir: must not be empty");
	load_err("hostname = mx example.net\n", 1,
	    "hostname: not a valid DNS name");
	load_err("managed_zone = petrel..test\n", 1,
	    "managed_zone: not a valid DNS name");
	load_err("arc_domain = example.net.\n", 1,
	    "arc_domain: not a valid DNS name");
	load_err("smtp_bind_address = example.net\n", 1,
	    "smtp_bind_address: not an IPv4 or IPv6 address");
	load_err("resolver = dns.example:53\n", 1,
	    "resolver: expected IP, IP:PORT or [IPv6]:PORT");
	load_err("resolver = 127.0.0.1:99999\n", 1,
	    "resolver: port must be a number in 1..65535");
	load_err("user = a\001b\n", 1, "control character in line");
	/* cross-key checks name the file only */
	load_err("tls_cert = /c.pem\n", 0,
	    "tls_key: must be set together with tls_cert");
	load_err("tls_key = /k.pem\n", 0,
	    "tls_cert: must be set together with tls_key");
	load_err("arc_domain = example.net\narc_key_file = /k\n", 0,
	    "arc_selector: arc_domain, arc_selector and arc_key_file must be "
	    "set together");
}
END_TEST

START_TEST(test_retry_schedule_max)
{
	struct petrel_conf c;
	char text[512];
	size_t i;

	util_strlcpy(text, "retry_schedule = 1m", sizeof(text));
	for (i = 1; i < 32; i++)
		strncat(text, ",2m", sizeof(text) - strlen(text) - 1);
	strncat(text, "\n", sizeof(text) - strlen(text) - 1);
	load_ok(text, &c);
	ck_assert_int_eq(c.retry_schedule_n, 32);
	ck_assert_int_eq(c.retry_schedule[31], 120);
	config_free(&c);

	text[strlen(text) - 1] = '\0';
	strncat(text, ",3m\n", sizeof(text) - strlen(text) - 1);
	load_err(text, 1, "retry_schedule: too many entries (at most 32)");
}
END_TEST

START_TEST(test_long_line)
{
	char *text = xmalloc(CONF_LINE_MAX + 64);

	memset(text, 'a', CONF_LINE_MAX + 10);
	memcpy(text, "# ok\nuser = ", 12);
	text[CONF_LINE_MAX + 10] = '\n';
	text[CONF_LINE_MAX + 11] = '\0';
	load_err(text, 2, "line too long");

	/* exactly CONF_LINE_MAX bytes is fine */
	{
		struct petrel_conf c;

		memset(text, 'b', CONF_LINE_MAX);
		memcpy(text, "user = ", 7);
		text[CONF_LINE_MAX] = '\n';
		text[CONF_LINE_MAX + 1] = '\0';
		load_ok(text, &c);
		ck_assert_uint_eq(strlen(c.user), CONF_LINE_MAX - 7);
		config_free(&c);
	}
	free(text);
}
END_TEST

START_TEST(test_missing_file)
{
	struct petrel_conf c;
	char *err = NULL;

	config_init(&c);
	ck_assert_int_eq(config_load("/nonexistent/petrel.conf", &c, &err),
	    -1);
	ck_assert_str_eq(err,
	    "/nonexistent/petrel.conf: No such file or directory");
	free(err);
	config_free(&c);
}
END_TEST

START_TEST(test_resolver_forms)
{
	static const struct {
		const char *in, *addr;
		int port;
	} t[] = {
		{ "127.0.0.1:5353", "127.0.0.1", 5353 },
		{ "127.0.0.1", "127.0.0.1", 53 },
		{ "127.0.0.1@5300", "127.0.0.1", 5300 },
		{ "[::1]:5353", "::1", 5353 },
		{ "[::1]", "::1", 53 },
		{ "::1", "::1", 53 },
		{ "2001:db8::1", "2001:db8::1", 53 },
	};
	struct petrel_conf c;
	char text[128];
	size_t i;

	for (i = 0; i < nitems(t); i++) {
		snprintf(text, sizeof(text), "resolver = %s\n", t[i].in);
		load_ok(text, &c);
		ck_assert_str_eq(c.resolver, t[i].in);
		ck_assert_str_eq(c.resolver_addr, t[i].addr);
		ck_assert_int_eq(c.resolver_port, t[i].port);
		config_free(&c);
	}
	load_err("resolver = [::1]x\n", 1,
	    "resolver: expected [IPv6]:PORT");
	load_err("resolver = [127.0.0.1]:53\n", 1,
	    "resolver: bad IPv6 address in brackets");
	load_err("resolver = 127.0.0.1:\n", 1, "resolver: missing port");
}
END_TEST

START_TEST(test_listen_parse)
{
	struct conf_listen l;
	const char *err = NULL;

	memset(&l, 0, sizeof(l));
	ck_assert_int_eq(config_parse_listen("127.0.0.1:587, [::1]:587 "
	    "*:25,,localhost:2525\t[2001:db8::1]:10", &l, &err), 0);
	ck_assert_int_eq(l.n, 5);
	ck_assert_str_eq(l.host[0], "127.0.0.1");
	ck_assert_str_eq(l.port[0], "587");
	ck_assert_str_eq(l.host[1], "::1");
	ck_assert_str_eq(l.port[1], "587");
	ck_assert_str_eq(l.host[2], "*");
	ck_assert_str_eq(l.port[2], "25");
	ck_assert_str_eq(l.host[3], "localhost");
	ck_assert_str_eq(l.port[3], "2525");
	ck_assert_str_eq(l.host[4], "2001:db8::1");
	ck_assert_str_eq(l.port[4], "10");

	/* an error leaves l as it was */
	ck_assert_int_eq(config_parse_listen("127.0.0.1:1, bad", &l, &err), -1);
	ck_assert_str_eq(err, "expected HOST:PORT");
	ck_assert_int_eq(l.n, 5);

	/* a new value replaces the old list; empty turns it off */
	ck_assert_int_eq(config_parse_listen("[::]:0025", &l, &err), 0);
	ck_assert_int_eq(l.n, 1);
	ck_assert_str_eq(l.host[0], "::");
	ck_assert_str_eq(l.port[0], "25");
	ck_assert_int_eq(config_parse_listen("  ", &l, &err), 0);
	ck_assert_int_eq(l.n, 0);

#define BAD(v, msg) do {						\
	err = NULL;							\
	ck_assert_int_eq(config_parse_listen((v), &l, &err), -1);	\
	ck_assert_str_eq(err, (msg));					\
	ck_assert_int_eq(l.n, 0);					\
} while (0)
	BAD("[::1:587", "missing ']' after IPv6 address");
	BAD("[::1]587", "expected [IPv6]:PORT");
	BAD("[::1]", "expected [IPv6]:PORT");
	BAD("[nothost]:25", "bad IPv6 address in brackets");
	BAD("::1:25", "IPv6 address must be in brackets ([::1]:587)");
	BAD(":25", "missing host (use *:PORT for all addresses)");
	BAD("127.0.0.1:", "missing port");
	BAD("127.0.0.1:65536", "port must be a number in 1..65535");
	BAD("127.0.0.1:http", "port must be a number in 1..65535");
	BAD("127.0.0.1:-1", "port must be a number in 1..65535");
	BAD("999.0.0.1:25", "bad IPv4 address");
	BAD("ho$t:25", "bad character in host");
	BAD("127.0.0.1:1 127.0.0.1:2 127.0.0.1:3 127.0.0.1:4 127.0.0.1:5 "
	    "127.0.0.1:6 127.0.0.1:7 127.0.0.1:8 127.0.0.1:9",
	    "too many addresses (at most 8)");
#undef BAD
	ck_assert_int_eq(config_parse_listen("127.0.0.1:1 127.0.0.1:2 "
	    "127.0.0.1:3 127.0.0.1:4 127.0.0.1:5 127.0.0.1:6 127.0.0.1:7 "
	    "127.0.0.1:8", &l, &err), 0);
	ck_assert_int_eq(l.n, LISTEN_ADDRS_MAX);
	ck_assert_str_eq(l.port[7], "8");
	/* config_free releases listener entries */
	{
		struct petrel_conf c;

		memset(&c, 0, sizeof(c));
		c.listen_http = l;
		config_free(&c);
		ck_assert_int_eq(c.listen_http.n, 0);
	}
}
END_TEST

START_TEST(test_parse_duration)
{
	const char *err;
	long v;

	ck_assert_int_eq(util_parse_duration("90", &v, &err), 0);
	ck_assert_int_eq(v, 90);
	ck_assert_int_eq(util_parse_duration("0", &v, &err), 0);
	ck_assert_int_eq(v, 0);
	ck_assert_int_eq(util_parse_duration("30s", &v, &err), 0);
	ck_assert_int_eq(v, 30);
	ck_assert_int_eq(util_parse_duration("5m", &v, &err), 0);
	ck_assert_int_eq(v, 300);
	ck_assert_int_eq(util_parse_duration("1h", &v, &err), 0);
	ck_assert_int_eq(v, 3600);
	ck_assert_int_eq(util_parse_duration("5d", &v, &err), 0);
	ck_assert_int_eq(v, 432000);
	ck_assert_int_eq(util_parse_duration("2w", &v, &err), 0);
	ck_assert_int_eq(v, 1209600);
	ck_assert_int_eq(util_parse_duration("", &v, &err), -1);
	ck_assert_int_eq(util_parse_duration("m", &v, &err), -1);
	ck_assert_int_eq(util_parse_duration("5x", &v, &err), -1);
	ck_assert_str_eq(err, "unknown unit");
	ck_assert_int_eq(util_parse_duration("5 m", &v, &err), -1);
	ck_assert_int_eq(util_parse_duration("-5m", &v, &err), -1);
	ck_assert_int_eq(util_parse_duration("1.5h", &v, &err), -1);
	ck_assert_int_eq(util_parse_duration("5mm", &v, &err), -1);
	ck_assert_int_eq(util_parse_duration("99999999999999999999d", &v,
	    &err), -1);
	ck_assert_int_eq(util_parse_duration("3651d", &v, &err), -1);
	ck_assert_str_eq(err, "duration too long");
}
END_TEST

START_TEST(test_parse_size)
{
	const char *err;
	uint64_t v;

	ck_assert_int_eq(util_parse_size("1000", &v, &err), 0);
	ck_assert_uint_eq(v, 1000);
	ck_assert_int_eq(util_parse_size("10k", &v, &err), 0);
	ck_assert_uint_eq(v, 10240);
	ck_assert_int_eq(util_parse_size("10K", &v, &err), 0);
	ck_assert_uint_eq(v, 10240);
	ck_assert_int_eq(util_parse_size("25M", &v, &err), 0);
	ck_assert_uint_eq(v, 25ULL << 20);
	ck_assert_int_eq(util_parse_size("25m", &v, &err), 0);
	ck_assert_uint_eq(v, 25ULL << 20);
	ck_assert_int_eq(util_parse_size("1G", &v, &err), 0);
	ck_assert_uint_eq(v, 1ULL << 30);
	ck_assert_int_eq(util_parse_size("3g", &v, &err), 0);
	ck_assert_uint_eq(v, 3ULL << 30);
	ck_assert_int_eq(util_parse_size("2T", &v, &err), 0);
	ck_assert_uint_eq(v, 2ULL << 40);
	ck_assert_int_eq(util_parse_size("", &v, &err), -1);
	ck_assert_int_eq(util_parse_size("M", &v, &err), -1);
	ck_assert_int_eq(util_parse_size("25MB", &v, &err), -1);
	ck_assert_int_eq(util_parse_size("25X", &v, &err), -1);
	ck_assert_str_eq(err, "unknown unit");
	ck_assert_int_eq(util_parse_size("-1", &v, &err), -1);
	ck_assert_int_eq(util_parse_size("1099511627776", &v, &err), 0);
	ck_assert_uint_eq(v, 1ULL << 40);
	ck_assert_int_eq(util_parse_size("16777216T", &v, &err), -1);
	ck_assert_str_eq(err, "value too large");
	ck_assert_int_eq(util_parse_size("17179869184G", &v, &err), -1);
	ck_assert_str_eq(err, "value too large");
}
END_TEST

static Suite *
config_suite(void)
{
	Suite *s = suite_create("config");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_defaults);
	tcase_add_test(tc, test_full_file);
	tcase_add_test(tc, test_comments_blank);
	tcase_add_test(tc, test_empty_values);
	tcase_add_test(tc, test_errors);
	tcase_add_test(tc, test_retry_schedule_max);
	tcase_add_test(tc, test_long_line);
	tcase_add_test(tc, test_missing_file);
	tcase_add_test(tc, test_resolver_forms);
	tcase_add_test(tc, test_listen_parse);
	tcase_add_test(tc, test_parse_duration);
	tcase_add_test(tc, test_parse_size);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(config_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? 0 : 1;
}
