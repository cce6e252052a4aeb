/*
 * worker.h - tiny thread pools for slow work that must not block the main
 * event loop. fn runs on one of a pool's WORKER_THREADS threads; done then
 * runs on the main loop thread. worker_run: the interactive pool (AUTH's
 * scrypt check, admin requests, domain checks). worker_run_bulk: a pool at
 * a lower CPU priority for background work on mail already queued (the
 * prepare step's DKIM signing and ARC sealing).
 */
#ifndef PETREL_WORKER_H
#define PETREL_WORKER_H

struct event_base;

#define WORKER_THREADS 2

typedef void (*worker_fn)(void *arg);

/* worker_init - remember the loop that runs the done callbacks; threads
 * start lazily at the first worker_run (so a fork after init is safe) */
void worker_init(struct event_base *base);
/* worker_run - queue fn(arg) for a worker thread, then done(arg) on the
 * main loop. arg belongs to the job until done runs. */
void worker_run(worker_fn fn, void *arg, worker_fn done);
/* worker_run_bulk - the same on the low-priority bulk pool */
void worker_run_bulk(worker_fn fn, void *arg, worker_fn done);
/* worker_shutdown - let both pools finish the jobs queued (owners cancel
 * theirs first, so those return at once), join the threads and run the
 * remaining done callbacks on the calling (main) thread */
void worker_shutdown(void);

#endif
