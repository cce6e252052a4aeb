/*
 * http_api.c - the HTTP API on libevent's evhttp: the Azure Communication
 * Services Email REST API, so that applications written with the Azure
 * SDKs send through Petrel by changing their connection string.
 *
 *   POST /emails:send?api-version=V        EmailMessage JSON -> 202
 *   GET  /emails/operations/ID?api-version=V  -> {"id","status","error"}
 *   GET  /events?since=CURSOR[&limit=N][&types=a,b]  the tenant's events
 *                                         -> {"events":[...],"next":CURSOR}
 *   /admin/...                            operator key: see http_admin
 *
 * Two evhttp servers share one request handler: listen_https (TLS with
 * tls_cert/tls_key: every connection gets an OpenSSL bufferevent from
 * http_bevcb) and listen_http (plain, for a local reverse proxy).
 *
 * Authentication is ACS's access-key scheme (http_auth): x-ms-date within
 * 15 minutes, x-ms-content-sha256 equal to the body's hash, and an
 * HMAC-SHA256 signature over "VERB\nPATH?QUERY\nDATE;HOST;HASH" keyed with
 * the access key; or "Authorization: Bearer KEY". The HMAC does not name
 * its key: apikey_hmac_find tries them all (see apikey.h).
 *
 * A send runs on the main loop: parse (jansson, which bounds nesting and
 * checks UTF-8), build the MIME message (mime_build), check the sender
 * domain (store_sender_check, the SMTP policy), then queue_submit. The
 * 202 goes out from the queue's callback, after the group commit.
 *
 * Operation ids (the Operation-Id request header, else a new UUID) are
 * per tenant: the record 'o' + tenant + NUL + id -> queue id in the
 * apikeys database is written by the queue writer in the same
 * transaction as the message (queue_envelope's aux record), so an
 * operation exists exactly when its message does; a crash can lose
 * neither half alone. A repeated Operation-Id answers the first result
 * without queueing anything: from that record once committed, or by
 * joining the request still waiting for the commit (http_ops).
 */
#include "autoconf.h"

#include <sys/types.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <errno.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>
#include <lmdb.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>

#include "admin.h"
#include "apikey.h"
#include "config.h"
#include "events.h"
#include "http_api.h"
#include "limits.h"
#include "log.h"
#include "netaddr.h"
#include "metrics.h"
#include "mime.h"
#include "petrel.h"
#include "queue.h"
#include "store.h"
#include "suppress.h"
#include "tracking.h"
#include "unsub.h"
#include "util.h"
#include "worker.h"

#define HTTP_HEADERS_MAX	(64 * 1024)	/* request line + headers */
#define HTTP_TIMEOUT_SECS	60		/* idle/read/write per request */
#define HTTP_BACKLOG		1024
#define HTTP_DATE_SKEW		(15 * 60)	/* x-ms-date tolerance */
#define HTTP_RETRY_AFTER	"5"		/* seconds, for the poller */
#define HTTP_OPID_MAX		64		/* Operation-Id characters */
#define HTTP_APIVER_MAX		32
#define HTTP_APIVER_DEFAULT	"2023-03-31"
#define HTTP_HOST_MAX		255
#define HTTP_SIGNED_MAX		8		/* SignedHeaders entries */
#define HTTP_AUTH_MAX		512		/* Authorization header */
#define HTTP_PATH_LOG_MAX	128
#define HTTP_ERRMSG_MAX		1024		/* Failed: error.message */
#define HTTP_UUID_LEN		36
#define HTTP_OPKEY_MAX		(1 + NAME_MAX_LEN + 1 + HTTP_OPID_MAX)
#define HTTP_ADMIN_KEY_MAX	256

/* one evhttp per kind of listener */
struct http_server {
	struct evhttp	*http;
	int		 tls;
	const char	*kind;		/* "https", "http" */
};

struct http_sock {
	struct http_sock		*next;
	struct http_server		*srv;
	int				 fd;
	struct evhttp_bound_socket	*bound;
	char				 addr[INET6_ADDRSTRLEN + 16];
};

/* the request being handled (synchronous part) */
struct http_ctx {
	struct evhttp_request	*req;
	struct http_server	*srv;
	enum evhttp_cmd_type	 cmd;
	const char		*method;
	const char		*uri;		/* request-URI as received */
	char			*pathq;		/* origin-form PATH[?QUERY] */
	char			*path;		/* PATH only */
	const char		*query;		/* inside pathq, or "" */
	char			 apiver[HTTP_APIVER_MAX + 1];
	char			 rid[HTTP_UUID_LEN + 1];
	char			 ip[INET6_ADDRSTRLEN];
	const unsigned char	*body;
	size_t			 bodylen;
	char			*tenant;	/* authenticated key's */
	char			*keyname;
	int			 admin;		/* operator key */
};

/* a request waiting for its operation's commit */
struct http_waiter {
	struct http_waiter	*next;
	struct evhttp_request	*req;
	struct evhttp_connection *evcon;	/* NULL: connection gone */
	struct http_op		*op;
	char			*oploc;		/* Operation-Location */
	char			 rid[HTTP_UUID_LEN + 1];
	uint64_t		 t0;
};

/* an operation submitted to the queue, not yet committed */
struct http_op {
	struct http_op		*next;
	char			*tenant;
	char			*opid;
	char			 qid[QUEUE_ID_LEN + 1];
	struct queue_req	*qreq;
	struct http_waiter	*waiters;
};

typedef void (*http_handler)(struct http_ctx *);

#define HTTP_R_PREFIX	0x01	/* path is a prefix */
#define HTTP_R_KEY	0x02	/* tenant access key required */
#define HTTP_R_ADMIN	0x04	/* operator key required */

struct http_route {
	enum evhttp_cmd_type	 cmd;
	const char		*path;
	int			 flags;
	http_handler		 fn;
};

static void http_send(struct http_ctx *);
static void http_op_get(struct http_ctx *);
static void http_admin(struct http_ctx *);
static void http_suppressions(struct http_ctx *);
static void http_unsub(struct http_ctx *);
static void http_track(struct http_ctx *);
static void http_events(struct http_ctx *);

#define HTTP_ANY	((enum evhttp_cmd_type)0)	/* the handler decides */

static const struct http_route http_routes[] = {
	{ EVHTTP_REQ_POST, "/emails:send", HTTP_R_KEY, http_send },
	{ EVHTTP_REQ_GET, "/emails/operations/", HTTP_R_PREFIX | HTTP_R_KEY,
	    http_op_get },
	{ EVHTTP_REQ_GET, "/events", HTTP_R_KEY, http_events },
	{ HTTP_ANY, "/admin/", HTTP_R_PREFIX | HTTP_R_ADMIN, http_admin },
	{ HTTP_ANY, "/suppressions", HTTP_R_KEY, http_suppressions },
	{ HTTP_ANY, "/suppressions/", HTTP_R_PREFIX | HTTP_R_KEY,
	    http_suppressions },
	{ HTTP_ANY, "/u/", HTTP_R_PREFIX, http_unsub },	/* no API key */
	{ HTTP_ANY, "/t/", HTTP_R_PREFIX, http_track },	/* no API key */
};

static struct http_server http_servers[2] = {
	{ NULL, 1, "https" },
	{ NULL, 0, "http" },
};
static struct http_sock *http_socks;
static int http_nsocks;
static struct http_op *http_ops;
static unsigned http_nops;
static unsigned http_njobs;		/* admin requests on workers */
static char *http_admin_key;

/* --- small helpers --- */

/* http_uuid - a random (version 4) UUID, lower-case */
static void
http_uuid(char out[HTTP_UUID_LEN + 1])
{
	unsigned char b[16];

	util_random(b, sizeof(b));
	b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
	b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
	snprintf(out, HTTP_UUID_LEN + 1, "%02x%02x%02x%02x-%02x%02x-%02x%02x-"
	    "%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2], b[3], b[4],
	    b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
	    b[15]);
}

/* http_jstr - a JSON string of untrusted text: as is when valid UTF-8,
 * else with every byte outside printable ASCII replaced by '?' */
static json_t *
http_jstr(const char *s)
{
	json_t *j;
	char *t, *p;

	if (s == NULL)
		return json_null();
	if ((j = json_string(s)) != NULL)
		return j;
	t = xstrdup(s);
	for (p = t; *p; p++)
		if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
			*p = '?';
	j = json_string(t);
	free(t);
	return j != NULL ? j : json_string("?");
}

/* http_valid_opid - an operation id (or a client request id): 1 to
 * HTTP_OPID_MAX of A-Z a-z 0-9 - _ */
static int
http_valid_opid(const char *s, size_t len)
{
	size_t i;

	if (len == 0 || len > HTTP_OPID_MAX)
		return 0;
	for (i = 0; i < len; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') ||
		    (s[i] >= 'A' && s[i] <= 'Z') ||
		    (s[i] >= '0' && s[i] <= '9') || s[i] == '-' || s[i] == '_'))
			return 0;
	return 1;
}

/* http_valid_host - a Host header fit to be echoed in Operation-Location */
static int
http_valid_host(const char *h)
{
	size_t n = 0;

	for (; *h; h++, n++)
		if (!((*h >= 'a' && *h <= 'z') || (*h >= 'A' && *h <= 'Z') ||
		    (*h >= '0' && *h <= '9') || strchr(".-:[]", *h) != NULL))
			return 0;
	return n > 0 && n <= HTTP_HOST_MAX;
}

/* http_parse_date - RFC 1123 / IMF-fixdate "Sun, 06 Nov 1994 08:49:37 GMT"
 * (strict, locale-independent); -1 when malformed */
