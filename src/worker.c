/*
 * worker.c - two fixed pools of threads, each taking jobs from one
 * mutex-protected list. Finished jobs go to a second list; a self-pipe
 * wakes the main event loop, which runs each job's done callback. The pipe
 * (rather than event_active from another thread) keeps this correct
 * whether or not the event base was created with libevent's locking
 * enabled. A worker writes to the pipe only when the done list was empty:
 * one wakeup of the loop collects every job finished meanwhile.
 *
 * The bulk pool (worker_run_bulk: DKIM signing and ARC sealing of mail
 * already durable in the queue) yields to the clients being answered:
 * - WORKER_THREADS threads run at SCHED_IDLE and take any job: they get
 *   the CPU only when the main loop, the queue writer and the interactive
 *   pool (AUTH password checks, admin requests) leave some;
 * - WORKER_THREADS more run at nice WORKER_BULK_NICE, but while the front
 *   ends are accepting mail (worker_bulk_hold(), renewed by every accepted
 *   message) they take only jobs that have waited WORKER_CATCHUP_MS.
 * So a burst is accepted at full speed while signing soaks up the idle
 * CPU, signing runs at an ordinary priority as soon as the burst is over,
 * and sustained load cannot hold delivery back by more than a few seconds.
 */
#include "autoconf.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "log.h"
#include "util.h"
#include "worker.h"

#define WORKER_CATCHUP_MS	10000	/* bulk job age that ends a hold */
#define WORKER_BULK_NICE	5

/* util_now_ms() until which the gated bulk threads hold back */
static _Atomic uint64_t worker_hold_until;

struct worker_job {
	worker_fn		 fn, done;
	void			*arg;
	uint64_t		 queued_ms;
	struct worker_job	*next;
};

struct worker_pool;

struct worker_thread {
	struct worker_pool	*wp;
	pthread_t		 th;
	int			 gated;		/* held while mail arrives */
};

struct worker_pool {
	const char		*name;
	int			 bulk;
	struct event_base	*base;
	struct event		*ev;
	int			 pipefd[2];
	struct worker_thread	 th[2 * WORKER_THREADS];
	int			 nth;
	int			 started, stopping;
	pthread_mutex_t		 mtx;
	pthread_cond_t		 cond;		/* a job for any thread */
	pthread_cond_t		 gate_cond;	/* a job, for gated threads */
	struct worker_job	*todo, **todo_tail;
	struct worker_job	*done, **done_tail;
};

static struct worker_pool pools[2] = {
	{ .name = "interactive", .pipefd = { -1, -1 },
	  .mtx = PTHREAD_MUTEX_INITIALIZER },
	{ .name = "bulk", .bulk = 1, .pipefd = { -1, -1 },
	  .mtx = PTHREAD_MUTEX_INITIALIZER },
};

/* worker_priority - lower the calling thread's priority for its role */
static void
worker_priority(const struct worker_thread *t)
{
	struct sched_param sp;

	if (!t->wp->bulk)
		return;
	if (t->gated) {
		/* Linux: setpriority on a thread id sets that thread alone */
		if (setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid),
		    WORKER_BULK_NICE) == -1)
			log_warn("event=worker pool=%s nice=%d error=\"%s\"",
			    t->wp->name, WORKER_BULK_NICE, strerror(errno));
		return;
	}
	memset(&sp, 0, sizeof(sp));
	if (pthread_setschedparam(pthread_self(), SCHED_IDLE, &sp) != 0 &&
	    setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 19) == -1)
		log_warn("event=worker pool=%s sched=idle error=\"%s\"",
		    t->wp->name, strerror(errno));
}

/* worker_deadline - the absolute CLOCK_MONOTONIC time ms from now */
static void
worker_deadline(struct timespec *ts, uint64_t ms)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += (time_t)(ms / 1000);
	ts->tv_nsec += (long)(ms % 1000) * 1000000;
	if (ts->tv_nsec >= 1000000000) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000;
	}
}

/* worker_take - with wp->mtx held: wait for a job thread t may run; NULL
 * once the pool is stopping and nothing is left */
static struct worker_job *
worker_take(struct worker_thread *t)
{
	struct worker_pool *wp = t->wp;
	struct worker_job *j;
	struct timespec ts;
	uint64_t now, hold, until;

	for (;;) {
		if (wp->todo == NULL && wp->stopping)
			return NULL;
		if (!t->gated) {
			if (wp->todo != NULL)
				break;
			pthread_cond_wait(&wp->cond, &wp->mtx);
			continue;
		}
		if (wp->todo == NULL) {
			pthread_cond_wait(&wp->gate_cond, &wp->mtx);
			continue;
		}
		/* gated: a job, unless mail is arriving and the job is
		 * young; then look again when either ends */
		now = util_now_ms();
		hold = atomic_load(&worker_hold_until);
		until = wp->todo->queued_ms + WORKER_CATCHUP_MS;
		if (wp->stopping || now >= hold || now >= until)
			break;
		worker_deadline(&ts, (hold < until ? hold : until) - now);
		pthread_cond_timedwait(&wp->gate_cond, &wp->mtx, &ts);
	}
	j = wp->todo;
	wp->todo = j->next;
	if (wp->todo == NULL)
		wp->todo_tail = &wp->todo;
	return j;
}

/* worker_main - a thread of a pool: take a job, run it, hand it to the
 * loop */
static void *
worker_main(void *arg)
{
	struct worker_thread *t = arg;
	struct worker_pool *wp = t->wp;
	struct worker_job *j;
	char c = 1;
	int wake;

	worker_priority(t);
	for (;;) {
		pthread_mutex_lock(&wp->mtx);
		j = worker_take(t);
		pthread_mutex_unlock(&wp->mtx);
		if (j == NULL)
			return NULL;

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
	static int conds;
	pthread_condattr_t ca;
	size_t i;

	for (i = 0; i < nitems(pools); i++) {
		if (!conds) {
			/* timed waits measure on the monotonic clock */
			pthread_condattr_init(&ca);
			pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
			pthread_cond_init(&pools[i].cond, &ca);
			pthread_cond_init(&pools[i].gate_cond, &ca);
			pthread_condattr_destroy(&ca);
		}
		pools[i].base = base;
		pools[i].todo_tail = &pools[i].todo;
		pools[i].done_tail = &pools[i].done;
	}
	conds = 1;
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
	wp->nth = wp->bulk ? 2 * WORKER_THREADS : WORKER_THREADS;
	for (i = 0; i < wp->nth; i++) {
		wp->th[i].wp = wp;
		wp->th[i].gated = i >= WORKER_THREADS;
		if (pthread_create(&wp->th[i].th, NULL, worker_main,
		    &wp->th[i]) != 0)
			fatalx("worker: pthread_create failed");
	}
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
	j->queued_ms = util_now_ms();
	pthread_mutex_lock(&wp->mtx);
	/* a gated thread sleeps until the list has a job; then it waits
	 * out holds on its own clock */
	if (wp->bulk && (wp->todo == NULL ||
	    util_now_ms() >= atomic_load(&worker_hold_until)))
		pthread_cond_signal(&wp->gate_cond);
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
worker_bulk_hold(unsigned ms)
{
	atomic_store(&worker_hold_until, util_now_ms() + ms);
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
		pthread_cond_broadcast(&wp->gate_cond);
		pthread_mutex_unlock(&wp->mtx);
		for (i = 0; i < wp->nth; i++)
			pthread_join(wp->th[i].th, NULL);
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
