"""test_metrics - GET /metrics on listen_metrics (issue 8): Prometheus text
format 0.0.4 parsed with prometheus_client's parser, counters that match
the traffic sent, gauges for the queue and open connections, DNS counters,
delivery counters against a real sink, 404 elsewhere, off when unset.

Nothing leaves 127.0.0.0/8: the resolver is a real unbound, or a tiny
SERVFAIL-only DNS server, so that no message is ever delivered when a test
wants it to stay queued.
"""

import base64
import smtplib
import socket
import threading
import time
import urllib.error
import urllib.request

import dns.flags
import dns.message
import dns.rcode
import pytest
from prometheus_client.parser import text_string_to_metric_families

import petrel_fixtures as pf

HOST = "127.0.0.1"

# every family petreld exports, with its type
FAMILIES = {
    "petrel_messages_accepted": "counter",
    "petrel_messages_rejected": "counter",
    "petrel_deliveries": "counter",
    "petrel_outbound_tls": "counter",
    "petrel_queue_messages": "gauge",
    "petrel_queue_oldest_age_seconds": "gauge",
    "petrel_smtp_inbound_connections": "gauge",
    "petrel_smtp_outbound_connections": "gauge",
    "petrel_webhook_backlog": "gauge",
    "petrel_dns_queries": "counter",
    "petrel_dns_failures": "counter",
    "petrel_dkim_sign_seconds": "histogram",
}


# ------------------------------------------------------------------ helpers

