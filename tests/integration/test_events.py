"""test_events - delivery events and webhooks (issue 8): events written
with the state changes they describe, signed webhook batches (a real HTTP
receiver checking the HMAC and the timestamp), retries with backoff after
non-2xx answers, survival across kill -9, a dead or silent endpoint that
does not slow delivery, GET /events paging, rejected events from an SMTP
policy refusal, petrelctl webhook and log search.

Delivery set-up as in test_delivery.py: a real unbound answers the MX
records, aiosmtpd sinks listen on 127.0.0.x.
"""

import hashlib
import hmac
import json
import os
import re
import smtplib
import ssl
import stat
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import petrel_fixtures as pf
from test_delivery import HOSTS, Env, fresh
from test_http_api import Api, connection_string

RECS = [("dest.test", "MX", "10 mx.dest.test."),
        ("mx.dest.test", "A", HOSTS[1])]


class Receiver:
    """Receiver - a webhook endpoint on 127.0.0.1 (http.server in a
    thread). answers: list of status codes for successive requests (then
    200); silent=True: accept and never answer. Every request is checked
    (signature, timestamp, headers) and recorded."""

    def __init__(self, answers=None, silent=False, certs=None):
        self.secret = None
        self.answers = list(answers or [])
        self.silent = silent
        self.requests = []      # dicts: t, status, events, headers, ok_sig
        self.errors = []
        self.cond = threading.Condition()
        rcv = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                rcv.handle(self, body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = "http://127.0.0.1:%d/hooks/petrel?x=1" % self.port
        if certs:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(certs["cert"], certs["key"])
            self.server.socket = ctx.wrap_socket(self.server.socket,
                                                 server_side=True)
            self.url = "https" + self.url[4:]
        self.th = threading.Thread(target=self.server.serve_forever,
                                   daemon=True)
        self.th.start()

    def handle(self, h, body):
        ts = h.headers.get("X-Petrel-Timestamp", "")
        sig = h.headers.get("X-Petrel-Signature", "")
        want = "sha256=" + hmac.new(self.secret.encode(),
                                    ts.encode() + b"." + body,
                                    hashlib.sha256).hexdigest()
        ok_sig = hmac.compare_digest(sig, want)
        errs = []
        if not ok_sig:
            errs.append("bad signature %r" % sig)
        if not ts.isdigit() or abs(int(ts) - time.time()) > 60:
            errs.append("bad timestamp %r" % ts)
        if h.headers.get("Content-Type") != "application/json":
            errs.append("content type %r" % h.headers.get("Content-Type"))
        if h.path != "/hooks/petrel?x=1":
            errs.append("path %r" % h.path)
        try:
            events = json.loads(body)
        except ValueError:
            events = None
            errs.append("body is not JSON")
        if self.silent:
            with self.cond:
                self.requests.append(dict(t=time.time(), status=None,
                                          events=events, headers=dict(
                                              h.headers)))
                self.cond.notify_all()
            time.sleep(30)      # never answers within petreld's timeout
            return
        with self.cond:
            status = self.answers.pop(0) if self.answers else 200
            self.errors.extend(errs)
            self.requests.append(dict(t=time.time(), status=status,
                                      events=events, headers=dict(h.headers),
                                      ok_sig=ok_sig))
            self.cond.notify_all()
        out = b"{}" if status < 300 else b"nope"
        h.send_response(status)
        h.send_header("Content-Length", str(len(out)))
        h.send_header("Connection", "close")
        h.end_headers()
        h.wfile.write(out)

    def accepted(self):
        """events of the batches answered 2xx, deduplicated by id, in the
        order they arrived"""
        seen, out = set(), []
        with self.cond:
            for r in self.requests:
                if r["status"] is not None and 200 <= r["status"] < 300:
                    for e in r["events"]:
                        if e["id"] not in seen:
                            seen.add(e["id"])
                            out.append(e)
        return out

    def wait_accepted(self, pred, timeout=30, what="webhook events"):
        return pf.wait_for(lambda: pred(self.accepted()) and
                           self.accepted(), timeout=timeout, what=what)

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def add_webhook(p, tenant, url, *extra):
    r = p.ctl("webhook", "add", tenant, url, *extra)
    m = re.search(r"webhook (wh[a-z2-7]{12}) added", r.stdout)
    s = re.search(r"signing secret \(shown only now\): ([A-Za-z0-9+/=]+)",
                  r.stdout)
    assert m and s, r.stdout
    assert len(__import__("base64").b64decode(s.group(1))) == 32
    return m.group(1), s.group(1)


def story(events, rcpt):
    return [e["type"] for e in events if e["recipient"] == rcpt]


def check_ids_increase(events):
    ids = [int(e["id"]) for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids), ids


def make_sink(e, flaky):
    """a sink on mx.dest.test: nobody@ bounces, later@ defers once"""
    tries = {}

    def reply(addr):
        if addr.startswith("nobody@"):
            return "550 5.1.1 no such user"
        if addr.startswith("later@"):
            tries[addr] = tries.get(addr, 0) + 1
            if tries[addr] == 1 and flaky:
                return "451 4.3.0 try again later"
        return None
    return fresh(pf.Sink, HOSTS[1], e.port, reply=reply)


def test_webhook_signed_ordered_and_log_search(petrel_factory,
                                               unbound_factory):
    e = Env(petrel_factory, unbound_factory, RECS)
    rcv = Receiver()
    sink = make_sink(e, flaky=True)
    try:
        wid, rcv.secret = add_webhook(e.p, "acme", rcv.url)
        msgid = "<story.%f@app.test>" % time.time()
        qid = e.send(["ok@dest.test", "nobody@dest.test", "later@dest.test"],
                     "story", msgid=msgid)
        evs = rcv.wait_accepted(
            lambda ev: story(ev, "later@dest.test")[-1:] == ["delivered"] and
            story(ev, "nobody@dest.test")[-1:] == ["bounced"] and
            story(ev, "ok@dest.test")[-1:] == ["delivered"], timeout=40)
        assert not rcv.errors, rcv.errors
        check_ids_increase(evs)
        assert story(evs, "ok@dest.test") == ["queued", "delivered"]
        assert story(evs, "nobody@dest.test") == ["queued", "bounced"]
        assert story(evs, "later@dest.test") == ["queued", "deferred",
                                                 "delivered"]
        # (the DSN to the sender is a message of its own)
        evs = [x for x in evs if x["qid"] == qid]
        assert len(evs) == 7
        for ev in evs:
            assert ev["tenant"] == "acme" and ev["qid"] == qid
            assert ev["message_id"] == msgid
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z",
                                ev["time"]), ev["time"]
        b = [x for x in evs if x["type"] == "bounced"][0]
        assert b["details"]["code"] == 550
        assert b["details"]["enhanced"] == "5.1.1"
        assert b["details"]["category"] == "hard", b
        assert "no such user" in b["details"]["text"]
        d = [x for x in evs if x["type"] == "delivered"][0]
        assert d["details"]["relay"].startswith("mx.dest.test[")
        assert d["details"]["attempts"] == 1
        df = [x for x in evs if x["type"] == "deferred"][0]
        assert df["details"]["code"] == 451
        assert df["details"]["next_attempt"] > 0
        hdr = rcv.requests[0]["headers"]
        assert hdr["X-Petrel-Webhook-Id"] == wid
        sink.wait_for(2)

        # the request log: one line per event, with Message-ID
        e.p.wait_log(r"event=queued id=\d+ qid=%s message_id=%s tenant=acme "
                     r"rcpt=ok@dest\.test result=queued" %
                     (qid, re.escape(msgid)))
        e.p.wait_log(r"event=bounced id=\d+ qid=%s message_id=\S+ tenant=acme "
                     r"rcpt=nobody@dest\.test result=bounced relay=\S+ "
                     r'attempts=1 reply="550 5\.1\.1 ' % qid)
        # petrelctl log search: the whole story, in order
        st = e.p.ctl_json("log", "search", "--message-id", msgid)
        assert [x["id"] for x in st] == sorted(
            [x["id"] for x in st], key=int)
        assert story(st, "later@dest.test") == ["queued", "deferred",
                                                "delivered"]
        assert len(st) == 7
        st2 = e.p.ctl_json("log", "search", "--message-id",
                           msgid.strip("<>"), "--tenant", "acme")
        assert st2 == st
        r = e.p.ctl("log", "search", "--recipient", "NOBODY@dest.test")
        lines = r.stdout.strip().splitlines()
        assert len(lines) == 2, r.stdout
        assert " queued " in lines[0] and " bounced " in lines[1]
        assert "550 5.1.1" in lines[1] and qid in lines[1]
        assert e.p.ctl_json("log", "search", "--message-id", msgid,
                            "--tenant", "other") == []
        # all three options, each with its value as the next argument
        st3 = e.p.ctl_json("log", "search", "--message-id", msgid,
                           "--recipient", "later@dest.test", "--tenant",
                           "acme")
        assert [x["type"] for x in st3] == ["queued", "deferred",
                                            "delivered"], st3
        # by queue id: the same story
        assert e.p.ctl_json("log", "search", "--qid", qid) == st
        assert e.p.ctl_json("log", "search", "--qid", qid, "--recipient",
                            "later@dest.test") == st3
        assert e.p.ctl_json("log", "search", "--qid", "0" * 14) == []
        r = e.p.ctl("log", "search", check=False)
        assert r.returncode == 2
        r = e.p.ctl("log", "search", "--tenant", "acme", check=False)
        assert r.returncode == 2
        assert "usage: petrelctl [-c conf] log search" in r.stderr, r.stderr
        # the secret appears nowhere in the log
        assert rcv.secret not in e.p.log()
    finally:
        rcv.stop()
        sink.stop()


