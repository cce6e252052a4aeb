/*
 * tracking.h - engagement tracking (issue 8), opt-in per sender domain:
 * open tracking (an invisible image added to HTML parts) and click
 * tracking (links in HTML parts rewritten to a redirect on
 * tracking_base_url), done per recipient by the prepare stage before
 * DKIM signing, and the handlers behind GET/HEAD /t/o/TOKEN and
 * /t/c/TOKEN that record "opened" and "clicked" events.
 *
 * Domain record: "tracking": {"opens": bool, "clicks": bool} (petrelctl
 * domain set DOMAIN tracking_opens|tracking_clicks on|off). A message
 * submitted through the HTTP API with userEngagementTrackingDisabled:
 * true carries "tracking_disabled": true in its record's "client" object
 * and is not tracked.
 *
 * Tokens: base64url(payload) "." base64url(MAC), payload = version (1),
 * kind ('o' or 'c'), queue id (14), recipient index (2, big-endian) and,
 * for clicks, link index (2); MAC = the first 16 bytes of HMAC-SHA256
 * over "petrel-track-v1" NUL payload, keyed with a 32-byte secret kept in
 * the meta database (key "tracking_secret", created on first use). A
 * token names no URL: the redirect target is the link index'th entry of
 * the message's link list, stored by the prepare stage in the meta
 * database under "trk:" QID as {"tenant","message_id","created",
 * "links":[...],"rcpts":{"IDX":"address"}}. So a click URL only ever
 * redirects to a URL that was in the message (no open redirect), and a
 * forged or altered token is refused (404).
 */
#ifndef PETREL_TRACKING_H
#define PETREL_TRACKING_H

#include <stddef.h>
#include <jansson.h>
#include <lmdb.h>

struct evbuffer;
struct petrel_conf;
struct queue;
struct store;

#define TRACKING_OPENS		0x01
#define TRACKING_CLICKS		0x02

#define TRACKING_TOKEN_MAX	128	/* characters of a token */
#define TRACKING_LINKS_MAX	1000	/* links rewritten per message */
#define TRACKING_URL_MAX	2048	/* longest link rewritten */
#define TRACKING_DEPTH_MAX	8	/* multipart nesting looked into */
#define TRACKING_PARTS_MAX	200	/* MIME parts looked at */
#define TRACKING_HEADER_MAX	(64 * 1024)	/* a part's header block */
#define TRACKING_HTML_MAX	(16 * 1024 * 1024) /* decoded HTML part */
#define TRACKING_TAG_MAX	8192	/* an <a ...> tag */
#define TRACKING_LINE_MAX	998	/* 7bit/8bit line after rewriting */
#define TRACKING_UA_MAX		256	/* User-Agent kept in an event */

/* tracking_domain - TRACKING_OPENS | TRACKING_CLICKS as domain_rec asks */
int tracking_domain(const json_t *domain_rec);
/* tracking_base_url - "http(s)://host[:port]" without a final '/': the
 * tracking_base_url setting, else what unsub_base_url() derives
 * (unsubscribe_base_url, apikey_endpoint, listen_https); NULL when none.
 * malloc'd. */
char *tracking_base_url(const struct petrel_conf *);

/*
 * The rewriter (pure: no I/O, no globals). It walks the MIME structure
 * (a single part, or multipart parts to TRACKING_DEPTH_MAX levels), and in
 * every text/html part that is not an attachment (and whose charset is
 * ASCII-compatible) decodes the Content-Transfer-Encoding
 * (quoted-printable, base64, 7bit, 8bit, binary), rewrites the href of
 * each <a> tag whose value is an http(s) URL (not one starting with a
 * skip prefix) to click_url(arg, n, url) and inserts the pixel
 * <img src="OPEN_URL" ...> before </body> (else </html>, else at the
 * end) of the first such part, then re-encodes with the part's own
 * encoding (QP lines <= 76, base64 lines of 76). Everything else stays
 * byte-identical. Links are numbered from 0 in document order across
 * parts; n reaches at most TRACKING_LINKS_MAX - 1 (later links are left
 * alone). Hand-written because Debian packages no HTML library that
 * rewrites attributes in place (libxml2's HTML parser re-serialises the
 * whole document): the scanner only looks at <a ...> tags, skips
 * comments, <script> and <style>, and is bounded by the TRACKING_*_MAX
 * limits. A 7bit/8bit part whose lines would pass 998 octets after
 * rewriting is left unchanged.
 */
