/*
 * petrel.h - the daemon's one global: configuration and long-lived handles.
 * Read-only after start-up, except conf, which SIGHUP replaces as a whole
 * on the main thread.
 */
#ifndef PETREL_PETREL_H
#define PETREL_PETREL_H

#include <openssl/ssl.h>
#include "config.h"

struct event_base;
struct store;
struct queue;

struct petrel {
	struct petrel_conf	*conf;
	struct event_base	*base;
	struct store		*store;
	struct queue		*queue;
	SSL_CTX			*ssl_server;	/* NULL when no tls_cert/tls_key */
	int			 stopping;	/* SIGTERM: no new sessions */
};

extern struct petrel *env;

#endif
