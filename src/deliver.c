/*
 * deliver.c - the delivery scheduler (see deliver.h).
 *
 * Objects, all on the main loop:
 *   dmsg   a message taken from the queue for one attempt: envelope, bytes
 *          and its active recipients. It lives until every job's result
 *          is committed, then sends its DSN (if any recipient bounced) and
 *          goes away; the schedule in LMDB says when it comes back.
 *   djob   the recipients of one message for one destination: one SMTP
 *          transaction (chunks of SMTPC_RCPTS_MAX recipients).
 *   ddest  a destination: "mx:DOMAIN" (MX lookup of the recipient domain)
 *          or a next hop from relayhost/transport. It holds the ready jobs
 *          (FIFO), the resolved hosts (refcounted, cached for
 *          their records' smallest TTL, at most DELIVER_MX_CACHE_MS)
 *          and its connections, at most
 *          smtp_destination_concurrency of them.
 *   dconn  one outbound connection: it walks the destination's addresses
 *          in MX order until one accepts (connection failure, 4xx/5xx
 *          greeting or failed EHLO: next address), then carries job after
 *          job (reuse) and idles DELIVER_IDLE_MS before QUIT.
 * smtp_max_connections bounds connections over all destinations; a
 * destination that wants one more waits on a list until one is released.
 *
 * Outcomes: 2xx delivered, 5xx bounced, everything else deferred to
 * now + retry_schedule[min(attempts - 1, n - 1)]; a deferral at or after
 * received_at + queue_lifetime becomes a bounce with 4.4.7. DNS: null MX
 * bounces 5.1.10, NXDOMAIN and no address bounce 5.1.2, a temporary
 * failure defers (4.4.3); for a relayhost/transport next hop every DNS
 * failure defers (a configuration problem, not the recipient's).
Every failure gets a category (bounce.c), kept in the recipient's
last_reply; a hard bounce about the address also lists it on the
tenant's suppression list (suppress.c), in the same transaction. Before
a message's jobs are made, its recipients on that list get the final
status "suppressed" (no attempt, no DSN).
 * A result is logged and considered done only once queue_update() has
 * committed it.
 *
 * Prepare stage (prepare.c): a message whose record's stage is not yet
 * "prepared" is not given to any destination when loaded. Its bytes go
 * to prepare_start(): on a worker thread it is DKIM-signed (header From
 * domain's record), ARC-sealed (arc_* settings; this hop's results from
 * authres.c) and, when the signing domain wants per-recipient copies
 * (List-Unsubscribe, tracking), personalised and signed once per
 * recipient; the store writer then replaces the stored bytes (or stores
 * the copies under qid + recipient index) and sets the stage "prepared"
 * in one transaction, and only then are its jobs made. So the first
 * attempt sends bytes that are already durable, a restart never signs
 * again, and signing costs once per message copy, not per attempt. A
 * message that expired before its first attempt bounces unprepared.
 * Copies per recipient: each such recipient is its own job (its own
 * transaction), whose bytes are read from the queue when the job is
 * sent. Other messages keep one transaction per destination.
 * DSNs: From MAILER-DAEMON@<the original sender's domain> when that
 * domain is verified for the tenant (so they are signed with d= that
 * domain), else MAILER-DAEMON@hostname (signed when hostname has a
 * domain record); their client record says "dsn": true (no ARC).
 */
#include "autoconf.h"

#include <sys/queue.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <jansson.h>

#include "bounce.h"
#include "config.h"
#include "deliver.h"
#include "dns.h"
#include "dsn.h"
#include "limits.h"
#include "log.h"
#include "metrics.h"
#include "petrel.h"
#include "prepare.h"
#include "queue.h"
#include "smtp_client.h"
#include "store.h"
#include "suppress.h"
#include "util.h"

#define DELIVER_HASH_SIZE	4096
#define DELIVER_RELAY_MAX	(DNS_NAME_MAX + INET6_ADDRSTRLEN + 16)

struct deliver;
struct ddest;
struct dmsg;

/* One recipient of a message in memory. */
struct drcpt {
	unsigned		 idx;		/* index in the queue record */
	char			*address;
	int			 attempts;	/* before this attempt */
	int			 bounced;	/* committed as bounced */
	const char		*status;	/* of this attempt (static) */
	int			 code;		/* the deciding reply */
	char			 enh[SMTPC_ENH_MAX];	/* status */
	char			 renh[SMTPC_ENH_MAX];	/* the reply's */
	char			*text;
	char			*remote;	/* MX host name, NULL if none */
	const char		*category;	/* of a failure (bounce.h) */
	int			 suppressed;	/* on the suppression list */
	char			*notify;	/* DSN NOTIFY, NULL: default */
	char			*orcpt;		/* DSN ORCPT, or NULL */
};

struct djob {
	TAILQ_ENTRY(djob)	 entry;		/* ddest jobs or committing */
	struct dmsg		*m;
	struct ddest		*d;
	size_t			 n;
	struct drcpt		**rcpts;
	const char		**addrs;	/* borrowed from rcpts */
	struct queue_req	*ureq;		/* update being committed */
	int			 personal;	/* bytes: the recipient's copy */
	unsigned char		*data;		/* that copy, once loaded */
	size_t			 len;
	char			 relay[DELIVER_RELAY_MAX];
	char			 host[DNS_NAME_MAX + 1];	/* remote MTA */
};
TAILQ_HEAD(djobs, djob);

struct dmsg {
	struct dmsg		*hnext;
	struct deliver		*dl;
	char			 qid[QUEUE_ID_LEN + 1];
	char			*tenant;
	char			*mail_from;
	int64_t			 received_at;
	unsigned char		*data;
	size_t			 len;
	size_t			 nrcpts;
	struct drcpt		*rcpts;
	unsigned		 pending;	/* jobs not yet committed */
	int			 gone;		/* deleted meanwhile */
	struct prepare_req	*preq;		/* being prepared */
	int			 personalised;	/* per-recipient copies */
	char			*envid;		/* DSN ENVID, or NULL */
	int			 ret_full;	/* DSN RET=FULL */
};

/* Resolved hosts of a destination, shared by its connections. */
struct dhosts {
	int			 refs;
	struct dns_mx_result	*r;
	uint64_t		 expire_ms;
};

enum dconn_state { DCONN_CONNECTING, DCONN_IDLE, DCONN_BUSY };

struct dconn {
	TAILQ_ENTRY(dconn)	 entry;
	struct ddest		*d;
	struct smtpc_conn	*c;
	struct dhosts		*hosts;
	size_t			 target;	/* index of the address tried */
	enum dconn_state	 state;
	struct djob		*job;
	struct event		*idle_ev;
	char			 host[DNS_NAME_MAX + 1];
	char			 relay[DELIVER_RELAY_MAX];
	struct smtpc_reply	 last;		/* last connection failure */
};
TAILQ_HEAD(dconns, dconn);

struct ddest {
	struct ddest		*hnext;
	TAILQ_ENTRY(ddest)	 wentry;	/* waiting for a global slot */
	struct deliver		*dl;
	char			*key;
	char			*name;		/* domain or next-hop host */
	int			 mx;		/* 1: MX lookup of name */
	int			 nexthop;	/* relayhost/transport */
	int			 port;
	struct djobs		 jobs;
	size_t			 njobs;
	struct dconns		 conns;
	unsigned		 nconns;
	unsigned		 nconnecting;
	struct dns_req		*dreq;
	struct dhosts		*hosts;
	int			 waiting;
	uint64_t		 dead_until;	/* ms: every address failed */
	struct smtpc_reply	 dead_reply;
	char			 dead_relay[DELIVER_RELAY_MAX];
};
TAILQ_HEAD(ddests, ddest);

struct deliver {
	struct event_base	*base;
	struct queue		*queue;
	struct store		*store;
	struct dns		*dns;
	SSL_CTX			*ssl;
	struct prepare		*prep;
	struct event		*scan_ev;
	struct dmsg		*msgs[DELIVER_HASH_SIZE];
	size_t			 nmsgs;
	struct ddest		*dests[DELIVER_HASH_SIZE];
	struct ddests		 waiting;
	struct djobs		 committing;
	unsigned		 nconns;	/* all destinations */
};

