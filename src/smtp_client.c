/*
 * smtp_client.c - the outbound SMTP session state machine (see
 * smtp_client.h for the contract).
 *
 * One connection, one struct smtpc_conn, one state (enum smtpc_state,
 * written only by smtpc_enter()). Input is framed into CRLF lines with a
 * hard bound and fed to a small resumable reply parser; every complete
 * reply goes to smtpc_reply(), which switches on the state. With
 * PIPELINING the state is that of the next reply awaited: MAIL, then
 * RCPT per recipient sent, then DATA. The message is encoded on the fly
 * (CRLF normalisation, dot-stuffing) in blocks as the socket drains, so a
 * large message is never copied whole.
 *
 * Every failure goes through smtpc_fail(): it closes the socket, defers
 * each recipient without a final answer (4.4.2 with a sanitised, bounded
 * reason) and reports once. User callbacks are always the last thing a
 * handler does; handlers return -1 after one so that no caller touches a
 * connection the user may have freed.
 */
#include "autoconf.h"

#include <sys/types.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "limits.h"
#include "log.h"
#include "netaddr.h"
#include "smtp_client.h"
#include "util.h"

#define SMTPC_OUT_HIWAT		(64 * 1024)	/* body bytes queued at once */
#define SMTPC_OUT_LOWAT		(16 * 1024)	/* refill below this */
#define SMTPC_ENC_BLOCK		(16 * 1024)

enum smtpc_state {
	SMTPC_S_CONNECTING,
	SMTPC_S_GREETING,
	SMTPC_S_EHLO,
	SMTPC_S_HELO,
	SMTPC_S_STARTTLS,
	SMTPC_S_TLS,		/* handshake running */
	SMTPC_S_READY,		/* idle, usable */
	SMTPC_S_MAIL,
	SMTPC_S_RCPT,
	SMTPC_S_DATA,		/* awaiting 354 */
	SMTPC_S_BODY,		/* sending data / awaiting its final reply */
	SMTPC_S_RSET,
	SMTPC_S_QUIT,
	SMTPC_S_DEAD,		/* no socket; waiting for smtpc_free() */
};

static const char *const smtpc_state_names[] = {
	"connecting", "greeting", "ehlo", "helo", "starttls", "tls",
	"ready", "mail", "rcpt", "data", "body", "rset", "quit", "dead",
};

/* per-recipient progress */
#define RC_SKIP		0	/* not sent: decided locally */
#define RC_SEND		1	/* sent (or to send), no answer yet */
#define RC_ACCEPTED	2	/* 2xx to RCPT, awaiting end of data */
#define RC_FINAL	3	/* outcome decided */

enum smtpc_pending { PEND_NONE, PEND_READY, PEND_DONE };

struct smtpc_conn {
	char			 id[12];
	struct event_base	*base;
	SSL_CTX			*ssl_ctx;
	enum smtpc_tls		 tls_policy;
	char			*helo;
	char			*servername;
	char			 peer[INET6_ADDRSTRLEN + 8];
	struct smtpc_limits	 lim;
	enum smtpc_state	 state;

	int			 fd;		/* ours unless bev_owns_fd */
	int			 bev_owns_fd;
	struct bufferevent	*bev;
	struct event		*ev_timer;
	struct event		*ev_defer;
	enum smtpc_pending	 pending;
	int			 in_api;	/* inside smtpc_connect/send */
	int			 in_cb;		/* inside a user callback */
	int			 free_pending;
	int			 closing;	/* smtpc_close(): no callbacks */
	int			 broken;	/* no further command */

	struct smtpc_rparser	 rp;
	unsigned		 expect;	/* replies outstanding */
	unsigned		 ext, ext_new;
	uint64_t		 size_max, size_new;
	int			 tls, tls_failed;

	smtpc_ready_cb		 ready_cb;
	void			*ready_arg;
	struct smtpc_ready	 ready;

	/* the transaction (smtpc_send) */
	int			 txn;
	struct smtpc_msg	 msg;
	smtpc_done_cb		 done_cb;
	void			*done_arg;
	struct smtpc_rcpt_result *res;
	unsigned char		*rc;		/* RC_* per recipient */
	size_t			 reply_cur;	/* next recipient answered */
	int			 pipelining, use_bdat;
	int			 mail_ok, data_sent, body_queued, body_dummy;
	size_t			 naccepted;
	struct smtpc_enc	 enc;
};

static void smtpc_readcb(struct bufferevent *, void *);
static void smtpc_writecb(struct bufferevent *, void *);
static void smtpc_eventcb(struct bufferevent *, short, void *);
static int smtpc_fail(struct smtpc_conn *, enum smtpc_status, int,
    const char *, const char *, ...) PRINTFLIKE(5, 6);
static int smtpc_txn_end(struct smtpc_conn *);
static int smtpc_fire_done(struct smtpc_conn *);
static void smtpc_destroy(struct smtpc_conn *);

/* ------------------------------------------------------------ helpers */

void
smtpc_limits_default(struct smtpc_limits *l)
{
	memset(l, 0, sizeof(*l));
	l->connect_ms = 30 * 1000;
	l->greeting_ms = 5 * 60 * 1000;
	l->helo_ms = 5 * 60 * 1000;
	l->tls_ms = 5 * 60 * 1000;
	l->mail_ms = 5 * 60 * 1000;
	l->rcpt_ms = 5 * 60 * 1000;
	l->data_init_ms = 2 * 60 * 1000;
	l->data_block_ms = 3 * 60 * 1000;
	l->data_end_ms = 10 * 60 * 1000;
	l->rset_ms = 5 * 60 * 1000;
	l->quit_ms = 60 * 1000;
	l->reply_line_max = SMTPC_REPLY_LINE_MAX;
	l->reply_lines_max = SMTPC_REPLY_LINES_MAX;
	l->rcpts_max = SMTPC_RCPTS_MAX;
	l->use_chunking = 1;
	l->use_pipelining = 1;
	l->strict_8bitmime = 0;
}

const char *
smtpc_status_str(enum smtpc_status s)
{
	switch (s) {
	case SMTPC_OK:		return "ok";
	case SMTPC_ERR_CONNECT:	return "connect";
	case SMTPC_ERR_REFUSED:	return "refused";
	case SMTPC_ERR_PROTOCOL: return "protocol";
	case SMTPC_ERR_TLS:	return "tls";
	}
	return "?";
}

const char *
smtpc_outcome_str(enum smtpc_outcome o)
{
	switch (o) {
	case SMTPC_DELIVERED:	return "delivered";
	case SMTPC_BOUNCED:	return "bounced";
	case SMTPC_DEFERRED:	return "deferred";
	}
	return "?";
}

/* smtpc_sanitize - bounded copy of untrusted text, unprintables as '?' */
void
smtpc_sanitize(char *dst, size_t dstlen, const char *src, size_t srclen)
{
	size_t i, n;

	if (dstlen == 0)
		return;
	n = srclen < dstlen - 1 ? srclen : dstlen - 1;
	for (i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)src[i];
		dst[i] = (ch < 0x20 || ch >= 0x7f) ? '?' : (char)ch;
	}
	dst[n] = '\0';
}

/* smtpc_set_reply - fill a local reply */
static void PRINTFLIKE(4, 0)
smtpc_vset_reply(struct smtpc_reply *r, int code, const char *enh,
    const char *fmt, va_list ap)
{
	char buf[SMTPC_TEXT_MAX + 1];

	memset(r, 0, sizeof(*r));
	r->code = code;
	r->local = 1;
	util_strlcpy(r->enh, enh, sizeof(r->enh));
	vsnprintf(buf, sizeof(buf), fmt, ap);	/* truncation is fine */
	smtpc_sanitize(r->text, sizeof(r->text), buf, strlen(buf));
}

