/*
 * deliver.h - the delivery scheduler: takes due messages from the queue,
 * groups their recipients by destination (recipient domain, or the
 * relayhost/transport next hop), resolves MX hosts (dns.c), runs SMTP
 * transactions over a bounded pool of outbound connections
 * (smtp_client.c) and records every recipient's outcome through the
 * queue's writer thread (queue_update). Bounces produce one RFC 3464 DSN
 * per message and attempt (dsn.c), queued like any other message.
 *
 * Everything runs on the main event loop. Where a message stands is only
 * ever in LMDB: the in-memory state is rebuilt from the schedule at start
 * and by a periodic scan (DELIVER_SCAN_MS), which is also how changes made
 * by petrelctl (queue flush, message delete) reach a running petreld.
 */
#ifndef PETREL_DELIVER_H
#define PETREL_DELIVER_H

#include <stddef.h>

struct event_base;
struct queue;
struct store;
struct dns;
struct deliver;

#define DELIVER_SCAN_MS		1000	/* schedule scan period */
#define DELIVER_SCAN_BATCH	1000	/* messages loaded per scan at most */
#define DELIVER_INFLIGHT_MAX	20000	/* messages in memory at most */
#define DELIVER_IDLE_MS		3000	/* idle outbound connection kept */
#define DELIVER_DSN_FULL_MAX	50000	/* RET=FULL returns a message up to
					 * this size whole, else its headers
					 * (Postfix's bounce_size_limit) */
#define DELIVER_MX_CACHE_MS	60000	/* MX answer reused at most this long
					 * (less when its TTL is shorter) */
#define DELIVER_DEAD_MS		2000	/* after every address of a
					   destination failed: no new
					   connection attempt this long */

/* deliver_new - start the scheduler (first scan at once) and register for
 * new-message notifications on q. Settings are read from env->conf when
 * used, so SIGHUP changes apply to later attempts. NULL and *err_r
 * (malloc'd) when the outbound TLS context cannot be built. */
struct deliver *deliver_new(struct event_base *, struct queue *,
    struct store *, struct dns *, char **err_r);
/* deliver_free - drop every connection and in-memory state. Results not
 * yet committed are still committed by the queue (their callbacks are
 * cancelled); a message whose result never reached the queue is retried
 * after restart (possibly a duplicate, never a loss). Call before
 * queue_free() and dns_free(). */
void deliver_free(struct deliver *);
/* deliver_kick - qid was just committed: try it now */
void deliver_kick(struct deliver *, const char *qid);
/* deliver_inflight - messages currently held in memory */
size_t deliver_inflight(const struct deliver *);

#endif
