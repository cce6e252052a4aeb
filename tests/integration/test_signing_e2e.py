"""test_signing_e2e - the prepare stage end to end (issue 6): a custom
domain added, its records published in a real unbound, `domain verify`,
mail relayed through petreld and delivered to aiosmtpd sinks; what the
sinks receive must verify with Debian's python3-dkim (dkimpy) and with npm
mailauth 4.13 (installed by setup-mailauth.sh, as test_dkim_arc does).

petreld runs with arc_domain/arc_selector/arc_key_file set, so every
relayed message leaves DKIM-signed (rsa-sha256 + ed25519-sha256, d= the
From domain) and ARC-sealed. petreld connects out from 127.0.0.1
(smtp_bind_address), which the domain's SPF record names; mailauth is
given that client IP explicitly.
"""

import json
import os
import re
import smtplib
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import petrel_fixtures as pf  # noqa: E402
from conftest import check_sanitizer_log  # noqa: E402
from test_dkim_arc import (MAILAUTH_SCRIPT, header_fields, openssl_rsa,  # noqa: E402
                           tags, verify_each)

dkim = pytest.importorskip("dkim")
dns_message = pytest.importorskip("dns.message")

HERE = Path(__file__).resolve().parent
DOMAIN = "example.test"
ARC_DOMAIN = "petrel.test"
ARC_SEL = "arc1"
HOP_DOMAIN = "hop1.test"
HOP_SEL = "s1"
SENDER = "app@example.test"
DEST = "127.0.0.2"          # MX of dest.test
BACK = "127.0.0.3"          # MX of example.test (DSNs)
LATER = "127.0.0.4"         # MX of later.test: nothing listens at first


class Env:
    """one petreld (ARC on), one unbound, sinks for dest.test and for the
    sender's domain"""

    def __init__(self, root):
        self.root = Path(root)
        self.port = pf.common_port([DEST, BACK, LATER])
        self.arc_key = self.root / "arc.pem"
        arc_pub = openssl_rsa(self.arc_key)
        self.hop_key = self.root / "hop.pem"
        hop_pub = openssl_rsa(self.hop_key)
        self.base_records = [
            ("dest.test", "MX", "10 mx.dest.test."),
            ("mx.dest.test", "A", DEST),
            (DOMAIN, "MX", "10 mx.example.test."),
            ("mx.example.test", "A", BACK),
            ("later.test", "MX", "10 mx.later.test."),
            ("mx.later.test", "A", LATER),
            ("%s._domainkey.%s" % (ARC_SEL, ARC_DOMAIN), "TXT",
             "v=DKIM1; k=rsa; p=" + arc_pub),
            ("%s._domainkey.%s" % (HOP_SEL, HOP_DOMAIN), "TXT",
             "v=DKIM1; k=rsa; p=" + hop_pub),
        ]
        self.unbound = pf.Unbound(self.root / "unbound", self.base_records)
        conf = {
            "resolver": self.unbound.addr,
            "smtp_remote_port": self.port,
            "smtp_bind_address": "127.0.0.1",
            "retry_schedule": "1s, 2s",
            "smtp_connect_timeout": "5s",
            "smtp_timeout": "10s",
            "arc_domain": ARC_DOMAIN,
            "arc_selector": ARC_SEL,
            "arc_key_file": str(self.arc_key),
            "unsubscribe_base_url": "https://petrel.test",
        }
        self.p = pf.Petrel(self.root / "petrel", conf=conf, start=False,
                           certs=pf.make_certs(self.root / "certs"))
        self.p.ctl("tenant", "add", "acme")
        self.p.ctl("network", "add", "acme", "127.0.0.0/8")
        self.p.ctl("domain", "add", "acme", DOMAIN)
        self.publish()
        r = self.p.ctl("domain", "verify", DOMAIN, check=False)
        assert r.returncode == 0, r.stdout + r.stderr
        self.show = self.p.ctl_json("domain", "show", DOMAIN)
        assert self.show["status"] == "verified"
        self.sink = pf.Sink(host=DEST, port=self.port,
                            reply=lambda a: "550 5.1.1 no such user"
                            if a.startswith("bad") else None)
        self.back = pf.Sink(host=BACK, port=self.port)
        self.p.start()

    def publish(self):
        show = self.p.ctl_json("domain", "show", DOMAIN)
        self.unbound.set_records(self.base_records + [
            (r["name"], "TXT", r["value"]) for r in show["records"]])

    def send(self, rcpts, data, mail_from=SENDER):
        with smtplib.SMTP("127.0.0.1", self.p.ports["relay"],
                          timeout=10) as s:
            s.ehlo("client.test")
            code, msg = s.mail(mail_from)
            assert code == 250, msg
            for r in rcpts:
                code, msg = s.rcpt(r)
                assert code == 250, (r, code, msg)
            code, msg = s.data(data)
            assert code == 250, msg
        m = re.search(rb"queued as ([0-9A-Z]{14})", msg)
        assert m, msg
        return m.group(1).decode()

    def received(self, sink, subject, n=1, timeout=20):
        """the n messages with subject that sink accepted"""
        key = ("Subject: %s\r\n" % subject).encode()
        return pf.wait_for(
            lambda: (lambda got: got if len(got) >= n else None)(
                [m for m in list(sink.messages) if key in m["data"]]),
            timeout=timeout, what="%d message(s) '%s'" % (n, subject))

    def dnsfunc(self, name, timeout=5):
        """dnsfunc - dkimpy's key lookup through the Unbound fixture"""
        return self.unbound.txt(name, timeout)

    def stop(self):
        try:
            self.p.stop()
        finally:
            self.sink.stop()
            self.back.stop()
            self.unbound.stop()
        check_sanitizer_log(self.p)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("signing")
    os.chmod(root, 0o755)
    e = Env(root)
    yield e
    e.stop()


