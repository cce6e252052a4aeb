/*
 * metrics.c - Prometheus metrics: the process-wide counters (C11 atomics,
 * updated from any thread), the gauges computed at scrape time (queue
 * size and oldest message from one LMDB read transaction, open inbound
 * sessions, registered callbacks) and the GET /metrics HTTP endpoint on
 * listen_metrics (libevent evhttp, text exposition format 0.0.4).
 *
 * The listener is bound while petreld is still root and served after the
 * privilege drop, the same way as http_api.c's. A scrape runs on the main
 * loop; its LMDB read transaction never waits for the store writer.
 * Nothing here refers to the daemon's globals or to other modules'
 * functions (only store_env/store_dbi), so the counting calls in dns.c and
 * dkim.c do not drag the daemon into every program that links them.
 */
#include "autoconf.h"

#include <sys/types.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <lmdb.h>

#include "config.h"
#include "log.h"
#include "netaddr.h"
#include "metrics.h"
#include "queue.h"
#include "smtp_server.h"
#include "store.h"
#include "util.h"

_Static_assert((int)METRICS_LISTENER_SUBMISSION ==
    (int)SMTP_LISTEN_SUBMISSION &&
    (int)METRICS_LISTENER_SUBMISSIONS == (int)SMTP_LISTEN_SUBMISSIONS &&
    (int)METRICS_LISTENER_RELAY == (int)SMTP_LISTEN_RELAY,
    "enum metrics_listener follows enum smtp_listener");

#define METRICS_CONTENT_TYPE	"text/plain; version=0.0.4; charset=utf-8"

enum metrics_result {
	METRICS_DELIVERED = 0,
	METRICS_DEFERRED,
	METRICS_BOUNCED,
	METRICS_RESULT_N
};

enum metrics_category {
	METRICS_CAT_NONE = 0,		/* delivered */
	METRICS_CAT_HARD,
	METRICS_CAT_SOFT,
	METRICS_CAT_POLICY,
	METRICS_CAT_MAILBOX_FULL,
	METRICS_CAT_DNS,
	METRICS_CAT_TLS,
	METRICS_CAT_EXPIRED,
	METRICS_CAT_OTHER,
	METRICS_CAT_N
};

static const char *metrics_listener_names[METRICS_LISTENER_N] = {
	"submission", "submissions", "relay", "http"
};
static const char *metrics_reject_names[METRICS_REJECT_N] = {
	"policy", "auth", "limit", "connections", "size", "recipients",
	"address", "content", "protocol", "storage", "timeout", "shutdown",
	"other"
};
static const char *metrics_result_names[METRICS_RESULT_N] = {
	"delivered", "deferred", "bounced"
};
static const char *metrics_cat_names[METRICS_CAT_N] = {
	"none", "hard", "soft", "policy", "mailbox_full", "dns", "tls",
	"expired", "other"
};

/* DKIM signing time histogram: upper bounds in seconds; one more bucket
 * for +Inf */
static const double metrics_dkim_le[] = {
	0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
	2.5
};
#define METRICS_DKIM_NB	(nitems(metrics_dkim_le) + 1)

/* the counters: relaxed atomics, any thread */
static struct {
	atomic_uint_fast64_t	accepted[METRICS_LISTENER_N];
	atomic_uint_fast64_t	rejected[METRICS_REJECT_N];
	atomic_uint_fast64_t	deliveries[METRICS_RESULT_N][METRICS_CAT_N];
	atomic_uint_fast64_t	tls[2];
	atomic_uint_fast64_t	dns_queries;
	atomic_uint_fast64_t	dns_failures;
	atomic_uint_fast64_t	dkim_bucket[METRICS_DKIM_NB];
	atomic_uint_fast64_t	dkim_sum_ns;
} ctr;

/* registered gauges, main thread only */
struct metrics_gauge {
	char			*name;
	char			*help;
	metrics_gauge_fn	 fn;
	void			*arg;
};
static struct metrics_gauge gauges[METRICS_GAUGES_MAX];
static size_t ngauges;
static int gauges_init;

