/*
 * smtp_client.h - the outbound SMTP session: one state machine per
 * connection to a remote MX (or relay host), driven by libevent.
 *
 * A connection is opened with smtpc_connect(): TCP connect (optionally from
 * a source address, smtp_bind_address), greeting, EHLO (HELO when EHLO is
 * refused with 5xx), STARTTLS when offered and a client SSL_CTX is given,
 * EHLO again. Its ready callback then reports whether the connection can
 * carry transactions. smtpc_send() runs one transaction (MAIL, RCPT per
 * recipient, DATA or BDAT) and reports one result per recipient; the
 * caller may then send the next message over the same connection (reuse)
 * or end it with smtpc_close().
 *
 * Callbacks are never called from inside smtpc_connect() or smtpc_send();
 * they always come from the event loop. Inside a callback the caller may
 * call smtpc_send(), smtpc_close() or smtpc_free() on the connection.
 * A connection object is always released by the caller, with smtpc_close()
 * (QUIT when the connection is still usable) or smtpc_free() (at once); no
 * callback fires after either.
 *
 * A remote that sends malformed replies (codes that differ within one
 * multi-line reply, continuation lines shorter than 4 bytes, more than
 * reply_lines_max lines, lines over reply_line_max bytes, bare CR/LF or
 * control bytes in the text, data nobody asked for), drops the connection
 * or times out never harms Petrel: each is a protocol error that defers
 * every recipient not answered yet with 4.4.2 and makes the connection
 * unusable; the recorded text is sanitised and bounded (SMTPC_TEXT_MAX).
 *
 * The process must ignore SIGPIPE (petreld does): a remote that closes
 * mid-DATA then yields EPIPE, handled as a dropped connection.
 */
#ifndef PETREL_SMTP_CLIENT_H
#define PETREL_SMTP_CLIENT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <openssl/ssl.h>

struct event_base;
struct smtpc_conn;

#define SMTPC_TEXT_MAX		512		/* recorded reply text */
#define SMTPC_ENH_MAX		16		/* "5.123.123" + NUL */
#define SMTPC_REPLY_LINE_MAX	(64 * 1024)	/* one reply line, no CRLF */
#define SMTPC_REPLY_LINES_MAX	100		/* lines of one reply */
#define SMTPC_RCPTS_MAX		1000		/* recipients per transaction */

/* Extensions seen in the last EHLO reply (smtpc_extensions()). */
#define SMTPC_EXT_PIPELINING	0x01
#define SMTPC_EXT_SIZE		0x02
#define SMTPC_EXT_8BITMIME	0x04
#define SMTPC_EXT_SMTPUTF8	0x08
#define SMTPC_EXT_CHUNKING	0x10
#define SMTPC_EXT_STARTTLS	0x20
#define SMTPC_EXT_ENHANCED	0x40

/*
 * Limits and timeouts. Timeouts are in milliseconds; the defaults follow
 * RFC 5321 4.5.3.2 (tests shorten them). smtpc_limits_default() fills
 * every field.
 */
struct smtpc_limits {
	long		 connect_ms;	/* TCP connect: 30 s */
	long		 greeting_ms;	/* initial 220: 5 min */
	long		 helo_ms;	/* EHLO/HELO reply: 5 min */
	long		 tls_ms;	/* STARTTLS reply + handshake: 5 min */
	long		 mail_ms;	/* MAIL reply: 5 min */
	long		 rcpt_ms;	/* RCPT reply: 5 min */
	long		 data_init_ms;	/* 354 to DATA: 2 min */
	long		 data_block_ms;	/* each block of data written: 3 min */
	long		 data_end_ms;	/* reply to the final dot / BDAT LAST: 10 min */
	long		 rset_ms;	/* RSET reply: 5 min */
	long		 quit_ms;	/* QUIT reply: 1 min */
	size_t		 reply_line_max;	/* SMTPC_REPLY_LINE_MAX */
	unsigned	 reply_lines_max;	/* SMTPC_REPLY_LINES_MAX */
	unsigned	 rcpts_max;	/* per transaction; the rest deferred 4.5.3 */
	int		 use_chunking;	/* BDAT when the server offers CHUNKING (1) */
	int		 use_pipelining; /* pipeline when offered (1) */
	int		 strict_8bitmime; /* 8-bit message, server without
					    8BITMIME: bounce 5.6.3 (1) or send
					    as is, as most MTAs do (0, default) */
};