static void deliver_dest_run(struct ddest *);
static void deliver_dest_gc(struct ddest *);
static void deliver_conn_start(struct dconn *);
static void deliver_conn_release(struct dconn *, int quit);
static void deliver_job_results(struct djob *, const char *relay,
    const struct smtpc_rcpt_result *, size_t n);

/* deliver_hash - FNV-1a of s */
static unsigned
deliver_hash(const char *s)
{
	uint32_t h = 2166136261u;

	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 16777619u;
	}
	return h % DELIVER_HASH_SIZE;
}

/* deliver_quote - text safe inside reply="...": '"' and '\' replaced */
static void
deliver_quote(char *dst, size_t len, const char *src)
{
	size_t i;

	util_strlcpy(dst, src, len);
	for (i = 0; dst[i]; i++)
		if (dst[i] == '"' || dst[i] == '\\' ||
		    (unsigned char)dst[i] < 0x20)
			dst[i] = '\'';
}

/* deliver_limits - smtpc limits from the configuration */
static void
deliver_limits(struct smtpc_limits *lim)
{
	const struct petrel_conf *c = env->conf;

	smtpc_limits_default(lim);
	lim->connect_ms = c->smtp_connect_timeout * 1000;
	lim->greeting_ms = lim->helo_ms = lim->tls_ms = lim->mail_ms =
	    lim->rcpt_ms = lim->data_init_ms = lim->data_block_ms =
	    lim->rset_ms = c->smtp_timeout * 1000;
	lim->data_end_ms = c->smtp_data_timeout * 1000;
	if (lim->quit_ms > c->smtp_timeout * 1000)
		lim->quit_ms = c->smtp_timeout * 1000;
}

/* --- messages --- */

static struct dmsg *
deliver_msg_find(struct deliver *dl, const char *qid)
{
	struct dmsg *m;

	for (m = dl->msgs[deliver_hash(qid)]; m != NULL; m = m->hnext)
		if (strcmp(m->qid, qid) == 0)
			return m;
	return NULL;
}

/* deliver_skip - queue_scan_due filter: already in memory */
static int
deliver_skip(void *arg, const char *qid)
{
	return deliver_msg_find(arg, qid) != NULL;
}

static void
deliver_msg_free(struct dmsg *m)
{
	struct deliver *dl = m->dl;
	struct dmsg **pp;
	size_t i;

	for (pp = &dl->msgs[deliver_hash(m->qid)]; *pp != NULL;
	    pp = &(*pp)->hnext)
		if (*pp == m) {
			*pp = m->hnext;
			dl->nmsgs--;
			break;
		}
	for (i = 0; i < m->nrcpts; i++) {
		free(m->rcpts[i].address);
		free(m->rcpts[i].text);
		free(m->rcpts[i].remote);
		free(m->rcpts[i].notify);
		free(m->rcpts[i].orcpt);
	}
	free(m->rcpts);
	free(m->envid);
	free(m->tenant);
	free(m->mail_from);
	free(m->data);
	free(m);
}

/* deliver_dsn_queued - the DSN's queue_submit result */
static void
deliver_dsn_queued(void *arg, int status, const char *qid, const char *err)
{
	char *orig = arg;

	if (status == 0)
		log_info("qid=%s event=dsn status=queued dsn_qid=%s", orig, qid);
	else
		log_warn("qid=%s event=dsn status=failed reason=\"%s\"", orig,
		    err ? err : "?");
	free(orig);
}

/* deliver_dsn_domain - the original sender's domain into buf when it is
 * verified for m's tenant (the DSN's From then uses it and is signed with
 * its record); 0, or -1 */
static int
deliver_dsn_domain(struct dmsg *m, char *buf, size_t len)
{
	const char *at = strrchr(m->mail_from, '@'), *t, *st;
	json_t *rec;
	int ok;

	if (at == NULL || at[1] == '\0' || strlen(at + 1) >= len)
		return -1;
	if ((rec = store_domain_get(m->dl->store, at + 1)) == NULL)
		return -1;
	t = json_string_value(json_object_get(rec, "tenant"));
	st = json_string_value(json_object_get(rec, "status"));
	ok = t != NULL && st != NULL && strcmp(t, m->tenant) == 0 &&
	    strcmp(st, "verified") == 0;
	if (ok)
		util_strlcpy(buf, json_string_value(json_object_get(rec,
		    "domain")) ? json_string_value(json_object_get(rec,
		    "domain")) : at + 1, len);
	json_decref(rec);
	return ok ? 0 : -1;
}

/* deliver_dsn - one RFC 3464 report for the recipients of m that bounced
 * in this attempt, to m's sender, with a null reverse-path */
static void
deliver_dsn(struct dmsg *m)
{
	struct deliver *dl = m->dl;
	struct queue_envelope envl;
	struct dsn_rcpt *dr;
	struct dsn_info in;
	struct evbuffer *body;
	char msgid[128], boundary[40], rid[25], *hfrom;
	char fdom[DOMAIN_MAX_LEN + 1];
	const char *rcpt;
	json_t *client;
	size_t i, n = 0;

	if (m->mail_from[0] == '\0' || m->gone)
		return;		/* never a bounce for a bounce */
	dr = xcalloc(m->nrcpts, sizeof(*dr));
	for (i = 0; i < m->nrcpts; i++) {
		/* NOTIFY without FAILURE (NEVER, or SUCCESS/DELAY only):
		 * no failure report for this recipient (RFC 3461 4.1) */
		if (!m->rcpts[i].bounced || (m->rcpts[i].notify != NULL &&
		    strstr(m->rcpts[i].notify, "FAILURE") == NULL))
			continue;
		dr[n].orcpt = m->rcpts[i].orcpt;
		dr[n].address = m->rcpts[i].address;
		dr[n].status = m->rcpts[i].enh;
		dr[n].remote_mta = m->rcpts[i].remote;
		dr[n].code = m->rcpts[i].code;
		dr[n].reply_enh = m->rcpts[i].renh;
		dr[n].text = m->rcpts[i].text ? m->rcpts[i].text : "";
		n++;
	}
	if (n == 0) {
		free(dr);
		return;
	}
	util_random_id(rid, 24);
	snprintf(msgid, sizeof(msgid), "<%s.%s@%s>", m->qid, rid,
	    env->conf->hostname);
	util_random_id(rid, 24);
	snprintf(boundary, sizeof(boundary), "=_petrel_%s", rid);
	memset(&in, 0, sizeof(in));
	in.reporting_mta = env->conf->hostname;
	in.qid = m->qid;
	in.arrival = m->received_at;
	in.now = util_now();
	in.orig_from = m->mail_from;
	in.message_id = msgid;
	in.boundary = boundary;
	in.rcpts = dr;
	in.nrcpts = n;
	in.headers = m->data;
	in.headers_len = dsn_header_len(m->data, m->len);
	in.envid = m->envid;
	if (m->ret_full && m->len <= DELIVER_DSN_FULL_MAX) {
		in.full = m->data;
		in.full_len = m->len;
	}
	if (deliver_dsn_domain(m, fdom, sizeof(fdom)) == 0)
		in.from_domain = fdom;
	if ((body = evbuffer_new()) == NULL)
		fatalx("deliver: evbuffer_new failed");
	dsn_build(&in, body);

	hfrom = xasprintf("MAILER-DAEMON@%s", in.from_domain ?
	    in.from_domain : env->conf->hostname);
	rcpt = m->mail_from;
	memset(&envl, 0, sizeof(envl));
	envl.tenant = m->tenant;
	envl.mail_from = "";
	envl.header_from = hfrom;
	envl.message_id = msgid;
	envl.rcpts = &rcpt;
	envl.nrcpts = 1;
	/* generated here: prepare.c signs it, does not ARC-seal it */
	if ((client = json_pack("{s:b}", "dsn", 1)) == NULL)
		fatalx("deliver: json_pack failed");
	envl.client = client;
	log_info("qid=%s event=dsn to=<%s> rcpts=%zu", m->qid, m->mail_from,
	    n);
	queue_submit(dl->queue, &envl, body, deliver_dsn_queued,
	    xstrdup(m->qid), NULL);
	json_decref(client);
	evbuffer_free(body);
	free(hfrom);
	free(dr);
}