typedef char *(*tracking_url_fn)(void *arg, size_t n, const char *url);

struct tracking_rw {
	const char	*open_url;	/* NULL: no pixel */
	tracking_url_fn	 click_url;	/* NULL: links left alone; returns a
					 * malloc'd URL, NULL to skip */
	void		*arg;
	const char	*skip[4];	/* URL prefixes never rewritten
					 * (case-insensitive), NULL ends */
};

/* tracking_rewrite - the rewritten message appended to out; links (an
 * array, may be NULL) gets each rewritten link's original URL (HTML
 * entities decoded) in order. Returns the number of changes (links +
 * pixel; 0: out holds the message unchanged), -1 and *err_r (static) when
 * the message cannot be parsed (out untouched). */
int tracking_rewrite(const unsigned char *msg, size_t len,
    const struct tracking_rw *, struct evbuffer *out, json_t *links,
    const char **err_r);

/* --- the prepare stage (worker thread, then main loop) --- */

struct tracking_msg;

/* tracking_msg_new - the tracking state of one message, or NULL when
 * nothing is to be tracked (domain off, disabled for the message, no
 * base URL) */
struct tracking_msg *tracking_msg_new(struct store *,
    const struct petrel_conf *, const json_t *domain_rec, const char *qid,
    const char *tenant, const char *message_id, int disabled);
/* tracking_personalise - rewrite rcpt's copy (recipient index idx) in
 * place; 0, or -1 (msg unchanged) */
int tracking_personalise(struct tracking_msg *, unsigned idx,
    const char *rcpt, struct evbuffer *msg);
/* tracking_msg_commit - main loop: hand the message's link record to the
 * store writer (queue_exec) when anything was tracked; call it before
 * queue_set_prepared so both are committed in order */
void tracking_msg_commit(struct tracking_msg *, struct queue *);
void tracking_msg_free(struct tracking_msg *);

/* --- the /t/ endpoints (main loop: reads only) --- */

/* tracking_token - a token (malloc'd) for kind 'o' or 'c'; NULL when the
 * secret cannot be had. Exposed for the tests. */
char *tracking_token(struct store *, int kind, const char *qid,
    unsigned rcpt_idx, unsigned link_idx);

struct tracking_hit {
	int	 kind;			/* 'o' or 'c' */
	char	 qid[16];
	unsigned rcpt_idx;
	unsigned link_idx;
	char	*tenant;
	char	*message_id;
	char	*rcpt;
	char	*url;			/* clicks: where to redirect */
	int	 machine;		/* 1: likely automated */
	const char *why;		/* machine: "head", "user_agent",
					 * "too_soon", "before_delivery" */
};

/* tracking_lookup - verify token (kind 'o' or 'c') and find what it
 * points at; decide whether the request looks automated (HEAD, a known
 * scanner or prefetcher user agent (ua may be NULL), a click within
 * tracking_machine_window of the recipient's delivery, any hit before
 * the delivery is recorded). 0 with hit_r filled (release with
 * tracking_hit_clear), -1 for an unknown or invalid token. */
int tracking_lookup(struct store *, const struct petrel_conf *, int kind,
    const char *token, int head, const char *ua,
    struct tracking_hit *hit_r);
void tracking_hit_clear(struct tracking_hit *);
/* tracking_emit - the "opened" or "clicked" event of hit (main thread:
 * events_emit), details {"machine","user_agent","ip"[,"url"][,"why"]} */
void tracking_emit(struct queue *, const struct tracking_hit *,
    const char *ua, const char *ip);
/* tracking_machine_ua - 1 when ua (may be NULL) names a known link
 * scanner, prefetcher or bot */
int tracking_machine_ua(const char *ua);
/* tracking_del_txn - forget qid's tracked links inside txn (its message is
 * deleted or past message_retention; its links answer 404 from then on) */
int tracking_del_txn(MDB_txn *txn, struct store *, const char *qid);

/* the 1x1 transparent GIF answered for opens */
extern const unsigned char tracking_gif[];
extern const size_t tracking_gif_len;

#endif
