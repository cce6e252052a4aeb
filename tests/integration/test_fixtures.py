"""test_fixtures - the harness itself: Unbound answers, Sink receives,
the test certificates verify."""

import smtplib
import socket
import ssl
import subprocess
import threading

import dns.message
import dns.query
import dns.rcode
import pytest

import petrel_fixtures as pf


def query(ub, name, rtype):
    q = dns.message.make_query(name, rtype)
    return dns.query.udp(q, "127.0.0.1", port=ub.port, timeout=2)


def test_unbound_answers_records(unbound_factory):
    ub = unbound_factory([
        ("example.test.", "MX", "10 mx1.example.test."),
        ("mx1.example.test.", "A", "127.0.0.2"),
        ("example.test.", "TXT", "v=spf1 ip4:127.0.0.0/8 -all"),
        ("sel._domainkey.example.test.", "TXT", "v=DKIM1; k=rsa; p=" + "A" * 400),
        ("example.org.", "A", "127.0.0.3"),
    ])
    assert ub.addr == "127.0.0.1:%d" % ub.port

    r = query(ub, "example.test.", "MX")
    assert r.rcode() == dns.rcode.NOERROR
    mx = [rr.to_text() for rrset in r.answer for rr in rrset]
    assert mx == ["10 mx1.example.test."]

    r = query(ub, "mx1.example.test.", "A")
    assert [rr.to_text() for rrset in r.answer for rr in rrset] == ["127.0.0.2"]

    r = query(ub, "example.test.", "TXT")
    txt = [b"".join(rr.strings) for rrset in r.answer for rr in rrset]
    assert txt == [b"v=spf1 ip4:127.0.0.0/8 -all"]

    # long TXT split into 255-byte strings and joined back
    r = query(ub, "sel._domainkey.example.test.", "TXT")
    txt = [b"".join(rr.strings) for rrset in r.answer for rr in rrset]
    assert txt == [b"v=DKIM1; k=rsa; p=" + b"A" * 400]

    r = query(ub, "example.org.", "A")
    assert [rr.to_text() for rrset in r.answer for rr in rrset] == ["127.0.0.3"]

    # unknown names: NXDOMAIN at once, nothing asked upstream
    r = query(ub, "nothere.example.test.", "A")
    assert r.rcode() == dns.rcode.NXDOMAIN
    r = query(ub, "www.example.com.", "A")
    assert r.rcode() == dns.rcode.NXDOMAIN


def test_unbound_set_records(unbound_factory):
    ub = unbound_factory([("a.test.", "A", "127.0.0.5")])
    port = ub.port
    ub.set_records([("a.test.", "A", "127.0.0.6"), ("b.test.", "AAAA", "::1")])
    assert ub.port == port
    r = query(ub, "a.test.", "A")
    assert [rr.to_text() for rrset in r.answer for rr in rrset] == ["127.0.0.6"]
    r = query(ub, "b.test.", "AAAA")
    assert [rr.to_text() for rrset in r.answer for rr in rrset] == ["::1"]


def test_sink_receives(sink_factory):
    sink = sink_factory()
    assert sink.host == "127.0.0.2"
    with smtplib.SMTP(sink.host, sink.port, timeout=5) as s:
        s.sendmail("a@example.test", ["b@example.org", "c@example.org"],
                   b"Subject: hi\r\n\r\nbody\r\n")
    msgs = sink.wait_for(1)
    assert msgs[0]["mail_from"] == "a@example.test"
    assert msgs[0]["rcpt_tos"] == ["b@example.org", "c@example.org"]
    assert b"Subject: hi" in msgs[0]["data"]
    assert msgs[0]["peer"][0] == "127.0.0.1"


def test_sink_reply_rejects(sink_factory):
    sink = sink_factory(reply=lambda rcpt: "550 5.1.1 no such user"
                        if rcpt.startswith("bad@") else None)
    with smtplib.SMTP(sink.host, sink.port, timeout=5) as s:
        refused = s.sendmail("a@example.test", ["bad@example.org", "ok@example.org"],
                             b"Subject: x\r\n\r\nx\r\n")
    assert refused == {"bad@example.org": (550, b"5.1.1 no such user")}
    assert sink.wait_for(1)[0]["rcpt_tos"] == ["ok@example.org"]
    with pytest.raises(AssertionError):
        sink.wait_for(2, timeout=0.2)


def test_sink_data_reply_tempfail(sink_factory):
    sink = sink_factory(data_reply="451 4.3.0 try later")
    with smtplib.SMTP(sink.host, sink.port, timeout=5) as s:
        with pytest.raises(smtplib.SMTPDataError) as ei:
            s.sendmail("a@example.test", ["b@example.org"], b"x\r\n")
    assert ei.value.smtp_code == 451
    assert sink.messages == [] and len(sink.attempts) == 1


def test_certs_verify(certs):
    # the server cert verifies against the CA for localhost and 127.0.0.1
    srv = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    srv.load_cert_chain(certs["cert"], certs["key"])
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(4)
    port = lsock.getsockname()[1]

    def serve(n):
        for _ in range(n):
            c, _ = lsock.accept()
            try:
                with srv.wrap_socket(c, server_side=True) as t:
                    t.sendall(b"ok")
            except (ssl.SSLError, OSError):
                pass

    th = threading.Thread(target=serve, args=(3,), daemon=True)
    th.start()
    try:
        for name in ("localhost", "127.0.0.1"):
            ctx = pf.client_context(certs)
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                with ctx.wrap_socket(s, server_hostname=name) as t:
                    assert t.recv(2) == b"ok"
        # and a wrong name fails verification
        ctx = pf.client_context(certs)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            with pytest.raises(ssl.SSLCertVerificationError):
                ctx.wrap_socket(s, server_hostname="other.example")
    finally:
        th.join(5)
        lsock.close()
    r = subprocess.run(["openssl", "verify", "-CAfile", certs["ca"], certs["cert"]],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_smtp_dialog_against_sink(sink_factory):
    sink = sink_factory()
    replies = pf.smtp_dialog(sink.host, sink.port, [
        "EHLO client.test", "MAIL FROM:<a@example.test>", "RCPT TO:<b@example.org>",
        "DATA", b"Subject: raw\r\n\r\nraw body\r\n.\r\n", "QUIT"])
    codes = [r[:3] for r in replies]
    assert codes == ["220", "250", "250", "250", "354", "250", "221"]
    assert "250-" in replies[1]          # multi-line EHLO read whole
    assert sink.wait_for(1)[0]["data"].startswith(b"Subject: raw")


def test_wait_for_times_out():
    with pytest.raises(AssertionError, match="never"):
        pf.wait_for(lambda: False, timeout=0.1, what="never")
    assert pf.wait_for(lambda: 7) == 7