static int
http_parse_date(const char *s, time_t *t_r)
{
	static const char *months[] = { "Jan", "Feb", "Mar", "Apr", "May",
	    "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
	char wd[4], mon[4];
	int day, year, hh, mm, ss, n = 0, i;
	struct tm tm;

	if (strlen(s) > 40 || sscanf(s, "%3[A-Za-z], %2d %3[A-Za-z] %4d "
	    "%2d:%2d:%2d GMT%n", wd, &day, mon, &year, &hh, &mm, &ss, &n) != 7 ||
	    n == 0 || s[n] != '\0')
		return -1;
	for (i = 0; i < 12; i++)
		if (strcmp(mon, months[i]) == 0)
			break;
	if (i == 12 || day < 1 || day > 31 || year < 1970 || hh > 23 ||
	    mm > 59 || ss > 60 || hh < 0 || mm < 0 || ss < 0)
		return -1;
	memset(&tm, 0, sizeof(tm));
	tm.tm_year = year - 1900;
	tm.tm_mon = i;
	tm.tm_mday = day;
	tm.tm_hour = hh;
	tm.tm_min = mm;
	tm.tm_sec = ss;
	*t_r = timegm(&tm);
	return *t_r == (time_t)-1 ? -1 : 0;
}

static const char *
http_method_name(enum evhttp_cmd_type cmd)
{
	switch (cmd) {
	case EVHTTP_REQ_GET: return "GET";
	case EVHTTP_REQ_POST: return "POST";
	case EVHTTP_REQ_PUT: return "PUT";
	case EVHTTP_REQ_DELETE: return "DELETE";
	case EVHTTP_REQ_HEAD: return "HEAD";
	default: return "OTHER";
	}
}

static const char *
http_reason(int status)
{
	switch (status) {
	case 200: return "OK";
	case 201: return "Created";
	case 202: return "Accepted";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 409: return "Conflict";
	case 413: return "Payload Too Large";
	case 503: return "Service Unavailable";
	default: return "Internal Server Error";
	}
}

/* --- replies --- */

/* http_reply - send status with body j (consumed; NULL: empty) */
static void
http_reply(struct evhttp_request *req, const char *rid, int status,
    json_t *j)
{
	struct evkeyvalq *ih = evhttp_request_get_input_headers(req);
	struct evkeyvalq *oh = evhttp_request_get_output_headers(req);
	struct evbuffer *buf;
	const char *crid, *ret;
	char *s;

	evhttp_add_header(oh, "x-ms-request-id", rid);
	/* the Azure SDKs ask for their own request id back */
	if ((crid = evhttp_find_header(ih, "x-ms-client-request-id")) != NULL &&
	    (ret = evhttp_find_header(ih, "x-ms-return-client-request-id")) !=
	    NULL && strcasecmp(ret, "true") == 0 &&
	    http_valid_opid(crid, strlen(crid)))
		evhttp_add_header(oh, "x-ms-client-request-id", crid);
	if ((buf = evbuffer_new()) == NULL)
		fatalx("http: evbuffer_new failed");
	if (j != NULL) {
		if ((s = json_dumps(j, JSON_COMPACT)) == NULL)
			fatalx("http: json_dumps failed");
		evbuffer_add(buf, s, strlen(s));
		free(s);
		json_decref(j);
		evhttp_add_header(oh, "Content-Type",
		    "application/json; charset=utf-8");
	}
	evhttp_send_reply(req, status, http_reason(status), buf);
	evbuffer_free(buf);
}

/* http_log - the one line per request */
static void
http_log(const struct http_ctx *c, int status, const char *code,
    const char *extra)
{
	char *path = util_sanitize(c->path ? c->path : "?", HTTP_PATH_LOG_MAX);

	if (status >= 500)
		log_warn("rid=%s event=http kind=%s ip=%s method=%s path=%s "
		    "status=%d%s%s tenant=%s apikey=%s%s", c->rid, c->srv->kind,
		    c->ip, c->method, path, status, code ? " code=" : "",
		    code ? code : "", c->tenant ? c->tenant : "-",
		    c->keyname ? c->keyname : "-", extra ? extra : "");
	else
		log_info("rid=%s event=http kind=%s ip=%s method=%s path=%s "
		    "status=%d%s%s tenant=%s apikey=%s%s", c->rid, c->srv->kind,
		    c->ip, c->method, path, status, code ? " code=" : "",
		    code ? code : "", c->tenant ? c->tenant : "-",
		    c->keyname ? c->keyname : "-", extra ? extra : "");
	free(path);
}

/* http_error - the ACS error body {"error":{"code","message","target"}}
 * with the x-ms-error-code header, and the log line */
static void PRINTFLIKE(5, 6)
http_error(struct http_ctx *c, int status, const char *code,
    const char *target, const char *fmt, ...)
{
	struct evkeyvalq *oh = evhttp_request_get_output_headers(c->req);
	json_t *e;
	va_list ap;
	char *msg;

	va_start(ap, fmt);
	msg = xvasprintf(fmt, ap);
	va_end(ap);
	e = json_pack("{s:s, s:o}", "code", code, "message", http_jstr(msg));
	if (target != NULL)
		json_object_set_new(e, "target", http_jstr(target));
	evhttp_add_header(oh, "x-ms-error-code", code);
	if (status == 503)
		evhttp_add_header(oh, "Retry-After", HTTP_RETRY_AFTER);
	http_log(c, status, code, NULL);
	if (status >= 400 && status != 401 && status != 404)
		log_debug("rid=%s event=http_error message=\"%s\"", c->rid,
		    msg);
	http_reply(c->req, c->rid, status, json_pack("{s:o}", "error", e));
	free(msg);
}

/* --- authentication --- */

/* http_hdr - request header value or NULL */
static const char *
http_hdr(const struct http_ctx *c, const char *name)
{
	return evhttp_find_header(evhttp_request_get_input_headers(c->req),
	    name);
}

/* http_signed_value - the value of a signed header; x-ms-date falls back
 * on Date when absent, as ACS does */
static const char *
http_signed_value(const struct http_ctx *c, const char *name)
{
	const char *v = http_hdr(c, name);

	if (v == NULL && strcasecmp(name, "x-ms-date") == 0)
		v = http_hdr(c, "Date");
	return v;
}

/* http_auth_hmac - verify "HMAC-SHA256 SignedHeaders=...&Signature=..."
 * (params points after the scheme); 0 with c->tenant set, else -1 and
 * *why_r */
static int
http_auth_hmac(struct http_ctx *c, const char *params, const char **why_r)
{
	char buf[HTTP_AUTH_MAX + 1], *p, *item, *save = NULL, *signed_hdrs = NULL;
	char *sig = NULL, *names[HTTP_SIGNED_MAX], *h, *save2 = NULL;
	unsigned char mac[64];
	struct evbuffer *sts;
	const char *v, *datev = NULL;
	int n = 0, i, have_host = 0, have_hash = 0, have_date = 0, rc;
	long siglen;
	time_t t;
	int64_t now;

	if (util_strlcpy(buf, params, sizeof(buf)) >= sizeof(buf)) {
		*why_r = "Authorization header too long";
		return -1;
	}
	for (item = strtok_r(buf, "&", &save); item != NULL;
	    item = strtok_r(NULL, "&", &save)) {
		while (*item == ' ')
			item++;
		if (strncasecmp(item, "SignedHeaders=", 14) == 0)
			signed_hdrs = item + 14;
		else if (strncasecmp(item, "Signature=", 10) == 0)
			sig = item + 10;
	}
	if (signed_hdrs == NULL || sig == NULL) {
		*why_r = "Authorization header must carry SignedHeaders and "
		    "Signature";
		return -1;
	}
	for (h = strtok_r(signed_hdrs, ";", &save2); h != NULL;
	    h = strtok_r(NULL, ";", &save2)) {
		if (n == HTTP_SIGNED_MAX) {
			*why_r = "too many SignedHeaders";
			return -1;
		}
		names[n++] = h;
		if (strcasecmp(h, "host") == 0)
			have_host = 1;
		else if (strcasecmp(h, "x-ms-content-sha256") == 0)
			have_hash = 1;
		else if (strcasecmp(h, "x-ms-date") == 0 ||
		    strcasecmp(h, "date") == 0) {
			have_date = 1;
			datev = http_signed_value(c, h);
		}
	}
	if (!have_host || !have_hash || !have_date) {
		*why_r = "SignedHeaders must include x-ms-date (or date), host "
		    "and x-ms-content-sha256";
		return -1;
	}
	if (datev == NULL || http_parse_date(datev, &t) == -1) {
		*why_r = "Request 'x-ms-date' is missing or not an RFC 1123 date";
		return -1;
	}
	now = util_now();
	if ((int64_t)t < now - HTTP_DATE_SKEW ||
	    (int64_t)t > now + HTTP_DATE_SKEW) {
		*why_r = "Request 'x-ms-date' is more than 15 minutes away "
		    "from the server's time";
		return -1;
	}
	p = sig;
	/* 44 characters: base64 of 32 bytes (also bounds the decode) */
	if (strlen(p) != 44 || (siglen = util_b64_decode(p, strlen(p), mac)) !=
	    APIKEY_HMAC_LEN) {
		*why_r = "Signature is not a base64 HMAC-SHA256";
		return -1;
	}
	if ((sts = evbuffer_new()) == NULL)
		fatalx("http: evbuffer_new failed");
	evbuffer_add_printf(sts, "%s\n%s\n", c->method, c->pathq);
	for (i = 0; i < n; i++) {
		if ((v = http_signed_value(c, names[i])) == NULL) {
			evbuffer_free(sts);
			*why_r = "a signed header is missing from the request";
			return -1;
		}
		evbuffer_add_printf(sts, "%s%s", i ? ";" : "", v);
	}
	rc = apikey_hmac_find(env->store, evbuffer_pullup(sts, -1),
	    evbuffer_get_length(sts), mac, &c->tenant, &c->keyname);
	evbuffer_free(sts);
	if (rc == -1) {
		*why_r = "Denied by the resource provider.";
		return -1;
	}
	return 0;
}

/* http_auth - authenticate c (tenant key, or with admin the operator
 * key); on failure the 401 is sent and -1 returned */
static int
http_auth(struct http_ctx *c, int admin)
{
	unsigned char hash[SHA256_DIGEST_LENGTH], key[HTTP_ADMIN_KEY_MAX];
	const char *auth = http_hdr(c, "Authorization");
	const char *hdrhash = http_hdr(c, "x-ms-content-sha256");
	const char *why = "Denied by the resource provider.", *tok;
	char *b64;
	long klen;
	size_t tl;
	int hmac;

	if (auth == NULL) {
		why = "Missing Authorization header.";
		goto deny;
	}
	hmac = strncasecmp(auth, "HMAC-SHA256 ", 12) == 0;
	if (hdrhash != NULL) {
		/* HMAC signs the claimed hash: it must be the body's. A Bearer
		 * request need not send one; when it does, it is checked too. */
		SHA256(c->body, c->bodylen, hash);
		b64 = util_b64_encode(hash, sizeof(hash));
		if (strcmp(hdrhash, b64) != 0) {
			free(b64);
			why = "Request 'x-ms-content-sha256' differs from "
			    "generated content hash.";
			goto deny;
		}
		free(b64);
	} else if (hmac) {
		why = "Missing x-ms-content-sha256 header.";
		goto deny;
	}
	if (hmac) {
		if (admin)
			goto deny;
		if (http_auth_hmac(c, auth + 12, &why) == -1)
			goto deny;
		return 0;
	}
	if (strncasecmp(auth, "Bearer ", 7) != 0) {
		why = "Unsupported authorization scheme (HMAC-SHA256 or Bearer).";
		goto deny;
	}
	tok = auth + 7;
	while (*tok == ' ')
		tok++;
	tl = strlen(tok);
	if (admin) {
		if (http_admin_key == NULL) {
			why = "The admin API is off (admin_api_key_file).";
			goto deny;
		}
		if (tl == strlen(http_admin_key) &&
		    util_ct_compare(tok, http_admin_key, tl) == 0) {
			c->admin = 1;
			return 0;
		}
		goto deny;
	}
	if (tl > 4 * APIKEY_LEN / 3 + 4 ||
	    (klen = util_b64_decode(tok, tl, key)) != APIKEY_LEN ||
	    apikey_bearer(env->store, key, (size_t)klen, &c->tenant,
	    &c->keyname) == -1) {
		explicit_bzero(key, sizeof(key));
		goto deny;
	}
	explicit_bzero(key, sizeof(key));
	return 0;
deny:
	http_error(c, 401, "Denied", NULL, "%s", why);
	return -1;
}

/* --- operation records --- */

/* http_opkey - 'o' + tenant + NUL + lower(opid); returns the length.
 * Operation ids are GUIDs as a rule, which compare in any case. (Older
 * records kept the id as it was given: see http_op_lookup.) */
static size_t
http_opkey(const char *tenant, const char *opid,
    unsigned char buf[HTTP_OPKEY_MAX])
{
	size_t tl = strlen(tenant), ol = strlen(opid), i;

	if (tl > NAME_MAX_LEN || ol > HTTP_OPID_MAX)
		fatalx("http_opkey: bad lengths");
	buf[0] = APIKEY_REC_OP;
	memcpy(buf + 1, tenant, tl);
	buf[1 + tl] = '\0';
	for (i = 0; i < ol; i++)
		buf[2 + tl + i] = (unsigned char)(opid[i] >= 'A' &&
		    opid[i] <= 'Z' ? opid[i] - 'A' + 'a' : opid[i]);
	return 2 + tl + ol;
}

/* http_op_lookup - the queue id of tenant's committed operation into
 * qid; 0 found, -1 none */
static int
http_op_lookup(const char *tenant, const char *opid,
    char qid[QUEUE_ID_LEN + 1])
{
	unsigned char kb[HTTP_OPKEY_MAX];
	MDB_txn *txn;
	MDB_val k, v;
	size_t ol = strlen(opid);
	int rc, r = -1;

	k.mv_data = kb;
	k.mv_size = http_opkey(tenant, opid, kb);
	if (mdb_txn_begin(store_env(env->store), NULL, MDB_RDONLY, &txn) != 0)
		return -1;
	rc = mdb_get(txn, store_dbi(env->store, DB_APIKEYS), &k, &v);
	if (rc == MDB_NOTFOUND && memcmp(kb + k.mv_size - ol, opid, ol) != 0) {
		/* an older record, keyed by the id as it was given */
		memcpy(kb + k.mv_size - ol, opid, ol);
		rc = mdb_get(txn, store_dbi(env->store, DB_APIKEYS), &k, &v);
	}
	if (rc == 0 && v.mv_size == QUEUE_ID_LEN) {
		memcpy(qid, v.mv_data, QUEUE_ID_LEN);
		qid[QUEUE_ID_LEN] = '\0';
		r = 0;
	}
	mdb_txn_abort(txn);
	return r;
}

/* http_op_pending - the operation waiting for its commit, or NULL */
static struct http_op *
http_op_pending(const char *tenant, const char *opid)
{
	struct http_op *op;

	for (op = http_ops; op != NULL; op = op->next)
		if (strcasecmp(op->opid, opid) == 0 &&
		    strcmp(op->tenant, tenant) == 0)
			return op;
	return NULL;
}

/* http_oploc - Operation-Location for opid as this client sees us */
static char *
http_oploc(const struct http_ctx *c, const char *opid)
{
	const char *host = http_hdr(c, "Host"), *scheme;
	const char *xfp = http_hdr(c, "X-Forwarded-Proto");

	struct evhttp_connection *evcon;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	const char *rb;
	char port[8] = "";
	int p = 0;

	if (host == NULL || !http_valid_host(host))
		host = env->conf->hostname;
	if (c->srv->tls) {
		scheme = "https";
		/* a Host without a port (the Java SDK signs and sends the
		 * bare host name) means 443 to the client: name the port
		 * when it is another one. Not for listen_http, which a
		 * proxy fronts on its own port. */
		rb = strrchr(host, ']');
		if (strchr(rb != NULL ? rb : host, ':') == NULL &&
		    (evcon = evhttp_request_get_connection(c->req)) != NULL &&
		    getsockname(bufferevent_getfd(
		    evhttp_connection_get_bufferevent(evcon)),
		    (struct sockaddr *)&ss, &sl) == 0) {
			p = netaddr_port((struct sockaddr *)&ss);
			if (p != 0 && p != 443)
				snprintf(port, sizeof(port), ":%d", p);
		}
	} else
		scheme = xfp != NULL && strcasecmp(xfp, "https") == 0 ?
		    "https" : "http";
	return xasprintf("%s://%s%s/emails/operations/%s?api-version=%s",
	    scheme, host, port, opid, c->apiver);
}

/* http_accepted - the 202 of a send */
static void
http_accepted(struct evhttp_request *req, const char *rid, const char *opid,
    const char *oploc)
{
	struct evkeyvalq *oh = evhttp_request_get_output_headers(req);

	evhttp_add_header(oh, "Operation-Location", oploc);
	evhttp_add_header(oh, "Retry-After", HTTP_RETRY_AFTER);
	http_reply(req, rid, 202, json_pack("{s:s, s:s}", "id", opid,
	    "status", "Running"));
}

/* http_waiter_closed - the client went away while waiting. evhttp keeps
 * the request (detached from its connection) until it is answered:
 * answering it then frees it. */
static void
http_waiter_closed(struct evhttp_connection *evcon, void *arg)
{
	struct http_waiter *w = arg;

	w->evcon = NULL;
}

/* http_waiter_add - park c's request on op until the commit */
static void
http_waiter_add(struct http_op *op, struct http_ctx *c, const char *oploc)
{
	struct http_waiter *w = xcalloc(1, sizeof(*w));

	w->req = c->req;
	w->evcon = evhttp_request_get_connection(c->req);
	w->op = op;
	w->oploc = xstrdup(oploc);
	memcpy(w->rid, c->rid, sizeof(w->rid));
	w->t0 = util_now_ms();
	w->next = op->waiters;
	op->waiters = w;
	if (w->evcon != NULL)
		evhttp_connection_set_closecb(w->evcon, http_waiter_closed, w);
}

/* http_queued - the queue committed (or refused) an operation's message:
 * answer every request waiting for it */
static void
http_queued(void *arg, int status, const char *qid, const char *err)
{
	struct http_op *op = arg, **pp;
	struct http_waiter *w;
	struct evkeyvalq *oh;
	json_t *e;
	int dup = status == -1 && err != NULL &&
	    strcmp(err, "duplicate record") == 0;

	if (status == 0)
		metrics_count_accepted(METRICS_LISTENER_HTTP);
	for (pp = &http_ops; *pp != NULL; pp = &(*pp)->next)
		if (*pp == op) {
			*pp = op->next;
			http_nops--;
			break;
		}
	while ((w = op->waiters) != NULL) {
		op->waiters = w->next;
		if (w->evcon != NULL)
			evhttp_connection_set_closecb(w->evcon, NULL, NULL);
		if (w->evcon == NULL) {
			log_info("rid=%s event=http status=gone tenant=%s "
			    "op=%s qid=%s queued=%s reason=\"client gone\"",
			    w->rid, op->tenant, op->opid, op->qid,
			    status == 0 || dup ? "yes" : "no");
			/* frees the detached request */
			evhttp_send_reply(w->req, 503, "Gone", NULL);
		} else if (status == 0 || dup) {
			log_info("rid=%s event=http status=202 tenant=%s op=%s "
			    "qid=%s%s ms=%llu", w->rid, op->tenant, op->opid,
			    op->qid, dup ? " repeat=yes" : "",
			    (unsigned long long)(util_now_ms() - w->t0));
			http_accepted(w->req, w->rid, op->opid, w->oploc);
		} else {
			log_warn("rid=%s event=http status=503 tenant=%s op=%s "
			    "qid=%s reason=\"%s\"", w->rid, op->tenant,
			    op->opid, op->qid, err ? err : "?");
			oh = evhttp_request_get_output_headers(w->req);
			evhttp_add_header(oh, "x-ms-error-code",
			    "ServiceUnavailable");
			evhttp_add_header(oh, "Retry-After", HTTP_RETRY_AFTER);
			e = json_pack("{s:{s:s, s:s}}", "error", "code",
			    "ServiceUnavailable", "message", err ?
			    err : "queue write failed");
			http_reply(w->req, w->rid, 503, e);
		}
		free(w->oploc);
		free(w);
	}
	free(op->tenant);
	free(op->opid);
	free(op);
}

/* --- POST /emails:send --- */

/* http_received - the trace header for a message that came over HTTP */
static void
http_received(const struct http_ctx *c, struct evbuffer *msg)
{
	char date[64];
	struct tm tm;
	time_t now = time(NULL);

	if (gmtime_r(&now, &tm) == NULL ||
	    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S +0000",
	    &tm) == 0)
		util_strlcpy(date, "Thu, 01 Jan 1970 00:00:00 +0000",
		    sizeof(date));
	evbuffer_prepend(msg, "\r\n", 2);
	evbuffer_prepend(msg, date, strlen(date));
	evbuffer_prepend(msg, "; ", 2);
	evbuffer_prepend(msg, c->srv->tls ? "HTTPS" : "HTTP",
	    c->srv->tls ? 5 : 4);
	evbuffer_prepend(msg, ") with ", 7);
	evbuffer_prepend(msg, "Petrel", 6);
	evbuffer_prepend(msg, " (", 2);
	evbuffer_prepend(msg, env->conf->hostname, strlen(env->conf->hostname));
	evbuffer_prepend(msg, "] by ", 5);
	evbuffer_prepend(msg, c->ip, strlen(c->ip));
	evbuffer_prepend(msg, "Received: from [", 16);
}