static void PRINTFLIKE(4, 5)
smtpc_set_reply(struct smtpc_reply *r, int code, const char *enh,
    const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	smtpc_vset_reply(r, code, enh, fmt, ap);
	va_end(ap);
}

/* smtpc_outcome_of - outcome of a final reply code */
static enum smtpc_outcome
smtpc_outcome_of(int code)
{
	if (code >= 200 && code < 300)
		return SMTPC_DELIVERED;
	if (code >= 500 && code < 600)
		return SMTPC_BOUNCED;
	return SMTPC_DEFERRED;
}

/* smtpc_addr_ok - an envelope address we can put between < > safely */
static int
smtpc_addr_ok(const char *a, int allow_empty)
{
	size_t len = strlen(a), i;
	int quoted = len > 0 && a[0] == '"';

	if (len == 0)
		return allow_empty;
	if (len > ADDRESS_MAX_LEN + 2)
		return 0;
	for (i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)a[i];
		if (ch < 0x20 || ch == 0x7f || ch == '<' || ch == '>')
			return 0;
		if (ch == ' ' && !quoted)
			return 0;
	}
	if (strchr(a, '@') == NULL && strcasecmp(a, "postmaster") != 0)
		return 0;
	return 1;
}

static int
smtpc_has_8bit(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s >= 0x80)
			return 1;
	return 0;
}

/* ------------------------------------------------------ message bytes */

void
smtpc_scan_message(struct smtpc_msg *m)
{
	size_t i, linelen = 0;
	int in_header = 1;

	m->needs_8bit = 0;
	m->needs_smtputf8 = 0;
	for (i = 0; i < m->len; i++) {
		unsigned char ch = m->data[i];
		if (ch == '\r' || ch == '\n') {
			if (ch == '\r' && i + 1 < m->len && m->data[i + 1] == '\n')
				i++;
			if (linelen == 0)
				in_header = 0;	/* the blank line */
			linelen = 0;
			continue;
		}
		linelen++;
		if (ch >= 0x80) {
			m->needs_8bit = 1;
			if (in_header)
				m->needs_smtputf8 = 1;
		}
	}
	if (m->mail_from && smtpc_has_8bit(m->mail_from))
		m->needs_smtputf8 = 1;
	for (i = 0; i < m->nrcpts; i++)
		if (smtpc_has_8bit(m->rcpts[i]))
			m->needs_smtputf8 = 1;
	if (m->needs_smtputf8)
		m->needs_8bit = 1;
}

uint64_t
smtpc_wire_size(const unsigned char *d, size_t len)
{
	uint64_t size = 0;
	size_t i;
	int bol = 1;

	for (i = 0; i < len; i++) {
		if (d[i] == '\r' || d[i] == '\n') {
			if (d[i] == '\r' && i + 1 < len && d[i + 1] == '\n')
				i++;
			size += 2;
			bol = 1;
		} else {
			size++;
			bol = 0;
		}
	}
	if (!bol)
		size += 2;
	return size;
}

void
smtpc_enc_init(struct smtpc_enc *e, const unsigned char *d, size_t len,
    int dot)
{
	memset(e, 0, sizeof(*e));
	e->data = d;
	e->len = len;
	e->dot = dot;
	e->bol = 1;
}

/* smtpc_enc_run - CRLF-normalise (and dot-stuff) the next block */
size_t
smtpc_enc_run(struct smtpc_enc *e, unsigned char *out, size_t cap)
{
	size_t n = 0;

	while (!e->done && cap - n >= 5) {
		if (e->pos < e->len) {
			unsigned char ch = e->data[e->pos];

			if (ch == '\r' || ch == '\n') {
				e->pos++;
				if (ch == '\r' && e->pos < e->len &&
				    e->data[e->pos] == '\n')
					e->pos++;
				out[n++] = '\r';
				out[n++] = '\n';
				e->bol = 1;
				continue;
			}
			if (e->bol && ch == '.' && e->dot)
				out[n++] = '.';
			e->bol = 0;
			/* a run of ordinary bytes */
			while (n < cap && e->pos < e->len &&
			    e->data[e->pos] != '\r' && e->data[e->pos] != '\n')
				out[n++] = e->data[e->pos++];
			continue;
		}
		if (!e->bol) {
			out[n++] = '\r';
			out[n++] = '\n';
			e->bol = 1;
			continue;
		}
		if (e->dot) {
			out[n++] = '.';
			out[n++] = '\r';
			out[n++] = '\n';
		}
		e->done = 1;
	}
	return n;
}

/* ------------------------------------------------------- reply parser */

void
smtpc_rparser_init(struct smtpc_rparser *p, unsigned lines_max)
{
	memset(p, 0, sizeof(*p));
	p->lines_max = lines_max;
}

/* smtpc_enh_len - length of an RFC 3463 code "c.ddd.ddd" at s, 0 if none */
static size_t
smtpc_enh_len(const char *s, size_t len, char cls)
{
	size_t i = 0, part, digits;

	if (len < 5 || s[0] != cls || s[1] != '.')
		return 0;
	i = 2;
	for (part = 0; part < 2; part++) {
		digits = 0;
		while (i < len && s[i] >= '0' && s[i] <= '9' && digits < 4) {
			i++;
			digits++;
		}
		if (digits == 0 || digits > 3)
			return 0;
		if (part == 0) {
			if (i >= len || s[i] != '.')
				return 0;
			i++;
		}
	}
	if (i < len && s[i] != ' ')
		return 0;
	return i;
}

/* smtpc_rparser_line - one line of a reply, without CRLF */
int
smtpc_rparser_line(struct smtpc_rparser *p, const char *line, size_t len,
    const char **err_r)
{
	struct smtpc_reply *r = &p->reply;
	const char *text;
	size_t i, tlen, elen;
	int code, last;

	if (len < 3) {
		*err_r = "reply line shorter than 4 bytes";
		return -1;
	}
	if (line[0] < '2' || line[0] > '5' || line[1] < '0' || line[1] > '5' ||
	    line[2] < '0' || line[2] > '9') {
		*err_r = "malformed reply code";
		return -1;
	}
	code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
	if (len == 3)
		last = 1;
	else if (line[3] == ' ')
		last = 1;
	else if (line[3] == '-')
		last = 0;
	else {
		*err_r = "malformed reply line (no SP or '-' after the code)";
		return -1;
	}
	if (p->nlines > 0 && code != r->code) {
		*err_r = "mixed reply codes in one reply";
		return -1;
	}
	if (++p->nlines > p->lines_max) {
		*err_r = "too many reply lines";
		return -1;
	}
	for (i = 3; i < len; i++) {
		unsigned char ch = (unsigned char)line[i];
		if ((ch < 0x20 && ch != '\t') || ch == 0x7f) {
			*err_r = "control byte or bare CR/LF in reply text";
			return -1;
		}
	}
	r->code = code;
	text = len > 4 ? line + 4 : line + len;
	tlen = len > 4 ? len - 4 : 0;
	elen = smtpc_enh_len(text, tlen, line[0]);
	if (elen > 0) {
		if (p->nlines == 1)
			smtpc_sanitize(r->enh, sizeof(r->enh), text, elen);
		text += elen;
		tlen -= elen;
		while (tlen > 0 && *text == ' ') {
			text++;
			tlen--;
		}
	}
	if (tlen > 0 && p->textlen < SMTPC_TEXT_MAX) {
		if (p->textlen > 0)
			r->text[p->textlen++] = ' ';
		if (tlen > SMTPC_TEXT_MAX - p->textlen)
			tlen = SMTPC_TEXT_MAX - p->textlen;
		smtpc_sanitize(r->text + p->textlen, tlen + 1, text, tlen);
		p->textlen += tlen;
		r->text[p->textlen] = '\0';
	}
	return last;
}

