/*
 * authres.c - SPF, DKIM and DMARC results of this hop for a relayed
 * message (the ARC-Authentication-Results of arc.c), run on worker
 * threads with synchronous DNS.
 *
 * One libunbound context per struct authres_dns, forwarding to the
 * configured resolver, answers everything: libspf2 through a custom DNS
 * layer (SPF_dns_server_t whose lookup() asks libunbound), libopendkim
 * through its key lookup hook (dkim_set_key_lookup), and DMARC's record
 * is fetched here and handed to libopendmarc with
 * opendmarc_policy_store_dmarc() (its own query would use libresolv).
 */
#include "autoconf.h"

#include <sys/types.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <netdb.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <unbound.h>
#include <spf2/spf.h>
#include <spf2/spf_dns.h>
#include <opendkim/dkim.h>
#include <opendmarc/dmarc.h>

#include "authres.h"
#include "dkim.h"
#include "dns.h"
#include "util.h"

struct authres_dns {
	struct ub_ctx		*ub;
	SPF_server_t		*spf;
	SPF_dns_server_t	*spf_dns;
};

static pthread_once_t authres_once = PTHREAD_ONCE_INIT;
static DKIM_LIB *authres_dkim_lib;
static int authres_dmarc_ok;

/* ------------------------------------------------------------ DNS */

/* authres_fwd - "IP:PORT" / "[IPv6]:PORT" / "IP" -> "IP@PORT" */
static char *
authres_fwd(const char *r)
{
	const char *colon;

	if (*r == '[') {
		const char *rb = strchr(r, ']');

		if (rb == NULL)
			return NULL;
		if (rb[1] == ':')
			return xasprintf("%.*s@%s", (int)(rb - r - 1), r + 1,
			    rb + 2);
		return xstrndup(r + 1, (size_t)(rb - r - 1));
	}
	colon = strchr(r, ':');
	if (colon != NULL && strchr(colon + 1, ':') == NULL)
		return xasprintf("%.*s@%s", (int)(colon - r), r, colon + 1);
	return xstrdup(r);
}

/* authres_resolve - one synchronous query; the result or NULL */
static struct ub_result *
authres_resolve(struct authres_dns *d, const char *name, int type)
{
	struct ub_result *res = NULL;

	if (!dns_name_valid(name))
		return NULL;
	if (ub_resolve(d->ub, name, type, 1 /* IN */, &res) != 0)
		return NULL;
	return res;
}

int
authres_dns_txt(void *arg, const char *name, char **txt_r)
{
	struct authres_dns *d = arg;
	struct ub_result *res;
	char buf[AUTHRES_TXT_MAX + 1], *first = NULL;
	size_t olen;
	int i;

	*txt_r = NULL;
	if ((res = authres_resolve(d, name, 16 /* TXT */)) == NULL)
		return -1;
	if (res->rcode != 0 && res->rcode != 3) {
		ub_resolve_free(res);
		return -1;
	}
	for (i = 0; res->havedata && res->data[i] != NULL; i++) {
		if (dns_parse_txt(res->data[i], (size_t)res->len[i], buf,
		    sizeof(buf), &olen) == -1)
			continue;
		if (strstr(buf, "p=") != NULL) {
			free(first);
			*txt_r = xstrdup(buf);
			ub_resolve_free(res);
			return 0;
		}
		if (first == NULL)
			first = xstrdup(buf);
	}
	ub_resolve_free(res);
	*txt_r = first;
	return first != NULL ? 0 : 1;
}

/* authres_txt_prefix - the TXT record of name starting with prefix */
static int
authres_txt_prefix(struct authres_dns *d, const char *name,
    const char *prefix, char **txt_r)
{
	struct ub_result *res;
	char buf[AUTHRES_TXT_MAX + 1];
	size_t olen, plen = strlen(prefix);
	int i, r = 1;

	*txt_r = NULL;
	if ((res = authres_resolve(d, name, 16)) == NULL)
		return -1;
	if (res->rcode != 0 && res->rcode != 3)
		r = -1;
	for (i = 0; r == 1 && res->havedata && res->data[i] != NULL; i++)
		if (dns_parse_txt(res->data[i], (size_t)res->len[i], buf,
		    sizeof(buf), &olen) == 0 && olen >= plen &&
		    strncasecmp(buf, prefix, plen) == 0) {
			*txt_r = xstrdup(buf);
			r = 0;
		}
	ub_resolve_free(res);
	return r;
}