void smtpc_limits_default(struct smtpc_limits *);

/* TLS policy for one connection (smtpc_connect). */
enum smtpc_tls {
	SMTPC_TLS_NONE = 0,	/* never STARTTLS */
	SMTPC_TLS_MAY,		/* opportunistic: STARTTLS when offered, no
				   certificate check; a refused STARTTLS
				   continues in plaintext (logged); a failed
				   handshake fails the session */
	SMTPC_TLS_VERIFY,	/* TLS required, certificate verified against
				   the SSL_CTX's CAs and tls_servername */
};

/* A reply: from the server, or made up by Petrel (local = 1). */
struct smtpc_reply {
	int		 code;			/* 200..599 */
	int		 local;			/* not sent by the server */
	char		 enh[SMTPC_ENH_MAX];	/* "2.1.5", "" when absent */
	char		 text[SMTPC_TEXT_MAX + 1];	/* sanitised, lines
						   joined by a space */
};

/* Outcome of smtpc_connect(). */
enum smtpc_status {
	SMTPC_OK = 0,		/* ready for smtpc_send() */
	SMTPC_ERR_CONNECT,	/* TCP connect failed or timed out (4.4.1) */
	SMTPC_ERR_REFUSED,	/* greeting or EHLO/HELO not 2xx: reply says */
	SMTPC_ERR_PROTOCOL,	/* malformed reply, dropped connection,
				   timeout (4.4.2) */
	SMTPC_ERR_TLS,		/* STARTTLS handshake or verification failed,
				   or TLS required and not offered (4.7.x) */
};

/*
 * What smtpc_connect() reports. All failures mean "try the next MX or
 * defer". tls_failed: a STARTTLS handshake failed in this session; the
 * caller may retry without TLS on a NEW connection only when its policy
 * allows it (never done here, never silently).
 */
struct smtpc_ready {
	enum smtpc_status status;
	int		 tls;		/* session is TLS-protected */
	int		 tls_failed;
	unsigned	 ext;		/* SMTPC_EXT_* */
	uint64_t	 size_max;	/* server's SIZE, 0 when none */
	struct smtpc_reply reply;	/* last reply (or the local reason) */
};

/* One message to send. Every pointer is borrowed: the caller keeps the
 * data alive until the done callback. Addresses are "local@domain"
 * without angle brackets; mail_from "" is the null sender. */
struct smtpc_msg {
	const char		*mail_from;
	const char *const	*rcpts;
	size_t			 nrcpts;
	const unsigned char	*data;		/* message bytes, any line ends */
	size_t			 len;
	int			 needs_8bit;	/* from smtpc_scan_message() */
	int			 needs_smtputf8;
};

enum smtpc_outcome {
	SMTPC_DELIVERED = 0,	/* 2xx at end of data */
	SMTPC_BOUNCED,		/* 5xx */
	SMTPC_DEFERRED,		/* 4xx, timeouts, connection failures */
};

struct smtpc_rcpt_result {
	enum smtpc_outcome outcome;
	struct smtpc_reply reply;	/* the reply that decided it */
};

/* Result of one transaction. rcpts[i] belongs to msg->rcpts[i]; the array
 * is valid only during the done callback. */
struct smtpc_result {
	size_t			 nrcpts;
	const struct smtpc_rcpt_result *rcpts;
	int			 reusable;	/* another smtpc_send() may follow */
	int			 tls;
};

typedef void (*smtpc_ready_cb)(struct smtpc_conn *, const struct smtpc_ready *,
    void *);
typedef void (*smtpc_done_cb)(struct smtpc_conn *, const struct smtpc_result *,
    void *);

/* smtpc_tls_ctx_new - client SSL_CTX: TLS 1.2 at least, CAs from cafile
 * (PEM) or the system's default paths when NULL. Verification is chosen
 * per connection (enum smtpc_tls). NULL and *err_r on error. */
SSL_CTX *smtpc_tls_ctx_new(const char *cafile, const char **err_r);

/*
 * smtpc_connect - start a session to dst (from src when not NULL, port 0
 * in src picks any). helo_name is sent in EHLO/HELO; tls_servername is the
 * SNI name and the name verified with SMTPC_TLS_VERIFY (an IP literal is
 * checked against the certificate's IP SANs and sent without SNI).
 * ssl_ctx NULL disables STARTTLS (and fails SMTPC_TLS_VERIFY). lim NULL:
 * defaults. Never returns NULL: every failure is reported through cb.
 */
