/*
 * smtp_server.c - the inbound SMTP session: submission (587, STARTTLS +
 * AUTH), submissions (465, implicit TLS + AUTH) and relay (25, tenant from
 * the client's relay network, or AUTH after STARTTLS).
 *
 * One state machine per session. smtp_enter_state() is the only writer of
 * s->state. Every libevent callback funnels into smtp_io(), which handles
 * the event and then runs smtp_tail(): consume buffered input while the
 * state allows, and free the session once it is closing and its last
 * reply is flushed. Commands are rows of smtp_cmds[] whose flags carry the
 * sequencing rules. Every rejection goes through smtp_reply(), which logs
 * one "event=reject" line.
 *
 * On a plaintext connection the replies are written straight to the
 * socket at the end of each event (smtp_flush), with the bufferevent's
 * write event enabled only while the socket is full: a reply then costs
 * one writev and no epoll_ctl or extra loop pass. TLS sessions leave the
 * writing to bufferevent_openssl.
 *
 * Input is read straight from the bufferevent's evbuffer with explicit
 * bounds (no per-session line buffer): an idle session holds its struct,
 * a bufferevent and a timer. The message buffer exists only from DATA/BDAT
 * to the queue hand-off. Policy and storage are reached only through
 * store_*() and queue_*().
 *
 * Decisions worth knowing:
 * - A bare CR or LF inside DATA/BDAT never ends anything; the data runs to
 *   the real CRLF.CRLF and the whole transaction is then refused with
 *   550 5.6.0. A bare CR/LF in a command line is answered 500 5.5.2 and
 *   the connection is closed (pipelined bytes after it cannot be trusted).
 * - The Received: header carries no queue id: the id is assigned by
 *   queue_submit() only when the bytes are handed over.
 * - BDAT chunks larger than max_message_size are answered 552 5.3.4 and the
 *   connection is closed (the chunk cannot be skipped cheaply); smaller
 *   chunks refused for sequencing (503) are read and discarded to stay in
 *   sync, as RFC 3030 requires.
 */
#include "autoconf.h"

#include <sys/types.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
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
#include <jansson.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "domain.h"
#include "events.h"
#include "limits.h"
#include "log.h"
#include "metrics.h"
#include "netaddr.h"
#include "passwd.h"
#include "petrel.h"
#include "queue.h"
#include "smtp_parse.h"
#include "smtp_server.h"
#include "store.h"
#include "util.h"
#include "worker.h"

/* session-local bounds (see limits.h for the protocol ones) */
#ifndef SMTP_INPUT_MAX
#define SMTP_INPUT_MAX		(64 * 1024)	/* read high watermark */
#endif
#ifndef SMTP_OUTPUT_MAX
#define SMTP_OUTPUT_MAX		(64 * 1024)	/* stop reading above this */
#endif
#ifndef SMTP_ERRORS_MAX
#define SMTP_ERRORS_MAX		20		/* 5xx replies, then 421 */
#endif
#define SMTP_CHUNK		16384		/* bytes per DATA pass */
#define SMTP_HELO_MAX		255
#define SMTP_IPTAB		1024
#define SMTP_AUTH_WINDOW	60		/* seconds of failure memory */
/* past the connection caps, an implicit-TLS client can only read the 421
 * after a handshake: at most this many such handshakes at once, each
 * given this long; beyond them the connection is just closed */
#define SMTP_BUSY_TLS_MAX	16
#define SMTP_BUSY_TLS_MS	10000
#define SMTP_BUSY_REPLY		"421 4.7.0 Too many connections\r\n"

enum smtp_state {
	S_NEW,			/* just accepted */
	S_GREET_WAIT,		/* pregreet delay before the 220 */
	S_TLS_HANDSHAKE,	/* 465 or after STARTTLS */
	S_STARTTLS,		/* 220 queued, waiting for it to flush */
	S_CONNECTED,		/* greeted, no EHLO/HELO yet */
	S_HELO,			/* EHLO/HELO done, no transaction */
	S_MAIL,			/* MAIL accepted */
	S_RCPT,			/* one or more RCPT accepted */
	S_DATA,			/* reading DATA content */
	S_BDAT,			/* reading a BDAT chunk */
	S_BDAT_MORE,		/* between BDAT chunks */
	S_AUTH_PLAIN,		/* 334 sent for PLAIN */
	S_AUTH_USER,		/* 334 Username: sent */
	S_AUTH_PASS,		/* 334 Password: sent */
	S_AUTH_CHECK,		/* password check on a worker thread */
	S_QUEUE,		/* waiting for the queue commit */
	S_CLOSING		/* last reply queued; free once flushed */
};

static const char *smtp_state_names[] = {
	"new", "greet-wait", "tls-handshake", "starttls", "connected", "helo",
	"mail", "rcpt", "data", "bdat", "bdat-more", "auth-plain",
	"auth-user", "auth-pass", "auth-check", "queue", "closing"
};

enum smtp_event { IO_READ, IO_DRAINED, IO_TLS_READY, IO_EOF, IO_ERROR,
	IO_TIMEOUT };

struct smtp_ipent {
	struct smtp_ipent	*next;
	unsigned		 nconn;
	unsigned		 nfail;
	int64_t			 fail_start;
	char			 ip[INET6_ADDRSTRLEN];
};

struct smtp_tx {
	char		*tenant;
	char		*mail_from;	/* local@domain, as given */
	int		 smtputf8;
	int		 binarymime;
	int		 chunking;	/* BDAT used */
	char		**rcpts;
	size_t		 nrcpts, rcpts_cap;
	struct evbuffer	*msg;		/* DATA/BDAT onwards */
	struct smtp_data data;
	char		*msgid;		/* the message's Message-ID, once
					 * its header is read (events) */
	/* DSN parameters (RFC 3461): ENVID, RET (0 none, 1 HDRS, 2 FULL),
	 * per recipient NOTIFY and ORCPT (NULL when not given) */
	char		*envid;
	int		 ret;
	char		**notify, **orcpt;
};

struct smtp_authjob;

struct smtp_session {
	TAILQ_ENTRY(smtp_session) entry;
	char			 sid[13];
	enum smtp_listener	 listener;
	enum smtp_state		 state;
	evutil_socket_t		 fd;
	int			 bev_owns_fd;	/* TLS bufferevent closes it */
	int			 direct;	/* plain socket: replies are
						 * written by smtp_flush */
	struct bufferevent	*bev;
	struct event		*timer;
	struct smtp_ipent	*ipent;
	char			 ip[INET6_ADDRSTRLEN];
	char			*helo;
	int			 esmtp;
	int			 tls;
	char			*tls_version, *tls_cipher;
	int			 tls_bits;
	char			*net_tenant;	/* relay network's tenant */
	char			*tenant;	/* effective: AUTH or network */
	char			*auth_user;
	char			*login_user;	/* AUTH LOGIN, between steps */
	struct smtp_authjob	*authjob;
	struct queue_req	*qreq;
	struct smtp_tx		*tx;
	int			 line_skip;	/* discarding an overlong line */
	unsigned		 nerrors;
	int			 shutdown;	/* 421 once idle */
	int			 busy;		/* over the caps (465): 421
						 * after the handshake; not
						 * counted in the caps */
	/* BDAT chunk in progress */
	uint64_t		 bdat_left, bdat_size;
	int			 bdat_last;
	int			 bdat_code;	/* != 0: discard, then reply */
	const char		*bdat_esc, *bdat_text;
	int			 bdat_drop_tx;
	enum smtp_state		 bdat_ret;
};

struct smtp_authjob {
	struct smtp_session	*s;	/* NULL once the session is gone */
	char			*user, *pass, *tenant, *hash;
	int			 found, ok;
};

static TAILQ_HEAD(, smtp_session) smtp_sessions =
    TAILQ_HEAD_INITIALIZER(smtp_sessions);
static unsigned smtp_nsessions;
static unsigned smtp_nbusy;		/* sessions with busy set */
static struct smtp_ipent *smtp_iptab[SMTP_IPTAB];
static struct event *smtp_sweep_ev;
static char *smtp_dummy_hash;

static void smtp_io(struct smtp_session *, enum smtp_event);
static void smtp_tail(struct smtp_session *);
static void smtp_tls_start(struct smtp_session *);
static void smtp_free(struct smtp_session *, const char *);

/* Per-client-address table: connection counts and AUTH failures */

static unsigned
ip_hash(const char *ip)
{
	uint32_t h = 2166136261u;

	for (; *ip; ip++)
		h = (h ^ (unsigned char)*ip) * 16777619u;
	return h % SMTP_IPTAB;
}

static struct smtp_ipent *
ip_get(const char *ip)
{
	unsigned h = ip_hash(ip);
	struct smtp_ipent *e;

	for (e = smtp_iptab[h]; e != NULL; e = e->next)
		if (strcmp(e->ip, ip) == 0)
			return e;
	e = xcalloc(1, sizeof(*e));
	util_strlcpy(e->ip, ip, sizeof(e->ip));
	e->next = smtp_iptab[h];
	smtp_iptab[h] = e;
	return e;
}

/* ip_unused - nothing worth keeping: no connection, no recent failure */
static int
ip_unused(const struct smtp_ipent *e, int64_t now)
{
	return e->nconn == 0 && (e->nfail == 0 ||
	    now - e->fail_start >= SMTP_AUTH_WINDOW);
}

static void
ip_maybe_drop(struct smtp_ipent *dead)
{
	struct smtp_ipent **pp;

	if (!ip_unused(dead, util_now()))
		return;
	for (pp = &smtp_iptab[ip_hash(dead->ip)]; *pp; pp = &(*pp)->next) {
		if (*pp == dead) {
			*pp = dead->next;
			free(dead);
			return;
		}
	}
}

/* ip_sweep - once a minute: forget expired AUTH failure records */
static void
ip_sweep(evutil_socket_t fd, short what, void *arg)
{
	struct smtp_ipent **pp, *e;
	int64_t now = util_now();
	unsigned i;

	(void)fd;
	(void)what;
	(void)arg;
	for (i = 0; i < SMTP_IPTAB; i++) {
		for (pp = &smtp_iptab[i]; (e = *pp) != NULL;) {
			if (ip_unused(e, now)) {
				*pp = e->next;
				free(e);
			} else
				pp = &e->next;
		}
	}
}

