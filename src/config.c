/*
 * config.c - petrel.conf. One table, conf_keys[], declares every key with
 * its type, default, target field and bounds (as Postfix's main.cf tables
 * do); the reader, the defaults and the documentation follow that table.
 *
 * Syntax: "key = value" lines, '#' starts a comment at the start of a line
 * or after whitespace, blank lines are ignored, a line holds at most
 * CONF_LINE_MAX bytes. Unknown keys, bad values and duplicate keys are
 * errors naming "file:line: key: reason". config_load() applies the file
 * over config_init()'s defaults; on error the struct is left consistent
 * (config_free() releases it) but partly changed, so a reload loads into a
 * fresh struct and keeps the old one on failure.
 */
#include "autoconf.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "config.h"
#include "limits.h"
#include "log.h"
#include "util.h"

enum conf_type {
	CONF_STRING,	/* char *, empty value = NULL */
	CONF_DNSNAME,	/* char *, a DNS name (letters, digits, '-', '_', '.') */
	CONF_LISTEN,	/* struct conf_listen, empty value = off */
	CONF_INT,	/* int within [min, max] */
	CONF_UINT,	/* unsigned within [min, max] */
	CONF_SIZE,	/* uint64_t bytes via util_parse_size */
	CONF_DURATION,	/* long seconds via util_parse_duration */
	CONF_DURLIST,	/* retry_schedule: comma separated durations */
	CONF_LOGLEVEL,	/* int enum log_level via log_level_parse */
	CONF_IPADDR,	/* char *, an IPv4 or IPv6 literal, empty = NULL */
	CONF_RESOLVER,	/* char *, IP, IP:PORT, [IPv6]:PORT, empty = NULL */
};

#define CONF_F_REQUIRED	0x01	/* an empty value is an error */

struct conf_key {
	const char	*name;
	enum conf_type	 type;
	const char	*def;		/* default as written in the file; NULL = unset */
	size_t		 off;		/* target field in struct petrel_conf */
	uint64_t	 min, max;	/* bounds for numbers, sizes, durations */
	int		 flags;
};

#define OFF(f)	offsetof(struct petrel_conf, f)
#define KIB	1024ULL
#define MIB	(1024ULL * 1024)
#define GIB	(1024ULL * 1024 * 1024)
#define TIB	(1024ULL * 1024 * 1024 * 1024)
#define DAY	86400ULL

/* conf_keys - every key of petrel.conf; keep doc/petrel.conf.5 and
 * etc/petrel.conf in step. hostname's default comes from gethostname(). */
