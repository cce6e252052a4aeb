"""test_delivery - outbound delivery (issue 5): MX order and fallback,
implicit and null MX, one transaction per domain, bounces with RFC 3464
DSNs, deferral and retry, expiry, crash and restart, petrelctl queue
flush / message delete / message show.

Every remote is local: a real unbound on 127.0.0.1 answers the MX and
address records, aiosmtpd sinks (and a tiny 421 greeter) listen on
127.0.0.2, 127.0.0.3, ... on one port, which petreld uses through
smtp_remote_port.
"""

import email
import re
import smtplib
import socket
import threading
import time
from email.policy import default as default_policy

import pytest

import petrel_fixtures as pf

HOSTS = ["127.0.0.%d" % i for i in range(2, 7)]


class Env:
    """a petreld with a tenant (relay network 127/8), an unbound and the
    sink port"""

    def __init__(self, petrel_factory, unbound_factory, records, conf=None,
                 sender_mx=None):
        self.port = pf.common_port(HOSTS)
        c = {"retry_schedule": "1s, 2s", "smtp_remote_port": self.port,
             "smtp_connect_timeout": "5s", "smtp_timeout": "10s"}
        c.update(conf or {})
        self.p = petrel_factory(c, start=False)
        self.t = self.p.setup_tenant()
        self.p.ctl("network", "add", self.t["tenant"], "127.0.0.0/8")
        self.sender = "app@%s" % self.t["domain"]
        recs = list(records)
        if sender_mx:
            # the sender's domain has an MX: DSNs go there
            recs += [(self.t["domain"], "MX", "10 mx.sender.test."),
                     ("mx.sender.test", "A", sender_mx)]
        self.ub = unbound_factory(recs)
        self.p.conf["resolver"] = self.ub.addr
        self.p.write_conf()
        self.p.start()

    def send(self, rcpts, subject="test", msgid=None, body="hello\r\n",
             mail_from=None):
        """submit through the relay listener; returns the queue id"""
        msgid = msgid or "<%s.%f@app.test>" % (subject.replace(" ", "-"),
                                               time.time())
        data = ("From: %s\r\nTo: %s\r\nSubject: %s\r\nMessage-ID: %s\r\n"
                "\r\n%s" % (self.sender, ", ".join(rcpts), subject, msgid,
                            body))
        with smtplib.SMTP("127.0.0.1", self.p.ports["relay"], timeout=10) as s:
            s.ehlo("client.test")
            code, _ = s.mail(mail_from if mail_from is not None
                             else self.sender)
            assert code == 250
            for r in rcpts:
                code, msg = s.rcpt(r)
                assert code == 250, (r, code, msg)
            code, msg = s.data(data.encode())
            assert code == 250, msg
        m = re.search(rb"queued as ([0-9A-Z]{14})", msg)
        assert m, msg
        return m.group(1).decode()

    def show(self, qid):
        return self.p.ctl_json("message", "show", qid)

    def statuses(self, qid):
        return [r["status"] for r in self.show(qid)["recipients"]]

    def wait_status(self, qid, want, timeout=20):
        return pf.wait_for(lambda: self.statuses(qid) == want and
                           self.show(qid), timeout=timeout,
                           what="%s recipients %s" % (qid, want))


def fresh(sink_factory, host, port, **kw):
    return sink_factory(host=host, port=port, **kw)


class Greeter421:
    """a server that answers every connection with a 421 greeting"""

    def __init__(self, host, port):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(16)
        self.hits = 0
        self.stop_ = False
        self.th = threading.Thread(target=self.run, daemon=True)
        self.th.start()

    def run(self):
        while not self.stop_:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.hits += 1
            try:
                c.sendall(b"421 4.3.2 busy, try later\r\n")
                c.close()
            except OSError:
                pass

    def stop(self):
        self.stop_ = True
        self.sock.close()


