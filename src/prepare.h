/*
 * prepare.h - the prepare stage between the queue and delivery: what is
 * done to a message once, before its first delivery attempt, and made
 * durable before that attempt.
 *
 * For a message whose record's stage is not yet "prepared", deliver.c
 * hands its bytes to prepare_start(). On a worker thread (worker.h; never
 * on the event loop) the stage
 *   1. evaluates this hop's SPF/DKIM/DMARC results of the received message
 *      (authres.c, on the connecting IP, HELO and MAIL FROM kept in the
 *      messages record), when ARC sealing is configured: the results only
 *      go into the ARC-Authentication-Results field;
 *   2. per outgoing copy: calls the personalisation hook
 *      prepare_personalise() (per recipient, only when the signing
 *      domain's record asks for per-recipient copies: "unsubscribe": true
 *      or a "tracking" object), DKIM-signs with the record of the header
 *      From domain (dkim.c: rsa-sha256 + ed25519-sha256, only "active"
 *      keys; the record must belong to the message's tenant; a DSN whose
 *      From domain is `hostname` uses that domain's record whoever owns
 *      it), then ARC-seals as one hop (arc.c) when arc_domain,
 *      arc_selector and arc_key_file are set (the key is loaded once, by
 *      prepare_new; DSNs are not sealed: they were not relayed).
 * Back on the main loop the result goes to the store writer through
 * queue_set_prepared() (the same group commit as new messages): the
 * bodies record is replaced by the prepared bytes (or, for per-recipient
 * copies, each copy is stored under qid + recipient index) and the stage
 * becomes "prepared" in one transaction. Only then does the callback run,
 * so a restart never re-signs a message differently and DKIM time is spent
 * once per message copy, not per attempt. A message that cannot be signed
 * (no record, no active key, no single From) goes out unsigned, logged.
 *
 * One libunbound context per worker thread (thread-local, freed when the
 * thread exits). The configuration seen by the worker is a snapshot
 * taken on the main loop (SIGHUP frees env->conf there).
 */
#ifndef PETREL_PREPARE_H
#define PETREL_PREPARE_H

#include <stddef.h>
#include <jansson.h>

struct evbuffer;
struct petrel_conf;
struct prepare;
struct prepare_req;
struct queue;
struct store;
struct tracking_msg;

/* What the personalisation hook sees (worker thread, read-only). */
struct prepare_ctx {
	struct store			*store;
	const struct petrel_conf	*conf;		/* snapshot */
	const char			*qid;
	const char			*tenant;
	const json_t			*domain_rec;	/* signing domain */
	/* issue 8 (tracking helper) */
	unsigned			 rcpt_idx;	/* index in the queue */
	struct tracking_msg		*trk;		/* NULL: no tracking */
};

/* The outcome handed to the prepare_start() callback (main loop). */
struct prepare_result {
	int		 status;	/* 0 committed; -1 not stored */
	const char	*err;		/* -1: "no such message" or storage */
	unsigned char	*data;		/* bytes to send (prepared, or the
					 * base of per-recipient copies);
					 * the callback takes them over */
	size_t		 len;
	int		 personalised;	/* 1: per-recipient copies stored,
					 * queue_rcpt_body_get() reads them */
};

typedef void (*prepare_done_cb)(void *arg, struct prepare_result *);

/* prepare_new - the stage's state; loads the ARC key when arc_* are set.
 * NULL + *err_r (malloc'd). */
struct prepare *prepare_new(struct store *, struct queue *, char **err_r);
/* prepare_free - cancel what is in flight (no callbacks), free */
void prepare_free(struct prepare *);

/* prepare_start - prepare message qid (rec: its messages record as
 * queue_load() returns it, read here and not kept). data (malloc'd, len
 * bytes) is taken over. rcpts/idx: the recipients (addresses and indexes
 * in the queue record) that per-recipient copies are made for. cb runs
 * on the main loop once the result is committed (or failed). */
struct prepare_req *prepare_start(struct prepare *, const char *qid,
    const json_t *rec, unsigned char *data, size_t len,
    const char *const *rcpts, const unsigned *idx, size_t nrcpts,
    prepare_done_cb cb, void *arg);
/* prepare_cancel - cb will not be called; the commit may still happen */
void prepare_cancel(struct prepare_req *);

/* prepare_needs_copies - 1 when the domain record asks for one copy per
 * recipient ("unsubscribe": true, or "tracking" with opens or clicks on;
 * prepare_work leaves tracking out for a message whose record's client
 * object says "tracking_disabled": true) */
int prepare_needs_copies(const json_t *domain_rec);
/* prepare_personalise - the per-recipient hook, before DKIM signing (so
 * what it adds is signed): today the RFC 8058 List-Unsubscribe fields
 * (unsub_headers()) go on top, then the open/click tracking rewrites
 * of HTML parts (tracking.h, when ctx->trk is set). 0, or -1 when a
 * step failed (that step left msg_in_out unchanged). */
int prepare_personalise(const struct prepare_ctx *, const char *rcpt,
    struct evbuffer *msg_in_out);

#endif