/* wire_name - uncompressed wire-format name to text (no final dot) */
static int
wire_name(const unsigned char *p, size_t len, char *out, size_t outsz)
{
	size_t i = 0, o = 0;

	while (i < len && p[i] != 0) {
		size_t l = p[i++];

		if (l > 63 || i + l > len || o + l + 2 > outsz)
			return -1;
		if (o > 0)
			out[o++] = '.';
		memcpy(out + o, p + i, l);
		o += l;
		i += l;
	}
	out[o] = '\0';
	return 0;
}

/* spf_lookup - libspf2's DNS layer on libunbound */
static SPF_dns_rr_t *
spf_lookup(SPF_dns_server_t *srv, const char *domain, ns_type type,
    int should_cache)
{
	struct authres_dns *d = srv->hook;
	struct ub_result *res;
	SPF_dns_rr_t *rr;
	int i, n = 0, qtype = type == ns_t_spf ? ns_t_txt : type;

	if ((res = authres_resolve(d, domain, qtype)) == NULL)
		return SPF_dns_rr_new_init(srv, domain, type, 0, TRY_AGAIN);
	if (res->rcode == 3 || (res->rcode == 0 && !res->havedata)) {
		rr = SPF_dns_rr_new_init(srv, domain, type, 0,
		    res->rcode == 3 ? HOST_NOT_FOUND : NO_DATA);
		ub_resolve_free(res);
		return rr;
	}
	if (res->rcode != 0) {
		ub_resolve_free(res);
		return SPF_dns_rr_new_init(srv, domain, type, 0, TRY_AGAIN);
	}
	rr = SPF_dns_rr_new_init(srv, domain, type, res->ttl, NETDB_SUCCESS);
	for (i = 0; rr != NULL && res->data[i] != NULL; i++) {
		const unsigned char *p = (const unsigned char *)res->data[i];
		size_t len = (size_t)res->len[i];
		char buf[AUTHRES_TXT_MAX + 1];
		size_t olen;
		int pref;

		switch (qtype) {
		case ns_t_a:
			if (len != 4 || SPF_dns_rr_buf_realloc(rr, n, 4) !=
			    SPF_E_SUCCESS)
				continue;
			memcpy(&rr->rr[n]->a, p, 4);
			n++;
			break;
		case ns_t_aaaa:
			if (len != 16 || SPF_dns_rr_buf_realloc(rr, n, 16) !=
			    SPF_E_SUCCESS)
				continue;
			memcpy(&rr->rr[n]->aaaa, p, 16);
			n++;
			break;
		case ns_t_txt:
			if (dns_parse_txt(p, len, buf, sizeof(buf), &olen) == -1)
				continue;
			goto text;
		case ns_t_mx:
			if (dns_parse_mx(p, len, &pref, buf, sizeof(buf)) == -1)
				continue;
			olen = strlen(buf);
			goto text;
		case ns_t_ptr:
			if (wire_name(p, len, buf, sizeof(buf)) == -1)
				continue;
			olen = strlen(buf);
		text:
			if (SPF_dns_rr_buf_realloc(rr, n, olen + 1) !=
			    SPF_E_SUCCESS)
				continue;
			memcpy(rr->rr[n]->txt, buf, olen + 1);
			n++;
			break;
		default:
			break;
		}
	}
	if (rr != NULL) {
		rr->num_rr = n;
		if (n == 0)
			rr->herrno = NO_DATA;
	}
	ub_resolve_free(res);
	return rr;
}

struct authres_dns *
authres_dns_new(const char *resolver, char **err_r)
{
	struct authres_dns *d = xcalloc(1, sizeof(*d));
	char *fwd;
	int r;

	if ((d->ub = ub_ctx_create()) == NULL) {
		free(d);
		*err_r = xstrdup("cannot create libunbound context");
		return NULL;
	}
	ub_ctx_set_option(d->ub, "do-not-query-localhost:", "no");
	ub_ctx_set_option(d->ub, "local-zone:", "test. transparent");
	ub_ctx_set_option(d->ub, "local-zone:", "invalid. transparent");
	if (resolver != NULL && *resolver != '\0') {
		if ((fwd = authres_fwd(resolver)) == NULL) {
			*err_r = xasprintf("bad resolver %s", resolver);
			goto fail;
		}
		r = ub_ctx_set_fwd(d->ub, fwd);
		free(fwd);
	} else {
		r = ub_ctx_resolvconf(d->ub, NULL);
		if (r == 0)
			r = ub_ctx_hosts(d->ub, NULL);
	}
	if (r != 0) {
		*err_r = xasprintf("resolver %s: %s",
		    resolver ? resolver : "(resolv.conf)", ub_strerror(r));
		goto fail;
	}
	d->spf_dns = xcalloc(1, sizeof(*d->spf_dns));
	d->spf_dns->lookup = spf_lookup;
	d->spf_dns->name = "petrel-unbound";
	d->spf_dns->hook = d;
	if ((d->spf = SPF_server_new_dns(d->spf_dns, 0)) == NULL) {
		free(d->spf_dns);
		*err_r = xstrdup("cannot create SPF server");
		goto fail;
	}
	return d;
fail:
	ub_ctx_delete(d->ub);
	free(d);
	return NULL;
}

