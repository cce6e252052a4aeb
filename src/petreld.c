/*
 * petreld.c - the daemon's main(): reads petrel.conf, binds the SMTP
 * listeners, opens the store, builds the TLS server context, starts the
 * queue writer, the resolver and the delivery scheduler (deliver.c), drops
 * root and runs the one event loop. Signals arrive on
 * that loop (libevent): SIGTERM/SIGINT drain the sessions and stop, SIGHUP
 * re-reads petrel.conf. Everything protocol-related is in smtp_server.c.
 */
#include "autoconf.h"

#include <sys/types.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <netinet/in.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <netdb.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/listener.h>
#include <event2/thread.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "petrel.h"
#include "deliver.h"
#include "dns.h"
#include "events.h"
#include "http_api.h"
#include "log.h"
#include "netaddr.h"
#include "metrics.h"
#include "queue.h"
#include "smtp_server.h"
#include "store.h"
#include "util.h"
#include "worker.h"
#include "verify.h"
#include "webhook.h"

#define LISTEN_BACKLOG		1024
#define SHUTDOWN_GRACE_MS	10000	/* sessions may finish this long */
#define SHUTDOWN_POLL_MS	50
#define ACCEPT_PAUSE_SECS	1	/* after EMFILE and friends */

struct listener {
	struct listener		*next;
	struct evconnlistener	*evl;
	struct event		*pause;
	enum smtp_listener	 kind;
	int			 fd;		/* bound, owned by evl once set */
	char			 addr[INET6_ADDRSTRLEN + 16];
};

/* what the running SSL_CTX was loaded from, to notice changes on SIGHUP */
struct tls_files {
	char		*cert, *key;
	struct stat	 cert_st, key_st;
};

static struct petrel petrel_env;
struct petrel *env = &petrel_env;

static struct listener *listeners;
static int nlisteners;
static struct tls_files tls_loaded;
static struct event *sig_ev[4], *drain_ev;
static uint64_t drain_deadline;
static int foreground, detached;
static struct dns *dns;			/* outbound resolution */
static struct deliver *deliver;		/* outbound scheduler */

static const char *kind_names[] = { "submission", "submissions", "relay" };

/* die - start-up failure: log it, and tell the terminal before detaching */
static void NORETURN PRINTFLIKE(1, 2)
die(const char *fmt, ...)
{
	char buf[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	log_err("%s", buf);
	if (!foreground && !detached)
		fprintf(stderr, "petreld: %s\n", buf);
	exit(1);
}

/* unquote - make s safe inside reason="..." */
static char *
unquote(char *s)
{
	char *p;

	for (p = s; p != NULL && *p; p++)
		if (*p == '"')
			*p = '\'';
	return s;
}

/* accept_cb - hand a new connection to the SMTP server */
static void
accept_cb(struct evconnlistener *evl, evutil_socket_t fd, struct sockaddr *sa,
    int salen, void *arg)
{
	struct listener *l = arg;

	if (env->stopping) {
		evutil_closesocket(fd);
		return;
	}
	smtp_server_accept(l->kind, fd, sa, salen);
}

/* accept_pause_cb - resume accepting after a pause */
static void
accept_pause_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct listener *l = arg;

	if (!env->stopping)
		evconnlistener_enable(l->evl);
}

/* accept_error_cb - accept() failed for good (EMFILE, ENOBUFS): pause
 * instead of spinning on a readable listening socket */
static void
accept_error_cb(struct evconnlistener *evl, void *arg)
{
	struct listener *l = arg;
	struct timeval tv = { ACCEPT_PAUSE_SECS, 0 };
	int e = EVUTIL_SOCKET_ERROR();

	log_warn("event=accept status=error addr=%s kind=%s reason=\"%s\"",
	    l->addr, kind_names[l->kind], strerror(e));
	evconnlistener_disable(evl);
	evtimer_add(l->pause, &tv);
}