static int
ip_auth_throttled(struct smtp_ipent *e)
{
	unsigned limit = env->conf->smtpd_auth_fail_limit;

	if (limit == 0 || util_now() - e->fail_start >= SMTP_AUTH_WINDOW)
		return 0;
	return e->nfail >= limit;
}

static void
ip_auth_failed(struct smtp_ipent *e)
{
	int64_t now = util_now();

	if (now - e->fail_start >= SMTP_AUTH_WINDOW) {
		e->fail_start = now;
		e->nfail = 0;
	}
	e->nfail++;
}

/* Session plumbing */

/* smtp_enter_state - the only writer of s->state */
static void
smtp_enter_state(struct smtp_session *s, enum smtp_state st)
{
	if (s->state != st)
		log_debug("sid=%s event=state from=%s to=%s", s->sid,
		    smtp_state_names[s->state], smtp_state_names[st]);
	s->state = st;
}

static void
smtp_timer_arm(struct smtp_session *s, long ms)
{
	struct timeval tv;

	tv.tv_sec = ms / 1000;
	tv.tv_usec = (ms % 1000) * 1000;
	evtimer_add(s->timer, &tv);
}

/* smtp_cmd_deadline - a fresh per-command deadline (only after a whole
 * command, never per byte: slowloris clients run out of time) */
static void
smtp_cmd_deadline(struct smtp_session *s)
{
	smtp_timer_arm(s, env->conf->smtpd_timeout * 1000);
}

static struct evbuffer *
smtp_out(struct smtp_session *s)
{
	return bufferevent_get_output(s->bev);
}

/* log_quote - copy text for a reason="..." field: no quotes, no controls */
static void
log_quote(const char *in, char *out, size_t outlen)
{
	size_t i;

	for (i = 0; in[i] && i + 1 < outlen; i++) {
		unsigned char c = (unsigned char)in[i];
		out[i] = (c < 0x20 || c == 0x7f || c == '"' || c == '\\') ?
		    '?' : (char)c;
	}
	out[i] = '\0';
}

/* smtp_reject_event - the tenant's "rejected" event (events.h) for a
 * policy refusal; reason is log_quote()d text */
static void
smtp_reject_event(struct smtp_session *s, int code, const char *esc,
    const char *reason)
{
	char r[512];
	json_t *d, *mf;
	size_t i;

	/* JSON strings must be UTF-8: keep ASCII only */
	for (i = 0; reason[i] != '\0' && i + 1 < sizeof(r); i++)
		r[i] = (unsigned char)reason[i] >= 0x80 ? '?' : reason[i];
	r[i] = '\0';
	d = json_pack("{s:i, s:s, s:s, s:s, s:s}", "code", code, "enhanced",
	    esc ? esc : "", "reason", r, "stage", smtp_state_names[s->state],
	    "client", s->ip);
	if (d == NULL)
		fatalx("smtp: json_pack failed");
	if (s->tx != NULL && s->tx->mail_from != NULL &&
	    (mf = json_string(s->tx->mail_from)) != NULL)
		json_object_set_new(d, "mail_from", mf);
	if (s->tx != NULL && s->tx->nrcpts > 0)
		json_object_set_new(d, "recipients",
		    json_integer((json_int_t)s->tx->nrcpts));
	/* a refused message is known by its Message-ID and, when it has
	 * one, its recipient; a refused RCPT names no one yet */
	events_emit(env->queue, "rejected", s->tenant, NULL,
	    s->tx != NULL ? s->tx->msgid : NULL, s->tx != NULL &&
	    s->tx->msgid != NULL && s->tx->nrcpts == 1 ? s->tx->rcpts[0] :
	    NULL, d);
}

/* smtp_reply - one reply line: code, enhanced status, text. Rejections
 * (4xx/5xx) are logged as one event=reject line. */
static void PRINTFLIKE(4, 5)
smtp_reply(struct smtp_session *s, int code, const char *esc,
    const char *fmt, ...)
{
	char text[512], q[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	if (n < 0)
		text[0] = '\0';
	if (esc != NULL)
		evbuffer_add_printf(smtp_out(s), "%d %s %s\r\n", code, esc,
		    text);
	else
		evbuffer_add_printf(smtp_out(s), "%d %s\r\n", code, text);
	if (code >= 400) {
		metrics_count_rejected(metrics_reject_reason(code, esc));
		log_quote(text, q, sizeof(q));
		/* a policy refusal of a known tenant is one of its events
		 * (unauthenticated ones only get the log line below) */
		if (s->tenant != NULL && metrics_reject_reason(code, esc) ==
		    METRICS_REJECT_POLICY)
			smtp_reject_event(s, code, esc, q);
		log_info("sid=%s event=reject code=%d esc=%s state=%s "
		    "reason=\"%s\"", s->sid, code, esc ? esc : "-",
		    smtp_state_names[s->state], q);
		if (code >= 500)
			s->nerrors++;
	}
}

/* smtp_close - queue nothing more; the tail frees once output drained */
static void
smtp_close(struct smtp_session *s)
{
	bufferevent_disable(s->bev, EV_READ);
	smtp_enter_state(s, S_CLOSING);
}

static void
smtp_tx_free(struct smtp_session *s)
{
	struct smtp_tx *tx = s->tx;
	size_t i;

	if (tx == NULL)
		return;
	for (i = 0; i < tx->nrcpts; i++) {
		free(tx->rcpts[i]);
		free(tx->notify[i]);
		free(tx->orcpt[i]);
	}
	free(tx->rcpts);
	free(tx->notify);
	free(tx->orcpt);
	free(tx->envid);
	free(tx->mail_from);
	free(tx->tenant);
	free(tx->msgid);
	if (tx->msg != NULL)
		evbuffer_free(tx->msg);
	free(tx);
	s->tx = NULL;
}

/* smtp_tx_end - end of a transaction (success or not): back to HELO */
static void
smtp_tx_end(struct smtp_session *s)
{
	smtp_tx_free(s);
	smtp_enter_state(s, s->helo ? S_HELO : S_CONNECTED);
	smtp_cmd_deadline(s);
}

static void
smtp_readcb(struct bufferevent *bev, void *arg)
{
	(void)bev;
	smtp_io(arg, IO_READ);
}

static void
smtp_writecb(struct bufferevent *bev, void *arg)
{
	(void)bev;
	smtp_io(arg, IO_DRAINED);
}

static void
smtp_eventcb(struct bufferevent *bev, short what, void *arg)
{
	(void)bev;
	if (what & BEV_EVENT_CONNECTED)
		smtp_io(arg, IO_TLS_READY);
	else if (what & BEV_EVENT_EOF)
		smtp_io(arg, IO_EOF);
	else
		smtp_io(arg, IO_ERROR);
}

static void
smtp_timercb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	smtp_io(arg, IO_TIMEOUT);
}

static void
smtp_bev_setup(struct smtp_session *s)
{
	bufferevent_setcb(s->bev, smtp_readcb, smtp_writecb, smtp_eventcb, s);
	bufferevent_setwatermark(s->bev, EV_READ, 0, SMTP_INPUT_MAX);
}