/* smtpc_ehlo_line - note one extension keyword of an EHLO reply */
static void
smtpc_ehlo_line(struct smtpc_conn *c, const char *s, size_t len)
{
	static const struct { const char *kw; unsigned bit; } kws[] = {
		{ "PIPELINING", SMTPC_EXT_PIPELINING },
		{ "SIZE", SMTPC_EXT_SIZE },
		{ "8BITMIME", SMTPC_EXT_8BITMIME },
		{ "SMTPUTF8", SMTPC_EXT_SMTPUTF8 },
		{ "CHUNKING", SMTPC_EXT_CHUNKING },
		{ "STARTTLS", SMTPC_EXT_STARTTLS },
		{ "ENHANCEDSTATUSCODES", SMTPC_EXT_ENHANCED },
	};
	size_t i, kwlen = 0;

	while (kwlen < len && s[kwlen] != ' ')
		kwlen++;
	for (i = 0; i < nitems(kws); i++) {
		if (strlen(kws[i].kw) != kwlen ||
		    strncasecmp(s, kws[i].kw, kwlen) != 0)
			continue;
		c->ext_new |= kws[i].bit;
		if (kws[i].bit == SMTPC_EXT_SIZE) {
			uint64_t v = 0;
			size_t j = kwlen, digits = 0;

			while (j < len && s[j] == ' ')
				j++;
			while (j < len && s[j] >= '0' && s[j] <= '9' &&
			    digits < 19) {
				v = v * 10 + (uint64_t)(s[j] - '0');
				j++;
				digits++;
			}
			c->size_new = (j == len) ? v : 0;
		}
	}
}

/* -------------------------------------------------------- the machine */

/* smtpc_timeout_of - the timer of a state (RFC 5321 4.5.3.2) */
static long
smtpc_timeout_of(const struct smtpc_conn *c, enum smtpc_state st)
{
	switch (st) {
	case SMTPC_S_CONNECTING: return c->lim.connect_ms;
	case SMTPC_S_GREETING:	return c->lim.greeting_ms;
	case SMTPC_S_EHLO:
	case SMTPC_S_HELO:	return c->lim.helo_ms;
	case SMTPC_S_STARTTLS:
	case SMTPC_S_TLS:	return c->lim.tls_ms;
	case SMTPC_S_MAIL:	return c->lim.mail_ms;
	case SMTPC_S_RCPT:	return c->lim.rcpt_ms;
	case SMTPC_S_DATA:	return c->lim.data_init_ms;
	case SMTPC_S_BODY:	return c->lim.data_block_ms;
	case SMTPC_S_RSET:	return c->lim.rset_ms;
	case SMTPC_S_QUIT:	return c->lim.quit_ms;
	default:		return 0;
	}
}

static void
smtpc_arm(struct smtpc_conn *c, long ms)
{
	struct timeval tv;

	if (ms <= 0) {
		evtimer_del(c->ev_timer);
		return;
	}
	tv.tv_sec = ms / 1000;
	tv.tv_usec = (ms % 1000) * 1000;
	evtimer_add(c->ev_timer, &tv);
}

/* smtpc_enter - the only writer of c->state; arms the state's timer */
static void
smtpc_enter(struct smtpc_conn *c, enum smtpc_state st)
{
	if (c->state != st)
		log_debug("smtpc id=%s peer=%s state=%s->%s", c->id, c->peer,
		    smtpc_state_names[c->state], smtpc_state_names[st]);
	c->state = st;
	smtpc_arm(c, smtpc_timeout_of(c, st));
}

/* smtpc_cmd - queue one command line */
static void PRINTFLIKE(2, 3)
smtpc_cmd(struct smtpc_conn *c, const char *fmt, ...)
{
	char buf[SMTP_LINE_MAX + 64];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n + 2 > SMTP_LINE_MAX || strpbrk(buf, "\r\n"))
		fatalx("smtpc_cmd: bad command line");
	log_debug("smtpc id=%s >>> %s", c->id, buf);
	memcpy(buf + n, "\r\n", 2);
	evbuffer_add(bufferevent_get_output(c->bev), buf, (size_t)n + 2);
	c->expect++;
}

/* smtpc_io_close - drop the socket (no QUIT) */
static void
smtpc_io_close(struct smtpc_conn *c)
{
	if (c->bev != NULL) {
		bufferevent_disable(c->bev, EV_READ | EV_WRITE);
		bufferevent_free(c->bev);
		c->bev = NULL;
	}
	if (c->fd >= 0 && !c->bev_owns_fd)
		close(c->fd);
	c->fd = -1;
	c->expect = 0;
	evtimer_del(c->ev_timer);
}

/* smtpc_fire_ready - call the ready callback (never from inside the API) */
static int
smtpc_fire_ready(struct smtpc_conn *c)
{
	smtpc_ready_cb cb = c->ready_cb;

	if (c->in_api) {
		c->pending = PEND_READY;
		event_active(c->ev_defer, EV_TIMEOUT, 1);
		return -1;
	}
	c->ready_cb = NULL;
	if (cb != NULL && !c->closing) {
		c->in_cb++;
		cb(c, &c->ready, c->ready_arg);
		c->in_cb--;
	}
	if (c->free_pending && c->in_cb == 0)
		smtpc_destroy(c);
	return -1;
}

/* smtpc_notify_ready - end of the connection phase: ready or failed */
static int
smtpc_notify_ready(struct smtpc_conn *c, enum smtpc_status status)
{
	c->ready.status = status;
	c->ready.tls = c->tls;
	c->ready.tls_failed = c->tls_failed;
	c->ready.ext = c->ext;
	c->ready.size_max = c->size_max;
	if (status == SMTPC_OK) {
		smtpc_enter(c, SMTPC_S_READY);
	} else {
		c->broken = 1;
		smtpc_io_close(c);
		smtpc_enter(c, SMTPC_S_DEAD);
	}
	log_info("smtpc id=%s peer=%s event=%s status=%s tls=%d ext=0x%x "
	    "code=%d enh=%s text=\"%s\"", c->id, c->peer,
	    status == SMTPC_OK ? "ready" : "connect-failed",
	    smtpc_status_str(status), c->tls, c->ext,
	    c->ready.reply.code, c->ready.reply.enh, c->ready.reply.text);
	return smtpc_fire_ready(c);
}

/* smtpc_rcpt_final - decide a recipient's outcome from a reply */
static void
smtpc_rcpt_final(struct smtpc_conn *c, size_t i, const struct smtpc_reply *r,
    enum smtpc_outcome o)
{
	c->res[i].reply = *r;
	c->res[i].outcome = o;
	c->rc[i] = RC_FINAL;
}