/* listen_addr - bind one resolved address; listen() comes later, in
 * listen_start(), so that a port accepts only once petreld is ready */
static void
listen_addr(enum smtp_listener kind, const struct addrinfo *ai)
{
	struct listener *l, **tail;

	l = xcalloc(1, sizeof(*l));
	l->kind = kind;
	if ((l->fd = netaddr_bind(ai, l->addr, sizeof(l->addr))) == -1)
		die("event=listen status=error addr=%s kind=%s reason=\"cannot "
		    "bind: %s\"", l->addr, kind_names[kind], strerror(errno));
	for (tail = &listeners; *tail != NULL; tail = &(*tail)->next)
		;
	*tail = l;
	nlisteners++;
}

/* listen_start - listen on every bound socket, accepting on the loop */
static void
listen_start(void)
{
	struct listener *l;

	for (l = listeners; l != NULL; l = l->next) {
		l->evl = evconnlistener_new(env->base, accept_cb, l,
		    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, LISTEN_BACKLOG,
		    l->fd);
		if (l->evl == NULL)
			die("event=listen status=error addr=%s kind=%s reason="
			    "\"cannot listen: %s\"", l->addr,
			    kind_names[l->kind], strerror(errno));
		evconnlistener_set_error_cb(l->evl, accept_error_cb);
		l->pause = evtimer_new(env->base, accept_pause_cb, l);
		log_info("event=listen addr=%s kind=%s", l->addr,
		    kind_names[l->kind]);
	}
}

/* listen_conf - bind every HOST:PORT of one listener setting; "*" (or an
 * empty host) means every IPv4 and IPv6 address */
/* listen_addr_cb - netaddr_listen_each's fn: listen_addr for *arg */
static int
listen_addr_cb(const struct addrinfo *ai, void *arg)
{
	listen_addr(*(const enum smtp_listener *)arg, ai);
	return 0;
}

static void
listen_conf(enum smtp_listener kind, const struct conf_listen *cl)
{
	char addr[NETADDR_LISTEN_STRLEN];
	const char *why;

	if (netaddr_listen_each(cl, listen_addr_cb, &kind, addr, &why) == -1)
		die("event=listen status=error addr=%s kind=%s reason=\"%s\"",
		    addr, kind_names[kind], why);
}

/* listen_close - stop accepting: close every listening socket */
static void
listen_close(void)
{
	struct listener *l;

	while ((l = listeners) != NULL) {
		listeners = l->next;
		if (l->evl != NULL)
			evconnlistener_free(l->evl);
		else
			close(l->fd);
		if (l->pause != NULL)
			event_free(l->pause);
		free(l);
	}
}

/* tls_ctx_new - a server SSL_CTX (TLS 1.2+) from c's tls_cert/tls_key;
 * records what it loaded in *tf */
static SSL_CTX *
tls_ctx_new(const struct petrel_conf *c, struct tls_files *tf, char **err_r)
{
	SSL_CTX *ctx;
	const char *what = "tls";
	char ebuf[256];

	memset(tf, 0, sizeof(*tf));
	errno = 0;
	if ((ctx = SSL_CTX_new(TLS_server_method())) == NULL)
		goto fail;
	if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1)
		goto fail;
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION |
	    SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
	SSL_CTX_set_dh_auto(ctx, 1);
	what = "tls_cert";
	if (stat(c->tls_cert, &tf->cert_st) == -1 ||
	    SSL_CTX_use_certificate_chain_file(ctx, c->tls_cert) != 1)
		goto fail;
	what = "tls_key";
	if (stat(c->tls_key, &tf->key_st) == -1 ||
	    SSL_CTX_use_PrivateKey_file(ctx, c->tls_key, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(ctx) != 1)
		goto fail;
	tf->cert = xstrdup(c->tls_cert);
	tf->key = xstrdup(c->tls_key);
	return ctx;
fail:
	if (ERR_peek_error() != 0)
		ERR_error_string_n(ERR_get_error(), ebuf, sizeof(ebuf));
	else
		util_strlcpy(ebuf, errno ? strerror(errno) : "failed",
		    sizeof(ebuf));
	ERR_clear_error();
	*err_r = xasprintf("%s: %s: %s", what, strcmp(what, "tls_key") == 0 ?
	    c->tls_key : c->tls_cert ? c->tls_cert : "-", ebuf);
	SSL_CTX_free(ctx);
	return NULL;
}