def dsn_of(msg):
    """(human text, delivery-status text, headers part) of a DSN"""
    m = email.message_from_bytes(msg["data"], policy=default_policy)
    assert m.get_content_type() == "multipart/report", m.get_content_type()
    assert m.get_param("report-type") == "delivery-status"
    parts = list(m.iter_parts())
    assert [p.get_content_type() for p in parts] == [
        "text/plain", "message/delivery-status", "text/rfc822-headers"]
    raw = msg["data"].decode("utf-8", "replace")
    st = raw.split("Content-Type: message/delivery-status", 1)[1]
    st = st.split("Content-Type: text/rfc822-headers", 1)[0]
    hdrs = raw.split("Content-Type: text/rfc822-headers", 1)[1]
    return m, st, hdrs


# ------------------------------------------------------------ MX selection

def test_mx_order_and_fallback(petrel_factory, unbound_factory, sink_factory):
    recs = [("dest.test", "MX", "10 mx1.dest.test."),
            ("dest.test", "MX", "20 mx2.dest.test."),
            ("dest.test", "MX", "30 mx3.dest.test."),
            ("mx1.dest.test", "A", HOSTS[0]),     # nothing listens
            ("mx2.dest.test", "A", HOSTS[1]),
            ("mx3.dest.test", "A", HOSTS[2]),
            ("busy.test", "MX", "10 mx1.busy.test."),
            ("busy.test", "MX", "20 mx2.busy.test."),
            ("mx1.busy.test", "A", HOSTS[3]),     # 421 greeting
            ("mx2.busy.test", "A", HOSTS[2])]
    e = Env(petrel_factory, unbound_factory, recs)
    s2 = fresh(sink_factory, HOSTS[1], e.port)
    s3 = fresh(sink_factory, HOSTS[2], e.port)
    g = Greeter421(HOSTS[3], e.port)
    try:
        qid = e.send(["bob@dest.test"], "fallback")
        got = s2.wait_for(1, timeout=20)
        assert got[0]["rcpt_tos"] == ["bob@dest.test"]
        assert got[0]["mail_from"] == e.sender
        assert got[0]["helo"] == "petrel.test"
        shown = e.wait_status(qid, ["delivered"])
        r = shown["recipients"][0]
        assert r["attempts"] == 1
        assert r["last_reply"]["code"] == 250
        assert r["last_reply"]["relay"] == "mx2.dest.test[%s]:%d" % (
            HOSTS[1], e.port)
        # the lower preference was tried and refused; the higher one unused
        e.p.wait_log(r"event=connect dest=mx:dest\.test relay=mx1\.dest\.test"
                     r"\[127\.0\.0\.2\]:%d status=" % e.port)
        e.p.wait_log(r"qid=%s tenant=\S+ rcpt=bob@dest\.test status=delivered "
                     r"relay=mx2\.dest\.test\[127\.0\.0\.3\]:%d attempts=1 "
                     r'reply="250 ' % (qid, e.port))
        # 421 greeting from the best MX: next MX
        qid2 = e.send(["carol@busy.test"], "busy")
        got3 = s3.wait_for(1, timeout=20)
        assert got3[0]["rcpt_tos"] == ["carol@busy.test"]
        e.wait_status(qid2, ["delivered"])
        assert g.hits >= 1
        assert len(s3.messages) == 1   # mx3.dest.test never used
    finally:
        g.stop()


def test_implicit_mx(petrel_factory, unbound_factory, sink_factory):
    e = Env(petrel_factory, unbound_factory,
            [("plain.test", "A", HOSTS[1])])
    s = fresh(sink_factory, HOSTS[1], e.port)
    qid = e.send(["dave@plain.test"], "implicit")
    assert s.wait_for(1, timeout=20)[0]["rcpt_tos"] == ["dave@plain.test"]
    e.wait_status(qid, ["delivered"])


