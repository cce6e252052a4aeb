/*
 * worker.c - a fixed pool of threads taking jobs from one mutex-protected
 * list. Finished jobs go to a second list; a self-pipe wakes the main event
 * loop, which runs each job's done callback. The pipe (rather than
 * event_active from another thread) keeps this correct whether or not the
 * event base was created with libevent's locking enabled.
 */
#include "autoconf.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
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

static struct {
	struct event_base	*base;
	struct event		*ev;
	int			 pipefd[2];
	pthread_t		 th[WORKER_THREADS];
	int			 started, stopping;
	pthread_mutex_t		 mtx;
	pthread_cond_t		 cond;
	struct worker_job	*todo, **todo_tail;
	struct worker_job	*done, **done_tail;
} w = {
	.pipefd = { -1, -1 },
	.mtx = PTHREAD_MUTEX_INITIALIZER,
	.cond = PTHREAD_COND_INITIALIZER,
};

/* worker_main - a thread: take a job, run it, hand it to the loop */
static void *
worker_main(void *unused)
{
	struct worker_job *j;
	char c = 1;

	(void)unused;
	for (;;) {
		pthread_mutex_lock(&w.mtx);
		while (w.todo == NULL && !w.stopping)
			pthread_cond_wait(&w.cond, &w.mtx);
		if (w.stopping) {
			pthread_mutex_unlock(&w.mtx);
			return NULL;
		}
		j = w.todo;
		w.todo = j->next;
		if (w.todo == NULL)
			w.todo_tail = &w.todo;
		pthread_mutex_unlock(&w.mtx);

		j->fn(j->arg);

		pthread_mutex_lock(&w.mtx);
		j->next = NULL;
		*w.done_tail = j;
		w.done_tail = &j->next;
		pthread_mutex_unlock(&w.mtx);
		while (write(w.pipefd[1], &c, 1) == -1 && errno == EINTR)
			;
	}
}

/* worker_wakeup - main loop: run the done callbacks of finished jobs */
static void
worker_wakeup(evutil_socket_t fd, short what, void *unused)
{
	struct worker_job *list, *j;
	char buf[64];

	(void)what;
	(void)unused;
	while (read(fd, buf, sizeof(buf)) > 0)
		;
	pthread_mutex_lock(&w.mtx);
	list = w.done;
	w.done = NULL;
	w.done_tail = &w.done;
	pthread_mutex_unlock(&w.mtx);
	while ((j = list) != NULL) {
		list = j->next;
		j->done(j->arg);
		free(j);
	}
}

void
worker_init(struct event_base *base)
{
	w.base = base;
	w.todo_tail = &w.todo;
	w.done_tail = &w.done;
}

/* worker_start - pipe, loop event and threads, on first use */
static void
worker_start(void)
{
	int i;

	if (w.base == NULL)
		fatalx("worker_run before worker_init");
	if (pipe(w.pipefd) == -1)
		fatalx("worker: pipe: %s", strerror(errno));
	for (i = 0; i < 2; i++) {
		fcntl(w.pipefd[i], F_SETFL, fcntl(w.pipefd[i], F_GETFL) |
		    O_NONBLOCK);
		fcntl(w.pipefd[i], F_SETFD, FD_CLOEXEC);
	}
	w.ev = event_new(w.base, w.pipefd[0], EV_READ | EV_PERSIST,
	    worker_wakeup, NULL);
	if (w.ev == NULL || event_add(w.ev, NULL) == -1)
		fatalx("worker: event_new failed");
	for (i = 0; i < WORKER_THREADS; i++)
		if (pthread_create(&w.th[i], NULL, worker_main, NULL) != 0)
			fatalx("worker: pthread_create failed");
	w.started = 1;
}

void
worker_run(worker_fn fn, void *arg, worker_fn done)
{
	struct worker_job *j = xcalloc(1, sizeof(*j));

	if (!w.started)
		worker_start();
	j->fn = fn;
	j->done = done;
	j->arg = arg;
	pthread_mutex_lock(&w.mtx);
	*w.todo_tail = j;
	w.todo_tail = &j->next;
	pthread_cond_signal(&w.cond);
	pthread_mutex_unlock(&w.mtx);
}

void
worker_shutdown(void)
{
	struct worker_job *j;
	int i;

	if (!w.started)
		return;
	pthread_mutex_lock(&w.mtx);
	w.stopping = 1;
	pthread_cond_broadcast(&w.cond);
	pthread_mutex_unlock(&w.mtx);
	for (i = 0; i < WORKER_THREADS; i++)
		pthread_join(w.th[i], NULL);
	event_free(w.ev);
	close(w.pipefd[0]);
	close(w.pipefd[1]);
	while ((j = w.todo) != NULL) {
		w.todo = j->next;
		free(j);
	}
	while ((j = w.done) != NULL) {
		w.done = j->next;
		free(j);
	}
	w.todo_tail = &w.todo;
	w.done_tail = &w.done;
	w.started = w.stopping = 0;
}
