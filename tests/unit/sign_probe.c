/*
 * sign_probe.c - command-line driver of dkim.c, arc.c and authres.c for
 * tests/integration/test_dkim_arc.py (built by make check, not a test).
 *
 *   sign_probe sign DATA_DIR DOMAIN MSGFILE
 *	the message with its DKIM-Signature fields prepended, to stdout
 *   sign_probe seal RESOLVER ARC_DOMAIN SELECTOR KEYFILE AUTHSERV_ID
 *       AUTHRES MSGFILE
 *	the message with one ARC set prepended; "cv=..." on stderr
 *   sign_probe validate RESOLVER MSGFILE
 *	"cv=none|pass|fail n=N [why]" for the message's ARC chain
 *   sign_probe authres RESOLVER IP HELO MAILFROM MSGFILE
 *	this hop's results as authres_evaluate() gives them
 *   sign_probe relay RESOLVER IP HELO MAILFROM DATA_DIR DOMAIN ARC_DOMAIN
 *       SELECTOR KEYFILE AUTHSERV_ID MSGFILE
 *	what the delivery path does to a relayed message: authres of the
 *	incoming message, DKIM signing, then ARC sealing, to stdout
 *   sign_probe bench DATA_DIR DOMAIN COUNT SIZE [THREADS]
 *	sign COUNT messages of SIZE bytes (RSA + Ed25519), print msg/s
 *
 * Exit 0 on success, 1 on a failed operation, 2 on usage errors.
 */
#include "autoconf.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "arc.h"
#include "authres.h"
#include "dkim.h"
#include "store.h"
#include "util.h"

static void
usage(void)
{
	fprintf(stderr, "usage: sign_probe sign|seal|validate|authres|relay|"
	    "bench ... (see the source)\n");
	exit(2);
}

/* slurp - whole file, malloc'd */
static char *
slurp(const char *path, size_t *len_r)
{
	FILE *fp = fopen(path, "rb");
	char *buf = NULL;
	size_t len = 0, cap = 0, n;

	if (fp == NULL) {
		perror(path);
		exit(2);
	}
	do {
		if (len + 65536 > cap) {
			cap = cap ? cap * 2 : 65536;
			buf = xrealloc(buf, cap + 1);
		}
		n = fread(buf + len, 1, cap - len, fp);
		len += n;
	} while (n > 0);
	fclose(fp);
	buf[len] = '\0';
	*len_r = len;
	return buf;
}

/* domain_rec - the record (with private keys) from the store */
static json_t *
domain_rec(const char *data_dir, const char *domain)
{
	struct store *st;
	char *err = NULL;
	json_t *rec;

	if (store_open(data_dir, 0, &st, &err) == -1) {
		fprintf(stderr, "store: %s\n", err);
		exit(1);
	}
	rec = store_domain_get(st, domain);
	store_close(st);
	if (rec == NULL) {
		fprintf(stderr, "no domain %s\n", domain);
		exit(1);
	}
	return rec;
}

static struct authres_dns *
dns_open(const char *resolver)
{
	char *err = NULL;
	struct authres_dns *d = authres_dns_new(
	    strcmp(resolver, "-") == 0 ? NULL : resolver, &err);

	if (d == NULL) {
		fprintf(stderr, "dns: %s\n", err);
		exit(2);
	}
	return d;
}

static const char *cv_names[] = { "none", "pass", "fail" };

static int
do_seal(struct authres_dns *d, const char *dom, const char *sel,
    const char *keyfile, const char *id, const char *res, const char *msg,
    size_t len)
{
	struct arc_key *k;
	char *err = NULL, *h = NULL;
	int cv, rc;

	if (arc_key_load(dom, sel, keyfile, &k, &err) == -1) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	if (arc_seal_message(k, msg, len, res, id, authres_dns_txt, d, &h,
	    &cv, &err) == -1) {
		fprintf(stderr, "%s\n", err);
		/* a chain not to be sealed: the message goes on as it is,
		 * as prepare.c sends it */
		rc = strncmp(err, "not sealed:", 11) == 0 ? 0 : 1;
		if (rc == 0)
			fwrite(msg, 1, len, stdout);
		free(err);
		arc_key_free(k);
		return rc;
	}
	fprintf(stderr, "cv=%s\n", cv_names[cv]);
	fputs(h, stdout);
	fwrite(msg, 1, len, stdout);
	free(h);
	arc_key_free(k);
	return 0;
}

struct bench {
	const json_t	*rec;
	const char	*msg;
	size_t		 len;
	long		 count;
	int		 fail;
};

static void *
bench_run(void *arg)
{
	struct bench *b = arg;
	long i;

	for (i = 0; i < b->count; i++) {
		char *h = NULL, *err = NULL;

		if (dkim_sign_message(b->rec, b->msg, b->len, &h, &err) == -1) {
			fprintf(stderr, "%s\n", err);
			free(err);
			b->fail = 1;
			return NULL;
		}
		free(h);
	}
	return NULL;
}