static const struct conf_key conf_keys[] = {
	{ "hostname", CONF_DNSNAME, NULL, OFF(hostname), 0, 0, CONF_F_REQUIRED },
	{ "data_dir", CONF_STRING, "/var/lib/petrel", OFF(data_dir), 0, 0,
	    CONF_F_REQUIRED },
	{ "listen_submission", CONF_LISTEN, "127.0.0.1:587",
	    OFF(listen_submission), 0, 0, 0 },
	{ "listen_submissions", CONF_LISTEN, "127.0.0.1:465",
	    OFF(listen_submissions), 0, 0, 0 },
	{ "listen_relay", CONF_LISTEN, "127.0.0.1:25", OFF(listen_relay), 0, 0,
	    0 },
	{ "listen_http", CONF_LISTEN, NULL, OFF(listen_http), 0, 0, 0 },
	{ "tls_cert", CONF_STRING, NULL, OFF(tls_cert), 0, 0, 0 },
	{ "tls_key", CONF_STRING, NULL, OFF(tls_key), 0, 0, 0 },
	{ "user", CONF_STRING, NULL, OFF(user), 0, 0, 0 },
	{ "resolver", CONF_RESOLVER, NULL, OFF(resolver), 0, 0, 0 },
	{ "smtp_remote_port", CONF_INT, "25", OFF(smtp_remote_port), 1, 65535,
	    0 },
	{ "smtp_bind_address", CONF_IPADDR, NULL, OFF(smtp_bind_address), 0, 0,
	    0 },
	{ "managed_zone", CONF_DNSNAME, "petrel.invalid", OFF(managed_zone), 0,
	    0, CONF_F_REQUIRED },
	{ "spf_include", CONF_DNSNAME, NULL, OFF(spf_include), 0, 0, 0 },
	{ "verify_interval", CONF_DURATION, "10m", OFF(verify_interval), 1,
	    30 * DAY, 0 },
	{ "reverify_interval", CONF_DURATION, "1d", OFF(reverify_interval), 1,
	    30 * DAY, 0 },
	{ "retry_schedule", CONF_DURLIST, "5m, 10m, 30m, 1h, 2h, 4h",
	    OFF(retry_schedule), 1, 30 * DAY, 0 },
	{ "queue_lifetime", CONF_DURATION, "5d", OFF(queue_lifetime), 1,
	    365 * DAY, 0 },
	{ "max_message_size", CONF_SIZE, "35M", OFF(max_message_size), KIB,
	    GIB, 0 },
	{ "max_recipients", CONF_UINT, "1000", OFF(max_recipients), 1, 100000,
	    0 },
	{ "arc_domain", CONF_DNSNAME, NULL, OFF(arc_domain), 0, 0, 0 },
	{ "arc_selector", CONF_DNSNAME, NULL, OFF(arc_selector), 0, 0, 0 },
	{ "arc_key_file", CONF_STRING, NULL, OFF(arc_key_file), 0, 0, 0 },
	{ "log_level", CONF_LOGLEVEL, "info", OFF(log_level), 0, 0, 0 },
	{ "max_connections", CONF_UINT, "20000", OFF(max_connections), 1,
	    1000000, 0 },
	{ "max_connections_per_ip", CONF_UINT, "100",
	    OFF(max_connections_per_ip), 1, 100000, 0 },
	{ "store_map_size", CONF_SIZE, "8G", OFF(store_map_size), 16 * MIB,
	    16 * TIB, 0 },
	{ "smtpd_timeout", CONF_DURATION, "5m", OFF(smtpd_timeout), 1, DAY, 0 },
	{ "smtpd_data_timeout", CONF_DURATION, "10m", OFF(smtpd_data_timeout),
	    1, DAY, 0 },
	{ "smtpd_greet_delay_ms", CONF_INT, "0", OFF(smtpd_greet_delay_ms), 0,
	    60000, 0 },
	{ "smtpd_auth_fail_limit", CONF_UINT, "5", OFF(smtpd_auth_fail_limit),
	    1, 1000, 0 },
	{ "relayhost", CONF_STRING, NULL, OFF(relayhost), 0, 0, 0 },
	{ "transport", CONF_STRING, NULL, OFF(transport), 0, 0, 0 },
	{ "smtp_destination_concurrency", CONF_UINT, "10",
	    OFF(smtp_destination_concurrency), 1, 10000, 0 },
	{ "smtp_max_connections", CONF_UINT, "100", OFF(smtp_max_connections),
	    1, 100000, 0 },
	{ "smtp_tls_verify", CONF_STRING, "none", OFF(smtp_tls_verify), 0, 0,
	    CONF_F_REQUIRED },
	{ "smtp_tls_ca_file", CONF_STRING, NULL, OFF(smtp_tls_ca_file), 0, 0,
	    0 },
	{ "smtp_connect_timeout", CONF_DURATION, "30s",
	    OFF(smtp_connect_timeout), 1, 3600, 0 },
	{ "smtp_timeout", CONF_DURATION, "5m", OFF(smtp_timeout), 1, 3600, 0 },
	{ "smtp_data_timeout", CONF_DURATION, "10m", OFF(smtp_data_timeout), 1,
	    3600, 0 },
	{ "listen_https", CONF_LISTEN, NULL, OFF(listen_https), 0, 0, 0 },
	{ "apikey_endpoint", CONF_STRING, NULL, OFF(apikey_endpoint), 0, 0, 0 },
	{ "admin_api_key_file", CONF_STRING, NULL, OFF(admin_api_key_file), 0,
	    0, 0 },
	{ "http_max_body", CONF_SIZE, "16M", OFF(http_max_body), KIB, GIB, 0 },
	{ "listen_metrics", CONF_LISTEN, NULL, OFF(listen_metrics), 0, 0, 0 },
	{ "event_retention", CONF_DURATION, "30d", OFF(event_retention), 60,
	    3650 * DAY, 0 },
	{ "message_retention", CONF_DURATION, "30d", OFF(message_retention),
	    60, 3650 * DAY, 0 },
	{ "webhook_ca_file", CONF_STRING, NULL, OFF(webhook_ca_file), 0, 0, 0 },
	{ "unsubscribe_base_url", CONF_STRING, NULL, OFF(unsubscribe_base_url),
	    0, 0, 0 },
	{ "unsubscribe_mailto", CONF_STRING, NULL, OFF(unsubscribe_mailto), 0,
	    0, 0 },
	{ "tracking_base_url", CONF_STRING, NULL, OFF(tracking_base_url), 0, 0,
	    0 },
	{ "tracking_machine_window", CONF_DURATION, "10s",
	    OFF(tracking_machine_window), 0, 3600, 0 },
};

#define CONF_NKEYS	nitems(conf_keys)
#define CONF_STR_(x)	#x
#define CONF_STR(x)	CONF_STR_(x)

