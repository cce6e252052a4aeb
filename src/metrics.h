/*
 * metrics.h - process-wide counters and gauges, served as Prometheus text
 * exposition format 0.0.4 on GET /metrics of the listen_metrics listener
 * (unset = off; no authentication: bind it to loopback or a private
 * address).
 *
 * Counters are C11 atomics indexed by fixed enums: any thread (the main
 * loop, the store writer, crypto workers) may call the metrics_count_*
 * functions at any time, even before metrics_bind() or with the listener
 * off; they never block and never allocate. Gauges that describe state
 * (queue size, oldest queued message, open sessions) are computed when
 * scraped, on the main loop: built-in ones here, others through
 * metrics_register_gauge() by the module that knows the value.
 *
 * Life cycle, called by petreld.c like http_api.h's:
 *   metrics_bind()      while root: bind the listen_metrics sockets
 *   metrics_start()     after the privilege drop: listen, serve
 *   metrics_shutdown()  SIGTERM: close the listening sockets
 *   metrics_free()      after deliver_free(), before store_close(): free
 *                       the HTTP server and the gauge registry
 *
 * Series (all prefixed petrel_):
 *   messages_accepted_total{listener}          counter
 *   messages_rejected_total{reason}            counter
 *   deliveries_total{result,category}          counter
 *   outbound_tls_total{tls="yes|no"}           counter
 *   dns_queries_total, dns_failures_total      counter
 *   dkim_sign_seconds                          histogram
 *   queue_messages, queue_oldest_age_seconds   gauge (LMDB, at scrape)
 *   smtp_inbound_connections                   gauge (registered by
 *                                              smtp_server_init)
 *   smtp_outbound_connections                  gauge (registered, 0 until)
 *   webhook_backlog                            gauge (registered, 0 until)
 *
 * What deliver.c should call (the coordinator adds these lines):
 *
 *   #include "metrics.h"
 *
 *   deliver_new(), once dl is set up:
 *	metrics_register_gauge("petrel_smtp_outbound_connections",
 *	    "Open outbound SMTP connections.", deliver_metrics_conns, dl);
 *   with, in deliver.c:
 *	static double
 *	deliver_metrics_conns(void *arg)
 *	{
 *		return ((struct deliver *)arg)->nconns;
 *	}
 *   deliver_free(), first thing:
 *	metrics_register_gauge("petrel_smtp_outbound_connections",
 *	    "Open outbound SMTP connections.", NULL, NULL);
 *
 *   deliver_job_record(), after the switch has set u[i].status (inside
 *   the loop, before "r->status = u[i].status;"):
 *	metrics_count_delivery(u[i].status, NULL, r->enh);
 *   (pass issue 7's category name instead of NULL once deliver.c computes
 *   one; with NULL the category is derived from the enhanced code)
 *
 *   deliver_conn_ready(), in the rd->status == SMTPC_OK branch:
 *	metrics_count_outbound_tls(rd->tls);
 *
 * What http_api.c may call when it accepts a message (after the queue's
 * commit): metrics_count_accepted(METRICS_LISTENER_HTTP); and when it
 * refuses one: metrics_count_rejected() with POLICY (sender domain), SIZE
 * (413) or CONTENT (an EmailMessage it cannot build).
 * The events module registers "petrel_webhook_backlog" the same way as
 * deliver.c registers its gauge.
 */
#ifndef PETREL_METRICS_H
#define PETREL_METRICS_H

#include <stdint.h>

#define METRICS_GAUGES_MAX	16	/* registered gauges */
#define METRICS_QUEUE_SCAN_MAX	200000	/* schedule keys read per scrape
					   for the oldest message */
#define METRICS_TIMEOUT_SECS	10	/* per HTTP connection */
#define METRICS_BACKLOG		64

/* where a message came in; the first three equal enum smtp_listener */
enum metrics_listener {
	METRICS_LISTENER_SUBMISSION = 0,
	METRICS_LISTENER_SUBMISSIONS,
	METRICS_LISTENER_RELAY,
	METRICS_LISTENER_HTTP,
	METRICS_LISTENER_N
};

