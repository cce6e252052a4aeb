/*
 * domain.h - sender domains: name validation (libidn2 for IDN -> A-label),
 * creation of a domain record with its ownership token, DKIM keys (RSA-2048
 * and Ed25519, generated with OpenSSL) and the DNS records the tenant must
 * publish. Records are jansson objects stored as JSON by store.c.
 *
 * Domain record (JSON):
 * { "domain", "tenant", "kind": "custom"|"managed",
 *   "status": "pending"|"verified"|"failed", "token", "created", "checked_at",
 *   "keys": [ { "selector", "alg": "rsa-sha256"|"ed25519-sha256",
 *               "private": PEM, "public": base64 (DNS p=), "created",
 *               "state": "active"|"pending"|"retired" } ],
 *   "records": [ { "type":"TXT", "name", "value", "purpose":
 *                  "ownership"|"spf"|"dkim"|"dmarc", "status":
 *                  "pending"|"verified"|"failed" } ],
 *   "senders": [ localpart, ... ], "unsubscribe": false }
 *
 * Key states: only "active" keys sign. "pending" keys (petrelctl domain
 * rotate-dkim) are published but do not sign; when all their DKIM records
 * verify (verify.c: petrelctl domain verify or petreld's periodic check)
 * they become "active" (field "activated") and the keys that were active
 * become "retired" (field "retired"; no longer published or used).
 * verify.c also keeps "verified_at" (last successful verification) and
 * "check_result": "ok"|"failed"|"inconclusive" (temporary DNS failure).
 */
#ifndef PETREL_DOMAIN_H
#define PETREL_DOMAIN_H

#include <stddef.h>
#include <stdio.h>
#include <jansson.h>

struct petrel_conf;

/* domain_normalize - lower-case, IDN U-labels to A-labels (punycode),
 * validate LDH labels, length <= 253, at least two labels. 0 ok, -1 with
 * *err_r (static string). out holds DOMAIN_MAX_LEN+1. */
int domain_normalize(const char *in, char *out, size_t outlen,
    const char **err_r);
/* domain_new - build a new record for name (already normalised).
 * managed: verified at once. Returns a new reference, NULL + *err_r. */
json_t *domain_new(const struct petrel_conf *, const char *tenant,
    const char *name, int managed, char **err_r);
/* domain_managed_name - "<random-id>.<managed_zone>" into buf */
void domain_managed_name(const struct petrel_conf *, char *buf, size_t len);
/* domain_rebuild_records - recompute "records" from keys and conf,
 * keeping existing per-record status where name+value are unchanged */
void domain_rebuild_records(const struct petrel_conf *, json_t *rec);
/* domain_retired_expired - whether "records" still lists a retired key
 * whose grace is over (a rebuild drops it) */
int domain_retired_expired(const struct petrel_conf *, const json_t *rec);
/* domain_add_keys - generate a new RSA+Ed25519 pair under new selectors
 * with the given state; returns 0 or -1 + *err_r */
int domain_add_keys(json_t *rec, const char *state, char **err_r);
/* domain_public_view - copy of rec without private key material */
json_t *domain_public_view(const json_t *rec);
/* domain_print_records - human-readable list of records to publish */
void domain_print_records(const json_t *rec, FILE *fp);

#endif
