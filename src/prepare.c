/*
 * prepare.c - the prepare stage (see prepare.h): authentication results,
 * personalisation, DKIM signing and ARC sealing of a queued message on a
 * worker thread, then one queue-writer transaction that stores the
 * prepared bytes and sets the stage "prepared", then the caller's
 * callback on the main loop.
 *
 * A job lives on the main loop's list p->jobs from prepare_start until
 * its callback (or prepare_cancel/prepare_free). It is in one of two
 * places: on a worker thread (worker_run; its done callback comes back
 * to the loop even when cancelled, and frees it then) or in the store
 * writer (queue_set_prepared; queue_cancel stops its callback, the job is
 * freed at once).
 */
#include "autoconf.h"

#include <sys/queue.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <jansson.h>
#include <lmdb.h>

#include "arc.h"
#include "authres.h"
#include "config.h"
#include "dkim.h"
#include "domain.h"
#include "limits.h"
#include "log.h"
#include "petrel.h"
#include "prepare.h"
#include "queue.h"
#include "store.h"
#include "tracking.h"
#include "unsub.h"
#include "util.h"
#include "worker.h"

/* configuration snapshot for worker threads, refcounted on the main loop */
struct prepare_snap {
	int			 refs;
	const struct petrel_conf *src;	/* env->conf it was taken from */
	struct petrel_conf	 conf;
};

enum prepare_where { PREP_WORKER, PREP_WRITER };

struct prepare_req {
	TAILQ_ENTRY(prepare_req) entry;
	struct prepare		*p;		/* main loop only */
	struct store		*store;		/* for the worker */
	enum prepare_where	 where;
	int			 cancelled;
	struct prepare_snap	*snap;
	const struct arc_key	*arc;		/* NULL: no sealing */
	char			 qid[QUEUE_ID_LEN + 1];
	char			*tenant;
	char			*mail_from;
	char			*client_ip;	/* NULL: generated here */
	char			*helo;
	int			 local;		/* a DSN: no ARC */
	char			*message_id;
	int			 no_tracking;	/* userEngagementTrackingDisabled */
	struct tracking_msg	*trk;		/* set on the worker */
	unsigned char		*data;		/* as queued */
	size_t			 len;
	char			**rcpts;
	unsigned		*idx;
	size_t			 nrcpts;
	/* results, set on the worker */
	struct evbuffer		*body;		/* NULL when personalised */
	struct evbuffer		**copies;	/* one per rcpt, or NULL */
	size_t			 ncopies;
	char			*dkim_d;	/* signing domain, NULL: none */
	char			*why;		/* why unsigned / unsealed */
	int			 cv;		/* -1: not sealed */
	uint64_t		 ms;
	struct queue_req	*qreq;
	prepare_done_cb		 cb;
	void			*arg;
};
TAILQ_HEAD(prepare_reqs, prepare_req);

struct prepare {
	struct store		*store;
	struct queue		*queue;
	struct arc_key		*arc;
	struct prepare_snap	*snap;
	struct prepare_reqs	 jobs;
	unsigned		 nworking;	/* jobs on workers, even
						 * cancelled ones */
};

/* a key that a cancelled job may still use on a worker when prepare_free
 * runs: kept (reachable) rather than freed under it */
static struct arc_key *prepare_arc_orphan;

#define PREPARE_CACHE_SLOTS	16	/* domain records per worker thread */

/* a parsed domain record, reused while its stored bytes are unchanged */
struct prepare_cached {
	char			 domain[DOMAIN_MAX_LEN + 1];
	void			*raw;
	size_t			 rawlen;
	json_t			*rec;
};

/* thread-local state of a worker thread: resolver, domain records */
struct prepare_tls {
	struct authres_dns	*dns;
	char			*resolver;
	struct prepare_cached	 cache[PREPARE_CACHE_SLOTS];
};

