/*
 * unsub.c - RFC 8058 one-click unsubscribe (see unsub.h).
 *
 * A token is  base64url(tenant NUL rcpt) "." base64url(MAC)  where MAC is
 * HMAC-SHA256, keyed with a 32-byte secret, over "petrel-unsub-v1" NUL
 * tenant NUL rcpt (rcpt lower-cased). The secret is created on first use
 * in the store's meta database (key "unsub_secret"; MDB_NOOVERWRITE, so
 * two processes racing agree on one) and cached per process. Without the
 * secret nobody can make a token for another recipient or tenant; the
 * MAC is compared in constant time. The token carries the recipient's
 * address in the clear (base64): it goes only to that recipient.
 *
 * The URL is <base>/u/<token>, base from unsubscribe_base_url, else
 * apikey_endpoint, else https://<first listen_https address>.
 */
#include "autoconf.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <lmdb.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "config.h"
#include "limits.h"
#include "queue.h"
#include "store.h"
#include "suppress.h"
#include "unsub.h"
#include "util.h"

#define UNSUB_SECRET_LEN	32
#define UNSUB_MAC_LEN		32
#define UNSUB_SECRET_KEY	"unsub_secret"
#define UNSUB_MAC_LABEL		"petrel-unsub-v1"
/* tenant NUL rcpt [NUL qid]: tokens made before the queue id was added
 * have no third part and stay valid */
#define UNSUB_PAYLOAD_MAX	(NAME_MAX_LEN + 1 + ADDRESS_MAX_LEN + 1 + \
				 QUEUE_ID_LEN)
#define UNSUB_LINE_MAX		998	/* RFC 5322 line limit */

/* unsub_secret - the HMAC key of unsubscribe tokens (store_secret) */
static int
unsub_secret(struct store *st, int create, unsigned char out[UNSUB_SECRET_LEN])
{
	return store_secret(st, UNSUB_SECRET_KEY, create, out);
}

/* unsub_mac - HMAC over label NUL tenant NUL rcpt */
static void
unsub_mac(const unsigned char secret[UNSUB_SECRET_LEN], const char *payload,
    size_t plen, unsigned char mac[UNSUB_MAC_LEN])
{
	unsigned char msg[sizeof(UNSUB_MAC_LABEL) + UNSUB_PAYLOAD_MAX];
	unsigned int maclen = 0;

	if (plen > UNSUB_PAYLOAD_MAX)
		fatalx("unsub_mac: payload too long");
	memcpy(msg, UNSUB_MAC_LABEL, sizeof(UNSUB_MAC_LABEL));	/* + NUL */
	memcpy(msg + sizeof(UNSUB_MAC_LABEL), payload, plen);
	if (HMAC(EVP_sha256(), secret, UNSUB_SECRET_LEN, msg,
	    sizeof(UNSUB_MAC_LABEL) + plen, mac, &maclen) == NULL ||
	    maclen != UNSUB_MAC_LEN)
		fatalx("unsub_mac: HMAC failed");
}

/* unsub_payload - tenant NUL lower(rcpt) [NUL qid] into buf; its length,
 * 0 when one is invalid */
static size_t
unsub_payload(const char *tenant, const char *rcpt, const char *qid,
    char buf[UNSUB_PAYLOAD_MAX])
{
	const char *err;
	size_t tl, rl;

	if (tenant == NULL || rcpt == NULL ||
	    store_valid_name(tenant, &err) == -1 ||
	    suppress_valid_address(rcpt, &err) == -1 ||
	    (qid != NULL && queue_id_valid(qid) != 0))
		return 0;
	tl = strlen(tenant);
	rl = strlen(rcpt);
	memcpy(buf, tenant, tl);
	buf[tl] = '\0';
	memcpy(buf + tl + 1, rcpt, rl);
	for (size_t i = tl + 1; i < tl + 1 + rl; i++)
		if (buf[i] >= 'A' && buf[i] <= 'Z')
			buf[i] = (char)(buf[i] - 'A' + 'a');
	if (qid == NULL)
		return tl + 1 + rl;
	buf[tl + 1 + rl] = '\0';
	memcpy(buf + tl + 2 + rl, qid, QUEUE_ID_LEN);
	return tl + 2 + rl + QUEUE_ID_LEN;
}

char *
unsub_token(struct store *st, const char *tenant, const char *rcpt,
    const char *qid)
{
	unsigned char secret[UNSUB_SECRET_LEN], mac[UNSUB_MAC_LEN];
	char payload[UNSUB_PAYLOAD_MAX], *p, *m, *tok;
	size_t plen;

	if ((plen = unsub_payload(tenant, rcpt, qid, payload)) == 0 ||
	    unsub_secret(st, 1, secret) == -1)
		return NULL;
	unsub_mac(secret, payload, plen, mac);
	explicit_bzero(secret, sizeof(secret));
	p = util_b64url_encode(payload, plen);
	m = util_b64url_encode(mac, sizeof(mac));
	tok = xasprintf("%s.%s", p, m);
	free(p);
	free(m);
	return tok;
}