def test_webhook_retries_after_500(petrel_factory, unbound_factory):
    e = Env(petrel_factory, unbound_factory, RECS)
    rcv = Receiver(answers=[500, 500])
    sink = make_sink(e, flaky=False)
    try:
        _, rcv.secret = add_webhook(e.p, "acme", rcv.url, "--events",
                                    "queued,delivered")
        e.send(["ok@dest.test"], "retry")
        evs = rcv.wait_accepted(
            lambda ev: story(ev, "ok@dest.test") == ["queued", "delivered"],
            timeout=40)
        assert not rcv.errors, rcv.errors
        reqs = rcv.requests
        assert [r["status"] for r in reqs[:3]] == [500, 500, 200]
        # the same first event again after each failure (no loss)
        first = [r["events"][0]["id"] for r in reqs[:3]]
        assert first[0] == first[1] == first[2], first
        # exponential backoff: about 1 s, then about 2 s
        assert reqs[1]["t"] - reqs[0]["t"] >= 0.8
        assert reqs[2]["t"] - reqs[1]["t"] >= 1.6
        assert all(x["type"] in ("queued", "delivered") for x in evs)
        e.p.wait_log(r"event=webhook id=wh\S+ tenant=acme status=failed "
                     r"code=500 ")
    finally:
        rcv.stop()
        sink.stop()


