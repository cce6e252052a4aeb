/*
 * verify.c - domain verification through DNS (see verify.h for the rules).
 * A run copies the records of one domain record, asks dns.c for the TXT
 * records of every distinct name, checks each record against what was
 * found (SPF with libspf2 over a private libunbound context: libspf2's DNS
 * is synchronous, so petreld runs that stage on a worker thread), and
 * stores the outcome with a compare-and-update in one short LMDB write
 * transaction. petrelctl runs the stages back to back on a private loop;
 * petreld runs them from a timer (verify_daemon_*).
 */
#include "autoconf.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <event2/event.h>
#include <jansson.h>
#include <lmdb.h>
#include <unbound.h>

#include <spf2/spf.h>
#include <spf2/spf_dns.h>

#include "config.h"
#include "dns.h"
#include "domain.h"
#include "limits.h"
#include "log.h"
#include "store.h"
#include "util.h"
#include "verify.h"
#include "worker.h"

enum verify_verdict {
	V_UNCHECKED = 0,
	V_OK,
	V_MISSING,
	V_WRONG,
	V_TEMPFAIL
};

static const char *verdict_names[] = {
	"UNCHECKED", "OK", "MISSING", "WRONG", "TEMPFAIL"
};

/* one distinct name to look up, with what was found there */
struct verify_name {
	struct verify_run	*run;
	char			*name;
	struct dns_req		*req;
	int			 status;	/* enum dns_status */
	char			*error;
	size_t			 ntxt;
	char			**txt;
};

/* one record to check */
struct verify_check {
	char		*purpose, *name, *value;
	char		*selector;	/* dkim: the key's selector */
	char		*key_state;	/* dkim: active | pending */
	char		*key_type;	/* dkim: rsa | ed25519 */
	char		*key_public;	/* dkim: base64 p= */
	size_t		 name_idx;
	int		 verdict;
	char		*detail;	/* why, unless OK */
};

struct verify_run {
	char			*domain;
	char			*token;
	/* configuration copied at the start (SIGHUP may free conf) */
	char			*spf_include;
	char			*bind_address;
	char			*hostname;
	char			*resolver_addr;
	int			 resolver_port;
	long			 queue_lifetime;
	struct verify_check	*checks;
	size_t			 nchecks;
	struct verify_name	*names;
	size_t			 nnames, waiting;
	verify_cb		 cb;
	void			*cb_arg;
	/* outcome (verify_run_commit) */
	int			 committed;
	int			 conclusive;
	char			*old_status, *new_status;
	char			*reason;
	char			*promoted, *retired;
};

/* ---------------------------------------------------------------- runs */

/* verify_jstr - string member or NULL */
static const char *
verify_jstr(const json_t *o, const char *k)
{
	return json_string_value(json_object_get(o, k));
}

static char *
verify_dup(const char *s)
{
	return s != NULL ? xstrdup(s) : NULL;
}

/* verify_name_index - index of name in run->names, added when new */
static size_t
verify_name_index(struct verify_run *run, const char *name)
{
	size_t i;

	for (i = 0; i < run->nnames; i++)
		if (strcasecmp(run->names[i].name, name) == 0)
			return i;
	run->names = xrealloc(run->names, (run->nnames + 1) *
	    sizeof(*run->names));
	memset(&run->names[run->nnames], 0, sizeof(*run->names));
	run->names[run->nnames].run = run;
	run->names[run->nnames].name = xstrdup(name);
	run->names[run->nnames].status = DNS_TEMPFAIL;
	return run->nnames++;
}

/* verify_key_of - the key with selector sel in rec, or NULL */
static const json_t *
verify_key_of(const json_t *rec, const char *sel)
{
	const json_t *k;
	size_t i;

	json_array_foreach(json_object_get(rec, "keys"), i, k) {
		const char *s = verify_jstr(k, "selector");

		if (s != NULL && strcmp(s, sel) == 0)
			return k;
	}
	return NULL;
}

struct verify_run *
verify_run_new(const struct petrel_conf *conf, const json_t *rec,
    const char **err_r)
{
	const char *d = verify_jstr(rec, "domain");
	const char *kind = verify_jstr(rec, "kind");
	struct verify_run *run;
	struct verify_check *c;
	const json_t *r, *key;
	char *suffix;
	size_t i, slen;

	if (d == NULL || !json_is_array(json_object_get(rec, "records"))) {
		*err_r = "malformed domain record";
		return NULL;
	}
	if (kind != NULL && strcmp(kind, "managed") == 0) {
		*err_r = "managed domain: verified at once, nothing to look up";
		return NULL;
	}
	run = xcalloc(1, sizeof(*run));
	run->domain = xstrdup(d);
	run->token = verify_dup(verify_jstr(rec, "token"));
	run->queue_lifetime = conf->queue_lifetime;
	run->spf_include = verify_dup(conf->spf_include);
	run->bind_address = verify_dup(conf->smtp_bind_address);
	run->hostname = verify_dup(conf->hostname);
	run->resolver_addr = verify_dup(conf->resolver_addr);
	run->resolver_port = conf->resolver_port > 0 ? conf->resolver_port : 53;
	run->old_status = verify_dup(verify_jstr(rec, "status"));
	run->checks = xcalloc(json_array_size(json_object_get(rec, "records")) +
	    1, sizeof(*run->checks));
	suffix = xasprintf("._domainkey.%s", d);
	slen = strlen(suffix);
	json_array_foreach(json_object_get(rec, "records"), i, r) {
		const char *p = verify_jstr(r, "purpose");
		const char *n = verify_jstr(r, "name");
		const char *v = verify_jstr(r, "value");

		if (p == NULL || n == NULL || v == NULL)
			continue;
		c = &run->checks[run->nchecks];
		if (strcmp(p, "dkim") == 0) {
			size_t nlen = strlen(n);
			char *sel;

			if (nlen <= slen || strcasecmp(n + nlen - slen,
			    suffix) != 0)
				continue;
			sel = xstrndup(n, nlen - slen);
			if ((key = verify_key_of(rec, sel)) == NULL) {
				free(sel);
				continue;
			}
			c->selector = sel;
			c->key_state = verify_dup(verify_jstr(key, "state"));
			if (c->key_state == NULL)
				c->key_state = xstrdup("active");
			c->key_type = xstrdup(strncmp(verify_jstr(key, "alg") ?
			    verify_jstr(key, "alg") : "", "ed25519", 7) == 0 ?
			    "ed25519" : "rsa");
			c->key_public = verify_dup(verify_jstr(key, "public"));
		} else if (strcmp(p, "ownership") != 0 &&
		    strcmp(p, "spf") != 0 && strcmp(p, "dmarc") != 0)
			continue;
		c->purpose = xstrdup(p);
		c->name = xstrdup(n);
		c->value = xstrdup(v);
		c->name_idx = verify_name_index(run, n);
		run->nchecks++;
	}
	free(suffix);
	return run;
}

