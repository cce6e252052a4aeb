/*
 * test_queue.c - the durable queue: group commit through the writer
 * thread, callbacks on the event loop, cancel, flush on queue_free,
 * MDB_MAP_FULL, and the JSON readers.
 */
#include "autoconf.h"

#include <check.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <jansson.h>
#include <lmdb.h>

#include "log.h"
#include "queue.h"
#include "store.h"
#include "util.h"

struct result {
	int	 fired;
	int	 status;
	char	 qid[QUEUE_ID_LEN + 1];
	char	 err[128];
	int	*counter;
};

static char tmpdir[64];
static struct store *st;
static struct event_base *base;
static struct queue *q;

/* open a fresh store of map_size bytes, a base and a queue */
static void
setup_map(uint64_t map_size)
{
	char *err = NULL;

	log_set_level(LOG_LVL_ERR);
	util_strlcpy(tmpdir, "/tmp/petrel-tq-XXXXXX", sizeof(tmpdir));
	ck_assert_ptr_nonnull(mkdtemp(tmpdir));
	ck_assert_int_eq(store_open(tmpdir, map_size, &st, &err), 0);
	ck_assert_int_eq(evthread_use_pthreads(), 0);
	ck_assert_ptr_nonnull(base = event_base_new());
	ck_assert_ptr_nonnull(q = queue_new(st, base));
}

static void
setup(void)
{
	setup_map(64UL * 1024 * 1024);
}

static void
teardown(void)
{
	DIR *d;
	struct dirent *de;
	char path[512];
	int n;

	queue_free(q);
	q = NULL;
	event_base_free(base);
	store_close(st);
	if ((d = opendir(tmpdir)) != NULL) {
		while ((de = readdir(d)) != NULL) {
			if (de->d_name[0] == '.')
				continue;
			n = snprintf(path, sizeof(path), "%s/%s", tmpdir,
			    de->d_name);
			if (n > 0 && (size_t)n < sizeof(path))
				unlink(path);
		}
		closedir(d);
	}
	rmdir(tmpdir);
}

static void
done_cb(void *arg, int status, const char *qid, const char *err)
{
	struct result *r = arg;

	r->fired++;
	r->status = status;
	util_strlcpy(r->qid, qid ? qid : "", sizeof(r->qid));
	util_strlcpy(r->err, err ? err : "", sizeof(r->err));
	(*r->counter)++;
}

/* run the loop until *counter reaches n (Check's timeout guards us) */
static void
run_until(const int *counter, int n)
{
	while (*counter < n)
		ck_assert_int_ge(event_base_loop(base, EVLOOP_ONCE), 0);
}

/* submit one message to rcpts with a body of len bytes of c */
static struct queue_req *
submit(const char *const *rcpts, size_t nrcpts, size_t len, char c,
    struct result *res, int *counter, char qid_r[QUEUE_ID_LEN + 1])
{
	struct queue_envelope envl;
	struct evbuffer *body = evbuffer_new();
	struct queue_req *req;
	json_t *client = json_pack("{s:s, s:s, s:b}", "ip", "127.0.0.1",
	    "helo", "client.test", "tls", 0);
	char *buf = xmalloc(len + 1);

	memset(buf, c, len);
	evbuffer_add(body, buf, len);
	free(buf);
	memset(&envl, 0, sizeof(envl));
	envl.tenant = "acme";
	envl.mail_from = "app@acme.test";
	envl.header_from = "news@acme.test";
	envl.message_id = "<m1@acme.test>";
	envl.rcpts = rcpts;
	envl.nrcpts = nrcpts;
	envl.client = client;
	memset(res, 0, sizeof(*res));
	res->counter = counter;
	req = queue_submit(q, &envl, body, done_cb, res, qid_r);
	/* the body was moved out, the client borrowed */
	ck_assert_uint_eq(evbuffer_get_length(body), 0);
	evbuffer_free(body);
	json_decref(client);
	return req;
}