struct smtpc_conn *smtpc_connect(struct event_base *, SSL_CTX *ssl_ctx,
    const struct sockaddr *dst, socklen_t dstlen,
    const struct sockaddr *src, socklen_t srclen,
    const char *helo_name, const char *tls_servername, enum smtpc_tls,
    const struct smtpc_limits *lim, smtpc_ready_cb cb, void *arg);

/*
 * smtpc_send - one transaction over a ready connection: MAIL FROM with
 * SIZE= (when offered), BODY=8BITMIME and SMTPUTF8 (when the message needs
 * them and the server offers them), RCPT TO per recipient (pipelined when
 * offered), then DATA (CRLF-normalised, dot-stuffed) or BDAT (CHUNKING).
 * Without sending anything: a message over the server's SIZE bounces
 * 5.3.4; one needing SMTPUTF8 on a server without it bounces 5.6.7; a
 * malformed address bounces 5.1.3/5.1.7; recipients beyond rcpts_max are
 * deferred 4.5.3. -1 (and no callback) when the connection is not ready
 * (see smtpc_usable()) or the message has no recipient.
 */
int smtpc_send(struct smtpc_conn *, const struct smtpc_msg *, smtpc_done_cb,
    void *arg);

/* smtpc_usable - 1 when the connection is idle and can take smtpc_send() */
int smtpc_usable(const struct smtpc_conn *);
/* smtpc_extensions - SMTPC_EXT_* of the current session */
unsigned smtpc_extensions(const struct smtpc_conn *);
/* smtpc_id - short id used on this connection's log lines */
const char *smtpc_id(const struct smtpc_conn *);

/* smtpc_close - QUIT (when usable and idle) then release; no callbacks
 * after it. The object is freed when the QUIT is answered or times out. */
void smtpc_close(struct smtpc_conn *);
/* smtpc_free - release at once, closing the socket without QUIT */
void smtpc_free(struct smtpc_conn *);

/*
 * Message helpers (pure).
 *
 * smtpc_scan_message - set msg->needs_8bit (a byte >= 0x80 anywhere) and
 * msg->needs_smtputf8 (non-ASCII in the header section or in an envelope
 * address) from the message bytes and addresses.
 */
void smtpc_scan_message(struct smtpc_msg *);

/* smtpc_wire_size - size of the message once CRLF-normalised (before dot
 * stuffing): what SIZE= announces and what BDAT sends. Bare CR and bare LF
 * become CRLF; a last line without a line end gets CRLF. */
uint64_t smtpc_wire_size(const unsigned char *, size_t);

/* Streaming encoder of the message bytes for the wire. */
struct smtpc_enc {
	const unsigned char	*data;
	size_t			 len, pos;
	int			 dot;		/* DATA: dot-stuff, add ".\r\n" */
	int			 bol;		/* at the beginning of a line */
	int			 done;		/* everything produced */
};

void smtpc_enc_init(struct smtpc_enc *, const unsigned char *, size_t,
    int dot);
/* smtpc_enc_run - produce up to cap bytes (cap >= 8) of wire data into
 * out; returns the count, 0 once done. */
size_t smtpc_enc_run(struct smtpc_enc *, unsigned char *out, size_t cap);

/*
 * Reply parser, one line at a time (the caller frames lines on CRLF and
 * enforces the line length). smtpc_rparser_line: 1 when the reply is
 * complete (in p->reply), 0 when more lines follow, -1 on a protocol
 * error (*err_r: static text).
 */
struct smtpc_rparser {
	unsigned	 lines_max;
	unsigned	 nlines;
	size_t		 textlen;
	struct smtpc_reply reply;
};

void smtpc_rparser_init(struct smtpc_rparser *, unsigned lines_max);
int smtpc_rparser_line(struct smtpc_rparser *, const char *line, size_t len,
    const char **err_r);

/* smtpc_sanitize - copy up to srclen bytes of untrusted text into dst
 * (dstlen incl. NUL), replacing control and non-ASCII bytes by '?' */
void smtpc_sanitize(char *dst, size_t dstlen, const char *src, size_t srclen);

const char *smtpc_status_str(enum smtpc_status);
const char *smtpc_outcome_str(enum smtpc_outcome);

#endif
