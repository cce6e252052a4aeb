/*
 * log.c - one line per event. Foreground (-d) writes to stderr with a
 * timestamp; otherwise syslog(LOG_MAIL). Lines are key=value; callers pass
 * sid= or qid= on every line.
 */
#include "autoconf.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <syslog.h>
#include <time.h>
#include <pthread.h>

#include "log.h"

int log_verbosity = LOG_LVL_INFO;
static int log_stderr = 1;
static pthread_mutex_t log_mtx = PTHREAD_MUTEX_INITIALIZER;

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
	fflush(stderr);
	pthread_mutex_unlock(&log_mtx);
}