/* deliver_msg_unref - a job of m is finished; the last one ends m */
static void
deliver_msg_unref(struct dmsg *m)
{
	if (--m->pending > 0)
		return;
	deliver_dsn(m);
	deliver_msg_free(m);
}

/* --- recording results --- */

/* deliver_update_done - a job's results are committed: log them, keep
 * the bounces for the DSN */
static void
deliver_update_done(void *arg, int status, const char *qid, const char *err)
{
	struct djob *j = arg;
	struct dmsg *m = j->m;
	struct drcpt *r;
	char reply[SMTPC_TEXT_MAX + 32], q[sizeof(reply)];
	size_t i;

	TAILQ_REMOVE(&m->dl->committing, j, entry);
	if (status != 0 && err != NULL && strcmp(err, "no such message") == 0) {
		m->gone = 1;
		log_info("qid=%s event=deleted reason=\"removed while being "
		    "delivered\"", m->qid);
	} else if (status != 0)
		log_warn("qid=%s event=update status=failed reason=\"%s\"",
		    m->qid, err ? err : "?");
	for (i = 0; i < j->n && !m->gone; i++) {
		r = j->rcpts[i];
		snprintf(reply, sizeof(reply), "%d%s%s %s", r->code,
		    r->enh[0] ? " " : "", r->enh, r->text ? r->text : "");
		deliver_quote(q, sizeof(q), reply);
		log_info("qid=%s tenant=%s rcpt=%s status=%s relay=%s "
		    "attempts=%d reply=\"%s\"%s%s%s", m->qid, m->tenant,
		    r->address, r->status, j->relay[0] ? j->relay : "none",
		    r->attempts, q, r->category ? " category=" : "",
		    r->category ? r->category : "",
		    status != 0 ? " record=failed" : "");
	}
	free(j->rcpts);
	free(j->addrs);
	free(j->data);
	free(j);
	deliver_msg_unref(m);
}

/* deliver_next_attempt - when a recipient tried attempts times goes next */
static int64_t
deliver_next_attempt(int attempts, int64_t now)
{
	const struct petrel_conf *c = env->conf;
	int i = attempts - 1;

	if (c->retry_schedule_n <= 0)
		return now + 300;
	if (i < 0)
		i = 0;
	if (i >= c->retry_schedule_n)
		i = c->retry_schedule_n - 1;
	return now + c->retry_schedule[i];
}

/* deliver_job_record - outcome of each recipient of j (outcome[i],
 * reply[i]) into the queue through the writer */
static void
deliver_job_record(struct djob *j, const enum smtpc_outcome *outcome,
    const struct smtpc_reply *const *reply, int count_attempt)
{
	struct dmsg *m = j->m;
	struct queue_rcpt_update *u;
	struct drcpt *r;
	int64_t now = util_now();
	int expired = now >= m->received_at + env->conf->queue_lifetime;
	size_t i;

	u = xcalloc(j->n, sizeof(*u));
	for (i = 0; i < j->n; i++) {
		r = j->rcpts[i];
		if (count_attempt)
			r->attempts++;
		r->code = reply[i]->code;
		free(r->remote);
		r->remote = !reply[i]->local && j->host[0] ?
		    xstrdup(j->host) : NULL;
		util_strlcpy(r->enh, reply[i]->enh, sizeof(r->enh));
		util_strlcpy(r->renh, reply[i]->enh, sizeof(r->renh));
		free(r->text);
		r->text = xstrdup(reply[i]->text);
		u[i].idx = r->idx;
		u[i].count_attempt = count_attempt;
		u[i].code = r->code;
		u[i].relay = j->relay[0] && strcmp(j->relay, "none") ?
		    j->relay : NULL;
		switch (outcome[i]) {
		case SMTPC_DELIVERED:
			u[i].status = "delivered";
			break;
		case SMTPC_BOUNCED:
			u[i].status = "bounced";
			r->bounced = 1;
			break;
		case SMTPC_DEFERRED:
		default:
			if (expired) {
				u[i].status = "bounced";
				r->bounced = 1;
				util_strlcpy(r->enh, "4.4.7", sizeof(r->enh));
				free(r->text);
				r->text = xasprintf("Message expired after %lld s "
				    "in the queue; last error: %s",
				    (long long)(now - m->received_at),
				    reply[i]->text);
				break;
			}
			u[i].status = "deferred";
			u[i].next_attempt = deliver_next_attempt(r->attempts,
			    now);
			break;
		}
		r->category = NULL;
		if (outcome[i] != SMTPC_DELIVERED)
			r->category = u[i].category = bounce_classify(r->code,
			    r->enh, r->text, reply[i]->local, &u[i].suppress);
		metrics_count_delivery(u[i].status, u[i].category, r->enh);
		r->status = u[i].status;
		u[i].enhanced = r->enh;
		u[i].text = r->text;
	}
	TAILQ_INSERT_TAIL(&m->dl->committing, j, entry);
	j->ureq = queue_update(m->dl->queue, m->qid, u, j->n,
	    deliver_update_done, j);
	free(u);
}

/* deliver_job_fail - every recipient of j gets one local result; with
 * text NULL each keeps its own last reply (code and text; code when it
 * has none) */
static void
deliver_job_fail(struct djob *j, enum smtpc_outcome oc, int code,
    const char *enh, const char *text, int count_attempt)
{
	struct smtpc_reply *rep;
	enum smtpc_outcome *ocs;
	const struct smtpc_reply **reps;
	const char *t;
	size_t i;

	rep = xcalloc(j->n, sizeof(*rep));
	ocs = xcalloc(j->n, sizeof(*ocs));
	reps = xcalloc(j->n, sizeof(*reps));
	for (i = 0; i < j->n; i++) {
		t = text != NULL ? text : j->rcpts[i]->text ?
		    j->rcpts[i]->text : "";
		rep[i].code = text == NULL && j->rcpts[i]->code != 0 ?
		    j->rcpts[i]->code : code;
		rep[i].local = 1;
		util_strlcpy(rep[i].enh, enh, sizeof(rep[i].enh));
		smtpc_sanitize(rep[i].text, sizeof(rep[i].text), t, strlen(t));
		ocs[i] = oc;
		reps[i] = &rep[i];
	}
	deliver_job_record(j, ocs, reps, count_attempt);
	free(rep);
	free(ocs);
	free(reps);
}

static void
deliver_job_results(struct djob *j, const char *relay,
    const struct smtpc_rcpt_result *res, size_t n)
{
	enum smtpc_outcome *ocs;
	const struct smtpc_reply **reps;
	struct smtpc_reply missing;
	size_t i;

	util_strlcpy(j->relay, relay, sizeof(j->relay));
	memset(&missing, 0, sizeof(missing));
	missing.code = 451;
	missing.local = 1;
	util_strlcpy(missing.enh, "4.4.2", sizeof(missing.enh));
	util_strlcpy(missing.text, "no result for this recipient",
	    sizeof(missing.text));
	ocs = xcalloc(j->n, sizeof(*ocs));
	reps = xcalloc(j->n, sizeof(*reps));
	for (i = 0; i < j->n; i++) {
		if (i < n) {
			ocs[i] = res[i].outcome;
			reps[i] = &res[i].reply;
		} else {
			ocs[i] = SMTPC_DEFERRED;
			reps[i] = &missing;
		}
	}
	deliver_job_record(j, ocs, reps, 1);
	free(ocs);
	free(reps);
}

/* --- destinations --- */

static void
deliver_hosts_unref(struct dhosts *h)
{
	if (h == NULL || --h->refs > 0)
		return;
	dns_mx_result_free(h->r);
	free(h);
}