/* http_sender_code - ACS error code for a store_sender_check reason */
static const char *
http_sender_code(const char *reason)
{
	return strcmp(reason, "local part not allowed") == 0 ?
	    "InvalidSenderUserName" : "DomainNotLinked";
}

/* http_tls_version - the connection's TLS version or NULL */
static const char *
http_tls_version(const struct http_ctx *c)
{
	struct evhttp_connection *evcon;
	struct bufferevent *bev;
	SSL *ssl;

	if (!c->srv->tls ||
	    (evcon = evhttp_request_get_connection(c->req)) == NULL ||
	    (bev = evhttp_connection_get_bufferevent(evcon)) == NULL ||
	    (ssl = bufferevent_openssl_get_ssl(bev)) == NULL)
		return NULL;
	return SSL_get_version(ssl);
}

static void
http_send(struct http_ctx *c)
{
	struct mime_opts mo;
	struct mime_info info;
	struct queue_envelope qe;
	struct http_op *op;
	struct evbuffer *msg;
	unsigned char opkey[HTTP_OPKEY_MAX];
	const char *opid_hdr = http_hdr(c, "Operation-Id"), *reason = NULL;
	char opid[HTTP_OPID_MAX + 1], *oploc, *code = NULL, *target = NULL;
	char *emsg = NULL, *local, extra[128], qid[QUEUE_ID_LEN + 1];
	json_t *root, *client;
	json_error_t jerr;
	size_t at;
	int rc;

	if (opid_hdr != NULL) {
		if (!http_valid_opid(opid_hdr, strlen(opid_hdr))) {
			http_error(c, 400, "BadRequest", "Operation-Id",
			    "Operation-Id must be 1 to %d characters of "
			    "A-Z a-z 0-9 - _", HTTP_OPID_MAX);
			return;
		}
		util_strlcpy(opid, opid_hdr, sizeof(opid));
	} else
		http_uuid(opid);
	oploc = http_oploc(c, opid);

	/* a repeated Operation-Id: the first result, nothing queued */
	if ((op = http_op_pending(c->tenant, opid)) != NULL) {
		http_waiter_add(op, c, oploc);
		free(oploc);
		return;
	}
	if (http_op_lookup(c->tenant, opid, qid) == 0) {
		snprintf(extra, sizeof(extra), " op=%s qid=%s repeat=yes", opid,
		    qid);
		http_log(c, 202, NULL, extra);
		http_accepted(c->req, c->rid, opid, oploc);
		free(oploc);
		return;
	}

	if (c->bodylen == 0) {
		http_error(c, 400, "BadRequest", NULL, "request body is empty: "
		    "expected an EmailMessage JSON object");
		goto done;
	}
	root = json_loadb((const char *)c->body, c->bodylen,
	    JSON_REJECT_DUPLICATES, &jerr);
	if (root == NULL) {
		http_error(c, 400, "BadRequest", NULL, "malformed JSON: %s "
		    "(line %d, column %d)", jerr.text, jerr.line, jerr.column);
		goto done;
	}
	if (!json_is_object(root)) {
		json_decref(root);
		http_error(c, 400, "BadRequest", NULL, "request body must be a "
		    "JSON object (EmailMessage)");
		goto done;
	}

	memset(&mo, 0, sizeof(mo));
	mo.hostname = env->conf->hostname;
	if (env->conf->max_recipients < MIME_RCPT_MAX)
		mo.max_rcpts = env->conf->max_recipients;
	memset(&info, 0, sizeof(info));
	if ((msg = evbuffer_new()) == NULL)
		fatalx("http: evbuffer_new failed");
	rc = mime_build(root, &mo, msg, &info, &code, &target, &emsg);
	json_decref(root);
	if (rc != MIME_OK) {
		metrics_count_rejected(rc == MIME_ETOOBIG ? METRICS_REJECT_SIZE :
		    METRICS_REJECT_CONTENT);
		http_error(c, rc == MIME_ETOOBIG ? 413 : 400, code ? code :
		    (rc == MIME_ETOOBIG ? "RequestEntityTooLarge" :
		    "BadRequest"), target, "%s", emsg ? emsg : "invalid message");
		goto freemsg;
	}
	if (evbuffer_get_length(msg) > env->conf->max_message_size) {
		metrics_count_rejected(METRICS_REJECT_SIZE);
		http_error(c, 413, "RequestEntityTooLarge", NULL, "message size "
		    "%zu exceeds the maximum message size %llu",
		    evbuffer_get_length(msg),
		    (unsigned long long)env->conf->max_message_size);
		goto freemsg;
	}
	if (info.sender == NULL || info.sender_domain == NULL ||
	    strrchr(info.sender, '@') == NULL || info.nrcpts == 0) {
		metrics_count_rejected(METRICS_REJECT_CONTENT);
		http_error(c, 400, "BadRequest", "senderAddress",
		    "senderAddress and at least one recipient are required");
		goto freemsg;
	}
	at = (size_t)(strrchr(info.sender, '@') - info.sender);
	local = xstrndup(info.sender, at);
	if (store_sender_check(env->store, c->tenant, local,
	    info.sender_domain, &reason) == -1) {
		free(local);
		metrics_count_rejected(METRICS_REJECT_POLICY);
		events_emit(env->queue, "rejected", c->tenant, NULL,
		    info.message_id, NULL, json_pack("{s:i, s:s, s:s, s:s, "
		    "s:s, s:s}", "code", 403, "enhanced", "5.7.1", "reason",
		    reason, "stage", "http", "client", c->ip, "sender_domain",
		    info.sender_domain));
		http_error(c, 403, http_sender_code(reason), "senderAddress",
		    "senderAddress domain %s not allowed for tenant %s: %s",
		    info.sender_domain, c->tenant, reason);
		goto freemsg;
	}
	free(local);
	http_received(c, msg);

	client = json_pack("{s:s, s:b, s:s, s:s?, s:s}", "ip", c->ip, "api", 1,
	    "apikey", c->keyname, "tls", http_tls_version(c),
	    "operation_id", opid);
	if (info.tracking_disabled)	/* read by prepare.c */
		json_object_set_new(client, "tracking_disabled", json_true());
	memset(&qe, 0, sizeof(qe));
	qe.tenant = c->tenant;
	qe.mail_from = info.sender;
	qe.header_from = info.header_from ? info.header_from : info.sender;
	qe.message_id = info.message_id ? info.message_id : "";
	qe.rcpts = (const char *const *)info.rcpts;
	qe.nrcpts = info.nrcpts;
	qe.client = client;
	qe.aux_db = DB_APIKEYS;		/* value: the qid */
	qe.aux_key = opkey;
	qe.aux_keylen = http_opkey(c->tenant, opid, opkey);
	op = xcalloc(1, sizeof(*op));
	op->tenant = xstrdup(c->tenant);
	op->opid = xstrdup(opid);
	op->next = http_ops;
	http_ops = op;
	http_nops++;
	http_waiter_add(op, c, oploc);
	op->qreq = queue_submit(env->queue, &qe, msg, http_queued, op,
	    op->qid);
	snprintf(extra, sizeof(extra), " op=%s qid=%s nrcpts=%zu size=%zu",
	    opid, op->qid, info.nrcpts, info.size);
	log_info("rid=%s event=submit tenant=%s apikey=%s ip=%s%s", c->rid,
	    c->tenant, c->keyname, c->ip, extra);
	json_decref(client);
freemsg:
	mime_info_free(&info);
	evbuffer_free(msg);
	free(code);
	free(target);
	free(emsg);
done:
	free(oploc);
}