def test_ipv6_mx(petrel_factory, unbound_factory, sink_factory):
    e = Env(petrel_factory, unbound_factory,
            [("v6.test", "MX", "10 mx.v6.test."),
             ("mx.v6.test", "AAAA", "::1")])
    try:
        s = fresh(sink_factory, "::1", e.port)
    except OSError as ex:
        pytest.skip("no IPv6 loopback: %s" % ex)
    qid = e.send(["six@v6.test"], "ipv6")
    assert s.wait_for(1, timeout=20)[0]["rcpt_tos"] == ["six@v6.test"]
    shown = e.wait_status(qid, ["delivered"])
    assert shown["recipients"][0]["last_reply"]["relay"] == \
        "mx.v6.test[::1]:%d" % e.port


def test_mx_answer_kept_no_longer_than_its_ttl(petrel_factory,
                                              unbound_factory, sink_factory):
    """a destination still busy after its records' TTL looks them up
    again: a new connection goes to the new MX"""
    ttl_recs = lambda mx, ip: [("ttl.test", "MX", "10 %s." % mx, 1),
                               (mx, "A", ip, 1)]
    e = Env(petrel_factory, unbound_factory,
            ttl_recs("mx1.ttl.test", HOSTS[0]))
    in_data = threading.Event()

    def slow(envelope):
        in_data.set()
        time.sleep(4)       # holds the first connection busy
        return None
    s1 = fresh(sink_factory, HOSTS[0], e.port, data_reply=slow)
    s2 = fresh(sink_factory, HOSTS[1], e.port)
    t0 = time.time()
    qa = e.send(["a@ttl.test"], "first")
    assert in_data.wait(20), "first message never reached mx1"
    e.ub.set_records(ttl_recs("mx2.ttl.test", HOSTS[1]))
    time.sleep(max(0, t0 + 2 - time.time()))   # the 1 s TTL runs out
    qb = e.send(["b@ttl.test"], "second")
    assert s2.wait_for(1, timeout=20)[0]["rcpt_tos"] == ["b@ttl.test"]
    assert s1.wait_for(1, timeout=20)[0]["rcpt_tos"] == ["a@ttl.test"]
    e.wait_status(qa, ["delivered"])
    e.wait_status(qb, ["delivered"])
    assert len(s1.messages) == 1


def test_relayhost(petrel_factory, unbound_factory, sink_factory):
    port = pf.common_port(HOSTS)
    e = Env(petrel_factory, unbound_factory, [],
            conf={"relayhost": "[%s]:%d" % (HOSTS[4], port),
                  "transport": "special.test=[%s]:%d" % (HOSTS[3], port)})
    relay = fresh(sink_factory, HOSTS[4], port)
    special = fresh(sink_factory, HOSTS[3], port)
    # no DNS record at all: the smarthost takes everything
    qid = e.send(["x@nowhere.test", "y@special.test"], "smarthost")
    assert relay.wait_for(1, timeout=20)[0]["rcpt_tos"] == ["x@nowhere.test"]
    assert special.wait_for(1, timeout=20)[0]["rcpt_tos"] == ["y@special.test"]
    e.wait_status(qid, ["delivered", "delivered"])


# ------------------------------------------------------------ bounces

def test_null_mx_bounces_with_dsn(petrel_factory, unbound_factory,
                                  sink_factory):
    recs = [("nullmx.test", "MX", "0 .")]
    port = pf.common_port(HOSTS)
    e = Env(petrel_factory, unbound_factory, recs,
            conf={"smtp_remote_port": port}, sender_mx=HOSTS[2])
    e.port = port
    back = fresh(sink_factory, HOSTS[2], port)
    qid = e.send(["nobody@nullmx.test"], "nullmx")
    shown = e.wait_status(qid, ["bounced"])
    lr = shown["recipients"][0]["last_reply"]
    assert lr["enhanced"] == "5.1.10" and lr["code"] == 556, lr
    dsn = back.wait_for(1, timeout=20)[0]
    assert dsn["mail_from"] in ("", "<>")
    assert dsn["rcpt_tos"] == [e.sender]
    m, st, hdrs = dsn_of(dsn)
    assert "Reporting-MTA: dns; petrel.test" in st
    assert "Final-Recipient: rfc822; nobody@nullmx.test" in st
    assert "Status: 5.1.10" in st and "Action: failed" in st
    assert "Subject: nullmx" in hdrs
    e.p.wait_log(r"qid=%s .*rcpt=nobody@nullmx\.test status=bounced" % qid)
    # the DSN itself was delivered and is done
    assert e.p.ctl_json("queue", "list") == [] or pf.wait_for(
        lambda: e.p.ctl_json("queue", "list") == [], timeout=10)