/* smtp_greet - the 220, after making sure the client has not talked */
static void
smtp_greet(struct smtp_session *s)
{
	char c;
	ssize_t n;

	if (s->listener != SMTP_LISTEN_SUBMISSIONS) {
		n = recv(s->fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
		if (n > 0) {
			log_info("sid=%s event=reject code=0 reason=\"pregreet:"
			    " client talked before the greeting\"", s->sid);
			smtp_close(s);
			return;
		}
		if (n == 0) {
			smtp_close(s);
			return;
		}
	}
	evbuffer_add_printf(smtp_out(s), "220 %s ESMTP Petrel\r\n",
	    env->conf->hostname);
	smtp_enter_state(s, S_CONNECTED);
	bufferevent_enable(s->bev, s->direct ? EV_READ : EV_READ | EV_WRITE);
	smtp_cmd_deadline(s);
}

/* smtp_session_reset - forget EHLO, AUTH and the transaction (STARTTLS) */
static void
smtp_session_reset(struct smtp_session *s)
{
	smtp_tx_free(s);
	free(s->helo);
	s->helo = NULL;
	s->esmtp = 0;
	free(s->auth_user);
	s->auth_user = NULL;
	free(s->login_user);
	s->login_user = NULL;
	free(s->tenant);
	s->tenant = s->net_tenant ? xstrdup(s->net_tenant) : NULL;
}

/* smtp_tls_start - the 220 of STARTTLS is flushed: wrap the fd in TLS */
static void
smtp_tls_start(struct smtp_session *s)
{
	struct bufferevent *tbev;
	SSL *ssl;

	if ((ssl = SSL_new(env->ssl_server)) == NULL) {
		log_warn("sid=%s event=tls-error reason=\"SSL_new failed\"",
		    s->sid);
		smtp_close(s);
		return;
	}
	SSL_set_mode(ssl, SSL_MODE_RELEASE_BUFFERS);
	/* anything pipelined in plaintext is dropped (CVE-2011-0411) */
	evbuffer_drain(bufferevent_get_input(s->bev),
	    evbuffer_get_length(bufferevent_get_input(s->bev)));
	tbev = bufferevent_openssl_socket_new(env->base, s->fd, ssl,
	    BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
	if (tbev == NULL) {
		SSL_free(ssl);
		smtp_close(s);
		return;
	}
	bufferevent_free(s->bev);	/* plain one: does not close fd */
	s->bev = tbev;
	s->bev_owns_fd = 1;
	s->direct = 0;
	bufferevent_openssl_set_allow_dirty_shutdown(s->bev, 1);
	smtp_bev_setup(s);
	bufferevent_enable(s->bev, EV_READ | EV_WRITE);
	smtp_session_reset(s);
	smtp_enter_state(s, S_TLS_HANDSHAKE);
	smtp_cmd_deadline(s);
}

/* smtp_tls_ready - handshake done: note version and cipher */
static void
smtp_tls_ready(struct smtp_session *s)
{
	SSL *ssl = bufferevent_openssl_get_ssl(s->bev);

	if (s->state != S_TLS_HANDSHAKE)
		return;		/* only the first handshake counts */
	s->tls = 1;
	if (ssl != NULL) {
		free(s->tls_version);
		free(s->tls_cipher);
		s->tls_version = xstrdup(SSL_get_version(ssl));
		s->tls_cipher = xstrdup(SSL_get_cipher_name(ssl));
		s->tls_bits = SSL_get_cipher_bits(ssl, NULL);
	}
	if (s->busy) {
		evbuffer_add(smtp_out(s), SMTP_BUSY_REPLY,
		    sizeof(SMTP_BUSY_REPLY) - 1);
		smtp_close(s);
		return;
	}
	log_info("sid=%s event=tls version=%s cipher=%s", s->sid,
	    s->tls_version ? s->tls_version : "?",
	    s->tls_cipher ? s->tls_cipher : "?");
	if (s->listener == SMTP_LISTEN_SUBMISSIONS) {
		smtp_greet(s);
		return;
	}
	smtp_enter_state(s, S_CONNECTED);
	smtp_cmd_deadline(s);
}

static void
smtp_timeout(struct smtp_session *s)
{
	switch (s->state) {
	case S_GREET_WAIT:
		smtp_greet(s);
		break;
	case S_TLS_HANDSHAKE:
	case S_STARTTLS:
	case S_CLOSING:
		log_info("sid=%s event=timeout state=%s", s->sid,
		    smtp_state_names[s->state]);
		smtp_close(s);
		evbuffer_drain(smtp_out(s), evbuffer_get_length(smtp_out(s)));
		break;
	case S_AUTH_CHECK:
	case S_QUEUE:
		/* waiting on our side: never drop a commit under way */
		smtp_cmd_deadline(s);
		break;
	default:
		smtp_reply(s, 421, "4.4.2", "%s Error: timeout exceeded",
		    env->conf->hostname);
		smtp_close(s);
		break;
	}
}

/* Reading commands */

/* smtp_getline - next command line from the input, bounded by max.
 * 1: line in buf (NUL-terminated, CRLF removed, *len_r its length);
 * 0: need more input; -1: the line was answered (too long, NUL) or the
 * session is closing (bare CR/LF). */
static int
smtp_getline(struct smtp_session *s, char *buf, size_t max, size_t *len_r)
{
	struct evbuffer *in = bufferevent_get_input(s->bev);
	size_t avail = evbuffer_get_length(in), n, llen;
	unsigned char *p, *nl;

	while (avail > 0) {
		n = avail < max ? avail : max;
		p = evbuffer_pullup(in, (ev_ssize_t)n);
		nl = memchr(p, '\n', n);
		if (s->line_skip) {
			if (nl == NULL) {
				evbuffer_drain(in, n);
				avail = evbuffer_get_length(in);
				continue;
			}
			evbuffer_drain(in, (size_t)(nl - p) + 1);
			s->line_skip = 0;
			avail = evbuffer_get_length(in);
			continue;
		}
		if (nl == NULL) {
			if (avail < max)
				return 0;
			smtp_reply(s, 500, "5.5.2", "Line too long");
			evbuffer_drain(in, n);
			s->line_skip = 1;
			return -1;
		}
		llen = (size_t)(nl - p) + 1;
		if (llen < 2 || p[llen - 2] != '\r' ||
		    memchr(p, '\r', llen - 2) != NULL) {
			smtp_reply(s, 500, "5.5.2", "Bare CR or LF in command "
			    "not allowed; closing connection");
			smtp_tx_free(s);
			smtp_close(s);
			return -1;
		}
		memcpy(buf, p, llen - 2);
		buf[llen - 2] = '\0';
		evbuffer_drain(in, llen);
		if (memchr(buf, '\0', llen - 2) != NULL) {
			smtp_reply(s, 501, "5.5.2", "NUL character in command");
			return -1;
		}
		*len_r = llen - 2;
		return 1;
	}
	return 0;
}

/* Commands */

#define CMD_NEED_HELO	0x01	/* 503 before EHLO/HELO */
#define CMD_NEED_MAIL	0x02	/* 503 before MAIL */
#define CMD_NEED_RCPT	0x04	/* 503 before RCPT */
#define CMD_IN_BDAT	0x08	/* allowed between BDAT chunks */

struct smtp_cmd {
	const char	*verb;
	void		(*fn)(struct smtp_session *, const char *, size_t);
	int		 flags;
};

static int
smtp_in_tx(const struct smtp_session *s)
{
	return s->state == S_MAIL || s->state == S_RCPT ||
	    s->state == S_BDAT_MORE;
}

/* helo_copy - HELO name as it may appear in Received: */
static char *
helo_copy(const char *arg, size_t len)
{
	char *h;
	size_t i;

	if (len > SMTP_HELO_MAX)
		len = SMTP_HELO_MAX;
	h = xstrndup(arg, len);
	for (i = 0; h[i]; i++) {
		unsigned char c = (unsigned char)h[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || strchr(".-_:[]", c) != NULL))
			h[i] = '?';
	}
	return h;
}

static void
cmd_ehlo(struct smtp_session *s, const char *arg, size_t len)
{
	struct evbuffer *out = smtp_out(s);

	if (len == 0) {
		smtp_reply(s, 501, "5.5.4", "Syntax: EHLO hostname");
		return;
	}
	smtp_tx_free(s);
	free(s->helo);
	s->helo = helo_copy(arg, len);
	s->esmtp = 1;
	smtp_enter_state(s, S_HELO);
	evbuffer_add_printf(out, "250-%s\r\n", env->conf->hostname);
	evbuffer_add_printf(out, "250-PIPELINING\r\n");
	evbuffer_add_printf(out, "250-SIZE %llu\r\n",
	    (unsigned long long)env->conf->max_message_size);
	evbuffer_add_printf(out, "250-8BITMIME\r\n");
	evbuffer_add_printf(out, "250-SMTPUTF8\r\n");
	evbuffer_add_printf(out, "250-ENHANCEDSTATUSCODES\r\n");
	if (!s->tls && env->ssl_server != NULL &&
	    s->listener != SMTP_LISTEN_SUBMISSIONS)
		evbuffer_add_printf(out, "250-STARTTLS\r\n");
	if (s->tls) {
		evbuffer_add_printf(out, "250-AUTH PLAIN LOGIN\r\n");
	}
	evbuffer_add_printf(out, "250 CHUNKING\r\n");
}

static void
cmd_helo(struct smtp_session *s, const char *arg, size_t len)
{
	if (len == 0) {
		smtp_reply(s, 501, "5.5.4", "Syntax: HELO hostname");
		return;
	}
	smtp_tx_free(s);
	free(s->helo);
	s->helo = helo_copy(arg, len);
	s->esmtp = 0;
	smtp_enter_state(s, S_HELO);
	evbuffer_add_printf(smtp_out(s), "250 %s\r\n", env->conf->hostname);
}

static void
cmd_starttls(struct smtp_session *s, const char *arg, size_t len)
{
	(void)arg;
	if (s->tls) {
		smtp_reply(s, 503, "5.5.1", "Already under TLS");
		return;
	}
	if (env->ssl_server == NULL ||
	    s->listener == SMTP_LISTEN_SUBMISSIONS) {
		smtp_reply(s, 454, "4.7.0", "TLS not available");
		return;
	}
	if (len != 0) {
		smtp_reply(s, 501, "5.5.4", "Syntax: STARTTLS");
		return;
	}
	if (smtp_in_tx(s)) {
		smtp_reply(s, 503, "5.5.1", "STARTTLS not allowed during a "
		    "mail transaction");
		return;
	}
	evbuffer_add_printf(smtp_out(s), "220 2.0.0 Ready to start TLS\r\n");
	/* nothing more is read in plaintext; what is buffered is dropped */
	bufferevent_disable(s->bev, EV_READ);
	evbuffer_drain(bufferevent_get_input(s->bev),
	    evbuffer_get_length(bufferevent_get_input(s->bev)));
	smtp_enter_state(s, S_STARTTLS);
}

/* AUTH */

static void
auth_verify(void *arg)
{
	struct smtp_authjob *j = arg;

	j->ok = passwd_verify(j->pass, j->hash) == 0 && j->found;
	explicit_bzero(j->pass, strlen(j->pass));
}

static void
auth_job_free(struct smtp_authjob *j)
{
	explicit_bzero(j->pass, strlen(j->pass));
	free(j->pass);
	free(j->user);
	free(j->tenant);
	free(j->hash);
	free(j);
}

/* auth_done - main loop: the verdict of a password check */
static void
auth_done(void *arg)
{
	struct smtp_authjob *j = arg;
	struct smtp_session *s = j->s;

	if (s == NULL) {
		auth_job_free(j);
		return;
	}
	s->authjob = NULL;
	smtp_enter_state(s, S_HELO);
	if (j->ok) {
		s->auth_user = j->user;
		j->user = NULL;
		free(s->tenant);
		s->tenant = j->tenant;
		j->tenant = NULL;
		log_info("sid=%s event=auth result=ok user=%s tenant=%s",
		    s->sid, s->auth_user, s->tenant);
		evbuffer_add_printf(smtp_out(s),
		    "235 2.7.0 Authentication successful\r\n");
	} else {
		char *u = util_sanitize(j->user, NAME_MAX_LEN);
		ip_auth_failed(s->ipent);
		log_info("sid=%s event=auth result=fail user=%s ip=%s "
		    "failures=%u", s->sid, u, s->ip, s->ipent->nfail);
		free(u);
		smtp_reply(s, 535, "5.7.8",
		    "Authentication credentials invalid");
	}
	auth_job_free(j);
	smtp_cmd_deadline(s);
	smtp_tail(s);
}

/* auth_check - hand user/password to a worker thread */
static void
auth_check(struct smtp_session *s, const char *user, const char *pass)
{
	struct smtp_authjob *j;
	const char *c;

	for (c = user; *c; c++)
		if ((unsigned char)*c < 0x20 || *c == 0x7f)
			break;
	if (*user == '\0' || *c != '\0' || strlen(user) > NAME_MAX_LEN ||
	    strlen(pass) > PASSWORD_MAX_LEN) {
		smtp_reply(s, 535, "5.7.8",
		    "Authentication credentials invalid");
		ip_auth_failed(s->ipent);
		smtp_enter_state(s, S_HELO);
		return;
	}
	j = xcalloc(1, sizeof(*j));
	j->s = s;
	j->user = xstrdup(user);
	j->pass = xstrdup(pass);
	if (store_user_lookup(env->store, user, &j->tenant, &j->hash) == 0)
		j->found = 1;
	else {
		/* same work for unknown users: no timing oracle */
		j->hash = xstrdup(smtp_dummy_hash);
		j->found = 0;
	}
	s->authjob = j;
	smtp_enter_state(s, S_AUTH_CHECK);
	worker_run(auth_verify, j, auth_done);
}

/* auth_decode - base64 of an AUTH response into a malloc'd buffer */
static unsigned char *
auth_decode(struct smtp_session *s, const char *in, size_t len,
    size_t *outlen_r)
{
	unsigned char *out;
	long n;

	if (len == 1 && in[0] == '*') {
		smtp_reply(s, 501, "5.5.2", "Authentication cancelled");
		return NULL;
	}
	out = xmalloc(len / 4 * 3 + 4);
	if ((n = util_b64_decode(in, len, out)) < 0) {
		free(out);
		smtp_reply(s, 501, "5.5.2", "Malformed base64 in AUTH");
		return NULL;
	}
	out[n] = '\0';
	*outlen_r = (size_t)n;
	return out;
}

/* auth_plain - "authzid NUL authcid NUL passwd" */
static void
auth_plain(struct smtp_session *s, const char *b64, size_t len)
{
	unsigned char *buf;
	const char *authz, *authc, *pass;
	size_t n, l1, l2;

	if (len == 1 && b64[0] == '=')
		len = 0;
	if ((buf = auth_decode(s, b64, len, &n)) == NULL) {
		smtp_enter_state(s, S_HELO);
		return;
	}
	authz = (const char *)buf;
	l1 = strnlen(authz, n);
	if (l1 >= n) {
		smtp_reply(s, 501, "5.5.2", "Malformed AUTH PLAIN response");
		goto out;
	}
	authc = authz + l1 + 1;
	l2 = strnlen(authc, n - l1 - 1);
	if (l1 + 1 + l2 >= n) {
		smtp_reply(s, 501, "5.5.2", "Malformed AUTH PLAIN response");
		goto out;
	}
	pass = authc + l2 + 1;
	if (strlen(pass) != n - l1 - l2 - 2) {
		smtp_reply(s, 501, "5.5.2", "Malformed AUTH PLAIN response");
		goto out;
	}
	if (l1 != 0 && strcmp(authz, authc) != 0) {
		smtp_reply(s, 535, "5.7.8", "Authorization identity must be "
		    "empty or equal the authentication identity");
		goto out;
	}
	auth_check(s, authc, pass);
	explicit_bzero(buf, n);
	free(buf);
	return;
out:
	explicit_bzero(buf, n);
	free(buf);
	smtp_enter_state(s, S_HELO);
}

static void
cmd_auth(struct smtp_session *s, const char *arg, size_t len)
{
	const char *ini = NULL;
	size_t mlen = 0, inilen = 0;
	unsigned char *u;
	size_t n;

	if (!s->tls) {
		smtp_reply(s, 538, "5.7.11", "Encryption required for "
		    "requested authentication mechanism");
		return;
	}
	if (!s->esmtp) {
		smtp_reply(s, 503, "5.5.1", "Send EHLO first");
		return;
	}
	if (s->auth_user != NULL) {
		smtp_reply(s, 503, "5.5.1", "Already authenticated");
		return;
	}
	if (smtp_in_tx(s)) {
		smtp_reply(s, 503, "5.5.1", "AUTH not allowed during a mail "
		    "transaction");
		return;
	}
	if (ip_auth_throttled(s->ipent)) {
		log_warn("sid=%s event=auth-throttled ip=%s failures=%u",
		    s->sid, s->ip, s->ipent->nfail);
		smtp_reply(s, 454, "4.7.0", "Too many authentication "
		    "failures; try again later");
		return;
	}
	while (mlen < len && arg[mlen] != ' ')
		mlen++;
	if (mlen < len) {
		ini = arg + mlen + 1;
		inilen = len - mlen - 1;
	}
	if (mlen == 5 && strncasecmp(arg, "PLAIN", 5) == 0) {
		if (ini != NULL) {
			auth_plain(s, ini, inilen);
			return;
		}
		evbuffer_add_printf(smtp_out(s), "334 \r\n");
		smtp_enter_state(s, S_AUTH_PLAIN);
	} else if (mlen == 5 && strncasecmp(arg, "LOGIN", 5) == 0) {
		if (ini != NULL) {
			if ((u = auth_decode(s, ini, inilen, &n)) == NULL)
				return;
			if (strlen((char *)u) != n) {
				free(u);
				smtp_reply(s, 501, "5.5.2", "NUL in AUTH LOGIN "
				    "user");
				return;
			}
			free(s->login_user);
			s->login_user = (char *)u;
			evbuffer_add_printf(smtp_out(s),
			    "334 UGFzc3dvcmQ6\r\n");
			smtp_enter_state(s, S_AUTH_PASS);
			return;
		}
		evbuffer_add_printf(smtp_out(s), "334 VXNlcm5hbWU6\r\n");
		smtp_enter_state(s, S_AUTH_USER);
	} else
		smtp_reply(s, 504, "5.5.4", "Unrecognized authentication "
		    "type");
}

/* smtp_auth_line - a continuation line of AUTH PLAIN/LOGIN */
static void
smtp_auth_line(struct smtp_session *s, const char *line, size_t len)
{
	unsigned char *u;
	size_t n;

	switch (s->state) {
	case S_AUTH_PLAIN:
		auth_plain(s, line, len);
		break;
	case S_AUTH_USER:
		if ((u = auth_decode(s, line, len, &n)) == NULL) {
			smtp_enter_state(s, S_HELO);
			return;
		}
		if (strlen((char *)u) != n) {
			free(u);
			smtp_reply(s, 501, "5.5.2", "NUL in AUTH LOGIN user");
			smtp_enter_state(s, S_HELO);
			return;
		}
		free(s->login_user);
		s->login_user = (char *)u;
		evbuffer_add_printf(smtp_out(s), "334 UGFzc3dvcmQ6\r\n");
		smtp_enter_state(s, S_AUTH_PASS);
		break;
	case S_AUTH_PASS:
		if ((u = auth_decode(s, line, len, &n)) == NULL) {
			smtp_enter_state(s, S_HELO);
		} else if (strlen((char *)u) != n) {
			explicit_bzero(u, n);
			free(u);
			smtp_reply(s, 501, "5.5.2", "NUL in AUTH LOGIN password");
			smtp_enter_state(s, S_HELO);
		} else {
			auth_check(s, s->login_user, (char *)u);
			explicit_bzero(u, n);
			free(u);
		}
		free(s->login_user);
		s->login_user = NULL;
		break;
	default:
		fatalx("smtp_auth_line in state %d", s->state);
	}
}

/* MAIL / RCPT */

/* sender_check - may the session's tenant send as local@domain? */
static int
sender_check(struct smtp_session *s, const char *what, const char *local,
    const char *domain, char *norm, size_t normlen)
{
	const char *reason = NULL;

	if (domain[0] == '[' || domain_normalize(domain, norm, normlen,
	    &reason) == -1) {
		smtp_reply(s, 550, "5.7.1", "%s domain %s not allowed: %s",
		    what, domain, "unknown domain");
		return -1;
	}
	if (store_sender_check(env->store, s->tenant, local, norm,
	    &reason) == -1) {
		smtp_reply(s, 550, "5.7.1", "%s domain %s not allowed for "
		    "tenant %s: %s", what, norm, s->tenant, reason);
		return -1;
	}
	return 0;
}

static void
cmd_mail(struct smtp_session *s, const char *arg, size_t len)
{
	struct smtp_path path;
	struct smtp_param prm;
	const char *p, *end = arg + len, *err = NULL, *gt;
	char xbuf[ADDRESS_MAX_LEN + 1], norm[DOMAIN_MAX_LEN + 1];
	char envid[SMTP_ENVID_MAX + 1] = "";
	int smtputf8 = 0, binary = 0, seen_size = 0, seen_body = 0, rc;
	int ret = 0;
	uint64_t size;
	size_t used;

	if (smtp_in_tx(s)) {
		smtp_reply(s, 503, "5.5.1", "Nested MAIL command");
		return;
	}
	if (s->listener != SMTP_LISTEN_RELAY && s->auth_user == NULL) {
		smtp_reply(s, 530, "5.7.0", "Authentication required");
		return;
	}
	if (!smtp_prefix(arg, len, "FROM:")) {
		smtp_reply(s, 501, "5.5.4", "Syntax: MAIL FROM:<address>");
		return;
	}
	p = arg + 5;
	if (p < end && *p == ' ')
		p++;
	rc = smtp_parse_path(p, (size_t)(end - p), 1, 1, &path, &used, &err);
	if (rc != SMTP_PATH_OK) {
		/* not UTF-8 either (e.g. Latin-1): still non-ASCII */
		gt = memchr(p, '>', (size_t)(end - p));
		if (smtp_8bit(p, gt != NULL ? gt : end) &&
		    !smtp_has_keyword(gt != NULL ? gt + 1 : end, end,
		    "SMTPUTF8"))
			smtp_reply(s, 553, "5.6.7", "Non-ASCII sender address "
			    "needs the SMTPUTF8 parameter");
		else
			smtp_reply(s, 501, "5.1.7", "Bad sender address "
			    "syntax: %s", err);
		return;
	}
	p += used;
	if (p < end && *p != ' ') {
		smtp_reply(s, 501, "5.5.4", "Syntax: MAIL FROM:<address> "
		    "[parameters]");
		return;
	}
	while ((rc = smtp_param_next(&p, end, &prm, &err)) == 1) {
		if (smtp_param_is(&prm, "SIZE")) {
			if (seen_size++ || prm.val == NULL ||
			    smtp_parse_size(prm.val, prm.vallen, &size) == -1) {
				smtp_reply(s, 501, "5.5.4", "Bad SIZE parameter");
				return;
			}
			if (size > env->conf->max_message_size) {
				smtp_reply(s, 552, "5.3.4", "Message size "
				    "exceeds fixed maximum message size");
				return;
			}
		} else if (smtp_param_is(&prm, "BODY")) {
			if (seen_body++ || prm.val == NULL)
				goto badparam;
			if (prm.vallen == 4 &&
			    strncasecmp(prm.val, "7BIT", 4) == 0)
				binary = 0;
			else if (prm.vallen == 8 &&
			    strncasecmp(prm.val, "8BITMIME", 8) == 0)
				binary = 0;
			else if (prm.vallen == 10 &&
			    strncasecmp(prm.val, "BINARYMIME", 10) == 0)
				binary = 1;
			else
				goto badparam;
		} else if (smtp_param_is(&prm, "SMTPUTF8")) {
			if (prm.val != NULL || smtputf8++)
				goto badparam;
		} else if (smtp_param_is(&prm, "AUTH") ||
		    smtp_param_is(&prm, "ENVID")) {
			if (prm.val == NULL || smtp_xtext_decode(prm.val,
			    prm.vallen, xbuf, sizeof(xbuf), &err) == -1 ||
			    (smtp_param_is(&prm, "ENVID") && (envid[0] != '\0' ||
			    xbuf[0] == '\0' || strlen(xbuf) > SMTP_ENVID_MAX))) {
				smtp_reply(s, 501, "5.5.4", "Bad %.*s parameter",
				    (int)prm.keylen, prm.key);
				return;
			}
			if (smtp_param_is(&prm, "ENVID"))
				util_strlcpy(envid, xbuf, sizeof(envid));
		} else if (smtp_param_is(&prm, "RET")) {
			if (prm.val == NULL || ret != 0 || !((prm.vallen == 4 &&
			    strncasecmp(prm.val, "FULL", 4) == 0) ||
			    (prm.vallen == 4 &&
			    strncasecmp(prm.val, "HDRS", 4) == 0)))
				goto badparam;
			ret = toupper((unsigned char)prm.val[0]) == 'F' ? 2 : 1;
		} else {
			smtp_reply(s, 555, "5.5.4", "Unsupported parameter");
			return;
		}
	}
	if (rc == -1) {
		smtp_reply(s, 501, "5.5.4", "Bad parameter: %s", err);
		return;
	}
	if (path.utf8 && !smtputf8) {
		smtp_reply(s, 553, "5.6.7", "Non-ASCII sender address needs "
		    "the SMTPUTF8 parameter");
		return;
	}
	if (path.null) {
		smtp_reply(s, 550, "5.7.1", "Null sender <> not allowed "
		    "here");
		return;
	}
	if (s->tenant != NULL && sender_check(s, "Sender", path.local,
	    path.domain, norm, sizeof(norm)) == -1)
		return;
	s->tx = xcalloc(1, sizeof(*s->tx));
	s->tx->tenant = s->tenant ? xstrdup(s->tenant) : NULL;
	s->tx->mail_from = xasprintf("%s@%s", path.local, path.domain);
	s->tx->smtputf8 = smtputf8;
	s->tx->binarymime = binary;
	s->tx->envid = envid[0] != '\0' ? xstrdup(envid) : NULL;
	s->tx->ret = ret;
	smtp_enter_state(s, S_MAIL);
	evbuffer_add_printf(smtp_out(s), "250 2.1.0 Ok\r\n");
	return;
badparam:
	smtp_reply(s, 501, "5.5.4", "Bad %.*s parameter", (int)prm.keylen,
	    prm.key);
}

/* notify_ok - NOTIFY=NEVER or a list of SUCCESS,FAILURE,DELAY */
static int
notify_ok(const char *v, size_t len)
{
	size_t i = 0, j;

	if (len == 5 && strncasecmp(v, "NEVER", 5) == 0)
		return 1;
	while (i < len) {
		for (j = i; j < len && v[j] != ','; j++)
			;
		if (!((j - i == 7 && strncasecmp(v + i, "SUCCESS", 7) == 0) ||
		    (j - i == 7 && strncasecmp(v + i, "FAILURE", 7) == 0) ||
		    (j - i == 5 && strncasecmp(v + i, "DELAY", 5) == 0)))
			return 0;
		i = j + 1;
		if (j + 1 == len)
			return 0;	/* trailing comma */
	}
	return len > 0;
}

static void
cmd_rcpt(struct smtp_session *s, const char *arg, size_t len)
{
	struct smtp_tx *tx = s->tx;
	struct smtp_path path;
	struct smtp_param prm;
	const char *p, *end = arg + len, *err = NULL, *semi, *gt;
	char xbuf[ADDRESS_MAX_LEN * 2 + 1], notify[32] = "";
	char *orcpt = NULL;
	size_t used, i;
	int rc;

	if (!smtp_prefix(arg, len, "TO:")) {
		smtp_reply(s, 501, "5.5.4", "Syntax: RCPT TO:<address>");
		return;
	}
	if (s->tenant == NULL) {
		smtp_reply(s, 554, "5.7.1", "Relay access denied");
		return;
	}
	if (tx->nrcpts >= env->conf->max_recipients) {
		smtp_reply(s, 452, "4.5.3", "Too many recipients");
		return;
	}
	p = arg + 3;
	if (p < end && *p == ' ')
		p++;
	rc = smtp_parse_path(p, (size_t)(end - p), 1, 0, &path, &used, &err);
	if (rc != SMTP_PATH_OK) {
		gt = memchr(p, '>', (size_t)(end - p));
		if (!tx->smtputf8 && smtp_8bit(p, gt != NULL ? gt : end))
			smtp_reply(s, 553, "5.6.7", "Non-ASCII recipient "
			    "address needs SMTPUTF8");
		else
			smtp_reply(s, 501, "5.1.3", "Bad recipient address "
			    "syntax: %s", err);
		return;
	}
	p += used;
	if (p < end && *p != ' ') {
		smtp_reply(s, 501, "5.5.4", "Syntax: RCPT TO:<address> "
		    "[parameters]");
		return;
	}
	while ((rc = smtp_param_next(&p, end, &prm, &err)) == 1) {
		if (smtp_param_is(&prm, "ORCPT")) {
			if (prm.val == NULL || (semi = memchr(prm.val, ';',
			    prm.vallen)) == NULL || semi == prm.val ||
			    smtp_xtext_decode(semi + 1, prm.vallen -
			    (size_t)(semi + 1 - prm.val), xbuf, sizeof(xbuf),
			    &err) == -1 || xbuf[0] == '\0') {
				smtp_reply(s, 501, "5.5.4", "Bad ORCPT "
				    "parameter");
				goto out;
			}
			free(orcpt);
			orcpt = xasprintf("%.*s;%s", (int)(semi - prm.val),
			    prm.val, xbuf);
		} else if (smtp_param_is(&prm, "NOTIFY")) {
			if (prm.val == NULL || !notify_ok(prm.val,
			    prm.vallen) || prm.vallen >= sizeof(notify)) {
				smtp_reply(s, 501, "5.5.4", "Bad NOTIFY "
				    "parameter");
				goto out;
			}
			for (i = 0; i < prm.vallen; i++)
				notify[i] = (char)toupper(
				    (unsigned char)prm.val[i]);
			notify[i] = '\0';
		} else {
			smtp_reply(s, 555, "5.5.4", "Unsupported parameter");
			goto out;
		}
	}
	if (rc == -1) {
		smtp_reply(s, 501, "5.5.4", "Bad parameter: %s", err);
		goto out;
	}
	if (path.utf8 && !tx->smtputf8) {
		smtp_reply(s, 553, "5.6.7", "Non-ASCII recipient address "
		    "needs SMTPUTF8");
		goto out;
	}
	if (tx->nrcpts == tx->rcpts_cap) {
		tx->rcpts_cap = tx->rcpts_cap ? tx->rcpts_cap * 2 : 4;
		tx->rcpts = xrealloc(tx->rcpts,
		    tx->rcpts_cap * sizeof(*tx->rcpts));
		tx->notify = xrealloc(tx->notify,
		    tx->rcpts_cap * sizeof(*tx->notify));
		tx->orcpt = xrealloc(tx->orcpt,
		    tx->rcpts_cap * sizeof(*tx->orcpt));
	}
	tx->notify[tx->nrcpts] = notify[0] != '\0' ? xstrdup(notify) : NULL;
	tx->orcpt[tx->nrcpts] = orcpt;
	orcpt = NULL;
	tx->rcpts[tx->nrcpts++] = xasprintf("%s@%s", path.local,
	    path.domain);
	smtp_enter_state(s, S_RCPT);
	evbuffer_add_printf(smtp_out(s), "250 2.1.5 Ok\r\n");
out:
	free(orcpt);
}

/* DATA / BDAT */

static void
cmd_data(struct smtp_session *s, const char *arg, size_t len)
{
	struct smtp_tx *tx = s->tx;

	(void)arg;
	if (len != 0) {
		smtp_reply(s, 501, "5.5.4", "Syntax: DATA");
		return;
	}
	if (tx->binarymime) {
		smtp_reply(s, 503, "5.5.1", "BODY=BINARYMIME requires BDAT");
		return;
	}
	tx->msg = evbuffer_new();
	smtp_data_init(&tx->data, SMTP_DATA_DOT, SMTP_TEXT_LINE_MAX,
	    SMTP_HEADER_MAX);
	evbuffer_add_printf(smtp_out(s),
	    "354 End data with <CR><LF>.<CR><LF>\r\n");
	smtp_enter_state(s, S_DATA);
	smtp_timer_arm(s, env->conf->smtpd_data_timeout * 1000);
}

static void
cmd_bdat(struct smtp_session *s, const char *arg, size_t len)
{
	struct smtp_tx *tx = s->tx;
	size_t i = 0;
	uint64_t n;
	int last = 0;

	while (i < len && arg[i] != ' ')
		i++;
	if (i < len) {
		if (len - i - 1 == 4 && strncasecmp(arg + i + 1, "LAST", 4)
		    == 0)
			last = 1;
		else {
			smtp_reply(s, 501, "5.5.4", "Syntax: BDAT size [LAST]; "
			    "closing connection");
			smtp_close(s);
			return;
		}
	}
	if (smtp_parse_size(arg, i, &n) == -1) {
		size_t k;
		for (k = 0; k < i && arg[k] >= '0' && arg[k] <= '9'; k++)
			;
		if (i > 0 && k == i)
			smtp_reply(s, 552, "5.3.4", "Message size exceeds "
			    "fixed maximum message size; closing connection");
		else
			smtp_reply(s, 501, "5.5.4", "Syntax: BDAT size [LAST];"
			    " closing connection");
		smtp_close(s);
		return;
	}
	if (n > env->conf->max_message_size) {
		smtp_reply(s, 552, "5.3.4", "Message size exceeds fixed "
		    "maximum message size; closing connection");
		smtp_tx_free(s);
		smtp_close(s);
		return;
	}
	s->bdat_left = s->bdat_size = n;
	s->bdat_last = last;
	s->bdat_code = 0;
	s->bdat_drop_tx = 0;
	s->bdat_ret = s->state;
	if (s->state == S_CONNECTED) {
		s->bdat_code = 503;
		s->bdat_esc = "5.5.1";
		s->bdat_text = "Send EHLO first";
	} else if (s->state == S_HELO) {
		s->bdat_code = 503;
		s->bdat_esc = "5.5.1";
		s->bdat_text = "Need MAIL command";
	} else if (s->state == S_MAIL) {
		s->bdat_code = 503;
		s->bdat_esc = "5.5.1";
		s->bdat_text = "Need RCPT command";
	} else {
		if (!tx->chunking) {
			tx->chunking = 1;
			tx->msg = evbuffer_new();
			smtp_data_init(&tx->data, SMTP_DATA_CHUNK,
			    tx->binarymime ? SIZE_MAX : SMTP_TEXT_LINE_MAX,
			    SMTP_HEADER_MAX);
			smtp_timer_arm(s, env->conf->smtpd_data_timeout * 1000);
		}
		if (tx->data.size + n > env->conf->max_message_size) {
			s->bdat_code = 552;
			s->bdat_esc = "5.3.4";
			s->bdat_text = "Message size exceeds fixed maximum "
			    "message size";
			s->bdat_drop_tx = 1;
		}
	}
	if (s->bdat_code != 0 && s->bdat_ret != S_BDAT_MORE)
		smtp_timer_arm(s, env->conf->smtpd_data_timeout * 1000);
	smtp_enter_state(s, S_BDAT);
}

static void smtp_end_of_message(struct smtp_session *);

/* smtp_store - keep produced bytes while the message is acceptable */
static void
smtp_store(struct smtp_tx *tx, const unsigned char *buf, size_t n)
{
	if (tx->data.flags == 0 &&
	    tx->data.size <= env->conf->max_message_size) {
		if (n > 0)
			evbuffer_add(tx->msg, buf, n);
	} else if (evbuffer_get_length(tx->msg) > 0)
		/* refused anyway: stop storing, keep counting */
		evbuffer_drain(tx->msg, evbuffer_get_length(tx->msg));
}

/* smtp_data_input - DATA content; 1 when progress was made */
static int
smtp_data_input(struct smtp_session *s)
{
	static unsigned char out[SMTP_CHUNK + 2];
	struct evbuffer *in = bufferevent_get_input(s->bev);
	size_t avail = evbuffer_get_length(in), n, used, outlen;
	unsigned char *p;
	int done;

	if (avail == 0)
		return 0;
	n = avail < SMTP_CHUNK ? avail : SMTP_CHUNK;
	p = evbuffer_pullup(in, (ev_ssize_t)n);
	used = smtp_data_feed(&s->tx->data, p, n, out, &outlen, &done);
	smtp_store(s->tx, out, outlen);
	evbuffer_drain(in, used);
	if (done)
		smtp_end_of_message(s);
	return 1;
}

/* smtp_bdat_input - BDAT chunk bytes; 1 when progress was made */
static int
smtp_bdat_input(struct smtp_session *s)
{
	static unsigned char out[SMTP_CHUNK + 2];
	struct evbuffer *in = bufferevent_get_input(s->bev);
	size_t avail = evbuffer_get_length(in), n, outlen;
	unsigned char *p;
	int done;

	if (s->bdat_left > 0) {
		if (avail == 0)
			return 0;
		n = avail < SMTP_CHUNK ? avail : SMTP_CHUNK;
		if (n > s->bdat_left)
			n = (size_t)s->bdat_left;
		if (s->bdat_code == 0) {
			p = evbuffer_pullup(in, (ev_ssize_t)n);
			smtp_data_feed(&s->tx->data, p, n, out, &outlen,
			    &done);
			smtp_store(s->tx, out, outlen);
		}
		evbuffer_drain(in, n);
		s->bdat_left -= n;
		if (s->bdat_left > 0)
			return 1;
	}
	/* chunk complete */
	if (s->bdat_code != 0) {
		smtp_reply(s, s->bdat_code, s->bdat_esc, "%s", s->bdat_text);
		if (s->bdat_drop_tx)
			smtp_tx_end(s);
		else {
			smtp_enter_state(s, s->bdat_ret);
			if (s->bdat_ret != S_BDAT_MORE)
				smtp_cmd_deadline(s);
		}
		return 1;
	}
	if (s->bdat_last) {
		smtp_data_finish(&s->tx->data, out, &outlen);
		smtp_store(s->tx, out, outlen);
		smtp_end_of_message(s);
		return 1;
	}
	evbuffer_add_printf(smtp_out(s), "250 2.0.0 %llu octets received\r\n",
	    (unsigned long long)s->bdat_size);
	smtp_enter_state(s, S_BDAT_MORE);
	return 1;
}

/* rfc5322_date - "Tue, 1 Jul 2025 10:00:00 +0000" */
static void
rfc5322_date(char *buf, size_t len)
{
	time_t now = time(NULL);
	struct tm tm;

	localtime_r(&now, &tm);
	if (strftime(buf, len, "%a, %d %b %Y %H:%M:%S %z", &tm) == 0)
		util_strlcpy(buf, "Thu, 01 Jan 1970 00:00:00 +0000", len);
}

/* smtp_trace_headers - Received: (and Date:/Message-ID: when missing) */
static struct evbuffer *
smtp_trace_headers(struct smtp_session *s, int add_date, const char *msgid)
{
	struct evbuffer *b = evbuffer_new();
	char date[64];
	const char *proto;

	rfc5322_date(date, sizeof(date));
	if (s->auth_user != NULL)
		proto = s->tls ? "ESMTPSA" : "ESMTPA";
	else if (s->esmtp)
		proto = s->tls ? "ESMTPS" : "ESMTP";
	else
		proto = "SMTP";
	evbuffer_add_printf(b, "Received: from %s ([%s])\r\n"
	    "\tby %s (Petrel) with %s\r\n",
	    s->helo ? s->helo : "unknown", s->ip, env->conf->hostname, proto);
	if (s->tls)
		evbuffer_add_printf(b, "\t(using %s with cipher %s (%d bits))"
		    "\r\n", s->tls_version ? s->tls_version : "?",
		    s->tls_cipher ? s->tls_cipher : "?", s->tls_bits);
	if (s->auth_user != NULL)
		evbuffer_add_printf(b, "\t(authenticated tenant=%s user=%s)"
		    "\r\n", s->tx->tenant, s->auth_user);
	else
		evbuffer_add_printf(b, "\t(relay network tenant=%s)\r\n",
		    s->tx->tenant);
	evbuffer_add_printf(b, "\t; %s\r\n", date);
	if (add_date)
		evbuffer_add_printf(b, "Date: %s\r\n", date);
	if (msgid != NULL)
		evbuffer_add_printf(b, "Message-ID: %s\r\n", msgid);
	return b;
}

static void
smtp_queued(void *arg, int status, const char *qid, const char *err)
{
	struct smtp_session *s = arg;

	s->qreq = NULL;
	if (status == 0) {
		log_info("sid=%s event=queued qid=%s tenant=%s from=<%s> "
		    "nrcpts=%zu", s->sid, qid, s->tx->tenant,
		    s->tx->mail_from, s->tx->nrcpts);
		evbuffer_add_printf(smtp_out(s),
		    "250 2.0.0 Ok: queued as %s\r\n", qid);
		metrics_count_accepted((enum metrics_listener)s->listener);
	} else {
		log_warn("sid=%s event=queue-error err=\"%s\"", s->sid,
		    err ? err : "?");
		smtp_reply(s, 452, "4.3.1", "Insufficient system storage");
	}
	smtp_tx_end(s);
	bufferevent_enable(s->bev, EV_READ);
	smtp_tail(s);
}

/* msgid_copy - the Message-ID value, trimmed, control bytes replaced */
static char *
msgid_copy(const char *v, size_t len)
{
	char *m;
	size_t i;

	while (len > 0 && (*v == ' ' || *v == '\t' || *v == '\r' ||
	    *v == '\n')) {
		v++;
		len--;
	}
	while (len > 0 && (v[len - 1] == ' ' || v[len - 1] == '\t' ||
	    v[len - 1] == '\r' || v[len - 1] == '\n'))
		len--;
	if (len > SMTP_HELO_MAX)
		len = SMTP_HELO_MAX;
	m = xstrndup(v, len);
	for (i = 0; m[i]; i++)
		if ((unsigned char)m[i] < 0x20 || m[i] == 0x7f)
			m[i] = ' ';
	return m;
}

/* smtp_end_of_message - the data is complete: check, add trace, queue */
static void
smtp_end_of_message(struct smtp_session *s)
{
	struct smtp_tx *tx = s->tx;
	struct smtp_data *d = &tx->data;
	struct smtp_hdrinfo h;
	struct queue_envelope qe;
	struct evbuffer *trace;
	struct queue_req *req;
	const char *err = NULL, *hdr;
	char local[LOCALPART_MAX_LEN + 1], dom[DOMAIN_MAX_LEN + 1];
	char norm[DOMAIN_MAX_LEN + 1], qid[QUEUE_ID_LEN + 1], rid[25];
	char *header_from = NULL, *newid = NULL;
	json_t *client;
	int rc;

	smtp_cmd_deadline(s);
	if (d->flags & SMTP_DATA_BARE) {
		smtp_reply(s, 550, "5.6.0", "Message contains a bare CR or LF"
		    " (only CRLF line endings are accepted)");
		goto refuse;
	}
	if (d->flags & SMTP_DATA_HDRBIG) {
		smtp_reply(s, 552, "5.3.4", "Message header section exceeds "
		    "%u bytes", (unsigned)SMTP_HEADER_MAX);
		goto refuse;
	}
	if (d->size > env->conf->max_message_size) {
		smtp_reply(s, 552, "5.3.4", "Message size exceeds fixed "
		    "maximum message size");
		goto refuse;
	}
	if (d->flags & SMTP_DATA_LONGLINE) {
		smtp_reply(s, 550, "5.6.0", "Message has a line longer than "
		    "%u bytes", (unsigned)SMTP_TEXT_LINE_MAX);
		goto refuse;
	}
	if (d->flags & SMTP_DATA_NUL) {
		smtp_reply(s, 550, "5.6.0", "NUL byte in message header");
		goto refuse;
	}
	hdr = (const char *)evbuffer_pullup(tx->msg, (ev_ssize_t)d->header_len);
	if (d->header_len > 0 && hdr == NULL)
		fatalx("smtp: header section not in buffer");
	if (smtp_header_scan(hdr, d->header_len, &h, &err) == -1) {
		smtp_reply(s, 550, "5.6.0", "Malformed message header: %s",
		    err);
		goto refuse;
	}
	if (h.nmsgid > 0 && tx->msgid == NULL)
		tx->msgid = msgid_copy(hdr + h.msgid_off, h.msgid_len);
	if (h.nfields > SMTP_HEADER_FIELDS_MAX) {
		smtp_reply(s, 552, "5.3.4", "Too many header fields (more "
		    "than %u)", (unsigned)SMTP_HEADER_FIELDS_MAX);
		goto refuse;
	}
	if (h.nfrom == 0) {
		smtp_reply(s, 550, "5.6.0", "Message has no From header");
		goto refuse;
	}
	if (h.nfrom > 1) {
		smtp_reply(s, 550, "5.6.0", "Message has more than one From "
		    "header");
		goto refuse;
	}
	rc = smtp_header_from(hdr + h.from_off, h.from_len, local, dom, &err);
	if (rc == SMTP_FROM_SYNTAX) {
		smtp_reply(s, 550, "5.6.0", "Malformed From header: %s", err);
		goto refuse;
	}
	if (rc == SMTP_FROM_NOTONE) {
		smtp_reply(s, 550, "5.7.1", "From header must hold exactly one"
		    " address: %s", err);
		goto refuse;
	}
	if (sender_check(s, "From header", local, dom, norm,
	    sizeof(norm)) == -1)
		goto refuse;
	header_from = xasprintf("%s@%s", local, norm);
	if (tx->msgid == NULL) {	/* none in the header: ours */
		util_random_id(rid, 24);
		tx->msgid = newid = xasprintf("<%s@%s>", rid,
		    env->conf->hostname);
	}
	/* a header section with no body (RFC 5322 allows it) gets the
	 * empty line, so that every verifier finds where the body starts */
	if (d->header_len == evbuffer_get_length(tx->msg))
		evbuffer_add(tx->msg, "\r\n", 2);
	trace = smtp_trace_headers(s, h.ndate == 0, newid);
	evbuffer_prepend_buffer(tx->msg, trace);
	evbuffer_free(trace);

	client = json_pack("{s:s, s:s, s:s?, s:s?}", "ip", s->ip,
	    "helo", s->helo ? s->helo : "", "tls",
	    s->tls ? s->tls_version : NULL, "auth", s->auth_user);
	memset(&qe, 0, sizeof(qe));
	qe.tenant = tx->tenant;
	qe.mail_from = tx->mail_from;
	qe.header_from = header_from;
	qe.message_id = tx->msgid;
	qe.rcpts = (const char *const *)tx->rcpts;
	qe.nrcpts = tx->nrcpts;
	qe.envid = tx->envid;
	qe.ret = tx->ret == 2 ? "FULL" : tx->ret == 1 ? "HDRS" : NULL;
	qe.notify = (const char *const *)tx->notify;
	qe.orcpt = (const char *const *)tx->orcpt;
	qe.client = client;
	smtp_enter_state(s, S_QUEUE);
	qid[0] = '\0';
	req = queue_submit(env->queue, &qe, tx->msg, smtp_queued, s, qid);
	if (s->state == S_QUEUE)
		s->qreq = req;
	log_debug("sid=%s event=submit qid=%s size=%llu", s->sid, qid,
	    (unsigned long long)d->size);
	json_decref(client);
	free(header_from);
	return;
refuse:
	smtp_tx_end(s);
}

static void
cmd_rset(struct smtp_session *s, const char *arg, size_t len)
{
	(void)arg;
	(void)len;
	smtp_tx_free(s);
	smtp_enter_state(s, s->helo ? S_HELO : S_CONNECTED);
	evbuffer_add_printf(smtp_out(s), "250 2.0.0 Ok\r\n");
}

static void
cmd_noop(struct smtp_session *s, const char *arg, size_t len)
{
	(void)arg;
	(void)len;
	evbuffer_add_printf(smtp_out(s), "250 2.0.0 Ok\r\n");
}

static void
cmd_vrfy(struct smtp_session *s, const char *arg, size_t len)
{
	(void)arg;
	if (len == 0) {
		smtp_reply(s, 501, "5.5.4", "Syntax: VRFY <address>");
		return;
	}
	evbuffer_add_printf(smtp_out(s), "252 2.5.0 Cannot VRFY user, but "
	    "will accept message and attempt delivery\r\n");
}

static void
cmd_help(struct smtp_session *s, const char *arg, size_t len)
{
	(void)arg;
	(void)len;
	evbuffer_add_printf(smtp_out(s), "214 2.0.0 Commands: EHLO HELO "
	    "STARTTLS AUTH MAIL RCPT DATA BDAT RSET NOOP VRFY QUIT\r\n");
}

static void
cmd_quit(struct smtp_session *s, const char *arg, size_t len)
{
	(void)arg;
	(void)len;
	evbuffer_add_printf(smtp_out(s), "221 2.0.0 Bye\r\n");
	smtp_tx_free(s);
	smtp_close(s);
}

static const struct smtp_cmd smtp_cmds[] = {
	{ "EHLO",	cmd_ehlo,	0 },
	{ "HELO",	cmd_helo,	0 },
	{ "STARTTLS",	cmd_starttls,	CMD_NEED_HELO },
	{ "AUTH",	cmd_auth,	CMD_NEED_HELO },
	{ "MAIL",	cmd_mail,	CMD_NEED_HELO },
	{ "RCPT",	cmd_rcpt,	CMD_NEED_HELO | CMD_NEED_MAIL },
	{ "DATA",	cmd_data,	CMD_NEED_HELO | CMD_NEED_MAIL |
					CMD_NEED_RCPT },
	{ "BDAT",	cmd_bdat,	CMD_IN_BDAT },
	{ "RSET",	cmd_rset,	CMD_IN_BDAT },
	{ "NOOP",	cmd_noop,	CMD_IN_BDAT },
	{ "VRFY",	cmd_vrfy,	0 },
	{ "HELP",	cmd_help,	0 },
	{ "QUIT",	cmd_quit,	CMD_IN_BDAT },
};

/* smtp_command - dispatch one command line through smtp_cmds[] */
static void
smtp_command(struct smtp_session *s, const char *line, size_t len)
{
	char verb[SMTP_VERB_MAX];
	const char *arg;
	size_t alen, i;
	const struct smtp_cmd *c = NULL;

	if (smtp_cmd_split(line, len, verb, &arg, &alen) == 0) {
		for (i = 0; i < nitems(smtp_cmds); i++)
			if (strcmp(verb, smtp_cmds[i].verb) == 0) {
				c = &smtp_cmds[i];
				break;
			}
	}
	if (c == NULL) {
		smtp_reply(s, 500, "5.5.1", "Command unrecognized");
		goto done;
	}
	if (s->state == S_BDAT_MORE && !(c->flags & CMD_IN_BDAT)) {
		smtp_reply(s, 503, "5.5.1", "Only BDAT, RSET, NOOP or QUIT "
		    "may follow BDAT");
		goto done;
	}
	if ((c->flags & CMD_NEED_HELO) && s->state == S_CONNECTED) {
		smtp_reply(s, 503, "5.5.1", "Send EHLO/HELO first");
		goto done;
	}
	if ((c->flags & CMD_NEED_MAIL) && s->state != S_MAIL &&
	    s->state != S_RCPT) {
		smtp_reply(s, 503, "5.5.1", "Need MAIL command");
		goto done;
	}
	if ((c->flags & CMD_NEED_RCPT) && s->state != S_RCPT) {
		smtp_reply(s, 503, "5.5.1", "Need RCPT command");
		goto done;
	}
	c->fn(s, arg, alen);
done:
	if (s->state != S_CLOSING && s->nerrors >= SMTP_ERRORS_MAX) {
		smtp_reply(s, 421, "4.7.0", "Too many errors; closing "
		    "connection");
		smtp_tx_free(s);
		smtp_close(s);
	}
	/* a new deadline only after a whole command */
	if (s->state != S_DATA && s->state != S_BDAT &&
	    s->state != S_BDAT_MORE && s->state != S_CLOSING &&
	    s->state != S_STARTTLS)
		smtp_cmd_deadline(s);
}

/* smtp_process - consume buffered input as far as the state allows */
static void
smtp_process(struct smtp_session *s)
{
	static char line[SMTP_AUTH_LINE_MAX + 1];
	size_t len;
	int r;

	for (;;) {
		switch (s->state) {
		case S_CONNECTED:
		case S_HELO:
		case S_MAIL:
		case S_RCPT:
		case S_BDAT_MORE:
		case S_AUTH_PLAIN:
		case S_AUTH_USER:
		case S_AUTH_PASS:
		case S_DATA:
		case S_BDAT:
			break;
		default:
			return;
		}
		if (evbuffer_get_length(smtp_out(s)) > SMTP_OUTPUT_MAX)
			return;		/* resumes when the output drains */
		if (s->state == S_DATA) {
			if (!smtp_data_input(s))
				return;
			continue;
		}
		if (s->state == S_BDAT) {
			if (!smtp_bdat_input(s))
				return;
			continue;
		}
		if (s->state == S_AUTH_PLAIN || s->state == S_AUTH_USER ||
		    s->state == S_AUTH_PASS) {
			r = smtp_getline(s, line, SMTP_AUTH_LINE_MAX, &len);
			if (r == 0)
				return;
			if (r < 0) {
				if (s->state != S_CLOSING)
					smtp_enter_state(s, S_HELO);
				continue;
			}
			smtp_auth_line(s, line, len);
			explicit_bzero(line, len);
			continue;
		}
		r = smtp_getline(s, line, SMTP_LINE_MAX, &len);
		if (r == 0)
			return;
		if (r > 0)
			smtp_command(s, line, len);
	}
}

/* smtp_flush - a plaintext session's pending replies, written now; what
 * the socket does not take goes out through the bufferevent's write event
 * (then IO_DRAINED). -1 when the connection failed. */
static int
smtp_flush(struct smtp_session *s)
{
	struct evbuffer *out;
	int n;

	if (!s->direct)
		return 0;
	out = smtp_out(s);
	if (evbuffer_get_length(out) == 0)
		return 0;
	/* a bufferevent keeps its output's start frozen for its own use */
	evbuffer_unfreeze(out, 1);
	n = evbuffer_write(out, s->fd);
	evbuffer_freeze(out, 1);
	if (n == -1 && errno != EAGAIN && errno != EWOULDBLOCK &&
	    errno != EINTR)
		return -1;
	if (evbuffer_get_length(out) > 0)
		bufferevent_enable(s->bev, EV_WRITE);
	return 0;
}

/* smtp_tail - after any event: consume input, honour shutdown, free a
 * closed session once its last reply is out */
static void
smtp_tail(struct smtp_session *s)
{
	smtp_process(s);
	if (s->shutdown && (s->state == S_CONNECTED || s->state == S_HELO)) {
		smtp_reply(s, 421, "4.3.2", "Service shutting down");
		smtp_close(s);
	}
	if (smtp_flush(s) == -1) {
		smtp_free(s, "error");
		return;
	}
	if (s->direct && s->state == S_STARTTLS &&
	    evbuffer_get_length(smtp_out(s)) == 0)
		smtp_tls_start(s);	/* the 220 is out */
	if (s->state == S_CLOSING &&
	    evbuffer_get_length(smtp_out(s)) == 0)
		smtp_free(s, "closed");
}

/* smtp_io - the one event handler of a session */
static void
smtp_io(struct smtp_session *s, enum smtp_event ev)
{
	switch (ev) {
	case IO_READ:
		break;
	case IO_DRAINED:
		if (s->direct)
			bufferevent_disable(s->bev, EV_WRITE);
		if (s->state == S_STARTTLS) {
			smtp_tls_start(s);
			break;
		}
		break;
	case IO_TLS_READY:
		smtp_tls_ready(s);
		break;
	case IO_EOF:
	case IO_ERROR:
		if (s->state == S_TLS_HANDSHAKE) {
			unsigned long e = bufferevent_get_openssl_error(s->bev);
			char ebuf[256] = "";
			if (e != 0)
				ERR_error_string_n(e, ebuf, sizeof(ebuf));
			log_info("sid=%s event=tls-error reason=\"%s\"",
			    s->sid, ebuf);
		}
		smtp_free(s, ev == IO_EOF ? "eof" : "error");
		return;
	case IO_TIMEOUT:
		smtp_timeout(s);
		break;
	}
	smtp_tail(s);
}

/* smtp_free - the one exit of every session */
static void
smtp_free(struct smtp_session *s, const char *reason)
{
	if (!s->busy)		/* a busy one logged its reject */
		log_info("sid=%s event=disconnect ip=%s state=%s reason=%s",
		    s->sid, s->ip, smtp_state_names[s->state], reason);
	if (s->authjob != NULL)
		s->authjob->s = NULL;	/* the worker's job frees itself */
	if (s->qreq != NULL)
		queue_cancel(s->qreq);
	smtp_tx_free(s);
	TAILQ_REMOVE(&smtp_sessions, s, entry);
	if (s->busy)
		smtp_nbusy--;
	else
		smtp_nsessions--;
	if (s->ipent != NULL) {
		s->ipent->nconn--;
		ip_maybe_drop(s->ipent);
	}
	event_free(s->timer);
	bufferevent_free(s->bev);
	if (!s->bev_owns_fd)
		evutil_closesocket(s->fd);
	free(s->helo);
	free(s->tls_version);
	free(s->tls_cipher);
	free(s->net_tenant);
	free(s->tenant);
	free(s->auth_user);
	if (s->login_user != NULL) {
		explicit_bzero(s->login_user, strlen(s->login_user));
		free(s->login_user);
	}
	free(s);
}

/* Entry points */

/* smtp_metrics_sessions - the inbound connection gauge of metrics.c */
static double
smtp_metrics_sessions(void *arg)
{
	(void)arg;
	return smtp_nsessions;
}

void
smtp_server_init(void)
{
	struct timeval tv = { 60, 0 };

	worker_init(env->base);
	metrics_register_gauge("petrel_smtp_inbound_connections",
	    "Open inbound SMTP sessions.", smtp_metrics_sessions, NULL);
	if (smtp_dummy_hash == NULL)
		smtp_dummy_hash = passwd_hash("petrel-no-such-user");
	if (smtp_sweep_ev == NULL) {
		smtp_sweep_ev = event_new(env->base, -1, EV_PERSIST, ip_sweep,
		    NULL);
		event_add(smtp_sweep_ev, &tv);
	}
}

static const char *
listener_name(enum smtp_listener l)
{
	switch (l) {
	case SMTP_LISTEN_SUBMISSION:
		return "submission";
	case SMTP_LISTEN_SUBMISSIONS:
		return "submissions";
	default:
		return "relay";
	}
}

void
smtp_server_accept(enum smtp_listener l, evutil_socket_t fd,
    const struct sockaddr *sa, int salen)
{
	struct smtp_session *s;
	struct smtp_ipent *e;
	char ip[INET6_ADDRSTRLEN], sid[13];
	unsigned maxc = env->conf->max_connections;
	unsigned maxip = env->conf->max_connections_per_ip;
	int busy = 0;
	SSL *ssl;

	(void)salen;
	if (env->stopping) {
		evutil_closesocket(fd);
		return;
	}
	evutil_make_socket_nonblocking(fd);
	netaddr_str(sa, ip, sizeof(ip));
	util_random_id(sid, 12);
	e = ip_get(ip);
	if ((maxc > 0 && smtp_nsessions >= maxc) ||
	    (maxip > 0 && e->nconn >= maxip)) {
		metrics_count_rejected(METRICS_REJECT_CONNECTIONS);
		log_info("sid=%s event=reject code=421 esc=4.7.0 ip=%s "
		    "reason=\"too many connections (total %u, this ip %u)\"",
		    sid, ip, smtp_nsessions, e->nconn);
		ip_maybe_drop(e);
		if (l != SMTP_LISTEN_SUBMISSIONS) {
			(void)send(fd, SMTP_BUSY_REPLY,
			    sizeof(SMTP_BUSY_REPLY) - 1,
			    MSG_DONTWAIT | MSG_NOSIGNAL);
			evutil_closesocket(fd);
			return;
		}
		if (smtp_nbusy >= SMTP_BUSY_TLS_MAX || env->ssl_server == NULL) {
			evutil_closesocket(fd);
			return;
		}
		busy = 1;	/* the 421 once the client speaks TLS */
	}
	s = xcalloc(1, sizeof(*s));
	memcpy(s->sid, sid, sizeof(s->sid));
	memcpy(s->ip, ip, sizeof(s->ip));
	s->listener = l;
	s->fd = fd;
	TAILQ_INSERT_TAIL(&smtp_sessions, s, entry);
	if ((s->busy = busy))
		smtp_nbusy++;
	else {
		s->ipent = e;
		e->nconn++;
		smtp_nsessions++;
	}
	s->timer = evtimer_new(env->base, smtp_timercb, s);
	if (l == SMTP_LISTEN_SUBMISSIONS) {
		if (env->ssl_server == NULL ||
		    (ssl = SSL_new(env->ssl_server)) == NULL) {
			log_warn("sid=%s event=tls-error reason=\"no TLS "
			    "context for submissions\"", s->sid);
			s->bev = bufferevent_socket_new(env->base, fd, 0);
			smtp_free(s, "no-tls");
			return;
		}
		SSL_set_mode(ssl, SSL_MODE_RELEASE_BUFFERS);
		s->bev = bufferevent_openssl_socket_new(env->base, fd, ssl,
		    BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
		s->bev_owns_fd = 1;
		bufferevent_openssl_set_allow_dirty_shutdown(s->bev, 1);
	} else {
		if ((s->bev = bufferevent_socket_new(env->base, fd, 0)) !=
		    NULL) {
			/* enabled by default; smtp_flush writes instead */
			bufferevent_disable(s->bev, EV_WRITE);
			s->direct = 1;
		}
	}
	if (s->bev == NULL)
		fatalx("smtp: bufferevent_socket_new failed");
	smtp_bev_setup(s);
	if (busy) {
		smtp_enter_state(s, S_TLS_HANDSHAKE);
		bufferevent_enable(s->bev, EV_READ | EV_WRITE);
		smtp_timer_arm(s, SMTP_BUSY_TLS_MS);
		return;
	}
	if (l == SMTP_LISTEN_RELAY) {
		/* looked up per connection: petrelctl changes apply at once */
		s->net_tenant = store_network_lookup(env->store, sa);
		if (s->net_tenant != NULL)
			s->tenant = xstrdup(s->net_tenant);
	}
	log_info("sid=%s event=connect listener=%s ip=%s tenant=%s", s->sid,
	    listener_name(l), s->ip, s->tenant ? s->tenant : "-");
	if (l == SMTP_LISTEN_SUBMISSIONS) {
		smtp_enter_state(s, S_TLS_HANDSHAKE);
		bufferevent_enable(s->bev, EV_READ | EV_WRITE);
		smtp_cmd_deadline(s);
	} else if (env->conf->smtpd_greet_delay_ms > 0) {
		smtp_enter_state(s, S_GREET_WAIT);
		smtp_timer_arm(s, env->conf->smtpd_greet_delay_ms);
	} else
		smtp_greet(s);
	smtp_tail(s);
}

unsigned
smtp_server_sessions(void)
{
	return smtp_nsessions;
}

void
smtp_server_shutdown(void)
{
	struct smtp_session *s, *next;

	if (smtp_sweep_ev != NULL) {
		event_free(smtp_sweep_ev);
		smtp_sweep_ev = NULL;
	}
	for (s = TAILQ_FIRST(&smtp_sessions); s != NULL; s = next) {
		next = TAILQ_NEXT(s, entry);
		s->shutdown = 1;
		switch (s->state) {
		case S_NEW:
		case S_GREET_WAIT:
		case S_TLS_HANDSHAKE:
		case S_STARTTLS:
			smtp_close(s);
			evbuffer_drain(smtp_out(s),
			    evbuffer_get_length(smtp_out(s)));
			smtp_tail(s);
			break;
		case S_CONNECTED:
		case S_HELO:
			smtp_tail(s);
			break;
		default:
			/* inside a transaction: 421 once it ends */
			break;
		}
	}
}