static const char *rc1[] = { "a@dest.test" };
static const char *rc3[] = { "a@dest.test", "b@dest.test", "c@other.test" };

/* check the stored record of qid: rcpts and body of len bytes of c */
static void
check_stored(const char *qid, const char *const *rcpts, size_t nrcpts,
    size_t len, char c)
{
	json_t *m = queue_show_json(st, qid), *r, *arr;
	struct evbuffer *b;
	unsigned char *p;
	size_t i;

	ck_assert_msg(m != NULL, "qid %s not stored", qid);
	ck_assert_str_eq(json_string_value(json_object_get(m, "id")), qid);
	ck_assert_str_eq(json_string_value(json_object_get(m, "tenant")), "acme");
	ck_assert_str_eq(json_string_value(json_object_get(m, "mail_from")),
	    "app@acme.test");
	ck_assert_str_eq(json_string_value(json_object_get(m, "header_from")),
	    "news@acme.test");
	ck_assert_str_eq(json_string_value(json_object_get(m, "message_id")),
	    "<m1@acme.test>");
	ck_assert_int_eq(json_integer_value(json_object_get(m, "size")),
	    (json_int_t)len);
	ck_assert_int_gt(json_integer_value(json_object_get(m, "received_at")),
	    1600000000);
	ck_assert_str_eq(json_string_value(json_object_get(json_object_get(m,
	    "client"), "helo")), "client.test");
	arr = json_object_get(m, "recipients");
	ck_assert_uint_eq(json_array_size(arr), nrcpts);
	for (i = 0; i < nrcpts; i++) {
		r = json_array_get(arr, i);
		ck_assert_str_eq(json_string_value(json_object_get(r,
		    "address")), rcpts[i]);
		ck_assert_str_eq(json_string_value(json_object_get(r,
		    "status")), "queued");
		ck_assert_int_eq(json_integer_value(json_object_get(r,
		    "attempts")), 0);
		ck_assert_ptr_nonnull(json_string_value(json_object_get(r,
		    "last_reply")));
		ck_assert_int_gt(json_integer_value(json_object_get(r,
		    "updated_at")), 1600000000);
		ck_assert_int_gt(json_integer_value(json_object_get(r,
		    "next_attempt")), 1600000000);
	}
	json_decref(m);

	b = evbuffer_new();
	ck_assert_int_eq(queue_body_get(st, qid, b), 0);
	ck_assert_uint_eq(evbuffer_get_length(b), len);
	p = evbuffer_pullup(b, -1);
	for (i = 0; i < len; i++)
		ck_assert_int_eq(p[i], (unsigned char)c);
	evbuffer_free(b);
}

/* hold the LMDB writer lock: the writer thread blocks at its next
 * transaction, so everything submitted meanwhile piles up */
static MDB_txn *
hold_writer(void)
{
	MDB_txn *txn;

	ck_assert_int_eq(mdb_txn_begin(store_env(st), NULL, 0, &txn), 0);
	return txn;
}

