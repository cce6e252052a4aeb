/*
 * dns.c - asynchronous resolver on libunbound for the delivery path.
 *
 * One ub_ctx per struct dns. libunbound does its work in a background
 * thread (ub_ctx_async(ctx, 1)); results come back over a pipe whose read
 * end (ub_fd) is a persistent EV_READ event on the caller's loop that calls
 * ub_process(), which runs our callbacks on the loop's thread. The other
 * background mode, a forked process, is avoided on purpose: the child
 * would inherit every descriptor open at the first query (listeners,
 * client connections), keeping sockets open after the daemon closes them.
 *
 * A request (struct dns_req) owns up to DNS_Q_MAX libunbound queries, a
 * deadline timer and the partial result. dns_mx() asks for MX, then A and
 * AAAA of every chosen host in parallel; answers are parsed from the
 * uncompressed rdata that libunbound returns, with every length checked.
 * Caching is left to libunbound's own TTL-bounded message cache.
 */
#include "autoconf.h"

#include <sys/types.h>
#include <sys/socket.h>
#include <sys/queue.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <unbound.h>

#include "dns.h"
#include "log.h"
#include "metrics.h"
#include "util.h"

#define DNS_CLASS_IN		1
#define DNS_RR_A		1
#define DNS_RR_MX		15
#define DNS_RR_TXT		16
#define DNS_RR_AAAA		28
#define DNS_RCODE_NXDOMAIN	3
#define DNS_WIRE_NAME_MAX	255	/* RFC 1035 3.1 */
#define DNS_LABEL_MAX		63

/* one MX query, then A and AAAA for each host */
#define DNS_Q_MAX		(1 + 2 * DNS_MX_HOSTS_MAX)
/* not answered yet */
#define DNS_ST_PENDING		(-1)

enum dns_kind { DNS_KIND_MX, DNS_KIND_A, DNS_KIND_TXT };

struct dns {
	struct event_base	*base;
	struct ub_ctx		*ctx;
	struct event		*ev;		/* ub_fd readable */
	unsigned int		 timeout_ms;
	size_t			 nreqs;
	TAILQ_HEAD(dns_reqs, dns_req) reqs;
};

/* one libunbound query of a request */
struct dns_q {
	struct dns_req	*req;
	int		 id;		/* libunbound async id */
	int		 busy;
	int		 rrtype;
	size_t		 host;		/* index in req->hosts (A, AAAA) */
};

/* a host being resolved */
struct dns_hw {
	char			 name[DNS_NAME_MAX + 1];
	int			 pref;
	int			 st4, st6;	/* enum dns_status or PENDING */
	size_t			 n4, n6;
	struct sockaddr_in	 a4[DNS_HOST_ADDRS_MAX];
	struct sockaddr_in6	 a6[DNS_HOST_ADDRS_MAX];
};

struct dns_req {
	TAILQ_ENTRY(dns_req)	 entry;
	struct dns		*dns;
	enum dns_kind		 kind;
	char			 name[DNS_NAME_MAX + 1];
	dns_mx_cb		 mx_cb;
	dns_txt_cb		 txt_cb;
	void			*arg;
	struct event		*ev;		/* deadline or deferred end */
	int			 starting;	/* inside dns_mx() & co */
	int			 deferred;	/* end pending on ev */
	int			 def_status;
	const char		*def_error;
	int			 implicit;
	int			 ttl;		/* smallest TTL seen, -1: none */
	int			 hoststage;	/* MX answered, hosts running */
	size_t			 nhosts;
	struct dns_hw		*hosts;
	size_t			 nbusy;
	struct dns_q		 q[DNS_Q_MAX];
};

/* a parsed MX record */
struct dns_mxrec {
	int	pref;
	char	name[DNS_NAME_MAX + 1];
};

static void dns_ub_read(evutil_socket_t, short, void *);
static void dns_ub_cb(void *, int, struct ub_result *);
static void dns_req_timer(evutil_socket_t, short, void *);
static void dns_req_end(struct dns_req *);
static void dns_hosts_done(struct dns_req *);

static const char *dns_status_names[] = {
	[DNS_OK] = "OK", [DNS_NXDOMAIN] = "NXDOMAIN", [DNS_NULLMX] = "NULLMX",
	[DNS_NODATA] = "NODATA", [DNS_TEMPFAIL] = "TEMPFAIL",
};

/* dns_status_str - name of a status */
const char *
dns_status_str(int status)
{
	if (status < 0 || (size_t)status >= nitems(dns_status_names))
		return "?";
	return dns_status_names[status];
}

/* dns_label_char - characters allowed in a host name label: LDH and '_'
 * (seen in practice in MX targets of some providers) */
static int
dns_label_char(int c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	    (c >= '0' && c <= '9') || c == '-' || c == '_';
}