void
verify_run_free(struct verify_run *run)
{
	size_t i, j;

	if (run == NULL)
		return;
	verify_run_cancel(run);
	for (i = 0; i < run->nchecks; i++) {
		struct verify_check *c = &run->checks[i];

		free(c->purpose);
		free(c->name);
		free(c->value);
		free(c->selector);
		free(c->key_state);
		free(c->key_type);
		free(c->key_public);
		free(c->detail);
	}
	free(run->checks);
	for (i = 0; i < run->nnames; i++) {
		for (j = 0; j < run->names[i].ntxt; j++)
			free(run->names[i].txt[j]);
		free(run->names[i].txt);
		free(run->names[i].name);
		free(run->names[i].error);
	}
	free(run->names);
	free(run->domain);
	free(run->token);
	free(run->spf_include);
	free(run->bind_address);
	free(run->hostname);
	free(run->resolver_addr);
	free(run->old_status);
	free(run->new_status);
	free(run->reason);
	free(run->promoted);
	free(run->retired);
	free(run);
}

const char *
verify_run_domain(const struct verify_run *run)
{
	return run->domain;
}

const char *
verify_run_status(const struct verify_run *run)
{
	return run->new_status != NULL ? run->new_status :
	    run->old_status != NULL ? run->old_status : "pending";
}

/* ------------------------------------------------------------- lookups */

/* verify_txt_cb - one name answered: keep a copy of its TXT records */
static void
verify_txt_cb(const struct dns_txt_result *res, void *arg)
{
	struct verify_name *vn = arg;
	struct verify_run *run = vn->run;
	size_t i;

	vn->req = NULL;
	vn->status = res->status;
	free(vn->error);
	vn->error = res->error != NULL ? xstrdup(res->error) : NULL;
	if (res->status == DNS_OK && res->ntxt > 0) {
		vn->txt = xcalloc(res->ntxt, sizeof(*vn->txt));
		for (i = 0; i < res->ntxt; i++)
			vn->txt[i] = xstrndup(res->txt[i], res->txt_len[i]);
		vn->ntxt = res->ntxt;
	}
	log_debug("event=domain_lookup domain=%s name=%s status=%s txt=%zu",
	    run->domain, vn->name, dns_status_str(res->status), vn->ntxt);
	if (--run->waiting == 0 && run->cb != NULL)
		run->cb(run, run->cb_arg);
}

void
verify_run_start(struct verify_run *run, struct dns *dns, verify_cb cb,
    void *arg)
{
	size_t i;

	run->cb = cb;
	run->cb_arg = arg;
	run->waiting = run->nnames;
	for (i = 0; i < run->nnames; i++)
		run->names[i].req = dns_txt(dns, run->names[i].name,
		    verify_txt_cb, &run->names[i]);
	/* no names: finish on the loop all the same */
	if (run->nnames == 0 && cb != NULL)
		cb(run, arg);
}

void
verify_run_cancel(struct verify_run *run)
{
	size_t i;

	for (i = 0; i < run->nnames; i++)
		if (run->names[i].req != NULL) {
			dns_cancel(run->names[i].req);
			run->names[i].req = NULL;
		}
}

/* ---------------------------------------------------- libspf2 over unbound */

struct verify_ub {
	struct ub_ctx	*ctx;
	uint64_t	 deadline_ms;
};

struct verify_ubq {
	int			 done, err;
	struct ub_result	*res;
};

static void
verify_ub_cb(void *arg, int err, struct ub_result *res)
{
	struct verify_ubq *q = arg;

	q->done = 1;
	q->err = err;
	q->res = res;
}

/* verify_ub_query - one query, waiting no longer than the deadline;
 * 0 and *res_r (ub_resolve_free it) or -1 */
static int
verify_ub_query(struct verify_ub *u, const char *name, int type,
    struct ub_result **res_r)
{
	struct verify_ubq q = { 0, 0, NULL };
	struct pollfd pfd;
	uint64_t now;
	int id;

	if (util_now_ms() >= u->deadline_ms ||
	    ub_resolve_async(u->ctx, name, type, 1, &q, verify_ub_cb,
	    &id) != 0)
		return -1;
	while (!q.done) {
		now = util_now_ms();
		if (now >= u->deadline_ms) {
			ub_cancel(u->ctx, id);
			return -1;
		}
		pfd.fd = ub_fd(u->ctx);
		pfd.events = POLLIN;
		pfd.revents = 0;
		if (poll(&pfd, 1, (int)(u->deadline_ms - now)) > 0)
			ub_process(u->ctx);
	}
	if (q.err != 0) {
		if (q.res != NULL)
			ub_resolve_free(q.res);
		return -1;
	}
	*res_r = q.res;
	return 0;
}

/* verify_wire_name - uncompressed wire-format name to text, -1 if bad */
static int
verify_wire_name(const unsigned char *p, size_t len, char *out, size_t outsz)
{
	size_t off = 0, o = 0, l;

	while (off < len && (l = p[off++]) != 0) {
		if (l > 63 || l > len - off || o + l + 2 > outsz)
			return -1;
		if (o > 0)
			out[o++] = '.';
		memcpy(out + o, p + off, l);
		o += l;
		off += l;
	}
	if (o == 0 && outsz > 1)
		out[o++] = '.';
	out[o] = '\0';
	return 0;
}

/* verify_spf_lookup - libspf2's DNS layer: answer from libunbound */
static SPF_dns_rr_t *
verify_spf_lookup(SPF_dns_server_t *srv, const char *domain, ns_type type,
    int should_cache)
{
	struct verify_ub *u = srv->hook;
	struct ub_result *res = NULL;
	SPF_dns_rr_t *rr;
	char name[DNS_NAME_MAX + 2], *txt;
	size_t i, len, olen;
	int cnt = 0, pref;

	(void)should_cache;
	if (verify_ub_query(u, domain, (int)type, &res) == -1)
		return SPF_dns_rr_new_init(srv, domain, type, 0, TRY_AGAIN);
	if (res->rcode == 3 || res->nxdomain) {
		ub_resolve_free(res);
		return SPF_dns_rr_new_init(srv, domain, type, 0,
		    HOST_NOT_FOUND);
	}
	if (res->rcode != 0) {
		ub_resolve_free(res);
		return SPF_dns_rr_new_init(srv, domain, type, 0, TRY_AGAIN);
	}
	rr = SPF_dns_rr_new_init(srv, domain, type, res->ttl, NETDB_SUCCESS);
	if (rr == NULL) {
		ub_resolve_free(res);
		return NULL;
	}
	for (i = 0; res->havedata && res->data[i] != NULL; i++) {
		len = (size_t)res->len[i];
		switch (type) {
		case ns_t_a:
			if (len != sizeof(struct in_addr) ||
			    SPF_dns_rr_buf_realloc(rr, cnt, len) != SPF_E_SUCCESS)
				continue;
			memcpy(&rr->rr[cnt]->a, res->data[i], len);
			cnt++;
			break;
		case ns_t_aaaa:
			if (len != sizeof(struct in6_addr) ||
			    SPF_dns_rr_buf_realloc(rr, cnt, len) != SPF_E_SUCCESS)
				continue;
			memcpy(&rr->rr[cnt]->aaaa, res->data[i], len);
			cnt++;
			break;
		case ns_t_txt:
			txt = xmalloc(len + 1);
			if (dns_parse_txt(res->data[i], len, txt, len + 1,
			    &olen) == -1 || SPF_dns_rr_buf_realloc(rr, cnt,
			    olen + 1) != SPF_E_SUCCESS) {
				free(txt);
				continue;
			}
			memcpy(rr->rr[cnt]->txt, txt, olen + 1);
			free(txt);
			cnt++;
			break;
		case ns_t_mx:
			if (dns_parse_mx(res->data[i], len, &pref, name,
			    sizeof(name)) == -1 || SPF_dns_rr_buf_realloc(rr,
			    cnt, strlen(name) + 1) != SPF_E_SUCCESS)
				continue;
			memcpy(rr->rr[cnt]->mx, name, strlen(name) + 1);
			cnt++;
			break;
		case ns_t_ptr:
			if (verify_wire_name((const unsigned char *)res->data[i],
			    len, name, sizeof(name)) == -1 ||
			    SPF_dns_rr_buf_realloc(rr, cnt, strlen(name) + 1) !=
			    SPF_E_SUCCESS)
				continue;
			memcpy(rr->rr[cnt]->ptr, name, strlen(name) + 1);
			cnt++;
			break;
		default:
			break;
		}
	}
	rr->num_rr = cnt;
	if (cnt == 0)
		rr->herrno = NO_DATA;
	ub_resolve_free(res);
	return rr;
}

