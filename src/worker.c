/*
 * worker.c - two fixed pools of threads, each taking jobs from one
 * mutex-protected list. Finished jobs go to a second list; a self-pipe
 * wakes the main event loop, which runs each job's done callback. The pipe
 * (rather than event_active from another thread) keeps this correct
 * whether or not the event base was created with libevent's locking
 * enabled. A worker writes to the pipe only when the done list was empty:
 * one wakeup of the loop collects every job finished meanwhile.
 *
 * The bulk pool (worker_run_bulk: DKIM signing and ARC sealing of queued
 * mail) runs at a lower priority (nice WORKER_BULK_NICE) than the main
 * loop, the queue writer and the interactive pool (AUTH password checks,
 * admin requests): under a burst the CPU goes to accepting and answering
 * clients first, and the prepare backlog, already durable in the queue,
 * catches up when the burst is over.
 */
#include "autoconf.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "log.h"
#include "util.h"
#include "worker.h"

struct worker_job {
	worker_fn		 fn, done;
	void			*arg;
	struct worker_job	*next;
};

struct worker_pool {
	const char		*name;
	int			 nice;
	struct event_base	*base;
	struct event		*ev;
	int			 pipefd[2];
	pthread_t		 th[WORKER_THREADS];
	int			 started, stopping;
	pthread_mutex_t		 mtx;
	pthread_cond_t		 cond;
	struct worker_job	*todo, **todo_tail;
	struct worker_job	*done, **done_tail;
};

#define WORKER_BULK_NICE	5

static struct worker_pool pools[2] = {
	{ .name = "interactive", .nice = 0, .pipefd = { -1, -1 },
	  .mtx = PTHREAD_MUTEX_INITIALIZER,
	  .cond = PTHREAD_COND_INITIALIZER },
	{ .name = "bulk", .nice = WORKER_BULK_NICE, .pipefd = { -1, -1 },
	  .mtx = PTHREAD_MUTEX_INITIALIZER,
	  .cond = PTHREAD_COND_INITIALIZER },
};

/* worker_main - a thread of pool wp: take a job, run it, hand it to the
 * loop */
static void *
worker_main(void *arg)
{
	struct worker_pool *wp = arg;
	struct worker_job *j;
	char c = 1;
	int wake;

	/* Linux: setpriority on a thread id sets that thread's nice alone */
	if (wp->nice != 0 && setpriority(PRIO_PROCESS,
	    (id_t)syscall(SYS_gettid), wp->nice) == -1)
		log_warn("event=worker pool=%s nice=%d error=\"%s\"", wp->name,
		    wp->nice, strerror(errno));
	for (;;) {
		pthread_mutex_lock(&wp->mtx);
		while (wp->todo == NULL && !wp->stopping)
			pthread_cond_wait(&wp->cond, &wp->mtx);
		/* stopping: finish what is queued (cancelled jobs return at
		 * once), then leave */
		if (wp->todo == NULL) {
			pthread_mutex_unlock(&wp->mtx);
			return NULL;
		}
		j = wp->todo;
		wp->todo = j->next;
		if (wp->todo == NULL)
			wp->todo_tail = &wp->todo;
		pthread_mutex_unlock(&wp->mtx);

		j->fn(j->arg);

		pthread_mutex_lock(&wp->mtx);
		j->next = NULL;
		wake = wp->done == NULL;
		*wp->done_tail = j;
		wp->done_tail = &j->next;
		pthread_mutex_unlock(&wp->mtx);
		while (wake && write(wp->pipefd[1], &c, 1) == -1 &&
		    errno == EINTR)
			;
	}
}

/* worker_wakeup - main loop: run the done callbacks of a pool's finished
 * jobs */
static void
worker_wakeup(evutil_socket_t fd, short what, void *arg)
{
	struct worker_pool *wp = arg;
	struct worker_job *list, *j;
	char buf[64];

	(void)what;
	while (read(fd, buf, sizeof(buf)) > 0)
		;
	pthread_mutex_lock(&wp->mtx);
	list = wp->done;
	wp->done = NULL;
	wp->done_tail = &wp->done;
	pthread_mutex_unlock(&wp->mtx);
	while ((j = list) != NULL) {
		list = j->next;
		j->done(j->arg);
		free(j);
	}
}

void
worker_init(struct event_base *base)
{
	size_t i;

	for (i = 0; i < nitems(pools); i++) {
		pools[i].base = base;
		pools[i].todo_tail = &pools[i].todo;
		pools[i].done_tail = &pools[i].done;
	}
}

/* worker_start - a pool's pipe, loop event and threads, on first use */
static void
worker_start(struct worker_pool *wp)
{
	int i;

	if (wp->base == NULL)
		fatalx("worker_run before worker_init");
	if (pipe(wp->pipefd) == -1)
		fatalx("worker: pipe: %s", strerror(errno));
	for (i = 0; i < 2; i++) {
		fcntl(wp->pipefd[i], F_SETFL, fcntl(wp->pipefd[i], F_GETFL) |
		    O_NONBLOCK);
		fcntl(wp->pipefd[i], F_SETFD, FD_CLOEXEC);
	}
	wp->ev = event_new(wp->base, wp->pipefd[0], EV_READ | EV_PERSIST,
	    worker_wakeup, wp);
	if (wp->ev == NULL || event_add(wp->ev, NULL) == -1)
		fatalx("worker: event_new failed");
	for (i = 0; i < WORKER_THREADS; i++)
		if (pthread_create(&wp->th[i], NULL, worker_main, wp) != 0)
			fatalx("worker: pthread_create failed");
	wp->started = 1;
}

/* worker_queue - append a job to pool wp */
static void
worker_queue(struct worker_pool *wp, worker_fn fn, void *arg,
    worker_fn done)
{
	struct worker_job *j = xcalloc(1, sizeof(*j));

	if (!wp->started)
		worker_start(wp);
	j->fn = fn;
	j->done = done;
	j->arg = arg;
	pthread_mutex_lock(&wp->mtx);
	*wp->todo_tail = j;
	wp->todo_tail = &j->next;
	pthread_cond_signal(&wp->cond);
	pthread_mutex_unlock(&wp->mtx);
}

void
worker_run(worker_fn fn, void *arg, worker_fn done)
{
	worker_queue(&pools[0], fn, arg, done);
}

void
worker_run_bulk(worker_fn fn, void *arg, worker_fn done)
{
	worker_queue(&pools[1], fn, arg, done);
}

void
worker_shutdown(void)
{
	struct worker_pool *wp;
	struct worker_job *j;
	size_t p;
	int i;

	for (p = 0; p < nitems(pools); p++) {
		wp = &pools[p];
		if (!wp->started)
			continue;
		pthread_mutex_lock(&wp->mtx);
		wp->stopping = 1;
		pthread_cond_broadcast(&wp->cond);
		pthread_mutex_unlock(&wp->mtx);
		for (i = 0; i < WORKER_THREADS; i++)
			pthread_join(wp->th[i], NULL);
		/* every job has run: its done callback, here on the main
		 * thread, releases what it holds (callers mark jobs whose
		 * owner went away, and done then only frees) */
		while ((j = wp->done) != NULL) {
			wp->done = j->next;
			j->done(j->arg);
			free(j);
		}
		event_free(wp->ev);
		close(wp->pipefd[0]);
		close(wp->pipefd[1]);
		wp->todo_tail = &wp->todo;
		wp->done_tail = &wp->done;
		wp->started = wp->stopping = 0;
	}
}