/* listening sockets, as in http_api.c */
struct metrics_sock {
	struct metrics_sock		*next;
	int				 fd;
	struct evhttp_bound_socket	*bound;
	char				 addr[INET6_ADDRSTRLEN + 16];
};
static struct metrics_sock *metrics_socks;
static int metrics_nsocks;
static struct evhttp *metrics_http;
static struct store *metrics_store;	/* for the queue gauges */

#define INC(c)	atomic_fetch_add_explicit(&(c), 1, memory_order_relaxed)
#define GET(c)	atomic_load_explicit(&(c), memory_order_relaxed)

void
metrics_count_accepted(enum metrics_listener l)
{
	if ((unsigned)l < METRICS_LISTENER_N)
		INC(ctr.accepted[l]);
}

void
metrics_count_rejected(enum metrics_reject r)
{
	if ((unsigned)r >= METRICS_REJECT_N)
		r = METRICS_REJECT_OTHER;
	INC(ctr.rejected[r]);
}

/* metrics_esc_parse - "c.s.d" -> three numbers; -1 when malformed */
static int
metrics_esc_parse(const char *esc, int *c_r, int *s_r, int *d_r)
{
	char *end;
	long v[3];
	int i;

	if (esc == NULL)
		return -1;
	for (i = 0; i < 3; i++) {
		if (*esc < '0' || *esc > '9')
			return -1;
		v[i] = strtol(esc, &end, 10);
		if (v[i] > 999 || (i < 2 && *end != '.') || (i == 2 &&
		    *end != '\0'))
			return -1;
		esc = end + 1;
	}
	*c_r = (int)v[0];
	*s_r = (int)v[1];
	*d_r = (int)v[2];
	return 0;
}

enum metrics_reject
metrics_reject_reason(int code, const char *esc)
{
	int c, s, d;

	if (metrics_esc_parse(esc, &c, &s, &d) == -1)
		return METRICS_REJECT_OTHER;
	switch (s) {
	case 1:
		return METRICS_REJECT_ADDRESS;
	case 3:
		if (d == 4)
			return METRICS_REJECT_SIZE;
		if (d == 1)
			return METRICS_REJECT_STORAGE;
		if (d == 2)
			return METRICS_REJECT_SHUTDOWN;
		break;
	case 4:
		if (d == 2)
			return METRICS_REJECT_TIMEOUT;
		break;
	case 5:
		if (d == 3)
			return METRICS_REJECT_RECIPIENTS;
		return METRICS_REJECT_PROTOCOL;
	case 6:
		return d == 7 ? METRICS_REJECT_ADDRESS : METRICS_REJECT_CONTENT;
	case 7:
		if (d == 1)
			return METRICS_REJECT_POLICY;
		if (d == 0 && c == 4)
			return METRICS_REJECT_LIMIT;
		if (d == 0 || d == 8 || d == 11)
			return METRICS_REJECT_AUTH;
		return METRICS_REJECT_POLICY;
	}
	(void)code;
	return METRICS_REJECT_OTHER;
}

/* metrics_category - issue 7's category of a failed attempt, from its
 * enhanced status code */
static enum metrics_category
metrics_category(enum metrics_result res, const char *enh)
{
	int c, s, d;

	if (metrics_esc_parse(enh, &c, &s, &d) == -1)
		return res == METRICS_BOUNCED ? METRICS_CAT_HARD :
		    METRICS_CAT_SOFT;
	if (s == 4 && d == 7)
		return METRICS_CAT_EXPIRED;
	if (s == 2 && d == 2)
		return METRICS_CAT_MAILBOX_FULL;
	if (s == 7 && (d == 4 || d == 5 || d == 10))
		return METRICS_CAT_TLS;
	if (s == 7)
		return METRICS_CAT_POLICY;
	if ((s == 4 && (d == 3 || d == 4)) || (s == 1 && d == 2))
		return METRICS_CAT_DNS;
	if (res == METRICS_BOUNCED || c == 5)
		return METRICS_CAT_HARD;
	return METRICS_CAT_SOFT;
}