static pthread_key_t prepare_tls_key;
static pthread_once_t prepare_tls_once = PTHREAD_ONCE_INIT;

static const char *prepare_cv_names[] = { "none", "pass", "fail" };

static void
prepare_tls_free(void *arg)
{
	struct prepare_tls *t = arg;
	size_t i;

	if (t == NULL)
		return;
	if (t->dns != NULL)
		authres_dns_free(t->dns);
	free(t->resolver);
	for (i = 0; i < PREPARE_CACHE_SLOTS; i++) {
		free(t->cache[i].raw);
		if (t->cache[i].rec != NULL)
			json_decref(t->cache[i].rec);
	}
	free(t);
}

static void
prepare_tls_init(void)
{
	if (pthread_key_create(&prepare_tls_key, prepare_tls_free) != 0)
		fatalx("prepare: pthread_key_create failed");
}

/* prepare_tls - this thread's state, made on first use */
static struct prepare_tls *
prepare_tls(void)
{
	struct prepare_tls *t;

	pthread_once(&prepare_tls_once, prepare_tls_init);
	if ((t = pthread_getspecific(prepare_tls_key)) == NULL) {
		t = xcalloc(1, sizeof(*t));
		if (pthread_setspecific(prepare_tls_key, t) != 0)
			fatalx("prepare: pthread_setspecific failed");
	}
	return t;
}

/* prepare_dns - this thread's resolver context for resolver (made on
 * first use, remade when the setting changed); NULL + *err_r */
static struct authres_dns *
prepare_dns(const char *resolver, char **err_r)
{
	struct prepare_tls *t = prepare_tls();
	const char *r = resolver ? resolver : "";

	if (t->dns != NULL && strcmp(t->resolver, r) == 0)
		return t->dns;
	if (t->dns != NULL)
		authres_dns_free(t->dns);
	free(t->resolver);
	t->resolver = NULL;
	if ((t->dns = authres_dns_new(r, err_r)) == NULL)
		return NULL;
	t->resolver = xstrdup(r);
	return t->dns;
}

/* prepare_domain_get - store_domain_get() with a per-thread cache: the
 * record is parsed again only when its stored bytes changed (a record is
 * several KiB of JSON with PEM keys: parsing it costs a good part of an
 * Ed25519 signature). A new reference, or NULL. */
static json_t *
prepare_domain_get(struct store *st, const char *domain)
{
	struct prepare_tls *t = prepare_tls();
	struct prepare_cached *c;
	char key[DOMAIN_MAX_LEN + 1];
	const char *why;
	MDB_txn *txn;
	MDB_val k, v;
	json_t *rec = NULL;
	uint32_t h = 2166136261u;
	size_t i;

	if (domain_normalize(domain, key, sizeof(key), &why) == -1)
		return NULL;
	for (i = 0; key[i] != '\0'; i++)
		h = (h ^ (unsigned char)key[i]) * 16777619u;
	c = &t->cache[h % PREPARE_CACHE_SLOTS];
	if (mdb_txn_begin(store_env(st), NULL, MDB_RDONLY, &txn) != 0)
		return NULL;
	k.mv_size = strlen(key);
	k.mv_data = key;
	if (mdb_get(txn, store_dbi(st, DB_DOMAINS), &k, &v) == 0) {
		if (c->rec != NULL && strcmp(c->domain, key) == 0 &&
		    c->rawlen == v.mv_size &&
		    memcmp(c->raw, v.mv_data, v.mv_size) == 0)
			rec = json_incref(c->rec);
		else if ((rec = json_loadb(v.mv_data, v.mv_size, 0, NULL)) !=
		    NULL) {
			free(c->raw);
			if (c->rec != NULL)
				json_decref(c->rec);
			util_strlcpy(c->domain, key, sizeof(c->domain));
			c->raw = xmalloc(v.mv_size ? v.mv_size : 1);
			memcpy(c->raw, v.mv_data, v.mv_size);
			c->rawlen = v.mv_size;
			c->rec = json_incref(rec);
		}
	}
	mdb_txn_abort(txn);
	return rec;
}