static int
do_bench(const char *data_dir, const char *domain, long count, long size,
    int threads)
{
	json_t *rec = domain_rec(data_dir, domain);
	struct dkim_buf m = { 0 };
	struct bench b[16];
	pthread_t th[16];
	uint64_t t0, t1;
	int i, fail = 0;
	char *line;

	line = xasprintf("From: Bench <bench@%s>\r\nTo: someone@example.net\r\n"
	    "Subject: bench\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n"
	    "Message-ID: <bench@%s>\r\nMIME-Version: 1.0\r\n"
	    "Content-Type: text/plain; charset=utf-8\r\n\r\n", domain, domain);
	dkim_buf_str(&m, line);
	free(line);
	while ((long)m.len < size)
		dkim_buf_str(&m, "The quick brown fox jumps over the lazy dog "
		    "0123456789 abcdefghijklmnopq.\r\n");
	if (threads < 1 || threads > 16)
		threads = 1;
	/* warm the key cache */
	b[0].rec = rec;
	b[0].msg = m.p;
	b[0].len = m.len;
	b[0].count = 1;
	b[0].fail = 0;
	bench_run(&b[0]);
	t0 = util_now_ms();
	for (i = 0; i < threads; i++) {
		b[i] = b[0];
		b[i].count = count / threads;
		pthread_create(&th[i], NULL, bench_run, &b[i]);
	}
	for (i = 0; i < threads; i++) {
		pthread_join(th[i], NULL);
		fail |= b[i].fail;
	}
	t1 = util_now_ms();
	printf("signed %ld messages of %zu bytes (rsa-sha256 + ed25519-sha256)"
	    " in %.3f s with %d thread(s): %.0f msg/s\n",
	    count / threads * threads, m.len, (t1 - t0) / 1000.0, threads,
	    (double)(count / threads * threads) * 1000.0 /
	    (double)(t1 - t0 ? t1 - t0 : 1));
	dkim_buf_free(&m);
	json_decref(rec);
	return fail;
}

int
main(int argc, char **argv)
{
	char *msg, *h = NULL, *err = NULL;
	size_t len;
	int rc = 0;

	if (argc < 2)
		usage();
	if (strcmp(argv[1], "sign") == 0 && argc == 5) {
		json_t *rec = domain_rec(argv[2], argv[3]);

		msg = slurp(argv[4], &len);
		if (dkim_sign_message(rec, msg, len, &h, &err) == -1) {
			fprintf(stderr, "%s\n", err);
			rc = 1;
		} else {
			fputs(h, stdout);
			fwrite(msg, 1, len, stdout);
		}
		free(h);
		free(err);
		free(msg);
		json_decref(rec);
	} else if (strcmp(argv[1], "seal") == 0 && argc == 9) {
		struct authres_dns *d = dns_open(argv[2]);

		msg = slurp(argv[8], &len);
		rc = do_seal(d, argv[3], argv[4], argv[5], argv[6], argv[7],
		    msg, len);
		free(msg);
		authres_dns_free(d);
	} else if (strcmp(argv[1], "validate") == 0 && argc == 4) {
		struct authres_dns *d = dns_open(argv[2]);
		const char *why = NULL;
		int n, cv;

		msg = slurp(argv[3], &len);
		cv = arc_chain_validate(msg, len, authres_dns_txt, d, &n, &why);
		printf("cv=%s n=%d%s%s\n", cv_names[cv], n, why ? " " : "",
		    why ? why : "");
		free(msg);
		authres_dns_free(d);
	} else if (strcmp(argv[1], "authres") == 0 && argc == 7) {
		struct authres_dns *d = dns_open(argv[2]);
		struct authres_input in;

		msg = slurp(argv[6], &len);
		in.client_ip = argv[3];
		in.helo = argv[4];
		in.mail_from = argv[5];
		in.msg = msg;
		in.len = len;
		if (authres_evaluate(&in, d, &h, &err) == -1) {
			fprintf(stderr, "%s\n", err);
			rc = 1;
		} else
			printf("%s\n", h);
		free(h);
		free(err);
		free(msg);
		authres_dns_free(d);
	} else if (strcmp(argv[1], "relay") == 0 && argc == 13) {
		struct authres_dns *d = dns_open(argv[2]);
		struct authres_input in;
		json_t *rec = domain_rec(argv[6], argv[7]);
		char *res = NULL, *signed_msg;

		msg = slurp(argv[12], &len);
		in.client_ip = argv[3];
		in.helo = argv[4];
		in.mail_from = argv[5];
		in.msg = msg;
		in.len = len;
		if (authres_evaluate(&in, d, &res, &err) == -1 ||
		    dkim_sign_message(rec, msg, len, &h, &err) == -1) {
			fprintf(stderr, "%s\n", err);
			rc = 1;
		} else {
			signed_msg = xasprintf("%s%s", h, msg);
			rc = do_seal(d, argv[8], argv[9], argv[10], argv[11],
			    res, signed_msg, strlen(signed_msg));
			free(signed_msg);
		}
		free(res);
		free(h);
		free(err);
		free(msg);
		json_decref(rec);
		authres_dns_free(d);
	} else if (strcmp(argv[1], "bench") == 0 && (argc == 6 || argc == 7)) {
		rc = do_bench(argv[2], argv[3], atol(argv[4]), atol(argv[5]),
		    argc == 7 ? atoi(argv[6]) : 1);
	} else
		usage();
	return rc;
}
