/*
 * smtpc_probe.c - command-line driver of the outbound SMTP client for
 * tests/integration/test_smtp_client.py. Connects to HOST PORT, sends the
 * message in FILE from FROM to each RCPT (COUNT times over the same
 * connection when it stays reusable) and prints in a stable text form:
 *
 *   connect status=ok|connect|refused|protocol|tls tls=0|1 tls_failed=0|1
 *       ext=PIPELINING,SIZE,... size=N code=NNN enh=X.Y.Z|- text="..."
 *   msg N rcpt=<ADDR> outcome=delivered|bounced|deferred code=NNN
 *       enh=X.Y.Z|- local=0|1 text="..."          (one line per recipient)
 *   msg N done reusable=0|1 tls=0|1
 *   msg N skipped                                 (connection not reusable)
 *   end
 *
 * Usage: smtpc_probe [-t MS] [-T none|may|verify] [-C CAFILE]
 *   [-S SERVERNAME] [-H HELO] [-b SRCADDR] [-n COUNT] [-U] [-P] [-K]
 *   [-L LINES] [-v] HOST PORT FROM FILE RCPT...
 * -t: every timeout in milliseconds; -U: the message needs SMTPUTF8
 * whatever its bytes say; -P: no pipelining; -K: no CHUNKING (DATA);
 * -L: max lines per reply. FROM "-" is the null sender. Exit 0 when the
 * run completed (whatever the outcomes), 2 on usage or set-up errors.
 */
#include "autoconf.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "log.h"
#include "smtp_client.h"
#include "util.h"

static struct smtpc_msg msg;
static int count = 1, sent;

static void
usage(void)
{
	fprintf(stderr, "usage: smtpc_probe [-t MS] [-T none|may|verify] "
	    "[-C CAFILE] [-S SERVERNAME] [-H HELO] [-b SRCADDR] [-n COUNT] "
	    "[-U] [-P] [-K] [-L LINES] [-v] HOST PORT FROM FILE RCPT...\n");
	exit(2);
}

/* probe_addr - numeric address and port into ss */
static socklen_t
probe_addr(const char *host, int port, struct sockaddr_storage *ss)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

	memset(ss, 0, sizeof(*ss));
	if (inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)port);
		return sizeof(*sin);
	}
	if (inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)port);
		return sizeof(*sin6);
	}
	fprintf(stderr, "smtpc_probe: bad address %s\n", host);
	exit(2);
}

static void
print_ext(unsigned ext)
{
	static const struct { unsigned bit; const char *name; } names[] = {
		{ SMTPC_EXT_PIPELINING, "PIPELINING" },
		{ SMTPC_EXT_SIZE, "SIZE" },
		{ SMTPC_EXT_8BITMIME, "8BITMIME" },
		{ SMTPC_EXT_SMTPUTF8, "SMTPUTF8" },
		{ SMTPC_EXT_CHUNKING, "CHUNKING" },
		{ SMTPC_EXT_STARTTLS, "STARTTLS" },
		{ SMTPC_EXT_ENHANCED, "ENHANCEDSTATUSCODES" },
	};
	size_t i;
	int first = 1;

	printf("ext=");
	for (i = 0; i < nitems(names); i++) {
		if (ext & names[i].bit) {
			printf("%s%s", first ? "" : ",", names[i].name);
			first = 0;
		}
	}
	if (first)
		printf("-");
}

static void send_next(struct smtpc_conn *);

/* done - one transaction finished */
static void
done(struct smtpc_conn *c, const struct smtpc_result *res, void *arg)
{
	size_t i;

	for (i = 0; i < res->nrcpts; i++) {
		const struct smtpc_rcpt_result *r = &res->rcpts[i];
		printf("msg %d rcpt=<%s> outcome=%s code=%d enh=%s local=%d "
		    "text=\"%s\"\n", sent, msg.rcpts[i],
		    smtpc_outcome_str(r->outcome), r->reply.code,
		    r->reply.enh[0] ? r->reply.enh : "-", r->reply.local,
		    r->reply.text);
	}
	printf("msg %d done reusable=%d tls=%d\n", sent, res->reusable,
	    res->tls);
	fflush(stdout);
	if (!res->reusable) {
		while (sent < count)
			printf("msg %d skipped\n", ++sent);
		smtpc_close(c);
		return;
	}
	send_next(c);
}

/* send_next - the next copy, or QUIT */
static void
send_next(struct smtpc_conn *c)
{
	if (sent >= count) {
		smtpc_close(c);
		return;
	}
	sent++;
	if (smtpc_send(c, &msg, done, NULL) == -1) {
		printf("msg %d send-refused\n", sent);
		smtpc_close(c);
	}
}

