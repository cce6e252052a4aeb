/*
 * log.h - one line per event, key=value, to stderr (-d) or syslog.
 * Every line should carry a session id (sid=) or queue id (qid=).
 * Verbosity is checked before formatting. Never log secrets or bodies.
 */
#ifndef PETREL_LOG_H
#define PETREL_LOG_H

#include <stdarg.h>
#include "util.h"

enum log_level { LOG_LVL_ERR = 0, LOG_LVL_WARN, LOG_LVL_INFO, LOG_LVL_DEBUG };

extern int log_verbosity;

struct event_base;

void log_init(int to_stderr, const char *ident);
/* log_set_loop - batch the info/debug lines base's thread writes to
 * stderr, one write per loop pass; NULL writes what is pending and ends
 * that. Call from the loop's thread. */
void log_set_loop(struct event_base *base);
void log_flush(void);
void log_set_level(int level);
/* parse "error|warn|info|debug" -> level, -1 when unknown */
int log_level_parse(const char *);
void log_msg(int level, const char *fmt, ...) PRINTFLIKE(2, 3);

#define log_err(...)  log_msg(LOG_LVL_ERR, __VA_ARGS__)
#define log_warn(...) do { if (log_verbosity >= LOG_LVL_WARN) log_msg(LOG_LVL_WARN, __VA_ARGS__); } while (0)
#define log_info(...) do { if (log_verbosity >= LOG_LVL_INFO) log_msg(LOG_LVL_INFO, __VA_ARGS__); } while (0)
#define log_debug(...) do { if (log_verbosity >= LOG_LVL_DEBUG) log_msg(LOG_LVL_DEBUG, __VA_ARGS__); } while (0)

#endif