/* verify_spf_destroy - the layer is on the caller's stack: nothing */
static void
verify_spf_destroy(SPF_dns_server_t *srv)
{
	(void)srv;
}

/* verify_ub_new - a synchronous-use libunbound context set up like
 * dns.c's: the configured resolver, loopback allowed, .test answered */
static struct ub_ctx *
verify_ub_new(const struct verify_run *run, char **err_r)
{
	static const char *zones[] = { "test. transparent",
	    "invalid. transparent" };
	struct ub_ctx *ctx;
	char fwd[INET6_ADDRSTRLEN + 16];
	size_t i;
	int r;

	if ((ctx = ub_ctx_create()) == NULL) {
		*err_r = xstrdup("ub_ctx_create failed");
		return NULL;
	}
	if ((r = ub_ctx_async(ctx, 1)) != 0)
		goto fail;
	if (run->resolver_addr != NULL && *run->resolver_addr != '\0') {
		snprintf(fwd, sizeof(fwd), "%s@%d", run->resolver_addr,
		    run->resolver_port);
		if ((r = ub_ctx_set_fwd(ctx, fwd)) != 0 ||
		    (r = ub_ctx_set_option(ctx, "do-not-query-localhost:",
		    "no")) != 0)
			goto fail;
	} else {
		if ((r = ub_ctx_resolvconf(ctx, NULL)) != 0)
			goto fail;
		(void)ub_ctx_hosts(ctx, NULL);
	}
	for (i = 0; i < nitems(zones); i++)
		if ((r = ub_ctx_set_option(ctx, "local-zone:", zones[i])) != 0)
			goto fail;
	return ctx;
fail:
	*err_r = xasprintf("libunbound: %s", ub_strerror(r));
	ub_ctx_delete(ctx);
	return NULL;
}

/* verify_spf_eval - libspf2's result for postmaster@domain from ip, with
 * every DNS query through the configured resolver. Loopback addresses get
 * no free pass: this reproduces SPF_request_query_mailfrom() without it.
 * Returns the SPF_result_t; *why_r (malloc'd) explains. */
static int
verify_spf_eval(const struct verify_run *run, const char *ip, char **why_r)
{
	SPF_dns_server_t layer;
	SPF_server_t *srv;
	SPF_request_t *req = NULL;
	SPF_response_t *resp = NULL;
	SPF_record_t *rec = NULL;
	SPF_errcode_t err;
	struct verify_ub u;
	char *from, *uerr = NULL;
	int result, v6 = strchr(ip, ':') != NULL;

	if ((u.ctx = verify_ub_new(run, &uerr)) == NULL) {
		*why_r = uerr;
		return SPF_RESULT_TEMPERROR;
	}
	u.deadline_ms = util_now_ms() + VERIFY_SPF_TIMEOUT_MS;
	memset(&layer, 0, sizeof(layer));
	layer.destroy = verify_spf_destroy;
	layer.lookup = verify_spf_lookup;
	layer.name = "petrel-unbound";
	layer.hook = &u;
	if ((srv = SPF_server_new_dns(&layer, 0)) == NULL) {
		ub_ctx_delete(u.ctx);
		*why_r = xstrdup("libspf2: cannot create a server");
		return SPF_RESULT_TEMPERROR;
	}
	from = xasprintf("postmaster@%s", run->domain);
	req = SPF_request_new(srv);
	if (req == NULL || (v6 ? SPF_request_set_ipv6_str(req, ip) :
	    SPF_request_set_ipv4_str(req, ip)) != SPF_E_SUCCESS ||
	    SPF_request_set_helo_dom(req, run->hostname != NULL ?
	    run->hostname : run->domain) != SPF_E_SUCCESS ||
	    SPF_request_set_env_from(req, from) != 0 ||
	    (resp = SPF_response_new(req)) == NULL) {
		*why_r = xstrdup("libspf2: cannot build the request");
		result = SPF_RESULT_TEMPERROR;
		goto done;
	}
	req->cur_dom = req->env_from_dp;
	err = SPF_server_get_record(srv, req, resp, &rec);
	if (err == SPF_E_SUCCESS && rec != NULL) {
		resp->spf_record_exp = rec;
		err = SPF_record_interpret(rec, req, resp, 0);
		resp->spf_record_exp = NULL;
	}
	result = SPF_response_result(resp);
	if (result == SPF_RESULT_INVALID)
		result = SPF_RESULT_PERMERROR;
	if (err != SPF_E_SUCCESS && result == SPF_RESULT_PASS)
		result = SPF_RESULT_PERMERROR;
	*why_r = xasprintf("libspf2: %s for %s as %s%s%s", SPF_strresult(
	    (SPF_result_t)result), ip, from, err != SPF_E_SUCCESS ? ", " : "",
	    err != SPF_E_SUCCESS ? SPF_strerror(err) : "");
done:
	if (rec != NULL)
		SPF_record_free(rec);
	if (resp != NULL)
		SPF_response_free(resp);
	if (req != NULL)
		SPF_request_free(req);
	SPF_server_free(srv);
	ub_ctx_delete(u.ctx);
	free(from);
	return result;
}

/* ---------------------------------------------------------------- checks */

/* verify_show - found DNS text, safe to print, shortened */
static char *
verify_show(const char *s)
{
	char *t = util_sanitize(s, VERIFY_TXT_SHOW_MAX + 1), *out;

	if (strlen(t) > VERIFY_TXT_SHOW_MAX) {
		t[VERIFY_TXT_SHOW_MAX] = '\0';
		out = xasprintf("%s...", t);
		free(t);
		return out;
	}
	return t;
}

/* verify_found_list - "\"a\", \"b\"" of the TXT records at a name */
static char *
verify_found_list(const struct verify_name *vn)
{
	char *out = xstrdup(""), *s, *n;
	size_t i;

	for (i = 0; i < vn->ntxt; i++) {
		s = verify_show(vn->txt[i]);
		n = xasprintf("%s%s\"%s\"", out, i ? ", " : "", s);
		free(s);
		free(out);
		out = n;
	}
	return out;
}