/* deliver_dest_get - the destination for a recipient domain */
static struct ddest *
deliver_dest_get(struct deliver *dl, const char *domain)
{
	const struct petrel_conf *c = env->conf;
	struct conf_nexthop nh;
	struct ddest *d;
	const char *err;
	char *key, *hop;
	unsigned h;

	memset(&nh, 0, sizeof(nh));
	hop = config_transport_lookup(c->transport, domain);
	if (hop == NULL && c->relayhost != NULL)
		hop = xstrdup(c->relayhost);
	if (hop != NULL && config_parse_nexthop(hop, &nh, &err) == -1) {
		log_warn("event=deliver domain=%s nexthop=\"%s\" reason=\"%s\" "
		    "action=\"using MX\"", domain, hop, err);
		free(hop);
		hop = NULL;
	}
	if (hop != NULL)
		key = xasprintf("nexthop:%s%s%s:%d", nh.mx ? "" : "[", nh.host,
		    nh.mx ? "" : "]", nh.port);
	else
		key = xasprintf("mx:%s", domain);
	h = deliver_hash(key);
	for (d = dl->dests[h]; d != NULL; d = d->hnext)
		if (strcmp(d->key, key) == 0)
			break;
	if (d != NULL) {
		free(key);
		free(hop);
		free(nh.host);
		return d;
	}
	d = xcalloc(1, sizeof(*d));
	d->dl = dl;
	d->key = key;
	if (hop != NULL) {
		d->name = nh.host;
		d->mx = nh.mx;
		d->nexthop = 1;
		d->port = nh.port;
	} else {
		d->name = xstrdup(domain);
		d->mx = 1;
	}
	free(hop);
	TAILQ_INIT(&d->jobs);
	TAILQ_INIT(&d->conns);
	d->hnext = dl->dests[h];
	dl->dests[h] = d;
	return d;
}

/* deliver_dest_gc - forget a destination with nothing left to do */
static void
deliver_dest_gc(struct ddest *d)
{
	struct deliver *dl = d->dl;
	struct ddest **pp;

	if (d->njobs > 0 || d->nconns > 0 || d->dreq != NULL)
		return;
	for (pp = &dl->dests[deliver_hash(d->key)]; *pp != NULL;
	    pp = &(*pp)->hnext)
		if (*pp == d) {
			*pp = d->hnext;
			break;
		}
	if (d->waiting)
		TAILQ_REMOVE(&dl->waiting, d, wentry);
	deliver_hosts_unref(d->hosts);
	free(d->key);
	free(d->name);
	free(d);
}

/* deliver_dest_fail_all - every ready job of d gets the same result */
static void
deliver_dest_fail_all(struct ddest *d, enum smtpc_outcome oc, int code,
    const char *enh, const char *text, const char *relay)
{
	struct djob *j;

	while ((j = TAILQ_FIRST(&d->jobs)) != NULL) {
		TAILQ_REMOVE(&d->jobs, j, entry);
		d->njobs--;
		util_strlcpy(j->relay, relay, sizeof(j->relay));
		deliver_job_fail(j, oc, code, enh, text, 1);
	}
}

/* deliver_dns_done - MX (or next-hop address) answer for d */
static void
deliver_dns_done(const struct dns_mx_result *r, void *arg)
{
	struct ddest *d = arg;
	char text[SMTPC_TEXT_MAX];
	size_t i, naddrs = 0;

	d->dreq = NULL;
	log_debug("event=dns dest=%s status=%s hosts=%zu", d->key,
	    dns_status_str(r->status), r->nhosts);
	if (r->status == DNS_OK)
		for (i = 0; i < r->nhosts; i++)
			naddrs += r->hosts[i].naddrs;
	if (r->status == DNS_OK && naddrs > 0) {
		deliver_hosts_unref(d->hosts);
		d->hosts = xcalloc(1, sizeof(*d->hosts));
		d->hosts->refs = 1;
		d->hosts->r = dns_mx_result_dup(r);
		/* kept as long as its records' TTL allows, at most
		 * DELIVER_MX_CACHE_MS (libunbound keeps its own cache) */
		d->hosts->expire_ms = util_now_ms() + (r->ttl >= 0 &&
		    (uint64_t)r->ttl * 1000 < DELIVER_MX_CACHE_MS ?
		    (uint64_t)r->ttl * 1000 : DELIVER_MX_CACHE_MS);
		deliver_dest_run(d);
	} else if (r->status == DNS_OK || r->status == DNS_TEMPFAIL ||
	    d->nexthop) {
		snprintf(text, sizeof(text), "%s: %s lookup failed: %s",
		    d->name, d->mx ? "MX" : "address", r->status == DNS_OK ?
		    "no address for any MX host" : r->error ? r->error :
		    dns_status_str(r->status));
		deliver_dest_fail_all(d, SMTPC_DEFERRED, 451, "4.4.3", text,
		    "none");
	} else if (r->status == DNS_NULLMX) {
		snprintf(text, sizeof(text), "Domain %s does not accept mail "
		    "(null MX)", d->name);
		deliver_dest_fail_all(d, SMTPC_BOUNCED, 556, "5.1.10", text,
		    "none");
	} else {
		snprintf(text, sizeof(text), "Host or domain name not found: "
		    "%s (%s)", d->name, r->status == DNS_NXDOMAIN ? "NXDOMAIN" :
		    "no MX and no address");
		deliver_dest_fail_all(d, SMTPC_BOUNCED, 550, "5.1.2", text,
		    "none");
	}
	deliver_dest_gc(d);
}

/* deliver_dest_resolve - start the lookup of d's hosts; an IP literal
 * next hop needs none */
static void
deliver_dest_resolve(struct ddest *d)
{
	struct dns_mx_result r;
	struct dns_mx_host h;
	struct sockaddr_storage ss;
	struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

	memset(&ss, 0, sizeof(ss));
	if (!d->mx && inet_pton(AF_INET, d->name, &sin->sin_addr) == 1)
		ss.ss_family = AF_INET;
	else if (!d->mx && inet_pton(AF_INET6, d->name, &sin6->sin6_addr) == 1)
		ss.ss_family = AF_INET6;
	if (ss.ss_family != 0) {
		memset(&r, 0, sizeof(r));
		memset(&h, 0, sizeof(h));
		h.name = d->name;
		h.naddrs = 1;
		h.addrs = &ss;
		r.status = DNS_OK;
		r.nhosts = 1;
		r.hosts = &h;
		deliver_hosts_unref(d->hosts);
		d->hosts = xcalloc(1, sizeof(*d->hosts));
		d->hosts->refs = 1;
		d->hosts->r = dns_mx_result_dup(&r);
		d->hosts->expire_ms = UINT64_MAX;
		return;
	}
	d->dreq = d->mx ? dns_mx(d->dl->dns, d->name, deliver_dns_done, d) :
	    dns_a(d->dl->dns, d->name, deliver_dns_done, d);
}

/* deliver_target - the i-th address of hosts: host name and address with
 * the port set; 0, or -1 past the end */
static int
deliver_target(const struct dhosts *hs, size_t i, int port,
    const char **host_r, struct sockaddr_storage *ss, socklen_t *len_r)
{
	const struct dns_mx_result *r = hs->r;
	size_t h;

	for (h = 0; h < r->nhosts; h++) {
		if (i < r->hosts[h].naddrs) {
			*host_r = r->hosts[h].name;
			*ss = r->hosts[h].addrs[i];
			if (ss->ss_family == AF_INET) {
				((struct sockaddr_in *)ss)->sin_port =
				    htons((uint16_t)port);
				*len_r = sizeof(struct sockaddr_in);
			} else {
				((struct sockaddr_in6 *)ss)->sin6_port =
				    htons((uint16_t)port);
				*len_r = sizeof(struct sockaddr_in6);
			}
			return 0;
		}
		i -= r->hosts[h].naddrs;
	}
	return -1;
}

