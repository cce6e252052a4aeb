/*
 * log.c - one line per event. Foreground (-d) writes to stderr with a
 * timestamp; otherwise syslog(LOG_MAIL). Lines are key=value; callers pass
 * sid= or qid= on every line.
 *
 * Once log_set_loop() names the main event loop, info and debug lines that
 * the loop's own thread writes to stderr are buffered and written together
 * at the end of the loop pass that produced them (an active event), which
 * saves a write(2) per line when many sessions log in one pass. Errors and
 * warnings, and every line from another thread, are written at once (after
 * whatever is buffered, so the order holds).
 */
#include "autoconf.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <syslog.h>
#include <time.h>
#include <pthread.h>

#include <event2/event.h>

#include "log.h"

int log_verbosity = LOG_LVL_INFO;
static int log_stderr = 1;
static pthread_mutex_t log_mtx = PTHREAD_MUTEX_INITIALIZER;
static struct event *log_flush_ev;	/* set: batching for the loop thread */
static pthread_t log_loop_thread;
static char log_buf[1 << 16];		/* stderr's buffer while batching */

/* log_flush_cb - end of a loop pass: write what the pass logged */
static void
log_flush_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	log_flush();
}

void
log_flush(void)
{
	pthread_mutex_lock(&log_mtx);
	fflush(stderr);
	pthread_mutex_unlock(&log_mtx);
}

void
log_set_loop(struct event_base *base)
{
	if (log_flush_ev != NULL) {
		event_free(log_flush_ev);
		log_flush_ev = NULL;
		log_flush();
		setvbuf(stderr, NULL, _IONBF, 0);
	}
	if (base == NULL || !log_stderr)
		return;
	if ((log_flush_ev = event_new(base, -1, 0, log_flush_cb, NULL)) ==
	    NULL)
		return;
	log_loop_thread = pthread_self();
	fflush(stderr);
	setvbuf(stderr, log_buf, _IOFBF, sizeof(log_buf));
}

void
log_init(int to_stderr, const char *ident)
{
	log_stderr = to_stderr;
	if (!to_stderr)
		openlog(ident, LOG_PID | LOG_NDELAY, LOG_MAIL);
}

void
log_set_level(int level)
{
	log_verbosity = level;
}

int
log_level_parse(const char *s)
{
	static const char *names[] = { "error", "warn", "info", "debug" };
	int i;

	for (i = 0; i < 4; i++)
		if (strcasecmp(s, names[i]) == 0)
			return i;
	if (strcasecmp(s, "warning") == 0)
		return LOG_LVL_WARN;
	return -1;
}

void
log_msg(int level, const char *fmt, ...)
{
	static const int prio[] = { LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG };
	static const char *names[] = { "error", "warn", "info", "debug" };
	char line[4096], ts[32];
	va_list ap;
	struct timespec now;
	struct tm tm;
	size_t i;

	if (level > log_verbosity && level != LOG_LVL_ERR)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	/* one event, one line: no control characters reach the log */
	for (i = 0; line[i]; i++)
		if ((unsigned char)line[i] < 0x20 || line[i] == 0x7f)
			line[i] = '?';
	if (!log_stderr) {
		syslog(prio[level], "%s", line);
		return;
	}
	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
	pthread_mutex_lock(&log_mtx);
	fprintf(stderr, "%s.%03ldZ level=%s %s\n", ts, now.tv_nsec / 1000000,
	    names[level], line);
	if (log_flush_ev != NULL && level >= LOG_LVL_INFO &&
	    pthread_equal(pthread_self(), log_loop_thread)) {
		/* written at the end of this loop pass */
		if (!event_pending(log_flush_ev, EV_TIMEOUT, NULL))
			event_active(log_flush_ev, EV_TIMEOUT, 1);
	} else
		fflush(stderr);
	pthread_mutex_unlock(&log_mtx);
}
