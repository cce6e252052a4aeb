"""test_tracking - engagement tracking (issue 8): with tracking_opens and
tracking_clicks on for the sender domain, the HTML part that reaches the
sink has its links rewritten to BASE/t/c/TOKEN and an invisible image
BASE/t/o/TOKEN, the plain part is byte-identical, and the DKIM signatures
(made after the rewrite) verify with dkimpy. Opens and clicks go through
real HTTP requests to petreld's listen_http and come back as "opened" and
"clicked" events on GET /events, flagged "machine": true for HEAD, for a
scanner's user agent and for clicks within tracking_machine_window of the
delivery. Forged tokens answer 404; a click only ever redirects to a URL
that was in the message. Tracking off, or userEngagementTrackingDisabled
on an HTTP API message, leaves the HTML alone.

Delivery set-up as in test_delivery.py (a real unbound, an aiosmtpd sink);
events read as in test_events.py.
"""

import base64
import email
import http.client
import re
import smtplib
import time
from email.policy import default as default_policy

import dkim
import dns.message
import dns.query
import dns.rdatatype

import petrel_fixtures as pf
from test_delivery import HOSTS, Env
from test_http_api import Api, connection_string

RECS = [("dest.test", "MX", "10 mx.dest.test."),
        ("mx.dest.test", "A", HOSTS[1])]
WINDOW = 5      # tracking_machine_window, seconds
BROWSER = ("Mozilla/5.0 (X11; Linux x86_64; rv:115.0) Gecko/20100101 "
           "Firefox/115.0")
SCANNER = "Mozilla/5.0 (compatible; Barracuda Sentinel)"

PLAIN_PART = ("Content-Type: text/plain; charset=us-ascii\r\n"
              "Content-Transfer-Encoding: 7bit\r\n\r\n"
              "Plain text: https://example.org/landing?a=1\r\n")
# quoted-printable, with a soft line break inside the first URL
HTML_PART = ("Content-Type: text/html; charset=utf-8\r\n"
             "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
             "<html><head><title>T</title></head><body>\r\n"
             "<p>Caf=C3=A9 <a href=3D\"https://example.org/landing?a=3D1&amp;=\r\n"
             "b=3D2\">first</a></p>\r\n"
             "<p><a class=3D'x' href=3D'http://example.org/two'>second</a>\r\n"
             "<a href=3D\"mailto:info@example.org\">mail</a>\r\n"
             "<a href=3D\"#top\">top</a></p>\r\n"
             "</body></html>\r\n")
LINKS = ["https://example.org/landing?a=1&b=2", "http://example.org/two"]


class TrackEnv(Env):
    """test_delivery's Env with listen_http as the tracking base, the
    domain's DKIM keys published, an API key and a sink"""

    def __init__(self, petrel_factory, unbound_factory, sink_factory):
        self.hport = pf.free_port()
        self.base = "http://127.0.0.1:%d" % self.hport
        super().__init__(petrel_factory, unbound_factory, RECS, conf={
            "listen_http": "127.0.0.1:%d" % self.hport,
            "tracking_base_url": self.base + "/",
            "tracking_machine_window": "%ds" % WINDOW})
        pf.wait_for(lambda: pf._port_open("127.0.0.1", self.hport),
                    what="http listener")
        show = self.p.ctl_json("domain", "show", self.t["domain"])
        self.ub.set_records(RECS + [(r["name"], "TXT", r["value"])
                                    for r in show["records"]
                                    if r["type"] == "TXT"])
        _, _, key = connection_string(self.p.ctl("apikey", "add",
                                                 self.t["tenant"]).stdout)
        self.api = Api(self.hport, key, tls=False, host="127.0.0.1")
        self.sink = sink_factory(host=HOSTS[1], port=self.port)

    def tracking(self, opens, clicks):
        d = self.t["domain"]
        r = self.p.ctl("domain", "set", d, "tracking_opens",
                       "on" if opens else "off")
        assert "tracking_opens %s" % ("on" if opens else "off") in r.stdout
        self.p.ctl("domain", "set", d, "tracking_clicks",
                   "on" if clicks else "off")
        shown = self.p.ctl_json("domain", "show", d)
        assert shown["tracking"] == {"opens": opens, "clicks": clicks}

    def send_mime(self, rcpt, subject):
        """a multipart/alternative message (PLAIN_PART, HTML_PART) through
        the relay listener; returns the queue id"""
        data = ("From: %s\r\nTo: %s\r\nSubject: %s\r\n"
                "Message-ID: <%s.%f@app.test>\r\nMIME-Version: 1.0\r\n"
                "Content-Type: multipart/alternative; boundary=\"b-1\"\r\n"
                "\r\nThis is MIME.\r\n--b-1\r\n%s\r\n--b-1\r\n%s\r\n"
                "--b-1--\r\n" % (self.sender, rcpt, subject,
                                 subject.replace(" ", "-"), time.time(),
                                 PLAIN_PART, HTML_PART))
        with smtplib.SMTP("127.0.0.1", self.p.ports["relay"], timeout=10) as s:
            s.ehlo("client.test")
            code, msg = s.mail(self.sender)
            assert code == 250, msg
            code, msg = s.rcpt(rcpt)
            assert code == 250, msg
            code, msg = s.data(data.encode())
            assert code == 250, msg
        m = re.search(rb"queued as ([0-9A-Z]{14})", msg)
        assert m, msg
        return m.group(1).decode()

    def received(self, subject, timeout=20):
        key = ("Subject: %s\r\n" % subject).encode()
        return pf.wait_for(lambda: [m for m in list(self.sink.messages)
                                    if key in m["data"]] or None,
                           timeout=timeout, what="message %r" % subject)[0]

    def dnsfunc(self, name, timeout=5):
        if isinstance(name, bytes):
            name = name.decode()
        a = dns.query.udp(dns.message.make_query(name, "TXT"), "127.0.0.1",
                          port=self.ub.port, timeout=timeout)
        for rrset in a.answer:
            if rrset.rdtype == dns.rdatatype.TXT:
                for rd in rrset:
                    return b"".join(rd.strings)
        return None

    def get(self, path, ua=BROWSER, method="GET"):
        c = http.client.HTTPConnection("127.0.0.1", self.hport, timeout=10)
        try:
            hdrs = {"User-Agent": ua} if ua is not None else {}
            c.request(method, path, headers=hdrs)
            r = c.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, \
                r.read()
        finally:
            c.close()

    def events(self, types):
        st, _, d = self.api.request("GET", "/events?since=0&limit=1000"
                                    "&types=" + types)
        assert st == 200, d
        return d["events"]

    def wait_events(self, types, n):
        return pf.wait_for(lambda: (lambda ev: ev if len(ev) >= n else None)(
            self.events(types)), timeout=15,
            what="%d %s event(s)" % (n, types))


