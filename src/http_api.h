/*
 * http_api.h - the HTTP API: the Azure Communication Services Email REST
 * API (POST /emails:send, GET /emails/operations/{id}) on libevent's
 * evhttp, over TLS (listen_https) and plain HTTP (listen_http, for a local
 * reverse proxy), with ACS access-key authentication (HMAC-SHA256 or
 * Bearer; keys from apikey.c), and with admin_api_key_file the operator's
 * admin API under /admin/ (admin.c, on worker threads).
 *
 * Life cycle, called by petreld.c in its start-up order:
 *   http_api_bind()      while root: bind the listening sockets
 *   http_api_start()     after the privilege drop: listen, serve
 *   http_api_shutdown()  SIGTERM: stop accepting (requests in progress
 *                        finish)
 *   http_api_free()      after queue_free(): release everything
 */
#ifndef PETREL_HTTP_API_H
#define PETREL_HTTP_API_H

/* http_api_bind - bind listen_https and listen_http of env->conf; -1 and
 * *err_r (malloc'd) on failure. Nothing to do when both are off. */
int http_api_bind(char **err_r);
/* http_api_start - serve on env->base; -1 and *err_r on failure */
int http_api_start(char **err_r);
/* http_api_shutdown - close the listening sockets */
void http_api_shutdown(void);
/* http_api_busy - requests waiting for the queue's commit */
unsigned http_api_busy(void);
/* http_api_free - free the servers (open connections are closed) */
void http_api_free(void);
/* http_api_listeners - number of bound sockets */
int http_api_listeners(void);

#endif