START_TEST(test_submit_show)
{
	struct result res[20];
	char qids[20][QUEUE_ID_LEN + 1];
	int counter = 0, i;
	json_t *list, *it;
	size_t j, found = 0;

	for (i = 0; i < 20; i++)
		submit(i % 2 ? rc3 : rc1, i % 2 ? 3 : 1, 100 + (size_t)i,
		    (char)('a' + i), &res[i], &counter, qids[i]);
	run_until(&counter, 20);
	for (i = 0; i < 20; i++) {
		ck_assert_int_eq(res[i].fired, 1);
		ck_assert_int_eq(res[i].status, 0);
		ck_assert_str_eq(res[i].qid, qids[i]);
		ck_assert_int_eq(queue_id_valid(qids[i]), 0);
		if (i > 0)
			ck_assert_int_lt(strcmp(qids[i - 1], qids[i]), 0);
		check_stored(qids[i], i % 2 ? rc3 : rc1, i % 2 ? 3 : 1,
		    100 + (size_t)i, (char)('a' + i));
	}

	list = queue_list_json(st);
	ck_assert_uint_eq(json_array_size(list), 20);
	json_array_foreach(list, j, it) {
		ck_assert_str_eq(json_string_value(json_object_get(it,
		    "status")), "queued");
		ck_assert_str_eq(json_string_value(json_object_get(it,
		    "tenant")), "acme");
		ck_assert_int_ge(json_integer_value(json_object_get(it, "age")),
		    0);
		ck_assert_ptr_nonnull(json_object_get(it, "next_attempt"));
		for (i = 0; i < 20; i++)
			if (strcmp(qids[i], json_string_value(
			    json_object_get(it, "id"))) == 0) {
				found++;
				ck_assert_int_eq(json_integer_value(
				    json_object_get(it, "nrcpts")), i % 2 ? 3 : 1);
				ck_assert_int_eq(json_integer_value(
				    json_object_get(it, "size")), 100 + i);
			}
	}
	ck_assert_uint_eq(found, 20);
	json_decref(list);

	ck_assert_ptr_null(queue_show_json(st, "00000000000000"));
	ck_assert_ptr_null(queue_show_json(st, "bogus"));
}
END_TEST

/* body_str - qid's stored message bytes (queue_body_get, queue_load) as a
 * string; both must agree */
static char *
body_str(const char *qid)
{
	struct evbuffer *b = evbuffer_new(), *b2 = evbuffer_new();
	json_t *m;
	size_t len;
	char *s;

	ck_assert_int_eq(queue_body_get(st, qid, b), 0);
	ck_assert_ptr_nonnull(m = queue_load(st, qid, b2));
	json_decref(m);
	len = evbuffer_get_length(b);
	ck_assert_uint_eq(len, evbuffer_get_length(b2));
	ck_assert(memcmp(evbuffer_pullup(b, -1), evbuffer_pullup(b2, -1),
	    len) == 0);
	s = xmalloc(len + 1);
	evbuffer_remove(b, s, len);
	s[len] = '\0';
	evbuffer_free(b);
	evbuffer_free(b2);
	return s;
}

/* set_prepared - store body as qid's prepared bytes, wait for it */
static void
set_prepared(const char *qid, const char *body)
{
	struct evbuffer *b = evbuffer_new();
	struct result res;
	int counter = 0;

	evbuffer_add(b, body, strlen(body));
	memset(&res, 0, sizeof(res));
	res.counter = &counter;
	queue_set_prepared(q, qid, b, NULL, NULL, 0, done_cb, &res);
	run_until(&counter, 1);
	ck_assert_int_eq(res.status, 0);
	evbuffer_free(b);
}

/* prepared bytes that only add header lines in front are stored as those
 * lines; any other change as the whole message; readers see the same */