/* deliver_dest_port - the port d's hosts are reached on */
static int
deliver_dest_port(const struct ddest *d)
{
	return d->port ? d->port : env->conf->smtp_remote_port;
}

/* deliver_conn_adopt - an idle connection of another destination to the
 * host name, address and port d would try first: destinations whose MX
 * is the same host share its connections, as Postfix's connection cache
 * does. Moved to d (its idle timer stopped) and returned, or NULL. */
static struct dconn *
deliver_conn_adopt(struct ddest *d)
{
	struct deliver *dl = d->dl;
	struct sockaddr_storage want, have;
	socklen_t wl, hl;
	const char *wh, *hh;
	struct ddest *o;
	struct dconn *cn;
	size_t b;
	if (d->hosts == NULL || deliver_target(d->hosts, 0,
	    deliver_dest_port(d), &wh, &want, &wl) == -1)
		return NULL;
	for (b = 0; b < DELIVER_HASH_SIZE; b++)
		for (o = dl->dests[b]; o != NULL; o = o->hnext) {
			if (o == d)
				continue;
			TAILQ_FOREACH(cn, &o->conns, entry) {
				if (cn->state != DCONN_IDLE || cn->job != NULL ||
				    cn->c == NULL || deliver_target(cn->hosts,
				    cn->target, deliver_dest_port(o), &hh,
				    &have, &hl) == -1 || hl != wl ||
				    memcmp(&have, &want, wl) != 0 ||
				    strcasecmp(hh, wh) != 0)
					continue;
				if (cn->idle_ev != NULL)
					evtimer_del(cn->idle_ev);
				TAILQ_REMOVE(&o->conns, cn, entry);
				o->nconns--;
				TAILQ_INSERT_TAIL(&d->conns, cn, entry);
				d->nconns++;
				cn->d = d;
				deliver_hosts_unref(cn->hosts);
				cn->hosts = d->hosts;
				cn->hosts->refs++;
				cn->target = 0;
				log_debug("event=reuse relay=%s from=%s dest=%s",
				    cn->relay, o->key, d->key);
				deliver_dest_gc(o);
				return cn;
			}
		}
	return NULL;
}

/* deliver_dest_give - d's first ready job to its idle connection cn, then
 * run d anew (deliver_conn_start may release connections) */
static void
deliver_dest_give(struct ddest *d, struct dconn *cn)
{
	struct djob *j = TAILQ_FIRST(&d->jobs);

	TAILQ_REMOVE(&d->jobs, j, entry);
	d->njobs--;
	cn->job = j;
	deliver_conn_start(cn);
	deliver_dest_run(d);
}

/* deliver_dest_run - give ready jobs to idle connections, open more
 * connections within the limits, or resolve first */
static void
deliver_dest_run(struct ddest *d)
{
	struct deliver *dl = d->dl;
	const struct petrel_conf *c = env->conf;
	struct dconn *cn;
	size_t want;

	TAILQ_FOREACH(cn, &d->conns, entry) {
		if (cn->state != DCONN_IDLE)
			continue;
		if (TAILQ_EMPTY(&d->jobs))
			return;
		deliver_dest_give(d, cn);
		return;
	}
	if (d->njobs == 0)
		return;
	if (util_now_ms() < d->dead_until) {
		/* every address failed moments ago: no new connection; with
		 * none left to carry them, the jobs wait for the retry */
		if (d->nconns == 0)
			deliver_dest_fail_all(d, SMTPC_DEFERRED,
			    d->dead_reply.code, d->dead_reply.enh,
			    d->dead_reply.text, d->dead_relay);
		return;
	}
	if (d->hosts != NULL && util_now_ms() >= d->hosts->expire_ms &&
	    d->dreq == NULL) {
		deliver_hosts_unref(d->hosts);
		d->hosts = NULL;
	}
	if (d->hosts == NULL) {
		if (d->dreq == NULL)
			deliver_dest_resolve(d);
		if (d->hosts == NULL)
			return;		/* deliver_dns_done runs us again */
	}
	want = d->njobs > d->nconnecting ? d->njobs - d->nconnecting : 0;
	while (want > 0 && d->nconns < c->smtp_destination_concurrency) {
		if ((cn = deliver_conn_adopt(d)) != NULL) {
			deliver_dest_give(d, cn);
			return;
		}
		if (dl->nconns >= c->smtp_max_connections) {
			if (!d->waiting) {
				TAILQ_INSERT_TAIL(&dl->waiting, d, wentry);
				d->waiting = 1;
			}
			return;
		}
		cn = xcalloc(1, sizeof(*cn));
		cn->d = d;
		cn->hosts = d->hosts;
		cn->hosts->refs++;
		cn->state = DCONN_CONNECTING;
		TAILQ_INSERT_TAIL(&d->conns, cn, entry);
		d->nconns++;
		d->nconnecting++;
		dl->nconns++;
		want--;
		deliver_conn_start(cn);
		if (d->njobs == 0)
			break;
	}
}

/* deliver_run_waiting - a global connection slot came free */
static void
deliver_run_waiting(struct deliver *dl)
{
	struct ddest *d;

	while (dl->nconns < env->conf->smtp_max_connections &&
	    (d = TAILQ_FIRST(&dl->waiting)) != NULL) {
		TAILQ_REMOVE(&dl->waiting, d, wentry);
		d->waiting = 0;
		deliver_dest_run(d);
	}
}

/* --- connections --- */

static void deliver_conn_ready(struct smtpc_conn *, const struct smtpc_ready *,
    void *);
static void deliver_conn_done(struct smtpc_conn *, const struct smtpc_result *,
    void *);

/* deliver_conn_idle_cb - nobody needed the connection: QUIT */
static void
deliver_conn_idle_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct dconn *cn = arg;
	struct ddest *d = cn->d;

	deliver_conn_release(cn, 1);
	deliver_run_waiting(d->dl);
	deliver_dest_gc(d);
}

/* deliver_conn_release - forget cn (QUIT first when quit and usable);
 * its job, if it still has one, goes back to the destination's queue */
static void
deliver_conn_release(struct dconn *cn, int quit)
{
	struct ddest *d = cn->d;

	if (cn->job != NULL) {
		TAILQ_INSERT_HEAD(&d->jobs, cn->job, entry);
		d->njobs++;
		cn->job = NULL;
	}
	if (cn->c != NULL) {
		if (quit)
			smtpc_close(cn->c);
		else
			smtpc_free(cn->c);
	}
	if (cn->idle_ev != NULL)
		event_free(cn->idle_ev);
	if (cn->state == DCONN_CONNECTING)
		d->nconnecting--;
	TAILQ_REMOVE(&d->conns, cn, entry);
	d->nconns--;
	d->dl->nconns--;
	deliver_hosts_unref(cn->hosts);
	free(cn);
}

/* deliver_conn_connect - open cn to its current target; -1 when none is
 * left */
static int
deliver_conn_connect(struct dconn *cn)
{
	const struct petrel_conf *c = env->conf;
	struct ddest *d = cn->d;
	struct sockaddr_storage ss, src;
	struct smtpc_limits lim;
	socklen_t sslen, srclen = 0;
	const char *host;
	char ip[INET6_ADDRSTRLEN];
	int port = deliver_dest_port(d);
	int verify = strcmp(c->smtp_tls_verify, "verify") == 0;

	if (deliver_target(cn->hosts, cn->target, port, &host, &ss,
	    &sslen) == -1)
		return -1;
	util_strlcpy(cn->host, host, sizeof(cn->host));
	if (ss.ss_family == AF_INET)
		inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, ip,
		    sizeof(ip));
	else
		inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr,
		    ip, sizeof(ip));
	snprintf(cn->relay, sizeof(cn->relay), "%s[%s]:%d", host, ip, port);
	memset(&src, 0, sizeof(src));
	if (c->smtp_bind_address != NULL) {
		if (ss.ss_family == AF_INET && inet_pton(AF_INET,
		    c->smtp_bind_address,
		    &((struct sockaddr_in *)&src)->sin_addr) == 1) {
			src.ss_family = AF_INET;
			srclen = sizeof(struct sockaddr_in);
		} else if (ss.ss_family == AF_INET6 && inet_pton(AF_INET6,
		    c->smtp_bind_address,
		    &((struct sockaddr_in6 *)&src)->sin6_addr) == 1) {
			src.ss_family = AF_INET6;
			srclen = sizeof(struct sockaddr_in6);
		}
	}
	deliver_limits(&lim);
	log_debug("event=connect dest=%s relay=%s", d->key, cn->relay);
	cn->c = smtpc_connect(d->dl->base, d->dl->ssl,
	    (struct sockaddr *)&ss, sslen, srclen ? (struct sockaddr *)&src :
	    NULL, srclen, c->hostname, host,
	    verify ? SMTPC_TLS_VERIFY : SMTPC_TLS_MAY, &lim,
	    deliver_conn_ready, cn);
	return 0;
}