void
metrics_count_delivery(const char *status, const char *category,
    const char *enhanced)
{
	enum metrics_result res;
	enum metrics_category cat;
	size_t i;

	if (status == NULL)
		return;
	for (res = 0; res < METRICS_RESULT_N; res++)
		if (strcmp(status, metrics_result_names[res]) == 0)
			break;
	if (res == METRICS_RESULT_N)
		return;
	if (res == METRICS_DELIVERED)
		cat = METRICS_CAT_NONE;
	else if (category == NULL)
		cat = metrics_category(res, enhanced);
	else {
		cat = METRICS_CAT_OTHER;
		for (i = METRICS_CAT_HARD; i < METRICS_CAT_OTHER; i++)
			if (strcmp(category, metrics_cat_names[i]) == 0)
				cat = (enum metrics_category)i;
	}
	INC(ctr.deliveries[res][cat]);
}

void
metrics_count_outbound_tls(int tls)
{
	INC(ctr.tls[tls ? 1 : 0]);
}

void
metrics_count_dns_query(void)
{
	INC(ctr.dns_queries);
}

void
metrics_count_dns_failure(void)
{
	INC(ctr.dns_failures);
}

void
metrics_observe_dkim_sign(uint64_t ns)
{
	double sec = (double)ns / 1e9;
	size_t i;

	for (i = 0; i < nitems(metrics_dkim_le); i++)
		if (sec <= metrics_dkim_le[i])
			break;
	INC(ctr.dkim_bucket[i]);
	atomic_fetch_add_explicit(&ctr.dkim_sum_ns, ns, memory_order_relaxed);
}

/* metrics_name_valid - a Prometheus metric name */
static int
metrics_name_valid(const char *s)
{
	size_t i;

	for (i = 0; s[i] != '\0'; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' &&
		    s[i] <= 'Z') || s[i] == '_' || s[i] == ':' ||
		    (i > 0 && s[i] >= '0' && s[i] <= '9')))
			return 0;
	return i > 0;
}

/* metrics_gauges_init - the registered gauges with a fixed place even
 * before their module registers them */
static void
metrics_gauges_init(void)
{
	if (gauges_init)
		return;
	gauges_init = 1;
	metrics_register_gauge("petrel_smtp_inbound_connections",
	    "Open inbound SMTP sessions.", NULL, NULL);
	metrics_register_gauge("petrel_smtp_outbound_connections",
	    "Open outbound SMTP connections.", NULL, NULL);
	metrics_register_gauge("petrel_webhook_backlog",
	    "Events waiting for delivery to webhooks.", NULL, NULL);
}

void
metrics_register_gauge(const char *name, const char *help,
    metrics_gauge_fn fn, void *arg)
{
	struct metrics_gauge *g = NULL;
	size_t i;

	metrics_gauges_init();
	if (!metrics_name_valid(name))
		fatalx("metrics: bad gauge name \"%s\"", name);
	for (i = 0; i < ngauges; i++)
		if (strcmp(gauges[i].name, name) == 0) {
			g = &gauges[i];
			break;
		}
	if (g == NULL) {
		if (ngauges == METRICS_GAUGES_MAX)
			fatalx("metrics: more than %d gauges",
			    METRICS_GAUGES_MAX);
		g = &gauges[ngauges++];
		g->name = xstrdup(name);
	}
	free(g->help);
	g->help = xstrdup(help != NULL ? help : name);
	g->fn = fn;
	g->arg = arg;
}

/* metrics_head - the HELP and TYPE lines of one family; help is escaped
 * as the format requires (backslash, newline) */
static void
metrics_head(struct evbuffer *b, const char *name, const char *type,
    const char *help)
{
	const char *p;

	evbuffer_add_printf(b, "# HELP %s ", name);
	for (p = help; *p != '\0'; p++) {
		if (*p == '\\')
			evbuffer_add(b, "\\\\", 2);
		else if (*p == '\n')
			evbuffer_add(b, "\\n", 2);
		else
			evbuffer_add(b, p, 1);
	}
	evbuffer_add_printf(b, "\n# TYPE %s %s\n", name, type);
}

/* metrics_value - a sample value: integers exactly, NaN and infinities by
 * their names */
static void
metrics_value(struct evbuffer *b, double v)
{
	if (isnan(v))
		evbuffer_add_printf(b, "NaN\n");
	else if (isinf(v))
		evbuffer_add_printf(b, "%sInf\n", v < 0 ? "-" : "+");
	else
		evbuffer_add_printf(b, "%.17g\n", v);
}