/* dns_name_valid - 1 when name is a plausible host or domain name */
int
dns_name_valid(const char *name)
{
	size_t len, i, label = 0;

	if (name == NULL)
		return 0;
	len = strlen(name);
	if (len > 0 && name[len - 1] == '.')
		len--;
	if (len == 0 || len > DNS_NAME_MAX)
		return 0;
	for (i = 0; i < len; i++) {
		if (name[i] == '.') {
			if (label == 0)
				return 0;
			label = 0;
			continue;
		}
		if (!dns_label_char((unsigned char)name[i]))
			return 0;
		if (++label > DNS_LABEL_MAX)
			return 0;
	}
	return label > 0;
}

/* dns_wire_name - read an uncompressed wire-format name of at most len
 * bytes at p into out (lower case, dot-separated, "" for the root);
 * *used_r gets its wire length. -1 when malformed. */
static int
dns_wire_name(const unsigned char *p, size_t len, char *out, size_t outsz,
    size_t *used_r)
{
	size_t off = 0, o = 0, l, i;

	for (;;) {
		if (off >= len || off >= DNS_WIRE_NAME_MAX)
			return -1;
		l = p[off++];
		if (l == 0)
			break;
		if (l > DNS_LABEL_MAX)		/* compression, extended */
			return -1;
		if (l > len - off)
			return -1;
		if (o > 0) {
			if (o + 1 >= outsz)
				return -1;
			out[o++] = '.';
		}
		if (l >= outsz - o)
			return -1;
		for (i = 0; i < l; i++) {
			int c = p[off + i];

			if (!dns_label_char(c))
				return -1;
			if (c >= 'A' && c <= 'Z')
				c += 'a' - 'A';
			out[o++] = (char)c;
		}
		off += l;
	}
	if (off > DNS_WIRE_NAME_MAX)
		return -1;
	out[o] = '\0';
	*used_r = off;
	return 0;
}

/* dns_parse_mx - MX rdata: 2-byte preference, then an uncompressed wire
 * name filling the rest exactly. name gets "" for the root ("."). */
int
dns_parse_mx(const void *rdata, size_t len, int *pref_r, char *name,
    size_t namesz)
{
	const unsigned char *p = rdata;
	size_t used;

	if (len < 3 || dns_wire_name(p + 2, len - 2, name, namesz,
	    &used) == -1 || used != len - 2)
		return -1;
	*pref_r = (p[0] << 8) | p[1];
	return 0;
}

/* dns_parse_txt - TXT rdata: one or more <length><bytes> strings, joined
 * into out (NUL-terminated; outsz must exceed len) */
int
dns_parse_txt(const void *rdata, size_t len, char *out, size_t outsz,
    size_t *outlen_r)
{
	const unsigned char *p = rdata;
	size_t off = 0, o = 0, l;

	if (len == 0 || outsz <= len)
		return -1;
	while (off < len) {
		l = p[off++];
		if (l > len - off)
			return -1;
		memcpy(out + o, p + off, l);
		o += l;
		off += l;
	}
	out[o] = '\0';
	*outlen_r = o;
	return 0;
}

/* dns_is_ipliteral - 1 when name is written as an IPv4 or IPv6 address */
static int
dns_is_ipliteral(const char *name)
{
	unsigned char buf[sizeof(struct in6_addr)];

	return inet_pton(AF_INET, name, buf) == 1 ||
	    inet_pton(AF_INET6, name, buf) == 1;
}

/* dns_rcode_str - static text of an error rcode */
static const char *
dns_rcode_str(int rcode)
{
	switch (rcode) {
	case 1: return "FORMERR";
	case 2: return "SERVFAIL";
	case 4: return "NOTIMP";
	case 5: return "REFUSED";
	default: return "DNS error";
	}
}

/* dns_classify - status of one libunbound answer */
static int
dns_classify(int err, const struct ub_result *res, const char **error_r)
{
	if (err != 0 || res == NULL) {
		*error_r = err != 0 ? ub_strerror(err) : "no result";
		return DNS_TEMPFAIL;
	}
	if (res->rcode == DNS_RCODE_NXDOMAIN) {
		*error_r = "domain does not exist";
		return DNS_NXDOMAIN;
	}
	if (res->rcode != 0) {
		*error_r = dns_rcode_str(res->rcode);
		return DNS_TEMPFAIL;
	}
	if (res->bogus) {
		*error_r = "DNSSEC validation failed";
		return DNS_TEMPFAIL;
	}
	if (!res->havedata || res->data == NULL || res->data[0] == NULL) {
		*error_r = "no records";
		return DNS_NODATA;
	}
	*error_r = NULL;
	return DNS_OK;
}

/* dns_resolver_fwd - "IP", "IP:PORT", "[IPv6]:PORT", "IPv6" -> libunbound's
 * "IP@PORT" in out. -1 and *err_r on error. */