/* tls_changed - do c's tls files differ from what is loaded? */
static int
tls_changed(const struct petrel_conf *c)
{
	struct stat cs, ks;

	if (tls_loaded.cert == NULL || strcmp(c->tls_cert, tls_loaded.cert) ||
	    strcmp(c->tls_key, tls_loaded.key))
		return 1;
	if (stat(c->tls_cert, &cs) == -1 || stat(c->tls_key, &ks) == -1)
		return 1;
#define ST_SAME(a, b) ((a).st_ino == (b).st_ino && (a).st_dev == (b).st_dev && \
	(a).st_size == (b).st_size && (a).st_mtim.tv_sec == (b).st_mtim.tv_sec && \
	(a).st_mtim.tv_nsec == (b).st_mtim.tv_nsec)
	return !ST_SAME(cs, tls_loaded.cert_st) || !ST_SAME(ks, tls_loaded.key_st);
}

/* conf_check - rules petreld adds over config_load: TLS is needed for 465
 * and a user to run as must exist */
static int
conf_check(const struct petrel_conf *c, char **err_r)
{
	if (c->listen_submissions.n > 0 && c->tls_cert == NULL) {
		*err_r = xasprintf("%s: tls_cert: required by listen_submissions "
		    "(implicit TLS)", c->path);
		return -1;
	}
	if (c->listen_https.n > 0 && c->tls_cert == NULL) {
		*err_r = xasprintf("%s: tls_cert: required by listen_https",
		    c->path);
		return -1;
	}
	if (c->user != NULL && getpwnam(c->user) == NULL) {
		*err_r = xasprintf("%s: user: unknown user \"%s\"", c->path,
		    c->user);
		return -1;
	}
	return 0;
}

/* privdrop - root gives way to `user`, else petrel, else nobody; the data
 * directory is handed over first. user = root keeps root. */
static void
privdrop(void)
{
	static const char *dbfiles[] = { ".", "data.mdb", "lock.mdb" };
	const char *name = env->conf->user, *dir = env->conf->data_dir;
	struct passwd *pw;
	char *user, *path;
	uid_t uid;
	gid_t gid;
	size_t i;

	if (geteuid() != 0) {
		pw = getpwuid(geteuid());
		if (name != NULL && (pw == NULL || strcmp(pw->pw_name, name)))
			die("event=privdrop status=error reason=\"not root: "
			    "cannot become user %s\"", name);
		log_info("event=privdrop status=skipped uid=%u reason=\"not "
		    "root\"", (unsigned)geteuid());
		return;
	}
	if (name == NULL)
		name = getpwnam("petrel") != NULL ? "petrel" : "nobody";
	if ((pw = getpwnam(name)) == NULL)
		die("event=privdrop status=error reason=\"unknown user %s\"",
		    name);
	if (pw->pw_uid == 0) {
		log_warn("event=privdrop status=skipped user=%s reason=\"user "
		    "is root: running with full privileges\"", name);
		return;
	}
	user = xstrdup(pw->pw_name);
	uid = pw->pw_uid;
	gid = pw->pw_gid;
	for (i = 0; i < nitems(dbfiles); i++) {
		path = xasprintf("%s/%s", dir, dbfiles[i]);
		if (fchownat(AT_FDCWD, path, uid, gid, AT_SYMLINK_NOFOLLOW) == -1 &&
		    errno != ENOENT)
			die("event=privdrop status=error reason=\"chown %s: "
			    "%s\"", path, strerror(errno));
		free(path);
	}
	if (initgroups(user, gid) == -1 || setresgid(gid, gid, gid) == -1 ||
	    setresuid(uid, uid, uid) == -1)
		die("event=privdrop status=error user=%s reason=\"%s\"", user,
		    strerror(errno));
	if (setuid(0) != -1 || seteuid(0) != -1 || setgid(0) != -1 ||
	    getuid() != uid || geteuid() != uid || getegid() != gid)
		die("event=privdrop status=error user=%s reason=\"root could be "
		    "regained\"", user);
	log_info("event=privdrop user=%s uid=%u gid=%u", user, (unsigned)uid,
	    (unsigned)gid);
	free(user);
}