def test_webhook_survives_kill9(petrel_factory, unbound_factory):
    e = Env(petrel_factory, unbound_factory, RECS)
    rcv = Receiver(answers=[503] * 1000)
    sink = make_sink(e, flaky=False)
    try:
        wid, rcv.secret = add_webhook(e.p, "acme", rcv.url)
        qid = e.send(["ok@dest.test", "nobody@dest.test"], "crash")
        e.wait_status(qid, ["delivered", "bounced"])
        # petreld has tried to post the batch, and failed
        pf.wait_for(lambda: any(
            r["events"] and any(x["type"] == "bounced" for x in r["events"])
            for r in rcv.requests), timeout=20, what="a failed batch")
        assert rcv.accepted() == []
        cur = e.p.ctl_json("webhook", "list", "acme")[0]["cursor"]
        e.p.kill9()
        with rcv.cond:
            rcv.answers = []        # the endpoint is healthy again
        e.p.start()
        evs = rcv.wait_accepted(
            lambda ev: story(ev, "ok@dest.test") == ["queued", "delivered"]
            and story(ev, "nobody@dest.test") == ["queued", "bounced"],
            timeout=40)
        assert all(int(x["id"]) > cur for x in evs)
        # the cursor moves on, durably
        pf.wait_for(lambda: e.p.ctl_json("webhook", "list", "acme")[0][
            "cursor"] >= max(int(x["id"]) for x in evs), what="cursor")
        assert wid == e.p.ctl_json("webhook", "list", "acme")[0]["id"]
    finally:
        rcv.stop()
        sink.stop()