static int
dns_resolver_fwd(const char *s, char *out, size_t outsz, const char **err_r)
{
	char host[INET6_ADDRSTRLEN + 1];
	unsigned char buf[sizeof(struct in6_addr)];
	const char *port = NULL, *end, *colon;
	uint64_t pnum = 53;
	size_t hlen;
	int n;

	if (*s == '[') {
		end = strchr(s, ']');
		if (end == NULL) {
			*err_r = "resolver: missing ]";
			return -1;
		}
		hlen = (size_t)(end - (s + 1));
		s++;
		if (end[1] == ':')
			port = end + 2;
		else if (end[1] != '\0') {
			*err_r = "resolver: junk after ]";
			return -1;
		}
	} else if ((colon = strchr(s, ':')) != NULL &&
	    strchr(colon + 1, ':') == NULL) {
		hlen = (size_t)(colon - s);
		port = colon + 1;
	} else
		hlen = strlen(s);
	if (hlen == 0 || hlen >= sizeof(host)) {
		*err_r = "resolver: bad address";
		return -1;
	}
	memcpy(host, s, hlen);
	host[hlen] = '\0';
	if (inet_pton(AF_INET, host, buf) != 1 &&
	    inet_pton(AF_INET6, host, buf) != 1) {
		*err_r = "resolver: not an IP address";
		return -1;
	}
	if (port != NULL &&
	    util_parse_uint(port, 1, 65535, &pnum, err_r) == -1) {
		*err_r = "resolver: bad port";
		return -1;
	}
	n = snprintf(out, outsz, "%s@%u", host, (unsigned int)pnum);
	if (n < 0 || (size_t)n >= outsz) {
		*err_r = "resolver: too long";
		return -1;
	}
	return 0;
}

/* dns_new - resolver context on base */
struct dns *
dns_new(struct event_base *base, const char *resolver, char **err_r)
{
	static const char *zones[] = { "test. transparent",
	    "invalid. transparent" };
	struct dns *dns;
	char fwd[INET6_ADDRSTRLEN + 16];
	const char *err = NULL;
	size_t i;
	int r;

	*err_r = NULL;
	if (resolver != NULL && *resolver != '\0' &&
	    dns_resolver_fwd(resolver, fwd, sizeof(fwd), &err) == -1) {
		*err_r = xstrdup(err);
		return NULL;
	}
	dns = xcalloc(1, sizeof(*dns));
	dns->base = base;
	dns->timeout_ms = DNS_TIMEOUT_MS;
	TAILQ_INIT(&dns->reqs);
	if ((dns->ctx = ub_ctx_create()) == NULL) {
		*err_r = xstrdup("ub_ctx_create failed");
		free(dns);
		return NULL;
	}
	if ((r = ub_ctx_async(dns->ctx, 1)) != 0) {
		*err_r = xasprintf("ub_ctx_async: %s", ub_strerror(r));
		goto fail;
	}
	if (resolver != NULL && *resolver != '\0') {
		if ((r = ub_ctx_set_fwd(dns->ctx, fwd)) != 0) {
			*err_r = xasprintf("ub_ctx_set_fwd %s: %s", fwd,
			    ub_strerror(r));
			goto fail;
		}
		if ((r = ub_ctx_set_option(dns->ctx, "do-not-query-localhost:",
		    "no")) != 0) {
			*err_r = xasprintf("do-not-query-localhost: %s",
			    ub_strerror(r));
			goto fail;
		}
	} else {
		if ((r = ub_ctx_resolvconf(dns->ctx, NULL)) != 0) {
			*err_r = xasprintf("reading resolv.conf: %s",
			    ub_strerror(r));
			goto fail;
		}
		if ((r = ub_ctx_hosts(dns->ctx, NULL)) != 0)
			log_warn("dns: reading hosts file: %s", ub_strerror(r));
	}
	/* RFC 6761 names (*.test) are answered from built-in empty zones
	 * unless made transparent */
	for (i = 0; i < nitems(zones); i++) {
		if ((r = ub_ctx_set_option(dns->ctx, "local-zone:",
		    zones[i])) != 0) {
			*err_r = xasprintf("local-zone %s: %s", zones[i],
			    ub_strerror(r));
			goto fail;
		}
	}
	dns->ev = event_new(base, ub_fd(dns->ctx), EV_READ | EV_PERSIST,
	    dns_ub_read, dns);
	if (dns->ev == NULL || event_add(dns->ev, NULL) == -1) {
		*err_r = xstrdup("cannot watch the libunbound descriptor");
		goto fail;
	}
	log_debug("dns: resolver=%s", resolver && *resolver ? fwd :
	    "resolv.conf");
	return dns;
fail:
	if (dns->ev != NULL)
		event_free(dns->ev);
	ub_ctx_delete(dns->ctx);
	free(dns);
	return NULL;
}

/* dns_free - cancel every request without callbacks, then free */
void
dns_free(struct dns *dns)
{
	struct dns_req *req;

	if (dns == NULL)
		return;
	while ((req = TAILQ_FIRST(&dns->reqs)) != NULL)
		dns_req_end(req);
	event_free(dns->ev);
	ub_ctx_delete(dns->ctx);
	free(dns);
}

