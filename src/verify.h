/*
 * verify.h - proving a custom sender domain in DNS. One verification run
 * looks up every record a domain must publish (domain.h "records") through
 * the configured resolver and checks it:
 *   ownership  TXT at _petrel.DOMAIN equal to "petrel-verification=TOKEN";
 *   spf        exactly one TXT at DOMAIN starting with "v=spf1"; with
 *              spf_include set it must hold the mechanism include:<spf_include>;
 *              with smtp_bind_address set, libspf2 (DNS through a custom layer
 *              on libunbound, same resolver) must give "pass" for
 *              postmaster@DOMAIN sending from that address (libspf2's
 *              free pass for loopback addresses is bypassed); with neither
 *              set the record must equal the one Petrel printed;
 *   dkim       TXT at <selector>._domainkey.DOMAIN whose tags parse, with
 *              v=DKIM1 when present, k= equal to the key's type and p= equal
 *              to the key's public key;
 *   dmarc      exactly one TXT at _dmarc.DOMAIN starting with v=DMARC1, with
 *              p=none|quarantine|reject.
 * The domain is verified when ownership, spf, dmarc and the dkim records of
 * every *active* key check out. A rotation's pending keys do not count
 * toward the domain's status; once all their records verify they become
 * active and the keys that were active are retired (no longer published).
 * Otherwise the domain becomes "pending" when it was never verified, else
 * "failed". A temporary DNS failure decides nothing: statuses stay as they
 * were (checked_at and "check_result": "inconclusive" are recorded).
 *
 * A run has three stages, so that petreld keeps its event loop free:
 *   verify_run_start - asynchronous TXT lookups on a libevent loop (dns.c);
 *   verify_run_evaluate - the checks, including the synchronous libspf2
 *                  evaluation (blocks up to VERIFY_SPF_TIMEOUT_MS: petreld
 *                  runs it on a worker thread);
 *   verify_run_commit - one LMDB write transaction that re-reads the record
 *                  and changes only status fields and key states of records
 *                  whose name and value are those that were checked (no
 *                  write transaction is ever held across a DNS wait).
 * petreld re-verifies domains on a timer (verify_daemon_start).
 */
#ifndef PETREL_VERIFY_H
#define PETREL_VERIFY_H

#include <stdio.h>
#include <jansson.h>

struct dns;
struct event_base;
struct petrel_conf;
struct store;
struct verify_run;

#define VERIFY_DNS_TIMEOUT_MS	10000	/* one TXT lookup */
#define VERIFY_SPF_TIMEOUT_MS	10000	/* one whole libspf2 evaluation */
#define VERIFY_TXT_SHOW_MAX	300	/* bytes of a found record shown */
#define VERIFY_DAEMON_MAX_RUNS	16	/* concurrent runs in petreld */

typedef void (*verify_cb)(struct verify_run *, void *arg);

/* verify_run_new - a run for rec (a custom domain); copies what it needs
 * from conf and rec. NULL + *err_r (static) for a managed or malformed
 * record. */
struct verify_run *verify_run_new(const struct petrel_conf *,
    const json_t *rec, const char **err_r);
void verify_run_free(struct verify_run *);
/* verify_run_start - start the lookups on dns; cb runs on dns's loop when
 * all have answered (from inside this call only when there is nothing to
 * look up) */
void verify_run_start(struct verify_run *, struct dns *, verify_cb cb,
    void *arg);
/* verify_run_cancel - forget the outstanding lookups (cb will not run) */
void verify_run_cancel(struct verify_run *);
/* verify_run_evaluate - run the checks on the answers (blocking: libspf2) */
void verify_run_evaluate(struct verify_run *);
/* verify_run_commit - store the outcome (compare-and-update). 0, or -1 and
 * a malloc'd *err_r. */
int verify_run_commit(struct verify_run *, struct store *,
    const struct petrel_conf *, char **err_r);
/* verify_run_print - one line per record, then the domain's outcome */
void verify_run_print(const struct verify_run *, FILE *);
/* verify_run_log - event=domain_status when the status changed (and
 * event=dkim_rotate when keys were promoted); debug lines per record */
void verify_run_log(const struct verify_run *);
/* verify_run_domain / _status - the domain; its status after the commit */
const char *verify_run_domain(const struct verify_run *);
const char *verify_run_status(const struct verify_run *);

/* verify_domain_sync - the whole run for petrelctl: a short private event
 * loop for the lookups, then evaluate and commit. Returns the run (print
 * it, free it) or NULL + malloc'd *err_r. */
struct verify_run *verify_domain_sync(struct store *,
    const struct petrel_conf *, const json_t *rec, char **err_r);

/* verify_daemon_start - petreld: re-verify custom domains on base, pending
 * and failed ones every verify_interval, verified ones every
 * reverify_interval, reading *confp at each tick (SIGHUP swaps it). Uses
 * worker_run() for the evaluation and the write. */
void verify_daemon_start(struct event_base *, struct store *,
    struct petrel_conf **confp);
/* verify_daemon_stop - stop the timer, cancel lookups, wait (bounded) for
 * runs on worker threads to finish their store writes. Call before
 * store_close(). */
void verify_daemon_stop(void);

#endif