void
authres_dns_free(struct authres_dns *d)
{
	if (d == NULL)
		return;
	/* SPF_server_new_dns() servers do not own their DNS layer */
	if (d->spf != NULL)
		SPF_server_free(d->spf);
	free(d->spf_dns);
	ub_ctx_delete(d->ub);
	free(d);
}

/* ------------------------------------------------------------ DKIM */

/* authres_key_lookup - libopendkim's key hook on our resolver */
static DKIM_STAT
authres_key_lookup(DKIM *dkim, DKIM_SIGINFO *sig, u_char *buf, size_t buflen)
{
	struct authres_dns *d = dkim_get_user_context(dkim);
	const char *dom = (const char *)dkim_sig_getdomain(sig);
	const char *sel = (const char *)dkim_sig_getselector(sig);
	char *name, *txt = NULL;
	int r;

	if (d == NULL || dom == NULL || sel == NULL)
		return DKIM_STAT_KEYFAIL;
	name = xasprintf("%s._domainkey.%s", sel, dom);
	r = authres_dns_txt(d, name, &txt);
	free(name);
	if (r != 0)
		return r > 0 ? DKIM_STAT_NOKEY : DKIM_STAT_KEYFAIL;
	if (strlen(txt) >= buflen) {
		free(txt);
		return DKIM_STAT_KEYFAIL;
	}
	util_strlcpy((char *)buf, txt, buflen);
	free(txt);
	return DKIM_STAT_OK;
}

static void
authres_init_once(void)
{
	OPENDMARC_LIB_T dl;

	authres_dkim_lib = dkim_init(NULL, NULL);
	if (authres_dkim_lib == NULL)
		fatalx("authres: dkim_init failed");
	dkim_set_key_lookup(authres_dkim_lib, authres_key_lookup);
	memset(&dl, 0, sizeof(dl));
	dl.tld_type = OPENDMARC_TLD_TYPE_NONE;
	authres_dmarc_ok = opendmarc_policy_library_init(&dl) ==
	    DMARC_PARSE_OKAY;
}

/* one verified signature */
struct authres_sig {
	char	*domain, *selector, *b;
	int	 pass;
	const char *result;
};

/* authres_dkim - verify every DKIM-Signature; *nsigs_r of them */
static int
authres_dkim(struct authres_dns *d, const char *msg, size_t len,
    struct authres_sig *sigs, int *nsigs_r, const char **err_r)
{
	DKIM_STAT st;
	DKIM *dkim;
	DKIM_SIGINFO **list;
	int n = 0, i;

	*nsigs_r = 0;
	dkim = dkim_verify(authres_dkim_lib, (const u_char *)"authres", NULL,
	    &st);
	if (dkim == NULL) {
		*err_r = "dkim_verify failed";
		return -1;
	}
	dkim_set_user_context(dkim, d);
	st = dkim_chunk(dkim, (u_char *)(uintptr_t)msg, len);
	if (st == DKIM_STAT_OK)
		st = dkim_chunk(dkim, NULL, 0);
	if (st == DKIM_STAT_OK || st == DKIM_STAT_NOSIG)
		st = dkim_eom(dkim, NULL);
	if (dkim_getsiglist(dkim, &list, &n) == DKIM_STAT_OK) {
		for (i = 0; i < n && *nsigs_r < AUTHRES_SIGS_MAX; i++) {
			struct authres_sig *s = &sigs[*nsigs_r];
			const u_char *dom = dkim_sig_getdomain(list[i]);
			const u_char *sel = dkim_sig_getselector(list[i]);
			u_char bbuf[16];
			size_t blen = sizeof(bbuf);
			int err = dkim_sig_geterror(list[i]);

			if (dom == NULL)
				continue;
			memset(s, 0, sizeof(*s));
			s->domain = xstrdup((const char *)dom);
			util_lower(s->domain);
			s->selector = xstrdup(sel ? (const char *)sel : "");
			if (dkim_get_sigsubstring(dkim, list[i], (char *)bbuf,
			    &blen) == DKIM_STAT_OK)
				s->b = xstrndup((char *)bbuf, blen > 8 ? 8 :
				    blen);
			s->pass = DKIM_SIG_CHECK(list[i]);
			if (s->pass)
				s->result = "pass";
			else if (err == DKIM_SIGERROR_KEYFAIL ||
			    err == DKIM_SIGERROR_DNSSYNTAX)
				s->result = "temperror";
			else if (err == DKIM_SIGERROR_NOKEY ||
			    err == DKIM_SIGERROR_KEYREVOKED)
				s->result = "permerror";
			else if ((dkim_sig_getflags(list[i]) &
			    DKIM_SIGFLAG_PROCESSED) == 0)
				s->result = "neutral";
			else
				s->result = "fail";
			(*nsigs_r)++;
		}
	}
	dkim_free(dkim);
	return 0;
}