/* deliver_job_copy - a personalised job sends its recipient's prepared
 * copy (read from the queue once); without one, the base bytes */
static void
deliver_job_copy(struct djob *j, struct smtpc_msg *msg)
{
	struct evbuffer *buf;

	if (j->data == NULL) {
		if ((buf = evbuffer_new()) == NULL)
			fatalx("deliver: evbuffer_new failed");
		if (queue_rcpt_body_get(j->m->dl->store, j->m->qid,
		    j->rcpts[0]->idx, buf) == 0) {
			j->len = evbuffer_get_length(buf);
			j->data = xmalloc(j->len ? j->len : 1);
			evbuffer_remove(buf, j->data, j->len);
		} else
			log_warn("qid=%s rcpt=%s event=send copy=missing "
			    "action=\"sending the unpersonalised bytes\"",
			    j->m->qid, j->rcpts[0]->address);
		evbuffer_free(buf);
	}
	if (j->data != NULL) {
		msg->data = j->data;
		msg->len = j->len;
	}
}

/* deliver_conn_start - CONNECTING: connect to the current target;
 * IDLE with a job: send it */
static void
deliver_conn_start(struct dconn *cn)
{
	struct ddest *d = cn->d;
	struct djob *j = cn->job;
	struct smtpc_msg msg;

	if (cn->state == DCONN_CONNECTING) {
		if (deliver_conn_connect(cn) == -1)
			fatalx("deliver: no target for a new connection");
		return;
	}
	if (cn->idle_ev != NULL)
		event_del(cn->idle_ev);
	memset(&msg, 0, sizeof(msg));
	msg.mail_from = j->m->mail_from;
	msg.rcpts = j->addrs;
	msg.nrcpts = j->n;
	msg.data = j->m->data;
	msg.len = j->m->len;
	if (j->personal)
		deliver_job_copy(j, &msg);
	smtpc_scan_message(&msg);
	cn->state = DCONN_BUSY;
	if (smtpc_send(cn->c, &msg, deliver_conn_done, cn) == -1) {
		/* the connection went bad while idle: job back, drop it */
		log_debug("event=send dest=%s relay=%s status=unusable", d->key,
		    cn->relay);
		deliver_conn_release(cn, 0);
		deliver_run_waiting(d->dl);
		deliver_dest_run(d);
	}
}

/* deliver_conn_next_job - cn is ready and idle: next job or idle timer */
static void
deliver_conn_next_job(struct dconn *cn)
{
	struct ddest *d = cn->d;
	struct timeval tv = { DELIVER_IDLE_MS / 1000,
	    (DELIVER_IDLE_MS % 1000) * 1000 };
	struct djob *j;

	cn->state = DCONN_IDLE;
	if ((j = TAILQ_FIRST(&d->jobs)) != NULL) {
		TAILQ_REMOVE(&d->jobs, j, entry);
		d->njobs--;
		cn->job = j;
		deliver_conn_start(cn);
		return;
	}
	if (cn->idle_ev == NULL)
		cn->idle_ev = evtimer_new(d->dl->base, deliver_conn_idle_cb, cn);
	evtimer_add(cn->idle_ev, &tv);
}

static void
deliver_conn_ready(struct smtpc_conn *sc, const struct smtpc_ready *rd,
    void *arg)
{
	struct dconn *cn = arg;
	struct ddest *d = cn->d;
	char q[SMTPC_TEXT_MAX + 1];

	if (rd->status == SMTPC_OK) {
		metrics_count_outbound_tls(rd->tls);
		log_debug("event=connect dest=%s relay=%s status=ok tls=%s "
		    "conn=%s", d->key, cn->relay, rd->tls ? "yes" : "no",
		    smtpc_id(sc));
		cn->state = DCONN_IDLE;
		d->nconnecting--;
		deliver_conn_next_job(cn);
		deliver_dest_gc(d);
		return;
	}
	deliver_quote(q, sizeof(q), rd->reply.text);
	log_info("event=connect dest=%s relay=%s status=%s reply=\"%d %s %s\"%s",
	    d->key, cn->relay, smtpc_status_str(rd->status), rd->reply.code,
	    rd->reply.enh, q, rd->tls_failed ? " tls=failed" : "");
	cn->last = rd->reply;
	smtpc_free(sc);
	cn->c = NULL;
	/* next MX host or address */
	cn->target++;
	if (deliver_conn_connect(cn) == 0)
		return;
	/* every address failed: no new connection for DELIVER_DEAD_MS; if
	 * no other connection of d can carry the jobs, defer them all with
	 * the last error */
	d->dead_reply = cn->last;
	if (d->dead_reply.code < 400 || d->dead_reply.code / 100 == 5)
		d->dead_reply.code = 451;	/* a failed session defers */
	if (d->dead_reply.enh[0] != '4')
		util_strlcpy(d->dead_reply.enh, "4.4.1",
		    sizeof(d->dead_reply.enh));
	if (d->dead_reply.text[0] == '\0')
		util_strlcpy(d->dead_reply.text, "all MX hosts failed",
		    sizeof(d->dead_reply.text));
	util_strlcpy(d->dead_relay, cn->relay, sizeof(d->dead_relay));
	d->dead_until = util_now_ms() + DELIVER_DEAD_MS;
	deliver_conn_release(cn, 0);
	if (d->nconns == 0)
		deliver_dest_fail_all(d, SMTPC_DEFERRED, d->dead_reply.code,
		    d->dead_reply.enh, d->dead_reply.text, d->dead_relay);
	deliver_run_waiting(d->dl);
	deliver_dest_gc(d);
}

static void
deliver_conn_done(struct smtpc_conn *sc, const struct smtpc_result *res,
    void *arg)
{
	struct dconn *cn = arg;
	struct ddest *d = cn->d;
	struct djob *j = cn->job;

	cn->job = NULL;
	util_strlcpy(j->host, cn->host, sizeof(j->host));
	deliver_job_results(j, cn->relay, res->rcpts, res->nrcpts);
	if (res->reusable && smtpc_usable(sc)) {
		deliver_conn_next_job(cn);
	} else {
		deliver_conn_release(cn, 0);
		deliver_run_waiting(d->dl);
		deliver_dest_run(d);
	}
	deliver_dest_gc(d);
}

/* --- loading messages --- */

/* deliver_domain - the domain of an address (after the last '@'), lower
 * case, into buf */
static void
deliver_domain(const char *addr, char *buf, size_t len)
{
	const char *at = strrchr(addr, '@');

	util_strlcpy(buf, at ? at + 1 : "", len);
	util_lower(buf);
}

static void deliver_dispatch(struct dmsg *);

/* deliver_prepared - m's prepared bytes are committed: deliver them */
static void
deliver_prepared(void *arg, struct prepare_result *res)
{
	struct dmsg *m = arg;

	m->preq = NULL;
	if (res->status != 0) {
		if (res->err != NULL && strcmp(res->err, "no such message") == 0)
			log_info("qid=%s event=deleted reason=\"removed while "
			    "being prepared\"", m->qid);
		else
			log_warn("qid=%s event=prepare status=failed "
			    "reason=\"%s\" action=\"retry at the next scan\"",
			    m->qid, res->err ? res->err : "?");
		deliver_msg_free(m);
		return;
	}
	free(m->data);
	m->data = res->data;
	m->len = res->len;
	res->data = NULL;
	m->personalised = res->personalised;
	m->pending = 0;
	deliver_dispatch(m);
}

