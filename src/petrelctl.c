/*
 * petrelctl.c - the administration tool. It reads petrel.conf, opens the
 * same LMDB environment as petreld (store_*) and changes or lists tenants,
 * users, sender domains, relay networks and allowed senders, and reads the
 * queue (queue_list_json, queue_show_json). A running petreld sees every
 * committed change at its next read transaction: no restart, no signal.
 *
 * Every command is one row of ctl_cmds: {noun, verb, min args, max args,
 * handler, usage}. main() parses the global options (-c CONF, --json,
 * -h), finds the row, checks the argument count, loads the configuration,
 * opens the store and runs the handler. Exit status: 0 done, 1 failure
 * (message on stderr), 2 usage error (message and usage line on stderr).
 */
#include "autoconf.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "admin.h"
#include "apikey.h"
#include "config.h"
#include "domain.h"
#include "events.h"
#include "limits.h"
#include "log.h"
#include "netaddr.h"
#include "queue.h"
#include "store.h"
#include "suppress.h"
#include "util.h"
#include "verify.h"
#include "webhook.h"

#define CTL_EXIT_OK	0
#define CTL_EXIT_FAIL	1
#define CTL_EXIT_USAGE	2

#define CTL_JSON	0x01	/* the command accepts --json */

struct ctl {
	const char		*conf_path;
	struct petrel_conf	 conf;
	struct store		*store;
	int			 json;
};

struct ctl_cmd {
	const char	*noun;
	const char	*verb;
	int		 min_args;
	int		 max_args;
	int		(*handler)(struct ctl *, int, char **);
	const char	*usage;		/* arguments after noun and verb */
	int		 flags;
	const char	*descr;
};

static int ctl_tenant_add(struct ctl *, int, char **);
static int ctl_tenant_list(struct ctl *, int, char **);
static int ctl_tenant_del(struct ctl *, int, char **);
static int ctl_user_add(struct ctl *, int, char **);
static int ctl_user_del(struct ctl *, int, char **);
static int ctl_user_list(struct ctl *, int, char **);
static int ctl_domain_add(struct ctl *, int, char **);
static int ctl_domain_add_managed(struct ctl *, int, char **);
static int ctl_domain_list(struct ctl *, int, char **);
static int ctl_domain_show(struct ctl *, int, char **);
static int ctl_domain_set_verified(struct ctl *, int, char **);
static int ctl_domain_del(struct ctl *, int, char **);
static int ctl_domain_verify(struct ctl *, int, char **);
static int ctl_domain_rotate_dkim(struct ctl *, int, char **);
static int ctl_network_add(struct ctl *, int, char **);
static int ctl_network_list(struct ctl *, int, char **);
static int ctl_network_del(struct ctl *, int, char **);
static int ctl_sender_add(struct ctl *, int, char **);
static int ctl_sender_list(struct ctl *, int, char **);
static int ctl_sender_del(struct ctl *, int, char **);
static int ctl_queue_list(struct ctl *, int, char **);
static int ctl_message_show(struct ctl *, int, char **);
static int ctl_apikey_add(struct ctl *, int, char **);
static int ctl_apikey_list(struct ctl *, int, char **);
static int ctl_apikey_del(struct ctl *, int, char **);
static int ctl_queue_flush(struct ctl *, int, char **);
static int ctl_message_delete(struct ctl *, int, char **);
static int ctl_domain_set(struct ctl *, int, char **);
static int ctl_suppression_list(struct ctl *, int, char **);
static int ctl_suppression_add(struct ctl *, int, char **);
static int ctl_suppression_del(struct ctl *, int, char **);
static int ctl_webhook_add(struct ctl *, int, char **);
static int ctl_webhook_list(struct ctl *, int, char **);
static int ctl_webhook_del(struct ctl *, int, char **);
static int ctl_log_search(struct ctl *, int, char **);

static const struct ctl_cmd ctl_cmds[] = {
	{ "tenant", "add", 1, 1, ctl_tenant_add, "NAME", 0,
	    "create a tenant" },
	{ "tenant", "list", 0, 0, ctl_tenant_list, "[--json]", CTL_JSON,
	    "list tenants" },
	{ "tenant", "del", 1, 1, ctl_tenant_del, "NAME", 0,
	    "delete a tenant with its users, domains, networks, API keys, "
	    "suppressions and webhooks" },
	{ "user", "add", 2, 2, ctl_user_add, "TENANT USERNAME < password", 0,
	    "create a SMTP AUTH user; password: one line on stdin" },
	{ "user", "del", 2, 2, ctl_user_del, "TENANT USERNAME", 0,
	    "delete a user" },
	{ "user", "list", 1, 1, ctl_user_list, "TENANT [--json]", CTL_JSON,
	    "list the users of a tenant" },
	{ "domain", "add", 2, 2, ctl_domain_add, "TENANT DOMAIN", 0,
	    "add a custom sender domain and print its DNS records" },
	{ "domain", "add-managed", 1, 1, ctl_domain_add_managed, "TENANT", 0,
	    "add a verified domain under managed_zone" },
	{ "domain", "list", 0, 1, ctl_domain_list, "[TENANT] [--json]",
	    CTL_JSON, "list domains, of one tenant or all" },
	{ "domain", "show", 1, 1, ctl_domain_show, "DOMAIN [--json]",
	    CTL_JSON, "show a domain with its DNS records" },
	{ "domain", "set-verified", 1, 1, ctl_domain_set_verified, "DOMAIN", 0,
	    "mark a domain and all its records verified (override)" },
	{ "domain", "del", 1, 1, ctl_domain_del, "DOMAIN", 0,
	    "delete a domain" },
	{ "domain", "verify", 1, 1, ctl_domain_verify, "DOMAIN", 0,
	    "look up a domain's DNS records and verify them (exit 0: verified)" },
	{ "domain", "rotate-dkim", 1, 1, ctl_domain_rotate_dkim, "DOMAIN", 0,
	    "new DKIM keys under new selectors; active once their records "
	    "verify" },
	{ "domain", "set", 3, 3, ctl_domain_set, "DOMAIN KEY VALUE", 0,
	    "change a domain setting: unsubscribe on|off (RFC 8058 "
	    "List-Unsubscribe), tracking_opens on|off, tracking_clicks "
	    "on|off (engagement tracking)" },
	{ "network", "add", 2, 2, ctl_network_add, "TENANT CIDR", 0,
	    "allow relaying from a network for a tenant" },
	{ "network", "list", 0, 0, ctl_network_list, "[--json]", CTL_JSON,
	    "list relay networks" },
	{ "network", "del", 1, 1, ctl_network_del, "CIDR", 0,
	    "delete a relay network" },
	{ "sender", "add", 2, 2, ctl_sender_add, "DOMAIN LOCALPART", 0,
	    "restrict a domain to listed local parts, adding one" },
	{ "sender", "list", 1, 1, ctl_sender_list, "DOMAIN [--json]",
	    CTL_JSON, "list the allowed local parts (none: any)" },
	{ "sender", "del", 2, 2, ctl_sender_del, "DOMAIN LOCALPART", 0,
	    "remove an allowed local part" },
	{ "queue", "list", 0, 0, ctl_queue_list, "[--json]", CTL_JSON,
	    "list queued messages" },
	{ "queue", "flush", 0, 0, ctl_queue_flush, "", 0,
	    "retry every deferred message now (petreld notices within "
	    "a second)" },
	{ "message", "show", 1, 1, ctl_message_show, "QUEUEID [--json]",
	    CTL_JSON, "show a queued message and its recipients" },
	{ "message", "delete", 1, 1, ctl_message_delete, "QUEUEID", 0,
	    "remove a message and all its records from the queue" },
	{ "apikey", "add", 1, 2, ctl_apikey_add, "TENANT [NAME]", 0,
	    "create an HTTP API access key; prints its connection string once" },
	{ "apikey", "list", 1, 1, ctl_apikey_list, "TENANT [--json]", CTL_JSON,
	    "list the access keys of a tenant (names only)" },
	{ "apikey", "del", 2, 2, ctl_apikey_del, "TENANT NAME", 0,
	    "delete an access key" },
	{ "suppression", "list", 1, 1, ctl_suppression_list, "TENANT [--json]",
	    CTL_JSON, "list the addresses a tenant no longer delivers to" },
	{ "suppression", "add", 2, 3, ctl_suppression_add,
	    "TENANT ADDRESS [REASON]", 0,
	    "stop delivering to an address (status suppressed, no DSN)" },
	{ "suppression", "del", 2, 2, ctl_suppression_del, "TENANT ADDRESS", 0,
	    "deliver to an address again" },
	{ "webhook", "add", 2, 4, ctl_webhook_add,
	    "TENANT URL [--events TYPE,...]", 0,
	    "POST the tenant's events to URL; prints the signing secret once" },
	{ "webhook", "list", 1, 1, ctl_webhook_list, "TENANT [--json]",
	    CTL_JSON, "list the webhooks of a tenant (no secrets)" },
	{ "webhook", "del", 2, 2, ctl_webhook_del, "TENANT ID", 0,
	    "delete a webhook" },
	{ "log", "search", 2, 8, ctl_log_search,
	    "--message-id ID | --qid QUEUEID | --recipient ADDR [--tenant T] "
	    "[--json]",
	    CTL_JSON, "a message's or recipient's events, in order" },
};