/* --- GET /emails/operations/{id} --- */

/* http_reply_text - "550 5.1.1 text" of a recipient's last reply */
static void
http_reply_text(const json_t *lr, char *buf, size_t len)
{
	const char *enh, *text;

	buf[0] = '\0';
	if (!json_is_object(lr))
		return;
	enh = json_string_value(json_object_get(lr, "enhanced"));
	text = json_string_value(json_object_get(lr, "text"));
	if (json_integer_value(json_object_get(lr, "code")) == 0) {
		/* no server answered (suppressed): the text alone */
		snprintf(buf, len, "%s", text ? text : "");
		return;
	}
	snprintf(buf, len, "%lld%s%s%s%s",
	    (long long)json_integer_value(json_object_get(lr, "code")),
	    enh && *enh ? " " : "", enh ? enh : "", text && *text ? " " : "",
	    text ? text : "");
}

/* http_op_status - ACS status of a queued message from its recipients'
 * records; *error_r (new reference) for Failed */
static const char *
http_op_status(const json_t *m, json_t **error_r)
{
	const json_t *rcpts = json_object_get(m, "recipients"), *r;
	const char *st, *addr;
	size_t i, nactive = 0, nok = 0, nfail = 0, nsupp = 0;
	struct evbuffer *eb;
	char reply[512];
	json_t *e;

	*error_r = NULL;
	if ((eb = evbuffer_new()) == NULL)
		fatalx("http: evbuffer_new failed");
	json_array_foreach(rcpts, i, r) {
		st = json_string_value(json_object_get(r, "status"));
		addr = json_string_value(json_object_get(r, "address"));
		if (st == NULL || strcmp(st, "queued") == 0 ||
		    strcmp(st, "deferred") == 0)
			nactive++;
		else if (strcmp(st, "delivered") == 0)
			nok++;
		else {
			nfail++;
			if (strcmp(st, "suppressed") == 0)
				nsupp++;
			http_reply_text(json_object_get(r, "last_reply"), reply,
			    sizeof(reply));
			if (evbuffer_get_length(eb) < HTTP_ERRMSG_MAX)
				evbuffer_add_printf(eb, "%s%s (%s%s%s)",
				    nfail > 1 ? ", " : "", addr ? addr : "?",
				    st, reply[0] ? ": " : "", reply);
		}
	}
	if (nactive > 0 || json_array_size(rcpts) == 0) {
		evbuffer_free(eb);
		return "Running";
	}
	if (nfail == 0) {
		evbuffer_free(eb);
		return "Succeeded";
	}
	evbuffer_add(eb, "", 1);
	e = json_pack("{s:s, s:o}", "code", nsupp == json_array_size(rcpts) ?
	    "EmailDroppedAllRecipientsSuppressed" : "DeliveryFailed",
	    "message", http_jstr((const char *)evbuffer_pullup(eb, -1)));
	evbuffer_free(eb);
	if (nfail < json_array_size(rcpts)) {
		/* partial: say how many were not delivered up front */
		char *msg = xasprintf("%zu of %zu recipients not delivered: %s",
		    nfail, json_array_size(rcpts), json_string_value(
		    json_object_get(e, "message")));
		json_object_set_new(e, "message", http_jstr(msg));
		free(msg);
	}
	*error_r = e;
	return "Failed";
}

static void
http_op_get(struct http_ctx *c)
{
	const char *opid = c->path + strlen("/emails/operations/");
	char qid[QUEUE_ID_LEN + 1], extra[128];
	const char *status;
	json_t *m, *err = NULL, *out;

	if (!http_valid_opid(opid, strlen(opid))) {
		http_error(c, 404, "NotFound", "operationId", "Operation not "
		    "found");
		return;
	}
	if (http_op_lookup(c->tenant, opid, qid) == -1) {
		if (http_op_pending(c->tenant, opid) != NULL) {
			/* submitted, commit still on its way */
			evhttp_add_header(evhttp_request_get_output_headers(
			    c->req), "Retry-After", HTTP_RETRY_AFTER);
			http_log(c, 200, NULL, " status=Running");
			http_reply(c->req, c->rid, 200, json_pack("{s:s, s:s, "
			    "s:n, s:[]}", "id", opid, "status", "Running",
			    "error", "recipients"));
			return;
		}
		http_error(c, 404, "NotFound", "operationId", "Operation %s "
		    "not found", opid);
		return;
	}
	if ((m = queue_show_json(env->store, qid)) == NULL) {
		status = "Canceled";
		err = json_pack("{s:s, s:s}", "code", "MessageDeleted",
		    "message", "the message was deleted from the queue");
		out = json_pack("{s:s, s:s, s:o, s:[]}", "id", opid, "status",
		    status, "error", err, "recipients");
	} else {
		status = http_op_status(m, &err);
		out = json_pack("{s:s, s:s, s:o, s:O}", "id", opid, "status",
		    status, "error", err ? err : json_null(), "recipients",
		    json_object_get(m, "recipients") ?
		    json_object_get(m, "recipients") : json_array());
		json_decref(m);
	}
	if (out == NULL)
		fatalx("http: json_pack failed");
	if (strcmp(status, "Running") == 0)
		evhttp_add_header(evhttp_request_get_output_headers(c->req),
		    "Retry-After", HTTP_RETRY_AFTER);
	snprintf(extra, sizeof(extra), " op=%s qid=%s status=%s", opid, qid,
	    status);
	http_log(c, 200, NULL, extra);
	http_reply(c->req, c->rid, 200, out);
}

/* --- dispatch --- */

/* http_split_uri - origin-form path and query of the request-URI;
 * -1 when it is neither origin-form nor absolute-form */