/* --- configuration snapshot (main loop) --- */

static void
prepare_snap_unref(struct prepare_snap *s)
{
	if (s == NULL || --s->refs > 0)
		return;
	config_free(&s->conf);
	free(s);
}

/* prepare_snap_get - a reference to a snapshot of the running
 * configuration, re-read from its file after a SIGHUP swapped env->conf */
static struct prepare_snap *
prepare_snap_get(struct prepare *p)
{
	struct prepare_snap *s;
	char *err = NULL;

	if (p->snap == NULL || p->snap->src != env->conf) {
		s = xcalloc(1, sizeof(*s));
		config_init(&s->conf);
		if (env->conf->path == NULL || config_load(env->conf->path,
		    &s->conf, &err) == -1) {
			log_warn("event=prepare conf=%s status=error "
			    "reason=\"%s\" action=\"keeping the previous "
			    "snapshot\"", env->conf->path ? env->conf->path :
			    "-", err ? err : "no path");
			free(err);
			config_free(&s->conf);
			free(s);
			if (p->snap == NULL)
				fatalx("prepare: no configuration snapshot");
			p->snap->src = env->conf;
		} else {
			s->refs = 1;
			s->src = env->conf;
			prepare_snap_unref(p->snap);
			p->snap = s;
		}
	}
	p->snap->refs++;
	return p->snap;
}

/* --- the worker side --- */

int
prepare_needs_copies(const json_t *rec)
{
	if (rec == NULL)
		return 0;
	if (json_is_true(json_object_get(rec, "unsubscribe")))
		return 1;
	return tracking_domain(rec) != 0;
}

/* prepare_copies - per-recipient copies for j's message: the domain
 * asks for List-Unsubscribe, or for tracking the message allows */
static int
prepare_copies(const struct prepare_req *j, const json_t *rec)
{
	if (json_is_true(json_object_get(rec, "unsubscribe")))
		return 1;
	return !j->no_tracking && tracking_domain(rec) != 0;
}

int
prepare_personalise(const struct prepare_ctx *ctx, const char *rcpt,
    struct evbuffer *msg)
{
	char *h;
	int rc = 0;

	if (ctx->domain_rec == NULL)
		return 0;
	h = unsub_headers(ctx->store, ctx->conf, ctx->domain_rec, ctx->tenant,
	    rcpt, ctx->qid);
	if (h != NULL && evbuffer_prepend(msg, h, strlen(h)) != 0)
		rc = -1;
	free(h);
	/* tracking rewrites HTML bodies: after the header fields, before
	 * DKIM signing */
	if (ctx->trk != NULL && tracking_personalise(ctx->trk, ctx->rcpt_idx,
	    rcpt, msg) == -1)
		rc = -1;
	return rc;
}

/* prepare_signing_rec - the domain record that signs j's message: the
 * header From domain's, if it belongs to the tenant; for a DSN from
 * MAILER-DAEMON@hostname, hostname's */
static json_t *
prepare_signing_rec(struct prepare_req *j, const char **why_r)
{
	struct dkim_msg m;
	const char *err = NULL, *owner;
	char *dom;
	json_t *rec;

	if (dkim_msg_parse((const char *)j->data, j->len, &m, &err) == -1) {
		*why_r = err;
		return NULL;
	}
	dom = dkim_from_domain(&m);
	dkim_msg_clear(&m);
	if (dom == NULL) {
		*why_r = "no single From domain";
		return NULL;
	}
	rec = prepare_domain_get(j->store, dom);
	owner = json_string_value(json_object_get(rec, "tenant"));
	if (rec != NULL && owner != NULL && strcmp(owner, j->tenant) == 0) {
		free(dom);
		return rec;
	}
	if (rec != NULL && j->local && j->snap->conf.hostname != NULL &&
	    strcasecmp(dom, j->snap->conf.hostname) == 0) {
		free(dom);
		return rec;
	}
	*why_r = rec == NULL ? "no domain record for the From domain" :
	    "From domain belongs to another tenant";
	if (rec != NULL)
		json_decref(rec);
	free(dom);
	return NULL;
}