/* smtpc_fail - the one exit for I/O, protocol and TLS failures */
static int
smtpc_fail(struct smtpc_conn *c, enum smtpc_status status, int code,
    const char *enh, const char *fmt, ...)
{
	struct smtpc_reply r;
	va_list ap;
	size_t i;

	va_start(ap, fmt);
	smtpc_vset_reply(&r, code, enh, fmt, ap);
	va_end(ap);
	c->broken = 1;
	switch (c->state) {
	case SMTPC_S_CONNECTING:
	case SMTPC_S_GREETING:
	case SMTPC_S_EHLO:
	case SMTPC_S_HELO:
	case SMTPC_S_STARTTLS:
	case SMTPC_S_TLS:
		c->ready.reply = r;
		return smtpc_notify_ready(c, status);
	case SMTPC_S_QUIT:
		smtpc_destroy(c);
		return -1;
	default:
		break;
	}
	log_info("smtpc id=%s peer=%s event=error state=%s code=%d enh=%s "
	    "text=\"%s\"", c->id, c->peer, smtpc_state_names[c->state],
	    r.code, r.enh, r.text);
	smtpc_io_close(c);
	if (!c->txn) {
		smtpc_enter(c, SMTPC_S_DEAD);
		return -1;
	}
	for (i = 0; i < c->msg.nrcpts; i++)
		if (c->rc[i] == RC_SEND || c->rc[i] == RC_ACCEPTED)
			smtpc_rcpt_final(c, i, &r, SMTPC_DEFERRED);
	return smtpc_txn_end(c);
}

/* smtpc_proto_error - a malformed reply: 4.4.2 with a sanitised excerpt */
static int
smtpc_proto_error(struct smtpc_conn *c, const char *why, const char *line,
    size_t len)
{
	char ex[81];

	smtpc_sanitize(ex, sizeof(ex), line, len);
	return smtpc_fail(c, SMTPC_ERR_PROTOCOL, 451, "4.4.2",
	    "protocol error: %s: \"%s%s\"", why, ex, len > 80 ? "..." : "");
}

/* smtpc_destroy - free everything now */
static void
smtpc_destroy(struct smtpc_conn *c)
{
	smtpc_io_close(c);
	event_free(c->ev_timer);
	event_free(c->ev_defer);
	free(c->helo);
	free(c->servername);
	free(c->res);
	free(c->rc);
	free(c);
}

/* ------------------------------------------------------------- set-up */

SSL_CTX *
smtpc_tls_ctx_new(const char *cafile, const char **err_r)
{
	SSL_CTX *ctx;

	if ((ctx = SSL_CTX_new(TLS_client_method())) == NULL) {
		*err_r = "SSL_CTX_new failed";
		return NULL;
	}
	if (!SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION)) {
		*err_r = "cannot set TLS 1.2 minimum";
		SSL_CTX_free(ctx);
		return NULL;
	}
	if (cafile != NULL) {
		if (SSL_CTX_load_verify_locations(ctx, cafile, NULL) != 1) {
			*err_r = "cannot load the CA file";
			SSL_CTX_free(ctx);
			return NULL;
		}
	} else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
		*err_r = "cannot load the default CA paths";
		SSL_CTX_free(ctx);
		return NULL;
	}
	SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	return ctx;
}

/* smtpc_defer_cb - deliver a callback decided inside the API */
static void
smtpc_defer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct smtpc_conn *c = arg;
	enum smtpc_pending p = c->pending;

	c->pending = PEND_NONE;
	if (p == PEND_READY)
		smtpc_fire_ready(c);
	else if (p == PEND_DONE)
		smtpc_fire_done(c);
}

/* smtpc_timeout_cb - the state's timer ran out */
static void
smtpc_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct smtpc_conn *c = arg;
	const char *st = smtpc_state_names[c->state];

	switch (c->state) {
	case SMTPC_S_CONNECTING:
		smtpc_fail(c, SMTPC_ERR_CONNECT, 451, "4.4.1",
		    "connection to %s timed out", c->peer);
		break;
	case SMTPC_S_TLS:
		c->tls_failed = 1;
		log_warn("smtpc id=%s peer=%s event=tls-failed reason=timeout "
		    "(no plaintext fallback in this session)", c->id, c->peer);
		smtpc_fail(c, SMTPC_ERR_TLS, 451, "4.7.5",
		    "TLS handshake timed out");
		break;
	case SMTPC_S_QUIT:
		smtpc_destroy(c);
		break;
	case SMTPC_S_BODY:
		smtpc_fail(c, SMTPC_ERR_PROTOCOL, 451, "4.4.2", "%s",
		    c->body_queued ? "timeout waiting for the reply to end of data"
		    : "timeout sending message data");
		break;
	default:
		smtpc_fail(c, SMTPC_ERR_PROTOCOL, 451, "4.4.2",
		    "timeout waiting for the %s reply", st);
		break;
	}
}

struct smtpc_conn *
smtpc_connect(struct event_base *base, SSL_CTX *ssl_ctx,
    const struct sockaddr *dst, socklen_t dstlen,
    const struct sockaddr *src, socklen_t srclen,
    const char *helo_name, const char *tls_servername, enum smtpc_tls policy,
    const struct smtpc_limits *lim, smtpc_ready_cb cb, void *arg)
{
	struct smtpc_conn *c = xcalloc(1, sizeof(*c));
	char a[INET6_ADDRSTRLEN];
	int port = 0;

	util_random_id(c->id, 8);
	c->base = base;
	c->ssl_ctx = ssl_ctx;
	c->tls_policy = policy;
	c->helo = xstrdup(helo_name ? helo_name : "localhost");
	c->servername = tls_servername ? xstrdup(tls_servername) : NULL;
	if (lim != NULL)
		c->lim = *lim;
	else
		smtpc_limits_default(&c->lim);
	if (c->lim.reply_line_max == 0)
		c->lim.reply_line_max = SMTPC_REPLY_LINE_MAX;
	if (c->lim.reply_lines_max == 0)
		c->lim.reply_lines_max = SMTPC_REPLY_LINES_MAX;
	if (c->lim.rcpts_max == 0)
		c->lim.rcpts_max = SMTPC_RCPTS_MAX;
	c->ready_cb = cb;
	c->ready_arg = arg;
	c->fd = -1;
	c->state = SMTPC_S_CONNECTING;
	smtpc_rparser_init(&c->rp, c->lim.reply_lines_max);
	c->ev_timer = evtimer_new(base, smtpc_timeout_cb, c);
	c->ev_defer = event_new(base, -1, 0, smtpc_defer_cb, c);
	if (c->ev_timer == NULL || c->ev_defer == NULL)
		fatalx("smtpc_connect: event_new failed");
	netaddr_str(dst, a, sizeof(a));
	port = netaddr_port(dst);
	snprintf(c->peer, sizeof(c->peer), "%s%s%s:%d",
	    dst->sa_family == AF_INET6 ? "[" : "", a,
	    dst->sa_family == AF_INET6 ? "]" : "", port);

	c->in_api = 1;
	smtpc_enter(c, SMTPC_S_CONNECTING);
	c->fd = socket(dst->sa_family, SOCK_STREAM | SOCK_NONBLOCK |
	    SOCK_CLOEXEC, 0);
	if (c->fd < 0) {
		smtpc_fail(c, SMTPC_ERR_CONNECT, 451, "4.4.1",
		    "socket: %s", strerror(errno));
		goto out;
	}
	if (src != NULL && bind(c->fd, src, srclen) == -1) {
		smtpc_fail(c, SMTPC_ERR_CONNECT, 451, "4.4.1",
		    "bind to the source address: %s", strerror(errno));
		goto out;
	}
	c->bev = bufferevent_socket_new(base, c->fd, 0);
	if (c->bev == NULL)
		fatalx("smtpc_connect: bufferevent_socket_new failed");
	bufferevent_setcb(c->bev, smtpc_readcb, smtpc_writecb, smtpc_eventcb,
	    c);
	bufferevent_setwatermark(c->bev, EV_READ, 0,
	    c->lim.reply_line_max + 4096);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	if (bufferevent_socket_connect(c->bev, dst, (int)dstlen) == -1) {
		smtpc_fail(c, SMTPC_ERR_CONNECT, 451, "4.4.1",
		    "connect to %s: %s", c->peer, strerror(errno));
		goto out;
	}
	log_debug("smtpc id=%s peer=%s event=connecting", c->id, c->peer);
out:
	c->in_api = 0;
	return c;
}