def http_get(port, path="/metrics", method="GET"):
    """(status, content type, body text) of one request"""
    req = urllib.request.Request("http://%s:%d%s" % (HOST, port, path),
                                 method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers.get("Content-Type"), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type"), e.read().decode()


class Scrape:
    """Scrape - one parsed /metrics answer"""

    def __init__(self, port):
        status, ctype, self.text = http_get(port)
        assert status == 200, (status, self.text)
        assert ctype.startswith("text/plain; version=0.0.4"), ctype
        self.families = {f.name: f for f in
                         text_string_to_metric_families(self.text)}
        self.samples = {}
        for f in self.families.values():
            for s in f.samples:
                key = (s.name, tuple(sorted(s.labels.items())))
                assert key not in self.samples, "duplicate sample %r" % (key,)
                self.samples[key] = s.value

    def get(self, name, **labels):
        key = (name, tuple(sorted(labels.items())))
        assert key in self.samples, "no sample %s%r in:\n%s" % (
            name, labels, self.text)
        return self.samples[key]


def value(port, name, **labels):
    return Scrape(port).get(name, **labels)


def wait_value(port, name, want, timeout=20, **labels):
    """wait until the sample equals want; returns the last scrape"""
    last = {}

    def ok():
        last["s"] = Scrape(port)
        return last["s"].get(name, **labels) == want
    pf.wait_for(ok, timeout=timeout, what="%s%r == %r" % (name, labels, want))
    return last["s"]


class ServfailDNS:
    """ServfailDNS - a UDP DNS server on 127.0.0.1 answering every query
    with SERVFAIL at once (a resolver that fails fast)"""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((HOST, 0))
        self.port = self.sock.getsockname()[1]
        self.addr = "%s:%d" % (HOST, self.port)
        self.hits = 0
        self.th = threading.Thread(target=self.run, daemon=True)
        self.th.start()

    def run(self):
        while True:
            try:
                data, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            try:
                q = dns.message.from_wire(data)
            except Exception:
                continue
            r = dns.message.make_response(q)
            r.set_rcode(dns.rcode.SERVFAIL)
            r.flags |= dns.flags.RA
            self.hits += 1
            try:
                self.sock.sendto(r.to_wire(), peer)
            except OSError:
                return

    def stop(self):
        self.sock.close()


@pytest.fixture
def servfail():
    s = ServfailDNS()
    yield s
    s.stop()


def relay_petrel(petrel_factory, resolver, conf=None):
    """a petreld with listen_metrics, a tenant with relay network 127/8;
    returns (petrel, tenant, metrics port)"""
    mport = pf.free_port()
    c = {"listen_metrics": "%s:%d" % (HOST, mport), "resolver": resolver,
         "retry_schedule": "1h"}
    c.update(conf or {})
    p = petrel_factory(c)
    t = p.setup_tenant()
    p.ctl("network", "add", t["tenant"], "127.0.0.0/8")
    return p, t, mport


def message(t, rcpt, subject="metrics"):
    return ("From: app@%s\r\nTo: %s\r\nSubject: %s\r\nMessage-ID: "
            "<%s.%f@app.test>\r\n\r\nhello\r\n" % (
                t["domain"], rcpt, subject, subject, time.time())).encode()


# -------------------------------------------------------------- the tests

def test_off_when_unset(petrel_factory):
    """no listen_metrics: nothing listens, no metrics listener is logged"""
    p = petrel_factory()
    assert "listen_metrics" not in p.conf
    m = p.wait_log(r"event=start .*listeners=(\d+)")
    assert "kind=metrics" not in p.log()
    # submission, submissions, relay: no fourth listener
    assert int(m.group(1)) == 3, m.group(0)


def test_format_and_404(petrel_factory):
    """every family has HELP and TYPE and parses; counters start at 0;
    only GET /metrics answers"""
    mport = pf.free_port()
    p = petrel_factory({"listen_metrics": "%s:%d" % (HOST, mport)})
    p.wait_log(r"event=listen addr=127\.0\.0\.1:%d kind=metrics" % mport)
    s = Scrape(mport)
    for name, typ in FAMILIES.items():
        assert name in s.families, "family %s missing:\n%s" % (name, s.text)
        assert s.families[name].type == typ, (name, s.families[name].type)
        assert s.families[name].documentation, name
        expo = name + ("_total" if typ == "counter" else "")
        assert "# HELP %s " % expo in s.text, expo
        assert "# TYPE %s %s\n" % (expo, typ) in s.text, expo
    for lst in ("submission", "submissions", "relay", "http"):
        assert s.get("petrel_messages_accepted_total", listener=lst) == 0
    assert s.get("petrel_messages_rejected_total", reason="policy") == 0
    assert s.get("petrel_deliveries_total", result="delivered",
                 category="none") == 0
    for cat in ("hard", "soft", "policy", "mailbox_full", "dns", "tls",
                "expired"):
        for res in ("deferred", "bounced"):
            assert s.get("petrel_deliveries_total", result=res,
                         category=cat) == 0
    assert s.get("petrel_queue_messages") == 0
    assert s.get("petrel_queue_oldest_age_seconds") == 0
    assert s.get("petrel_smtp_outbound_connections") == 0
    assert s.get("petrel_webhook_backlog") == 0
    assert s.get("petrel_outbound_tls_total", tls="yes") == 0
    assert s.get("petrel_dkim_sign_seconds_count") == 0
    assert s.get("petrel_dkim_sign_seconds_bucket", le="+Inf") == 0

    for path in ("/", "/metric", "/metrics/x", "/emails:send", "/../metrics"):
        status, _, _ = http_get(mport, path)
        assert status == 404, path
    status, _, _ = http_get(mport, "/metrics", method="POST")
    assert status == 404
    status, _, _ = http_get(mport, "/metrics?x=1")
    assert status == 200
    # no tenant authentication, and the SMTP side is untouched
    assert "Authorization" not in p.log()


def test_counters_match_traffic(petrel_factory, servfail, certs):
    """N relayed + K submitted messages -> accepted; M foreign senders ->
    rejected{policy}; none delivered (resolver answers SERVFAIL), so the
    queue gauge counts them all and the oldest one ages"""
    p, t, mport = relay_petrel(petrel_factory, servfail.addr)
    n, k, m = 3, 2, 4
    with smtplib.SMTP(HOST, p.ports["relay"], timeout=10) as s:
        s.ehlo("client.test")
        for i in range(n):
            r = s.sendmail("app@%s" % t["domain"], ["user%d@example.test" % i],
                           message(t, "user%d@example.test" % i))
            assert r == {}
        for i in range(m):
            code, msg = s.mail("someone@foreign%d.example" % i)
            assert code == 550 and msg.startswith(b"5.7.1"), (code, msg)
            s.rset()
    s = smtplib.SMTP_SSL(HOST, p.ports["submissions"], timeout=20,
                         context=pf.client_context(p.certs))
    s.login(t["user"], t["password"])
    for i in range(k):
        s.sendmail("app@%s" % t["domain"], ["sub%d@example.test" % i],
                   message(t, "sub%d@example.test" % i))
    s.quit()

    sc = Scrape(mport)
    assert sc.get("petrel_messages_accepted_total", listener="relay") == n
    assert sc.get("petrel_messages_accepted_total",
                  listener="submissions") == k
    assert sc.get("petrel_messages_accepted_total",
                  listener="submission") == 0
    assert sc.get("petrel_messages_rejected_total", reason="policy") == m
    assert sc.get("petrel_messages_rejected_total", reason="auth") == 0
    assert sc.get("petrel_messages_rejected_total", reason="protocol") == 0
    # every message is still queued: the gauge agrees with petrelctl
    assert sc.get("petrel_queue_messages") == n + k
    assert len(p.ctl_json("queue", "list")) == n + k
    # the oldest message ages with wall time
    age0 = sc.get("petrel_queue_oldest_age_seconds")
    assert 0 <= age0 < 60, age0
    pf.wait_for(lambda: value(mport, "petrel_queue_oldest_age_seconds") >=
                age0 + 1, timeout=10, what="oldest age grows")
    assert value(mport, "petrel_messages_accepted_total",
                 listener="relay") == n

    # a protocol error and an AUTH failure land under their own reasons
    with smtplib.SMTP(HOST, p.ports["relay"], timeout=10) as s:
        s.ehlo("client.test")
        code, _ = s.docmd("BOGUS")
        assert code == 500
    s = smtplib.SMTP_SSL(HOST, p.ports["submissions"], timeout=20,
                         context=pf.client_context(p.certs))
    s.ehlo("client.test")
    cred = base64.b64encode(("\0%s\0wrong-password" % t["user"]).encode())
    code, _ = s.docmd("AUTH", "PLAIN " + cred.decode())
    assert code == 535
    s.close()
    sc = wait_value(mport, "petrel_messages_rejected_total", 1,
                    reason="auth")
    assert sc.get("petrel_messages_rejected_total", reason="protocol") == 1
    assert sc.get("petrel_messages_rejected_total", reason="policy") == m


def test_dns_counters(petrel_factory, servfail):
    """a delivery attempt asks the resolver: queries counted; SERVFAIL
    answers counted as failures"""
    p, t, mport = relay_petrel(petrel_factory, servfail.addr)
    q0 = value(mport, "petrel_dns_queries_total")
    f0 = value(mport, "petrel_dns_failures_total")
    with smtplib.SMTP(HOST, p.ports["relay"], timeout=10) as s:
        s.sendmail("app@%s" % t["domain"], ["user@example.test"],
                   message(t, "user@example.test"))
    pf.wait_for(lambda: servfail.hits >= 1, timeout=20,
                what="a query at the DNS server")
    pf.wait_for(lambda: value(mport, "petrel_dns_failures_total") > f0,
                timeout=30, what="dns failure counted")
    sc = Scrape(mport)
    q, f = (sc.get("petrel_dns_queries_total"),
            sc.get("petrel_dns_failures_total"))
    assert q > q0
    assert f <= q
    # the message stays queued (deferred), and nothing was delivered
    assert sc.get("petrel_queue_messages") == 1
    assert sc.get("petrel_deliveries_total", result="delivered",
                  category="none") == 0


def test_dns_queries_answered(petrel_factory, unbound_factory):
    """answered lookups are counted as queries, not failures"""
    ub = unbound_factory([("example.test.", "MX", "10 mx.example.test."),
                          ("mx.example.test.", "A", "127.0.0.9")])
    p, t, mport = relay_petrel(petrel_factory, ub.addr,
                               conf={"smtp_remote_port": pf.free_port(),
                                     "smtp_connect_timeout": "2s"})
    f0 = value(mport, "petrel_dns_failures_total")
    q0 = value(mport, "petrel_dns_queries_total")
    with smtplib.SMTP(HOST, p.ports["relay"], timeout=10) as s:
        s.sendmail("app@%s" % t["domain"], ["user@example.test"],
                   message(t, "user@example.test"))
    # MX, then the host's A and AAAA
    pf.wait_for(lambda: value(mport, "petrel_dns_queries_total") >= q0 + 3,
                timeout=20, what="MX + A + AAAA queries")
    assert value(mport, "petrel_dns_failures_total") == f0


def test_inbound_connection_gauge(petrel_factory, servfail):
    """the gauge follows connections held open, then falls back to 0"""
    p, t, mport = relay_petrel(petrel_factory, servfail.addr)
    assert value(mport, "petrel_smtp_inbound_connections") == 0
    socks = []
    try:
        for _ in range(5):
            c = socket.create_connection((HOST, p.ports["relay"]),
                                         timeout=10)
            socks.append(c)
            assert c.recv(512).startswith(b"220")
        wait_value(mport, "petrel_smtp_inbound_connections", 5)
        for c in socks[:2]:
            c.close()
        wait_value(mport, "petrel_smtp_inbound_connections", 3)
    finally:
        for c in socks:
            c.close()
    wait_value(mport, "petrel_smtp_inbound_connections", 0)


def test_connection_cap_rejections(petrel_factory, servfail):
    """connections refused by max_connections_per_ip are counted"""
    p, t, mport = relay_petrel(petrel_factory, servfail.addr,
                               conf={"max_connections_per_ip": 2})
    socks = []
    try:
        for _ in range(2):
            c = socket.create_connection((HOST, p.ports["relay"]),
                                         timeout=10)
            socks.append(c)
            assert c.recv(512).startswith(b"220")
        for _ in range(3):
            c = socket.create_connection((HOST, p.ports["relay"]),
                                         timeout=10)
            assert c.recv(512).startswith(b"421 4.7.0")
            c.close()
        sc = Scrape(mport)
        assert sc.get("petrel_messages_rejected_total",
                      reason="connections") == 3
        assert sc.get("petrel_smtp_inbound_connections") == 2
    finally:
        for c in socks:
            c.close()


def test_delivery_counters(petrel_factory, unbound_factory, sink_factory):
    """delivered and bounced recipients by category, outbound TLS share
    and the outbound connection gauge, against a real sink"""
    sink = sink_factory(host="127.0.0.2", reply=lambda rcpt: (
        "550 5.1.1 no such user" if rcpt.startswith("nobody@") else None))
    ub = unbound_factory([("example.test.", "MX", "10 mx.example.test."),
                          ("mx.example.test.", "A", "127.0.0.2")])
    p, t, mport = relay_petrel(petrel_factory, ub.addr,
                               conf={"smtp_remote_port": sink.port})
    rcpts = ["a@example.test", "b@example.test", "nobody@example.test"]
    with smtplib.SMTP(HOST, p.ports["relay"], timeout=10) as s:
        s.sendmail("app@%s" % t["domain"], rcpts, message(t, rcpts[0]))
    sink.wait_for(1, timeout=20)
    # the connection stays open, idle, for reuse (DELIVER_IDLE_MS = 3 s)
    pf.wait_for(lambda: value(mport, "petrel_smtp_outbound_connections") ==
                1, timeout=2.5, what="one outbound connection")
    sc = wait_value(mport, "petrel_deliveries_total", 2, result="delivered",
                    category="none")
    # one connection, kept idle for reuse a moment (DELIVER_IDLE_MS)
    assert sc.get("petrel_outbound_tls_total", tls="no") >= 1
    assert sc.get("petrel_outbound_tls_total", tls="yes") == 0
    pf.wait_for(lambda: value(mport, "petrel_deliveries_total",
                              result="bounced", category="hard") == 1,
                timeout=20, what="one hard bounce")
    sc = Scrape(mport)
    assert sum(v for (n, lab), v in sc.samples.items()
               if n == "petrel_deliveries_total" and
               dict(lab)["result"] == "deferred") == 0
    # the idle connection closes: the gauge returns to 0
    wait_value(mport, "petrel_smtp_outbound_connections", 0, timeout=30)
    # the bounce's DSN went out as a new message: accepted counts only
    # what clients sent
    assert sc.get("petrel_messages_accepted_total", listener="relay") == 1


def test_outbound_tls_share(petrel_factory, unbound_factory, sink_factory,
                            certs):
    """one destination offers STARTTLS, the other does not: one outbound
    connection of each kind"""
    port = pf.common_port(["127.0.0.2", "127.0.0.3"])
    plain = sink_factory(host="127.0.0.2", port=port)
    tls = sink_factory(host="127.0.0.3", port=port, certs=certs)
    ub = unbound_factory([("plain.test.", "MX", "10 mx.plain.test."),
                          ("mx.plain.test.", "A", "127.0.0.2"),
                          ("tls.test.", "MX", "10 mx.tls.test."),
                          ("mx.tls.test.", "A", "127.0.0.3")])
    p, t, mport = relay_petrel(petrel_factory, ub.addr,
                               conf={"smtp_remote_port": port})
    with smtplib.SMTP(HOST, p.ports["relay"], timeout=10) as s:
        for r in ("a@plain.test", "b@tls.test"):
            s.sendmail("app@%s" % t["domain"], [r], message(t, r))
    plain.wait_for(1, timeout=20)
    msgs = tls.wait_for(1, timeout=20)
    assert msgs[0]["tls"]
    sc = wait_value(mport, "petrel_deliveries_total", 2, result="delivered",
                    category="none")
    assert sc.get("petrel_outbound_tls_total", tls="yes") == 1
    assert sc.get("petrel_outbound_tls_total", tls="no") == 1


def test_http_accepted_counted(petrel_factory, servfail):
    """a 202 from POST /emails:send counts as accepted{listener="http"};
    an Operation-Id repeated answers 202 again but is not a second message"""
    hport = pf.free_port()
    p, t, mport = relay_petrel(petrel_factory, servfail.addr,
                               {"listen_http": "%s:%d" % (HOST, hport)})
    out = p.ctl("apikey", "add", t["tenant"], "metrics").stdout
    key = out.split("accesskey=", 1)[1].split()[0]
    body = ('{"senderAddress": "app@%s", "content": {"subject": "m", '
            '"plainText": "hi"}, "recipients": {"to": [{"address": '
            '"r@example.test"}]}}' % t["domain"]).encode()
    for _ in range(2):
        req = urllib.request.Request(
            "http://%s:%d/emails:send?api-version=2023-03-31" % (HOST, hport),
            data=body, method="POST",
            headers={"Authorization": "Bearer " + key,
                     "Content-Type": "application/json",
                     "Operation-Id": "metrics-op-1"})
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 202
    sc = Scrape(mport)
    assert sc.get("petrel_messages_accepted_total", listener="http") == 1
    # refusals count by reason: a foreign sender domain (403), an
    # EmailMessage without recipients (400)
    bad = [body.replace(t["domain"].encode(), b"elsewhere.test"),
           body.replace(b'"to": [{"address": "r@example.test"}]',
                        b'"to": []')]
    assert bad[1] != body
    for b in bad:
        req = urllib.request.Request(
            "http://%s:%d/emails:send?api-version=2023-03-31" % (HOST, hport),
            data=b, method="POST",
            headers={"Authorization": "Bearer " + key,
                     "Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as ei:
            urllib.request.urlopen(req, timeout=10)
        assert ei.value.code in (400, 403)
    sc = Scrape(mport)
    assert sc.get("petrel_messages_rejected_total", reason="policy") == 1
    assert sc.get("petrel_messages_rejected_total", reason="content") == 1
    assert sc.get("petrel_messages_accepted_total", listener="http") == 1