/* prepare_sign_seal - DKIM-sign (rec) and ARC-seal (j->arc) buf in place */
static void
prepare_sign_seal(struct prepare_req *j, const json_t *rec, struct evbuffer *buf,
    const char *authres, struct authres_dns *dns)
{
	const char *msg;
	char *h = NULL, *err = NULL;
	size_t len;
	int cv;

	if (rec != NULL) {
		len = evbuffer_get_length(buf);
		msg = (const char *)evbuffer_pullup(buf, -1);
		if (dkim_sign_message(rec, msg, len, &h, &err) == 0) {
			evbuffer_prepend(buf, h, strlen(h));
			if (j->dkim_d == NULL)
				j->dkim_d = xstrdup(json_string_value(
				    json_object_get(rec, "domain")));
		} else if (j->why == NULL) {
			j->why = xasprintf("dkim: %s", err);
		}
		free(h);
		free(err);
		h = err = NULL;
	}
	if (j->arc == NULL || j->local)
		return;
	if (dns == NULL || authres == NULL) {
		if (j->why == NULL)
			j->why = xstrdup("arc: no authentication results");
		return;
	}
	len = evbuffer_get_length(buf);
	msg = (const char *)evbuffer_pullup(buf, -1);
	if (arc_seal_message(j->arc, msg, len, authres,
	    j->snap->conf.hostname, authres_dns_txt, dns, &h, &cv, &err) == 0) {
		evbuffer_prepend(buf, h, strlen(h));
		j->cv = cv;
	} else if (j->why == NULL)
		j->why = xasprintf("arc: %s", err);
	free(h);
	free(err);
}

/* prepare_work - the whole stage for one message, on a worker thread */
static void
prepare_work(void *arg)
{
	struct prepare_req *j = arg;
	struct authres_input in;
	struct authres_dns *dns = NULL;
	struct prepare_ctx ctx;
	const char *why = NULL;
	char *authres = NULL, *err = NULL;
	json_t *rec;
	uint64_t t0 = util_now_ms();
	size_t i;

	if (j->cancelled)
		return;
	rec = prepare_signing_rec(j, &why);
	if (rec == NULL)
		j->why = xasprintf("unsigned: %s", why);
	if (j->arc != NULL && !j->local) {
		if ((dns = prepare_dns(j->snap->conf.resolver, &err)) == NULL) {
			log_warn("qid=%s event=prepare resolver=error "
			    "reason=\"%s\"", j->qid, err);
			free(err);
			err = NULL;
		} else {
			memset(&in, 0, sizeof(in));
			in.client_ip = j->client_ip;
			in.helo = j->helo;
			in.mail_from = j->mail_from;
			in.msg = (const char *)j->data;
			in.len = j->len;
			if (authres_evaluate(&in, dns, &authres, &err) == -1) {
				log_warn("qid=%s event=prepare authres=error "
				    "reason=\"%s\"", j->qid, err);
				free(err);
				err = NULL;
			}
		}
	}
	if (rec != NULL && j->nrcpts > 0 && prepare_copies(j, rec)) {
		memset(&ctx, 0, sizeof(ctx));
		ctx.store = j->store;
		ctx.conf = &j->snap->conf;
		ctx.qid = j->qid;
		ctx.tenant = j->tenant;
		ctx.domain_rec = rec;
		j->trk = tracking_msg_new(j->store, &j->snap->conf, rec, j->qid,
		    j->tenant, j->message_id, j->no_tracking);
		ctx.trk = j->trk;
		j->copies = xcalloc(j->nrcpts, sizeof(*j->copies));
		for (i = 0; i < j->nrcpts; i++) {
			if ((j->copies[i] = evbuffer_new()) == NULL ||
			    evbuffer_add(j->copies[i], j->data, j->len) != 0)
				fatalx("prepare: evbuffer failed");
			j->ncopies++;
			ctx.rcpt_idx = j->idx[i];
			if (prepare_personalise(&ctx, j->rcpts[i],
			    j->copies[i]) == -1)
				log_warn("qid=%s event=prepare rcpt=%s "
				    "personalise=failed", j->qid, j->rcpts[i]);
			prepare_sign_seal(j, rec, j->copies[i], authres, dns);
		}
	} else {
		if ((j->body = evbuffer_new()) == NULL ||
		    evbuffer_add(j->body, j->data, j->len) != 0)
			fatalx("prepare: evbuffer failed");
		prepare_sign_seal(j, rec, j->body, authres, dns);
	}
	free(authres);
	if (rec != NULL)
		json_decref(rec);
	j->ms = util_now_ms() - t0;
}