@pytest.fixture(scope="module")
def mailauth():
    r = subprocess.run(["sh", str(HERE / "setup-mailauth.sh")],
                       capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        pytest.skip("cannot install npm mailauth 4.13: "
                    + (r.stderr.strip() or r.stdout.strip())[-500:])
    script = HERE / "mailauth-npm" / "node_modules" / "petrel-mailauth-check.js"
    script.write_text(MAILAUTH_SCRIPT)
    return script


def mailauth_check(script, env, data, sender=SENDER, ip="127.0.0.1",
                   helo="petrel.test"):
    p = env.root / "mailauth.eml"
    p.write_bytes(data)
    r = subprocess.run(["node", str(script), str(p),
                        "127.0.0.1:%d" % env.unbound.port, ip, helo, sender],
                       capture_output=True, text=True, timeout=60,
                       cwd=str(HERE))
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def message(subject, frm="Alice <alice@example.test>", to="bob@dest.test",
            extra=""):
    return ("From: %s\r\nTo: %s\r\nSubject: %s\r\n"
            "Date: Mon, 01 Jan 2024 10:00:00 +0000\r\n"
            "Message-ID: <%s.%f@example.test>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain\r\n%s\r\n"
            "Hello Bob,\r\n\r\nthis  is a   test.\r\n"
            % (frm, to, subject, subject.replace(" ", "-"), time.time(),
               extra)).encode()


def ours(data):
    """our two DKIM signatures' tags (the topmost two)"""
    return [tags(v) for v in header_fields(data, "DKIM-Signature")[:2]]


def prepare_lines(env, qid):
    return re.findall(r"qid=%s .*event=prepare .*" % qid, env.p.log())


# ------------------------------------------------------------ first hop

def test_relayed_message_is_signed_and_sealed(env, mailauth):
    qid = env.send(["bob@dest.test"], message("first hop"))
    got = env.received(env.sink, "first hop")[0]
    data = got["data"]
    assert got["peer"][0] == "127.0.0.1"     # smtp_bind_address
    head = data.split(b"\r\n\r\n", 1)[0].decode()
    names = [ln.split(":", 1)[0] for ln in head.split("\r\n")
             if ln and ln[0] not in " \t"]
    # ARC set on top of our two DKIM signatures, on top of the message
    assert names[:5] == ["ARC-Seal", "ARC-Message-Signature",
                         "ARC-Authentication-Results", "DKIM-Signature",
                         "DKIM-Signature"], names
    t = ours(data)
    assert sorted(x["a"] for x in t) == ["ed25519-sha256", "rsa-sha256"]
    sels = {k["alg"]: k["selector"] for k in env.show["keys"]
            if k["state"] == "active"}
    for x in t:
        assert x["d"] == DOMAIN and x["c"] == "relaxed/relaxed"
        assert x["s"] == sels[x["a"]]
        assert [n.lower() for n in x["h"].split(":")].count("from") == 2
    assert verify_each(env, data) == [True, True]
    # dkimpy's ARC verdict: one set, cv=none
    seal = tags(header_fields(data, "ARC-Seal")[0])
    assert seal["i"] == "1" and seal["cv"] == "none"
    aar = header_fields(data, "ARC-Authentication-Results")[0]
    assert aar.startswith("i=1; petrel.test;")
    assert "spf=pass smtp.mailfrom=%s" % SENDER in aar, aar
    cv, results, why = dkim.arc_verify(data, dnsfunc=env.dnsfunc)
    assert cv == dkim.CV_Pass, why
    # mailauth: DKIM pass x2, SPF (for 127.0.0.1, where petreld connects
    # from) pass, DMARC pass, ARC pass with i=1
    res = mailauth_check(mailauth, env, data)
    mine = [d for d in res["dkim"] if d["d"] == DOMAIN]
    assert sorted(d["a"] for d in mine) == ["ed25519-sha256", "rsa-sha256"]
    assert all(d["result"] == "pass" for d in mine), res
    assert res["spf"] == "pass", res
    assert res["dmarc"] == "pass", res
    assert res["arc"] == "pass" and res["arc_i"] == 1, res
    # prepared once; the record says so
    assert len(prepare_lines(env, qid)) == 1
    shown = env.p.ctl_json("message", "show", qid)
    assert shown["stage"] in ("prepared", "done"), shown


def test_from_with_address_in_comment_is_signed(env):
    """the signing domain is read as the policy check reads it: an @ in
    a comment or display name is not the From domain"""
    frm = "alice@example.test (alice@evil.test)"
    env.send(["bob@dest.test"], message("comment from", frm=frm))
    data = env.received(env.sink, "comment from")[0]["data"]
    t = ours(data)
    assert len(t) == 2 and all(x["d"] == DOMAIN for x in t), t
    assert verify_each(env, data) == [True, True]
    aar = header_fields(data, "ARC-Authentication-Results")[0]
    assert "header.from=%s" % DOMAIN in aar, aar


def test_header_only_message_gets_its_empty_line(env, mailauth):
    """a message without a body (no empty line, as RFC 5322 allows) is
    stored with the empty line, so every verifier finds its body"""
    data = ("From: Alice <alice@example.test>\r\nTo: bob@dest.test\r\n"
            "Subject: headers only\r\nMessage-ID: <ho.%f@example.test>\r\n"
            % time.time()).encode()
    env.send(["bob@dest.test"], data)
    got = env.received(env.sink, "headers only")[0]["data"]
    assert got.endswith(b"\r\n\r\n"), got[-60:]
    assert verify_each(env, got) == [True, True]
    res = mailauth_check(mailauth, env, got)
    mine = [d for d in res["dkim"] if d["d"] == DOMAIN]
    assert len(mine) == 2 and all(d["result"] == "pass" for d in mine), res


# ------------------------------------------------------------ second hop

def hop_seal(env, msg):
    """a previous hop: DKIM-sign as hop1.test, then ARC-seal (i=1)"""
    key = env.hop_key.read_bytes()
    hdrs = [b"from", b"to", b"subject", b"date", b"message-id"]
    sig = dkim.sign(msg, HOP_SEL.encode(), HOP_DOMAIN.encode(), key,
                    include_headers=hdrs)
    msg = (b"Authentication-Results: hop1.test; spf=pass "
           b"smtp.mailfrom=example.test\r\n") + sig + msg
    arc = dkim.arc_sign(msg, HOP_SEL.encode(), HOP_DOMAIN.encode(), key,
                        b"hop1.test", include_headers=hdrs)
    return b"".join(arc) + msg


def test_upstream_arc_chain_continues_with_i2(env, mailauth):
    incoming = hop_seal(env, message("second hop"))
    cv, _, why = dkim.arc_verify(incoming, dnsfunc=env.dnsfunc)
    assert cv == dkim.CV_Pass, why
    env.send(["bob@dest.test"], incoming)
    data = env.received(env.sink, "second hop")[0]["data"]
    seals = [tags(s) for s in header_fields(data, "ARC-Seal")]
    assert seals[0]["i"] == "2" and seals[0]["cv"] == "pass", seals
    assert sorted((s["i"], s["cv"]) for s in seals) == [("1", "none"),
                                                       ("2", "pass")]
    aar = header_fields(data, "ARC-Authentication-Results")[0]
    assert aar.startswith("i=2; petrel.test;")
    assert "dkim=pass header.d=hop1.test" in aar, aar
    # the upstream DKIM signature is kept and still verifies, ours added
    sigs = [tags(v) for v in header_fields(data, "DKIM-Signature")]
    assert [s["d"] for s in sigs] == [DOMAIN, DOMAIN, HOP_DOMAIN]
    assert verify_each(env, data) == [True, True, True]
    cv, results, why = dkim.arc_verify(data, dnsfunc=env.dnsfunc)
    assert cv == dkim.CV_Pass, why
    assert len(results) == 2
    res = mailauth_check(mailauth, env, data)
    assert [d["result"] for d in res["dkim"]] == ["pass"] * 3, res
    assert res["spf"] == "pass" and res["dmarc"] == "pass", res
    assert res["arc"] == "pass" and res["arc_i"] == 2, res


# ------------------------------------------------------------ DSN

def test_dsn_for_550_is_signed(env, mailauth):
    qid = env.send(["bad@dest.test"], message("bounce me",
                                               to="bad@dest.test"))
    dsn = pf.wait_for(lambda: [m for m in list(env.back.messages)
                               if b"(queue id %s)" % qid.encode()
                               in m["data"]] or None,
                      timeout=30, what="DSN for %s" % qid)[0]
    data = dsn["data"]
    assert dsn["mail_from"] in ("", "<>") and dsn["rcpt_tos"] == [SENDER]
    frm = header_fields(data, "From")[0]
    assert "MAILER-DAEMON@%s" % DOMAIN in frm, frm
    t = ours(data)
    assert len(t) == 2 and all(x["d"] == DOMAIN for x in t), t
    assert verify_each(env, data) == [True, True]
    assert not header_fields(data, "ARC-Seal")     # generated, not relayed
    res = mailauth_check(mailauth, env, data, sender="")
    assert [d["result"] for d in res["dkim"]] == ["pass", "pass"], res
    assert res["dmarc"] == "pass", res


# ------------------------------------------------------------ durability

def test_restart_between_prepare_and_delivery_keeps_signature(env):
    qid = env.send(["carol@later.test"], message("restart",
                                                  to="carol@later.test"))
    # prepared, then the attempt fails: nothing listens on mx.later.test
    env.p.wait_log(r"qid=%s .*event=prepare" % qid, timeout=20)
    pf.wait_for(lambda: env.p.ctl_json("message", "show", qid)
                ["recipients"][0]["status"] == "deferred", timeout=20,
                what="deferred")
    shown = env.p.ctl_json("message", "show", qid)
    assert shown["stage"] == "prepared"
    env.p.kill9()
    later = pf.Sink(host=LATER, port=env.port)
    try:
        env.p.start()
        data = env.received(later, "restart", timeout=30)[0]["data"]
    finally:
        later.stop()
    # signed once, before the restart: one prepare line in both runs' log
    assert len(prepare_lines(env, qid)) == 1, prepare_lines(env, qid)
    assert verify_each(env, data) == [True, True]
    cv, _, why = dkim.arc_verify(data, dnsfunc=env.dnsfunc)
    assert cv == dkim.CV_Pass, why


# ------------------------------------------------------------ per recipient

def test_unsubscribe_copies_per_recipient(env, mailauth):
    env.p.ctl("domain", "set", DOMAIN, "unsubscribe", "on")
    try:
        qid = env.send(["u1@dest.test", "u2@dest.test"],
                       message("per rcpt", to="u1@dest.test, u2@dest.test"))
        got = env.received(env.sink, "per rcpt", n=2)
    finally:
        env.p.ctl("domain", "set", DOMAIN, "unsubscribe", "off")
    # one transaction, and one signed copy, per recipient
    assert sorted(tuple(m["rcpt_tos"]) for m in got) == [("u1@dest.test",),
                                                        ("u2@dest.test",)]
    urls = set()
    for m in got:
        data = m["data"]
        lu = header_fields(data, "List-Unsubscribe")
        assert len(lu) == 1 and "https://petrel.test/u/" in lu[0], lu
        assert header_fields(data, "List-Unsubscribe-Post") == [
            "List-Unsubscribe=One-Click"]
        urls.add(lu[0])
        for x in ours(data):
            h = [n.lower() for n in x["h"].split(":")]
            assert "list-unsubscribe" in h and "list-unsubscribe-post" in h
        assert verify_each(env, data) == [True, True]
        cv, _, why = dkim.arc_verify(data, dnsfunc=env.dnsfunc)
        assert cv == dkim.CV_Pass, why
    assert len(urls) == 2          # a token per recipient
    line = prepare_lines(env, qid)
    assert len(line) == 1 and "copies=2" in line[0], line
    res = mailauth_check(mailauth, env, got[0]["data"])
    assert all(d["result"] == "pass" for d in res["dkim"]), res
    assert res["arc"] == "pass", res