/* deliver_prepare - hand m (not yet prepared) to the prepare stage */
static void
deliver_prepare(struct dmsg *m, const json_t *rec)
{
	const char **addrs;
	unsigned *idx;
	size_t i;

	addrs = xcalloc(m->nrcpts, sizeof(*addrs));
	idx = xcalloc(m->nrcpts, sizeof(*idx));
	for (i = 0; i < m->nrcpts; i++) {
		addrs[i] = m->rcpts[i].address;
		idx[i] = m->rcpts[i].idx;
	}
	m->pending = 1;		/* kept until prepared */
	m->preq = prepare_start(m->dl->prep, m->qid, rec, m->data, m->len,
	    addrs, idx, m->nrcpts, deliver_prepared, m);
	m->data = NULL;		/* the stage owns it until the callback */
	m->len = 0;
	free(addrs);
	free(idx);
}

/* deliver_load - take qid from the queue for an attempt now */
static void
deliver_load(struct deliver *dl, const char *qid)
{
	struct evbuffer *body;
	struct dmsg *m;
	struct drcpt *r;
	struct djob *j;
	json_t *msg, *rcpts, *rc, *lr, *prep = NULL;
	const char *st, *s;
	size_t i, n = 0;
	int64_t now = util_now();
	unsigned h;

	if (deliver_msg_find(dl, qid) != NULL ||
	    dl->nmsgs >= DELIVER_INFLIGHT_MAX)
		return;
	if ((body = evbuffer_new()) == NULL)
		fatalx("deliver: evbuffer_new failed");
	if ((msg = queue_load(dl->store, qid, body)) == NULL) {
		evbuffer_free(body);
		return;
	}
	rcpts = json_object_get(msg, "recipients");
	m = xcalloc(1, sizeof(*m));
	m->dl = dl;
	util_strlcpy(m->qid, qid, sizeof(m->qid));
	m->tenant = xstrdup(json_string_value(json_object_get(msg, "tenant")) ?
	    json_string_value(json_object_get(msg, "tenant")) : "");
	m->mail_from = xstrdup(json_string_value(json_object_get(msg,
	    "mail_from")) ? json_string_value(json_object_get(msg,
	    "mail_from")) : "");
	m->received_at = json_integer_value(json_object_get(msg,
	    "received_at"));
	if ((s = json_string_value(json_object_get(msg, "envid"))) != NULL)
		m->envid = xstrdup(s);
	m->ret_full = (s = json_string_value(json_object_get(msg, "ret"))) !=
	    NULL && strcmp(s, "FULL") == 0;
	m->len = evbuffer_get_length(body);
	m->data = xmalloc(m->len ? m->len : 1);
	evbuffer_remove(body, m->data, m->len);
	evbuffer_free(body);
	m->rcpts = xcalloc(json_array_size(rcpts) + 1, sizeof(*m->rcpts));
	json_array_foreach(rcpts, i, rc) {
		st = json_string_value(json_object_get(rc, "status"));
		if (st == NULL || (strcmp(st, "queued") != 0 &&
		    strcmp(st, "deferred") != 0) ||
		    json_string_value(json_object_get(rc, "address")) == NULL)
			continue;
		r = &m->rcpts[n++];
		r->idx = (unsigned)json_integer_value(json_object_get(rc,
		    "index"));
		if (!json_is_integer(json_object_get(rc, "index")))
			r->idx = (unsigned)i;
		r->address = xstrdup(json_string_value(json_object_get(rc,
		    "address")));
		r->attempts = (int)json_integer_value(json_object_get(rc,
		    "attempts"));
		lr = json_object_get(rc, "last_reply");
		r->code = (int)json_integer_value(json_object_get(lr, "code"));
		r->text = xstrdup(json_string_value(json_object_get(lr,
		    "text")) ? json_string_value(json_object_get(lr, "text")) :
		    "no attempt made");
		if ((s = json_string_value(json_object_get(rc, "notify"))) !=
		    NULL)
			r->notify = xstrdup(s);
		if ((s = json_string_value(json_object_get(rc, "orcpt"))) !=
		    NULL)
			r->orcpt = xstrdup(s);
	}
	m->nrcpts = n;
	st = json_string_value(json_object_get(msg, "stage"));
	if (st == NULL || strcmp(st, "prepared") != 0)
		prep = json_incref(msg);	/* read by deliver_prepare */
	else
		m->personalised = json_is_true(json_object_get(msg,
		    "personalised"));
	json_decref(msg);
	h = deliver_hash(m->qid);
	m->hnext = dl->msgs[h];
	dl->msgs[h] = m;
	dl->nmsgs++;
	if (n == 0) {
		/* nothing active: a stale schedule key; let the writer
		 * recompute it */
		m->pending = 1;
		j = xcalloc(1, sizeof(*j));
		j->m = m;
		TAILQ_INSERT_TAIL(&dl->committing, j, entry);
		j->ureq = queue_update(dl->queue, m->qid, NULL, 0,
		    deliver_update_done, j);
		json_decref(prep);
		return;
	}
	log_debug("qid=%s event=attempt rcpts=%zu", m->qid, n);

	/* expired before any attempt (e.g. petreld was down): bounce */
	if (now >= m->received_at + env->conf->queue_lifetime) {
		j = xcalloc(1, sizeof(*j));
		j->m = m;
		j->n = n;
		j->rcpts = xcalloc(n, sizeof(*j->rcpts));
		j->addrs = xcalloc(n, sizeof(*j->addrs));
		for (i = 0; i < n; i++) {
			j->rcpts[i] = &m->rcpts[i];
			j->addrs[i] = m->rcpts[i].address;
		}
		util_strlcpy(j->relay, "none", sizeof(j->relay));
		m->pending = 1;
		/* each recipient with its own last error */
		deliver_job_fail(j, SMTPC_DEFERRED, 451, "4.4.7", NULL, 0);
		json_decref(prep);
		return;
	}
	if (prep != NULL) {
		deliver_prepare(m, prep);
		json_decref(prep);
		return;
	}
	deliver_dispatch(m);
}

/* deliver_suppressed - the recipients of m on its tenant's suppression
 * list get the final status "suppressed" (no attempt, no DSN), in one
 * update of their own; the others are left for their destinations */
static void
deliver_suppressed(struct dmsg *m)
{
	struct queue_rcpt_update *u;
	struct djob *j;
	struct drcpt *r;
	json_t **recs;
	const char *reason, *source;
	size_t i, n = 0;

	recs = xcalloc(m->nrcpts, sizeof(*recs));
	u = xcalloc(m->nrcpts, sizeof(*u));
	for (i = 0; i < m->nrcpts; i++) {
		r = &m->rcpts[i];
		if ((recs[n] = suppress_get(m->dl->store, m->tenant,
		    r->address)) == NULL)
			continue;
		reason = json_string_value(json_object_get(recs[n], "reason"));
		source = json_string_value(json_object_get(recs[n], "source"));
		r->suppressed = 1;
		r->status = "suppressed";
		r->code = 0;
		r->enh[0] = '\0';
		free(r->text);
		r->text = xasprintf("recipient is on the suppression list "
		    "(%s): %s", source ? source : "manual",
		    reason ? reason : "listed");
		u[n].idx = r->idx;
		u[n].status = "suppressed";
		u[n].text = r->text;
		u[n].enhanced = "";
		u[n].category = json_string_value(json_object_get(recs[n],
		    "category"));
		n++;
	}
	if (n > 0) {
		j = xcalloc(1, sizeof(*j));
		j->m = m;
		j->rcpts = xcalloc(n, sizeof(*j->rcpts));
		j->addrs = xcalloc(n, sizeof(*j->addrs));
		for (i = 0; i < m->nrcpts; i++)
			if (m->rcpts[i].suppressed) {
				j->rcpts[j->n] = &m->rcpts[i];
				j->addrs[j->n++] = m->rcpts[i].address;
			}
		util_strlcpy(j->relay, "none", sizeof(j->relay));
		m->pending++;
		TAILQ_INSERT_TAIL(&m->dl->committing, j, entry);
		j->ureq = queue_update(m->dl->queue, m->qid, u, n,
		    deliver_update_done, j);
	}
	for (i = 0; i < n; i++)
		json_decref(recs[i]);
	free(recs);
	free(u);
}