/* --- main loop --- */

static void
prepare_req_free(struct prepare_req *j)
{
	size_t i;

	prepare_snap_unref(j->snap);
	free(j->tenant);
	free(j->mail_from);
	free(j->client_ip);
	free(j->helo);
	free(j->message_id);
	tracking_msg_free(j->trk);
	free(j->data);
	for (i = 0; i < j->nrcpts; i++)
		free(j->rcpts[i]);
	free(j->rcpts);
	free(j->idx);
	if (j->body != NULL)
		evbuffer_free(j->body);
	for (i = 0; i < j->ncopies; i++)
		evbuffer_free(j->copies[i]);
	free(j->copies);
	free(j->dkim_d);
	free(j->why);
	free(j);
}

/* prepare_committed - the writer's answer: hand the result over */
static void
prepare_committed(void *arg, int status, const char *qid, const char *err)
{
	struct prepare_req *j = arg;
	struct prepare_result res;

	TAILQ_REMOVE(&j->p->jobs, j, entry);
	memset(&res, 0, sizeof(res));
	res.status = status;
	res.err = err;
	res.personalised = j->ncopies > 0;
	if (status == 0) {
		res.data = j->data;
		res.len = j->len;
		j->data = NULL;
	}
	j->cb(j->arg, &res);
	free(res.data);
	prepare_req_free(j);
}

/* prepare_worked - back from the worker: log, store through the writer */
static void
prepare_worked(void *arg)
{
	struct prepare_req *j = arg;
	char cv[16];

	if (j->cancelled) {
		prepare_req_free(j);
		return;
	}
	j->p->nworking--;
	if (j->cv >= 0)
		snprintf(cv, sizeof(cv), "%s", prepare_cv_names[j->cv]);
	log_info("qid=%s tenant=%s event=prepare dkim=%s arc=%s copies=%zu "
	    "ms=%llu%s%s%s", j->qid, j->tenant, j->dkim_d ? j->dkim_d : "none",
	    j->cv >= 0 ? cv : "none", j->ncopies, (unsigned long long)j->ms,
	    j->why ? " note=\"" : "", j->why ? j->why : "",
	    j->why ? "\"" : "");
	if (j->body != NULL) {
		/* what is sent from now on: the prepared bytes */
		free(j->data);
		j->len = evbuffer_get_length(j->body);
		j->data = xmalloc(j->len ? j->len : 1);
		evbuffer_copyout(j->body, j->data, j->len);
	}
	j->where = PREP_WRITER;
	/* the link list first: committed with, or before, the copies */
	tracking_msg_commit(j->trk, j->p->queue);
	j->qreq = queue_set_prepared(j->p->queue, j->qid, j->body, j->copies,
	    j->idx, j->ncopies, prepare_committed, j);
}