def test_nxdomain_bounces(petrel_factory, unbound_factory, sink_factory):
    e = Env(petrel_factory, unbound_factory, [])
    qid = e.send(["who@nxdomain.test"], "nx")
    shown = e.wait_status(qid, ["bounced"])
    assert shown["recipients"][0]["last_reply"]["enhanced"] == "5.1.2"
    # the sender's domain has no MX here: the DSN bounces too, and no DSN
    # is made for a DSN (null sender)
    e.p.wait_log(r"event=dsn status=queued dsn_qid=")
    time.sleep(1)
    assert len(re.findall(r"event=dsn status=queued", e.p.log())) == 1


def test_550_bounce_and_dsn_to_sender_mx(petrel_factory, unbound_factory,
                                         sink_factory):
    recs = [("dest.test", "MX", "10 mx.dest.test."),
            ("mx.dest.test", "A", HOSTS[1])]
    e = Env(petrel_factory, unbound_factory, recs, sender_mx=HOSTS[2])

    def rcpt_reply(addr):
        return "550 5.1.1 no such user: <%s>" % addr if "bad" in addr else None
    remote = fresh(sink_factory, HOSTS[1], e.port, reply=rcpt_reply)
    back = fresh(sink_factory, HOSTS[2], e.port)
    qid = e.send(["good@dest.test", "bad@dest.test"], "partly bounced")
    got = remote.wait_for(1, timeout=20)
    assert got[0]["rcpt_tos"] == ["good@dest.test"]
    shown = e.wait_status(qid, ["delivered", "bounced"])
    bad = shown["recipients"][1]
    assert bad["last_reply"]["code"] == 550
    assert bad["last_reply"]["enhanced"] == "5.1.1"
    assert "no such user" in bad["last_reply"]["text"]
    dsn = back.wait_for(1, timeout=20)[0]
    assert dsn["mail_from"] in ("", "<>") and dsn["rcpt_tos"] == [e.sender]
    m, st, hdrs = dsn_of(dsn)
    assert b"\r\nTo: <%s>\r\n" % e.sender.encode() in dsn["data"]
    assert "Final-Recipient: rfc822; bad@dest.test" in st
    assert "good@dest.test" not in st
    assert "Status: 5.1.1" in st
    assert "Remote-MTA: dns; mx.dest.test" in st
    assert re.search(r"Diagnostic-Code: smtp; 550 5\.1\.1 no such user", st)
    assert "Arrival-Date: " in st
    assert "\r" not in st.replace("\r\n", "")
    assert "Subject: partly bounced" in hdrs
    # one DSN per bounce event
    time.sleep(1.5)
    assert len(back.messages) == 1