static int
http_split_uri(struct http_ctx *c)
{
	const char *u = c->uri, *q;

	if (strncasecmp(u, "http://", 7) == 0 ||
	    strncasecmp(u, "https://", 8) == 0) {
		u = strchr(u, ':') + 3;
		u += strcspn(u, "/?");
		if (*u != '/')
			return -1;
	}
	if (*u != '/')
		return -1;
	c->pathq = xstrdup(u);
	if ((q = strchr(c->pathq, '?')) != NULL) {
		c->path = xstrndup(c->pathq, (size_t)(q - c->pathq));
		c->query = q + 1;
	} else {
		c->path = xstrdup(c->pathq);
		c->query = "";
	}
	return 0;
}

/* http_api_version - api-version of the query (any value of a sane
 * form is accepted), else the default */
static void
http_api_version(struct http_ctx *c)
{
	const char *q = c->query, *v;
	size_t n, i;

	util_strlcpy(c->apiver, HTTP_APIVER_DEFAULT, sizeof(c->apiver));
	while (*q) {
		if (strncmp(q, "api-version=", 12) == 0) {
			v = q + 12;
			n = strcspn(v, "&");
			if (n == 0 || n > HTTP_APIVER_MAX)
				return;
			for (i = 0; i < n; i++)
				if (!((v[i] >= 'a' && v[i] <= 'z') ||
				    (v[i] >= 'A' && v[i] <= 'Z') ||
				    (v[i] >= '0' && v[i] <= '9') ||
				    v[i] == '-' || v[i] == '.' || v[i] == '_'))
					return;
			memcpy(c->apiver, v, n);
			c->apiver[n] = '\0';
			return;
		}
		q += strcspn(q, "&");
		if (*q == '&')
			q++;
	}
}

/* http_events - GET /events: the tenant's events after since, in order
 * (events.h); "next" is the since of the following page */
static void
http_events(struct http_ctx *c)
{
	struct evkeyvalq kv;
	const char *since_s, *limit_s, *types_s, *why = NULL;
	uint64_t since = 0, limit = EVENTS_LIST_DEFAULT, next;
	unsigned mask = 0;
	char nbuf[24], extra[64];
	json_t *evs;

	memset(&kv, 0, sizeof(kv));	/* evhttp_parse_query_str inits it */
	if (evhttp_parse_query_str(c->query, &kv) != 0) {
		http_error(c, 400, "BadRequest", NULL, "malformed query");
		return;
	}
	since_s = evhttp_find_header(&kv, "since");
	limit_s = evhttp_find_header(&kv, "limit");
	types_s = evhttp_find_header(&kv, "types");
	if (since_s != NULL && *since_s != '\0' &&
	    util_parse_uint(since_s, 0, UINT64_MAX - 1, &since, &why) == -1) {
		evhttp_clear_headers(&kv);
		http_error(c, 400, "BadRequest", "since", "since: a cursor "
		    "(the \"next\" of an earlier answer, or 0)");
		return;
	}
	if (limit_s != NULL && util_parse_uint(limit_s, 1, EVENTS_LIST_MAX,
	    &limit, &why) == -1) {
		evhttp_clear_headers(&kv);
		http_error(c, 400, "BadRequest", "limit", "limit: 1 to %d",
		    EVENTS_LIST_MAX);
		return;
	}
	if (types_s != NULL && events_types_parse(types_s, &mask, &why) ==
	    -1) {
		evhttp_clear_headers(&kv);
		http_error(c, 400, "BadRequest", "types", "types: %s", why);
		return;
	}
	evhttp_clear_headers(&kv);
	evs = events_list(env->store, c->tenant, since, (size_t)limit, mask,
	    &next);
	snprintf(nbuf, sizeof(nbuf), "%llu", (unsigned long long)next);
	snprintf(extra, sizeof(extra), " events=%zu next=%s",
	    json_array_size(evs), nbuf);
	http_log(c, 200, NULL, extra);
	http_reply(c->req, c->rid, 200, json_pack("{s:o, s:s}", "events", evs,
	    "next", nbuf));
}

/* http_request_cb - every request of both servers */
static void
http_request_cb(struct evhttp_request *req, void *arg)
{
	struct http_ctx c;
	struct evhttp_connection *evcon;
	struct evbuffer *in;
	const struct http_route *rt = NULL;
	char *peer = NULL, *allow = NULL;
	ev_uint16_t port = 0;
	evutil_socket_t fd;
	size_t i, n;
	int path_known = 0, one = 1;

	memset(&c, 0, sizeof(c));
	c.req = req;
	c.srv = arg;
	c.cmd = evhttp_request_get_command(req);
	c.method = http_method_name(c.cmd);
	c.uri = evhttp_request_get_uri(req);
	http_uuid(c.rid);
	util_strlcpy(c.ip, "?", sizeof(c.ip));
	if ((evcon = evhttp_request_get_connection(req)) != NULL) {
		evhttp_connection_get_peer(evcon, &peer, &port);
		if (peer != NULL)
			util_strlcpy(c.ip, peer, sizeof(c.ip));
		/* the reply's header and body leave as separate writes (TLS
		 * records): without this, Nagle holds the second until the
		 * client's delayed ACK, 40 ms per request */
		if ((fd = bufferevent_getfd(evhttp_connection_get_bufferevent(
		    evcon))) != -1)
			setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one,
			    sizeof(one));
	}
	in = evhttp_request_get_input_buffer(req);
	c.bodylen = evbuffer_get_length(in);
	c.body = c.bodylen ? evbuffer_pullup(in, -1) :
	    (const unsigned char *)"";
	if (c.uri == NULL || http_split_uri(&c) == -1) {
		http_error(&c, 400, "BadRequest", NULL, "malformed request "
		    "URI");
		goto done;
	}
	http_api_version(&c);

	for (i = 0; i < nitems(http_routes); i++) {
		n = strlen(http_routes[i].path);
		if ((http_routes[i].flags & HTTP_R_PREFIX) ?
		    strncmp(c.path, http_routes[i].path, n) != 0 :
		    strcmp(c.path, http_routes[i].path) != 0)
			continue;
		path_known = 1;
		if (http_routes[i].cmd == c.cmd ||
		    http_routes[i].cmd == HTTP_ANY) {
			rt = &http_routes[i];
			break;
		}
		allow = (char *)http_method_name(http_routes[i].cmd);
	}
	if (rt == NULL) {
		if (path_known) {
			evhttp_add_header(evhttp_request_get_output_headers(req),
			    "Allow", allow);
			http_error(&c, 405, "MethodNotAllowed", NULL, "method %s "
			    "not allowed here", c.method);
		} else
			http_error(&c, 404, "NotFound", NULL, "no such resource");
		goto done;
	}
	if (env->stopping) {
		http_error(&c, 503, "ServiceUnavailable", NULL, "shutting down");
		goto done;
	}
	if ((rt->flags & (HTTP_R_KEY | HTTP_R_ADMIN)) &&
	    http_auth(&c, (rt->flags & HTTP_R_ADMIN) != 0) == -1)
		goto done;
	rt->fn(&c);
done:
	free(c.pathq);
	free(c.path);
	free(c.tenant);
	free(c.keyname);
}

/* http_bevcb - the bufferevent of a new connection: TLS for listen_https.
 * Also applies http_max_body as it is now (SIGHUP changes it for new
 * connections). */