/* metrics_qid_ms - the milliseconds of a queue id (queue.h: 46 bits of
 * time, 24 of counter, in Crockford base32); 0 when malformed */
static uint64_t
metrics_qid_ms(const unsigned char *qid)
{
	static const char b32[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
	const char *p;
	uint64_t v = 0;
	int i;

	/* the first 10 characters: 50 bits, the time and 4 counter bits */
	for (i = 0; i < 10; i++) {
		if (qid[i] == '\0' || (p = strchr(b32, qid[i])) == NULL)
			return 0;
		v = v << 5 | (uint64_t)(p - b32);
	}
	return v >> 4;
}

/* metrics_queue - messages with active recipients (one schedule key
 * each) and the age of the oldest of them (smallest queue id among the
 * first METRICS_QUEUE_SCAN_MAX schedule keys) */
static void
metrics_queue(uint64_t *nmsgs_r, double *age_r)
{
	MDB_txn *txn;
	MDB_cursor *cur;
	MDB_stat ms;
	MDB_val key, val;
	unsigned char oldest[QUEUE_ID_LEN + 1];
	struct timespec ts;
	uint64_t ms0, now;
	size_t n = 0;
	int rc, have = 0;

	*nmsgs_r = 0;
	*age_r = 0;
	if (metrics_store == NULL || mdb_txn_begin(store_env(metrics_store),
	    NULL, MDB_RDONLY, &txn) != 0)
		return;
	if (mdb_stat(txn, store_dbi(metrics_store, DB_SCHEDULE), &ms) == 0)
		*nmsgs_r = ms.ms_entries;
	if (mdb_cursor_open(txn, store_dbi(metrics_store, DB_SCHEDULE),
	    &cur) == 0) {
		for (rc = mdb_cursor_get(cur, &key, &val, MDB_FIRST);
		    rc == 0 && n < METRICS_QUEUE_SCAN_MAX;
		    rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT), n++) {
			if (key.mv_size != 8 + QUEUE_ID_LEN)
				continue;
			if (!have || memcmp((const unsigned char *)
			    key.mv_data + 8, oldest, QUEUE_ID_LEN) < 0) {
				memcpy(oldest, (const unsigned char *)
				    key.mv_data + 8, QUEUE_ID_LEN);
				have = 1;
			}
		}
		mdb_cursor_close(cur);
	}
	mdb_txn_abort(txn);
	if (!have)
		return;
	oldest[QUEUE_ID_LEN] = '\0';
	clock_gettime(CLOCK_REALTIME, &ts);
	now = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
	if ((ms0 = metrics_qid_ms(oldest)) != 0 && ms0 < now)
		*age_r = (double)(now - ms0) / 1000.0;
}