def test_dsn_parameters(petrel_factory, unbound_factory, sink_factory):
    """RFC 3461 parameters given at submission: NOTIFY=NEVER and
    NOTIFY=SUCCESS get no failure report, ORCPT and ENVID appear in the
    report, RET=FULL returns the whole message"""
    recs = [("dest.test", "MX", "10 mx.dest.test."),
            ("mx.dest.test", "A", HOSTS[1])]
    e = Env(petrel_factory, unbound_factory, recs, sender_mx=HOSTS[2])
    fresh(sink_factory, HOSTS[1], e.port,
          reply=lambda a: "550 5.1.1 no such user")
    back = fresh(sink_factory, HOSTS[2], e.port)
    data = ("From: %s\r\nTo: x@dest.test\r\nSubject: dsn params\r\n"
            "Message-ID: <dsnp.%f@app.test>\r\n\r\nthe whole body\r\n"
            % (e.sender, time.time())).encode()
    with smtplib.SMTP("127.0.0.1", e.p.ports["relay"], timeout=10) as s:
        s.ehlo("client.test")
        code, _ = s.mail(e.sender, ["ENVID=env+2B1", "RET=FULL"])
        assert code == 250
        for rcpt, opts in (("never@dest.test", ["NOTIFY=NEVER"]),
                           ("success@dest.test", ["NOTIFY=SUCCESS"]),
                           ("fail@dest.test", ["NOTIFY=FAILURE,DELAY",
                            "ORCPT=rfc822;orig+40example.test"]),
                           ("plain@dest.test", [])):
            assert s.rcpt(rcpt, opts)[0] == 250, rcpt
        code, msg = s.data(data)
        assert code == 250, msg
    qid = re.search(rb"queued as ([0-9A-Z]{14})", msg).group(1).decode()
    e.wait_status(qid, ["bounced"] * 4)
    dsn = back.wait_for(1, timeout=20)[0]
    m = email.message_from_bytes(dsn["data"], policy=default_policy)
    parts = list(m.iter_parts())
    assert [p.get_content_type() for p in parts] == [
        "text/plain", "message/delivery-status", "message/rfc822"]
    raw = dsn["data"].decode()
    st = raw.split("Content-Type: message/delivery-status", 1)[1]
    st = st.split("Content-Type: message/rfc822", 1)[0]
    assert "Original-Envelope-Id: env+1\r\n" in st, st
    assert "Final-Recipient: rfc822; fail@dest.test" in st
    assert "Original-Recipient: rfc822;orig@example.test\r\n" \
        "Final-Recipient: rfc822; fail@dest.test" in st, st
    assert "Final-Recipient: rfc822; plain@dest.test" in st
    assert "never@dest.test" not in st and "success@dest.test" not in st
    assert "the whole body" in raw.split("Content-Type: message/rfc822")[1]
    time.sleep(1.5)
    assert len(back.messages) == 1


# ------------------------------------------------------------ retries

def test_451_deferred_then_delivered(petrel_factory, unbound_factory,
                                     sink_factory):
    recs = [("dest.test", "MX", "10 mx.dest.test."),
            ("mx.dest.test", "A", HOSTS[1])]
    e = Env(petrel_factory, unbound_factory, recs,
            conf={"retry_schedule": "2s, 3s"})
    state = {"n": 0}

    def data_reply(envelope):
        state["n"] += 1
        return "451 4.3.0 try again later" if state["n"] == 1 else None
    s = fresh(sink_factory, HOSTS[1], e.port, data_reply=data_reply)
    qid = e.send(["a@dest.test", "b@dest.test"], "retry")
    shown = e.wait_status(qid, ["deferred", "deferred"])
    r = shown["recipients"][0]
    assert r["attempts"] == 1
    assert r["last_reply"]["code"] == 451
    assert r["last_reply"]["text"].startswith("try again later") or \
        "try again" in r["last_reply"]["text"]
    assert r["next_attempt"] >= r["updated_at"] + 1
    listed = e.p.ctl_json("queue", "list")
    assert [x["id"] for x in listed] == [qid]
    assert listed[0]["status"] == "deferred"
    assert listed[0]["next_attempt"] == r["next_attempt"]
    assert "in " in e.p.ctl("queue", "list").stdout
    e.p.wait_log(r"qid=%s .*rcpt=a@dest\.test status=deferred .*"
                 r'reply="451 4\.3\.0 try again later' % qid)
    got = s.wait_for(1, timeout=20)
    assert sorted(got[0]["rcpt_tos"]) == ["a@dest.test", "b@dest.test"]
    shown = e.wait_status(qid, ["delivered", "delivered"])
    for r in shown["recipients"]:
        assert r["attempts"] == 2
        assert r["last_reply"]["code"] == 250
        assert isinstance(r["updated_at"], int)
    assert len(s.attempts) == 2
    assert e.p.ctl_json("queue", "list") == []
    # kept after the message is done
    time.sleep(1.2)
    assert e.statuses(qid) == ["delivered", "delivered"]