/* smtpc_send_ehlo - EHLO (discarding what the last one said) */
static void
smtpc_send_ehlo(struct smtpc_conn *c)
{
	c->ext_new = 0;
	c->size_new = 0;
	smtpc_cmd(c, "EHLO %s", c->helo);
	smtpc_enter(c, SMTPC_S_EHLO);
}

/* smtpc_starttls - after STARTTLS's 220: drop buffered plaintext, wrap
 * the socket in TLS */
static int
smtpc_starttls(struct smtpc_conn *c)
{
	struct evbuffer *in = bufferevent_get_input(c->bev);
	size_t junk = evbuffer_get_length(in);
	struct in6_addr a6;
	struct in_addr a4;
	int verify = c->tls_policy == SMTPC_TLS_VERIFY, is_ip = 0;
	SSL *ssl;

	if (junk > 0) {
		log_warn("smtpc id=%s peer=%s event=starttls-injection "
		    "discarded=%zu bytes received after the 220", c->id, c->peer,
		    junk);
		evbuffer_drain(in, junk);
	}
	if ((ssl = SSL_new(c->ssl_ctx)) == NULL)
		return smtpc_fail(c, SMTPC_ERR_TLS, 451, "4.7.5", "SSL_new failed");
	if (c->servername != NULL) {
		is_ip = inet_pton(AF_INET, c->servername, &a4) == 1 ||
		    inet_pton(AF_INET6, c->servername, &a6) == 1;
		if (!is_ip)
			SSL_set_tlsext_host_name(ssl, c->servername);
	}
	if (verify) {
		if (c->servername == NULL) {
			SSL_free(ssl);
			return smtpc_fail(c, SMTPC_ERR_TLS, 451, "4.7.5",
			    "TLS verification needs a server name");
		}
		if (is_ip)
			X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl),
			    c->servername);
		else
			SSL_set1_host(ssl, c->servername);
		SSL_set_verify(ssl, SSL_VERIFY_PEER, NULL);
	} else
		SSL_set_verify(ssl, SSL_VERIFY_NONE, NULL);

	bufferevent_disable(c->bev, EV_READ | EV_WRITE);
	bufferevent_free(c->bev);
	c->bev = bufferevent_openssl_socket_new(c->base, c->fd, ssl,
	    BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE);
	if (c->bev == NULL) {
		SSL_free(ssl);
		return smtpc_fail(c, SMTPC_ERR_TLS, 451, "4.7.5",
		    "cannot start TLS");
	}
	c->bev_owns_fd = 1;
	bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1);
	bufferevent_setcb(c->bev, smtpc_readcb, smtpc_writecb, smtpc_eventcb,
	    c);
	bufferevent_setwatermark(c->bev, EV_READ, 0,
	    c->lim.reply_line_max + 4096);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	smtpc_enter(c, SMTPC_S_TLS);
	return -1;	/* the old input buffer is gone: stop reading it */
}

/* smtpc_tls_error - why the handshake failed, for the log and the reply */
static void
smtpc_tls_error(struct smtpc_conn *c, char *buf, size_t len)
{
	unsigned long e;
	SSL *ssl;
	long vr;

	buf[0] = '\0';
	if (c->bev != NULL && (ssl = bufferevent_openssl_get_ssl(c->bev)) &&
	    (vr = SSL_get_verify_result(ssl)) != X509_V_OK &&
	    c->tls_policy == SMTPC_TLS_VERIFY) {
		snprintf(buf, len, "certificate verification failed: %s",
		    X509_verify_cert_error_string(vr));
		return;
	}
	if (c->bev != NULL &&
	    (e = bufferevent_get_openssl_error(c->bev)) != 0) {
		ERR_error_string_n(e, buf, len);
		return;
	}
	snprintf(buf, len, "connection closed during the handshake");
}

/* smtpc_eventcb - connect done, TLS ready, EOF, errors */
static void
smtpc_eventcb(struct bufferevent *bev, short what, void *arg)
{
	struct smtpc_conn *c = arg;
	char why[256];
	SSL *ssl;

	if (what & BEV_EVENT_CONNECTED) {
		if (c->state == SMTPC_S_CONNECTING) {
			log_debug("smtpc id=%s peer=%s event=connected", c->id,
			    c->peer);
			c->expect = 1;	/* the greeting */
			smtpc_enter(c, SMTPC_S_GREETING);
		} else if (c->state == SMTPC_S_TLS) {
			c->tls = 1;
			ssl = bufferevent_openssl_get_ssl(bev);
			log_info("smtpc id=%s peer=%s event=tls version=%s "
			    "cipher=%s verified=%d", c->id, c->peer,
			    SSL_get_version(ssl), SSL_get_cipher_name(ssl),
			    c->tls_policy == SMTPC_TLS_VERIFY);
			smtpc_send_ehlo(c);
		}
		return;
	}
	if (!(what & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT)))
		return;
	switch (c->state) {
	case SMTPC_S_CONNECTING:
		smtpc_fail(c, SMTPC_ERR_CONNECT, 451, "4.4.1",
		    "connection to %s failed: %s", c->peer,
		    evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
		return;
	case SMTPC_S_TLS:
		c->tls_failed = 1;
		smtpc_tls_error(c, why, sizeof(why));
		log_warn("smtpc id=%s peer=%s event=tls-failed reason=\"%s\" "
		    "(no plaintext fallback in this session)", c->id, c->peer,
		    why);
		smtpc_fail(c, SMTPC_ERR_TLS, 451, "4.7.5",
		    "TLS handshake failed: %s", why);
		return;
	case SMTPC_S_QUIT:
		smtpc_destroy(c);
		return;
	case SMTPC_S_BODY:
		smtpc_fail(c, SMTPC_ERR_PROTOCOL, 451, "4.4.2",
		    "connection lost during message data%s",
		    (what & BEV_EVENT_EOF) ? " (closed by the server)" : "");
		return;
	default:
		smtpc_fail(c, SMTPC_ERR_PROTOCOL, 451, "4.4.2",
		    "connection %s in state %s",
		    (what & BEV_EVENT_EOF) ? "closed by the server" : "error",
		    smtpc_state_names[c->state]);
		return;
	}
}

/* ----------------------------------------------------- the connection */