/* listen_same - equal listener settings? */
static int
listen_same(const struct conf_listen *a, const struct conf_listen *b)
{
	int i;

	if (a->n != b->n)
		return 0;
	for (i = 0; i < a->n; i++)
		if (strcmp(a->host[i], b->host[i]) || strcmp(a->port[i],
		    b->port[i]))
			return 0;
	return 1;
}

static int
str_same(const char *a, const char *b)
{
	return (a == NULL && b == NULL) || (a && b && strcmp(a, b) == 0);
}

/* reload_fixed - settings that only a restart applies: log a difference
 * and keep the running value in nc, so env->conf describes what runs */
static void
reload_fixed(struct petrel_conf *oc, struct petrel_conf *nc)
{
#define FIXED(field, same) do {						\
	if (!(same)) {							\
		__typeof__(oc->field) tmp_ = nc->field;			\
		log_warn("event=reload key=%s status=\"needs restart\"", #field); \
		nc->field = oc->field;					\
		oc->field = tmp_;					\
	}								\
} while (0)
	FIXED(listen_submission, listen_same(&oc->listen_submission,
	    &nc->listen_submission));
	FIXED(listen_submissions, listen_same(&oc->listen_submissions,
	    &nc->listen_submissions));
	FIXED(listen_relay, listen_same(&oc->listen_relay, &nc->listen_relay));
	FIXED(listen_http, listen_same(&oc->listen_http, &nc->listen_http));
	FIXED(listen_https, listen_same(&oc->listen_https,
	    &nc->listen_https));
	FIXED(listen_metrics, listen_same(&oc->listen_metrics,
	    &nc->listen_metrics));
	FIXED(data_dir, str_same(oc->data_dir, nc->data_dir));
	FIXED(user, str_same(oc->user, nc->user));
	FIXED(store_map_size, oc->store_map_size == nc->store_map_size);
	/* read once at start-up (the ARC key before the privilege drop) */
	FIXED(arc_domain, str_same(oc->arc_domain, nc->arc_domain));
	FIXED(arc_selector, str_same(oc->arc_selector, nc->arc_selector));
	FIXED(arc_key_file, str_same(oc->arc_key_file, nc->arc_key_file));
	FIXED(admin_api_key_file, str_same(oc->admin_api_key_file,
	    nc->admin_api_key_file));
#undef FIXED
}

/* reload - SIGHUP: read the file into a new struct; on success swap it in
 * (and the TLS context when its files changed), else keep running as is */