def test_expiry_bounces_447(petrel_factory, unbound_factory, sink_factory):
    recs = [("dest.test", "MX", "10 mx.dest.test."),
            ("mx.dest.test", "A", HOSTS[1])]
    # retries are due in whole seconds and picked up by a 1 s scan, so
    # attempts are 1-2 s apart: 4 s leaves room for three
    e = Env(petrel_factory, unbound_factory, recs, sender_mx=HOSTS[2],
            conf={"retry_schedule": "1s", "queue_lifetime": "4s"})
    remote = fresh(sink_factory, HOSTS[1], e.port,
                   data_reply="451 4.7.1 greylisted")
    back = fresh(sink_factory, HOSTS[2], e.port)
    qid = e.send(["late@dest.test"], "expiring")
    shown = e.wait_status(qid, ["bounced"], timeout=30)
    r = shown["recipients"][0]
    assert r["last_reply"]["enhanced"] == "4.4.7"
    assert r["attempts"] >= 3
    assert len(remote.attempts) == r["attempts"]
    dsn = back.wait_for(1, timeout=20)[0]
    _, st, _ = dsn_of(dsn)
    assert "Status: 4.4.7" in st
    assert "Final-Recipient: rfc822; late@dest.test" in st
    assert "greylisted" in st


def test_expiry_keeps_each_recipients_last_error(petrel_factory,
                                                 unbound_factory,
                                                 sink_factory):
    """expiring between attempts: every recipient bounces with its own
    last reply, not the first recipient's"""
    recs = [("d1.test", "MX", "10 mx.d1.test."), ("mx.d1.test", "A", HOSTS[1]),
            ("d2.test", "MX", "10 mx.d2.test."), ("mx.d2.test", "A", HOSTS[3])]
    e = Env(petrel_factory, unbound_factory, recs, sender_mx=HOSTS[2],
            conf={"retry_schedule": "6s", "queue_lifetime": "4s"})
    fresh(sink_factory, HOSTS[1], e.port,
          reply=lambda a: "451 4.7.1 greylisted")
    fresh(sink_factory, HOSTS[3], e.port,
          reply=lambda a: "452 4.2.2 mailbox full")
    back = fresh(sink_factory, HOSTS[2], e.port)
    qid = e.send(["a@d1.test", "b@d2.test"], "two-errors")
    e.wait_status(qid, ["deferred", "deferred"])
    shown = e.wait_status(qid, ["bounced", "bounced"], timeout=30)
    a, b = shown["recipients"]
    assert a["last_reply"]["code"] == 451, a
    assert b["last_reply"]["code"] == 452, b
    assert a["last_reply"]["enhanced"] == b["last_reply"]["enhanced"] \
        == "4.4.7"
    assert "greylisted" in a["last_reply"]["text"], a
    assert "mailbox full" in b["last_reply"]["text"], b
    assert "greylisted" not in b["last_reply"]["text"], b
    _, st, _ = dsn_of(back.wait_for(1, timeout=20)[0])
    per = st.split("Final-Recipient:")
    da = [p for p in per if "a@d1.test" in p][0]
    db = [p for p in per if "b@d2.test" in p][0]
    assert "greylisted" in da and "mailbox full" in db, st
    # our own finding, not a server's reply: no "smtp" diagnostic type
    assert "Diagnostic-Code: X-Petrel; Message expired" in da, da
    assert "Diagnostic-Code: smtp;" not in st, st


# ------------------------------------------------------------ transactions