/* verify_set - a check's verdict and reason */
static void PRINTFLIKE(3, 4)
verify_set(struct verify_check *c, int verdict, const char *fmt, ...)
{
	va_list ap;

	free(c->detail);
	c->detail = NULL;
	c->verdict = verdict;
	if (fmt != NULL) {
		va_start(ap, fmt);
		c->detail = xvasprintf(fmt, ap);
		va_end(ap);
	}
}

/* verify_lookup_verdict - MISSING/TEMPFAIL for a name without records;
 * 0 when it has records to examine */
static int
verify_lookup_verdict(struct verify_check *c, const struct verify_name *vn)
{
	switch (vn->status) {
	case DNS_OK:
		if (vn->ntxt > 0)
			return 0;
		/* FALLTHROUGH */
	case DNS_NODATA:
		verify_set(c, V_MISSING, "no TXT record");
		return -1;
	case DNS_NXDOMAIN:
		verify_set(c, V_MISSING, "no TXT record: the name does "
		    "not exist");
		return -1;
	default:
		verify_set(c, V_TEMPFAIL, "DNS lookup failed: %s",
		    vn->error != NULL ? vn->error : "temporary error");
		return -1;
	}
}

/* verify_trim_eq - equal after trimming blanks at both ends */
static int
verify_trim_eq(const char *a, const char *b)
{
	size_t la, lb;

	while (*a == ' ' || *a == '\t')
		a++;
	while (*b == ' ' || *b == '\t')
		b++;
	la = strlen(a);
	lb = strlen(b);
	while (la > 0 && (a[la - 1] == ' ' || a[la - 1] == '\t'))
		la--;
	while (lb > 0 && (b[lb - 1] == ' ' || b[lb - 1] == '\t'))
		lb--;
	return la == lb && memcmp(a, b, la) == 0;
}

/* verify_starts_word - s begins with tag (case-insensitive) followed by a
 * blank, ';' or the end */
static int
verify_starts_word(const char *s, const char *tag)
{
	size_t n = strlen(tag);

	while (*s == ' ' || *s == '\t')
		s++;
	return strncasecmp(s, tag, n) == 0 && (s[n] == '\0' || s[n] == ' ' ||
	    s[n] == '\t' || s[n] == ';');
}

/* verify_tag - value of tag in a "t=v; t=v" list (RFC 6376 3.2), trimmed,
 * into out; 1 found, 0 not, -1 malformed. The first tag's name goes to
 * first (when not NULL). */
static int
verify_tag(const char *list, const char *tag, char *out, size_t outsz,
    char *first, size_t firstsz)
{
	const char *p = list, *eq, *end, *ns, *ne, *vs, *ve;
	int found = 0, idx = 0;

	for (;;) {
		end = strchr(p, ';');
		if (end == NULL)
			end = p + strlen(p);
		for (ns = p; ns < end && (*ns == ' ' || *ns == '\t'); ns++)
			;
		if (ns < end) {
			if ((eq = memchr(ns, '=', (size_t)(end - ns))) == NULL)
				return -1;
			for (ne = eq; ne > ns && (ne[-1] == ' ' ||
			    ne[-1] == '\t'); ne--)
				;
			for (vs = eq + 1; vs < end && (*vs == ' ' ||
			    *vs == '\t'); vs++)
				;
			for (ve = end; ve > vs && (ve[-1] == ' ' ||
			    ve[-1] == '\t'); ve--)
				;
			if (ne == ns)
				return -1;
			if (idx == 0 && first != NULL && firstsz > 0)
				snprintf(first, firstsz, "%.*s", (int)(ne - ns),
				    ns);
			if (!found && (size_t)(ne - ns) == strlen(tag) &&
			    memcmp(ns, tag, (size_t)(ne - ns)) == 0) {
				if ((size_t)(ve - vs) >= outsz)
					return -1;
				memcpy(out, vs, (size_t)(ve - vs));
				out[ve - vs] = '\0';
				found = 1;
			}
			idx++;
		}
		if (*end == '\0')
			break;
		p = end + 1;
	}
	return found;
}

/* verify_nows - copy of s without blanks (folded base64 in p=) */
static char *
verify_nows(const char *s)
{
	char *o = xmalloc(strlen(s) + 1), *q = o;

	for (; *s; s++)
		if (*s != ' ' && *s != '\t' && *s != '\r' && *s != '\n')
			*q++ = *s;
	*q = '\0';
	return o;
}

static void
verify_ownership(struct verify_check *c, const struct verify_name *vn)
{
	char *found;
	size_t i;

	if (verify_lookup_verdict(c, vn) == -1)
		return;
	for (i = 0; i < vn->ntxt; i++)
		if (verify_trim_eq(vn->txt[i], c->value)) {
			verify_set(c, V_OK, NULL);
			return;
		}
	found = verify_found_list(vn);
	verify_set(c, V_WRONG, "expected \"%s\", found %s", c->value, found);
	free(found);
}

/* verify_spf_has_include - the record holds [+]include:<target> */
static int
verify_spf_has_include(const char *rec, const char *target)
{
	const char *p = rec, *e;
	size_t n, tl = strlen(target);

	for (;;) {
		while (*p == ' ' || *p == '\t')
			p++;
		if (*p == '\0')
			return 0;
		for (e = p; *e && *e != ' ' && *e != '\t'; e++)
			;
		n = (size_t)(e - p);
		if (*p == '+') {
			p++;
			n--;
		}
		if (n == 8 + tl && strncasecmp(p, "include:", 8) == 0 &&
		    strncasecmp(p + 8, target, tl) == 0)
			return 1;
		p = e;
	}
}

static void
verify_spf(struct verify_run *run, struct verify_check *c,
    const struct verify_name *vn)
{
	const char *rec = NULL;
	char *shown, *why = NULL, *inc;
	size_t i, nspf = 0;
	int result;

	if (verify_lookup_verdict(c, vn) == -1) {
		if (c->verdict == V_MISSING)
			verify_set(c, V_MISSING, "no SPF record: no TXT starting "
			    "with v=spf1");
		return;
	}
	for (i = 0; i < vn->ntxt; i++)
		if (verify_starts_word(vn->txt[i], "v=spf1")) {
			rec = vn->txt[i];
			nspf++;
		}
	if (nspf == 0) {
		verify_set(c, V_MISSING, "no SPF record: no TXT starting with "
		    "v=spf1");
		return;
	}
	if (nspf > 1) {
		shown = verify_found_list(vn);
		verify_set(c, V_WRONG, "expected one SPF record \"%s\", found "
		    "%zu (a permerror at receivers): %s", c->value, nspf,
		    shown);
		free(shown);
		return;
	}
	shown = verify_show(rec);
	if (run->spf_include != NULL && *run->spf_include != '\0' &&
	    !verify_spf_has_include(rec, run->spf_include)) {
		inc = xasprintf("include:%s", run->spf_include);
		verify_set(c, V_WRONG, "expected \"%s\" (or a record with "
		    "%s), found \"%s\"", c->value, inc, shown);
		free(inc);
		free(shown);
		return;
	}
	if (run->bind_address != NULL && *run->bind_address != '\0') {
		result = verify_spf_eval(run, run->bind_address, &why);
		if (result == SPF_RESULT_TEMPERROR)
			verify_set(c, V_TEMPFAIL, "found \"%s\" but %s", shown,
			    why);
		else if (result != SPF_RESULT_PASS)
			verify_set(c, V_WRONG, "expected \"%s\", found \"%s\" "
			    "(%s)", c->value, shown, why);
		else
			verify_set(c, V_OK, NULL);
		free(why);
		free(shown);
		return;
	}
	if (run->spf_include == NULL || *run->spf_include == '\0') {
		/* no address to evaluate: the record Petrel printed */
		if (!verify_trim_eq(rec, c->value) &&
		    strcasecmp(rec, c->value) != 0) {
			verify_set(c, V_WRONG, "expected \"%s\", found \"%s\"",
			    c->value, shown);
			free(shown);
			return;
		}
	}
	verify_set(c, V_OK, NULL);
	free(shown);
}