/* dns_set_timeout - deadline for requests started from now on */
void
dns_set_timeout(struct dns *dns, unsigned int ms)
{
	if (ms > 0)
		dns->timeout_ms = ms;
}

/* dns_pending - requests in progress */
size_t
dns_pending(const struct dns *dns)
{
	return dns->nreqs;
}

/* dns_ub_read - libunbound has results: run their callbacks */
static void
dns_ub_read(evutil_socket_t fd, short what, void *arg)
{
	struct dns *dns = arg;
	int r;

	if ((r = ub_process(dns->ctx)) != 0)
		log_err("dns: ub_process: %s", ub_strerror(r));
}

/* dns_req_new - a request with its deadline armed */
static struct dns_req *
dns_req_new(struct dns *dns, enum dns_kind kind, const char *name)
{
	struct dns_req *req;
	struct timeval tv;
	size_t i, len;

	req = xcalloc(1, sizeof(*req));
	req->dns = dns;
	req->kind = kind;
	req->ttl = -1;
	req->starting = 1;
	if (dns_name_valid(name)) {
		len = strlen(name);
		if (name[len - 1] == '.')
			len--;
		memcpy(req->name, name, len);
		req->name[len] = '\0';
		util_lower(req->name);
	}
	for (i = 0; i < DNS_Q_MAX; i++)
		req->q[i].req = req;
	if ((req->ev = evtimer_new(dns->base, dns_req_timer, req)) == NULL)
		fatalx("dns: evtimer_new failed");
	tv.tv_sec = dns->timeout_ms / 1000;
	tv.tv_usec = (dns->timeout_ms % 1000) * 1000;
	evtimer_add(req->ev, &tv);
	TAILQ_INSERT_TAIL(&dns->reqs, req, entry);
	dns->nreqs++;
	return req;
}

/* dns_req_detach - stop every query and the timer, leave the list; the
 * request can then be completed and freed without further events */
static void
dns_req_detach(struct dns_req *req)
{
	struct dns *dns = req->dns;
	size_t i;
	int r;

	for (i = 0; i < DNS_Q_MAX; i++) {
		if (!req->q[i].busy)
			continue;
		/* once removed from libunbound's table an answer that is
		 * still in the pipe is dropped: no callback after this */
		if ((r = ub_cancel(dns->ctx, req->q[i].id)) != 0)
			log_debug("dns: ub_cancel %d: %s", req->q[i].id,
			    ub_strerror(r));
		req->q[i].busy = 0;
	}
	req->nbusy = 0;
	if (req->ev != NULL) {
		event_free(req->ev);
		req->ev = NULL;
	}
	TAILQ_REMOVE(&dns->reqs, req, entry);
	dns->nreqs--;
}

/* dns_req_end - detach and free (no callback) */
static void
dns_req_end(struct dns_req *req)
{
	dns_req_detach(req);
	free(req->hosts);
	free(req);
}

/* dns_cancel - the caller lost interest: no callback */
void
dns_cancel(struct dns_req *req)
{
	if (req != NULL)
		dns_req_end(req);
}

/* dns_query - start one libunbound query for the request */
static int
dns_query(struct dns_req *req, int rrtype, size_t host)
{
	struct dns_q *q = NULL;
	const char *name;
	size_t i;
	int r;

	for (i = 0; i < DNS_Q_MAX; i++)
		if (!req->q[i].busy) {
			q = &req->q[i];
			break;
		}
	if (q == NULL)
		fatalx("dns: out of query slots");
	name = (rrtype == DNS_RR_A || rrtype == DNS_RR_AAAA) ?
	    req->hosts[host].name : req->name;
	q->rrtype = rrtype;
	q->host = host;
	r = ub_resolve_async(req->dns->ctx, name, rrtype, DNS_CLASS_IN, q,
	    dns_ub_cb, &q->id);
	metrics_count_dns_query();
	if (r != 0) {
		log_warn("dns: name=%s type=%d: %s", name, rrtype,
		    ub_strerror(r));
		metrics_count_dns_failure();
		return -1;
	}
	q->busy = 1;
	req->nbusy++;
	return 0;
}

/* dns_mx_result_clear - free what a built result holds */
static void
dns_mx_result_clear(struct dns_mx_result *res)
{
	size_t i;

	for (i = 0; i < res->nhosts; i++) {
		free(res->hosts[i].name);
		free(res->hosts[i].addrs);
	}
	free(res->hosts);
	res->hosts = NULL;
	res->nhosts = 0;
}

/* dns_deliver_mx - end the request and hand res to the caller */
static void
dns_deliver_mx(struct dns_req *req, struct dns_mx_result *res)
{
	dns_mx_cb cb = req->mx_cb;
	void *arg = req->arg;

	log_debug("dns: %s name=%s status=%s hosts=%zu%s%s",
	    req->kind == DNS_KIND_MX ? "mx" : "a", req->name[0] ? req->name :
	    "(invalid)", dns_status_str(res->status), res->nhosts,
	    res->error ? " error=" : "", res->error ? res->error : "");
	dns_req_end(req);
	cb(res, arg);
}