/* ctl_err - "petrelctl: message" on stderr */
static void PRINTFLIKE(1, 2)
ctl_err(const char *fmt, ...)
{
	va_list ap;

	fputs("petrelctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* ctl_fail - report a malloc'd error from a store or domain function */
static int
ctl_fail(char *err, const char *fallback)
{
	ctl_err("%s", err != NULL ? err : fallback);
	free(err);
	return CTL_EXIT_FAIL;
}

/* ctl_usage_line - one usage line for cmd to fp */
static void
ctl_usage_line(FILE *fp, const struct ctl_cmd *cmd)
{
	fprintf(fp, "usage: petrelctl [-c conf] %s %s%s%s\n", cmd->noun,
	    cmd->verb, cmd->usage[0] != '\0' ? " " : "", cmd->usage);
}

/* ctl_usage_all - every command with its description */
static void
ctl_usage_all(FILE *fp, const char *noun)
{
	size_t i;
	int n;

	if (noun == NULL)
		fprintf(fp, "usage: petrelctl [-c conf] [-h] NOUN VERB "
		    "[ARGS] [--json]\n\ncommands:\n");
	for (i = 0; i < nitems(ctl_cmds); i++) {
		const struct ctl_cmd *c = &ctl_cmds[i];

		if (noun != NULL) {
			if (strcmp(noun, c->noun) == 0)
				ctl_usage_line(fp, c);
			continue;
		}
		n = fprintf(fp, "  %s %s %s", c->noun, c->verb, c->usage);
		fprintf(fp, "%*s  %s\n", n < 44 ? 44 - n : 0, "", c->descr);
	}
	if (noun == NULL)
		fprintf(fp, "\ndefault configuration: %s\n",
		    PETREL_CONF_DEFAULT);
}

/* ctl_print_json - indented JSON and a newline on stdout */
static void
ctl_print_json(const json_t *j)
{
	json_dumpf(j, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	fputc('\n', stdout);
}

/* ctl_str - string member or def; never NULL */
static const char *
ctl_str(const json_t *o, const char *key, const char *def)
{
	const char *s = json_string_value(json_object_get(o, key));

	return s != NULL ? s : def;
}

/* ctl_fmt_time - a stored time (unix seconds or text) as UTC text */
static void
ctl_fmt_time(const json_t *v, char *buf, size_t len)
{
	struct tm tm;
	time_t t;

	if (json_is_integer(v) && json_integer_value(v) > 0) {
		t = (time_t)json_integer_value(v);
		if (gmtime_r(&t, &tm) != NULL &&
		    strftime(buf, len, "%Y-%m-%d %H:%M:%SZ", &tm) > 0)
			return;
	} else if (json_is_string(v)) {
		char *s = util_sanitize(json_string_value(v), 64);

		util_strlcpy(buf, s, len);
		free(s);
		return;
	}
	util_strlcpy(buf, "-", len);
}

/* ctl_print_names - a list of {key,"created"} objects as JSON (--json)
 * or as a two-column table headed by what; consumes list */
static int
ctl_print_names(struct ctl *ctl, json_t *list, const char *what,
    const char *key)
{
	const json_t *o;
	char when[64];
	size_t i;

	if (ctl->json)
		ctl_print_json(list);
	else {
		printf("%-32s %s\n", what, "CREATED");
		json_array_foreach(list, i, o) {
			ctl_fmt_time(json_object_get(o, "created"), when,
			    sizeof(when));
			printf("%-32s %s\n", ctl_str(o, key, "?"), when);
		}
	}
	json_decref(list);
	return CTL_EXIT_OK;
}

/* ctl_fmt_duration - seconds as "45s", "12m", "3h", "2d" */
static void
ctl_fmt_duration(long long secs, char *buf, size_t len)
{
	if (secs < 0)
		secs = 0;
	if (secs < 120)
		snprintf(buf, len, "%llds", secs);
	else if (secs < 2 * 3600)
		snprintf(buf, len, "%lldm", secs / 60);
	else if (secs < 2 * 86400)
		snprintf(buf, len, "%lldh", secs / 3600);
	else
		snprintf(buf, len, "%lldd", secs / 86400);
}

/* ctl_fmt_next - a next-attempt time relative to now */
static void
ctl_fmt_next(const json_t *v, char *buf, size_t len)
{
	long long t, now = (long long)util_now();
	char d[32];

	if (!json_is_integer(v) || json_integer_value(v) <= 0) {
		util_strlcpy(buf, "-", len);
		return;
	}
	t = json_integer_value(v);
	if (t <= now) {
		util_strlcpy(buf, "now", len);
		return;
	}
	ctl_fmt_duration(t - now, d, sizeof(d));
	snprintf(buf, len, "in %s", d);
}

/* ctl_domain_arg - normalise a DOMAIN argument into out; with note set,
 * say so when an IDN was converted to its A-label */
static int
ctl_domain_arg(const char *in, char out[DOMAIN_MAX_LEN + 1], int note)
{
	const char *err = NULL;
	const unsigned char *p;
	char *safe;

	if (domain_normalize(in, out, DOMAIN_MAX_LEN + 1, &err) == -1) {
		safe = util_sanitize(in, DOMAIN_MAX_LEN + 1);
		ctl_err("invalid domain \"%s\": %s", safe,
		    err != NULL ? err : "malformed");
		free(safe);
		return -1;
	}
	if (note) {
		for (p = (const unsigned char *)in; *p != '\0'; p++)
			if (*p >= 0x80)
				break;
		if (*p != '\0')
			printf("note: internationalized domain %s converted "
			    "to punycode (A-label) %s\n", in, out);
	}
	return 0;
}

/* ctl_tenant_check - 0 when tenant exists, else a message and -1 */
static int
ctl_tenant_check(struct ctl *ctl, const char *tenant)
{
	const char *err;
	char *safe;

	if (store_valid_name(tenant, &err) == -1 ||
	    store_tenant_exists(ctl->store, tenant) <= 0) {
		safe = util_sanitize(tenant, NAME_MAX_LEN + 1);
		ctl_err("unknown tenant: %s", safe);
		free(safe);
		return -1;
	}
	return 0;
}

/* ctl_domain_get - the stored record of a DOMAIN argument, or NULL with
 * a message */
static json_t *
ctl_domain_get(struct ctl *ctl, const char *arg, char name[DOMAIN_MAX_LEN + 1])
{
	json_t *rec;

	if (ctl_domain_arg(arg, name, 0) == -1)
		return NULL;
	if ((rec = store_domain_get(ctl->store, name)) == NULL)
		ctl_err("unknown domain: %s", name);
	return rec;
}

/* ctl_read_password - one line from stdin into buf (PASSWORD_MAX_LEN + 1
 * bytes) without echo; trailing CR/LF removed. 0 or -1 with *err_r. */
static int
ctl_read_password(char *buf, size_t size, const char **err_r)
{
	struct termios old, quiet;
	int tty, c, restore = 0;
	size_t n = 0, total = 0;

	tty = isatty(STDIN_FILENO);
	if (tty && tcgetattr(STDIN_FILENO, &old) == 0) {
		quiet = old;
		quiet.c_lflag &= ~(tcflag_t)ECHO;
		quiet.c_lflag |= ECHONL;
		if (tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet) == 0)
			restore = 1;
		fputs("password: ", stderr);
		fflush(stderr);
	}
	/* read the whole line, keeping what fits, counting all of it */
	while ((c = getchar()) != EOF && c != '\n') {
		if (n + 1 < size)
			buf[n++] = (char)c;
		total++;
	}
	buf[n] = '\0';
	if (restore)
		tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
	/* a final CR belongs to the line ending, not to the password */
	if (total > 0 && total == n && buf[n - 1] == '\r') {
		buf[--n] = '\0';
		total--;
	}
	if (total > PASSWORD_MAX_LEN || total > n) {
		*err_r = "password too long";
		return -1;
	}
	if (n == 0) {
		*err_r = "empty password (give it as one line on stdin)";
		return -1;
	}
	if (memchr(buf, '\0', n) != NULL || memchr(buf, '\r', n) != NULL) {
		*err_r = "password contains a NUL or CR byte";
		return -1;
	}
	return 0;
}

/* ctl_valid_localpart - dot-atom local part of at most LOCALPART_MAX_LEN */
static int
ctl_valid_localpart(const char *s, const char **err_r)
{
	static const char atext[] = "abcdefghijklmnopqrstuvwxyz"
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~";
	size_t n = strlen(s), i;

	if (n == 0 || n > LOCALPART_MAX_LEN) {
		*err_r = "local part must be 1 to 64 characters";
		return -1;
	}
	if (s[0] == '.' || s[n - 1] == '.' || strstr(s, "..") != NULL) {
		*err_r = "local part has a misplaced dot";
		return -1;
	}
	for (i = 0; i < n; i++)
		if (s[i] != '.' && (s[i] == '\0' ||
		    strchr(atext, s[i]) == NULL)) {
			*err_r = "local part has a character outside "
			    "RFC 5322 dot-atom";
			return -1;
		}
	return 0;
}

/* --- tenants --- */

static int
ctl_tenant_add(struct ctl *ctl, int argc, char **argv)
{
	json_t *r;
	char *err = NULL;

	if ((r = admin_tenant_add(ctl->store, argv[0], NULL, &err)) == NULL)
		return ctl_fail(err, "cannot add tenant");
	json_decref(r);
	printf("tenant %s added\n", argv[0]);
	return CTL_EXIT_OK;
}

static int
ctl_tenant_list(struct ctl *ctl, int argc, char **argv)
{
	return ctl_print_names(ctl, admin_tenant_list(ctl->store), "TENANT",
	    "name");
}

static int
ctl_tenant_del(struct ctl *ctl, int argc, char **argv)
{
	char *err = NULL;

	if (ctl_tenant_check(ctl, argv[0]) == -1)
		return CTL_EXIT_FAIL;
	if (admin_tenant_del(ctl->store, argv[0], NULL, &err) == -1)
		return ctl_fail(err, "cannot delete tenant");
	printf("tenant %s deleted with its users, domains, networks, API "
	    "keys, suppressions and webhooks\n", argv[0]);
	return CTL_EXIT_OK;
}

/* --- users --- */

static int
ctl_user_add(struct ctl *ctl, int argc, char **argv)
{
	char pw[PASSWORD_MAX_LEN + 2], *err = NULL;
	const char *perr = NULL;
	json_t *r;

	if (ctl_tenant_check(ctl, argv[0]) == -1)
		return CTL_EXIT_FAIL;
	if (ctl_read_password(pw, sizeof(pw), &perr) == -1) {
		explicit_bzero(pw, sizeof(pw));
		ctl_err("%s", perr);
		return CTL_EXIT_FAIL;
	}
	r = admin_user_add(ctl->store, argv[0], argv[1], pw, NULL, &err);
	explicit_bzero(pw, sizeof(pw));
	if (r == NULL)
		return ctl_fail(err, "cannot add user");
	json_decref(r);
	printf("user %s added to tenant %s\n", argv[1], argv[0]);
	return CTL_EXIT_OK;
}

static int
ctl_user_del(struct ctl *ctl, int argc, char **argv)
{
	char *err = NULL;

	if (admin_user_del(ctl->store, argv[0], argv[1], NULL, &err) == -1)
		return ctl_fail(err, "cannot delete user");
	printf("user %s deleted from tenant %s\n", argv[1], argv[0]);
	return CTL_EXIT_OK;
}

static int
ctl_user_list(struct ctl *ctl, int argc, char **argv)
{
	json_t *list;
	char *err = NULL;

	if ((list = admin_user_list(ctl->store, argv[0], NULL, &err)) == NULL)
		return ctl_fail(err, "cannot list users");
	return ctl_print_names(ctl, list, "USER", "user");
}

/* --- domains --- */

static int
ctl_domain_add(struct ctl *ctl, int argc, char **argv)
{
	char name[DOMAIN_MAX_LEN + 1], *err = NULL;
	json_t *rec;

	if (ctl_tenant_check(ctl, argv[0]) == -1)
		return CTL_EXIT_FAIL;
	if (ctl_domain_arg(argv[1], name, 1) == -1)
		return CTL_EXIT_FAIL;
	if ((rec = store_domain_get(ctl->store, name)) != NULL) {
		ctl_err("domain %s already exists (tenant %s)", name,
		    ctl_str(rec, "tenant", "?"));
		json_decref(rec);
		return CTL_EXIT_FAIL;
	}
	if ((rec = domain_new(&ctl->conf, argv[0], name, 0, &err)) == NULL)
		return ctl_fail(err, "cannot create domain");
	if (store_domain_add(ctl->store, rec, &err) == -1) {
		json_decref(rec);
		return ctl_fail(err, "cannot add domain");
	}
	printf("domain %s added for tenant %s (status %s)\n"
	    "publish these DNS records:\n", name, argv[0],
	    ctl_str(rec, "status", "pending"));
	domain_print_records(rec, stdout);
	json_decref(rec);
	return CTL_EXIT_OK;
}

static int
ctl_domain_add_managed(struct ctl *ctl, int argc, char **argv)
{
	char name[DOMAIN_MAX_LEN + 1], *err = NULL;
	json_t *rec;

	if (ctl_tenant_check(ctl, argv[0]) == -1)
		return CTL_EXIT_FAIL;
	domain_managed_name(&ctl->conf, name, sizeof(name));
	if ((rec = domain_new(&ctl->conf, argv[0], name, 1, &err)) == NULL)
		return ctl_fail(err, "cannot create domain");
	if (store_domain_add(ctl->store, rec, &err) == -1) {
		json_decref(rec);
		return ctl_fail(err, "cannot add domain");
	}
	printf("domain %s %s (managed) for tenant %s\n", name,
	    ctl_str(rec, "status", "verified"), argv[0]);
	printf("records (published by the operator of %s):\n",
	    ctl->conf.managed_zone != NULL ? ctl->conf.managed_zone : "?");
	domain_print_records(rec, stdout);
	json_decref(rec);
	return CTL_EXIT_OK;
}

static int
ctl_domain_list(struct ctl *ctl, int argc, char **argv)
{
	json_t *list, *d;
	char *err = NULL;
	size_t i;

	if ((list = admin_domain_list(ctl->store, argc > 0 ? argv[0] : NULL,
	    NULL, &err)) == NULL)
		return ctl_fail(err, "cannot list domains");
	if (ctl->json)
		ctl_print_json(list);
	else {
		printf("%-40s %-20s %-8s %s\n", "DOMAIN", "TENANT", "KIND",
		    "STATUS");
		json_array_foreach(list, i, d)
			printf("%-40s %-20s %-8s %s\n",
			    ctl_str(d, "domain", "?"),
			    ctl_str(d, "tenant", "?"),
			    ctl_str(d, "kind", "?"),
			    ctl_str(d, "status", "?"));
	}
	json_decref(list);
	return CTL_EXIT_OK;
}

static int
ctl_domain_show(struct ctl *ctl, int argc, char **argv)
{
	char name[DOMAIN_MAX_LEN + 1], when[64];
	json_t *rec, *view, *v;
	size_t i;

	if ((rec = ctl_domain_get(ctl, argv[0], name)) == NULL)
		return CTL_EXIT_FAIL;
	view = admin_domain_view(rec);
	if (ctl->json)
		ctl_print_json(view);
	else {
		printf("domain:  %s\n", ctl_str(view, "domain", "?"));
		printf("tenant:  %s\n", ctl_str(view, "tenant", "?"));
		printf("kind:    %s\n", ctl_str(view, "kind", "?"));
		printf("status:  %s\n", ctl_str(view, "status", "?"));
		ctl_fmt_time(json_object_get(view, "checked_at"), when,
		    sizeof(when));
		printf("checked: %s\n", when);
		printf("senders:");
		if (json_array_size(json_object_get(view, "senders")) == 0)
			printf(" (any local part)");
		json_array_foreach(json_object_get(view, "senders"), i, v)
			printf(" %s", json_string_value(v) ?
			    json_string_value(v) : "?");
		printf("\nrecords:\n");
		domain_print_records(rec, stdout);
	}
	json_decref(view);
	json_decref(rec);
	return CTL_EXIT_OK;
}

static int
ctl_domain_set_verified(struct ctl *ctl, int argc, char **argv)
{
	char name[DOMAIN_MAX_LEN + 1], *err = NULL;
	json_t *rec, *r;
	size_t i;

	if ((rec = ctl_domain_get(ctl, argv[0], name)) == NULL)
		return CTL_EXIT_FAIL;
	json_object_set_new(rec, "status", json_string("verified"));
	json_array_foreach(json_object_get(rec, "records"), i, r)
		json_object_set_new(r, "status", json_string("verified"));
	json_object_set_new(rec, "checked_at", json_integer(util_now()));
	if (store_domain_put(ctl->store, rec, &err) == -1) {
		json_decref(rec);
		return ctl_fail(err, "cannot update domain");
	}
	json_decref(rec);
	printf("domain %s verified (operator override)\n", name);
	return CTL_EXIT_OK;
}

static int
ctl_domain_del(struct ctl *ctl, int argc, char **argv)
{
	char name[DOMAIN_MAX_LEN + 1], *err = NULL;
	json_t *rec;

	if ((rec = ctl_domain_get(ctl, argv[0], name)) == NULL)
		return CTL_EXIT_FAIL;
	json_decref(rec);
	if (store_domain_del(ctl->store, name, &err) == -1)
		return ctl_fail(err, "cannot delete domain");
	printf("domain %s deleted\n", name);
	return CTL_EXIT_OK;
}

/* ctl_domain_verify - look the records up through the configured
 * resolver, store each record's status and the domain's (verify.c) */
static int
ctl_domain_verify(struct ctl *ctl, int argc, char **argv)
{
	char name[DOMAIN_MAX_LEN + 1], *err = NULL;
	struct verify_run *run;
	json_t *rec;
	int rc;

	if ((rec = ctl_domain_get(ctl, argv[0], name)) == NULL)
		return CTL_EXIT_FAIL;
	if (strcmp(ctl_str(rec, "kind", ""), "managed") == 0) {
		printf("domain %s is managed: verified at once (its records "
		    "are served by the operator under %s); status %s\n", name,
		    ctl->conf.managed_zone != NULL ? ctl->conf.managed_zone :
		    "managed_zone", ctl_str(rec, "status", "?"));
		rc = strcmp(ctl_str(rec, "status", ""), "verified") == 0 ?
		    CTL_EXIT_OK : CTL_EXIT_FAIL;
		json_decref(rec);
		return rc;
	}
	printf("verifying %s through %s\n", name, ctl->conf.resolver != NULL ?
	    ctl->conf.resolver : "the system resolver (resolv.conf)");
	fflush(stdout);
	run = verify_domain_sync(ctl->store, &ctl->conf, rec, &err);
	json_decref(rec);
	if (run == NULL)
		return ctl_fail(err, "verification failed");
	verify_run_print(run, stdout);
	rc = strcmp(verify_run_status(run), "verified") == 0 ? CTL_EXIT_OK :
	    CTL_EXIT_FAIL;
	verify_run_free(run);
	return rc;
}

/* ctl_domain_rotate_dkim - add pending keys under new selectors; the
 * active keys keep signing until domain verify (or petreld) sees the new
 * records and promotes them */
static int
ctl_domain_rotate_dkim(struct ctl *ctl, int argc, char **argv)
{
	char name[DOMAIN_MAX_LEN + 1], *err = NULL, *sels = NULL, *t;
	json_t *rec, *k, *r, *view, *recs;
	size_t i, nold;

	if ((rec = ctl_domain_get(ctl, argv[0], name)) == NULL)
		return CTL_EXIT_FAIL;
	if (strcmp(ctl_str(rec, "kind", ""), "managed") == 0) {
		json_decref(rec);
		ctl_err("domain %s is managed: its DKIM records are published "
		    "by the operator of managed_zone", name);
		return CTL_EXIT_FAIL;
	}
	json_array_foreach(json_object_get(rec, "keys"), i, k)
		if (strcmp(ctl_str(k, "state", ""), "pending") == 0) {
			ctl_err("domain %s: a rotation is already pending "
			    "(selector %s): publish its records and run "
			    "petrelctl domain verify %s", name,
			    ctl_str(k, "selector", "?"), name);
			json_decref(rec);
			return CTL_EXIT_FAIL;
		}
	nold = json_array_size(json_object_get(rec, "keys"));
	if (domain_add_keys(rec, "pending", &err) == -1) {
		json_decref(rec);
		return ctl_fail(err, "cannot generate keys");
	}
	domain_rebuild_records(&ctl->conf, rec);
	if (store_domain_put(ctl->store, rec, &err) == -1) {
		json_decref(rec);
		return ctl_fail(err, "cannot update domain");
	}
	/* the new keys' records only */
	recs = json_array();
	for (i = nold; i < json_array_size(json_object_get(rec, "keys")); i++) {
		const char *sel;
		size_t j;

		k = json_array_get(json_object_get(rec, "keys"), i);
		sel = ctl_str(k, "selector", "?");
		t = xasprintf("%s%s%s", sels != NULL ? sels : "",
		    sels != NULL ? ", " : "", sel);
		free(sels);
		sels = t;
		json_array_foreach(json_object_get(rec, "records"), j, r) {
			const char *n = ctl_str(r, "name", "");

			if (strncmp(n, sel, strlen(sel)) == 0 &&
			    strncmp(n + strlen(sel), "._domainkey.", 12) == 0)
				json_array_append(recs, r);
		}
	}
	printf("new DKIM keys for %s under selectors %s (pending)\n"
	    "the active keys keep signing until these records verify "
	    "(petrelctl domain verify %s, or petreld's periodic check);\n"
	    "then the new keys become active and the old ones retired\n",
	    name, sels != NULL ? sels : "?", name);
	view = json_pack("{s:s, s:s, s:o}", "domain", name, "status",
	    ctl_str(rec, "status", "?"), "records", recs);
	domain_print_records(view, stdout);
	json_decref(view);
	free(sels);
	json_decref(rec);
	return CTL_EXIT_OK;
}

/* --- relay networks --- */

static int
ctl_network_add(struct ctl *ctl, int argc, char **argv)
{
	json_t *r;
	char *err = NULL;

	if ((r = admin_network_add(ctl->store, argv[0], argv[1], NULL,
	    &err)) == NULL)
		return ctl_fail(err, "cannot add network");
	printf("network %s added for tenant %s\n", ctl_str(r, "cidr", "?"),
	    argv[0]);
	json_decref(r);
	return CTL_EXIT_OK;
}

static int
ctl_network_list(struct ctl *ctl, int argc, char **argv)
{
	json_t *list = admin_network_list(ctl->store), *n;
	size_t i;

	if (ctl->json)
		ctl_print_json(list);
	else {
		printf("%-44s %s\n", "NETWORK", "TENANT");
		json_array_foreach(list, i, n)
			printf("%-44s %s\n", ctl_str(n, "cidr", "?"),
			    ctl_str(n, "tenant", "?"));
	}
	json_decref(list);
	return CTL_EXIT_OK;
}

static int
ctl_network_del(struct ctl *ctl, int argc, char **argv)
{
	char cidr[64], *err = NULL;

	if (admin_cidr_arg(argv[0], cidr, sizeof(cidr), NULL, &err) == -1 ||
	    admin_network_del(ctl->store, cidr, NULL, &err) == -1)
		return ctl_fail(err, "cannot delete network");
	printf("network %s deleted\n", cidr);
	return CTL_EXIT_OK;
}

/* --- allowed senders --- */

static int
ctl_sender_add(struct ctl *ctl, int argc, char **argv)
{
	char name[DOMAIN_MAX_LEN + 1], *err = NULL;
	const char *lerr;
	json_t *rec;

	if ((rec = ctl_domain_get(ctl, argv[0], name)) == NULL)
		return CTL_EXIT_FAIL;
	json_decref(rec);
	if (ctl_valid_localpart(argv[1], &lerr) == -1) {
		ctl_err("invalid local part: %s", lerr);
		return CTL_EXIT_FAIL;
	}
	if (store_sender_add(ctl->store, name, argv[1], &err) == -1)
		return ctl_fail(err, "cannot add sender");
	printf("sender %s@%s allowed\n", argv[1], name);
	return CTL_EXIT_OK;
}

static int
ctl_sender_list(struct ctl *ctl, int argc, char **argv)
{
	char name[DOMAIN_MAX_LEN + 1];
	json_t *rec, *senders, *v;
	size_t i;

	if ((rec = ctl_domain_get(ctl, argv[0], name)) == NULL)
		return CTL_EXIT_FAIL;
	senders = json_object_get(rec, "senders");
	if (ctl->json) {
		if (json_is_array(senders))
			ctl_print_json(senders);
		else {
			senders = json_array();
			ctl_print_json(senders);
			json_decref(senders);
		}
	} else if (json_array_size(senders) == 0)
		printf("any local part may send from %s\n", name);
	else
		json_array_foreach(senders, i, v)
			printf("%s@%s\n", json_string_value(v) ?
			    json_string_value(v) : "?", name);
	json_decref(rec);
	return CTL_EXIT_OK;
}

static int
ctl_sender_del(struct ctl *ctl, int argc, char **argv)
{
	char name[DOMAIN_MAX_LEN + 1], *err = NULL;
	json_t *rec;

	if ((rec = ctl_domain_get(ctl, argv[0], name)) == NULL)
		return CTL_EXIT_FAIL;
	json_decref(rec);
	if (store_sender_del(ctl->store, name, argv[1], &err) == -1)
		return ctl_fail(err, "cannot delete sender");
	printf("sender %s@%s removed\n", argv[1], name);
	return CTL_EXIT_OK;
}

/* --- queue --- */

/* ctl_fmt_size - bytes as "950", "12K", "3M" */
static void
ctl_fmt_size(json_int_t n, char *buf, size_t len)
{
	if (n < 10 * 1024)
		snprintf(buf, len, "%lld", (long long)n);
	else if (n < 10 * 1024 * 1024)
		snprintf(buf, len, "%lldK", (long long)(n / 1024));
	else
		snprintf(buf, len, "%lldM", (long long)(n / (1024 * 1024)));
}

static int
ctl_queue_list(struct ctl *ctl, int argc, char **argv)
{
	json_t *list = queue_list_json(ctl->store), *m;
	char size[32], age[32], next[48], *from, *tenant;
	const char *mf;
	size_t i;

	if (list == NULL)
		list = json_array();
	if (ctl->json) {
		ctl_print_json(list);
		json_decref(list);
		return CTL_EXIT_OK;
	}
	printf("%-14s %-16s %-32s %5s %6s %5s %s\n", "ID", "TENANT", "SENDER",
	    "RCPTS", "SIZE", "AGE", "NEXT");
	json_array_foreach(list, i, m) {
		mf = ctl_str(m, "mail_from", "");
		from = util_sanitize(mf[0] != '\0' ? mf : "<>", ADDRESS_MAX_LEN);
		tenant = util_sanitize(ctl_str(m, "tenant", "?"), NAME_MAX_LEN);
		ctl_fmt_size(json_integer_value(json_object_get(m, "size")),
		    size, sizeof(size));
		ctl_fmt_duration(json_integer_value(json_object_get(m, "age")),
		    age, sizeof(age));
		ctl_fmt_next(json_object_get(m, "next_attempt"), next,
		    sizeof(next));
		printf("%-14s %-16s %-32s %5lld %6s %5s %s\n",
		    ctl_str(m, "id", "?"), tenant, from,
		    (long long)json_integer_value(json_object_get(m, "nrcpts")),
		    size, age, next);
		free(from);
		free(tenant);
	}
	printf("%zu message%s\n", json_array_size(list),
	    json_array_size(list) == 1 ? "" : "s");
	json_decref(list);
	return CTL_EXIT_OK;
}

/* ctl_reply_text - a recipient's last_reply ("" or {"code","enhanced",
 * "text"}) as one sanitised line, malloc'd */
static char *
ctl_reply_text(const json_t *lr)
{
	char *t, *out;

	if (json_is_string(lr))
		return util_sanitize(json_string_value(lr), 512);
	if (!json_is_object(lr))
		return xstrdup("");
	t = util_sanitize(ctl_str(lr, "text", ""), 512);
	out = xasprintf("%lld%s%s %s",
	    (long long)json_integer_value(json_object_get(lr, "code")),
	    ctl_str(lr, "enhanced", "")[0] ? " " : "",
	    ctl_str(lr, "enhanced", ""), t);
	free(t);
	for (t = out; *t; t++)
		if (*t == '"')
			*t = '\'';
	return out;
}

/* ctl_show_field - "label: value" with control bytes replaced */
static void
ctl_show_field(const char *label, const json_t *o, const char *key)
{
	char *s = util_sanitize(ctl_str(o, key, "-"), 1024);

	printf("%-12s %s\n", label, s);
	free(s);
}

static int
ctl_message_show(struct ctl *ctl, int argc, char **argv)
{
	char qid[QUEUE_ID_LEN + 1], when[64], next[48], *addr, *reply;
	json_t *m, *r;
	size_t i;

	/* queue ids are upper-case base32; the alphabet is queue.c's, which
	 * also rejects what does not decode */
	if (strlen(argv[0]) != QUEUE_ID_LEN) {
		ctl_err("invalid queue id: expected %d base32 characters",
		    QUEUE_ID_LEN);
		return CTL_EXIT_FAIL;
	}
	for (i = 0; i < QUEUE_ID_LEN; i++) {
		char c = argv[0][i];

		if (c >= 'a' && c <= 'z')
			c = (char)(c - 'a' + 'A');
		if (!((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))) {
			ctl_err("invalid queue id: expected %d base32 "
			    "characters", QUEUE_ID_LEN);
			return CTL_EXIT_FAIL;
		}
		qid[i] = c;
	}
	qid[QUEUE_ID_LEN] = '\0';
	if ((m = queue_show_json(ctl->store, qid)) == NULL) {
		ctl_err("no such message: %s", qid);
		return CTL_EXIT_FAIL;
	}
	if (ctl->json) {
		ctl_print_json(m);
		json_decref(m);
		return CTL_EXIT_OK;
	}
	ctl_show_field("id:", m, "id");
	ctl_show_field("tenant:", m, "tenant");
	addr = util_sanitize(ctl_str(m, "mail_from", ""), ADDRESS_MAX_LEN);
	printf("%-12s <%s>\n", "mail from:", addr);
	free(addr);
	ctl_show_field("header from:", m, "header_from");
	ctl_show_field("message-id:", m, "message_id");
	printf("%-12s %lld\n", "size:",
	    (long long)json_integer_value(json_object_get(m, "size")));
	ctl_fmt_time(json_object_get(m, "received_at"), when, sizeof(when));
	printf("%-12s %s\n", "received:", when);
	ctl_show_field("stage:", m, "stage");
	printf("recipients:\n");
	json_array_foreach(json_object_get(m, "recipients"), i, r) {
		addr = util_sanitize(ctl_str(r, "address", "?"),
		    ADDRESS_MAX_LEN);
		reply = ctl_reply_text(json_object_get(r, "last_reply"));
		ctl_fmt_next(json_object_get(r, "next_attempt"), next,
		    sizeof(next));
		printf("  %-40s %-10s attempts=%lld next=%s%s%s%s%s%s\n", addr,
		    ctl_str(r, "status", "?"),
		    (long long)json_integer_value(json_object_get(r,
		    "attempts")), next, reply[0] != '\0' ? " reply=\"" : "",
		    reply, reply[0] != '\0' ? "\"" : "",
		    json_is_string(json_object_get(json_object_get(r,
		    "last_reply"), "category")) ? " category=" : "",
		    ctl_str(json_object_get(r, "last_reply"), "category", ""));
		free(addr);
		free(reply);
	}
	json_decref(m);
	return CTL_EXIT_OK;
}

/* ctl_qid_arg - a queue id argument (any case) into qid, or a message */
static int
ctl_qid_arg(const char *arg, char qid[QUEUE_ID_LEN + 1])
{
	size_t i;

	if (strlen(arg) != QUEUE_ID_LEN)
		goto bad;
	for (i = 0; i < QUEUE_ID_LEN; i++)
		qid[i] = (arg[i] >= 'a' && arg[i] <= 'z') ?
		    (char)(arg[i] - 'a' + 'A') : arg[i];
	qid[QUEUE_ID_LEN] = '\0';
	if (queue_id_valid(qid) == 0)
		return 0;
bad:
	ctl_err("invalid queue id: expected %d base32 characters",
	    QUEUE_ID_LEN);
	return -1;
}

static int
ctl_queue_flush(struct ctl *ctl, int argc, char **argv)
{
	char *err = NULL;
	long n;

	if ((n = queue_flush(ctl->store, &err)) < 0)
		return ctl_fail(err, "cannot flush the queue");
	printf("%ld message%s due now\n", n, n == 1 ? "" : "s");
	return CTL_EXIT_OK;
}

static int
ctl_message_delete(struct ctl *ctl, int argc, char **argv)
{
	char qid[QUEUE_ID_LEN + 1], *err = NULL;

	if (ctl_qid_arg(argv[0], qid) == -1)
		return CTL_EXIT_FAIL;
	if (queue_delete(ctl->store, qid, &err) == -1)
		return ctl_fail(err, "cannot delete the message");
	/* the mail log records it too (syslog, as petreld does) */
	log_init(0, "petrelctl");
	log_set_level(LOG_LVL_INFO);
	log_msg(LOG_LVL_INFO, "qid=%s event=deleted by=petrelctl uid=%u", qid,
	    (unsigned)getuid());
	log_set_level(LOG_LVL_WARN);
	log_init(1, "petrelctl");
	printf("deleted %s\n", qid);
	return CTL_EXIT_OK;
}

/* --- HTTP API access keys (apikey.c) --- */

static int
ctl_apikey_add(struct ctl *ctl, int argc, char **argv)
{
	char *err = NULL, *name = NULL, *key = NULL, *ep;

	if (apikey_add(ctl->store, argv[0], argc > 1 ? argv[1] : NULL, &name,
	    &key, &err) == -1)
		return ctl_fail(err, "cannot add api key");
	ep = apikey_endpoint(&ctl->conf);
	printf("api key %s added for tenant %s; its connection string "
	    "(shown only now):\nendpoint=%s;accesskey=%s\n", name, argv[0],
	    ep, key);
	if ((ctl->conf.apikey_endpoint == NULL ||
	    ctl->conf.apikey_endpoint[0] == '\0') &&
	    ctl->conf.listen_https.n == 0 && ctl->conf.listen_http.n == 0)
		fprintf(stderr, "petrelctl: note: neither listen_https nor "
		    "listen_http is set, so petreld serves no HTTP API yet; "
		    "the endpoint above is a guess. Once it listens, use its "
		    "address with the same accesskey (or set "
		    "apikey_endpoint).\n");
	explicit_bzero(key, strlen(key));
	free(key);
	free(name);
	free(ep);
	return CTL_EXIT_OK;
}

static int
ctl_apikey_list(struct ctl *ctl, int argc, char **argv)
{
	json_t *list;
	char *err = NULL;

	if ((list = apikey_list(ctl->store, argv[0], &err)) == NULL)
		return ctl_fail(err, "cannot list api keys");
	return ctl_print_names(ctl, list, "NAME", "name");
}

static int
ctl_apikey_del(struct ctl *ctl, int argc, char **argv)
{
	char *err = NULL;

	if (apikey_del(ctl->store, argv[0], argv[1], &err) == -1)
		return ctl_fail(err, "cannot delete api key");
	printf("api key %s of tenant %s deleted\n", argv[1], argv[0]);
	return CTL_EXIT_OK;
}

/* --- domain settings --- */

/* settings `domain set` may change: key, JSON type (only booleans so
 * far, written on|off, yes|no, true|false, 1|0) */
static const char *const ctl_domain_keys[] = { "unsubscribe",
	"tracking_opens", "tracking_clicks" };

/* ctl_bool_arg - on|off and friends; 1, 0 or -1 */
static int
ctl_bool_arg(const char *v)
{
	static const char *const on[] = { "on", "yes", "true", "1" };
	static const char *const off[] = { "off", "no", "false", "0" };
	size_t i;

	for (i = 0; i < nitems(on); i++)
		if (strcasecmp(v, on[i]) == 0)
			return 1;
	for (i = 0; i < nitems(off); i++)
		if (strcasecmp(v, off[i]) == 0)
			return 0;
	return -1;
}

static int
ctl_domain_set(struct ctl *ctl, int argc, char **argv)
{
	char name[DOMAIN_MAX_LEN + 1], *err = NULL, *safe;
	json_t *rec;
	size_t i;
	int b;

	for (i = 0; i < nitems(ctl_domain_keys); i++)
		if (strcmp(argv[1], ctl_domain_keys[i]) == 0)
			break;
	if (i == nitems(ctl_domain_keys)) {
		safe = util_sanitize(argv[1], 64);
		ctl_err("unknown domain setting: %s (known: unsubscribe, "
		    "tracking_opens, tracking_clicks)", safe);
		free(safe);
		return CTL_EXIT_FAIL;
	}
	if ((b = ctl_bool_arg(argv[2])) == -1) {
		ctl_err("%s: expected on or off", argv[1]);
		return CTL_EXIT_FAIL;
	}
	if ((rec = ctl_domain_get(ctl, argv[0], name)) == NULL)
		return CTL_EXIT_FAIL;
	if (strncmp(argv[1], "tracking_", 9) == 0) {
		/* "tracking": {"opens": bool, "clicks": bool} (tracking.h) */
		if (!json_is_object(json_object_get(rec, "tracking")))
			json_object_set_new(rec, "tracking", json_object());
		json_object_set_new(json_object_get(rec, "tracking"),
		    argv[1] + 9, json_boolean(b));
	} else
		json_object_set_new(rec, argv[1], json_boolean(b));
	if (store_domain_put(ctl->store, rec, &err) == -1) {
		json_decref(rec);
		return ctl_fail(err, "cannot update domain");
	}
	json_decref(rec);
	printf("domain %s: %s %s\n", name, argv[1], b ? "on" : "off");
	return CTL_EXIT_OK;
}

/* --- suppression list (suppress.c) --- */

static int
ctl_suppression_list(struct ctl *ctl, int argc, char **argv)
{
	json_t *list, *e;
	char when[64], *addr, *reason;
	size_t i;

	if (ctl_tenant_check(ctl, argv[0]) == -1)
		return CTL_EXIT_FAIL;
	list = suppress_list(ctl->store, argv[0]);
	if (ctl->json) {
		ctl_print_json(list);
		json_decref(list);
		return CTL_EXIT_OK;
	}
	printf("%-40s %-11s %-12s %-20s %s\n", "ADDRESS", "SOURCE", "CATEGORY",
	    "CREATED", "REASON");
	json_array_foreach(list, i, e) {
		addr = util_sanitize(ctl_str(e, "address", "?"),
		    ADDRESS_MAX_LEN);
		reason = util_sanitize(ctl_str(e, "reason", ""),
		    SUPPRESS_REASON_MAX);
		ctl_fmt_time(json_object_get(e, "created"), when, sizeof(when));
		printf("%-40s %-11s %-12s %-20s %s\n", addr,
		    ctl_str(e, "source", "?"), ctl_str(e, "category", "-"), when,
		    reason);
		free(addr);
		free(reason);
	}
	printf("%zu address%s\n", json_array_size(list),
	    json_array_size(list) == 1 ? "" : "es");
	json_decref(list);
	return CTL_EXIT_OK;
}

static int
ctl_suppression_add(struct ctl *ctl, int argc, char **argv)
{
	char *err = NULL;

	if (ctl_tenant_check(ctl, argv[0]) == -1)
		return CTL_EXIT_FAIL;
	if (suppress_add(ctl->store, argv[0], argv[1], argc > 2 ? argv[2] :
	    NULL, NULL, "manual", NULL, &err) == -1)
		return ctl_fail(err, "cannot add the address");
	printf("%s suppressed for tenant %s\n", argv[1], argv[0]);
	return CTL_EXIT_OK;
}

static int
ctl_suppression_del(struct ctl *ctl, int argc, char **argv)
{
	char *err = NULL;

	if (ctl_tenant_check(ctl, argv[0]) == -1)
		return CTL_EXIT_FAIL;
	if (suppress_del(ctl->store, argv[0], argv[1], &err) == -1)
		return ctl_fail(err, "cannot remove the address");
	printf("%s no longer suppressed for tenant %s\n", argv[1], argv[0]);
	return CTL_EXIT_OK;
}

/* --- webhooks and the event log (webhook.c, events.c) --- */

/* ctl_opt_value - value of a command option "--name V" or "--name=V" in
 * argv (passed through by main), NULL when absent; *used_r counts the
 * argv slots the options took */
static const char *
ctl_opt_value(int argc, char **argv, const char *name, int *used_r)
{
	size_t n = strlen(name);
	int i;

	for (i = 0; i < argc; i++) {
		if (strncmp(argv[i], name, n) != 0)
			continue;
		if (argv[i][n] == '=') {
			(*used_r)++;
			return argv[i] + n + 1;
		}
		if (argv[i][n] == '\0' && i + 1 < argc) {
			*used_r += 2;
			return argv[i + 1];
		}
	}
	return NULL;
}

static int
ctl_webhook_add(struct ctl *ctl, int argc, char **argv)
{
	const char *types;
	char *id = NULL, *secret = NULL, *err = NULL;
	int used = 0;

	types = ctl_opt_value(argc - 2, argv + 2, "--events", &used);
	if (used != argc - 2) {
		ctl_err("webhook add: unexpected arguments after URL");
		return CTL_EXIT_USAGE;
	}
	if (ctl_tenant_check(ctl, argv[0]) == -1)
		return CTL_EXIT_FAIL;
	if (webhook_add(ctl->store, argv[0], argv[1], types, &id, &secret,
	    &err) == -1)
		return ctl_fail(err, "cannot add the webhook");
	printf("webhook %s added for tenant %s\n", id, argv[0]);
	printf("signing secret (shown only now): %s\n", secret);
	printf("verify: X-Petrel-Signature = \"sha256=\" hex(HMAC-SHA256("
	    "secret, X-Petrel-Timestamp \".\" body))\n");
	free(id);
	free(secret);
	return CTL_EXIT_OK;
}

static int
ctl_webhook_list(struct ctl *ctl, int argc, char **argv)
{
	json_t *list, *w, *v;
	char *url, ev[256];
	size_t i, j;

	(void)argc;
	if (ctl_tenant_check(ctl, argv[0]) == -1)
		return CTL_EXIT_FAIL;
	list = webhook_list(ctl->store, argv[0]);
	if (ctl->json) {
		ctl_print_json(list);
		json_decref(list);
		return CTL_EXIT_OK;
	}
	if (json_array_size(list) == 0)
		printf("no webhooks for tenant %s\n", argv[0]);
	json_array_foreach(list, i, w) {
		ev[0] = '\0';
		json_array_foreach(json_object_get(w, "events"), j, v) {
			if (ev[0] != '\0')
				util_strlcpy(ev + strlen(ev), ",",
				    sizeof(ev) - strlen(ev));
			util_strlcpy(ev + strlen(ev), json_string_value(v) ?
			    json_string_value(v) : "?", sizeof(ev) - strlen(ev));
		}
		url = util_sanitize(ctl_str(w, "url", "?"), 2048);
		printf("%s  %s  events=%s  cursor=%lld  created=%s\n",
		    ctl_str(w, "id", "?"), url, ev[0] ? ev : "all",
		    (long long)json_integer_value(json_object_get(w, "cursor")),
		    ctl_str(w, "created", "-"));
		free(url);
	}
	json_decref(list);
	return CTL_EXIT_OK;
}

static int
ctl_webhook_del(struct ctl *ctl, int argc, char **argv)
{
	char *err = NULL;

	(void)argc;
	if (ctl_tenant_check(ctl, argv[0]) == -1)
		return CTL_EXIT_FAIL;
	if (webhook_del(ctl->store, argv[0], argv[1], &err) == -1)
		return ctl_fail(err, "cannot delete the webhook");
	printf("webhook %s deleted\n", argv[1]);
	return CTL_EXIT_OK;
}

static int
ctl_log_search(struct ctl *ctl, int argc, char **argv)
{
	const char *mid, *qid, *rcpt, *tenant;
	json_t *list, *ev;
	char *line;
	size_t i;
	int used = 0;

	mid = ctl_opt_value(argc, argv, "--message-id", &used);
	qid = ctl_opt_value(argc, argv, "--qid", &used);
	rcpt = ctl_opt_value(argc, argv, "--recipient", &used);
	tenant = ctl_opt_value(argc, argv, "--tenant", &used);
	if (used != argc || (mid == NULL && qid == NULL && rcpt == NULL)) {
		ctl_err("log search: give --message-id ID, --qid QUEUEID or "
		    "--recipient ADDR");
		return CTL_EXIT_USAGE;
	}
	list = events_search(ctl->store, mid, qid, rcpt, tenant);
	if (ctl->json) {
		ctl_print_json(list);
		json_decref(list);
		return CTL_EXIT_OK;
	}
	if (json_array_size(list) == 0)
		printf("no events found\n");
	json_array_foreach(list, i, ev) {
		line = events_format_line(ev);
		printf("%s\n", line);
		free(line);
	}
	json_decref(list);
	return CTL_EXIT_OK;
}

/* --- main --- */

/* ctl_cmd_opt - options that belong to a command (with a value): main
 * hands them to the handler as arguments */
static int
ctl_cmd_opt(const char *a)
{
	static const char *const opts[] = {
		"--events", "--message-id", "--qid", "--recipient", "--tenant"
	};
	size_t i, n;

	for (i = 0; i < nitems(opts); i++) {
		n = strlen(opts[i]);
		if (strncmp(a, opts[i], n) == 0 &&
		    (a[n] == '\0' || a[n] == '='))
			return 1;
	}
	return 0;
}

/* ctl_find - the row for noun verb, NULL when none */
static const struct ctl_cmd *
ctl_find(const char *noun, const char *verb)
{
	size_t i;

	for (i = 0; i < nitems(ctl_cmds); i++)
		if (strcmp(ctl_cmds[i].noun, noun) == 0 &&
		    strcmp(ctl_cmds[i].verb, verb) == 0)
			return &ctl_cmds[i];
	return NULL;
}

/* ctl_known_noun - 1 when some row has this noun */
static int
ctl_known_noun(const char *noun)
{
	size_t i;

	for (i = 0; i < nitems(ctl_cmds); i++)
		if (strcmp(ctl_cmds[i].noun, noun) == 0)
			return 1;
	return 0;
}

int
main(int argc, char **argv)
{
	const struct ctl_cmd *cmd;
	struct ctl ctl;
	char **pos, *err = NULL;
	int i, npos = 0, help = 0, dashdash = 0, rc;

	memset(&ctl, 0, sizeof(ctl));
	ctl.conf_path = PETREL_CONF_DEFAULT;
	log_init(1, "petrelctl");
	log_set_level(LOG_LVL_WARN);

	/* options may appear anywhere; "--" ends them */
	pos = xcalloc((size_t)argc + 1, sizeof(*pos));
	for (i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (dashdash || a[0] != '-' || a[1] == '\0') {
			pos[npos++] = argv[i];
		} else if (strcmp(a, "--") == 0) {
			dashdash = 1;
		} else if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) {
			if (i + 1 >= argc) {
				ctl_err("option %s needs a file name", a);
				ctl_usage_all(stderr, NULL);
				free(pos);
				return CTL_EXIT_USAGE;
			}
			ctl.conf_path = argv[++i];
		} else if (strncmp(a, "-c", 2) == 0) {
			ctl.conf_path = a + 2;
		} else if (strncmp(a, "--config=", 9) == 0) {
			ctl.conf_path = a + 9;
		} else if (strcmp(a, "--json") == 0) {
			ctl.json = 1;
		} else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
			help = 1;
		} else if (ctl_cmd_opt(a)) {
			/* the command's own option, with its value */
			pos[npos++] = argv[i];
			if (strchr(a, '=') == NULL && i + 1 < argc)
				pos[npos++] = argv[++i];
		} else {
			ctl_err("unknown option: %s", a);
			ctl_usage_all(stderr, NULL);
			free(pos);
			return CTL_EXIT_USAGE;
		}
	}

	if (help) {
		if (npos >= 2 && (cmd = ctl_find(pos[0], pos[1])) != NULL) {
			ctl_usage_line(stdout, cmd);
			printf("  %s\n", cmd->descr);
		} else if (npos >= 1 && ctl_known_noun(pos[0]))
			ctl_usage_all(stdout, pos[0]);
		else
			ctl_usage_all(stdout, NULL);
		free(pos);
		return CTL_EXIT_OK;
	}
	if (npos < 2) {
		if (npos == 1 && ctl_known_noun(pos[0])) {
			ctl_err("%s: missing command", pos[0]);
			ctl_usage_all(stderr, pos[0]);
		} else {
			if (npos == 0)
				ctl_err("missing command");
			else
				ctl_err("unknown command: %s", pos[0]);
			ctl_usage_all(stderr, NULL);
		}
		free(pos);
		return CTL_EXIT_USAGE;
	}
	if ((cmd = ctl_find(pos[0], pos[1])) == NULL) {
		ctl_err("unknown command: %s %s", pos[0], pos[1]);
		ctl_usage_all(stderr, ctl_known_noun(pos[0]) ? pos[0] : NULL);
		free(pos);
		return CTL_EXIT_USAGE;
	}
	if (npos - 2 < cmd->min_args || npos - 2 > cmd->max_args) {
		ctl_err("%s %s: %s arguments", cmd->noun, cmd->verb,
		    npos - 2 < cmd->min_args ? "missing" : "too many");
		ctl_usage_line(stderr, cmd);
		free(pos);
		return CTL_EXIT_USAGE;
	}
	if (ctl.json && !(cmd->flags & CTL_JSON)) {
		ctl_err("%s %s: --json is not supported", cmd->noun, cmd->verb);
		ctl_usage_line(stderr, cmd);
		free(pos);
		return CTL_EXIT_USAGE;
	}

	config_init(&ctl.conf);
	if (config_load(ctl.conf_path, &ctl.conf, &err) == -1) {
		ctl_err("%s", err != NULL ? err : ctl.conf_path);
		free(err);
		config_free(&ctl.conf);
		free(pos);
		return CTL_EXIT_FAIL;
	}
	if (store_open(ctl.conf.data_dir, ctl.conf.store_map_size, &ctl.store,
	    &err) == -1) {
		ctl_err("cannot open store in %s: %s", ctl.conf.data_dir,
		    err != NULL ? err : "unknown error");
		free(err);
		config_free(&ctl.conf);
		free(pos);
		return CTL_EXIT_FAIL;
	}

	rc = cmd->handler(&ctl, npos - 2, pos + 2);
	if (rc == CTL_EXIT_USAGE)	/* a handler's own argument check */
		ctl_usage_line(stderr, cmd);
	if (fflush(stdout) == EOF || ferror(stdout)) {
		ctl_err("write error on stdout: %s", strerror(errno));
		rc = CTL_EXIT_FAIL;
	}

	store_close(ctl.store);
	config_free(&ctl.conf);
	free(pos);
	return rc;
}