/* why a sender, recipient, message or connection was refused */
enum metrics_reject {
	METRICS_REJECT_POLICY = 0,	/* x.7.1: relay denied, sender domain */
	METRICS_REJECT_AUTH,		/* x.7.0, x.7.8, x.7.11 */
	METRICS_REJECT_LIMIT,		/* 4.7.0: too many errors/AUTH
					   failures, TLS unavailable */
	METRICS_REJECT_CONNECTIONS,	/* max_connections(_per_ip) */
	METRICS_REJECT_SIZE,		/* x.3.4 */
	METRICS_REJECT_RECIPIENTS,	/* x.5.3: too many recipients */
	METRICS_REJECT_ADDRESS,		/* x.1.x, x.6.7: address syntax */
	METRICS_REJECT_CONTENT,		/* x.6.0: malformed message */
	METRICS_REJECT_PROTOCOL,	/* x.5.x: syntax, command order */
	METRICS_REJECT_STORAGE,		/* x.3.1: queue could not store */
	METRICS_REJECT_TIMEOUT,		/* x.4.2 */
	METRICS_REJECT_SHUTDOWN,	/* x.3.2 */
	METRICS_REJECT_OTHER,
	METRICS_REJECT_N
};

/* metrics_count_accepted - one message committed to the queue */
void metrics_count_accepted(enum metrics_listener);
/* metrics_count_rejected - one refusal */
void metrics_count_rejected(enum metrics_reject);
/* metrics_reject_reason - the reason of a 4xx/5xx reply from its
 * enhanced status code (NULL or "" -> OTHER) */
enum metrics_reject metrics_reject_reason(int code, const char *esc);
/* metrics_count_delivery - one recipient's attempt recorded. status:
 * "delivered", "deferred" or "bounced" (anything else is ignored).
 * category: issue 7's name (hard, soft, policy, mailbox_full, dns, tls,
 * expired) or NULL to derive it from enhanced ("5.1.1"; may be NULL).
 * Delivered recipients have category "none". */
void metrics_count_delivery(const char *status, const char *category,
    const char *enhanced);
/* metrics_count_outbound_tls - one outbound connection established, with
 * (1) or without (0) TLS */
void metrics_count_outbound_tls(int tls);
/* metrics_count_dns_query / _failure - one query sent to the resolver;
 * one query or request that got no usable answer (timeout, SERVFAIL,
 * REFUSED, DNSSEC bogus, resolver error; NXDOMAIN and NODATA are answers) */
void metrics_count_dns_query(void);
void metrics_count_dns_failure(void);
/* metrics_observe_dkim_sign - one message signed in ns nanoseconds */
void metrics_observe_dkim_sign(uint64_t ns);

/* A gauge computed at scrape time on the main loop. */
typedef double (*metrics_gauge_fn)(void *arg);
/* metrics_register_gauge - set the callback of gauge name (a Prometheus
 * metric name) with its HELP text; fn NULL reports 0 (unregister before
 * arg goes away). The first registration of a name fixes its place in
 * the output; fatalx() past METRICS_GAUGES_MAX names. Main thread. */
void metrics_register_gauge(const char *name, const char *help,
    metrics_gauge_fn fn, void *arg);

/* metrics_render - the whole exposition text, malloc'd (tests, petrelctl) */
char *metrics_render(void);

struct conf_listen;
struct event_base;
struct store;

/* metrics_bind - bind the addresses of cl (listen_metrics); -1 and
 * *err_r (malloc'd). Nothing to do when it is off (cl->n == 0). */
int metrics_bind(const struct conf_listen *cl, char **err_r);
/* metrics_start - serve on base; queue gauges read st (may be NULL: 0).
 * -1 and *err_r on failure */
int metrics_start(struct event_base *base, struct store *st,
    char **err_r);
/* metrics_shutdown - close the listening sockets */
void metrics_shutdown(void);
/* metrics_free - free the HTTP server (open connections are closed) */
void metrics_free(void);
/* metrics_listeners - number of bound sockets */
int metrics_listeners(void);

#endif