/* dns_fail - end a request with a status and no data; deferred to the
 * loop while the request is still being started */
static void
dns_fail(struct dns_req *req, int status, const char *error)
{
	struct dns_mx_result mres;
	struct dns_txt_result tres;
	dns_txt_cb tcb;
	void *arg;

	if (req->starting) {
		req->deferred = 1;
		req->def_status = status;
		req->def_error = error;
		evtimer_del(req->ev);
		event_active(req->ev, EV_TIMEOUT, 1);
		return;
	}
	if (req->kind == DNS_KIND_TXT) {
		memset(&tres, 0, sizeof(tres));
		tres.status = status;
		tres.error = error;
		tcb = req->txt_cb;
		arg = req->arg;
		log_debug("dns: txt name=%s status=%s error=%s", req->name[0] ?
		    req->name : "(invalid)", dns_status_str(status), error);
		dns_req_end(req);
		tcb(&tres, arg);
		return;
	}
	memset(&mres, 0, sizeof(mres));
	mres.status = status;
	mres.error = error;
	mres.implicit = req->implicit;
	dns_deliver_mx(req, &mres);
}

/* dns_req_timer - deadline passed, or a deferred end */
static void
dns_req_timer(evutil_socket_t fd, short what, void *arg)
{
	struct dns_req *req = arg;
	size_t i;

	if (req->deferred) {
		dns_fail(req, req->def_status, req->def_error);
		return;
	}
	log_debug("dns: name=%s timeout", req->name);
	for (i = 0; i < DNS_Q_MAX; i++)
		if (req->q[i].busy)
			metrics_count_dns_failure();	/* unanswered */
	if (!req->hoststage) {
		dns_fail(req, DNS_TEMPFAIL, "timeout");
		return;
	}
	/* hosts resolved so far are usable; the rest failed temporarily */
	for (i = 0; i < DNS_Q_MAX; i++) {
		struct dns_q *q = &req->q[i];

		if (!q->busy)
			continue;
		ub_cancel(req->dns->ctx, q->id);
		q->busy = 0;
		req->nbusy--;
		if (q->rrtype == DNS_RR_A)
			req->hosts[q->host].st4 = DNS_TEMPFAIL;
		else
			req->hosts[q->host].st6 = DNS_TEMPFAIL;
	}
	dns_hosts_done(req);
}

/* dns_start - common end of dns_mx/dns_a/dns_txt */
static struct dns_req *
dns_start(struct dns_req *req, int rrtype)
{
	if (req->name[0] == '\0')
		dns_fail(req, DNS_NXDOMAIN, "invalid domain name");
	else if (rrtype == DNS_RR_A) {
		req->hoststage = 1;
		req->nhosts = 1;
		req->hosts = xcalloc(1, sizeof(*req->hosts));
		util_strlcpy(req->hosts[0].name, req->name,
		    sizeof(req->hosts[0].name));
		req->hosts[0].st4 = req->hosts[0].st6 = DNS_ST_PENDING;
		if (dns_query(req, DNS_RR_A, 0) == -1 ||
		    dns_query(req, DNS_RR_AAAA, 0) == -1)
			dns_fail(req, DNS_TEMPFAIL, "cannot start query");
	} else if (dns_query(req, rrtype, 0) == -1)
		dns_fail(req, DNS_TEMPFAIL, "cannot start query");
	req->starting = 0;
	return req;
}

/* dns_mx - MX hosts and addresses of domain */
struct dns_req *
dns_mx(struct dns *dns, const char *domain, dns_mx_cb cb, void *arg)
{
	struct dns_req *req = dns_req_new(dns, DNS_KIND_MX, domain);

	req->mx_cb = cb;
	req->arg = arg;
	return dns_start(req, DNS_RR_MX);
}

/* dns_a - addresses of one host */
struct dns_req *
dns_a(struct dns *dns, const char *host, dns_mx_cb cb, void *arg)
{
	struct dns_req *req = dns_req_new(dns, DNS_KIND_A, host);

	req->mx_cb = cb;
	req->arg = arg;
	return dns_start(req, DNS_RR_A);
}

/* dns_txt - TXT records of name */
struct dns_req *
dns_txt(struct dns *dns, const char *name, dns_txt_cb cb, void *arg)
{
	struct dns_req *req = dns_req_new(dns, DNS_KIND_TXT, name);

	req->txt_cb = cb;
	req->arg = arg;
	return dns_start(req, DNS_RR_TXT);
}

/* dns_mxrec_cmp - by preference, then name (before the shuffle) */
static int
dns_mxrec_cmp(const void *a, const void *b)
{
	const struct dns_mxrec *x = a, *y = b;

	if (x->pref != y->pref)
		return x->pref < y->pref ? -1 : 1;
	return strcmp(x->name, y->name);
}

/* dns_random - uniform-enough integer in [0, n) for a shuffle of at most
 * DNS_MX_RECORDS_MAX entries */