/* verify_list_has - whether the colon-separated list holds a or b (b may
 * be NULL), in any case, ignoring whitespace around items */
static int
verify_list_has(const char *list, const char *a, const char *b)
{
	const char *p = list, *e, *s;
	size_t n;

	while (*p != '\0') {
		while (*p == ' ' || *p == '\t')
			p++;
		for (e = p; *e != '\0' && *e != ':'; e++)
			;
		for (s = e; s > p && (s[-1] == ' ' || s[-1] == '\t'); s--)
			;
		n = (size_t)(s - p);
		if ((n == strlen(a) && strncasecmp(p, a, n) == 0) ||
		    (b != NULL && n == strlen(b) && strncasecmp(p, b, n) == 0))
			return 1;
		p = *e == ':' ? e + 1 : e;
	}
	return 0;
}

static void
verify_dkim(struct verify_check *c, const struct verify_name *vn)
{
	char v[32], k[32], first[32], list[128], *p, *want, *shown;
	char *why = NULL;
	size_t i, plen;
	int r;

	if (verify_lookup_verdict(c, vn) == -1)
		return;
	want = verify_nows(c->key_public != NULL ? c->key_public : "");
	for (i = 0; i < vn->ntxt; i++) {
		const char *t = vn->txt[i];

		free(why);
		why = NULL;
		plen = strlen(t) + 1;
		p = xmalloc(plen);
		if (verify_tag(t, "p", p, plen, first, sizeof(first)) != 1) {
			why = xstrdup("no p= tag, or tags do not parse");
			free(p);
			continue;
		}
		r = verify_tag(t, "v", v, sizeof(v), NULL, 0);
		if (r == -1 || (r == 1 && (strcmp(v, "DKIM1") != 0 ||
		    strcmp(first, "v") != 0))) {
			why = xstrdup("v= must be DKIM1 and come first");
			free(p);
			continue;
		}
		r = verify_tag(t, "k", k, sizeof(k), NULL, 0);
		if (r == -1 || strcasecmp(r == 1 ? k : "rsa", c->key_type)) {
			why = xasprintf("k=%s, expected k=%s",
			    r == 1 ? k : "rsa (default)", c->key_type);
			free(p);
			continue;
		}
		/* RFC 6376 3.6.1: a key limited to other services or other
		 * hashes does not verify our sha256 email signatures */
		r = verify_tag(t, "s", list, sizeof(list), NULL, 0);
		if (r == -1 || (r == 1 && !verify_list_has(list, "email",
		    "*"))) {
			why = xstrdup("s= does not allow email (email or *)");
			free(p);
			continue;
		}
		r = verify_tag(t, "h", list, sizeof(list), NULL, 0);
		if (r == -1 || (r == 1 && !verify_list_has(list, "sha256",
		    NULL))) {
			why = xstrdup("h= does not allow sha256");
			free(p);
			continue;
		}
		shown = verify_nows(p);
		free(p);
		if (strcmp(shown, want) == 0) {
			free(shown);
			free(want);
			verify_set(c, V_OK, NULL);
			return;
		}
		free(shown);
		why = xstrdup("p= is not this key's public key");
	}
	free(want);
	shown = verify_found_list(vn);
	verify_set(c, V_WRONG, "%s: expected \"%s\", found %s",
	    why != NULL ? why : "no matching key record", c->value, shown);
	free(shown);
	free(why);
}

static void
verify_dmarc(struct verify_check *c, const struct verify_name *vn)
{
	const char *rec = NULL;
	char p[32], *shown;
	size_t i, n = 0;

	if (verify_lookup_verdict(c, vn) == -1) {
		if (c->verdict == V_MISSING)
			verify_set(c, V_MISSING, "no DMARC record: no TXT starting "
			    "with v=DMARC1");
		return;
	}
	for (i = 0; i < vn->ntxt; i++)
		if (verify_starts_word(vn->txt[i], "v=DMARC1")) {
			rec = vn->txt[i];
			n++;
		}
	if (n == 0) {
		verify_set(c, V_MISSING, "no DMARC record: no TXT starting with "
		    "v=DMARC1");
		return;
	}
	shown = verify_found_list(vn);
	if (n > 1)
		verify_set(c, V_WRONG, "expected one DMARC record, found %zu: "
		    "%s", n, shown);
	else if (verify_tag(rec, "p", p, sizeof(p), NULL, 0) != 1 ||
	    (strcasecmp(p, "none") != 0 && strcasecmp(p, "quarantine") != 0 &&
	    strcasecmp(p, "reject") != 0))
		verify_set(c, V_WRONG, "expected a valid p= (none, quarantine "
		    "or reject) as in \"%s\", found %s", c->value, shown);
	else
		verify_set(c, V_OK, NULL);
	free(shown);
}

void
verify_run_evaluate(struct verify_run *run)
{
	size_t i;

	for (i = 0; i < run->nchecks; i++) {
		struct verify_check *c = &run->checks[i];
		const struct verify_name *vn = &run->names[c->name_idx];

		if (strcmp(c->purpose, "ownership") == 0)
			verify_ownership(c, vn);
		else if (strcmp(c->purpose, "spf") == 0)
			verify_spf(run, c, vn);
		else if (strcmp(c->purpose, "dkim") == 0)
			verify_dkim(c, vn);
		else if (strcmp(c->purpose, "dmarc") == 0)
			verify_dmarc(c, vn);
	}
}

/* ---------------------------------------------------------------- commit */

/* verify_check_of - this run's check of a record (same purpose, name and
 * value), or NULL when the record was not checked */
static const struct verify_check *
verify_check_of(const struct verify_run *run, const json_t *r)
{
	const char *p = verify_jstr(r, "purpose"), *n = verify_jstr(r, "name");
	const char *v = verify_jstr(r, "value");
	size_t i;

	if (p == NULL || n == NULL || v == NULL)
		return NULL;
	for (i = 0; i < run->nchecks; i++)
		if (strcmp(run->checks[i].purpose, p) == 0 &&
		    strcasecmp(run->checks[i].name, n) == 0 &&
		    strcmp(run->checks[i].value, v) == 0)
			return &run->checks[i];
	return NULL;
}

