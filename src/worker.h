/*
 * worker.h - a tiny thread pool for slow work that must not block the main
 * event loop (the scrypt password check of AUTH). fn runs on one of
 * WORKER_THREADS threads; done then runs on the main loop thread.
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
/* worker_shutdown - stop and join the threads (pending jobs are dropped
 * without their done callbacks) */
void worker_shutdown(void);

#endif