static size_t
dns_random(size_t n)
{
	uint32_t r;

	util_random(&r, sizeof(r));
	return (size_t)(r % (uint32_t)n);
}

/* dns_start_hosts - resolve the chosen hosts, A and AAAA in parallel */
static void
dns_start_hosts(struct dns_req *req)
{
	size_t i;

	req->hoststage = 1;
	for (i = 0; i < req->nhosts; i++) {
		req->hosts[i].st4 = req->hosts[i].st6 = DNS_ST_PENDING;
		if (dns_query(req, DNS_RR_A, i) == -1)
			req->hosts[i].st4 = DNS_TEMPFAIL;
		if (dns_query(req, DNS_RR_AAAA, i) == -1)
			req->hosts[i].st6 = DNS_TEMPFAIL;
	}
	if (req->nbusy == 0)
		dns_hosts_done(req);
}

/* dns_ttl - an answer (records or NODATA) of st bounds how long req's
 * result may be kept */
static void
dns_ttl(struct dns_req *req, int st, const struct ub_result *res)
{
	if ((st == DNS_OK || st == DNS_NODATA) && res != NULL &&
	    res->ttl >= 0 && (req->ttl < 0 || res->ttl < req->ttl))
		req->ttl = res->ttl;
}

/* dns_mx_answer - the MX answer: null MX, implicit MX, or hosts in order */
static void
dns_mx_answer(struct dns_req *req, int err, struct ub_result *res)
{
	struct dns_mxrec *recs;
	const char *error;
	size_t n, nrec = 0, nroot = 0, nbad = 0, nlit = 0, i, j, k;
	int st, rootpref = -1;

	st = dns_classify(err, res, &error);
	dns_ttl(req, st, res);
	if (st == DNS_NXDOMAIN || st == DNS_TEMPFAIL) {
		dns_fail(req, st, error);
		return;
	}
	if (st == DNS_NODATA) {
		/* RFC 5321 5.1: no MX, the domain itself is the host */
		req->implicit = 1;
		req->nhosts = 1;
		req->hosts = xcalloc(1, sizeof(*req->hosts));
		util_strlcpy(req->hosts[0].name, req->name,
		    sizeof(req->hosts[0].name));
		req->hosts[0].pref = 0;
		dns_start_hosts(req);
		return;
	}
	for (n = 0; res->data[n] != NULL; n++)
		;
	if (n > DNS_MX_RECORDS_MAX) {
		log_warn("dns: mx name=%s records=%zu, examining %d",
		    req->name, n, DNS_MX_RECORDS_MAX);
		n = DNS_MX_RECORDS_MAX;
	}
	recs = xcalloc(n, sizeof(*recs));
	for (i = 0; i < n; i++) {
		size_t len = res->len[i] < 0 ? 0 : (size_t)res->len[i];
		struct dns_mxrec *r = &recs[nrec];

		if (dns_parse_mx(res->data[i], len, &r->pref, r->name,
		    sizeof(r->name)) == -1) {
			nbad++;
			continue;
		}
		if (r->name[0] == '\0') {		/* "." */
			nroot++;
			rootpref = r->pref;
			continue;
		}
		if (dns_is_ipliteral(r->name)) {
			/* a name, not an address literal (RFC 5321 5.1,
			 * RFC 2181 10.3): unusable */
			log_info("dns: mx name=%s target=%s is an IP address, "
			    "ignored", req->name, r->name);
			nlit++;
			continue;
		}
		nrec++;
	}
	if (nbad > 0)
		log_warn("dns: mx name=%s malformed=%zu", req->name, nbad);
	/* RFC 7505: one MX, preference 0, target "." */
	if (n == 1 && nroot == 1 && rootpref == 0) {
		free(recs);
		dns_fail(req, DNS_NULLMX, "domain accepts no mail (null MX)");
		return;
	}
	if (nrec == 0) {
		free(recs);
		if (nbad > 0)
			dns_fail(req, DNS_TEMPFAIL, "malformed MX records");
		else if (nlit == 0)
			dns_fail(req, DNS_NULLMX,
			    "domain accepts no mail (MX to root)");
		else
			dns_fail(req, DNS_NODATA, "no usable MX host");
		return;
	}
	if (nroot > 0)
		log_info("dns: mx name=%s null MX mixed with %zu hosts, "
		    "ignored", req->name, nrec);
	qsort(recs, nrec, sizeof(*recs), dns_mxrec_cmp);
	/* the same host twice: keep its lowest preference */
	for (i = 0, k = 0; i < nrec; i++) {
		for (j = 0; j < k; j++)
			if (strcmp(recs[j].name, recs[i].name) == 0)
				break;
		if (j == k)
			recs[k++] = recs[i];
	}
	nrec = k;
	/* RFC 5321 5.1: random order among equal preferences */
	for (i = 0; i < nrec; i = j) {
		for (j = i + 1; j < nrec && recs[j].pref == recs[i].pref; j++)
			;
		for (k = j - 1; k > i; k--) {
			size_t o = i + dns_random(k - i + 1);
			struct dns_mxrec t = recs[k];

			recs[k] = recs[o];
			recs[o] = t;
		}
	}
	if (nrec > DNS_MX_HOSTS_MAX) {
		log_info("dns: mx name=%s hosts=%zu, keeping %d", req->name,
		    nrec, DNS_MX_HOSTS_MAX);
		nrec = DNS_MX_HOSTS_MAX;
	}
	req->nhosts = nrec;
	req->hosts = xcalloc(nrec, sizeof(*req->hosts));
	for (i = 0; i < nrec; i++) {
		util_strlcpy(req->hosts[i].name, recs[i].name,
		    sizeof(req->hosts[i].name));
		req->hosts[i].pref = recs[i].pref;
	}
	free(recs);
	dns_start_hosts(req);
}