#define FIELD(c, k, type)	((type *)(void *)((char *)(c) + (k)->off))

/* conf_fmt_size - bytes in the largest exact unit ("35M") into buf */
static void
conf_fmt_size(uint64_t v, char *buf, size_t len)
{
	if (v != 0 && v % TIB == 0)
		snprintf(buf, len, "%lluT", (unsigned long long)(v / TIB));
	else if (v != 0 && v % GIB == 0)
		snprintf(buf, len, "%lluG", (unsigned long long)(v / GIB));
	else if (v != 0 && v % MIB == 0)
		snprintf(buf, len, "%lluM", (unsigned long long)(v / MIB));
	else if (v != 0 && v % KIB == 0)
		snprintf(buf, len, "%lluk", (unsigned long long)(v / KIB));
	else
		snprintf(buf, len, "%llu", (unsigned long long)v);
}

/* conf_fmt_duration - seconds in the largest exact unit ("5d") into buf */
static void
conf_fmt_duration(uint64_t v, char *buf, size_t len)
{
	if (v != 0 && v % DAY == 0)
		snprintf(buf, len, "%llud", (unsigned long long)(v / DAY));
	else if (v != 0 && v % 3600 == 0)
		snprintf(buf, len, "%lluh", (unsigned long long)(v / 3600));
	else if (v != 0 && v % 60 == 0)
		snprintf(buf, len, "%llum", (unsigned long long)(v / 60));
	else
		snprintf(buf, len, "%llus", (unsigned long long)v);
}

/* conf_is_ip - 1 when s is an IPv4 or IPv6 literal (no brackets) */
static int
conf_is_ip(const char *s)
{
	unsigned char buf[16];

	return inet_pton(AF_INET, s, buf) == 1 ||
	    inet_pton(AF_INET6, s, buf) == 1;
}

/* conf_is_ipv6 - 1 when s is an IPv6 literal (no brackets) */
static int
conf_is_ipv6(const char *s)
{
	unsigned char buf[16];

	return inet_pton(AF_INET6, s, buf) == 1;
}

static int conf_valid_hostchar(char);

/* conf_is_dnsname - 1 when s looks like a DNS name: labels of letters,
 * digits, '-' and '_' of 1..63 bytes, separated by single dots, at most
 * DOMAIN_MAX_LEN bytes in all (a trailing dot is not allowed) */
static int
conf_is_dnsname(const char *s)
{
	size_t label = 0, n = 0;

	for (; *s; s++, n++) {
		if (*s == '.') {
			if (label == 0)
				return 0;
			label = 0;
		} else if (conf_valid_hostchar(*s) && *s != '.') {
			if (++label > 63)
				return 0;
		} else
			return 0;
	}
	return n > 0 && n <= DOMAIN_MAX_LEN && label > 0;
}

/* conf_parse_port - "1".."65535" to a number */
static int
conf_parse_port(const char *s, int *port_r, const char **err_r)
{
	uint64_t v;

	if (*s == '\0') {
		*err_r = "missing port";
		return -1;
	}
	if (util_parse_uint(s, 1, 65535, &v, err_r) == -1) {
		*err_r = "port must be a number in 1..65535";
		return -1;
	}
	*port_r = (int)v;
	return 0;
}