START_TEST(test_prepared_head)
{
	struct result res[2];
	char qids[2][QUEUE_ID_LEN + 1], *s, *want;
	int counter = 0;
	MDB_txn *txn;
	MDB_val key, val;
	unsigned char hkey[QUEUE_ID_LEN + 1];

	submit(rc1, 1, 3000, 'x', &res[0], &counter, qids[0]);
	submit(rc1, 1, 3000, 'y', &res[1], &counter, qids[1]);
	run_until(&counter, 2);

	/* signed: head + the received bytes */
	s = body_str(qids[0]);
	want = xasprintf("DKIM-Signature: v=1; b=abc\r\n%s", s);
	free(s);
	set_prepared(qids[0], want);
	s = body_str(qids[0]);
	ck_assert_str_eq(s, want);
	free(s);
	/* what is stored: the head alone, and the received bytes unchanged */
	ck_assert_int_eq(mdb_txn_begin(store_env(st), NULL, MDB_RDONLY, &txn),
	    0);
	memcpy(hkey, qids[0], QUEUE_ID_LEN);
	hkey[QUEUE_ID_LEN] = '>';
	key.mv_size = sizeof(hkey);
	key.mv_data = hkey;
	ck_assert_int_eq(mdb_get(txn, store_dbi(st, DB_BODIES), &key, &val), 0);
	ck_assert_uint_eq(val.mv_size, strlen("DKIM-Signature: v=1; b=abc\r\n"));
	key.mv_size = QUEUE_ID_LEN;
	key.mv_data = qids[0];
	ck_assert_int_eq(mdb_get(txn, store_dbi(st, DB_BODIES), &key, &val), 0);
	ck_assert_uint_eq(val.mv_size, 3000);
	mdb_txn_abort(txn);
	/* a second prepare of a prepared message changes nothing */
	set_prepared(qids[0], "X-Other: 1\r\n");
	s = body_str(qids[0]);
	ck_assert_str_eq(s, want);
	free(s);
	free(want);

	/* rewritten (e.g. tracking): the whole message is replaced */
	want = xstrdup("Subject: rewritten\r\n\r\nnew body\r\n");
	set_prepared(qids[1], want);
	s = body_str(qids[1]);
	ck_assert_str_eq(s, want);
	free(s);
	free(want);

	/* delete removes the head too */
	ck_assert_int_eq(queue_delete(st, qids[0], &s), 0);
	ck_assert_int_eq(mdb_txn_begin(store_env(st), NULL, MDB_RDONLY, &txn),
	    0);
	key.mv_size = sizeof(hkey);
	key.mv_data = hkey;
	ck_assert_int_eq(mdb_get(txn, store_dbi(st, DB_BODIES), &key, &val),
	    MDB_NOTFOUND);
	mdb_txn_abort(txn);
}
END_TEST

/* delivery results are background work: alone, one waits QUEUE_LINGER_MS
 * for company; a burst of them shares commits; each is applied */
START_TEST(test_linger)
{
	struct queue_rcpt_update u;
	struct result res[21];
	char qid[QUEUE_ID_LEN + 1];
	int counter = 0, i;
	uint64_t t0, c0, c1;
	json_t *m;

	submit(rc1, 1, 100, 'l', &res[0], &counter, qid);
	run_until(&counter, 1);
	memset(&u, 0, sizeof(u));
	u.idx = 0;
	u.status = "deferred";
	u.count_attempt = 1;
	u.code = 451;
	u.enhanced = "4.4.1";
	u.text = "try later";
	u.next_attempt = util_now() + 600;

	counter = 0;
	memset(&res[1], 0, sizeof(res[1]));
	res[1].counter = &counter;
	t0 = util_now_ms();
	queue_update(q, qid, &u, 1, done_cb, &res[1]);
	run_until(&counter, 1);
	ck_assert_int_eq(res[1].status, 0);
	ck_assert_uint_ge(util_now_ms() - t0, QUEUE_LINGER_MS);

	counter = 0;
	queue_stats(q, &c0, NULL);
	for (i = 1; i <= 20; i++) {
		memset(&res[i], 0, sizeof(res[i]));
		res[i].counter = &counter;
		queue_update(q, qid, &u, 1, done_cb, &res[i]);
	}
	run_until(&counter, 20);
	queue_stats(q, &c1, NULL);
	for (i = 1; i <= 20; i++)
		ck_assert_int_eq(res[i].status, 0);
	/* one commit, two if this thread was descheduled in between */
	ck_assert_uint_le(c1 - c0, 2);
	m = queue_show_json(st, qid);
	ck_assert_int_eq(json_integer_value(json_object_get(json_array_get(
	    json_object_get(m, "recipients"), 0), "attempts")), 21);
	json_decref(m);
}
END_TEST