/* dns_addr_answer - A or AAAA records of one host */
static void
dns_addr_answer(struct dns_req *req, const struct dns_q *q, int err,
    struct ub_result *res)
{
	struct dns_hw *hw = &req->hosts[q->host];
	const char *error;
	size_t i, nbad = 0;
	int st;

	st = dns_classify(err, res, &error);
	dns_ttl(req, st, res);
	if (st == DNS_OK) {
		for (i = 0; res->data[i] != NULL; i++) {
			if (q->rrtype == DNS_RR_A) {
				if (res->len[i] != 4) {
					nbad++;
					continue;
				}
				if (hw->n4 == DNS_HOST_ADDRS_MAX)
					continue;
				hw->a4[hw->n4].sin_family = AF_INET;
				memcpy(&hw->a4[hw->n4].sin_addr, res->data[i],
				    4);
				hw->n4++;
			} else {
				if (res->len[i] != 16) {
					nbad++;
					continue;
				}
				if (hw->n6 == DNS_HOST_ADDRS_MAX)
					continue;
				hw->a6[hw->n6].sin6_family = AF_INET6;
				memcpy(&hw->a6[hw->n6].sin6_addr,
				    res->data[i], 16);
				hw->n6++;
			}
		}
		if ((q->rrtype == DNS_RR_A ? hw->n4 : hw->n6) == 0) {
			st = nbad > 0 ? DNS_TEMPFAIL : DNS_NODATA;
			error = "malformed address records";
		}
	}
	if (st != DNS_OK && st != DNS_NODATA)
		log_debug("dns: host=%s type=%s status=%s error=%s", hw->name,
		    q->rrtype == DNS_RR_A ? "A" : "AAAA", dns_status_str(st),
		    error);
	if (q->rrtype == DNS_RR_A)
		hw->st4 = st;
	else
		hw->st6 = st;
}

/* dns_hosts_done - every address lookup is in: build the result */
static void
dns_hosts_done(struct dns_req *req)
{
	struct dns_mx_result res;
	size_t i, j, t4, t6, half = DNS_HOST_ADDRS_MAX / 2, nok = 0;
	int ntemp = 0, allnx = 1;

	memset(&res, 0, sizeof(res));
	res.implicit = req->implicit;
	res.ttl = req->ttl;
	res.hosts = xcalloc(req->nhosts, sizeof(*res.hosts));
	for (i = 0; i < req->nhosts; i++) {
		struct dns_hw *hw = &req->hosts[i];
		struct dns_mx_host *h = &res.hosts[res.nhosts];

		if (hw->st4 != DNS_NXDOMAIN || hw->st6 != DNS_NXDOMAIN)
			allnx = 0;
		if (hw->n4 + hw->n6 == 0) {
			if (hw->st4 == DNS_TEMPFAIL ||
			    hw->st6 == DNS_TEMPFAIL) {
				ntemp++;
				h->status = DNS_TEMPFAIL;
			} else {
				log_debug("dns: name=%s host=%s has no "
				    "address, skipped", req->name, hw->name);
				continue;
			}
		} else {
			nok++;
			h->status = DNS_OK;
		}
		/* both families get a fair share of the cap */
		t4 = hw->n6 >= half ? half : DNS_HOST_ADDRS_MAX - hw->n6;
		if (hw->n4 < t4)
			t4 = hw->n4;
		t6 = hw->n6 < DNS_HOST_ADDRS_MAX - t4 ? hw->n6 :
		    DNS_HOST_ADDRS_MAX - t4;
		h->name = xstrdup(hw->name);
		h->pref = hw->pref;
		h->naddrs = t4 + t6;
		h->addrs = xcalloc(h->naddrs ? h->naddrs : 1,
		    sizeof(*h->addrs));
		for (j = 0; j < t4; j++)
			memcpy(&h->addrs[j], &hw->a4[j], sizeof(hw->a4[j]));
		for (j = 0; j < t6; j++)
			memcpy(&h->addrs[t4 + j], &hw->a6[j],
			    sizeof(hw->a6[j]));
		res.nhosts++;
	}
	if (nok > 0)
		res.status = DNS_OK;
	else {
		dns_mx_result_clear(&res);
		if (ntemp > 0) {
			res.status = DNS_TEMPFAIL;
			res.error = "address lookup failed temporarily";
		} else if (req->kind == DNS_KIND_A) {
			res.status = allnx ? DNS_NXDOMAIN : DNS_NODATA;
			res.error = allnx ? "host does not exist" :
			    "no A or AAAA records";
		} else {
			res.status = DNS_NODATA;
			res.error = req->implicit ?
			    "no MX and no A or AAAA records" :
			    "no usable MX host";
		}
	}
	dns_deliver_mx(req, &res);
	dns_mx_result_clear(&res);
}