/* smtpc_conn_reply - replies before a transaction can start */
static int
smtpc_conn_reply(struct smtpc_conn *c, const struct smtpc_reply *r)
{
	int cls = r->code / 100;

	c->ready.reply = *r;
	switch (c->state) {
	case SMTPC_S_GREETING:
		if (cls != 2)
			return smtpc_notify_ready(c, SMTPC_ERR_REFUSED);
		smtpc_send_ehlo(c);
		return 0;
	case SMTPC_S_EHLO:
		if (cls == 5 && !c->tls) {
			smtpc_cmd(c, "HELO %s", c->helo);
			smtpc_enter(c, SMTPC_S_HELO);
			return 0;
		}
		if (cls != 2)
			return smtpc_notify_ready(c, SMTPC_ERR_REFUSED);
		c->ext = c->ext_new;
		c->size_max = (c->ext & SMTPC_EXT_SIZE) ? c->size_new : 0;
		if (!c->tls && (c->ext & SMTPC_EXT_STARTTLS) &&
		    c->ssl_ctx != NULL && c->tls_policy != SMTPC_TLS_NONE) {
			smtpc_cmd(c, "STARTTLS");
			smtpc_enter(c, SMTPC_S_STARTTLS);
			return 0;
		}
		if (!c->tls && c->tls_policy == SMTPC_TLS_VERIFY) {
			smtpc_set_reply(&c->ready.reply, 451, "4.7.10",
			    "TLS required but %s", c->ssl_ctx == NULL ?
			    "no TLS context" : "STARTTLS not offered");
			return smtpc_notify_ready(c, SMTPC_ERR_TLS);
		}
		return smtpc_notify_ready(c, SMTPC_OK);
	case SMTPC_S_HELO:
		if (cls != 2)
			return smtpc_notify_ready(c, SMTPC_ERR_REFUSED);
		c->ext = 0;
		c->size_max = 0;
		if (c->tls_policy == SMTPC_TLS_VERIFY) {
			smtpc_set_reply(&c->ready.reply, 451, "4.7.10",
			    "TLS required but the server refused EHLO");
			return smtpc_notify_ready(c, SMTPC_ERR_TLS);
		}
		return smtpc_notify_ready(c, SMTPC_OK);
	case SMTPC_S_STARTTLS:
		if (r->code == 220)
			return smtpc_starttls(c);
		if (c->tls_policy == SMTPC_TLS_VERIFY || r->code == 421)
			return smtpc_notify_ready(c, c->tls_policy ==
			    SMTPC_TLS_VERIFY ? SMTPC_ERR_TLS : SMTPC_ERR_REFUSED);
		log_info("smtpc id=%s peer=%s event=starttls-refused code=%d "
		    "text=\"%s\" continuing in plaintext", c->id, c->peer,
		    r->code, r->text);
		c->ext &= ~SMTPC_EXT_STARTTLS;
		return smtpc_notify_ready(c, SMTPC_OK);
	default:
		fatalx("smtpc_conn_reply: state %d", c->state);
	}
}

/* ---------------------------------------------------- the transaction */

/* smtpc_next_sent - next recipient after i that was sent */
static size_t
smtpc_next_sent(const struct smtpc_conn *c, size_t i)
{
	while (i < c->msg.nrcpts && c->rc[i] == RC_SKIP)
		i++;
	return i;
}

/* smtpc_start_body - DATA got 354 or BDAT was sent: stream the message */
static void smtpc_pump(struct smtpc_conn *);

static void
smtpc_start_body(struct smtpc_conn *c, int dot)
{
	smtpc_enc_init(&c->enc, c->msg.data, c->msg.len, dot);
	c->body_queued = 0;
	c->expect++;			/* the final reply */
	bufferevent_setwatermark(c->bev, EV_WRITE, SMTPC_OUT_LOWAT, 0);
	smtpc_enter(c, SMTPC_S_BODY);
	smtpc_pump(c);
}

/* smtpc_pump - queue message data while the output is short */
static void
smtpc_pump(struct smtpc_conn *c)
{
	struct evbuffer *out = bufferevent_get_output(c->bev);
	unsigned char buf[SMTPC_ENC_BLOCK];
	size_t n;

	while (!c->enc.done && evbuffer_get_length(out) < SMTPC_OUT_HIWAT) {
		n = smtpc_enc_run(&c->enc, buf, sizeof(buf));
		if (n > 0)
			evbuffer_add(out, buf, n);
	}
	if (c->enc.done) {
		c->body_queued = 1;
		smtpc_arm(c, c->lim.data_end_ms);
	} else
		smtpc_arm(c, c->lim.data_block_ms);
}

/* smtpc_writecb - output drained: more message data */
static void
smtpc_writecb(struct bufferevent *bev, void *arg)
{
	struct smtpc_conn *c = arg;

	if (c->state == SMTPC_S_BODY && !c->body_queued && !c->body_dummy)
		smtpc_pump(c);
}

/* smtpc_txn_next - after a MAIL or RCPT reply: what comes next */
static int
smtpc_txn_next(struct smtpc_conn *c)
{
	if (c->reply_cur < c->msg.nrcpts) {
		if (!c->pipelining)
			smtpc_cmd(c, "RCPT TO:<%s>", c->msg.rcpts[c->reply_cur]);
		smtpc_enter(c, SMTPC_S_RCPT);
		return 0;
	}
	if (c->data_sent) {
		smtpc_enter(c, SMTPC_S_DATA);
		return 0;
	}
	if (c->mail_ok && c->naccepted > 0) {
		if (c->use_bdat) {
			smtpc_cmd(c, "BDAT %llu LAST", (unsigned long long)
			    smtpc_wire_size(c->msg.data, c->msg.len));
			c->expect--;	/* counted by smtpc_start_body */
			smtpc_start_body(c, 0);
		} else {
			smtpc_cmd(c, "DATA");
			c->data_sent = 1;
			smtpc_enter(c, SMTPC_S_DATA);
		}
		return 0;
	}
	if (c->mail_ok) {
		smtpc_cmd(c, "RSET");
		smtpc_enter(c, SMTPC_S_RSET);
		return 0;
	}
	return smtpc_txn_end(c);
}

/* smtpc_txn_abort - 421 or similar: defer everything open, stop */
static int
smtpc_txn_abort(struct smtpc_conn *c, const struct smtpc_reply *r)
{
	size_t i;

	c->broken = 1;
	for (i = 0; i < c->msg.nrcpts; i++)
		if (c->rc[i] == RC_SEND || c->rc[i] == RC_ACCEPTED)
			smtpc_rcpt_final(c, i, r, SMTPC_DEFERRED);
	return smtpc_txn_end(c);
}