def test_dead_endpoint_does_not_delay_delivery(petrel_factory,
                                               unbound_factory):
    mport = pf.free_port()
    e = Env(petrel_factory, unbound_factory, RECS,
            conf={"listen_metrics": "127.0.0.1:%d" % mport})
    silent = Receiver(silent=True)
    sink = make_sink(e, flaky=False)
    try:
        # a closed port, and an endpoint that accepts but never answers
        add_webhook(e.p, "acme", "http://127.0.0.1:%d/x" % pf.free_port())
        _, silent.secret = add_webhook(e.p, "acme", silent.url)
        e.send(["first@dest.test"], "warmup")
        pf.wait_for(lambda: silent.requests, timeout=20,
                    what="a request to the silent endpoint")
        e.p.wait_log(r"event=webhook id=wh\S+ tenant=acme status=failed "
                     r"code=0 ")
        t0 = time.time()
        qid = e.send(["timed@dest.test"], "timed")
        e.wait_status(qid, ["delivered"], timeout=10)
        assert time.time() - t0 < 5, time.time() - t0
        # both webhooks still owe these events: the backlog gauge says so
        body = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % mport,
                                      timeout=10).read().decode()
        m = re.search(r"^petrel_webhook_backlog (\S+)$", body, re.M)
        assert m, body
        assert float(m.group(1)) >= 8    # 4 events x 2 webhooks
    finally:
        silent.stop()
        sink.stop()


def test_events_api_paging_and_rejected(petrel_factory, unbound_factory):
    hport = pf.free_port()
    e = Env(petrel_factory, unbound_factory, RECS,
            conf={"listen_http": "127.0.0.1:%d" % hport})
    sink = make_sink(e, flaky=False)
    try:
        _, _, key = connection_string(e.p.ctl("apikey", "add", "acme").stdout)
        e.p.ctl("tenant", "add", "other")
        _, _, okey = connection_string(e.p.ctl("apikey", "add",
                                               "other").stdout)
        api = Api(hport, key, tls=False, host="127.0.0.1")
        qids = [e.send(["r%d@dest.test" % i], "page%d" % i) for i in range(3)]
        for q in qids:
            e.wait_status(q, ["delivered"])
        # an SMTP policy refusal: a sender domain that is not acme's
        with smtplib.SMTP("127.0.0.1", e.p.ports["relay"], timeout=10) as s:
            s.ehlo("client.test")
            code, msg = s.mail("someone@elsewhere.test")
            assert code == 550, (code, msg)
        # and one through the HTTP API
        st, _, d = api.send({"senderAddress": "x@elsewhere.test",
                             "content": {"subject": "s", "plainText": "t"},
                             "recipients": {"to": [{"address":
                                                    "r@dest.test"}]}})
        assert st == 403, d
        pf.wait_for(lambda: len(api.request(
            "GET", "/events?since=0&types=rejected")[2]["events"]) == 2,
            what="two rejected events")
        st, _, d = api.request("GET", "/events?since=0&limit=1000")
        assert st == 200, d
        every = d["events"]
        check_ids_increase(every)
        types = [x["type"] for x in every]
        assert types.count("queued") == 3 and types.count("delivered") == 3
        rej = [x for x in every if x["type"] == "rejected"]
        assert len(rej) == 2, every
        assert rej[1]["details"]["code"] == 403
        assert rej[1]["details"]["stage"] == "http"
        assert rej[0]["details"]["client"] == "127.0.0.1", rej[0]
        assert rej[0]["details"]["code"] == 550
        assert rej[0]["details"]["enhanced"] == "5.7.1"
        assert "not allowed" in rej[0]["details"]["reason"]
        assert rej[0]["tenant"] == "acme"
        assert d["next"] == every[-1]["id"]
        # paging: 2 at a time gives the same events in the same order
        got, since = [], "0"
        for _ in range(20):
            st, _, d = api.request("GET", "/events?since=%s&limit=2" % since)
            assert st == 200
            if not d["events"]:
                assert d["next"] == since
                break
            assert len(d["events"]) <= 2
            got += d["events"]
            since = d["next"]
        assert got == every
        # filter by type
        st, _, d = api.request("GET", "/events?since=0&types=rejected")
        assert [x["type"] for x in d["events"]] == ["rejected"] * 2
        # another tenant sees none of them; bad input; no key
        oapi = Api(hport, okey, tls=False, host="127.0.0.1")
        st, _, d = oapi.request("GET", "/events?since=0")
        assert st == 200 and d["events"] == [] and d["next"] == "0"
        st, _, d = api.request("GET", "/events?since=abc")
        assert st == 400, d
        st, _, d = api.request("GET", "/events?since=0&limit=0")
        assert st == 400, d
        st, _, d = api.request("GET", "/events?since=0", auth=None)
        assert st == 401, d
        # log search finds the same story petreld logged
        q = e.p.ctl_json("log", "search", "--recipient", "r1@dest.test")
        assert [x["type"] for x in q] == ["queued", "delivered"]
        assert q[0]["qid"] == qids[1]
        # a refusal after DATA (foreign From) is found by its Message-ID
        # and names its one recipient
        with smtplib.SMTP("127.0.0.1", e.p.ports["relay"], timeout=10) as s:
            s.ehlo("client.test")
            assert s.mail(e.sender)[0] == 250
            assert s.rcpt("r9@dest.test")[0] == 250
            code, msg = s.data(b"From: x@elsewhere.test\r\n"
                               b"Message-ID: <rej-data@app.test>\r\n"
                               b"Subject: s\r\n\r\nbody\r\n")
            assert code == 550, (code, msg)
        q = pf.wait_for(lambda: e.p.ctl_json(
            "log", "search", "--message-id", "rej-data@app.test"),
            what="the DATA refusal's event")
        assert [x["type"] for x in q] == ["rejected"], q
        assert q[0]["recipient"] == "r9@dest.test", q
        assert q[0]["message_id"] == "<rej-data@app.test>", q
        assert q[0]["details"]["stage"] == "data", q
    finally:
        sink.stop()