/* dns_txt_answer - TXT records: each record's strings joined */
static void
dns_txt_answer(struct dns_req *req, int err, struct ub_result *ub)
{
	struct dns_txt_result res;
	dns_txt_cb cb;
	void *arg;
	const char *error;
	size_t n, i, nbad = 0;
	int st;

	st = dns_classify(err, ub, &error);
	if (st != DNS_OK) {
		dns_fail(req, st, error);
		return;
	}
	memset(&res, 0, sizeof(res));
	for (n = 0; ub->data[n] != NULL; n++)
		;
	if (n > DNS_TXT_RECORDS_MAX) {
		log_warn("dns: txt name=%s records=%zu, keeping %d",
		    req->name, n, DNS_TXT_RECORDS_MAX);
		n = DNS_TXT_RECORDS_MAX;
	}
	res.txt = xcalloc(n ? n : 1, sizeof(*res.txt));
	res.txt_len = xcalloc(n ? n : 1, sizeof(*res.txt_len));
	for (i = 0; i < n; i++) {
		size_t len = ub->len[i] < 0 ? 0 : (size_t)ub->len[i], o;
		char *s = xmalloc(len + 1);	/* joined <= rdata length */

		if (dns_parse_txt(ub->data[i], len, s, len + 1, &o) == -1) {
			free(s);
			nbad++;
			continue;
		}
		res.txt[res.ntxt] = s;
		res.txt_len[res.ntxt] = o;
		res.ntxt++;
	}
	if (res.ntxt == 0) {
		res.status = nbad > 0 ? DNS_TEMPFAIL : DNS_NODATA;
		res.error = nbad > 0 ? "malformed TXT records" : "no records";
	} else
		res.status = DNS_OK;
	cb = req->txt_cb;
	arg = req->arg;
	log_debug("dns: txt name=%s status=%s records=%zu", req->name,
	    dns_status_str(res.status), res.ntxt);
	dns_req_end(req);
	cb(&res, arg);
	for (i = 0; i < res.ntxt; i++)
		free(res.txt[i]);
	free(res.txt);
	free(res.txt_len);
}

/* dns_ub_cb - one libunbound answer, on the loop via ub_process() */
static void
dns_ub_cb(void *data, int err, struct ub_result *res)
{
	struct dns_q *q = data;
	struct dns_req *req = q->req;

	q->busy = 0;
	req->nbusy--;
	if (err != 0 || res == NULL || res->bogus || (res->rcode != 0 &&
	    res->rcode != DNS_RCODE_NXDOMAIN))
		metrics_count_dns_failure();
	if (req->deferred) {
		/* the request already ended; its end is on the loop */
	} else if (q->rrtype == DNS_RR_MX)
		dns_mx_answer(req, err, res);
	else if (q->rrtype == DNS_RR_TXT)
		dns_txt_answer(req, err, res);
	else {
		dns_addr_answer(req, q, err, res);
		if (req->nbusy == 0)
			dns_hosts_done(req);
	}
	if (res != NULL)
		ub_resolve_free(res);
}

/* dns_mx_result_dup - deep copy of a result (error is static text) */
struct dns_mx_result *
dns_mx_result_dup(const struct dns_mx_result *src)
{
	struct dns_mx_result *dst;
	size_t i;

	dst = xcalloc(1, sizeof(*dst));
	*dst = *src;
	dst->hosts = xcalloc(src->nhosts ? src->nhosts : 1,
	    sizeof(*dst->hosts));
	for (i = 0; i < src->nhosts; i++) {
		const struct dns_mx_host *s = &src->hosts[i];
		struct dns_mx_host *d = &dst->hosts[i];

		*d = *s;
		d->name = xstrdup(s->name);
		d->addrs = xcalloc(s->naddrs ? s->naddrs : 1,
		    sizeof(*d->addrs));
		if (s->naddrs > 0)
			memcpy(d->addrs, s->addrs,
			    s->naddrs * sizeof(*s->addrs));
	}
	return dst;
}

/* dns_mx_result_free - free a copy made by dns_mx_result_dup() */
void
dns_mx_result_free(struct dns_mx_result *res)
{
	if (res == NULL)
		return;
	dns_mx_result_clear(res);
	free(res);
}