/* update - one recipient's final status, committed */
static void
update_final(const char *qid, unsigned idx, const char *status)
{
	struct queue_rcpt_update u;
	struct result res;
	int counter = 0;

	memset(&u, 0, sizeof(u));
	u.idx = idx;
	u.status = status;
	u.count_attempt = 1;
	u.code = 250;
	u.enhanced = "2.0.0";
	u.text = "ok";
	memset(&res, 0, sizeof(res));
	res.counter = &counter;
	queue_update(q, qid, &u, 1, done_cb, &res);
	run_until(&counter, 1);
	ck_assert_int_eq(res.status, 0);
}

/* the bytes go when the last recipient is final; the records stay */
START_TEST(test_done_drops_bytes)
{
	struct evbuffer *b = evbuffer_new();
	struct result res;
	char qid[QUEUE_ID_LEN + 1], *s, *want;
	int counter = 0;
	json_t *m;

	submit(rc3, 3, 2000, 'd', &res, &counter, qid);
	run_until(&counter, 1);
	s = body_str(qid);
	want = xasprintf("DKIM-Signature: v=1; b=x\r\n%s", s);
	free(s);
	set_prepared(qid, want);
	free(want);
	update_final(qid, 0, "delivered");
	update_final(qid, 1, "bounced");
	ck_assert_int_eq(queue_body_get(st, qid, b), 0);	/* one to go */
	evbuffer_drain(b, evbuffer_get_length(b));
	update_final(qid, 2, "delivered");
	ck_assert_int_eq(queue_body_get(st, qid, b), -1);
	evbuffer_free(b);
	m = queue_show_json(st, qid);
	ck_assert_ptr_nonnull(m);
	ck_assert_str_eq(json_string_value(json_object_get(json_array_get(
	    json_object_get(m, "recipients"), 1), "status")), "bounced");
	ck_assert_int_eq(json_integer_value(json_object_get(m, "size")), 2000);
	json_decref(m);
}
END_TEST

/* retention prunes finished messages received before the cutoff, and
 * nothing still to deliver */
START_TEST(test_retention)
{
	struct result res[2];
	char qids[2][QUEUE_ID_LEN + 1];
	struct evbuffer *b = evbuffer_new();
	int counter = 0;
	json_t *m;

	submit(rc1, 1, 100, 'r', &res[0], &counter, qids[0]);
	submit(rc1, 1, 100, 's', &res[1], &counter, qids[1]);
	run_until(&counter, 2);
	update_final(qids[0], 0, "delivered");
	/* a cutoff 10 s ahead: both were received before it */
	queue_set_retention(q, -10);
	queue_prune_now(q);
	while ((m = queue_show_json(st, qids[0])) != NULL) {
		json_decref(m);
		ck_assert_int_ge(event_base_loop(base, EVLOOP_ONCE), 0);
	}
	m = queue_show_json(st, qids[1]);
	ck_assert_ptr_nonnull(m);
	json_decref(m);
	ck_assert_int_eq(queue_body_get(st, qids[1], b), 0);
	evbuffer_free(b);
}
END_TEST

START_TEST(test_group_commit)
{
	struct result *res = xcalloc(200, sizeof(*res));
	MDB_txn *txn;
	uint64_t commits, messages;
	int counter = 0, i;

	txn = hold_writer();
	for (i = 0; i < 200; i++)
		submit(rc1, 1, 512, 'x', &res[i], &counter, NULL);
	mdb_txn_abort(txn);
	run_until(&counter, 200);
	for (i = 0; i < 200; i++)
		ck_assert_int_eq(res[i].status, 0);
	queue_stats(q, &commits, &messages);
	ck_assert_uint_eq(messages, 200);
	/* the first request may have gone alone; the rest share a commit */
	ck_assert_uint_le(commits, 2);
	ck_assert_uint_lt(commits, messages);
	for (i = 0; i < 200; i += 37)
		check_stored(res[i].qid, rc1, 1, 512, 'x');
	free(res);
}
END_TEST