static void
reload(void)
{
	struct petrel_conf *nc, *oc = env->conf;
	struct tls_files tf;
	SSL_CTX *ctx;
	char *err = NULL;

	nc = xcalloc(1, sizeof(*nc));
	config_init(nc);
	if (config_load(oc->path, nc, &err) == -1 ||
	    conf_check(nc, &err) == -1) {
		log_err("event=reload status=error reason=\"%s\"",
		    unquote(err));
		free(err);
		config_free(nc);
		free(nc);
		return;
	}
	reload_fixed(oc, nc);
	if (nc->tls_cert == NULL && env->ssl_server != NULL)
		log_warn("event=reload key=tls_cert status=\"needs restart\"");
	else if (nc->tls_cert != NULL && tls_changed(nc)) {
		if ((ctx = tls_ctx_new(nc, &tf, &err)) == NULL) {
			log_warn("event=reload tls=error reason=\"%s\" "
			    "action=\"keeping the running certificate\"",
			    unquote(err));
			free(err);
		} else {
			SSL_CTX_free(env->ssl_server);	/* sessions hold refs */
			env->ssl_server = ctx;
			free(tls_loaded.cert);
			free(tls_loaded.key);
			tls_loaded = tf;
			log_info("event=reload tls=reloaded cert=%s", tf.cert);
		}
	}
	env->conf = nc;
	log_set_level(nc->log_level);
	queue_set_retention(env->queue, nc->message_retention);
	config_free(oc);
	free(oc);
	log_info("event=reload status=ok conf=%s", nc->path);
}

/* drain_cb - during shutdown: stop the loop once every session has gone
 * or the grace period is over */
static void
drain_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct timeval tv = { 0, SHUTDOWN_POLL_MS * 1000 };

	if ((smtp_server_sessions() == 0 && http_api_busy() == 0) ||
	    util_now_ms() >= drain_deadline) {
		event_base_loopbreak(env->base);
		return;
	}
	evtimer_add(drain_ev, &tv);
}

/* signal_cb - SIGHUP reloads; SIGTERM/SIGINT drain and stop, a second
 * one stops at once */
static void
signal_cb(evutil_socket_t sig, short ev, void *arg)
{
	if (sig == SIGHUP) {
		reload();
		return;
	}
	if (env->stopping) {
		log_warn("event=shutdown status=forced signal=%d", (int)sig);
		event_base_loopbreak(env->base);
		return;
	}
	env->stopping = 1;
	log_info("event=shutdown status=begin signal=%s sessions=%u",
	    sig == SIGTERM ? "TERM" : "INT", smtp_server_sessions());
	listen_close();
	http_api_shutdown();
	metrics_shutdown();
	smtp_server_shutdown();
	drain_deadline = util_now_ms() + SHUTDOWN_GRACE_MS;
	drain_ev = evtimer_new(env->base, drain_cb, NULL);
	drain_cb(-1, 0, NULL);
}

/* daemonize - fork; the parent waits until the child reports ready (exit
 * 0) or dies (exit 1). Returns the child's end of the pipe. */
static int
daemonize(void)
{
	int p[2];
	ssize_t n;
	char c;

	if (pipe2(p, O_CLOEXEC) == -1)
		die("event=start status=error reason=\"pipe: %s\"",
		    strerror(errno));
	switch (fork()) {
	case -1:
		die("event=start status=error reason=\"fork: %s\"",
		    strerror(errno));
	case 0:
		close(p[0]);
		if (setsid() == -1 || chdir("/") == -1)
			die("event=start status=error reason=\"setsid/chdir: "
			    "%s\"", strerror(errno));
		return p[1];
	default:
		close(p[1]);
		while ((n = read(p[0], &c, 1)) == -1 && errno == EINTR)
			;
		_exit(n == 1 ? 0 : 1);
	}
}

/* detach - start-up done: tell the parent, stdio to /dev/null */
static void
detach(int fd)
{
	int nfd;

	if ((nfd = open("/dev/null", O_RDWR)) != -1) {
		dup2(nfd, STDIN_FILENO);
		dup2(nfd, STDOUT_FILENO);
		dup2(nfd, STDERR_FILENO);
		if (nfd > STDERR_FILENO)
			close(nfd);
	}
	detached = 1;
	if (write(fd, "1", 1) != 1)
		log_warn("event=start reason=\"cannot notify parent\"");
	close(fd);
}

static void NORETURN
usage(void)
{
	fprintf(stderr, "usage: petreld [-dn] [-c file] [-p pidfile]\n");
	exit(1);
}