/* verify_dkim_record - the dkim record of selector sel in rec */
static const json_t *
verify_dkim_record(const json_t *rec, const char *sel)
{
	const char *d = verify_jstr(rec, "domain");
	const json_t *r;
	size_t i, sl = strlen(sel);

	json_array_foreach(json_object_get(rec, "records"), i, r) {
		const char *n = verify_jstr(r, "name");
		const char *p = verify_jstr(r, "purpose");

		if (n != NULL && p != NULL && strcmp(p, "dkim") == 0 &&
		    strncmp(n, sel, sl) == 0 &&
		    strncasecmp(n + sl, "._domainkey.", 12) == 0 &&
		    d != NULL && strcasecmp(n + sl + 12, d) == 0)
			return r;
	}
	return NULL;
}

/* verify_append - "a,b" lists and "x; y" reasons */
static void
verify_append(char **list, const char *sep, const char *item)
{
	char *n;

	if (*list == NULL)
		*list = xstrdup(item);
	else {
		n = xasprintf("%s%s%s", *list, sep, item);
		free(*list);
		*list = n;
	}
}

/* verify_promote - all pending keys' records verified in this run: make
 * them active and retire the keys that were active */
static void
verify_promote(struct verify_run *run, json_t *rec)
{
	json_t *k;
	const json_t *r;
	const struct verify_check *c;
	size_t i, npending = 0;

	json_array_foreach(json_object_get(rec, "keys"), i, k) {
		const char *st = verify_jstr(k, "state");
		const char *sel = verify_jstr(k, "selector");

		if (st == NULL || sel == NULL || strcmp(st, "pending") != 0)
			continue;
		npending++;
		if ((r = verify_dkim_record(rec, sel)) == NULL ||
		    (c = verify_check_of(run, r)) == NULL || c->verdict != V_OK)
			return;
	}
	if (npending == 0)
		return;
	json_array_foreach(json_object_get(rec, "keys"), i, k) {
		const char *st = verify_jstr(k, "state");
		const char *sel = verify_jstr(k, "selector");

		if (st == NULL || sel == NULL)
			continue;
		if (strcmp(st, "active") == 0) {
			json_object_set_new(k, "state", json_string("retired"));
			json_object_set_new(k, "retired", json_integer(
			    util_now()));
			verify_append(&run->retired, ",", sel);
		} else if (strcmp(st, "pending") == 0) {
			json_object_set_new(k, "state", json_string("active"));
			json_object_set_new(k, "activated", json_integer(
			    util_now()));
			verify_append(&run->promoted, ",", sel);
		}
	}
}

/* verify_apply - set statuses in rec (the stored record, re-read in the
 * write transaction) from this run's verdicts */
static void
verify_apply(struct verify_run *run, const struct petrel_conf *conf,
    json_t *rec)
{
	const char *old = verify_jstr(rec, "status"), *sel, *st;
	const struct verify_check *c;
	char *line;
	json_t *r, *k;
	size_t i;
	int failed = 0, unknown = 0, active = 0;

	free(run->old_status);
	run->old_status = xstrdup(old != NULL ? old : "pending");
	free(run->reason);
	run->reason = NULL;
	json_array_foreach(json_object_get(rec, "records"), i, r) {
		if ((c = verify_check_of(run, r)) == NULL)
			continue;
		if (c->verdict == V_OK)
			json_object_set_new(r, "status", json_string("verified"));
		else if (c->verdict == V_MISSING || c->verdict == V_WRONG)
			json_object_set_new(r, "status", json_string("failed"));
	}
	verify_promote(run, rec);

	/* required: ownership, spf, dmarc and the records of active keys */
	json_array_foreach(json_object_get(rec, "records"), i, r) {
		const char *p = verify_jstr(r, "purpose");

		if (p == NULL || strcmp(p, "dkim") == 0)
			continue;
		c = verify_check_of(run, r);
		if (c == NULL || c->verdict == V_TEMPFAIL ||
		    c->verdict == V_UNCHECKED)
			unknown++;
		else if (c->verdict != V_OK) {
			failed++;
			line = xasprintf("%s %s %s", p, c->name,
			    verdict_names[c->verdict]);
			verify_append(&run->reason, "; ", line);
			free(line);
		}
	}
	json_array_foreach(json_object_get(rec, "keys"), i, k) {
		sel = verify_jstr(k, "selector");
		st = verify_jstr(k, "state");
		if (sel == NULL || (st != NULL && strcmp(st, "active") != 0))
			continue;
		active++;
		r = (json_t *)verify_dkim_record(rec, sel);
		c = r != NULL ? verify_check_of(run, r) : NULL;
		if (c == NULL || c->verdict == V_TEMPFAIL ||
		    c->verdict == V_UNCHECKED)
			unknown++;
		else if (c->verdict != V_OK) {
			failed++;
			line = xasprintf("dkim %s %s", c->name,
			    verdict_names[c->verdict]);
			verify_append(&run->reason, "; ", line);
			free(line);
		}
	}
	if (active == 0) {
		failed++;
		verify_append(&run->reason, "; ", "no active DKIM key");
	}

	free(run->new_status);
	if (failed > 0) {
		run->conclusive = 1;
		run->new_status = xstrdup(strcmp(run->old_status, "verified") ==
		    0 || strcmp(run->old_status, "failed") == 0 ||
		    json_integer_value(json_object_get(rec, "verified_at")) > 0 ?
		    "failed" : "pending");
	} else if (unknown > 0) {
		run->conclusive = 0;
		run->new_status = xstrdup(run->old_status);
		verify_append(&run->reason, "; ", "temporary DNS failure");
	} else {
		run->conclusive = 1;
		run->new_status = xstrdup("verified");
		run->reason = xstrdup("all records verified");
		json_object_set_new(rec, "verified_at", json_integer(
		    util_now()));
	}
	json_object_set_new(rec, "status", json_string(run->new_status));
	json_object_set_new(rec, "checked_at", json_integer(util_now()));
	json_object_set_new(rec, "check_result", json_string(
	    !run->conclusive ? "inconclusive" : failed ? "failed" : "ok"));
	if (run->promoted != NULL || domain_retired_expired(conf, rec))
		domain_rebuild_records(conf, rec);
}

int
verify_run_commit(struct verify_run *run, struct store *s,
    const struct petrel_conf *conf, char **err_r)
{
	MDB_env *menv = store_env(s);
	MDB_dbi dbi = store_dbi(s, DB_DOMAINS);
	MDB_txn *txn;
	MDB_val k, v;
	json_t *rec;
	const char *kind;
	char *data;
	int rc;

	*err_r = NULL;
	if ((rc = mdb_txn_begin(menv, NULL, 0, &txn)) != 0) {
		*err_r = xasprintf("store: %s", mdb_strerror(rc));
		return -1;
	}
	k.mv_data = run->domain;
	k.mv_size = strlen(run->domain);
	if ((rc = mdb_get(txn, dbi, &k, &v)) != 0 ||
	    (rec = json_loadb(v.mv_data, v.mv_size, 0, NULL)) == NULL) {
		mdb_txn_abort(txn);
		*err_r = xasprintf("domain %s is gone", run->domain);
		return -1;
	}
	kind = verify_jstr(rec, "kind");
	if (kind != NULL && strcmp(kind, "managed") == 0) {
		json_decref(rec);
		mdb_txn_abort(txn);
		*err_r = xasprintf("domain %s is managed", run->domain);
		return -1;
	}
	verify_apply(run, conf, rec);
	data = json_dumps(rec, JSON_COMPACT);
	json_decref(rec);
	if (data == NULL) {
		mdb_txn_abort(txn);
		*err_r = xstrdup("cannot encode the domain record");
		return -1;
	}
	v.mv_data = data;
	v.mv_size = strlen(data);
	rc = mdb_put(txn, dbi, &k, &v, 0);
	free(data);
	if (rc != 0) {
		mdb_txn_abort(txn);
		*err_r = xasprintf("store: %s", mdb_strerror(rc));
		return -1;
	}
	if ((rc = mdb_txn_commit(txn)) != 0) {
		*err_r = xasprintf("store: %s", mdb_strerror(rc));
		return -1;
	}
	run->committed = 1;
	return 0;
}