def test_multi_recipient_single_transaction(petrel_factory, unbound_factory,
                                            sink_factory):
    recs = [("dest.test", "MX", "10 mx.dest.test."),
            ("mx.dest.test", "A", HOSTS[1]),
            ("other.test", "MX", "10 mx.other.test."),
            ("mx.other.test", "A", HOSTS[2])]
    e = Env(petrel_factory, unbound_factory, recs)
    s = fresh(sink_factory, HOSTS[1], e.port)
    o = fresh(sink_factory, HOSTS[2], e.port)
    qid = e.send(["one@dest.test", "x@other.test", "two@DEST.test"], "multi")
    got = s.wait_for(1, timeout=20)
    assert sorted(got[0]["rcpt_tos"]) == ["one@dest.test", "two@DEST.test"]
    assert o.wait_for(1, timeout=20)[0]["rcpt_tos"] == ["x@other.test"]
    e.wait_status(qid, ["delivered"] * 3)
    time.sleep(0.5)
    assert len(s.attempts) == 1 and len(o.attempts) == 1


def test_connection_reuse_and_concurrency(petrel_factory, unbound_factory,
                                          sink_factory):
    recs = [("dest.test", "MX", "10 mx.dest.test."),
            ("mx.dest.test", "A", HOSTS[1])]
    e = Env(petrel_factory, unbound_factory, recs,
            conf={"smtp_destination_concurrency": 2})
    s = fresh(sink_factory, HOSTS[1], e.port)
    qids = [e.send(["r%d@dest.test" % i], "reuse %d" % i) for i in range(12)]
    s.wait_for(12, timeout=30)
    peers = {m["peer"] for m in s.messages}
    # at most two connections at a time, reused for the others
    assert len(peers) < 12, peers
    for q in qids:
        e.wait_status(q, ["delivered"])


def test_domains_sharing_an_mx_share_its_connection(petrel_factory,
                                                    unbound_factory,
                                                    sink_factory):
    """a.test and b.test both have mx.shared.test: the message to b.test
    goes over the connection the a.test one left idle"""
    recs = [("a.test", "MX", "10 mx.shared.test."),
            ("b.test", "MX", "10 mx.shared.test."),
            ("c.test", "MX", "10 mx.other.test."),
            ("mx.shared.test", "A", HOSTS[1]),
            ("mx.other.test", "A", HOSTS[1])]
    e = Env(petrel_factory, unbound_factory, recs)
    s = fresh(sink_factory, HOSTS[1], e.port)
    qa = e.send(["x@a.test"], "shared a")
    e.wait_status(qa, ["delivered"])
    qb = e.send(["y@b.test"], "shared b")
    e.wait_status(qb, ["delivered"])
    # another MX host name at the same address: its own connection (its
    # TLS identity is another name)
    qc = e.send(["z@c.test"], "other c")
    e.wait_status(qc, ["delivered"])
    got = s.wait_for(3, timeout=20)
    assert [m["rcpt_tos"] for m in got] == [["x@a.test"], ["y@b.test"],
                                            ["z@c.test"]]
    assert got[0]["peer"] == got[1]["peer"], got
    assert got[2]["peer"] != got[1]["peer"], got
    e.p.wait_log(r"event=reuse relay=mx\.shared\.test\S* from=mx:a\.test "
                 r"dest=mx:b\.test")


# ------------------------------------------------------------ petrelctl