/* deliver_dispatch - m's jobs to their destinations: one transaction per
 * destination (in chunks), or per recipient for personalised copies */
static void
deliver_dispatch(struct dmsg *m)
{
	struct deliver *dl = m->dl;
	struct djob *j;
	struct ddest *d, **touched, **dests;
	char dom[DOMAIN_MAX_LEN + 1];
	size_t i, k, n = m->nrcpts, ntouched = 0;
	size_t chunk = m->personalised ? 1 : SMTPC_RCPTS_MAX;

	deliver_suppressed(m);
	touched = xcalloc(n, sizeof(*touched));

	/* group by destination (one transaction per destination, in chunks
	 * the client accepts); dests[] keeps the order of first use */
	dests = xcalloc(n, sizeof(*dests));
	for (i = 0; i < n; i++) {
		if (m->rcpts[i].suppressed)
			continue;
		deliver_domain(m->rcpts[i].address, dom, sizeof(dom));
		dests[i] = deliver_dest_get(dl, dom);
	}
	for (i = 0; i < n; i++) {
		if ((d = dests[i]) == NULL)
			continue;
		for (k = i; k < n; ) {
			j = xcalloc(1, sizeof(*j));
			j->m = m;
			j->d = d;
			j->rcpts = xcalloc(n, sizeof(*j->rcpts));
			j->addrs = xcalloc(n, sizeof(*j->addrs));
			for (; k < n && j->n < chunk; k++) {
				if (dests[k] != d)
					continue;
				dests[k] = NULL;
				j->rcpts[j->n] = &m->rcpts[k];
				j->addrs[j->n++] = m->rcpts[k].address;
			}
			if (j->n == 0) {	/* d's last chunk was full */
				free(j->rcpts);
				free(j->addrs);
				free(j);
				break;
			}
			j->personal = m->personalised;
			m->pending++;
			TAILQ_INSERT_TAIL(&d->jobs, j, entry);
			d->njobs++;
		}
		touched[ntouched++] = d;
	}
	free(dests);
	/* results only ever arrive from the event loop: m stays valid here */
	for (i = 0; i < ntouched; i++)
		deliver_dest_run(touched[i]);
	for (i = 0; i < ntouched; i++)
		deliver_dest_gc(touched[i]);
	free(touched);
}

/* deliver_scan_cb - load what the schedule says is due */
static void
deliver_scan_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct deliver *dl = arg;
	struct timeval tv = { DELIVER_SCAN_MS / 1000,
	    (DELIVER_SCAN_MS % 1000) * 1000 };
	char (*qids)[QUEUE_ID_LEN + 1];
	size_t n, i, room;

	room = dl->nmsgs < DELIVER_INFLIGHT_MAX ?
	    DELIVER_INFLIGHT_MAX - dl->nmsgs : 0;
	if (room > DELIVER_SCAN_BATCH)
		room = DELIVER_SCAN_BATCH;
	if (room > 0) {
		qids = xcalloc(room, sizeof(*qids));
		n = queue_scan_due(dl->store, util_now(), room, deliver_skip,
		    dl, qids);
		for (i = 0; i < n; i++)
			deliver_load(dl, qids[i]);
		free(qids);
	}
	evtimer_add(dl->scan_ev, &tv);
}

/* deliver_metrics_conns - gauge petrel_smtp_outbound_connections */
static double
deliver_metrics_conns(void *arg)
{
	return ((struct deliver *)arg)->nconns;
}

static void
deliver_notify(void *arg, const char *qid)
{
	deliver_kick(arg, qid);
}

void
deliver_kick(struct deliver *dl, const char *qid)
{
	deliver_load(dl, qid);
}

size_t
deliver_inflight(const struct deliver *dl)
{
	return dl->nmsgs;
}

struct deliver *
deliver_new(struct event_base *base, struct queue *q, struct store *st,
    struct dns *dns, char **err_r)
{
	struct deliver *dl;
	struct timeval tv = { 0, 0 };
	const char *err = NULL;
	SSL_CTX *ssl;

	ssl = smtpc_tls_ctx_new(env->conf->smtp_tls_ca_file, &err);
	if (ssl == NULL) {
		*err_r = xasprintf("outbound TLS: %s", err ? err : "failed");
		return NULL;
	}
	dl = xcalloc(1, sizeof(*dl));
	dl->base = base;
	dl->queue = q;
	dl->store = st;
	dl->dns = dns;
	dl->ssl = ssl;
	if ((dl->prep = prepare_new(st, q, err_r)) == NULL) {
		SSL_CTX_free(ssl);
		free(dl);
		return NULL;
	}
	TAILQ_INIT(&dl->waiting);
	TAILQ_INIT(&dl->committing);
	if ((dl->scan_ev = evtimer_new(base, deliver_scan_cb, dl)) == NULL)
		fatalx("deliver_new: evtimer_new failed");
	evtimer_add(dl->scan_ev, &tv);
	queue_set_notify(q, deliver_notify, dl);
	metrics_register_gauge("petrel_smtp_outbound_connections",
	    "Open outbound SMTP connections.", deliver_metrics_conns, dl);
	return dl;
}

void
deliver_free(struct deliver *dl)
{
	struct ddest *d;
	struct dconn *cn;
	struct djob *j;
	struct dmsg *m;
	size_t i;

	if (dl == NULL)
		return;
	metrics_register_gauge("petrel_smtp_outbound_connections",
	    "Open outbound SMTP connections.", NULL, NULL);
	queue_set_notify(dl->queue, NULL, NULL);
	event_free(dl->scan_ev);
	/* results on their way to LMDB: committed, but nobody listens */
	while ((j = TAILQ_FIRST(&dl->committing)) != NULL) {
		TAILQ_REMOVE(&dl->committing, j, entry);
		queue_cancel(j->ureq);
		free(j->rcpts);
		free(j->addrs);
		free(j->data);
		free(j);
	}
	/* messages being prepared: their callbacks never run */
	prepare_free(dl->prep);
	for (i = 0; i < DELIVER_HASH_SIZE; i++) {
		while ((d = dl->dests[i]) != NULL) {
			dl->dests[i] = d->hnext;
			if (d->dreq != NULL)
				dns_cancel(d->dreq);
			while ((cn = TAILQ_FIRST(&d->conns)) != NULL) {
				if (cn->job != NULL) {
					free(cn->job->rcpts);
					free(cn->job->addrs);
					free(cn->job->data);
					free(cn->job);
					cn->job = NULL;
				}
				if (cn->c != NULL)
					smtpc_free(cn->c);
				if (cn->idle_ev != NULL)
					event_free(cn->idle_ev);
				TAILQ_REMOVE(&d->conns, cn, entry);
				deliver_hosts_unref(cn->hosts);
				free(cn);
			}
			while ((j = TAILQ_FIRST(&d->jobs)) != NULL) {
				TAILQ_REMOVE(&d->jobs, j, entry);
				free(j->rcpts);
				free(j->addrs);
				free(j->data);
				free(j);
			}
			deliver_hosts_unref(d->hosts);
			free(d->key);
			free(d->name);
			free(d);
		}
	}
	for (i = 0; i < DELIVER_HASH_SIZE; i++)
		while ((m = dl->msgs[i]) != NULL)
			deliver_msg_free(m);
	SSL_CTX_free(dl->ssl);
	free(dl);
}
