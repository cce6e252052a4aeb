/*
 * config.h - petrel.conf: "key = value" lines, '#' comments. One table in
 * config.c declares every key with its default and bounds; unknown keys,
 * bad values and duplicates are errors naming file:line and the key.
 */
#ifndef PETREL_CONFIG_H
#define PETREL_CONFIG_H

#include <stdint.h>
#include "limits.h"

/* A listener setting: a comma/space separated list of HOST:PORT, with IPv6
 * hosts in brackets ("127.0.0.1:587, [::1]:587"). Empty value = off. */
struct conf_listen {
	int	 n;
	char	*host[LISTEN_ADDRS_MAX];	/* without brackets */
	char	*port[LISTEN_ADDRS_MAX];
};

struct petrel_conf {
	char		*path;			/* file it was read from */
	char		*hostname;		/* default: gethostname() */
	char		*data_dir;		/* default: /var/lib/petrel */
	struct conf_listen listen_submission;	/* 127.0.0.1:587 */
	struct conf_listen listen_submissions;	/* 127.0.0.1:465 */
	struct conf_listen listen_relay;	/* 127.0.0.1:25 */
	struct conf_listen listen_http;		/* off */
	char		*tls_cert;
	char		*tls_key;
	char		*user;			/* drop privileges to this user */
	char		*resolver;		/* IP:PORT, NULL = resolv.conf */
	char		*resolver_addr;		/* resolver's IP, no brackets */
	int		 resolver_port;		/* resolver's port, 53 if none */
	int		 smtp_remote_port;	/* 25 */
	char		*smtp_bind_address;
	char		*managed_zone;		/* petrel.invalid */
	char		*spf_include;
	long		 retry_schedule[RETRY_SCHEDULE_MAX];	/* seconds */
	int		 retry_schedule_n;
	long		 queue_lifetime;	/* seconds, 5d */
	uint64_t	 max_message_size;	/* bytes, 35M */
	unsigned	 max_recipients;	/* 1000 */
	char		*arc_domain;
	char		*arc_selector;
	char		*arc_key_file;
	int		 log_level;		/* enum log_level */
	/* additions beyond the foundation issue */
	unsigned	 max_connections;	/* total inbound, 20000 */
	unsigned	 max_connections_per_ip;	/* 100 */
	uint64_t	 store_map_size;	/* LMDB map size, 8G */
	/* inbound SMTP (smtp_server.c) */
	long		 smtpd_timeout;		/* per command deadline, 300s */
	long		 smtpd_data_timeout;	/* whole DATA/BDAT phase, 600s */
	int		 smtpd_greet_delay_ms;	/* pregreet wait, 0 */
	unsigned	 smtpd_auth_fail_limit;	/* failed AUTHs per IP per minute, 5 */
	/* domain verification (verify.c) */
	long		 verify_interval;	/* pending/failed domains, 10m */
	long		 reverify_interval;	/* verified domains, 1d */
	/* outbound delivery (deliver.c, smtp_client.c) */
	char		*relayhost;		/* next hop for all mail, NULL = MX */
	char		*transport;		/* "domain=nexthop, ..." */
	unsigned	 smtp_destination_concurrency;	/* 10 */
	unsigned	 smtp_max_connections;	/* outbound, all destinations, 100 */
	char		*smtp_tls_verify;	/* "none" (opportunistic), "verify" */
	char		*smtp_tls_ca_file;	/* NULL = system CAs */
	long		 smtp_connect_timeout;	/* 30s */
	long		 smtp_timeout;		/* each reply, 5m */
	long		 smtp_data_timeout;	/* reply to the end of data, 10m */
	/* HTTP API (http_api.c) */
	struct conf_listen listen_https;	/* off; needs tls_cert */
	char		*apikey_endpoint;	/* printed by apikey add; NULL:
						 * https://<listen_https[0]>/ */
	char		*admin_api_key_file;	/* operator key for /admin/ */
	uint64_t	 http_max_body;		/* request body bytes, 16M */
	/* metrics (metrics.c) */
	struct conf_listen listen_metrics;	/* off; GET /metrics, no auth */
	/* events and webhooks (events.c, webhook.c) */
	long		 event_retention;	/* seconds, 30d */
	long		 message_retention;	/* seconds, 30d */
	char		*webhook_ca_file;	/* NULL = system CAs */
	/* RFC 8058 one-click unsubscribe (unsub.c) */
	char		*unsubscribe_base_url;	/* https://HOST[:PORT]; NULL:
						 * apikey_endpoint, else
						 * https://<listen_https[0]> */
	char		*unsubscribe_mailto;	/* mailbox for the mailto: URI;
						 * NULL: https URI only */
	/* engagement tracking (tracking.c) */
	char		*tracking_base_url;	/* https://HOST[:PORT]; NULL:
						 * as unsubscribe_base_url */
	long		 tracking_machine_window; /* clicks this soon after
						 * delivery are machine, 10s */
};

/* A next hop (relayhost, transport entries): "[host]:port" or "[host]"
 * (host's addresses, no MX lookup; host may be an IP literal),
 * "host:port" or "host" (MX lookup of host). IPv6 literals only in
 * brackets. port 0 when none is given (smtp_remote_port applies). */
struct conf_nexthop {
	char	*host;		/* lower case, no brackets */
	int	 port;		/* 0 = default */
	int	 mx;		/* 1: look up MX of host */
};

/* config_parse_nexthop - parse s into nh (host malloc'd); -1 and *err_r */
int config_parse_nexthop(const char *s, struct conf_nexthop *nh,
    const char **err_r);
/* config_transport_lookup - the next hop text for domain in a transport
 * value ("d1=nexthop, d2=nexthop"; an entry ".d" matches subdomains of
 * d); malloc'd, NULL when none matches */
char *config_transport_lookup(const char *transport, const char *domain);

/* config_init - fill in the defaults */
void config_init(struct petrel_conf *);
/* config_load - read path over the defaults; on error *err_r is a malloc'd
 * "file:line: key: reason" message and -1 is returned. */
int config_load(const char *path, struct petrel_conf *, char **err_r);
/* config_free - free every string and listener entry; zeroes the struct */
void config_free(struct petrel_conf *);
/* config_parse_listen - parse a listener value into l (exposed for tests).
 * l must be zeroed or hold an earlier result: on success its old entries are
 * freed and replaced; on error l is unchanged. Host "*" means all IPv4 and
 * IPv6 addresses; ports are stored as decimal strings. */
int config_parse_listen(const char *value, struct conf_listen *l,
    const char **err_r);
/* default config path */
#define PETREL_CONF_DEFAULT PETREL_SYSCONFDIR "/petrel.conf"

#endif