int
unsub_token_parse(struct store *st, const char *token, char **tenant_r,
    char **rcpt_r, char **qid_r)
{
	unsigned char secret[UNSUB_SECRET_LEN], mac[UNSUB_MAC_LEN];
	unsigned char got[UNSUB_MAC_LEN + 3];
	unsigned char payload[UNSUB_PAYLOAD_MAX + 8];
	const char *dot, *nul, *nul2, *qid = NULL;
	char norm[UNSUB_PAYLOAD_MAX];
	size_t len, plen_enc;
	long plen, mlen;
	int ok;

	if (token == NULL || (len = strlen(token)) > UNSUB_TOKEN_MAX ||
	    (dot = strchr(token, '.')) == NULL || strchr(dot + 1, '.') != NULL)
		return -1;
	plen_enc = (size_t)(dot - token);
	if (plen_enc == 0 || plen_enc > (UNSUB_PAYLOAD_MAX + 2) / 3 * 4 ||
	    len - plen_enc - 1 != (UNSUB_MAC_LEN * 4 + 2) / 3)
		return -1;
	if ((plen = util_b64url_decode(token, plen_enc, payload)) <= 0 ||
	    plen > UNSUB_PAYLOAD_MAX ||
	    (mlen = util_b64url_decode(dot + 1, len - plen_enc - 1, got)) !=
	    UNSUB_MAC_LEN)
		return -1;
	/* tenant NUL rcpt [NUL qid] */
	if ((nul = memchr(payload, '\0', (size_t)plen)) == NULL)
		return -1;
	payload[plen] = '\0';
	if ((nul2 = memchr(nul + 1, '\0', (size_t)plen - (size_t)(nul + 1 -
	    (const char *)payload))) != NULL) {
		if ((const unsigned char *)nul2 + 1 + QUEUE_ID_LEN !=
		    payload + plen)
			return -1;
		qid = nul2 + 1;
	}
	/* the same canonical form unsub_token MACs */
	if (unsub_payload((const char *)payload, nul + 1, qid, norm) !=
	    (size_t)plen || memcmp(norm, payload, (size_t)plen) != 0)
		return -1;
	if (unsub_secret(st, 0, secret) == -1)
		return -1;
	unsub_mac(secret, norm, (size_t)plen, mac);
	explicit_bzero(secret, sizeof(secret));
	ok = util_ct_compare(mac, got, UNSUB_MAC_LEN) == 0;
	if (!ok)
		return -1;
	*tenant_r = xstrdup((const char *)payload);
	*rcpt_r = xstrdup(nul + 1);
	if (qid_r != NULL)
		*qid_r = qid != NULL ? xstrdup(qid) : NULL;
	return 0;
}

char *
unsub_base_url(const struct petrel_conf *cf)
{
	const struct conf_listen *l = &cf->listen_https;
	const char *v = cf->unsubscribe_base_url, *host;
	size_t n;

	if (v == NULL || *v == '\0')
		v = cf->apikey_endpoint;
	if (v != NULL && *v != '\0') {
		n = strlen(v);
		while (n > 0 && v[n - 1] == '/')
			n--;
		return xstrndup(v, n);
	}
	if (l->n <= 0)
		return NULL;
	host = l->host[0];
	if (host == NULL || *host == '\0' || strcmp(host, "*") == 0)
		host = cf->hostname ? cf->hostname : "localhost";
	return xasprintf(strchr(host, ':') != NULL ? "https://[%s]:%s" :
	    "https://%s:%s", host, l->port[0]);
}

char *
unsub_url(struct store *st, const struct petrel_conf *cf, const char *tenant,
    const char *rcpt, const char *qid)
{
	char *base, *tok, *url;

	if ((base = unsub_base_url(cf)) == NULL)
		return NULL;
	if ((tok = unsub_token(st, tenant, rcpt, qid)) == NULL) {
		free(base);
		return NULL;
	}
	url = xasprintf("%s/u/%s", base, tok);
	free(base);
	free(tok);
	return url;
}

char *
unsub_headers(struct store *st, const struct petrel_conf *cf,
    const json_t *domain_rec, const char *tenant, const char *rcpt,
    const char *qid)
{
	const char *mailto = cf->unsubscribe_mailto;
	char *url, *first, *out;
	size_t flen;

	if (!json_is_true(json_object_get(domain_rec, "unsubscribe")))
		return NULL;
	if ((url = unsub_url(st, cf, tenant, rcpt, qid)) == NULL)
		return NULL;
	first = xasprintf("List-Unsubscribe: <%s>", url);
	free(url);
	flen = strlen(first);
	if (mailto != NULL && *mailto != '\0' &&
	    strlen(mailto) <= ADDRESS_MAX_LEN)
		/* fold before the second URI when the line would pass 78 */
		out = xasprintf("%s,%s<mailto:%s?subject=unsubscribe>\r\n"
		    "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n",
		    first, flen + 2 + strlen(mailto) + 28 > 78 ? "\r\n " : " ",
		    mailto);
	else
		out = xasprintf("%s\r\n"
		    "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n",
		    first);
	free(first);
	if (flen > UNSUB_LINE_MAX) {
		free(out);
		return NULL;
	}
	return out;
}

int
unsub_apply(struct store *st, const char *token, char **tenant_r,
    char **rcpt_r, char **qid_r, char **err_r)
{
	char *tenant, *rcpt, *qid;

	*err_r = NULL;
	if (unsub_token_parse(st, token, &tenant, &rcpt, &qid) == -1) {
		*err_r = xstrdup("invalid unsubscribe link");
		return -1;
	}
	if (suppress_add(st, tenant, rcpt, NULL, NULL, "unsubscribe", qid,
	    err_r) == -1) {
		free(tenant);
		free(rcpt);
		free(qid);
		return -1;
	}
	*tenant_r = tenant;
	*rcpt_r = rcpt;
	*qid_r = qid;
	return 0;
}