/* conf_valid_hostchar - characters allowed in a listener host name */
static int
conf_valid_hostchar(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	    (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_';
}

/* conf_listen_entry - parse one "HOST:PORT" / "[IPv6]:PORT" / "*:PORT"
 * (NUL-terminated, no separators) into malloc'd host and port strings */
static int
conf_listen_entry(const char *s, char **host_r, char **port_r,
    const char **err_r)
{
	const char *colon, *p;
	char *host;
	int port;

	if (*s == '[') {
		const char *rb = strchr(s, ']');

		if (rb == NULL) {
			*err_r = "missing ']' after IPv6 address";
			return -1;
		}
		if (rb[1] != ':') {
			*err_r = "expected [IPv6]:PORT";
			return -1;
		}
		host = xstrndup(s + 1, (size_t)(rb - s - 1));
		if (!conf_is_ipv6(host)) {
			free(host);
			*err_r = "bad IPv6 address in brackets";
			return -1;
		}
		colon = rb + 1;
	} else {
		colon = strrchr(s, ':');
		if (colon == NULL) {
			*err_r = "expected HOST:PORT";
			return -1;
		}
		if (memchr(s, ':', (size_t)(colon - s)) != NULL) {
			*err_r = "IPv6 address must be in brackets ([::1]:587)";
			return -1;
		}
		if (colon == s) {
			*err_r = "missing host (use *:PORT for all addresses)";
			return -1;
		}
		host = xstrndup(s, (size_t)(colon - s));
		if (strcmp(host, "*") != 0) {
			for (p = host; *p; p++)
				if (!conf_valid_hostchar(*p))
					break;
			if (*p != '\0') {
				free(host);
				*err_r = "bad character in host";
				return -1;
			}
			/* dotted digits must be a real IPv4 address */
			if (strspn(host, "0123456789.") == strlen(host) &&
			    !conf_is_ip(host)) {
				free(host);
				*err_r = "bad IPv4 address";
				return -1;
			}
		}
	}
	if (conf_parse_port(colon + 1, &port, err_r) == -1) {
		free(host);
		return -1;
	}
	*host_r = host;
	*port_r = xasprintf("%d", port);
	return 0;
}

/* conf_listen_clear - free a listener list and set it off */
static void
conf_listen_clear(struct conf_listen *l)
{
	int i;

	for (i = 0; i < l->n; i++) {
		free(l->host[i]);
		free(l->port[i]);
	}
	memset(l, 0, sizeof(*l));
}

/*
 * config_parse_listen - parse a comma and/or space separated list of
 * HOST:PORT into l. "*" as host means all IPv4 and IPv6 addresses and is
 * stored as "*"; IPv6 hosts are written in brackets and stored without.
 * An empty value turns the listener off (n = 0). l must be zeroed or hold
 * an earlier result; on success its old entries are freed and replaced, on
 * error l is unchanged and *err_r says why.
 */
int
config_parse_listen(const char *value, struct conf_listen *l,
    const char **err_r)
{
	struct conf_listen nl;
	const char *p = value, *start;
	char *tok;
	int rv;

	memset(&nl, 0, sizeof(nl));
	for (;;) {
		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		if (*p == '\0')
			break;
		start = p;
		while (*p != '\0' && *p != ' ' && *p != '\t' && *p != ',')
			p++;
		if (nl.n >= LISTEN_ADDRS_MAX) {
			conf_listen_clear(&nl);
			*err_r = "too many addresses (at most "
			    CONF_STR(LISTEN_ADDRS_MAX) ")";
			return -1;
		}
		tok = xstrndup(start, (size_t)(p - start));
		rv = conf_listen_entry(tok, &nl.host[nl.n], &nl.port[nl.n],
		    err_r);
		free(tok);
		if (rv == -1) {
			conf_listen_clear(&nl);
			return -1;
		}
		nl.n++;
	}
	conf_listen_clear(l);
	*l = nl;
	return 0;
}

/* conf_parse_resolver - "IP", "IP:PORT", "IP@PORT", "[IPv6]:PORT" or a bare
 * IPv6 address; port 53 when none is given. addr_r is malloc'd. */
static int
conf_parse_resolver(const char *s, char **addr_r, int *port_r,
    const char **err_r)
{
	const char *rb, *sep, *portstr = NULL;
	char *addr;
	int port = 53;

	if (*s == '[') {
		if ((rb = strchr(s, ']')) == NULL) {
			*err_r = "missing ']' after IPv6 address";
			return -1;
		}
		addr = xstrndup(s + 1, (size_t)(rb - s - 1));
		if (!conf_is_ipv6(addr)) {
			free(addr);
			*err_r = "bad IPv6 address in brackets";
			return -1;
		}
		if (rb[1] == ':' || rb[1] == '@')
			portstr = rb + 2;
		else if (rb[1] != '\0') {
			free(addr);
			*err_r = "expected [IPv6]:PORT";
			return -1;
		}
	} else if ((sep = strchr(s, '@')) != NULL) {
		addr = xstrndup(s, (size_t)(sep - s));
		portstr = sep + 1;
	} else if ((sep = strchr(s, ':')) != NULL && strchr(sep + 1, ':') ==
	    NULL) {
		addr = xstrndup(s, (size_t)(sep - s));
		portstr = sep + 1;
	} else
		addr = xstrdup(s);	/* IPv4 or bare IPv6, port 53 */
	if (!conf_is_ip(addr)) {
		free(addr);
		*err_r = "expected IP, IP:PORT or [IPv6]:PORT";
		return -1;
	}
	if (portstr != NULL && conf_parse_port(portstr, &port, err_r) == -1) {
		free(addr);
		return -1;
	}
	*addr_r = addr;
	*port_r = port;
	return 0;
}

/* conf_parse_durlist - comma separated durations into sched/n_r */
static int
conf_parse_durlist(const struct conf_key *k, const char *value,
    long *sched, int *n_r, char *ebuf, size_t elen, const char **err_r)
{
	long tmp[RETRY_SCHEDULE_MAX], v;
	char item[64], lo[32], hi[32];
	const char *p = value, *start, *end;
	int n = 0;

	for (;;) {
		while (*p == ' ' || *p == '\t')
			p++;
		start = p;
		while (*p != '\0' && *p != ',')
			p++;
		end = p;
		while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
			end--;
		if (end == start) {
			if (*p == '\0' && n == 0) {
				*err_r = "must list at least one duration";
				return -1;
			}
			*err_r = "empty entry in list";
			return -1;
		}
		if ((size_t)(end - start) >= sizeof(item)) {
			*err_r = "list entry too long";
			return -1;
		}
		memcpy(item, start, (size_t)(end - start));
		item[end - start] = '\0';
		if (n >= RETRY_SCHEDULE_MAX) {
			snprintf(ebuf, elen, "too many entries (at most %d)",
			    RETRY_SCHEDULE_MAX);
			*err_r = ebuf;
			return -1;
		}
		if (util_parse_duration(item, &v, err_r) == -1) {
			snprintf(ebuf, elen, "%s: %s", item, *err_r);
			*err_r = ebuf;
			return -1;
		}
		if ((uint64_t)v < k->min || (uint64_t)v > k->max) {
			conf_fmt_duration(k->min, lo, sizeof(lo));
			conf_fmt_duration(k->max, hi, sizeof(hi));
			snprintf(ebuf, elen, "%s: duration out of range "
			    "(%s..%s)", item, lo, hi);
			*err_r = ebuf;
			return -1;
		}
		tmp[n++] = v;
		if (*p == '\0')
			break;
		p++;	/* ',' */
	}
	memcpy(sched, tmp, (size_t)n * sizeof(tmp[0]));
	*n_r = n;
	return 0;
}

/* conf_set - parse value for key k into c; -1 with a reason (static or in
 * ebuf) on error */
static int
conf_set(struct petrel_conf *c, const struct conf_key *k, const char *value,
    char *ebuf, size_t elen, const char **err_r)
{
	char lo[32], hi[32], *addr;
	uint64_t u;
	long secs;
	int lvl, port;

	if (*value == '\0' && (k->flags & CONF_F_REQUIRED)) {
		*err_r = "must not be empty";
		return -1;
	}
	switch (k->type) {
	case CONF_STRING:
		free(*FIELD(c, k, char *));
		*FIELD(c, k, char *) = *value ? xstrdup(value) : NULL;
		return 0;
	case CONF_DNSNAME:
		if (*value != '\0' && !conf_is_dnsname(value)) {
			*err_r = "not a valid DNS name";
			return -1;
		}
		free(*FIELD(c, k, char *));
		*FIELD(c, k, char *) = *value ? xstrdup(value) : NULL;
		return 0;
	case CONF_IPADDR:
		if (*value != '\0' && !conf_is_ip(value)) {
			*err_r = "not an IPv4 or IPv6 address";
			return -1;
		}
		free(*FIELD(c, k, char *));
		*FIELD(c, k, char *) = *value ? xstrdup(value) : NULL;
		return 0;
	case CONF_RESOLVER:
		if (*value == '\0') {
			free(c->resolver);
			free(c->resolver_addr);
			c->resolver = c->resolver_addr = NULL;
			c->resolver_port = 0;
			return 0;
		}
		if (conf_parse_resolver(value, &addr, &port, err_r) == -1)
			return -1;
		free(c->resolver);
		free(c->resolver_addr);
		c->resolver = xstrdup(value);
		c->resolver_addr = addr;
		c->resolver_port = port;
		return 0;
	case CONF_LISTEN:
		return config_parse_listen(value, FIELD(c, k, struct conf_listen),
		    err_r);
	case CONF_INT:
	case CONF_UINT:
		if (util_parse_uint(value, 0, UINT64_MAX, &u, err_r) == -1)
			return -1;
		if (u < k->min || u > k->max) {
			snprintf(ebuf, elen, "number out of range (%llu..%llu)",
			    (unsigned long long)k->min,
			    (unsigned long long)k->max);
			*err_r = ebuf;
			return -1;
		}
		if (k->type == CONF_INT)
			*FIELD(c, k, int) = (int)u;
		else
			*FIELD(c, k, unsigned) = (unsigned)u;
		return 0;
	case CONF_SIZE:
		if (util_parse_size(value, &u, err_r) == -1)
			return -1;
		if (u < k->min || u > k->max) {
			conf_fmt_size(k->min, lo, sizeof(lo));
			conf_fmt_size(k->max, hi, sizeof(hi));
			snprintf(ebuf, elen, "size out of range (%s..%s)", lo,
			    hi);
			*err_r = ebuf;
			return -1;
		}
		*FIELD(c, k, uint64_t) = u;
		return 0;
	case CONF_DURATION:
		if (util_parse_duration(value, &secs, err_r) == -1)
			return -1;
		if ((uint64_t)secs < k->min || (uint64_t)secs > k->max) {
			conf_fmt_duration(k->min, lo, sizeof(lo));
			conf_fmt_duration(k->max, hi, sizeof(hi));
			snprintf(ebuf, elen, "duration out of range (%s..%s)",
			    lo, hi);
			*err_r = ebuf;
			return -1;
		}
		*FIELD(c, k, long) = secs;
		return 0;
	case CONF_DURLIST:
		return conf_parse_durlist(k, value, FIELD(c, k, long),
		    &c->retry_schedule_n, ebuf, elen, err_r);
	case CONF_LOGLEVEL:
		if ((lvl = log_level_parse(value)) == -1) {
			*err_r = "unknown log level (error, warn, info, debug)";
			return -1;
		}
		*FIELD(c, k, int) = lvl;
		return 0;
	}
	fatalx("conf_set: bad type %d", (int)k->type);
}

/* conf_lookup - the table row for name, NULL when unknown */
static const struct conf_key *
conf_lookup(const char *name)
{
	size_t i;

	for (i = 0; i < CONF_NKEYS; i++)
		if (strcmp(conf_keys[i].name, name) == 0)
			return &conf_keys[i];
	return NULL;
}

/* config_init - fill in the defaults */
void
config_init(struct petrel_conf *c)
{
	char host[256], ebuf[128];
	const char *err;
	size_t i;

	memset(c, 0, sizeof(*c));
	for (i = 0; i < CONF_NKEYS; i++) {
		if (conf_keys[i].def == NULL)
			continue;
		if (conf_set(c, &conf_keys[i], conf_keys[i].def, ebuf,
		    sizeof(ebuf), &err) == -1)
			fatalx("config_init: default of %s: %s",
			    conf_keys[i].name, err);
	}
	if (gethostname(host, sizeof(host)) == -1 || host[0] == '\0')
		util_strlcpy(host, "localhost", sizeof(host));
	host[sizeof(host) - 1] = '\0';
	c->hostname = xstrdup(host);
}

/* config_free - release every string and listener; c is zeroed */
void
config_free(struct petrel_conf *c)
{
	size_t i;

	if (c == NULL)
		return;
	for (i = 0; i < CONF_NKEYS; i++) {
		const struct conf_key *k = &conf_keys[i];

		switch (k->type) {
		case CONF_STRING:
		case CONF_DNSNAME:
		case CONF_IPADDR:
		case CONF_RESOLVER:
			free(*FIELD(c, k, char *));
			break;
		case CONF_LISTEN:
			conf_listen_clear(FIELD(c, k, struct conf_listen));
			break;
		default:
			break;
		}
	}
	free(c->resolver_addr);
	free(c->path);
	memset(c, 0, sizeof(*c));
}

/* conf_readline - read one line (without its LF; a CRLF's CR is dropped)
 * into buf of CONF_LINE_MAX + 1 bytes. 1 on a line, 0 at EOF, -1 with a
 * reason on a line too long, a NUL or a control character, or a read
 * error. */
static int
conf_readline(FILE *fp, char *buf, const char **err_r)
{
	size_t n = 0;
	int ch, bad = 0;

	while ((ch = getc(fp)) != EOF && ch != '\n') {
		if (n >= CONF_LINE_MAX) {
			*err_r = "line too long";
			return -1;
		}
		if ((ch < 0x20 && ch != '\t' && ch != '\r') || ch == 0x7f)
			bad = 1;
		buf[n++] = (char)ch;
	}
	if (ferror(fp)) {
		*err_r = strerror(errno);
		return -1;
	}
	if (ch == EOF && n == 0)
		return 0;
	if (n > 0 && buf[n - 1] == '\r')
		n--;
	buf[n] = '\0';
	if (bad || memchr(buf, '\r', n) != NULL) {
		*err_r = "control character in line";
		return -1;
	}
	return 1;
}

/* conf_strip_comment - cut a '#' comment at line start or after
 * whitespace */
static void
conf_strip_comment(char *s)
{
	char *p;

	for (p = s; *p; p++)
		if (*p == '#' && (p == s || p[-1] == ' ' || p[-1] == '\t')) {
			*p = '\0';
			return;
		}
}

int
config_parse_nexthop(const char *s, struct conf_nexthop *nh,
    const char **err_r)
{
	const char *end, *colon;
	char *host;
	int port = 0, mx = 1;

	memset(nh, 0, sizeof(*nh));
	if (*s == '[') {
		if ((end = strchr(s, ']')) == NULL) {
			*err_r = "missing ']'";
			return -1;
		}
		host = xstrndup(s + 1, (size_t)(end - s - 1));
		mx = 0;
		if (end[1] == ':')
			colon = end + 1;
		else if (end[1] == '\0')
			colon = NULL;
		else {
			free(host);
			*err_r = "expected [host]:port";
			return -1;
		}
		if (!conf_is_ip(host) && !conf_is_dnsname(host)) {
			free(host);
			*err_r = "bad host in brackets";
			return -1;
		}
	} else {
		colon = strchr(s, ':');
		if (colon != NULL && strchr(colon + 1, ':') != NULL) {
			*err_r = "IPv6 address must be in brackets";
			return -1;
		}
		host = colon ? xstrndup(s, (size_t)(colon - s)) : xstrdup(s);
		if (conf_is_ip(host))
			mx = 0;		/* an address has no MX */
		else if (!conf_is_dnsname(host)) {
			free(host);
			*err_r = "bad host name";
			return -1;
		}
	}
	if (colon != NULL && conf_parse_port(colon + 1, &port, err_r) == -1) {
		free(host);
		return -1;
	}
	util_lower(host);
	nh->host = host;
	nh->port = port;
	nh->mx = mx;
	return 0;
}

/* conf_transport_next - next "domain=nexthop" entry of a transport value
 * from *pp: 1 with the entry copied into buf, 0 at the end */
static int
conf_transport_next(const char **pp, char *buf, size_t len)
{
	const char *p = *pp, *start;

	while (*p == ' ' || *p == '\t' || *p == ',')
		p++;
	if (*p == '\0')
		return 0;
	start = p;
	while (*p != '\0' && *p != ' ' && *p != '\t' && *p != ',')
		p++;
	snprintf(buf, len, "%.*s", (int)(p - start), start);
	*pp = p;
	return 1;
}

/* conf_check_transport - every entry of a transport value parses */
static int
conf_check_transport(const char *v, const char **err_r)
{
	struct conf_nexthop nh;
	char buf[CONF_LINE_MAX + 1], *eq;

	while (conf_transport_next(&v, buf, sizeof(buf))) {
		if ((eq = strchr(buf, '=')) == NULL) {
			*err_r = "expected domain=nexthop entries";
			return -1;
		}
		*eq = '\0';
		if (!conf_is_dnsname(buf[0] == '.' ? buf + 1 : buf)) {
			*err_r = "bad domain in transport entry";
			return -1;
		}
		if (config_parse_nexthop(eq + 1, &nh, err_r) == -1)
			return -1;
		free(nh.host);
	}
	return 0;
}

char *
config_transport_lookup(const char *transport, const char *domain)
{
	char buf[CONF_LINE_MAX + 1], *eq;
	const char *v = transport;
	size_t dl = strlen(domain), kl;

	if (v == NULL)
		return NULL;
	while (conf_transport_next(&v, buf, sizeof(buf))) {
		if ((eq = strchr(buf, '=')) == NULL)
			continue;
		*eq = '\0';
		kl = strlen(buf);
		if (buf[0] == '.') {
			/* ".example.com": any subdomain of example.com */
			if (dl > kl && strcasecmp(domain + dl - kl, buf) == 0)
				return xstrdup(eq + 1);
		} else if (strcasecmp(buf, domain) == 0)
			return xstrdup(eq + 1);
	}
	return NULL;
}

/* conf_check_url - an http(s) URL base that can go inside <...> of a
 * header field: printable ASCII without space, '<', '>', '"', ',' */
static int
conf_check_url(const char *v, const char **err_r)
{
	const char *p;

	if (strncmp(v, "https://", 8) != 0 && strncmp(v, "http://", 7) != 0) {
		*err_r = "must start with https:// (or http://)";
		return -1;
	}
	if (strlen(v) > 256) {
		*err_r = "longer than 256 characters";
		return -1;
	}
	for (p = v; *p != '\0'; p++)
		if (*p <= 0x20 || *p >= 0x7f || strchr("<>\",\\", *p) != NULL) {
			*err_r = "character not allowed in the URL";
			return -1;
		}
	return 0;
}

/* conf_check_mailbox - local@domain for a mailto: URI */
static int
conf_check_mailbox(const char *v, const char **err_r)
{
	const char *p, *at = strrchr(v, '@');

	if (at == NULL || at == v || at[1] == '\0' ||
	    strlen(v) > ADDRESS_MAX_LEN) {
		*err_r = "must be an address local@domain";
		return -1;
	}
	for (p = v; *p != '\0'; p++)
		if (*p <= 0x20 || *p >= 0x7f ||
		    strchr("<>\",\\?&%()[]:;", *p) != NULL) {
			*err_r = "character not allowed in the address";
			return -1;
		}
	return 0;
}

/* conf_check - cross-key rules once the whole file is read */
static int
conf_check(const struct petrel_conf *c, const char **key_r,
    const char **err_r)
{
	struct conf_nexthop nh;

	if (c->relayhost != NULL) {
		if (config_parse_nexthop(c->relayhost, &nh, err_r) == -1) {
			*key_r = "relayhost";
			return -1;
		}
		free(nh.host);
	}
	if (c->transport != NULL &&
	    conf_check_transport(c->transport, err_r) == -1) {
		*key_r = "transport";
		return -1;
	}
	if (strcmp(c->smtp_tls_verify, "none") != 0 &&
	    strcmp(c->smtp_tls_verify, "verify") != 0) {
		*key_r = "smtp_tls_verify";
		*err_r = "must be none or verify";
		return -1;
	}
	if (c->tls_cert != NULL && c->tls_key == NULL) {
		*key_r = "tls_key";
		*err_r = "must be set together with tls_cert";
		return -1;
	}
	if (c->tls_key != NULL && c->tls_cert == NULL) {
		*key_r = "tls_cert";
		*err_r = "must be set together with tls_key";
		return -1;
	}
	if ((c->arc_domain != NULL || c->arc_selector != NULL ||
	    c->arc_key_file != NULL) && (c->arc_domain == NULL ||
	    c->arc_selector == NULL || c->arc_key_file == NULL)) {
		*key_r = c->arc_domain == NULL ? "arc_domain" :
		    c->arc_selector == NULL ? "arc_selector" : "arc_key_file";
		*err_r = "arc_domain, arc_selector and arc_key_file must be "
		    "set together";
		return -1;
	}
	if (c->unsubscribe_base_url != NULL &&
	    conf_check_url(c->unsubscribe_base_url, err_r) == -1) {
		*key_r = "unsubscribe_base_url";
		return -1;
	}
	if (c->unsubscribe_mailto != NULL &&
	    conf_check_mailbox(c->unsubscribe_mailto, err_r) == -1) {
		*key_r = "unsubscribe_mailto";
		return -1;
	}
	if (c->tracking_base_url != NULL &&
	    conf_check_url(c->tracking_base_url, err_r) == -1) {
		*key_r = "tracking_base_url";
		return -1;
	}
	return 0;
}

/* config_load - read path over the values already in c */
int
config_load(const char *path, struct petrel_conf *c, char **err_r)
{
	unsigned seen[CONF_NKEYS];
	char *buf, *line, *eq, *key, *value, ebuf[256];
	const struct conf_key *k;
	const char *err, *ekey;
	unsigned lineno = 0;
	FILE *fp;
	int r, rv = -1;

	*err_r = NULL;
	if ((fp = fopen(path, "r")) == NULL) {
		*err_r = xasprintf("%s: %s", path, strerror(errno));
		return -1;
	}
	free(c->path);
	c->path = xstrdup(path);
	memset(seen, 0, sizeof(seen));
	buf = xmalloc(CONF_LINE_MAX + 1);
	for (;;) {
		lineno++;
		if ((r = conf_readline(fp, buf, &err)) == 0)
			break;
		if (r == -1) {
			*err_r = xasprintf("%s:%u: %s", path, lineno, err);
			goto done;
		}
		conf_strip_comment(buf);
		line = util_trim(buf);
		if (*line == '\0')
			continue;
		if ((eq = strchr(line, '=')) == NULL) {
			key = line;
			key[strcspn(key, " \t")] = '\0';
			*err_r = xasprintf("%s:%u: %s: expected \"key = value\""
			    " (missing '=')", path, lineno, key);
			goto done;
		}
		*eq = '\0';
		key = util_trim(line);
		value = util_trim(eq + 1);
		if (*key == '\0') {
			*err_r = xasprintf("%s:%u: missing key before '='",
			    path, lineno);
			goto done;
		}
		if ((k = conf_lookup(key)) == NULL) {
			*err_r = xasprintf("%s:%u: %s: unknown key", path,
			    lineno, key);
			goto done;
		}
		if (seen[k - conf_keys] != 0) {
			*err_r = xasprintf("%s:%u: %s: duplicate key (first set "
			    "on line %u)", path, lineno, key,
			    seen[k - conf_keys]);
			goto done;
		}
		seen[k - conf_keys] = lineno;
		if (conf_set(c, k, value, ebuf, sizeof(ebuf), &err) == -1) {
			*err_r = xasprintf("%s:%u: %s: %s", path, lineno, key,
			    err);
			goto done;
		}
	}
	if (conf_check(c, &ekey, &err) == -1) {
		*err_r = xasprintf("%s: %s: %s", path, ekey, err);
		goto done;
	}
	rv = 0;
done:
	free(buf);
	fclose(fp);
	return rv;
}