def test_flush_delete_show(petrel_factory, unbound_factory, sink_factory):
    recs = [("dest.test", "MX", "10 mx.dest.test."),
            ("mx.dest.test", "A", HOSTS[1])]
    e = Env(petrel_factory, unbound_factory, recs,
            conf={"retry_schedule": "1h"})
    state = {"accept": False}
    s = fresh(sink_factory, HOSTS[1], e.port,
              data_reply=lambda env: None if state["accept"]
              else "452 4.2.2 mailbox full")
    q1 = e.send(["f@dest.test"], "flush me")
    q2 = e.send(["d@dest.test"], "delete me")
    for q in (q1, q2):
        shown = e.wait_status(q, ["deferred"])
        assert shown["recipients"][0]["next_attempt"] > time.time() + 3000
    listed = {x["id"]: x for x in e.p.ctl_json("queue", "list")}
    assert set(listed) == {q1, q2}
    assert all(x["status"] == "deferred" for x in listed.values())
    human = e.p.ctl("queue", "list").stdout
    assert q1 in human and re.search(r"in (59m|60m|1h)", human), human
    shown = e.p.ctl("message", "show", q1).stdout
    assert "deferred" in shown and "452 4.2.2 mailbox full" in shown
    # delete one
    tried_d = sum(m["rcpt_tos"] == ["d@dest.test"] for m in s.attempts)
    assert tried_d == 1
    r = e.p.ctl("message", "delete", q2)
    assert q2 in r.stdout
    r = e.p.ctl("message", "show", q2, check=False)
    assert r.returncode == 1 and "no such message" in r.stderr
    assert e.p.ctl("message", "delete", q2, check=False).returncode == 1
    # flush: the deferred one goes now, though its retry is an hour away
    state["accept"] = True
    assert "1 message" in e.p.ctl("queue", "flush").stdout
    got = s.wait_for(1, timeout=15)
    assert got[0]["rcpt_tos"] == ["f@dest.test"]
    shown = e.wait_status(q1, ["delivered"])
    r = shown["recipients"][0]
    assert r["attempts"] == 2
    assert r["last_reply"]["code"] == 250
    assert r["last_reply"]["text"]
    assert r["updated_at"] >= shown["received_at"]
    assert shown["stage"] == "done"
    assert e.p.ctl_json("queue", "list") == []
    time.sleep(1.5)
    assert sum(m["rcpt_tos"] == ["d@dest.test"] for m in s.attempts) == 1


# ------------------------------------------------------------ crash

def test_kill9_during_delivery_no_loss(petrel_factory, unbound_factory,
                                       sink_factory):
    recs = [("dest.test", "MX", "10 mx.dest.test."),
            ("mx.dest.test", "A", HOSTS[1])]
    e = Env(petrel_factory, unbound_factory, recs,
            conf={"retry_schedule": "1s"})
    gate = threading.Event()

    def slow(envelope):
        # hold some transactions open across the kill
        if not gate.is_set():
            time.sleep(0.05)
        return None
    s = fresh(sink_factory, HOSTS[1], e.port, data_reply=slow)
    N = 40
    qids = {}
    for i in range(N):
        mid = "<crash-%d@app.test>" % i
        qids[e.send(["c%d@dest.test" % i], "crash %d" % i, msgid=mid)] = mid
    pf.wait_for(lambda: len(s.messages) >= 5, timeout=20,
                what="some deliveries before the kill")
    e.p.kill9()
    gate.set()
    time.sleep(0.3)   # transactions cut by the kill end at the sink
    with s.cond:
        seen_before = [m["data"] for m in s.messages]
    before = {}
    for d in seen_before:
        mid = re.search(rb"Message-ID: (<[^>]+>)", d).group(1).decode()
        before[mid] = before.get(mid, 0) + 1
    recorded = {q for q in qids
                if e.statuses(q) == ["delivered"]}
    assert len(recorded) < N, "everything delivered before the kill"
    e.p.start()
    for q in qids:
        e.wait_status(q, ["delivered"], timeout=30)
    after = {}
    for m in s.messages:
        mid = re.search(rb"Message-ID: (<[^>]+>)", m["data"]).group(1).decode()
        after[mid] = after.get(mid, 0) + 1
    # no loss
    assert set(after) == set(qids.values())
    # a message recorded as delivered before the kill is never sent again
    for q in recorded:
        assert after[qids[q]] == before.get(qids[q], 0) == 1, q
    dups = [mid for mid, n in after.items() if n > 1]
    assert len(dups) <= N - len(recorded)
    print("kill -9: %d recorded before the kill, %d duplicates"
          % (len(recorded), len(dups)))
