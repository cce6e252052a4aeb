/*
 * mime_probe.c - command-line driver of the MIME builder (src/mime.c) for
 * tests/integration/test_mime.py:
 *
 *   mime_probe [-h HOSTNAME] [-t EPOCH] [-s BOUNDARY_SEED] [-a MAX_ATTACH]
 *              [-r MAX_RCPTS] < EmailMessage.json
 *
 * On success the message goes to stdout and one line of JSON to stderr:
 * {"info": mime_info_json()}; exit 0. On a validation error stderr holds
 * {"rc": -1|-2, "error": {"code", "target", "message"}}; exit 1. Usage or
 * input errors exit 2.
 */
#include "autoconf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <jansson.h>

#include "mime.h"
#include "util.h"

#define PROBE_INPUT_MAX	(64 * 1024 * 1024)

int
main(int argc, char **argv)
{
	struct mime_opts opts;
	struct mime_info info;
	struct evbuffer *out;
	json_error_t jerr;
	json_t *root, *o;
	char *code, *target, *msg, *in, *js;
	size_t len = 0, cap = 65536, n;
	uint64_t v;
	const char *err;
	int ch, rc;

	memset(&opts, 0, sizeof(opts));
	opts.hostname = "probe.example";
	while ((ch = getopt(argc, argv, "a:h:r:s:t:")) != -1) {
		switch (ch) {
		case 'a':
		case 'r':
		case 't':
			if (util_parse_uint(optarg, 1, UINT64_MAX / 2, &v,
			    &err) == -1) {
				fprintf(stderr, "mime_probe: -%c: %s\n", ch,
				    err);
				return 2;
			}
			if (ch == 'a')
				opts.max_attach = (size_t)v;
			else if (ch == 'r')
				opts.max_rcpts = (size_t)v;
			else
				opts.now = (time_t)v;
			break;
		case 'h':
			opts.hostname = optarg;
			break;
		case 's':
			opts.boundary_seed = optarg;
			break;
		default:
			fprintf(stderr, "usage: mime_probe [-h HOST] [-t EPOCH]"
			    " [-s SEED] [-a MAX_ATTACH] [-r MAX_RCPTS]\n");
			return 2;
		}
	}

	in = xmalloc(cap);
	while ((n = fread(in + len, 1, cap - len, stdin)) > 0) {
		len += n;
		if (len == cap) {
			if (cap >= PROBE_INPUT_MAX) {
				fprintf(stderr, "mime_probe: input too large\n");
				return 2;
			}
			cap *= 2;
			in = xrealloc(in, cap);
		}
	}
	root = json_loadb(in, len, JSON_REJECT_DUPLICATES, &jerr);
	free(in);
	if (root == NULL) {
		fprintf(stderr, "mime_probe: bad JSON: %s\n", jerr.text);
		return 2;
	}

	if ((out = evbuffer_new()) == NULL)
		fatalx("evbuffer_new");
	rc = mime_build(root, &opts, out, &info, &code, &target, &msg);
	json_decref(root);
	if (rc != MIME_OK) {
		if (evbuffer_get_length(out) != 0)
			fatalx("mime_build wrote output on error");
		o = json_pack("{s:i, s:{s:s, s:s?, s:s}}", "rc", rc, "error",
		    "code", code, "target", target, "message", msg);
		js = json_dumps(o, JSON_COMPACT);
		fprintf(stderr, "%s\n", js);
		free(js);
		json_decref(o);
		free(code);
		free(target);
		free(msg);
		evbuffer_free(out);
		return 1;
	}
	if (info.size != evbuffer_get_length(out))
		fatalx("mime_build: info.size %zu != %zu", info.size,
		    evbuffer_get_length(out));
	while (evbuffer_get_length(out) > 0)
		if (evbuffer_write(out, STDOUT_FILENO) < 0) {
			perror("mime_probe: write");
			return 2;
		}
	o = json_pack("{s:o}", "info", mime_info_json(&info));
	js = json_dumps(o, JSON_COMPACT);
	fprintf(stderr, "%s\n", js);
	free(js);
	json_decref(o);
	mime_info_free(&info);
	evbuffer_free(out);
	return 0;
}