def test_webhook_commands(petrel_factory):
    p = petrel_factory()
    p.setup_tenant()
    wid, secret = add_webhook(p, "acme", "https://hooks.example.test/in",
                              "--events", "bounced, delivered")
    r = p.ctl("webhook", "list", "acme")
    assert wid in r.stdout and "events=delivered,bounced" in r.stdout
    assert secret not in r.stdout
    lst = p.ctl_json("webhook", "list", "acme")
    assert len(lst) == 1 and lst[0]["id"] == wid
    assert lst[0]["url"] == "https://hooks.example.test/in"
    assert lst[0]["events"] == ["delivered", "bounced"]
    assert "secret" not in lst[0] and secret not in json.dumps(lst)
    # a second webhook gets another secret
    wid2, secret2 = add_webhook(p, "acme", "http://127.0.0.1:9/x",
                                "--events=queued")
    assert wid2 != wid and secret2 != secret
    for bad in (["acme", "ftp://x.test/"], ["acme", "not a url"],
                ["acme", "http:///nohost"],
                ["acme", "http://x.test/", "--events", "opened,bogus"],
                ["nosuch", "http://x.test/"]):
        r = p.ctl("webhook", "add", *bad, check=False)
        assert r.returncode != 0, bad
        assert "secret" not in r.stdout
    r = p.ctl("webhook", "del", "other-tenant", wid, check=False)
    assert r.returncode != 0
    p.ctl("tenant", "add", "beta")
    r = p.ctl("webhook", "del", "beta", wid, check=False)
    assert r.returncode == 1 and "no such webhook" in r.stderr
    p.ctl("webhook", "del", "acme", wid)
    assert [w["id"] for w in p.ctl_json("webhook", "list", "acme")] == [wid2]
    r = p.ctl("webhook", "del", "acme", wid, check=False)
    assert r.returncode == 1
    # the store stays private
    for f in os.listdir(p.data_dir):
        mode = stat.S_IMODE(os.stat(os.path.join(p.data_dir, f)).st_mode)
        assert mode & 0o077 == 0, (f, oct(mode))
    # petreld picks webhooks up and never logs a secret
    p.wait_log(r"event=webhook_load id=%s tenant=acme" % wid2)
    assert secret not in p.log() and secret2 not in p.log()


def test_webhook_https(petrel_factory, unbound_factory, certs):
    e = Env(petrel_factory, unbound_factory, RECS,
            conf={"webhook_ca_file": certs["ca"]})
    rcv = Receiver(certs=certs)
    sink = make_sink(e, flaky=False)
    try:
        _, rcv.secret = add_webhook(e.p, "acme", rcv.url)
        e.send(["ok@dest.test"], "tls")
        rcv.wait_accepted(
            lambda ev: story(ev, "ok@dest.test") == ["queued", "delivered"])
        assert not rcv.errors, rcv.errors
    finally:
        rcv.stop()
        sink.stop()


def test_webhook_https_untrusted(petrel_factory, unbound_factory, certs):
    # the system CAs do not know the test CA: nothing is posted
    e = Env(petrel_factory, unbound_factory, RECS)
    rcv = Receiver(certs=certs)
    sink = make_sink(e, flaky=False)
    try:
        _, rcv.secret = add_webhook(e.p, "acme", rcv.url)
        qid = e.send(["ok@dest.test"], "tls")
        e.wait_status(qid, ["delivered"])
        e.p.wait_log(r"event=webhook id=wh\S+ tenant=acme status=failed "
                     r"code=0 ")
        assert rcv.requests == []
    finally:
        rcv.stop()
        sink.stop()