/* smtpc_txn_reply - replies inside a transaction */
static int
smtpc_txn_reply(struct smtpc_conn *c, const struct smtpc_reply *r)
{
	int cls = r->code / 100;
	size_t i;

	if (r->code == 421 && !c->body_dummy)
		return smtpc_txn_abort(c, r);
	switch (c->state) {
	case SMTPC_S_MAIL:
		if (cls == 3)
			return smtpc_proto_error(c, "unexpected 3xx to MAIL",
			    r->text, strlen(r->text));
		c->mail_ok = cls == 2;
		if (!c->mail_ok) {
			for (i = 0; i < c->msg.nrcpts; i++)
				if (c->rc[i] == RC_SEND)
					smtpc_rcpt_final(c, i, r,
					    smtpc_outcome_of(r->code));
			if (!c->pipelining)
				return smtpc_txn_end(c);
		}
		return smtpc_txn_next(c);
	case SMTPC_S_RCPT:
		i = c->reply_cur;
		c->reply_cur = smtpc_next_sent(c, i + 1);
		if (cls == 3)
			return smtpc_proto_error(c, "unexpected 3xx to RCPT",
			    r->text, strlen(r->text));
		if (c->mail_ok && cls == 2) {
			c->res[i].reply = *r;
			c->rc[i] = RC_ACCEPTED;
			c->naccepted++;
		} else if (c->mail_ok)
			smtpc_rcpt_final(c, i, r, smtpc_outcome_of(r->code));
		if (c->mail_ok && r->code == 452 && !c->pipelining) {
			/* too many recipients: the rest wait (RFC 5321 4.5.3.1.10) */
			for (i = c->reply_cur; i < c->msg.nrcpts; i++)
				if (c->rc[i] == RC_SEND)
					smtpc_rcpt_final(c, i, r,
					    SMTPC_DEFERRED);
			c->reply_cur = c->msg.nrcpts;
		}
		return smtpc_txn_next(c);
	case SMTPC_S_DATA:
		c->data_sent = 0;
		if (r->code == 354) {
			if (c->mail_ok && c->naccepted > 0) {
				smtpc_start_body(c, 1);
				return 0;
			}
			/* RFC 2920 3.1: nobody accepted, end the data at once */
			c->body_dummy = 1;
			evbuffer_add(bufferevent_get_output(c->bev), ".\r\n", 3);
			c->expect++;
			smtpc_enter(c, SMTPC_S_BODY);
			smtpc_arm(c, c->lim.data_end_ms);
			return 0;
		}
		if (cls == 2 || cls == 3)
			return smtpc_proto_error(c, "unexpected reply to DATA",
			    r->text, strlen(r->text));
		for (i = 0; i < c->msg.nrcpts; i++)
			if (c->rc[i] == RC_ACCEPTED)
				smtpc_rcpt_final(c, i, r,
				    smtpc_outcome_of(r->code));
		if (c->mail_ok) {
			smtpc_cmd(c, "RSET");
			smtpc_enter(c, SMTPC_S_RSET);
			return 0;
		}
		return smtpc_txn_end(c);
	case SMTPC_S_BODY:
		if (c->body_dummy)
			return smtpc_txn_end(c);
		if (!c->body_queued) {
			if (cls == 2)
				return smtpc_proto_error(c,
				    "2xx before the end of data", r->text,
				    strlen(r->text));
			c->broken = 1;	/* the data stream is cut short */
		}
		if (cls == 3)
			return smtpc_proto_error(c, "3xx to end of data",
			    r->text, strlen(r->text));
		for (i = 0; i < c->msg.nrcpts; i++)
			if (c->rc[i] == RC_ACCEPTED)
				smtpc_rcpt_final(c, i, r,
				    smtpc_outcome_of(r->code));
		return smtpc_txn_end(c);
	case SMTPC_S_RSET:
		if (cls != 2)
			c->broken = 1;
		return smtpc_txn_end(c);
	default:
		fatalx("smtpc_txn_reply: state %d", c->state);
	}
}

/* smtpc_txn_end - report the transaction; the connection idles or dies */
static int
smtpc_txn_end(struct smtpc_conn *c)
{
	struct smtpc_reply lost;
	unsigned nd = 0, nb = 0, nf = 0;
	size_t i;

	smtpc_set_reply(&lost, 451, "4.4.2", "no final reply from the server");
	for (i = 0; i < c->msg.nrcpts; i++) {
		if (c->rc[i] != RC_FINAL && c->rc[i] != RC_SKIP)
			smtpc_rcpt_final(c, i, &lost, SMTPC_DEFERRED);
		switch (c->res[i].outcome) {
		case SMTPC_DELIVERED:	nd++; break;
		case SMTPC_BOUNCED:	nb++; break;
		case SMTPC_DEFERRED:	nf++; break;
		}
	}
	if (c->bev != NULL && !c->broken &&
	    evbuffer_get_length(bufferevent_get_input(c->bev)) > 0) {
		log_info("smtpc id=%s peer=%s event=error text=\"unexpected "
		    "data after the last reply\"", c->id, c->peer);
		c->broken = 1;
	}
	if (c->broken || c->bev == NULL) {
		smtpc_io_close(c);
		smtpc_enter(c, SMTPC_S_DEAD);
	} else
		smtpc_enter(c, SMTPC_S_READY);
	log_info("smtpc id=%s peer=%s event=txn rcpts=%zu delivered=%u "
	    "bounced=%u deferred=%u reusable=%d", c->id, c->peer,
	    c->msg.nrcpts, nd, nb, nf, c->state == SMTPC_S_READY);

	return smtpc_fire_done(c);
}

/* smtpc_fire_done - call the done callback (never from inside the API) */
static int
smtpc_fire_done(struct smtpc_conn *c)
{
	struct smtpc_result res;
	struct smtpc_rcpt_result *rr;
	smtpc_done_cb cb = c->done_cb;

	if (c->in_api) {
		c->pending = PEND_DONE;
		event_active(c->ev_defer, EV_TIMEOUT, 1);
		return -1;
	}
	memset(&res, 0, sizeof(res));
	res.nrcpts = c->msg.nrcpts;
	res.rcpts = rr = c->res;
	res.reusable = c->state == SMTPC_S_READY;
	res.tls = c->tls;
	/* the user may start the next transaction from the callback */
	c->res = NULL;
	free(c->rc);
	c->rc = NULL;
	c->txn = 0;
	c->done_cb = NULL;
	if (cb != NULL && !c->closing) {
		c->in_cb++;
		cb(c, &res, c->done_arg);
		c->in_cb--;
	}
	free(rr);
	if (c->free_pending && c->in_cb == 0)
		smtpc_destroy(c);
	return -1;
}

int
smtpc_send(struct smtpc_conn *c, const struct smtpc_msg *m, smtpc_done_cb cb,
    void *arg)
{
	struct smtpc_reply r;
	char params[128];
	size_t i, nsend = 0;
	int utf8, body8, cls;
	uint64_t size;

	if (!smtpc_usable(c) || m->nrcpts == 0)
		return -1;
	c->in_api = 1;
	c->txn = 1;
	c->msg = *m;
	c->done_cb = cb;
	c->done_arg = arg;
	c->res = xcalloc(m->nrcpts, sizeof(*c->res));
	c->rc = xcalloc(m->nrcpts, 1);
	c->mail_ok = c->data_sent = c->body_queued = c->body_dummy = 0;
	c->naccepted = 0;
	c->pipelining = c->lim.use_pipelining &&
	    (c->ext & SMTPC_EXT_PIPELINING);
	c->use_bdat = c->lim.use_chunking && (c->ext & SMTPC_EXT_CHUNKING);
	utf8 = m->needs_smtputf8 || smtpc_has_8bit(m->mail_from);
	for (i = 0; i < m->nrcpts; i++) {
		c->rc[i] = RC_SEND;
		utf8 |= smtpc_has_8bit(m->rcpts[i]);
	}
	body8 = m->needs_8bit || utf8;
	size = smtpc_wire_size(m->data, m->len);

	/* what can be decided without asking the server */
	memset(&r, 0, sizeof(r));
	if (!smtpc_addr_ok(m->mail_from, 1))
		smtpc_set_reply(&r, 553, "5.1.7", "invalid sender address");
	else if (utf8 && !(c->ext & SMTPC_EXT_SMTPUTF8))
		smtpc_set_reply(&r, 550, "5.6.7",
		    "remote server does not support SMTPUTF8");
	else if (c->size_max > 0 && size > c->size_max)
		smtpc_set_reply(&r, 552, "5.3.4", "message size %llu exceeds "
		    "the remote server's limit %llu",
		    (unsigned long long)size, (unsigned long long)c->size_max);
	else if (body8 && !(c->ext & SMTPC_EXT_8BITMIME) &&
	    c->lim.strict_8bitmime)
		smtpc_set_reply(&r, 554, "5.6.3",
		    "remote server does not support 8BITMIME");
	for (i = 0; i < m->nrcpts; i++) {
		if (r.code != 0) {
			smtpc_rcpt_final(c, i, &r, SMTPC_BOUNCED);
			continue;
		}
		if (!smtpc_addr_ok(m->rcpts[i], 0)) {
			struct smtpc_reply br;

			smtpc_set_reply(&br, 553, "5.1.3",
			    "invalid recipient address");
			smtpc_rcpt_final(c, i, &br, SMTPC_BOUNCED);
			continue;
		}
		if (nsend >= c->lim.rcpts_max) {
			struct smtpc_reply dr;

			smtpc_set_reply(&dr, 452, "4.5.3",
			    "too many recipients for one transaction");
			smtpc_rcpt_final(c, i, &dr, SMTPC_DEFERRED);
			continue;
		}
		nsend++;
	}
	/* decided here, never sent: no reply maps to them */
	for (i = 0; i < m->nrcpts; i++)
		if (c->rc[i] == RC_FINAL)
			c->rc[i] = RC_SKIP;
	if (nsend == 0) {
		smtpc_txn_end(c);
		c->in_api = 0;
		return 0;
	}

	params[0] = '\0';
	cls = 0;
	if (c->ext & SMTPC_EXT_SIZE)
		cls += snprintf(params + cls, sizeof(params) - (size_t)cls,
		    " SIZE=%llu", (unsigned long long)size);
	if (body8 && (c->ext & SMTPC_EXT_8BITMIME))
		cls += snprintf(params + cls, sizeof(params) - (size_t)cls,
		    " BODY=8BITMIME");
	if (utf8)
		snprintf(params + cls, sizeof(params) - (size_t)cls,
		    " SMTPUTF8");
	smtpc_cmd(c, "MAIL FROM:<%s>%s", m->mail_from, params);
	if (c->pipelining) {
		for (i = 0; i < m->nrcpts; i++)
			if (c->rc[i] == RC_SEND)
				smtpc_cmd(c, "RCPT TO:<%s>", m->rcpts[i]);
		if (!c->use_bdat) {
			smtpc_cmd(c, "DATA");
			c->data_sent = 1;
		}
	}
	c->reply_cur = smtpc_next_sent(c, 0);
	smtpc_enter(c, SMTPC_S_MAIL);
	c->in_api = 0;
	return 0;
}