def html_of(data):
    m = email.message_from_bytes(data, policy=default_policy)
    for part in m.walk():
        if part.get_content_type() == "text/html":
            return part.get_content()
    raise AssertionError("no text/html part")


def path_of(url, base):
    assert url.startswith(base + "/t/"), url
    return url[len(base):]


def b64url_decode(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def b64url(b):
    return base64.urlsafe_b64encode(b).decode().rstrip("=")


def test_open_and_click_tracking(petrel_factory, unbound_factory,
                                 sink_factory):
    e = TrackEnv(petrel_factory, unbound_factory, sink_factory)
    e.tracking(True, True)
    qid = e.send_mime("bob@dest.test", "tracked one")
    shown = e.wait_status(qid, ["delivered"])
    delivered_at = shown["recipients"][0]["updated_at"]
    data = e.received("tracked one")["data"]

    # the sink's HTML part: links rewritten, the pixel in, the rest kept
    html = html_of(data)
    clicks = re.findall(r"""href=["'](%s/t/c/[A-Za-z0-9_.-]+)["']"""
                        % re.escape(e.base), html)
    assert len(clicks) == 2, html
    assert len(set(clicks)) == 2
    opens = re.findall(r'<img src="(%s/t/o/[A-Za-z0-9_.-]+)" width="1" '
                       r'height="1" alt="" style="display:none"></body>'
                       % re.escape(e.base), html)
    assert len(opens) == 1, html
    assert "example.org/landing" not in html and "example.org/two" not in html
    assert 'href="mailto:info@example.org"' in html
    assert 'href="#top"' in html
    assert "Caf\u00e9" in html
    # the plain part is byte for byte what was sent, and so is the
    # structure around the parts
    assert ("\r\n--b-1\r\n" + PLAIN_PART + "\r\n--b-1\r\n").encode() in data
    assert data.endswith(b"\r\n--b-1--\r\n")
    # quoted-printable lines stay within 76 columns
    qp = data.split(b"quoted-printable\r\n\r\n", 1)[1].split(b"\r\n--b-1", 1)[0]
    assert max(len(ln) for ln in qp.split(b"\r\n")) <= 76
    # DKIM signed after the rewrite: both signatures verify
    n = len(re.findall(rb"(?im)^DKIM-Signature:", data))
    assert n == 2, data[:2000]
    for i in range(n):
        assert dkim.DKIM(data).verify(idx=i, dnsfunc=e.dnsfunc), i
    e.p.wait_log(r"qid=%s .*event=tracking opens=on clicks=on links=2 "
                 r"rcpts=1" % qid)

    # a click at once after delivery: a scanner's, most likely
    assert time.time() - delivered_at < WINDOW - 1.5, "test too slow"
    st, h, _ = e.get(path_of(clicks[0], e.base))
    assert st == 302 and h["location"] == LINKS[0], (st, h)
    # HEAD: answered, counted as a machine
    st, h, body = e.get(path_of(clicks[0], e.base), method="HEAD")
    assert st == 302 and h["location"] == LINKS[0] and body == b""
    # a known scanner
    st, h, _ = e.get(path_of(clicks[1], e.base), ua=SCANNER)
    assert st == 302 and h["location"] == LINKS[1]
    # a query string cannot change the target
    st, h, _ = e.get(path_of(clicks[1], e.base) +
                     "?url=https://evil.test/", ua=SCANNER)
    assert st == 302 and h["location"] == LINKS[1]

    # a person, later: past the machine window of the delivery
    while time.time() < delivered_at + WINDOW + 1.2:
        time.sleep(0.2)
    st, h, _ = e.get(path_of(clicks[1], e.base))
    assert st == 302 and h["location"] == LINKS[1]
    st, h, body = e.get(path_of(opens[0], e.base))
    assert st == 200, (st, body)
    assert h["content-type"] == "image/gif"
    assert h["cache-control"].startswith("no-store")
    assert body.startswith(b"GIF89a") and len(body) == 43

    ev = e.wait_events("clicked", 5)
    assert [x["type"] for x in ev] == ["clicked"] * 5
    for x in ev:
        assert x["qid"] == qid and x["recipient"] == "bob@dest.test", x
        assert x["tenant"] == e.t["tenant"]
        assert x["message_id"] == shown["message_id"]
    assert [(x["details"]["machine"], x["details"].get("why"),
             x["details"]["url"]) for x in ev] == [
        (True, "too_soon", LINKS[0]),
        (True, "head", LINKS[0]),
        (True, "user_agent", LINKS[1]),
        (True, "user_agent", LINKS[1]),
        (False, None, LINKS[1])], ev
    assert ev[4]["details"]["user_agent"] == BROWSER
    assert ev[4]["details"]["link"] == 1
    op = e.wait_events("opened", 1)
    assert len(op) == 1
    assert op[0]["details"]["machine"] is False, op
    assert op[0]["recipient"] == "bob@dest.test" and op[0]["qid"] == qid
    assert "url" not in op[0]["details"]

    # forged tokens: 404, and nothing recorded
    tok = path_of(clicks[0], e.base)[len("/t/c/"):]
    payload, mac = tok.split(".")
    bad_mac = mac[:-2] + ("AA" if mac[-2:] != "AA" else "BA")
    raw = bytearray(b64url_decode(payload))
    assert raw[1:2] == b"c" and raw[2:16].decode() == qid
    other_link = bytearray(raw)
    other_link[-1] ^= 0x07          # link 7: not in the message
    forged = [
        "/t/c/%s.%s" % (payload, bad_mac),
        "/t/c/%s.%s" % (b64url(bytes(other_link)), mac),
        "/t/o/%s.%s" % (payload, mac),              # a click token as open
        "/t/c/" + path_of(opens[0], e.base)[len("/t/o/"):],
        "/t/c/garbage",
        "/t/c/",
        "/t/x/" + tok,
    ]
    for p in forged:
        st, h, _ = e.get(p)
        assert st == 404, (p, st, h)
        assert "location" not in h
    st, _, _ = e.get(path_of(clicks[0], e.base), method="POST")
    assert st == 405
    time.sleep(0.5)     # the writer had its chance to record anything
    assert len(e.events("clicked")) == 5
    assert len(e.events("opened")) == 1


def test_tracking_off_and_per_message_opt_out(petrel_factory,
                                              unbound_factory, sink_factory):
    e = TrackEnv(petrel_factory, unbound_factory, sink_factory)
    e.tracking(True, True)
    html = ('<html><body><a href="https://example.org/api">api</a>'
            '</body></html>')

    def api_send(subject, **extra):
        msg = {"senderAddress": e.sender,
               "content": {"subject": subject, "plainText": "plain\n",
                           "html": html},
               "recipients": {"to": [{"address": "r@dest.test"}]}}
        msg.update(extra)
        st, _, d = e.api.send(msg)
        assert st == 202, d

    # the HTTP API, tracking allowed: rewritten
    api_send("api tracked")
    got = html_of(e.received("api tracked")["data"])
    assert "https://example.org/api" not in got
    assert "%s/t/c/" % e.base in got and "%s/t/o/" % e.base in got
    # userEngagementTrackingDisabled: this message is left alone
    api_send("api untracked", userEngagementTrackingDisabled=True)
    data = e.received("api untracked")["data"]
    got = html_of(data)
    assert 'href="https://example.org/api"' in got, got
    assert "/t/o/" not in got and "/t/c/" not in got
    assert b"/t/o/" not in data and b"/t/c/" not in data

    # opens only: the pixel, links untouched
    e.tracking(True, False)
    e.send_mime("bob@dest.test", "opens only")
    got = html_of(e.received("opens only")["data"])
    assert "/t/o/" in got and "/t/c/" not in got
    assert "https://example.org/landing?a=1&amp;b=2" in got

    # tracking off: the HTML is what was sent
    e.tracking(False, False)
    e.send_mime("bob@dest.test", "not tracked")
    data = e.received("not tracked")["data"]
    assert HTML_PART.encode() in data
    assert b"/t/o/" not in data and b"/t/c/" not in data