START_TEST(test_unbatched_concurrency)
{
	/* without the hold: 200 submitted at once still batch */
	struct result *res = xcalloc(200, sizeof(*res));
	uint64_t commits, messages;
	int counter = 0, i;

	for (i = 0; i < 200; i++)
		submit(rc1, 1, 64, 'y', &res[i], &counter, NULL);
	run_until(&counter, 200);
	queue_stats(q, &commits, &messages);
	ck_assert_uint_eq(messages, 200);
	ck_assert_uint_lt(commits, messages);
	free(res);
}
END_TEST

START_TEST(test_many_rcpts)
{
	const char **rcpts = xcalloc(300, sizeof(char *));
	char **bufs = xcalloc(300, sizeof(char *));
	struct result res;
	int counter = 0, i;

	for (i = 0; i < 300; i++)
		rcpts[i] = bufs[i] = xasprintf("r%03d@dest.test", i);
	submit(rcpts, 300, 10, 'z', &res, &counter, NULL);
	run_until(&counter, 1);
	ck_assert_int_eq(res.status, 0);
	/* index order survives past 255 (2-byte big-endian index) */
	check_stored(res.qid, rcpts, 300, 10, 'z');
	for (i = 0; i < 300; i++)
		free(bufs[i]);
	free(bufs);
	free(rcpts);
}
END_TEST

START_TEST(test_cancel)
{
	struct result res[3];
	struct queue_req *req;
	char qid1[QUEUE_ID_LEN + 1];
	int counter = 0;

	submit(rc1, 1, 10, 'a', &res[0], &counter, NULL);
	req = submit(rc3, 3, 20, 'b', &res[1], &counter, qid1);
	submit(rc1, 1, 30, 'c', &res[2], &counter, NULL);
	queue_cancel(req);
	run_until(&counter, 2);
	/* flush: the cancelled request is committed even if not yet done */
	queue_free(q);
	q = NULL;
	ck_assert_int_eq(res[0].fired, 1);
	ck_assert_int_eq(res[1].fired, 0);
	ck_assert_int_eq(res[2].fired, 1);
	ck_assert_int_eq(counter, 2);
	check_stored(qid1, rc3, 3, 20, 'b');
	check_stored(res[0].qid, rc1, 1, 10, 'a');
}
END_TEST

START_TEST(test_free_flushes)
{
	struct result res[5];
	int counter = 0, i;

	for (i = 0; i < 5; i++)
		submit(rc1, 1, 10, 'f', &res[i], &counter, NULL);
	/* no loop iteration: queue_free must commit and call back */
	queue_free(q);
	q = NULL;
	ck_assert_int_eq(counter, 5);
	for (i = 0; i < 5; i++) {
		ck_assert_int_eq(res[i].status, 0);
		check_stored(res[i].qid, rc1, 1, 10, 'f');
	}
}
END_TEST

START_TEST(test_map_full)
{
	struct result first, big, small, after;
	struct evbuffer *b;
	MDB_txn *txn;
	json_t *list;
	uint64_t commits, messages;
	int counter = 0;

	teardown();
	setup_map(1024 * 1024);

	/* the writer takes "first" (alone or not) and blocks on our lock;
	 * the huge message and a small one then share the next batch, which
	 * fails as a whole; the small one must still be stored */
	txn = hold_writer();
	submit(rc1, 1, 100, 'f', &first, &counter, NULL);
	submit(rc1, 1, 2 * 1024 * 1024, 'B', &big, &counter, NULL);
	submit(rc1, 1, 100, 's', &small, &counter, NULL);
	mdb_txn_abort(txn);
	run_until(&counter, 3);
	queue_stats(q, &commits, &messages);
	ck_assert_uint_eq(messages, 2);
	ck_assert_uint_eq(commits, 2);
	ck_assert_int_eq(first.status, 0);
	ck_assert_int_eq(big.status, -1);
	ck_assert_str_eq(big.err, "queue storage full");
	ck_assert_int_eq(small.status, 0);

	/* nothing of the failed message remains */
	ck_assert_ptr_null(queue_show_json(st, big.qid));
	b = evbuffer_new();
	ck_assert_int_eq(queue_body_get(st, big.qid, b), -1);
	evbuffer_free(b);
	list = queue_list_json(st);
	ck_assert_uint_eq(json_array_size(list), 2);
	ck_assert_str_eq(json_string_value(json_object_get(json_array_get(list,
	    0), "id")), first.qid);
	ck_assert_str_eq(json_string_value(json_object_get(json_array_get(list,
	    1), "id")), small.qid);
	json_decref(list);
	check_stored(small.qid, rc1, 1, 100, 's');

	/* the store still takes mail */
	submit(rc1, 1, 100, 't', &after, &counter, NULL);
	run_until(&counter, 4);
	ck_assert_int_eq(after.status, 0);
	check_stored(after.qid, rc1, 1, 100, 't');
}
END_TEST