/* ready - the connection phase ended */
static void
ready(struct smtpc_conn *c, const struct smtpc_ready *r, void *arg)
{
	printf("connect status=%s tls=%d tls_failed=%d ", smtpc_status_str(
	    r->status), r->tls, r->tls_failed);
	print_ext(r->ext);
	printf(" size=%llu code=%d enh=%s text=\"%s\"\n",
	    (unsigned long long)r->size_max, r->reply.code,
	    r->reply.enh[0] ? r->reply.enh : "-", r->reply.text);
	fflush(stdout);
	if (r->status != SMTPC_OK) {
		smtpc_free(c);
		return;
	}
	send_next(c);
}

int
main(int argc, char **argv)
{
	struct sockaddr_storage dst, src;
	socklen_t dstlen, srclen = 0;
	struct smtpc_limits lim;
	struct event_base *base;
	enum smtpc_tls policy = SMTPC_TLS_MAY;
	const char *cafile = NULL, *servername = NULL, *helo = "petrel.test";
	const char *srcaddr = NULL, *err;
	SSL_CTX *ctx = NULL;
	unsigned char *data = NULL;
	struct stat st;
	FILE *f;
	long ms = 0;
	int ch, force_utf8 = 0, verbose = 0;
	size_t n;

	smtpc_limits_default(&lim);
	while ((ch = getopt(argc, argv, "t:T:C:S:H:b:n:UPKL:v")) != -1) {
		switch (ch) {
		case 't':
			ms = atol(optarg);
			break;
		case 'T':
			if (strcmp(optarg, "none") == 0)
				policy = SMTPC_TLS_NONE;
			else if (strcmp(optarg, "may") == 0)
				policy = SMTPC_TLS_MAY;
			else if (strcmp(optarg, "verify") == 0)
				policy = SMTPC_TLS_VERIFY;
			else
				usage();
			break;
		case 'C':
			cafile = optarg;
			break;
		case 'S':
			servername = optarg;
			break;
		case 'H':
			helo = optarg;
			break;
		case 'b':
			srcaddr = optarg;
			break;
		case 'n':
			count = atoi(optarg);
			break;
		case 'U':
			force_utf8 = 1;
			break;
		case 'P':
			lim.use_pipelining = 0;
			break;
		case 'K':
			lim.use_chunking = 0;
			break;
		case 'L':
			lim.reply_lines_max = (unsigned)atoi(optarg);
			break;
		case 'v':
			verbose = 1;
			break;
		default:
			usage();
		}
	}
	argc -= optind;
	argv += optind;
	if (argc < 5 || count < 1)
		usage();
	if (ms > 0) {
		lim.connect_ms = lim.greeting_ms = lim.helo_ms = lim.tls_ms =
		    lim.mail_ms = lim.rcpt_ms = lim.data_init_ms =
		    lim.data_block_ms = lim.data_end_ms = lim.rset_ms =
		    lim.quit_ms = ms;
	}
	signal(SIGPIPE, SIG_IGN);	/* as petreld: EPIPE, not death */
	log_init(1, "smtpc_probe");
	log_set_level(verbose ? LOG_LVL_DEBUG : LOG_LVL_INFO);

	dstlen = probe_addr(argv[0], atoi(argv[1]), &dst);
	if (srcaddr != NULL)
		srclen = probe_addr(srcaddr, 0, &src);
	if ((f = fopen(argv[3], "rb")) == NULL || fstat(fileno(f), &st) == -1) {
		perror(argv[3]);
		return 2;
	}
	data = xmalloc((size_t)st.st_size + 1);
	n = fread(data, 1, (size_t)st.st_size, f);
	fclose(f);
	msg.mail_from = strcmp(argv[2], "-") == 0 ? "" : argv[2];
	msg.rcpts = (const char *const *)(argv + 4);
	msg.nrcpts = (size_t)(argc - 4);
	msg.data = data;
	msg.len = n;
	smtpc_scan_message(&msg);
	if (force_utf8)
		msg.needs_smtputf8 = 1;

	if (policy != SMTPC_TLS_NONE &&
	    (ctx = smtpc_tls_ctx_new(cafile, &err)) == NULL) {
		fprintf(stderr, "smtpc_probe: %s\n", err);
		return 2;
	}
	if ((base = event_base_new()) == NULL)
		return 2;
	smtpc_connect(base, ctx, (struct sockaddr *)&dst, dstlen,
	    srcaddr ? (struct sockaddr *)&src : NULL, srclen, helo,
	    servername ? servername : argv[0], policy, &lim, ready, NULL);
	event_base_dispatch(base);
	printf("end\n");
	event_base_free(base);
	if (ctx != NULL)
		SSL_CTX_free(ctx);
	free(data);
	return 0;
}