/* --------------------------------------------------------------- input */

/* smtpc_reply - one complete reply */
static int
smtpc_reply(struct smtpc_conn *c, const struct smtpc_reply *r)
{
	log_debug("smtpc id=%s <<< %d %s %s", c->id, r->code, r->enh, r->text);
	switch (c->state) {
	case SMTPC_S_GREETING:
	case SMTPC_S_EHLO:
	case SMTPC_S_HELO:
	case SMTPC_S_STARTTLS:
		return smtpc_conn_reply(c, r);
	case SMTPC_S_MAIL:
	case SMTPC_S_RCPT:
	case SMTPC_S_DATA:
	case SMTPC_S_BODY:
	case SMTPC_S_RSET:
		return smtpc_txn_reply(c, r);
	case SMTPC_S_QUIT:
		smtpc_destroy(c);
		return -1;
	default:
		return smtpc_fail(c, SMTPC_ERR_PROTOCOL, 451, "4.4.2",
		    "protocol error: reply in state %s",
		    smtpc_state_names[c->state]);
	}
}

/* smtpc_readcb - frame CRLF lines (bounded), parse replies */
static void
smtpc_readcb(struct bufferevent *bev, void *arg)
{
	struct smtpc_conn *c = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	struct evbuffer_ptr eol;
	struct smtpc_reply r;
	const char *err, *line;
	size_t len, eol_len, linelen, n;
	int rc;

	for (;;) {
		len = evbuffer_get_length(in);
		if (len == 0)
			return;
		if (c->expect == 0) {
			char ex[81];

			n = len < 80 ? len : 80;
			if (c->state == SMTPC_S_READY &&
			    (line = (const char *)evbuffer_pullup(in, 3)) != NULL &&
			    memcmp(line, "421", 3) == 0) {
				log_info("smtpc id=%s peer=%s event=closed-by-"
				    "server (421 while idle)", c->id, c->peer);
				smtpc_fail(c, SMTPC_ERR_PROTOCOL, 421, "4.4.2",
				    "server closed the idle connection");
				return;
			}
			line = (const char *)evbuffer_pullup(in, (ssize_t)n);
			smtpc_sanitize(ex, sizeof(ex), line, n);
			smtpc_fail(c, SMTPC_ERR_PROTOCOL, 451, "4.4.2",
			    "protocol error: unexpected data from the server: "
			    "\"%s\"", ex);
			return;
		}
		eol = evbuffer_search_eol(in, NULL, &eol_len, EVBUFFER_EOL_LF);
		if (eol.pos < 0) {
			if (len > c->lim.reply_line_max + 1) {
				n = len < 80 ? len : 80;
				line = (const char *)evbuffer_pullup(in,
				    (ssize_t)n);
				smtpc_proto_error(c, "reply line too long",
				    line, n);
			}
			return;
		}
		linelen = (size_t)eol.pos;	/* bytes before the LF */
		if (linelen > c->lim.reply_line_max + 1) {
			n = len < 80 ? len : 80;
			line = (const char *)evbuffer_pullup(in, (ssize_t)n);
			smtpc_proto_error(c, "reply line too long", line, n);
			return;
		}
		line = (const char *)evbuffer_pullup(in,
		    (ssize_t)linelen + 1);
		if (linelen == 0 || line[linelen - 1] != '\r') {
			smtpc_proto_error(c, "bare LF in reply", line,
			    linelen);
			return;
		}
		rc = smtpc_rparser_line(&c->rp, line, linelen - 1, &err);
		if (rc == -1) {
			smtpc_proto_error(c, err, line, linelen - 1);
			return;
		}
		if (c->state == SMTPC_S_EHLO && c->rp.nlines > 1 &&
		    linelen - 1 > 4)
			smtpc_ehlo_line(c, line + 4, linelen - 5);
		evbuffer_drain(in, linelen + 1);
		if (rc == 1) {
			r = c->rp.reply;
			smtpc_rparser_init(&c->rp, c->lim.reply_lines_max);
			c->expect--;
			if (smtpc_reply(c, &r) == -1)
				return;
		}
	}
}

/* ------------------------------------------------------------- the end */

int
smtpc_usable(const struct smtpc_conn *c)
{
	return c->state == SMTPC_S_READY && !c->txn && !c->broken &&
	    !c->closing && c->bev != NULL && c->pending == PEND_NONE;
}

unsigned
smtpc_extensions(const struct smtpc_conn *c)
{
	return c->ext;
}

const char *
smtpc_id(const struct smtpc_conn *c)
{
	return c->id;
}

void
smtpc_close(struct smtpc_conn *c)
{
	if (c == NULL)
		return;
	if (c->closing)
		return;
	if (smtpc_usable(c)) {
		c->closing = 1;
		c->ready_cb = NULL;
		c->done_cb = NULL;
		smtpc_cmd(c, "QUIT");
		smtpc_enter(c, SMTPC_S_QUIT);
		return;
	}
	smtpc_free(c);
}

void
smtpc_free(struct smtpc_conn *c)
{
	if (c == NULL)
		return;
	c->closing = 1;
	c->ready_cb = NULL;
	c->done_cb = NULL;
	event_del(c->ev_defer);
	c->pending = PEND_NONE;
	if (c->in_cb > 0) {
		c->free_pending = 1;
		return;
	}
	smtpc_destroy(c);
}