static struct bufferevent *
http_bevcb(struct event_base *base, void *arg)
{
	struct http_server *srv = arg;
	struct bufferevent *bev;
	SSL *ssl;

	evhttp_set_max_body_size(srv->http,
	    (ev_ssize_t)env->conf->http_max_body);
	if (!srv->tls)
		bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
	else {
		if (env->ssl_server == NULL ||
		    (ssl = SSL_new(env->ssl_server)) == NULL)
			fatalx("http: cannot create a TLS session");
		bev = bufferevent_openssl_socket_new(base, -1, ssl,
		    BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
		if (bev != NULL)
			bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
	}
	if (bev == NULL)
		fatalx("http: cannot create a bufferevent");
	return bev;
}

/* --- life cycle --- */

struct http_bind {
	struct http_server	*srv;
	char			**err_r;
};

/* http_bind_addr - netaddr_listen_each's fn: one bound socket of b->srv */
static int
http_bind_addr(const struct addrinfo *ai, void *arg)
{
	struct http_bind *b = arg;
	struct http_sock *s, **tail;

	s = xcalloc(1, sizeof(*s));
	s->srv = b->srv;
	for (tail = &http_socks; *tail != NULL; tail = &(*tail)->next)
		;
	*tail = s;
	http_nsocks++;
	if ((s->fd = netaddr_bind(ai, s->addr, sizeof(s->addr))) == -1) {
		*b->err_r = xasprintf("listen_%s %s: cannot bind: %s",
		    b->srv->kind, s->addr, strerror(errno));
		return -1;
	}
	return 0;
}

/* http_bind_conf - bind every address of one listener setting */
static int
http_bind_conf(struct http_server *srv, const struct conf_listen *cl,
    char **err_r)
{
	struct http_bind b = { srv, err_r };
	char addr[NETADDR_LISTEN_STRLEN];
	const char *why;

	if (netaddr_listen_each(cl, http_bind_addr, &b, addr, &why) == 0)
		return 0;
	if (why != NULL)
		*err_r = xasprintf("listen_%s %s: %s", srv->kind, addr, why);
	return -1;
}

/* http_read_admin_key - the operator key from admin_api_key_file */
static int
http_read_admin_key(const char *path, char **err_r)
{
	char buf[HTTP_ADMIN_KEY_MAX + 2], *k;
	FILE *fp;
	size_t n;

	if ((fp = fopen(path, "r")) == NULL) {
		*err_r = xasprintf("admin_api_key_file %s: %s", path,
		    strerror(errno));
		return -1;
	}
	n = fread(buf, 1, sizeof(buf) - 1, fp);
	fclose(fp);
	buf[n] = '\0';
	k = util_trim(buf);
	if (strlen(k) < 16 || strlen(k) > HTTP_ADMIN_KEY_MAX ||
	    strpbrk(k, " \t\r\n") != NULL) {
		explicit_bzero(buf, sizeof(buf));
		*err_r = xasprintf("admin_api_key_file %s: expected one key of "
		    "16 to %d characters", path, HTTP_ADMIN_KEY_MAX);
		return -1;
	}
	http_admin_key = xstrdup(k);
	explicit_bzero(buf, sizeof(buf));
	return 0;
}

int
http_api_bind(char **err_r)
{
	const struct petrel_conf *cf = env->conf;

	if (cf->listen_https.n > 0 && (cf->tls_cert == NULL ||
	    cf->tls_key == NULL)) {
		*err_r = xasprintf("%s: tls_cert: required by listen_https",
		    cf->path);
		return -1;
	}
	if (cf->admin_api_key_file != NULL &&
	    http_read_admin_key(cf->admin_api_key_file, err_r) == -1)
		return -1;
	if (http_bind_conf(&http_servers[0], &cf->listen_https, err_r) == -1 ||
	    http_bind_conf(&http_servers[1], &cf->listen_http, err_r) == -1)
		return -1;
	return 0;
}

int
http_api_start(char **err_r)
{
	struct http_sock *s;
	struct http_server *srv;

	for (s = http_socks; s != NULL; s = s->next) {
		srv = s->srv;
		if (srv->http == NULL) {
			if ((srv->http = evhttp_new(env->base)) == NULL) {
				*err_r = xstrdup("evhttp_new failed");
				return -1;
			}
			evhttp_set_gencb(srv->http, http_request_cb, srv);
			evhttp_set_bevcb(srv->http, http_bevcb, srv);
			evhttp_set_max_headers_size(srv->http,
			    HTTP_HEADERS_MAX);
			evhttp_set_max_body_size(srv->http,
			    (ev_ssize_t)env->conf->http_max_body);
			evhttp_set_timeout(srv->http, HTTP_TIMEOUT_SECS);
			/* an oversized body is read (and dropped) before the
			 * 413, so a client still sending it gets the answer
			 * rather than a reset; the timeout bounds the read */
			evhttp_set_flags(srv->http,
			    EVHTTP_SERVER_LINGERING_CLOSE);
			evhttp_set_allowed_methods(srv->http, EVHTTP_REQ_GET |
			    EVHTTP_REQ_POST | EVHTTP_REQ_PUT |
			    EVHTTP_REQ_DELETE | EVHTTP_REQ_HEAD);
		}
		if (listen(s->fd, HTTP_BACKLOG) == -1 ||
		    (s->bound = evhttp_accept_socket_with_handle(srv->http,
		    s->fd)) == NULL) {
			*err_r = xasprintf("listen_%s %s: cannot listen: %s",
			    srv->kind, s->addr, strerror(errno));
			return -1;
		}
		log_info("event=listen addr=%s kind=%s", s->addr, srv->kind);
	}
	return 0;
}

void
http_api_shutdown(void)
{
	struct http_sock *s;

	while ((s = http_socks) != NULL) {
		http_socks = s->next;
		if (s->bound != NULL)
			evhttp_del_accept_socket(s->srv->http, s->bound);
		else if (s->fd != -1)
			close(s->fd);
		free(s);
	}
}

unsigned
http_api_busy(void)
{
	return http_nops + http_njobs;
}

int
http_api_listeners(void)
{
	return http_nsocks;
}

void
http_api_free(void)
{
	struct http_op *op;
	struct http_waiter *w;
	size_t i;

	http_api_shutdown();
	/* queue_free has answered every operation; this is only for an
	 * abnormal end */
	while ((op = http_ops) != NULL) {
		http_ops = op->next;
		if (op->qreq != NULL)
			queue_cancel(op->qreq);
		while ((w = op->waiters) != NULL) {
			op->waiters = w->next;
			if (w->evcon != NULL)
				evhttp_connection_set_closecb(w->evcon, NULL,
				    NULL);
			free(w->oploc);
			free(w);
		}
		free(op->tenant);
		free(op->opid);
		free(op);
	}
	http_nops = 0;
	for (i = 0; i < nitems(http_servers); i++)
		if (http_servers[i].http != NULL) {
			evhttp_free(http_servers[i].http);
			http_servers[i].http = NULL;
		}
	if (http_admin_key != NULL) {
		explicit_bzero(http_admin_key, strlen(http_admin_key));
		free(http_admin_key);
		http_admin_key = NULL;
	}
}

/* --- the admin API: /admin/... with the operator key ---
 *
 *   GET, POST     /admin/tenants                      {"name"}
 *   DELETE        /admin/tenants/T
 *   GET, POST     /admin/tenants/T/users              {"user","password"}
 *   DELETE        /admin/tenants/T/users/U
 *   GET, POST     /admin/tenants/T/domains            {"domain"} or
 *                                                     {"managed":true}
 *   GET, DELETE   /admin/domains/D
 *   POST          /admin/domains/D/verify
 *   GET, POST     /admin/tenants/T/apikeys            {"name"} (optional)
 *   DELETE        /admin/tenants/T/apikeys/N
 *   GET           /admin/networks
 *   POST          /admin/tenants/T/networks           {"cidr"}
 *   DELETE        /admin/networks/CIDR                ('/' as %2F)
 *
 * Each action runs admin.c on a worker thread (key generation, scrypt,
 * DNS and the LMDB write lock stay off the loop), with its own copy of
 * petrel.conf read from the file (SIGHUP may free env->conf meanwhile).
 */

enum http_admin_act {
	ADM_TENANT_LIST, ADM_TENANT_ADD, ADM_TENANT_DEL,
	ADM_USER_LIST, ADM_USER_ADD, ADM_USER_DEL,
	ADM_DOMAIN_LIST, ADM_DOMAIN_ADD, ADM_DOMAIN_GET, ADM_DOMAIN_DEL,
	ADM_DOMAIN_VERIFY,
	ADM_KEY_LIST, ADM_KEY_ADD, ADM_KEY_DEL,
	ADM_NET_LIST, ADM_NET_ADD, ADM_NET_DEL,
};

#define HTTP_ADMIN_SEGS	5

struct http_job {
	enum http_admin_act	 act;
	struct evhttp_request	*req;
	struct evhttp_connection *evcon;	/* NULL: connection gone */
	char			 rid[HTTP_UUID_LEN + 1];
	char			*conf_path;
	char			*a1, *a2;	/* path arguments */
	json_t			*body;		/* request JSON or NULL */
	/* results, set on the worker */
	json_t			*result;
	int			 status;
	char			*err;
};

/* http_admin_route - the action for method and path segments; 405 when
 * the path exists without this method, 404 when it does not */
static int
http_admin_route(enum evhttp_cmd_type cmd, char **seg, int n,
    enum http_admin_act *act_r)
{
	int get = cmd == EVHTTP_REQ_GET, post = cmd == EVHTTP_REQ_POST;
	int del = cmd == EVHTTP_REQ_DELETE;

#define ADM(cond, a) do { if (cond) { *act_r = (a); return 0; } } while (0)
	if (n == 1 && strcmp(seg[0], "tenants") == 0) {
		ADM(get, ADM_TENANT_LIST);
		ADM(post, ADM_TENANT_ADD);
		return 405;
	}
	if (n == 2 && strcmp(seg[0], "tenants") == 0) {
		ADM(del, ADM_TENANT_DEL);
		return 405;
	}
	if (n == 3 && strcmp(seg[0], "tenants") == 0) {
		if (strcmp(seg[2], "users") == 0) {
			ADM(get, ADM_USER_LIST);
			ADM(post, ADM_USER_ADD);
			return 405;
		}
		if (strcmp(seg[2], "domains") == 0) {
			ADM(get, ADM_DOMAIN_LIST);
			ADM(post, ADM_DOMAIN_ADD);
			return 405;
		}
		if (strcmp(seg[2], "apikeys") == 0) {
			ADM(get, ADM_KEY_LIST);
			ADM(post, ADM_KEY_ADD);
			return 405;
		}
		if (strcmp(seg[2], "networks") == 0) {
			ADM(post, ADM_NET_ADD);
			return 405;
		}
	}
	if (n == 4 && strcmp(seg[0], "tenants") == 0) {
		if (strcmp(seg[2], "users") == 0) {
			ADM(del, ADM_USER_DEL);
			return 405;
		}
		if (strcmp(seg[2], "apikeys") == 0) {
			ADM(del, ADM_KEY_DEL);
			return 405;
		}
	}
	if (n == 2 && strcmp(seg[0], "domains") == 0) {
		ADM(get, ADM_DOMAIN_GET);
		ADM(del, ADM_DOMAIN_DEL);
		return 405;
	}
	if (n == 3 && strcmp(seg[0], "domains") == 0 &&
	    strcmp(seg[2], "verify") == 0) {
		ADM(post, ADM_DOMAIN_VERIFY);
		return 405;
	}
	if (n == 1 && strcmp(seg[0], "networks") == 0) {
		ADM(get, ADM_NET_LIST);
		return 405;
	}
	if (n == 2 && strcmp(seg[0], "networks") == 0) {
		ADM(del, ADM_NET_DEL);
		return 405;
	}
#undef ADM
	return 404;
}

/* http_jget - a string member of the request body, or NULL */
static const char *
http_jget(const struct http_job *j, const char *key)
{
	return json_string_value(json_object_get(j->body, key));
}

/* http_admin_work - the action, on a worker thread */
static void
http_admin_work(void *arg)
{
	struct http_job *j = arg;
	struct petrel_conf cf;
	struct store *st = env->store;
	char *cerr = NULL;
	const char *s;
	int rc = 0, *sr = &j->status;

	config_init(&cf);
	if (config_load(j->conf_path, &cf, &cerr) == -1) {
		j->status = 500;
		j->err = xasprintf("cannot read the configuration: %s",
		    cerr ? cerr : "?");
		free(cerr);
		config_free(&cf);
		return;
	}
	switch (j->act) {
	case ADM_TENANT_LIST:
		j->result = admin_tenant_list(st);
		break;
	case ADM_TENANT_ADD:
		j->result = admin_tenant_add(st, (s = http_jget(j, "name")) ?
		    s : "", sr, &j->err);
		break;
	case ADM_TENANT_DEL:
		rc = admin_tenant_del(st, j->a1, sr, &j->err);
		break;
	case ADM_USER_LIST:
		j->result = admin_user_list(st, j->a1, sr, &j->err);
		break;
	case ADM_USER_ADD:
		j->result = admin_user_add(st, j->a1, http_jget(j, "user") ?
		    http_jget(j, "user") : "", http_jget(j, "password") ?
		    http_jget(j, "password") : "", sr, &j->err);
		break;
	case ADM_USER_DEL:
		rc = admin_user_del(st, j->a1, j->a2, sr, &j->err);
		break;
	case ADM_DOMAIN_LIST:
		j->result = admin_domain_list(st, j->a1, sr, &j->err);
		break;
	case ADM_DOMAIN_ADD:
		if (json_is_true(json_object_get(j->body, "managed")))
			j->result = admin_domain_add(st, &cf, j->a1, NULL, sr,
			    &j->err);
		else
			j->result = admin_domain_add(st, &cf, j->a1,
			    (s = http_jget(j, "domain")) ? s : "", sr, &j->err);
		break;
	case ADM_DOMAIN_GET:
		j->result = admin_domain_get(st, j->a1, sr, &j->err);
		break;
	case ADM_DOMAIN_DEL:
		rc = admin_domain_del(st, j->a1, sr, &j->err);
		break;
	case ADM_DOMAIN_VERIFY:
		j->result = admin_domain_verify(st, &cf, j->a1, sr, &j->err);
		break;
	case ADM_KEY_LIST:
		j->result = admin_apikey_list(st, j->a1, sr, &j->err);
		break;
	case ADM_KEY_ADD:
		j->result = admin_apikey_add(st, &cf, j->a1, http_jget(j,
		    "name"), sr, &j->err);
		break;
	case ADM_KEY_DEL:
		rc = admin_apikey_del(st, j->a1, j->a2, sr, &j->err);
		break;
	case ADM_NET_LIST:
		j->result = admin_network_list(st);
		break;
	case ADM_NET_ADD:
		j->result = admin_network_add(st, j->a1, (s = http_jget(j,
		    "cidr")) ? s : "", sr, &j->err);
		break;
	case ADM_NET_DEL:
		rc = admin_network_del(st, j->a1, sr, &j->err);
		break;
	}
	if (j->err == NULL && rc == 0 && j->result == NULL)
		j->result = json_pack("{s:b}", "deleted", 1);
	if (j->err != NULL && j->status == 0)
		j->status = 400;
	config_free(&cf);
}

/* http_job_closed - the client went away while the worker ran */
static void
http_job_closed(struct evhttp_connection *evcon, void *arg)
{
	struct http_job *j = arg;

	j->evcon = NULL;
}

/* http_admin_done - back on the loop: answer */
static void
http_admin_done(void *arg)
{
	struct http_job *j = arg;
	struct evkeyvalq *oh;
	const char *code;
	int status;

	http_njobs--;
	if (j->evcon != NULL)
		evhttp_connection_set_closecb(j->evcon, NULL, NULL);
	if (j->evcon == NULL)
		evhttp_send_reply(j->req, 503, "Gone", NULL);	/* frees it */
	else if (j->err != NULL) {
		status = j->status;
		code = status == 404 ? "NotFound" : status == 409 ?
		    "Conflict" : status >= 500 ? "InternalError" : "BadRequest";
		log_info("rid=%s event=http_admin status=%d code=%s", j->rid,
		    status, code);
		oh = evhttp_request_get_output_headers(j->req);
		evhttp_add_header(oh, "x-ms-error-code", code);
		http_reply(j->req, j->rid, status, json_pack("{s:{s:s, s:o}}",
		    "error", "code", code, "message", http_jstr(j->err)));
	} else {
		status = j->act == ADM_TENANT_ADD || j->act == ADM_USER_ADD ||
		    j->act == ADM_DOMAIN_ADD || j->act == ADM_KEY_ADD ||
		    j->act == ADM_NET_ADD ? 201 : 200;
		log_info("rid=%s event=http_admin status=%d", j->rid, status);
		http_reply(j->req, j->rid, status, j->result);
		j->result = NULL;
	}
	json_decref(j->result);
	json_decref(j->body);
	free(j->err);
	free(j->a1);
	free(j->a2);
	free(j->conf_path);
	free(j);
}

static void
http_admin(struct http_ctx *c)
{
	enum http_admin_act act;
	struct http_job *j;
	char *copy, *seg[HTTP_ADMIN_SEGS + 1], *p, *dec[HTTP_ADMIN_SEGS];
	json_error_t jerr;
	json_t *body = NULL;
	int n = 0, rc, i;

	copy = xstrdup(c->path + strlen("/admin/"));
	for (p = strtok(copy, "/"); p != NULL && n <= HTTP_ADMIN_SEGS;
	    p = strtok(NULL, "/"))
		seg[n++] = p;
	if (n == 0 || n > HTTP_ADMIN_SEGS) {
		free(copy);
		http_error(c, 404, "NotFound", NULL, "no such resource");
		return;
	}
	for (i = 0; i < n; i++) {
		/* a decoded segment must be plain text: no NUL, no '/' games */
		dec[i] = evhttp_uridecode(seg[i], 0, NULL);
		if (dec[i] == NULL || strlen(dec[i]) > DOMAIN_MAX_LEN ||
		    strpbrk(dec[i], "\r\n") != NULL) {
			while (i >= 0)
				free(dec[i--]);
			free(copy);
			http_error(c, 400, "BadRequest", NULL, "malformed path");
			return;
		}
	}
	if ((rc = http_admin_route(c->cmd, dec, n, &act)) != 0) {
		if (rc == 405)
			http_error(c, 405, "MethodNotAllowed", NULL, "method %s "
			    "not allowed here", c->method);
		else
			http_error(c, 404, "NotFound", NULL, "no such resource");
		goto out;
	}
	if (c->cmd == EVHTTP_REQ_POST && c->bodylen > 0) {
		body = json_loadb((const char *)c->body, c->bodylen,
		    JSON_REJECT_DUPLICATES, &jerr);
		if (!json_is_object(body)) {
			json_decref(body);
			http_error(c, 400, "BadRequest", NULL, "request body must "
			    "be a JSON object");
			goto out;
		}
	}
	j = xcalloc(1, sizeof(*j));
	j->act = act;
	j->req = c->req;
	j->evcon = evhttp_request_get_connection(c->req);
	memcpy(j->rid, c->rid, sizeof(j->rid));
	j->conf_path = xstrdup(env->conf->path);
	j->a1 = n > 1 ? xstrdup(dec[1]) : NULL;
	j->a2 = n > 3 ? xstrdup(dec[3]) : NULL;
	j->body = body;
	if (j->evcon != NULL)
		evhttp_connection_set_closecb(j->evcon, http_job_closed, j);
	{
		char *path = util_sanitize(c->path, HTTP_PATH_LOG_MAX);

		log_info("rid=%s event=http_admin kind=%s ip=%s method=%s "
		    "path=%s status=running", c->rid, c->srv->kind, c->ip,
		    c->method, path);
		free(path);
	}
	http_njobs++;
	worker_run(http_admin_work, j, http_admin_done);
out:
	for (i = 0; i < n; i++)
		free(dec[i]);
	free(copy);
}

/* --- suppression list and one-click unsubscribe ---
 *
 *   GET     /suppressions            the tenant's list (JSON array)
 *   GET     /suppressions/ADDRESS    one record; 404 when not listed
 *   PUT     /suppressions/ADDRESS    list it (body: optional {"reason"})
 *   DELETE  /suppressions/ADDRESS    unlist it; 404 when not listed
 *   GET     /u/TOKEN                 a page with a form (never acts:
 *                                    link scanners and prefetchers GET)
 *   POST    /u/TOKEN                 RFC 8058 one-click: list the
 *                                    token's recipient for its tenant
 * /suppressions authenticates like /emails:send and only ever touches
 * the key's tenant; /u/ needs no key, the token is the credential
 * (unsub.c). ADDRESS is percent-decoded. Reads run on the loop (LMDB
 * readers never wait); writes on a worker thread, like the admin API.
 */

enum http_sup_act { SUP_PUT, SUP_DEL, SUP_UNSUB };

struct http_sjob {
	enum http_sup_act	 act;
	struct evhttp_request	*req;
	struct evhttp_connection *evcon;	/* NULL: connection gone */
	char			 rid[HTTP_UUID_LEN + 1];
	char			*tenant;
	char			*address;
	char			*reason;
	char			*token;
	/* results, set on the worker */
	char			*qid, *msgid;	/* unsubscribe: its message */
	json_t			*result;
	int			 status;
	char			*err;
};

#define HTTP_UNSUB_PAGE_MAX	4096

/* http_reply_text_body - status with a text body of content type ctype */
static void
http_reply_body(struct evhttp_request *req, const char *rid, int status,
    const char *ctype, const char *body)
{
	struct evkeyvalq *oh = evhttp_request_get_output_headers(req);
	struct evbuffer *buf;

	evhttp_add_header(oh, "x-ms-request-id", rid);
	evhttp_add_header(oh, "Content-Type", ctype);
	evhttp_add_header(oh, "Cache-Control", "no-store");
	evhttp_add_header(oh, "Referrer-Policy", "no-referrer");
	evhttp_add_header(oh, "X-Robots-Tag", "noindex");
	if ((buf = evbuffer_new()) == NULL)
		fatalx("http: evbuffer_new failed");
	evbuffer_add(buf, body, strlen(body));
	evhttp_send_reply(req, status, http_reason(status), buf);
	evbuffer_free(buf);
}

/* http_sjob_free - release a suppression job */
static void
http_sjob_free(struct http_sjob *j)
{
	json_decref(j->result);
	free(j->tenant);
	free(j->address);
	free(j->reason);
	free(j->token);
	free(j->qid);
	free(j->msgid);
	free(j->err);
	free(j);
}

/* http_sjob_closed - the client went away while the worker ran */
static void
http_sjob_closed(struct evhttp_connection *evcon, void *arg)
{
	struct http_sjob *j = arg;

	j->evcon = NULL;
}

/* http_sjob_work - the write, on a worker thread */
static void
http_sjob_work(void *arg)
{
	struct http_sjob *j = arg;
	char *t = NULL, *r = NULL;
	json_t *m;

	switch (j->act) {
	case SUP_PUT:
		if (suppress_add(env->store, j->tenant, j->address, j->reason,
		    NULL, "manual", NULL, &j->err) == -1) {
			j->status = 500;
			break;
		}
		j->result = suppress_get(env->store, j->tenant, j->address);
		j->status = j->result != NULL ? 200 : 500;
		if (j->result == NULL)
			j->err = xstrdup("the entry vanished");
		break;
	case SUP_DEL:
		if (suppress_del(env->store, j->tenant, j->address,
		    &j->err) == -1) {
			j->status = j->err != NULL && strcmp(j->err,
			    "not on the suppression list") == 0 ? 404 : 500;
			break;
		}
		util_lower(j->address);
		j->result = json_pack("{s:s, s:b}", "address", j->address,
		    "deleted", 1);
		j->status = 200;
		break;
	case SUP_UNSUB:
		if (unsub_apply(env->store, j->token, &t, &r, &j->qid,
		    &j->err) == -1) {
			j->status = j->err != NULL && strcmp(j->err,
			    "invalid unsubscribe link") == 0 ? 404 : 500;
			break;
		}
		j->tenant = t;
		j->address = r;
		j->status = 200;
		/* the event names the message, while its record is kept */
		if (j->qid != NULL && (m = queue_show_json(env->store,
		    j->qid)) != NULL) {
			if (json_string_value(json_object_get(m,
			    "message_id")) != NULL)
				j->msgid = xstrdup(json_string_value(
				    json_object_get(m, "message_id")));
			json_decref(m);
		}
		break;
	}
}

/* http_sjob_done - back on the loop: answer */
static void
http_sjob_done(void *arg)
{
	struct http_sjob *j = arg;
	struct evkeyvalq *oh;
	const char *code;

	http_njobs--;
	/* the suppression is stored whether or not the client waited */
	if (j->act == SUP_UNSUB && j->status == 200)
		events_emit(env->queue, "unsubscribed", j->tenant, j->qid,
		    j->msgid, j->address, json_pack("{s:s}", "source",
		    "one-click"));
	if (j->evcon != NULL)
		evhttp_connection_set_closecb(j->evcon, NULL, NULL);
	if (j->evcon == NULL) {
		evhttp_send_reply(j->req, 503, "Gone", NULL);	/* frees it */
	} else if (j->act == SUP_UNSUB) {
		if (j->status == 200)
			log_info("rid=%s event=unsubscribe tenant=%s rcpt=%s "
			    "status=suppressed", j->rid, j->tenant, j->address);
		else
			log_info("rid=%s event=unsubscribe status=%d reason=\"%s\"",
			    j->rid, j->status, j->status == 404 ?
			    "invalid token" : j->err ? j->err : "?");
		http_reply_body(j->req, j->rid, j->status,
		    "text/plain; charset=utf-8", j->status == 200 ?
		    "You have been unsubscribed.\n" : j->status == 404 ?
		    "Unknown or invalid unsubscribe link.\n" :
		    "Unsubscribing failed; please try again later.\n");
	} else if (j->status != 200) {
		code = j->status == 404 ? "NotFound" : j->status >= 500 ?
		    "InternalError" : "BadRequest";
		log_info("rid=%s event=http_suppression tenant=%s status=%d "
		    "code=%s", j->rid, j->tenant, j->status, code);
		oh = evhttp_request_get_output_headers(j->req);
		evhttp_add_header(oh, "x-ms-error-code", code);
		http_reply(j->req, j->rid, j->status, json_pack("{s:{s:s, s:o, "
		    "s:s}}", "error", "code", code, "message",
		    http_jstr(j->err ? j->err : "failed"), "target", "address"));
	} else {
		log_info("rid=%s event=http_suppression tenant=%s rcpt=%s "
		    "action=%s status=200", j->rid, j->tenant, j->address,
		    j->act == SUP_PUT ? "add" : "del");
		http_reply(j->req, j->rid, 200, j->result);
		j->result = NULL;
	}
	http_sjob_free(j);
}

/* http_sjob_run - hand j to a worker; the answer comes from
 * http_sjob_done */
static void
http_sjob_run(struct http_ctx *c, struct http_sjob *j)
{
	j->req = c->req;
	j->evcon = evhttp_request_get_connection(c->req);
	memcpy(j->rid, c->rid, sizeof(j->rid));
	if (j->evcon != NULL)
		evhttp_connection_set_closecb(j->evcon, http_sjob_closed, j);
	http_njobs++;
	worker_run(http_sjob_work, j, http_sjob_done);
}

/* http_suppressions - /suppressions and /suppressions/ADDRESS */
static void
http_suppressions(struct http_ctx *c)
{
	const char *rest, *err, *reason = NULL;
	struct http_sjob *j;
	json_error_t jerr;
	json_t *body, *rec;
	char *addr;
	size_t len = 0;

	if (strcmp(c->path, "/suppressions") == 0) {
		if (c->cmd != EVHTTP_REQ_GET) {
			evhttp_add_header(evhttp_request_get_output_headers(
			    c->req), "Allow", "GET");
			http_error(c, 405, "MethodNotAllowed", NULL, "method %s "
			    "not allowed here", c->method);
			return;
		}
		http_log(c, 200, NULL, NULL);
		http_reply(c->req, c->rid, 200, suppress_list(env->store,
		    c->tenant));
		return;
	}
	rest = c->path + strlen("/suppressions/");
	if (c->cmd != EVHTTP_REQ_GET && c->cmd != EVHTTP_REQ_PUT &&
	    c->cmd != EVHTTP_REQ_DELETE) {
		evhttp_add_header(evhttp_request_get_output_headers(c->req),
		    "Allow", "GET, PUT, DELETE");
		http_error(c, 405, "MethodNotAllowed", NULL, "method %s not "
		    "allowed here", c->method);
		return;
	}
	addr = evhttp_uridecode(rest, 0, &len);
	if (addr == NULL || len != strlen(addr) ||
	    suppress_valid_address(addr, &err) == -1) {
		http_error(c, 400, "BadRequest", "address", "invalid address: "
		    "%s", addr == NULL || len != strlen(addr) ?
		    "malformed encoding" : err);
		free(addr);
		return;
	}
	if (c->cmd == EVHTTP_REQ_GET) {
		if ((rec = suppress_get(env->store, c->tenant, addr)) == NULL)
			http_error(c, 404, "NotFound", "address", "%s is not on "
			    "the suppression list", addr);
		else {
			http_log(c, 200, NULL, NULL);
			http_reply(c->req, c->rid, 200, rec);
		}
		free(addr);
		return;
	}
	body = NULL;
	if (c->cmd == EVHTTP_REQ_PUT && c->bodylen > 0) {
		body = json_loadb((const char *)c->body, c->bodylen,
		    JSON_REJECT_DUPLICATES, &jerr);
		if (!json_is_object(body)) {
			json_decref(body);
			free(addr);
			http_error(c, 400, "BadRequest", NULL, "request body must "
			    "be a JSON object");
			return;
		}
		rec = json_object_get(body, "reason");
		if (rec != NULL && !json_is_null(rec) &&
		    (!json_is_string(rec) ||
		    json_string_length(rec) > SUPPRESS_REASON_MAX)) {
			json_decref(body);
			free(addr);
			http_error(c, 400, "BadRequest", "reason", "reason must "
			    "be a string of at most %d bytes",
			    SUPPRESS_REASON_MAX);
			return;
		}
		reason = json_string_value(rec);
	}
	j = xcalloc(1, sizeof(*j));
	j->act = c->cmd == EVHTTP_REQ_PUT ? SUP_PUT : SUP_DEL;
	j->tenant = xstrdup(c->tenant);
	j->address = addr;
	j->reason = reason != NULL ? xstrdup(reason) : NULL;
	json_decref(body);
	http_log(c, 202, NULL, " status=running");
	http_sjob_run(c, j);
}

/* http_html_escape - s with & < > " ' as entities, malloc'd */
static char *
http_html_escape(const char *s)
{
	struct evbuffer *b;
	char *out;
	size_t n;

	if ((b = evbuffer_new()) == NULL)
		fatalx("http: evbuffer_new failed");
	for (; *s; s++)
		switch (*s) {
		case '&': evbuffer_add(b, "&amp;", 5); break;
		case '<': evbuffer_add(b, "&lt;", 4); break;
		case '>': evbuffer_add(b, "&gt;", 4); break;
		case '"': evbuffer_add(b, "&quot;", 6); break;
		case '\'': evbuffer_add(b, "&#39;", 5); break;
		default: evbuffer_add(b, s, 1); break;
		}
	n = evbuffer_get_length(b);
	out = xmalloc(n + 1);
	evbuffer_remove(b, out, n);
	out[n] = '\0';
	evbuffer_free(b);
	return out;
}

/* http_unsub - /u/TOKEN: GET a confirmation page, POST unsubscribes */
static void
http_unsub(struct http_ctx *c)
{
	const char *token = c->path + strlen("/u/");
	struct http_sjob *j;
	char *tenant = NULL, *rcpt = NULL, *safe, page[HTTP_UNSUB_PAGE_MAX];

	if (c->cmd != EVHTTP_REQ_GET && c->cmd != EVHTTP_REQ_POST) {
		evhttp_add_header(evhttp_request_get_output_headers(c->req),
		    "Allow", "GET, POST");
		http_log(c, 405, "MethodNotAllowed", NULL);
		http_reply_body(c->req, c->rid, 405, "text/plain; charset=utf-8",
		    "Method not allowed.\n");
		return;
	}
	if (strlen(token) > UNSUB_TOKEN_MAX ||
	    unsub_token_parse(env->store, token, &tenant, &rcpt, NULL) == -1) {
		http_log(c, 404, "NotFound", " unsubscribe=invalid");
		http_reply_body(c->req, c->rid, 404, "text/plain; charset=utf-8",
		    "Unknown or invalid unsubscribe link.\n");
		return;
	}
	if (c->cmd == EVHTTP_REQ_GET) {
		/* never act on GET: mail scanners fetch every link */
		safe = http_html_escape(rcpt);
		snprintf(page, sizeof(page), "<!DOCTYPE html>\n<html><head>"
		    "<meta charset=\"utf-8\"><meta name=\"robots\" "
		    "content=\"noindex\"><title>Unsubscribe</title></head>\n"
		    "<body><h1>Unsubscribe</h1>\n<p>Stop sending mail to "
		    "%s?</p>\n<form method=\"post\" action=\"\">"
		    "<input type=\"hidden\" name=\"List-Unsubscribe\" "
		    "value=\"One-Click\"><button type=\"submit\">"
		    "Unsubscribe</button></form>\n</body></html>\n", safe);
		free(safe);
		free(tenant);
		free(rcpt);
		http_log(c, 200, NULL, " unsubscribe=page");
		http_reply_body(c->req, c->rid, 200, "text/html; charset=utf-8",
		    page);
		return;
	}
	free(tenant);
	free(rcpt);
	j = xcalloc(1, sizeof(*j));
	j->act = SUP_UNSUB;
	j->token = xstrdup(token);
	http_log(c, 202, NULL, " unsubscribe=running");
	http_sjob_run(c, j);
}

/* --- engagement tracking (tracking.h) ---
 *
 *   GET|HEAD /t/o/TOKEN   the 1x1 GIF; an "opened" event
 *   GET|HEAD /t/c/TOKEN   302 to the link's original URL; a "clicked" event
 * No API key: the token is the credential. The answer goes out at once;
 * the event is group-committed by the writer afterwards (events_emit).
 * An unknown or forged token, or a link index the message did not have,
 * answers 404 and records nothing.
 */
static void
http_track(struct http_ctx *c)
{
	struct evkeyvalq *oh = evhttp_request_get_output_headers(c->req);
	struct tracking_hit hit;
	struct evbuffer *buf;
	const char *p = c->path + strlen("/t/"), *ua;
	int kind, head = c->cmd == EVHTTP_REQ_HEAD;
	char extra[96];

	if (c->cmd != EVHTTP_REQ_GET && !head) {
		evhttp_add_header(oh, "Allow", "GET, HEAD");
		http_log(c, 405, "MethodNotAllowed", NULL);
		http_reply_body(c->req, c->rid, 405, "text/plain; charset=utf-8",
		    "Method not allowed.\n");
		return;
	}
	kind = strncmp(p, "o/", 2) == 0 ? 'o' : strncmp(p, "c/", 2) == 0 ?
	    'c' : 0;
	ua = http_hdr(c, "User-Agent");
	if (kind == 0 || tracking_lookup(env->store, env->conf, kind, p + 2,
	    head, ua, &hit) == -1) {
		http_log(c, 404, "NotFound", " tracking=invalid");
		http_reply_body(c->req, c->rid, 404, "text/plain; charset=utf-8",
		    "Unknown link.\n");
		return;
	}
	tracking_emit(env->queue, &hit, ua, c->ip);
	snprintf(extra, sizeof(extra), " qid=%s tracking=%s machine=%s%s%s",
	    hit.qid, kind == 'o' ? "open" : "click", hit.machine ? "yes" : "no",
	    hit.why ? " why=" : "", hit.why ? hit.why : "");
	evhttp_add_header(oh, "x-ms-request-id", c->rid);
	evhttp_add_header(oh, "Cache-Control", "no-store, max-age=0");
	evhttp_add_header(oh, "Referrer-Policy", "no-referrer");
	evhttp_add_header(oh, "X-Robots-Tag", "noindex");
	if ((buf = evbuffer_new()) == NULL)
		fatalx("http: evbuffer_new failed");
	if (kind == 'o') {
		evhttp_add_header(oh, "Content-Type", "image/gif");
		evbuffer_add(buf, tracking_gif, tracking_gif_len);
		http_log(c, 200, NULL, extra);
		evhttp_send_reply(c->req, 200, "OK", buf);
	} else {
		/* hit.url is printable ASCII without spaces (tracking.c) */
		evhttp_add_header(oh, "Location", hit.url);
		http_log(c, 302, NULL, extra);
		evhttp_send_reply(c->req, 302, "Found", buf);
	}
	evbuffer_free(buf);
	tracking_hit_clear(&hit);
}