/* ------------------------------------------------------------ main */

static const char *
authres_spf_str(SPF_result_t r)
{
	switch (r) {
	case SPF_RESULT_PASS:		return "pass";
	case SPF_RESULT_FAIL:		return "fail";
	case SPF_RESULT_SOFTFAIL:	return "softfail";
	case SPF_RESULT_NEUTRAL:	return "neutral";
	case SPF_RESULT_NONE:		return "none";
	case SPF_RESULT_TEMPERROR:	return "temperror";
	case SPF_RESULT_PERMERROR:	return "permerror";
	default:			return "permerror";
	}
}

/* authres_clean - a value safe inside a header (no CR/LF/;/space) */
static char *
authres_clean(const char *s)
{
	char *c = util_sanitize(s, 256), *p;

	for (p = c; *p != '\0'; p++)
		if (*p == ';' || *p == ' ' || *p == '\t' || *p == '"' ||
		    *p == '(' || *p == ')')
			*p = '_';
	return c;
}

int
authres_evaluate(const struct authres_input *in, struct authres_dns *d,
    char **result_r, char **err_r)
{
	struct dkim_buf out = { 0 };
	struct authres_sig sigs[AUTHRES_SIGS_MAX];
	struct dkim_msg m;
	SPF_request_t *req = NULL;
	SPF_response_t *resp = NULL;
	SPF_result_t spf = SPF_RESULT_NONE;
	const char *err = NULL, *spf_dom = NULL, *dmarc = "none";
	char *from = NULL, *mf = NULL, *helo = NULL, *rec = NULL, *c;
	struct in6_addr a6;
	int nsigs = 0, i, v6, dkim_st;

	*result_r = NULL;
	if (in->client_ip == NULL || in->msg == NULL) {
		*err_r = xstrdup("authres: no client IP or message");
		return -1;
	}
	pthread_once(&authres_once, authres_init_once);
	v6 = inet_pton(AF_INET6, in->client_ip, &a6) == 1;
	if (dkim_msg_parse(in->msg, in->len, &m, &err) == -1) {
		*err_r = xasprintf("authres: %s", err);
		return -1;
	}
	from = dkim_from_domain(&m);
	dkim_msg_clear(&m);

	/* SPF: MAIL FROM, or postmaster@HELO for the null sender */
	helo = xstrdup(in->helo ? in->helo : "");
	if (in->mail_from != NULL && strchr(in->mail_from, '@') != NULL) {
		mf = xstrdup(in->mail_from);
		spf_dom = strrchr(mf, '@') + 1;
	} else
		spf_dom = helo;
	req = SPF_request_new(d->spf);
	if ((v6 ? SPF_request_set_ipv6_str(req, in->client_ip) :
	    SPF_request_set_ipv4_str(req, in->client_ip)) != SPF_E_SUCCESS) {
		*err_r = xasprintf("authres: bad client IP %s", in->client_ip);
		SPF_request_free(req);
		free(from);
		free(helo);
		free(mf);
		return -1;
	}
	if (*helo != '\0')
		SPF_request_set_helo_dom(req, helo);
	if (mf != NULL)
		SPF_request_set_env_from(req, mf);
	if (mf != NULL || *helo != '\0') {
		SPF_request_query_mailfrom(req, &resp);
		if (resp != NULL)
			spf = SPF_response_result(resp);
	}
	c = authres_clean(mf != NULL ? mf : helo);
	dkim_buf_str(&out, "spf=");
	dkim_buf_str(&out, authres_spf_str(spf));
	dkim_buf_str(&out, mf != NULL ? " smtp.mailfrom=" : " smtp.helo=");
	dkim_buf_str(&out, c);
	free(c);
	if (resp != NULL)
		SPF_response_free(resp);
	SPF_request_free(req);

	/* DKIM */
	dkim_st = authres_dkim(d, in->msg, in->len, sigs, &nsigs, &err);
	if (dkim_st == 0 && nsigs == 0)
		dkim_buf_str(&out, "; dkim=none");
	for (i = 0; i < nsigs; i++) {
		dkim_buf_str(&out, "; dkim=");
		dkim_buf_str(&out, sigs[i].result);
		c = authres_clean(sigs[i].domain);
		dkim_buf_str(&out, " header.d=");
		dkim_buf_str(&out, c);
		free(c);
		c = authres_clean(sigs[i].selector);
		dkim_buf_str(&out, " header.s=");
		dkim_buf_str(&out, c);
		free(c);
		if (sigs[i].b != NULL) {
			c = authres_clean(sigs[i].b);
			dkim_buf_str(&out, " header.b=");
			dkim_buf_str(&out, c);
			free(c);
		}
	}
	if (dkim_st != 0)
		dkim_buf_str(&out, "; dkim=temperror");

	/* DMARC: the From domain's record (or its parent's two labels) */
	if (from != NULL && authres_dmarc_ok) {
		char *name = xasprintf("_dmarc.%s", from);
		const char *org = from, *dot;
		int r;

		r = authres_txt_prefix(d, name, "v=DMARC1", &rec);
		free(name);
		/* without a public suffix list: the last two labels */
		for (dot = from + strlen(from); dot > from; dot--)
			if (*dot == '.' && dot != from + strlen(from)) {
				const char *p2 = dot - 1;

				while (p2 > from && *p2 != '.')
					p2--;
				org = *p2 == '.' ? p2 + 1 : from;
				break;
			}
		if (r == 1 && strcmp(org, from) != 0) {
			name = xasprintf("_dmarc.%s", org);
			r = authres_txt_prefix(d, name, "v=DMARC1", &rec);
			free(name);
		}
		if (r == -1)
			dmarc = "temperror";
		else if (r == 0) {
			DMARC_POLICY_T *p = opendmarc_policy_connect_init(
			    (u_char *)(uintptr_t)in->client_ip,
			    v6 ? DMARC_POLICY_IP_TYPE_IPV6 :
			    DMARC_POLICY_IP_TYPE_IPV4);
			int pol;

			if (p == NULL)
				dmarc = "temperror";
			else {
				opendmarc_policy_store_from_domain(p,
				    (u_char *)from);
				if (spf_dom != NULL && *spf_dom != '\0')
					opendmarc_policy_store_spf(p,
					    (u_char *)(uintptr_t)spf_dom,
					    spf == SPF_RESULT_PASS ?
					    DMARC_POLICY_SPF_OUTCOME_PASS :
					    spf == SPF_RESULT_TEMPERROR ?
					    DMARC_POLICY_SPF_OUTCOME_TMPFAIL :
					    spf == SPF_RESULT_NONE ?
					    DMARC_POLICY_SPF_OUTCOME_NONE :
					    DMARC_POLICY_SPF_OUTCOME_FAIL,
					    mf != NULL ?
					    DMARC_POLICY_SPF_ORIGIN_MAILFROM :
					    DMARC_POLICY_SPF_ORIGIN_HELO, NULL);
				for (i = 0; i < nsigs; i++)
					opendmarc_policy_store_dkim(p,
					    (u_char *)sigs[i].domain,
					    (u_char *)sigs[i].selector,
					    sigs[i].pass ?
					    DMARC_POLICY_DKIM_OUTCOME_PASS :
					    DMARC_POLICY_DKIM_OUTCOME_FAIL,
					    NULL);
				if (opendmarc_policy_store_dmarc(p,
				    (u_char *)rec, (u_char *)from,
				    (u_char *)(uintptr_t)org) !=
				    DMARC_PARSE_OKAY)
					dmarc = "permerror";
				else {
					pol = opendmarc_get_policy_to_enforce(p);
					dmarc = pol == DMARC_POLICY_PASS ?
					    "pass" : pol == DMARC_POLICY_ABSENT ?
					    "none" : "fail";
				}
				opendmarc_policy_connect_shutdown(p);
			}
		}
	}
	dkim_buf_str(&out, "; dmarc=");
	dkim_buf_str(&out, dmarc);
	if (from != NULL) {
		c = authres_clean(from);
		dkim_buf_str(&out, " header.from=");
		dkim_buf_str(&out, c);
		free(c);
	}
	for (i = 0; i < nsigs; i++) {
		free(sigs[i].domain);
		free(sigs[i].selector);
		free(sigs[i].b);
	}
	free(rec);
	free(from);
	free(helo);
	free(mf);
	*result_r = out.p;
	return 0;
}
