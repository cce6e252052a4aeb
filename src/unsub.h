/*
 * unsub.h - RFC 8058 one-click unsubscribe: tokens bound to a tenant and a
 * recipient, the List-Unsubscribe header fields for a recipient's copy of a
 * message, and the handler behind POST /u/TOKEN (which adds the recipient
 * to the tenant's suppression list). Implemented in unsub.c.
 */
#ifndef PETREL_UNSUB_H
#define PETREL_UNSUB_H

#include <jansson.h>

struct store;
struct petrel_conf;

/* unsub_token - an unguessable token (HMAC-SHA256 with a secret kept in
 * the store's meta db, created on first use) that encodes tenant,
 * recipient and (when not NULL) the queue id of the message carrying it;
 * malloc'd, URL-safe */
char *unsub_token(struct store *, const char *tenant, const char *rcpt,
    const char *qid);
/* unsub_token_parse - verify a token (constant time); 0 and malloc'd
 * tenant/rcpt and *qid_r (NULL for a token without one; qid_r may be
 * NULL), or -1 */
int unsub_token_parse(struct store *, const char *token, char **tenant_r,
    char **rcpt_r, char **qid_r);
/* unsub_headers - the CRLF-terminated "List-Unsubscribe: <https://...>,
 * <mailto:...>" and "List-Unsubscribe-Post: List-Unsubscribe=One-Click"
 * fields for rcpt, or NULL when the sender domain (domain_rec) has
 * unsubscribe off or no unsubscribe URL base is configured. Safe to call
 * from worker threads. */
char *unsub_headers(struct store *, const struct petrel_conf *,
    const json_t *domain_rec, const char *tenant, const char *rcpt,
    const char *qid);

/* Additions (unsub.c's owner). */
/* longest token unsub_token_parse looks at */
#define UNSUB_TOKEN_MAX	1024
/* unsub_base_url - "https://host[:port]" without a final '/': the
 * unsubscribe_base_url setting, else apikey_endpoint, else the first
 * listen_https address; NULL when none is set. malloc'd. */
char *unsub_base_url(const struct petrel_conf *);
/* unsub_url - BASE/u/TOKEN for rcpt of tenant, malloc'd; NULL when no
 * base is configured or the address cannot have a token */
char *unsub_url(struct store *, const struct petrel_conf *,
    const char *tenant, const char *rcpt, const char *qid);
/* unsub_apply - the work of POST /u/TOKEN: verify token and add its
 * recipient to its tenant's suppression list (source "unsubscribe").
 * 0 with malloc'd *tenant_r and *rcpt_r, and *qid_r (the message's queue
 * id, NULL for an older token); -1 with malloc'd *err_r ("invalid
 * unsubscribe link" for a bad token). Writes to the store: call it off
 * the main loop. */
int unsub_apply(struct store *, const char *token, char **tenant_r,
    char **rcpt_r, char **qid_r, char **err_r);

#endif