/* --------------------------------------------------------------- output */

void
verify_run_print(const struct verify_run *run, FILE *fp)
{
	const struct verify_check *c;
	size_t i;

	for (i = 0; i < run->nchecks; i++) {
		c = &run->checks[i];
		fprintf(fp, "%-9s %s  %s", c->purpose, c->name,
		    verdict_names[c->verdict]);
		if (c->verdict == V_WRONG)
			fprintf(fp, ": %s", c->detail ? c->detail : "");
		else if (c->verdict != V_OK && c->detail != NULL)
			fprintf(fp, " (%s)", c->detail);
		if (c->key_state != NULL && strcmp(c->key_state, "pending") == 0)
			fprintf(fp, "  [new key from rotate-dkim: %s]",
			    run->promoted != NULL && c->verdict == V_OK ?
			    "now active, signing" : "not signing until its "
			    "record verifies; the active key keeps signing");
		fputc('\n', fp);
	}
	if (run->promoted != NULL) {
		char until[32];
		time_t t = (time_t)(util_now() + run->queue_lifetime);
		struct tm tm;

		strftime(until, sizeof(until), "%Y-%m-%d %H:%MZ",
		    gmtime_r(&t, &tm));
		fprintf(fp, "dkim rotation: %s now active (signing); retired "
		    "%s: keep their records until %s (queue_lifetime): queued "
		    "messages may carry their signatures\n", run->promoted,
		    run->retired != NULL ? run->retired : "-", until);
	}
	fprintf(fp, "domain %s: %s", run->domain, verify_run_status(run));
	if (!run->committed)
		fprintf(fp, " (not stored)");
	else if (!run->conclusive)
		fprintf(fp, " (unchanged: %s)", run->reason ? run->reason :
		    "temporary DNS failure");
	else if (strcmp(verify_run_status(run), "verified") != 0)
		fprintf(fp, " (not verified: %s)", run->reason ? run->reason :
		    "");
	fputc('\n', fp);
}

/* verify_unquote - copy safe inside reason="..." */
static char *
verify_unquote(const char *s)
{
	char *t = util_sanitize(s != NULL ? s : "", 1024), *p;

	for (p = t; *p; p++)
		if (*p == '"')
			*p = '\'';
	return t;
}

void
verify_run_log(const struct verify_run *run)
{
	const struct verify_check *c;
	char *reason;
	size_t i;

	for (i = 0; i < run->nchecks; i++) {
		c = &run->checks[i];
		reason = verify_unquote(c->detail);
		log_debug("event=domain_check domain=%s purpose=%s name=%s "
		    "result=%s reason=\"%s\"", run->domain, c->purpose, c->name,
		    verdict_names[c->verdict], reason);
		free(reason);
	}
	if (!run->committed)
		return;
	reason = verify_unquote(run->reason);
	if (strcmp(run->old_status ? run->old_status : "",
	    verify_run_status(run)) != 0)
		log_info("event=domain_status domain=%s old=%s new=%s "
		    "reason=\"%s\"", run->domain, run->old_status ?
		    run->old_status : "-", verify_run_status(run), reason);
	else
		log_debug("event=domain_verify domain=%s status=%s "
		    "conclusive=%s reason=\"%s\"", run->domain,
		    verify_run_status(run), run->conclusive ? "yes" : "no",
		    reason);
	free(reason);
	if (run->promoted != NULL)
		log_info("event=dkim_rotate domain=%s promoted=%s retired=%s",
		    run->domain, run->promoted, run->retired ? run->retired :
		    "-");
}

/* ------------------------------------------------------------- petrelctl */

/* verify_sync_cb - the lookups are done: leave the private loop */
static void
verify_sync_cb(struct verify_run *run, void *arg)
{
	(void)run;
	event_base_loopbreak(arg);
}

struct verify_run *
verify_domain_sync(struct store *s, const struct petrel_conf *conf,
    const json_t *rec, char **err_r)
{
	struct event_base *base;
	struct verify_run *run;
	struct dns *dns;
	const char *e = NULL;

	if ((run = verify_run_new(conf, rec, &e)) == NULL) {
		*err_r = xstrdup(e);
		return NULL;
	}
	if ((base = event_base_new()) == NULL) {
		verify_run_free(run);
		*err_r = xstrdup("cannot create an event loop");
		return NULL;
	}
	if ((dns = dns_new(base, conf->resolver, err_r)) == NULL) {
		event_base_free(base);
		verify_run_free(run);
		return NULL;
	}
	dns_set_timeout(dns, VERIFY_DNS_TIMEOUT_MS);
	verify_run_start(run, dns, verify_sync_cb, base);
	if (run->waiting > 0)
		event_base_dispatch(base);
	verify_run_cancel(run);
	dns_free(dns);
	event_base_free(base);
	verify_run_evaluate(run);
	if (verify_run_commit(run, s, conf, err_r) == -1) {
		verify_run_free(run);
		return NULL;
	}
	return run;
}

/* ---------------------------------------------------------------- petreld */

struct verify_job {
	struct verify_job	*next;
	struct verify_run	*run;
	struct petrel_conf	*conf;	/* snapshot of the fields commit reads */
	int			 in_worker;
	char			*err;
};

static struct {
	struct event_base	*base;
	struct store		*store;
	struct petrel_conf	**confp;
	struct event		*timer;
	struct dns		*dns;
	char			*dns_resolver;
	struct verify_job	*jobs;
	int			 stopped;
	pthread_mutex_t		 mtx;
	pthread_cond_t		 cond;
	int			 working;	/* jobs inside verify_job_work */
} vd = {
	.mtx = PTHREAD_MUTEX_INITIALIZER,
	.cond = PTHREAD_COND_INITIALIZER,
};

/* verify_str_eq - equal strings, NULL equal to NULL */
static int
verify_str_eq(const char *a, const char *b)
{
	return (a == NULL && b == NULL) || (a != NULL && b != NULL &&
	    strcmp(a, b) == 0);
}

/* verify_conf_copy - the settings verify_apply needs (domain records are
 * rebuilt from them after a key promotion), owned by the job */
static struct petrel_conf *
verify_conf_copy(const struct petrel_conf *c)
{
	struct petrel_conf *n = xcalloc(1, sizeof(*n));

	n->hostname = verify_dup(c->hostname);
	n->smtp_bind_address = verify_dup(c->smtp_bind_address);
	n->spf_include = verify_dup(c->spf_include);
	n->managed_zone = verify_dup(c->managed_zone);
	return n;
}