/* metrics_render_buf - the exposition text into b */
static void
metrics_render_buf(struct evbuffer *b)
{
	uint64_t nq, cum;
	double age;
	size_t i, j;

	metrics_gauges_init();
	metrics_head(b, "petrel_messages_accepted_total", "counter",
	    "Messages accepted and committed to the queue, by listener.");
	for (i = 0; i < METRICS_LISTENER_N; i++)
		evbuffer_add_printf(b, "petrel_messages_accepted_total"
		    "{listener=\"%s\"} %llu\n", metrics_listener_names[i],
		    (unsigned long long)GET(ctr.accepted[i]));
	metrics_head(b, "petrel_messages_rejected_total", "counter",
	    "Inbound SMTP rejections (4xx/5xx replies and refused "
	    "connections), by reason.");
	for (i = 0; i < METRICS_REJECT_N; i++)
		evbuffer_add_printf(b, "petrel_messages_rejected_total"
		    "{reason=\"%s\"} %llu\n", metrics_reject_names[i],
		    (unsigned long long)GET(ctr.rejected[i]));
	metrics_head(b, "petrel_deliveries_total", "counter",
	    "Recipient delivery attempts recorded, by result and failure "
	    "category.");
	for (i = 0; i < METRICS_RESULT_N; i++)
		for (j = 0; j < METRICS_CAT_N; j++) {
			if ((i == METRICS_DELIVERED) != (j == METRICS_CAT_NONE))
				continue;
			evbuffer_add_printf(b, "petrel_deliveries_total{result="
			    "\"%s\",category=\"%s\"} %llu\n",
			    metrics_result_names[i], metrics_cat_names[j],
			    (unsigned long long)GET(ctr.deliveries[i][j]));
		}
	metrics_head(b, "petrel_outbound_tls_total", "counter",
	    "Outbound SMTP connections established, with and without TLS.");
	evbuffer_add_printf(b, "petrel_outbound_tls_total{tls=\"yes\"} %llu\n"
	    "petrel_outbound_tls_total{tls=\"no\"} %llu\n",
	    (unsigned long long)GET(ctr.tls[1]),
	    (unsigned long long)GET(ctr.tls[0]));

	metrics_queue(&nq, &age);
	metrics_head(b, "petrel_queue_messages", "gauge",
	    "Messages with recipients still to deliver.");
	evbuffer_add_printf(b, "petrel_queue_messages %llu\n",
	    (unsigned long long)nq);
	metrics_head(b, "petrel_queue_oldest_age_seconds", "gauge",
	    "Age of the oldest message with recipients still to deliver "
	    "(0 when none).");
	evbuffer_add_printf(b, "petrel_queue_oldest_age_seconds ");
	metrics_value(b, age);
	for (i = 0; i < ngauges; i++) {
		metrics_head(b, gauges[i].name, "gauge", gauges[i].help);
		evbuffer_add_printf(b, "%s ", gauges[i].name);
		metrics_value(b, gauges[i].fn != NULL ?
		    gauges[i].fn(gauges[i].arg) : 0);
	}

	metrics_head(b, "petrel_dns_queries_total", "counter",
	    "DNS queries sent to the resolver.");
	evbuffer_add_printf(b, "petrel_dns_queries_total %llu\n",
	    (unsigned long long)GET(ctr.dns_queries));
	metrics_head(b, "petrel_dns_failures_total", "counter",
	    "DNS queries without a usable answer (timeout, SERVFAIL, REFUSED, "
	    "bogus, resolver error).");
	evbuffer_add_printf(b, "petrel_dns_failures_total %llu\n",
	    (unsigned long long)GET(ctr.dns_failures));

	metrics_head(b, "petrel_dkim_sign_seconds", "histogram",
	    "Time to DKIM-sign one message.");
	cum = 0;
	for (i = 0; i < METRICS_DKIM_NB; i++) {
		cum += GET(ctr.dkim_bucket[i]);
		if (i < nitems(metrics_dkim_le))
			evbuffer_add_printf(b, "petrel_dkim_sign_seconds_bucket"
			    "{le=\"%g\"} %llu\n", metrics_dkim_le[i],
			    (unsigned long long)cum);
		else
			evbuffer_add_printf(b, "petrel_dkim_sign_seconds_bucket"
			    "{le=\"+Inf\"} %llu\n", (unsigned long long)cum);
	}
	evbuffer_add_printf(b, "petrel_dkim_sign_seconds_sum %.9f\n"
	    "petrel_dkim_sign_seconds_count %llu\n",
	    (double)GET(ctr.dkim_sum_ns) / 1e9, (unsigned long long)cum);
}

char *
metrics_render(void)
{
	struct evbuffer *b;
	size_t len;
	char *s;

	if ((b = evbuffer_new()) == NULL)
		fatalx("metrics: evbuffer_new");
	metrics_render_buf(b);
	len = evbuffer_get_length(b);
	s = xmalloc(len + 1);
	evbuffer_remove(b, s, len);
	s[len] = '\0';
	evbuffer_free(b);
	return s;
}