START_TEST(test_not_utf8)
{
	struct queue_envelope envl;
	struct result res;
	json_t *m;
	int counter = 0;

	/* a Message-ID header may hold any byte: stored, not refused */
	memset(&envl, 0, sizeof(envl));
	memset(&res, 0, sizeof(res));
	res.counter = &counter;
	envl.tenant = "acme";
	envl.mail_from = "";
	envl.header_from = "news@acme.test";
	envl.message_id = "<\xff\xfe@acme.test>";
	envl.rcpts = rc1;
	envl.nrcpts = 1;
	queue_submit(q, &envl, NULL, done_cb, &res, NULL);
	run_until(&counter, 1);
	ck_assert_int_eq(res.status, 0);
	ck_assert_ptr_nonnull(m = queue_show_json(st, res.qid));
	ck_assert_str_eq(json_string_value(json_object_get(m, "message_id")),
	    "<??@acme.test>");
	ck_assert_str_eq(json_string_value(json_object_get(m, "mail_from")), "");
	ck_assert_int_eq(json_integer_value(json_object_get(m, "size")), 0);
	ck_assert_ptr_nonnull(json_object_get(m, "client"));
	json_decref(m);
}
END_TEST

START_TEST(test_id_format)
{
	struct result res[50];
	char prev[QUEUE_ID_LEN + 1] = "", qid[QUEUE_ID_LEN + 1];
	int counter = 0, i;

	for (i = 0; i < 50; i++) {
		submit(rc1, 1, 1, 'i', &res[i], &counter, qid);
		ck_assert_uint_eq(strlen(qid), QUEUE_ID_LEN);
		ck_assert_int_eq(queue_id_valid(qid), 0);
		ck_assert_int_lt(strcmp(prev, qid), 0);
		memcpy(prev, qid, sizeof(prev));
	}
	run_until(&counter, 50);
	ck_assert_int_eq(queue_id_valid("0123456789ABCD"), 0);
	ck_assert_int_eq(queue_id_valid("0123456789abcd"), -1);
	ck_assert_int_eq(queue_id_valid("0123456789ABCI"), -1);
	ck_assert_int_eq(queue_id_valid("0123456789ABC"), -1);
	ck_assert_int_eq(queue_id_valid("0123456789ABCDE"), -1);
	ck_assert_int_eq(queue_id_valid(NULL), -1);
}
END_TEST

static Suite *
queue_suite(void)
{
	Suite *s = suite_create("queue");
	TCase *tc = tcase_create("core");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_submit_show);
	tcase_add_test(tc, test_prepared_head);
	tcase_add_test(tc, test_linger);
	tcase_add_test(tc, test_done_drops_bytes);
	tcase_add_test(tc, test_retention);
	tcase_add_test(tc, test_group_commit);
	tcase_add_test(tc, test_unbatched_concurrency);
	tcase_add_test(tc, test_many_rcpts);
	tcase_add_test(tc, test_cancel);
	tcase_add_test(tc, test_free_flushes);
	tcase_add_test(tc, test_map_full);
	tcase_add_test(tc, test_not_utf8);
	tcase_add_test(tc, test_id_format);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(queue_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