/* petreld_base_new - the main loop's event base */
static struct event_base *
petreld_base_new(void)
{
	struct event_config *cfg;
	struct event_base *b;

	if ((cfg = event_config_new()) == NULL)
		return NULL;
	/* one epoll_ctl per fd and loop pass, not per event_add/del: a
	 * bufferevent adds and drops its write event around every reply */
	event_config_set_flag(cfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
	b = event_base_new_with_config(cfg);
	event_config_free(cfg);
	return b;
}

int
main(int argc, char *argv[])
{
	const char *conf_arg = PETREL_CONF_DEFAULT;
	char *conf_path, *pidfile = NULL, *err = NULL, cwd[4096];
	int ch, check = 0, ready_fd = -1;
	size_t i;
	FILE *fp;
	static const int sigs[] = { SIGTERM, SIGINT, SIGHUP };

	while ((ch = getopt(argc, argv, "c:dnp:")) != -1) {
		switch (ch) {
		case 'c': conf_arg = optarg; break;
		case 'd': foreground = 1; break;
		case 'n': check = 1; break;
		case 'p':
			/* absolute: written after chdir("/") */
			free(pidfile);
			pidfile = optarg[0] == '/' || getcwd(cwd, sizeof(cwd)) ==
			    NULL ? xstrdup(optarg) : xasprintf("%s/%s", cwd, optarg);
			break;
		default: usage();
		}
	}
	if (optind != argc)
		usage();
	/* absolute: SIGHUP re-reads it after chdir("/") */
	if ((conf_path = realpath(conf_arg, NULL)) == NULL)
		conf_path = xstrdup(conf_arg);

	env->conf = xcalloc(1, sizeof(*env->conf));
	config_init(env->conf);
	if (config_load(conf_path, env->conf, &err) == -1 ||
	    conf_check(env->conf, &err) == -1 ||
	    (check && env->conf->tls_cert != NULL &&
	    (env->ssl_server = tls_ctx_new(env->conf, &tls_loaded, &err)) ==
	    NULL)) {
		fprintf(stderr, "%s\n", err);
		free(err);
		free(conf_path);
		free(pidfile);
		return 1;
	}
	if (check) {
		SSL_CTX_free(env->ssl_server);
		free(tls_loaded.cert);
		free(tls_loaded.key);
		config_free(env->conf);
		free(env->conf);
		free(conf_path);
		free(pidfile);
		return 0;
	}

	signal(SIGPIPE, SIG_IGN);
	log_init(foreground, "petreld");
	log_set_level(env->conf->log_level);
	if (!foreground)
		ready_fd = daemonize();
	if (pidfile != NULL) {
		if ((fp = fopen(pidfile, "w")) == NULL)
			die("event=start status=error reason=\"pidfile %s: %s\"",
			    pidfile, strerror(errno));
		fprintf(fp, "%ld\n", (long)getpid());
		fclose(fp);
	}

	if (evthread_use_pthreads() == -1 ||
	    (env->base = petreld_base_new()) == NULL)
		die("event=start status=error reason=\"event base\"");
	log_set_loop(env->base);
	/* caught from here on, handled once the loop runs */
	for (i = 0; i < nitems(sigs); i++) {
		sig_ev[i] = evsignal_new(env->base, sigs[i], signal_cb, NULL);
		if (sig_ev[i] == NULL || evsignal_add(sig_ev[i], NULL) == -1)
			die("event=start status=error reason=\"signals\"");
	}
	listen_conf(SMTP_LISTEN_SUBMISSION, &env->conf->listen_submission);
	listen_conf(SMTP_LISTEN_SUBMISSIONS, &env->conf->listen_submissions);
	listen_conf(SMTP_LISTEN_RELAY, &env->conf->listen_relay);
	if (http_api_bind(&err) == -1)
		die("event=listen status=error kind=http reason=\"%s\"",
		    unquote(err));
	if (metrics_bind(&env->conf->listen_metrics, &err) == -1)
		die("event=listen status=error kind=metrics reason=\"%s\"",
		    unquote(err));
	if (store_open(env->conf->data_dir, env->conf->store_map_size,
	    &env->store, &err) == -1)
		die("event=start status=error reason=\"store %s: %s\"",
		    env->conf->data_dir, unquote(err));
	if (env->conf->tls_cert != NULL && (env->ssl_server =
	    tls_ctx_new(env->conf, &tls_loaded, &err)) == NULL)
		die("event=start status=error reason=\"%s\"", unquote(err));
	if ((env->queue = queue_new(env->store, env->base)) == NULL)
		die("event=start status=error reason=\"queue\"");
	/* delivery: the first schedule scan runs once the loop does, so
	 * messages left from an earlier run resume at once */
	if ((dns = dns_new(env->base, env->conf->resolver, &err)) == NULL)
		die("event=start status=error reason=\"resolver: %s\"",
		    unquote(err));
	if ((deliver = deliver_new(env->base, env->queue, env->store, dns,
	    &err)) == NULL)
		die("event=start status=error reason=\"delivery: %s\"",
		    unquote(err));
	/* events: retention pruning and the webhook dispatcher */
	queue_set_retention(env->queue, env->conf->message_retention);
	events_start(env->base, env->queue, env->store,
	    env->conf->event_retention);
	if (webhook_start(env->base, env->queue, env->store, dns,
	    env->conf->webhook_ca_file, &err) == -1)
		die("event=start status=error reason=\"webhooks: %s\"",
		    unquote(err));
	smtp_server_init();
	privdrop();
	listen_start();
	if (http_api_start(&err) == -1)
		die("event=listen status=error kind=http reason=\"%s\"",
		    unquote(err));
	if (metrics_start(env->base, env->store, &err) == -1)
		die("event=listen status=error kind=metrics reason=\"%s\"",
		    unquote(err));
	verify_daemon_start(env->base, env->store, &env->conf);

	log_info("event=start version=%s conf=%s listeners=%d tls=%s pid=%ld",
	    PACKAGE_VERSION, conf_path, nlisteners + http_api_listeners() +
	    metrics_listeners(),
	    env->ssl_server ? "yes" : "no", (long)getpid());
	if (ready_fd != -1)
		detach(ready_fd);

	event_base_dispatch(env->base);

	if (smtp_server_sessions() > 0)
		log_warn("event=shutdown status=timeout sessions=%u",
		    smtp_server_sessions());
	listen_close();
	verify_daemon_stop();
	/* deliver before queue and dns: its pending queue results are
	 * cancelled (still committed), its DNS requests dropped */
	deliver_free(deliver);
	/* after deliver_free cancelled its prepare jobs, before anything a
	 * job on a worker thread may still be using (store, queue, conf) */
	worker_shutdown();
	webhook_stop();		/* before dns_free: it may hold a request */
	dns_free(dns);
	queue_free(env->queue);
	events_stop();		/* after queue_free ran the prune callback */
	http_api_free();	/* after queue_free answered its requests */
	metrics_free();		/* after deliver_free unregistered */
	store_close(env->store);
	for (i = 0; i < nitems(sigs); i++)
		event_free(sig_ev[i]);
	if (drain_ev != NULL)
		event_free(drain_ev);
	log_set_loop(NULL);
	if (smtp_server_sessions() == 0)
		event_base_free(env->base);
	SSL_CTX_free(env->ssl_server);
	free(tls_loaded.cert);
	free(tls_loaded.key);
	if (pidfile != NULL)
		unlink(pidfile);	/* may fail after privdrop: harmless */
	free(pidfile);
	config_free(env->conf);
	free(env->conf);
	free(conf_path);
	log_info("event=shutdown status=ok");
	return 0;
}
