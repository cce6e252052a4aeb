/*
 * smtp_server.h - inbound SMTP sessions (submission 587, submissions 465,
 * relay 25): one state machine in smtp_server.c. petreld.c owns the
 * listening sockets and hands each accepted connection here.
 */
#ifndef PETREL_SMTP_SERVER_H
#define PETREL_SMTP_SERVER_H

#include <event2/util.h>
#include <sys/socket.h>

enum smtp_listener {
	SMTP_LISTEN_SUBMISSION,		/* 587: STARTTLS, AUTH required */
	SMTP_LISTEN_SUBMISSIONS,	/* 465: implicit TLS, AUTH required */
	SMTP_LISTEN_RELAY		/* 25: relay networks, or AUTH after STARTTLS */
};

/* smtp_server_init - once, after env is set up */
void smtp_server_init(void);
/* smtp_server_accept - take ownership of fd (non-blocking). Applies the
 * connection caps (421 4.7.0 past max_connections / max_connections_per_ip) */
void smtp_server_accept(enum smtp_listener, evutil_socket_t fd,
    const struct sockaddr *sa, int salen);
/* smtp_server_sessions - number of open sessions */
unsigned smtp_server_sessions(void);
/* smtp_server_shutdown - SIGTERM: idle sessions get 421 4.3.2 and close,
 * sessions inside a transaction may finish it (then get 421) */
void smtp_server_shutdown(void);

#endif