static void
verify_conf_free(struct petrel_conf *n)
{
	if (n == NULL)
		return;
	free(n->hostname);
	free(n->smtp_bind_address);
	free(n->spf_include);
	free(n->managed_zone);
	free(n);
}

/* verify_job_free - remove a job from the list and free it */
static void
verify_job_free(struct verify_job *job)
{
	struct verify_job **p;

	for (p = &vd.jobs; *p != NULL; p = &(*p)->next)
		if (*p == job) {
			*p = job->next;
			break;
		}
	verify_run_free(job->run);
	verify_conf_free(job->conf);
	free(job->err);
	free(job);
}

/* verify_job_work - worker thread: the checks (libspf2 may block) and the
 * compare-and-update write */
static void
verify_job_work(void *arg)
{
	struct verify_job *job = arg;

	verify_run_evaluate(job->run);
	if (verify_run_commit(job->run, vd.store, job->conf, &job->err) == -1 &&
	    job->err == NULL)
		job->err = xstrdup("store error");
	pthread_mutex_lock(&vd.mtx);
	vd.working--;
	pthread_cond_broadcast(&vd.cond);
	pthread_mutex_unlock(&vd.mtx);
}

/* verify_job_done - main loop: log the outcome */
static void
verify_job_done(void *arg)
{
	struct verify_job *job = arg;
	char *e;

	if (!vd.stopped) {
		if (job->err != NULL) {
			e = verify_unquote(job->err);
			log_warn("event=domain_verify domain=%s status=error "
			    "reason=\"%s\"", verify_run_domain(job->run), e);
			free(e);
		}
		verify_run_log(job->run);
	}
	verify_job_free(job);
}

/* verify_job_looked_up - the lookups are done: the rest on a worker */
static void
verify_job_looked_up(struct verify_run *run, void *arg)
{
	struct verify_job *job = arg;

	(void)run;
	job->in_worker = 1;
	pthread_mutex_lock(&vd.mtx);
	vd.working++;
	pthread_mutex_unlock(&vd.mtx);
	worker_run(verify_job_work, job, verify_job_done);
}

/* verify_due - should rec be checked now? */
static int
verify_due(const json_t *rec, const struct petrel_conf *c, int64_t now)
{
	const char *kind = verify_jstr(rec, "kind");
	const char *st = verify_jstr(rec, "status");
	const char *cr = verify_jstr(rec, "check_result");
	int64_t checked = json_integer_value(json_object_get(rec,
	    "checked_at"));
	long iv;

	if (kind != NULL && strcmp(kind, "managed") == 0)
		return 0;
	iv = st != NULL && strcmp(st, "verified") == 0 &&
	    (cr == NULL || strcmp(cr, "inconclusive") != 0) ?
	    c->reverify_interval : c->verify_interval;
	return checked <= 0 || now - checked >= iv;
}

/* verify_busy - a job for domain d is under way */
static int
verify_busy(const char *d)
{
	const struct verify_job *j;

	for (j = vd.jobs; j != NULL; j = j->next)
		if (strcmp(verify_run_domain(j->run), d) == 0)
			return 1;
	return 0;
}

/* verify_tick_period - seconds between scans */
static long
verify_tick_period(const struct petrel_conf *c)
{
	long t = c->verify_interval < c->reverify_interval ?
	    c->verify_interval : c->reverify_interval;

	return t < 1 ? 1 : t > 60 ? 60 : t;
}

/* verify_tick - find due domains and start their runs */
static void
verify_tick(evutil_socket_t fd, short ev, void *arg)
{
	const struct petrel_conf *c = *vd.confp;
	struct timeval tv = { 0, 0 };
	struct verify_job *job, *j;
	struct verify_run *run;
	json_t *list, *rec;
	const char *d, *e;
	char *err = NULL;
	int64_t now = util_now();
	size_t i, n = 0;

	(void)fd;
	(void)ev;
	(void)arg;
	for (j = vd.jobs; j != NULL; j = j->next)
		n++;
	/* a new resolver setting (SIGHUP) applies once nothing is looking up */
	if (vd.dns != NULL && n == 0 && !verify_str_eq(vd.dns_resolver, c->resolver)) {
		dns_free(vd.dns);
		vd.dns = NULL;
	}
	if (vd.dns == NULL) {
		if ((vd.dns = dns_new(vd.base, c->resolver, &err)) == NULL) {
			e = err != NULL ? err : "unknown error";
			log_warn("event=domain_verify status=error reason=\""
			    "resolver: %s\"", e);
			free(err);
			goto again;
		}
		dns_set_timeout(vd.dns, VERIFY_DNS_TIMEOUT_MS);
		free(vd.dns_resolver);
		vd.dns_resolver = verify_dup(c->resolver);
	}
	if ((list = store_domain_list(vd.store, NULL)) == NULL)
		goto again;
	json_array_foreach(list, i, rec) {
		if (n >= VERIFY_DAEMON_MAX_RUNS)
			break;
		if ((d = verify_jstr(rec, "domain")) == NULL ||
		    !verify_due(rec, c, now) || verify_busy(d))
			continue;
		if ((run = verify_run_new(c, rec, &e)) == NULL)
			continue;
		job = xcalloc(1, sizeof(*job));
		job->run = run;
		job->conf = verify_conf_copy(c);
		job->next = vd.jobs;
		vd.jobs = job;
		n++;
		log_debug("event=domain_verify domain=%s status=start", d);
		verify_run_start(run, vd.dns, verify_job_looked_up, job);
	}
	json_decref(list);
again:
	tv.tv_sec = verify_tick_period(c);
	evtimer_add(vd.timer, &tv);
}

void
verify_daemon_start(struct event_base *base, struct store *s,
    struct petrel_conf **confp)
{
	struct timeval tv = { 1, 0 };

	vd.base = base;
	vd.store = s;
	vd.confp = confp;
	vd.stopped = 0;
	if ((vd.timer = evtimer_new(base, verify_tick, NULL)) == NULL)
		fatalx("verify: cannot create the timer");
	/* first scan a second after start-up */
	evtimer_add(vd.timer, &tv);
}

void
verify_daemon_stop(void)
{
	struct verify_job *j, *next;
	struct timespec ts;

	if (vd.timer == NULL)
		return;
	vd.stopped = 1;
	event_free(vd.timer);
	vd.timer = NULL;
	/* runs still looking up: cancel and free; runs on a worker: their
	 * done callback frees them (or they stay listed until exit) */
	for (j = vd.jobs; j != NULL; j = next) {
		next = j->next;
		if (!j->in_worker)
			verify_job_free(j);
	}
	if (vd.dns != NULL)
		dns_free(vd.dns);
	vd.dns = NULL;
	free(vd.dns_resolver);
	vd.dns_resolver = NULL;
	/* no store write may outlive store_close() */
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += (VERIFY_SPF_TIMEOUT_MS / 1000) + 20;
	pthread_mutex_lock(&vd.mtx);
	while (vd.working > 0)
		if (pthread_cond_timedwait(&vd.cond, &vd.mtx, &ts) != 0)
			break;
	if (vd.working > 0)
		log_warn("event=domain_verify status=error reason=\"%d run(s) "
		    "still on a worker at shutdown\"", vd.working);
	pthread_mutex_unlock(&vd.mtx);
}