/* metrics_request_cb - GET /metrics; 404 for everything else */
static void
metrics_request_cb(struct evhttp_request *req, void *arg)
{
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri != NULL ? evhttp_uri_get_path(uri) : NULL;
	enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
	struct evkeyvalq *oh = evhttp_request_get_output_headers(req);
	struct evbuffer *b;

	(void)arg;
	if ((cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) ||
	    path == NULL || strcmp(path, "/metrics") != 0) {
		evhttp_add_header(oh, "Content-Type",
		    "text/plain; charset=utf-8");
		if ((b = evbuffer_new()) != NULL)
			evbuffer_add_printf(b, "not found\n");
		evhttp_send_reply(req, HTTP_NOTFOUND, "Not Found", b);
		if (b != NULL)
			evbuffer_free(b);
		return;
	}
	if ((b = evbuffer_new()) == NULL) {
		evhttp_send_error(req, HTTP_INTERNAL, NULL);
		return;
	}
	metrics_render_buf(b);
	evhttp_add_header(oh, "Content-Type", METRICS_CONTENT_TYPE);
	evhttp_add_header(oh, "Cache-Control", "no-store");
	evhttp_send_reply(req, HTTP_OK, "OK", b);
	evbuffer_free(b);
}

/* metrics_bind_addr - netaddr_listen_each's fn: one bound socket */
static int
metrics_bind_addr(const struct addrinfo *ai, void *arg)
{
	struct metrics_sock *s, **tail;
	char **err_r = arg;

	s = xcalloc(1, sizeof(*s));
	for (tail = &metrics_socks; *tail != NULL; tail = &(*tail)->next)
		;
	*tail = s;
	metrics_nsocks++;
	if ((s->fd = netaddr_bind(ai, s->addr, sizeof(s->addr))) == -1) {
		*err_r = xasprintf("listen_metrics %s: cannot bind: %s",
		    s->addr, strerror(errno));
		return -1;
	}
	return 0;
}

int
metrics_bind(const struct conf_listen *cl, char **err_r)
{
	char addr[NETADDR_LISTEN_STRLEN];
	const char *why;

	metrics_gauges_init();
	if (netaddr_listen_each(cl, metrics_bind_addr, err_r, addr, &why) == 0)
		return 0;
	if (why != NULL)
		*err_r = xasprintf("listen_metrics %s: %s", addr, why);
	return -1;
}

int
metrics_start(struct event_base *base, struct store *st, char **err_r)
{
	struct metrics_sock *s;

	metrics_store = st;
	for (s = metrics_socks; s != NULL; s = s->next) {
		if (metrics_http == NULL) {
			if ((metrics_http = evhttp_new(base)) == NULL) {
				*err_r = xstrdup("evhttp_new failed");
				return -1;
			}
			evhttp_set_gencb(metrics_http, metrics_request_cb,
			    NULL);
			evhttp_set_max_headers_size(metrics_http, 16384);
			evhttp_set_max_body_size(metrics_http, 0);
			evhttp_set_timeout(metrics_http, METRICS_TIMEOUT_SECS);
			evhttp_set_allowed_methods(metrics_http,
			    EVHTTP_REQ_GET | EVHTTP_REQ_HEAD |
			    EVHTTP_REQ_POST | EVHTTP_REQ_PUT |
			    EVHTTP_REQ_DELETE);
		}
		if (listen(s->fd, METRICS_BACKLOG) == -1 ||
		    (s->bound = evhttp_accept_socket_with_handle(metrics_http,
		    s->fd)) == NULL) {
			*err_r = xasprintf("listen_metrics %s: cannot listen: "
			    "%s", s->addr, strerror(errno));
			return -1;
		}
		log_info("event=listen addr=%s kind=metrics", s->addr);
	}
	return 0;
}

void
metrics_shutdown(void)
{
	struct metrics_sock *s;

	while ((s = metrics_socks) != NULL) {
		metrics_socks = s->next;
		if (s->bound != NULL)
			evhttp_del_accept_socket(metrics_http, s->bound);
		else if (s->fd != -1)
			close(s->fd);
		free(s);
	}
}

void
metrics_free(void)
{
	size_t i;

	metrics_shutdown();
	metrics_store = NULL;
	if (metrics_http != NULL) {
		evhttp_free(metrics_http);
		metrics_http = NULL;
	}
	for (i = 0; i < ngauges; i++) {
		free(gauges[i].name);
		free(gauges[i].help);
	}
	memset(gauges, 0, sizeof(gauges));
	ngauges = 0;
	gauges_init = 0;
}

int
metrics_listeners(void)
{
	return metrics_nsocks;
}