struct prepare_req *
prepare_start(struct prepare *p, const char *qid, const json_t *rec,
    unsigned char *data, size_t len, const char *const *rcpts,
    const unsigned *idx, size_t n, prepare_done_cb cb, void *arg)
{
	struct prepare_req *j = xcalloc(1, sizeof(*j));
	const json_t *client = json_object_get(rec, "client");
	const char *s;
	size_t i;

	j->p = p;
	j->store = p->store;
	j->snap = prepare_snap_get(p);
	j->arc = p->arc;
	j->cv = -1;
	util_strlcpy(j->qid, qid, sizeof(j->qid));
	s = json_string_value(json_object_get(rec, "tenant"));
	j->tenant = xstrdup(s ? s : "");
	s = json_string_value(json_object_get(rec, "mail_from"));
	j->mail_from = xstrdup(s ? s : "");
	if ((s = json_string_value(json_object_get(client, "ip"))) != NULL)
		j->client_ip = xstrdup(s);
	if ((s = json_string_value(json_object_get(client, "helo"))) != NULL)
		j->helo = xstrdup(s);
	j->local = json_is_true(json_object_get(client, "dsn")) ||
	    j->client_ip == NULL;
	s = json_string_value(json_object_get(rec, "message_id"));
	j->message_id = xstrdup(s ? s : "");
	j->no_tracking = json_is_true(json_object_get(client,
	    "tracking_disabled"));
	j->data = data;
	j->len = len;
	j->rcpts = xcalloc(n ? n : 1, sizeof(*j->rcpts));
	j->idx = xcalloc(n ? n : 1, sizeof(*j->idx));
	for (i = 0; i < n; i++) {
		j->rcpts[i] = xstrdup(rcpts[i]);
		j->idx[i] = idx[i];
	}
	j->nrcpts = n;
	j->cb = cb;
	j->arg = arg;
	j->where = PREP_WORKER;
	TAILQ_INSERT_TAIL(&p->jobs, j, entry);
	p->nworking++;
	worker_run_bulk(prepare_work, j, prepare_worked);
	return j;
}

void
prepare_cancel(struct prepare_req *j)
{
	TAILQ_REMOVE(&j->p->jobs, j, entry);
	if (j->where == PREP_WRITER) {
		queue_cancel(j->qreq);
		prepare_req_free(j);
		return;
	}
	/* on a worker: prepare_worked frees it */
	j->cancelled = 1;
}

struct prepare *
prepare_new(struct store *st, struct queue *q, char **err_r)
{
	const struct petrel_conf *c = env->conf;
	struct prepare *p;
	char *err = NULL;

	p = xcalloc(1, sizeof(*p));
	p->store = st;
	p->queue = q;
	TAILQ_INIT(&p->jobs);
	if (c->arc_domain != NULL && c->arc_selector != NULL &&
	    c->arc_key_file != NULL) {
		if (arc_key_load(c->arc_domain, c->arc_selector,
		    c->arc_key_file, &p->arc, &err) == -1) {
			*err_r = xasprintf("ARC key %s: %s", c->arc_key_file,
			    err ? err : "cannot load");
			free(err);
			free(p);
			return NULL;
		}
		log_info("event=prepare arc=on d=%s s=%s", c->arc_domain,
		    c->arc_selector);
	}
	prepare_snap_unref(prepare_snap_get(p));	/* first snapshot */
	return p;
}

void
prepare_free(struct prepare *p)
{
	struct prepare_req *j;

	if (p == NULL)
		return;
	while ((j = TAILQ_FIRST(&p->jobs)) != NULL)
		prepare_cancel(j);
	prepare_snap_unref(p->snap);
	if (p->nworking == 0)
		arc_key_free(p->arc);
	else if (p->arc != NULL) {
		/* a cancelled job may be sealing with it right now */
		arc_key_free(prepare_arc_orphan);
		prepare_arc_orphan = p->arc;
	}
	free(p);
}
