"""test_smtp_client - the outbound SMTP client (src/smtp_client.c) driven by
tests/unit/smtpc_probe against an aiosmtpd sink (petrel_fixtures.Sink) and
small scripted raw-socket servers that misbehave on purpose.

Every probe run must exit 0 with no sanitizer report on stderr.
"""

import os
import re
import socket
import ssl
import subprocess
import threading

import pytest

import petrel_fixtures as pf

PROBE = str(pf.build_dir() / "tests" / "unit" / "smtpc_probe")
SAN_MARKS = ("AddressSanitizer", "runtime error", "LeakSanitizer")

pytestmark = pytest.mark.skipif(not os.path.exists(PROBE),
                                reason="smtpc_probe not built")


# ------------------------------------------------------------- the probe

RCPT_RE = re.compile(r'^msg (\d+) rcpt=<([^>]*)> outcome=(\w+) code=(\d+) '
                     r'enh=(\S+) local=(\d) text="(.*)"$')
KV_RE = re.compile(r'(\w+)=("(?:[^"]*)"|\S+)')


class ProbeResult:
    def __init__(self, proc):
        self.proc = proc
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        self.connect = None
        self.rcpts = {}     # msg number -> {addr: dict}
        self.done = {}      # msg number -> dict
        self.skipped = []
        for line in self.stdout.splitlines():
            if line.startswith("connect "):
                self.connect = {k: v.strip('"')
                                for k, v in KV_RE.findall(line)}
                # text may hold '"' or spaces: take it verbatim
                self.connect["text"] = line.split(' text="', 1)[1][:-1]
                continue
            m = RCPT_RE.match(line)
            if m:
                n, addr, outcome, code, enh, local, text = m.groups()
                self.rcpts.setdefault(int(n), {})[addr] = dict(
                    outcome=outcome, code=int(code), enh=enh,
                    local=int(local), text=text)
                continue
            m = re.match(r"^msg (\d+) done (.*)$", line)
            if m:
                self.done[int(m.group(1))] = {
                    k: v for k, v in KV_RE.findall(m.group(2))}
                continue
            m = re.match(r"^msg (\d+) skipped$", line)
            if m:
                self.skipped.append(int(m.group(1)))

    def __repr__(self):
        return "stdout:\n%s\nstderr:\n%s" % (self.stdout, self.stderr[-3000:])


def run_probe(tmp_path, host, port, rcpts, data=b"Subject: t\r\n\r\nhi\r\n",
              mail_from="sender@petrel.test", opts=(), timeout=60):
    msgfile = tmp_path / "msg.eml"
    msgfile.write_bytes(data)
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1",
               UBSAN_OPTIONS="print_stacktrace=1")
    cmd = [PROBE, "-v"] + list(opts) + [host, str(port), mail_from,
                                         str(msgfile)] + list(rcpts)
    proc = subprocess.run(cmd, capture_output=True, timeout=timeout, env=env)
    proc.stdout = proc.stdout.decode("utf-8", "replace")
    proc.stderr = proc.stderr.decode("utf-8", "replace")
    r = ProbeResult(proc)
    for mark in SAN_MARKS:
        assert mark not in r.stderr, r
    assert proc.returncode == 0, r
    assert r.stdout.rstrip().endswith("end"), r
    return r


def normalise(data):
    """normalise - what the client must put on the wire (before dot
    stuffing): bare CR / bare LF -> CRLF, final CRLF added"""
    out = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    out = out.replace(b"\n", b"\r\n")
    if out and not out.endswith(b"\r\n"):
        out += b"\r\n"
    return out


def assert_sanitised(text):
    assert len(text) <= 512, text
    assert all(0x20 <= ord(ch) < 0x7f for ch in text), repr(text)


# ------------------------------------------------- scripted raw servers

class Peer:
    """Peer - one accepted connection of a RawServer"""

    def __init__(self, conn, server):
        self.conn = conn
        self.server = server
        self.buf = b""
        self.conn.settimeout(20)

    def send(self, data):
        self.conn.sendall(data)

    def _fill(self):
        chunk = self.conn.recv(65536)
        if not chunk:
            return False
        self.buf += chunk
        return True

    def readline(self):
        """readline - next CRLF line without CRLF (bytes), None at EOF"""
        while b"\r\n" not in self.buf:
            if not self._fill():
                return None
        line, self.buf = self.buf.split(b"\r\n", 1)
        self.server.commands.append(line)
        return line

    def read_exact(self, n):
        while len(self.buf) < n:
            if not self._fill():
                raise EOFError("eof after %d of %d bytes" % (len(self.buf), n))
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def read_data(self):
        """read_data - DATA bytes up to and including CRLF.CRLF (raw)"""
        while b"\r\n.\r\n" not in self.buf:
            if not self._fill():
                raise EOFError("eof in DATA")
        i = self.buf.index(b"\r\n.\r\n") + 5
        data, self.buf = self.buf[:i], self.buf[i:]
        return data

    def wait_eof(self):
        try:
            while self._fill():
                self.buf = b""
        except OSError:
            pass

    def expect(self, prefix):
        line = self.readline()
        assert line is not None and \
            line.upper().startswith(prefix.upper()), \
            "wanted %r, got %r" % (prefix, line)
        return line

    def greet(self, ext=()):
        self.send(b"220 raw.test ESMTP\r\n")
        self.expect(b"EHLO ")
        lines = [b"raw.test"] + [e.encode() for e in ext]
        out = b"".join(b"250-" + ln + b"\r\n" for ln in lines[:-1])
        self.send(out + b"250 " + lines[-1] + b"\r\n")


class RawServer:
    """RawServer - accepts connections on host:port and runs script(peer)
    for each, one after the other; .commands holds every line read,
    .errors every exception a script raised, .datas what scripts stored"""

    def __init__(self, script, host="127.0.0.3"):
        self.script = script
        self.host = host
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.commands = []
        self.errors = []
        self.datas = []
        self.connections = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            peer = Peer(conn, self)
            try:
                self.script(peer)
            except (BrokenPipeError, ConnectionResetError):
                pass
            except Exception as e:  # reported by the test
                self.errors.append(repr(e))
            finally:
                try:
                    peer.conn.close()
                except OSError:
                    pass

    def stop(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.thread.join(5)


@pytest.fixture
def raw_server():
    made = []

    def make(script, **kw):
        s = RawServer(script, **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()
    for s in made:
        assert s.errors == [], "scripted server: %s" % s.errors


# --------------------------------------------------- against aiosmtpd

def test_delivery_bytes_intact_dot_stuffing_and_bare_lf(sink_factory,
                                                          tmp_path):
    sink = sink_factory()
    data = (b"Subject: dots\r\nFrom: a@petrel.test\r\n\r\n"
            b".starts with a dot\r\n..two dots\r\n.\r\n"
            b"bare LF line\nCRLF line\r\nbare CR line\rlast line no EOL")
    r = run_probe(tmp_path, sink.host, sink.port, ["rcpt@remote.test"],
                  data=data)
    assert r.connect["status"] == "ok", r
    res = r.rcpts[1]["rcpt@remote.test"]
    assert res["outcome"] == "delivered" and res["code"] == 250, r
    msgs = sink.wait_for(1)
    assert msgs[0]["data"] == normalise(data)
    assert b"\r\n.\r\n" in msgs[0]["data"]   # the lone dot line survived
    assert msgs[0]["mail_from"] == "sender@petrel.test"
    assert msgs[0]["helo"] == "petrel.test"
    # SIZE announced: the normalised size
    assert "SIZE=%d" % len(normalise(data)) in msgs[0]["mail_options"]
    assert r.done[1]["reusable"] == "1"


def test_multi_recipient_one_transaction(sink_factory, tmp_path):
    sink = sink_factory()
    rcpts = ["a@remote.test", "b@remote.test", "c@remote.test"]
    r = run_probe(tmp_path, sink.host, sink.port, rcpts)
    assert all(r.rcpts[1][a]["outcome"] == "delivered" for a in rcpts), r
    msgs = sink.wait_for(1)
    assert len(sink.attempts) == 1
    assert msgs[0]["rcpt_tos"] == rcpts


def test_550_one_recipient_bounced_others_delivered(sink_factory, tmp_path):
    sink = sink_factory(reply=lambda a: "550 5.1.1 no such user"
                        if a.startswith("bad@") else None)
    rcpts = ["good1@remote.test", "bad@remote.test", "good2@remote.test"]
    r = run_probe(tmp_path, sink.host, sink.port, rcpts)
    got = r.rcpts[1]
    assert got["bad@remote.test"]["outcome"] == "bounced", r
    assert got["bad@remote.test"]["code"] == 550
    assert got["bad@remote.test"]["enh"] == "5.1.1"
    assert got["bad@remote.test"]["text"] == "no such user"
    assert got["bad@remote.test"]["local"] == 0
    assert got["good1@remote.test"]["outcome"] == "delivered"
    assert got["good2@remote.test"]["outcome"] == "delivered"
    msgs = sink.wait_for(1)
    assert msgs[0]["rcpt_tos"] == ["good1@remote.test", "good2@remote.test"]


def test_451_deferred(sink_factory, tmp_path):
    sink = sink_factory(reply=lambda a: "451 4.3.0 try again later"
                        if a.startswith("later@") else None)
    r = run_probe(tmp_path, sink.host, sink.port,
                  ["later@remote.test", "now@remote.test"])
    assert r.rcpts[1]["later@remote.test"]["outcome"] == "deferred", r
    assert r.rcpts[1]["later@remote.test"]["code"] == 451
    assert r.rcpts[1]["later@remote.test"]["enh"] == "4.3.0"
    assert r.rcpts[1]["now@remote.test"]["outcome"] == "delivered"


def test_all_recipients_rejected_rset_and_reusable(sink_factory, tmp_path):
    sink = sink_factory(reply=lambda a: "550 5.1.1 nope")
    r = run_probe(tmp_path, sink.host, sink.port,
                  ["x@remote.test", "y@remote.test"], opts=["-n", "2"])
    for n in (1, 2):
        assert all(v["outcome"] == "bounced" for v in r.rcpts[n].values()), r
        assert r.done[n]["reusable"] == "1"
    assert sink.attempts == []
    assert "RSET" in r.stderr


def test_data_rejected_bounces_accepted(sink_factory, tmp_path):
    sink = sink_factory(data_reply="554 5.7.1 content rejected")
    r = run_probe(tmp_path, sink.host, sink.port, ["x@remote.test"])
    res = r.rcpts[1]["x@remote.test"]
    assert (res["outcome"], res["code"], res["enh"]) == \
        ("bounced", 554, "5.7.1"), r
    assert r.done[1]["reusable"] == "1"


def test_connection_reuse(sink_factory, tmp_path):
    sink = sink_factory()
    r = run_probe(tmp_path, sink.host, sink.port, ["a@remote.test"],
                  opts=["-n", "3"])
    for n in (1, 2, 3):
        assert r.rcpts[n]["a@remote.test"]["outcome"] == "delivered", r
    msgs = sink.wait_for(3)
    assert len({m["peer"] for m in msgs}) == 1, [m["peer"] for m in msgs]
    assert r.stderr.count("event=connecting") == 1


def test_starttls_verified(sink_factory, certs, tmp_path):
    sink = sink_factory(certs=certs)
    r = run_probe(tmp_path, sink.host, sink.port, ["a@remote.test"],
                  opts=["-T", "verify", "-C", certs["ca"], "-S", "localhost",
                        "-n", "2"])
    assert r.connect["status"] == "ok" and r.connect["tls"] == "1", r
    assert r.rcpts[1]["a@remote.test"]["outcome"] == "delivered"
    assert r.rcpts[2]["a@remote.test"]["outcome"] == "delivered"
    msgs = sink.wait_for(2)
    assert all(m["tls"] for m in msgs)
    assert "event=tls version=TLSv1." in r.stderr


def test_starttls_verify_fails_no_plaintext_fallback(sink_factory, certs,
                                                    tmp_path):
    sink = sink_factory(certs=certs)
    r = run_probe(tmp_path, sink.host, sink.port, ["a@remote.test"],
                  opts=["-T", "verify", "-C", certs["ca"], "-S",
                        "wrong-name.test"])
    assert r.connect["status"] == "tls", r
    assert r.connect["tls_failed"] == "1"
    assert r.connect["enh"] == "4.7.5"
    assert "certificate verification failed" in r.connect["text"]
    assert "event=tls-failed" in r.stderr
    assert 1 not in r.rcpts          # nothing sent, in plaintext or not
    assert sink.attempts == []


def test_starttls_opportunistic_unverified(sink_factory, certs, tmp_path):
    sink = sink_factory(certs=certs)
    # no CA given: the system store cannot verify the test CA, "may"
    # encrypts anyway
    r = run_probe(tmp_path, sink.host, sink.port, ["a@remote.test"],
                  opts=["-T", "may"])
    assert r.connect["tls"] == "1", r
    assert r.rcpts[1]["a@remote.test"]["outcome"] == "delivered"
    assert sink.wait_for(1)[0]["tls"]


def test_tls_required_but_not_offered(sink_factory, certs, tmp_path):
    sink = sink_factory()
    r = run_probe(tmp_path, sink.host, sink.port, ["a@remote.test"],
                  opts=["-T", "verify", "-C", certs["ca"], "-S", "localhost"])
    assert r.connect["status"] == "tls", r
    assert r.connect["enh"] == "4.7.10"
    assert sink.attempts == []


def test_smtputf8_delivered_when_offered(sink_factory, tmp_path):
    sink = sink_factory()
    data = "Subject: héllo wörld\r\n\r\nbödy\r\n".encode()
    r = run_probe(tmp_path, sink.host, sink.port, ["a@remote.test"],
                  data=data)
    assert r.rcpts[1]["a@remote.test"]["outcome"] == "delivered", r
    m = sink.wait_for(1)[0]
    assert "SMTPUTF8" in m["mail_options"]
    assert "BODY=8BITMIME" in m["mail_options"]
    assert m["data"] == data


def test_connect_refused(tmp_path):
    port = pf.free_port("127.0.0.3")
    r = run_probe(tmp_path, "127.0.0.3", port, ["a@remote.test"])
    assert r.connect["status"] == "connect", r
    assert r.connect["enh"] == "4.4.1"


# ------------------------------------------------- scripted servers

def test_smtputf8_needed_not_offered_bounced(raw_server, tmp_path):
    def script(p):
        p.greet(["8BITMIME", "SIZE 1000000"])
        p.expect(b"QUIT")       # nothing else was sent
        p.send(b"221 bye\r\n")

    srv = raw_server(script)
    data = "Subject: héllo\r\n\r\nbody\r\n".encode()
    r = run_probe(tmp_path, srv.host, srv.port, ["a@remote.test",
                                                 "b@remote.test"], data=data)
    for a in ("a@remote.test", "b@remote.test"):
        res = r.rcpts[1][a]
        assert res["outcome"] == "bounced", r
        assert res["enh"] == "5.6.7" and res["local"] == 1
        assert res["text"] == "remote server does not support SMTPUTF8"
    assert not any(c.upper().startswith(b"MAIL") for c in srv.commands)
    assert srv.errors == []


def test_size_limit_bounced_without_sending(raw_server, tmp_path):
    def script(p):
        p.greet(["SIZE 100"])
        p.expect(b"QUIT")       # nothing else was sent
        p.send(b"221 bye\r\n")

    srv = raw_server(script)
    r = run_probe(tmp_path, srv.host, srv.port, ["a@remote.test"],
                  data=b"Subject: big\r\n\r\n" + b"x" * 500 + b"\r\n")
    res = r.rcpts[1]["a@remote.test"]
    assert (res["outcome"], res["code"], res["enh"], res["local"]) == \
        ("bounced", 552, "5.3.4", 1), r
    assert not any(c.upper().startswith(b"MAIL") for c in srv.commands)


def test_pipelining_and_chunking(raw_server, tmp_path):
    data = b"Subject: bdat\r\n\r\n.dot\nbare\rend"

    def script(p):
        p.greet(["PIPELINING", "CHUNKING", "SIZE 1000000", "8BITMIME"])
        # pipelined: all three commands arrive before any reply
        cmds = [p.readline() for _ in range(3)]
        assert cmds[0].startswith(b"MAIL FROM:<sender@petrel.test>"), cmds
        assert cmds[1:] == [b"RCPT TO:<a@remote.test>",
                            b"RCPT TO:<b@remote.test>"], cmds
        p.send(b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n550 5.1.1 unknown\r\n")
        m = re.match(rb"^BDAT (\d+) LAST$", p.readline())
        assert m
        p.server.datas.append(p.read_exact(int(m.group(1))))
        p.send(b"250 2.0.0 chunked\r\n")
        p.expect(b"QUIT")
        p.send(b"221 bye\r\n")

    srv = raw_server(script)
    r = run_probe(tmp_path, srv.host, srv.port,
                  ["a@remote.test", "b@remote.test"], data=data)
    assert srv.errors == [], srv.errors
    assert r.rcpts[1]["a@remote.test"]["outcome"] == "delivered", r
    assert r.rcpts[1]["a@remote.test"]["text"] == "chunked"
    assert r.rcpts[1]["b@remote.test"]["outcome"] == "bounced"
    assert srv.datas == [normalise(data)]   # BDAT: no dot stuffing


def test_pipelining_with_data(raw_server, tmp_path):
    data = b"Subject: p\r\n\r\n.a\n..b\n.\nz"

    def script(p):
        p.greet(["PIPELINING", "CHUNKING"])
        cmds = [p.readline() for _ in range(3)]
        assert cmds[1:] == [b"RCPT TO:<a@remote.test>", b"DATA"], cmds
        p.send(b"250 ok\r\n250 ok\r\n354 go\r\n")
        p.server.datas.append(p.read_data())
        p.send(b"250 queued\r\n")
        p.expect(b"QUIT")
        p.send(b"221 bye\r\n")

    srv = raw_server(script)
    r = run_probe(tmp_path, srv.host, srv.port, ["a@remote.test"], data=data,
                  opts=["-K"])
    assert srv.errors == [], srv.errors
    assert r.rcpts[1]["a@remote.test"]["outcome"] == "delivered", r
    assert srv.datas == [b"Subject: p\r\n\r\n..a\r\n...b\r\n..\r\nz\r\n.\r\n"]


def test_452_too_many_recipients_rest_deferred(raw_server, tmp_path):
    def script(p):
        p.greet(["8BITMIME"])
        p.expect(b"MAIL")
        p.send(b"250 ok\r\n")
        p.expect(b"RCPT TO:<r1@")
        p.send(b"250 ok\r\n")
        p.expect(b"RCPT TO:<r2@")
        p.send(b"452 4.5.3 too many recipients\r\n")
        p.expect(b"DATA")
        p.send(b"354 go\r\n")
        p.server.datas.append(p.read_data())
        p.send(b"250 ok\r\n")
        p.expect(b"QUIT")
        p.send(b"221 bye\r\n")

    srv = raw_server(script)
    r = run_probe(tmp_path, srv.host, srv.port,
                  ["r1@remote.test", "r2@remote.test", "r3@remote.test"])
    assert srv.errors == [], srv.errors
    got = r.rcpts[1]
    assert got["r1@remote.test"]["outcome"] == "delivered", r
    for a in ("r2@remote.test", "r3@remote.test"):
        assert got[a]["outcome"] == "deferred"
        assert (got[a]["code"], got[a]["enh"]) == (452, "4.5.3")
    assert not any(c.startswith(b"RCPT TO:<r3@") for c in srv.commands)


HOSTILE = {
    # name: (stage, reply bytes, reason the client must give)
    "short_continuation": ("rcpt", b"250-ok\r\n25\r\n",
                           "shorter than 4 bytes"),
    "mixed_codes": ("rcpt", b"250-first\r\n550 second\r\n",
                    "mixed reply codes"),
    "endless_continuation": ("rcpt", None, "too many reply lines"),
    "line_over_64k": ("rcpt", b"250 " + b"A" * 70000 + b"\r\n",
                      "reply line too long"),
    "control_bytes": ("rcpt", b"250 ok \x1b[31mred\x07\r\n", "control byte"),
    "bare_cr_in_text": ("rcpt", b"250 ok\rfake\r\n", "bare CR/LF"),
    "bare_lf_in_text": ("rcpt", b"250 ok\n250 fake\r\n", "bare LF"),
    "nul_byte": ("rcpt", b"250 ok\x00\r\n", "control byte"),
    "bad_code": ("rcpt", b"2x0 ok\r\n", "malformed reply code"),
    "unsolicited_extra_reply": ("rcpt", b"250 ok\r\n250 extra\r\n",
                                "unexpected reply to DATA"),
    "final_reply_garbage": ("data_end", b"250-ok\r\n2\r\n",
                            "shorter than 4 bytes"),
    "final_reply_huge": ("data_end", b"250-" + b"\xff" * 66000 + b"\r\n",
                         "reply line too long"),
}


def _hostile_script(stage, reply):
    def script(p):
        p.greet(["8BITMIME"])
        p.expect(b"MAIL")
        p.send(b"250 ok\r\n")
        p.expect(b"RCPT")
        if stage == "rcpt":
            if reply is None:
                for i in range(5000):
                    p.send(b"250-line %d\r\n" % i)
            else:
                p.send(reply)
        else:
            p.send(b"250 ok\r\n")
            p.expect(b"DATA")
            p.send(b"354 go\r\n")
            p.read_data()
            p.send(reply)
        p.wait_eof()
    return script


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_reply_defers_4_4_2(raw_server, tmp_path, case):
    stage, reply, reason = HOSTILE[case]
    srv = raw_server(_hostile_script(stage, reply))
    r = run_probe(tmp_path, srv.host, srv.port, ["a@remote.test"],
                  opts=["-t", "5000"])
    res = r.rcpts[1]["a@remote.test"]
    assert res["outcome"] == "deferred", r
    assert (res["code"], res["enh"], res["local"]) == (451, "4.4.2", 1), r
    assert res["text"].startswith("protocol error: "), r
    assert reason in res["text"], r
    assert_sanitised(res["text"])
    assert r.done[1]["reusable"] == "0"


def test_hostile_ehlo_endless_lines(raw_server, tmp_path):
    def script(p):
        p.send(b"220 raw.test\r\n")
        p.expect(b"EHLO")
        for i in range(5000):
            p.send(b"250-EXT%d\r\n" % i)
        p.wait_eof()

    srv = raw_server(script)
    r = run_probe(tmp_path, srv.host, srv.port, ["a@remote.test"])
    assert r.connect["status"] == "protocol", r
    assert (r.connect["code"], r.connect["enh"]) == ("451", "4.4.2")
    assert "too many reply lines" in r.connect["text"]
    assert_sanitised(r.connect["text"])


def test_hostile_greeting_mixed_codes(raw_server, tmp_path):
    def script(p):
        p.send(b"220-raw.test\r\n554 \xff\xfe\x01 go away\r\n")
        p.wait_eof()

    srv = raw_server(script)
    r = run_probe(tmp_path, srv.host, srv.port, ["a@remote.test"])
    assert r.connect["status"] == "protocol", r
    assert r.connect["enh"] == "4.4.2"
    assert_sanitised(r.connect["text"])


def test_greeting_timeout(raw_server, tmp_path):
    def script(p):
        p.wait_eof()

    srv = raw_server(script)
    r = run_probe(tmp_path, srv.host, srv.port, ["a@remote.test"],
                  opts=["-t", "500"])
    assert r.connect["status"] == "protocol", r
    assert "timeout waiting for the greeting" in r.connect["text"]


def test_rcpt_timeout_defers(raw_server, tmp_path):
    def script(p):
        p.greet()
        p.expect(b"MAIL")
        p.send(b"250 ok\r\n")
        p.expect(b"RCPT")
        p.wait_eof()

    srv = raw_server(script)
    r = run_probe(tmp_path, srv.host, srv.port, ["a@remote.test"],
                  opts=["-t", "500"])
    res = r.rcpts[1]["a@remote.test"]
    assert (res["outcome"], res["enh"]) == ("deferred", "4.4.2"), r
    assert "timeout" in res["text"]


def test_connection_dropped_mid_data(raw_server, tmp_path):
    def script(p):
        p.greet(["8BITMIME"])
        p.expect(b"MAIL")
        p.send(b"250 ok\r\n")
        p.expect(b"RCPT")
        p.send(b"250 ok\r\n")
        p.expect(b"RCPT")
        p.send(b"250 ok\r\n")
        p.expect(b"DATA")
        p.send(b"354 go\r\n")
        p.read_exact(1000)
        # RST rather than FIN: the client is still writing
        p.conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                          b"\x01\x00\x00\x00\x00\x00\x00\x00")

    srv = raw_server(script)
    data = b"Subject: big\r\n\r\n" + (b"y" * 76 + b"\r\n") * 40000
    r = run_probe(tmp_path, srv.host, srv.port,
                  ["a@remote.test", "b@remote.test"], data=data)
    assert srv.errors == [], srv.errors
    for a in ("a@remote.test", "b@remote.test"):
        res = r.rcpts[1][a]
        assert (res["outcome"], res["code"], res["enh"]) == \
            ("deferred", 451, "4.4.2"), r
        assert "connection lost during message data" in res["text"], r
    assert r.done[1]["reusable"] == "0"


def test_connection_closed_after_data_without_reply(raw_server, tmp_path):
    def script(p):
        p.greet()
        p.expect(b"MAIL")
        p.send(b"250 ok\r\n")
        p.expect(b"RCPT")
        p.send(b"250 ok\r\n")
        p.expect(b"DATA")
        p.send(b"354 go\r\n")
        p.read_data()
        # close without the final reply

    srv = raw_server(script)
    r = run_probe(tmp_path, srv.host, srv.port, ["a@remote.test"])
    res = r.rcpts[1]["a@remote.test"]
    assert (res["outcome"], res["enh"]) == ("deferred", "4.4.2"), r


def test_starttls_plaintext_injection_discarded(raw_server, certs, tmp_path):
    sctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    sctx.load_cert_chain(certs["cert"], certs["key"])

    def script(p):
        p.greet(["STARTTLS"])
        p.expect(b"STARTTLS")
        # the 220 and an injected "reply" in one segment
        p.send(b"220 go ahead\r\n250-PIPELINING\r\n250 injected\r\n")
        tconn = sctx.wrap_socket(p.conn, server_side=True)
        p.conn = tconn
        p.buf = b""
        line = p.readline()
        p.server.datas.append(line)
        assert line.startswith(b"EHLO "), line
        p.send(b"250-raw.test\r\n250 8BITMIME\r\n")
        p.expect(b"MAIL")
        p.send(b"250 ok\r\n")
        p.expect(b"RCPT")
        p.send(b"250 ok\r\n")
        p.expect(b"DATA")
        p.send(b"354 go\r\n")
        p.read_data()
        p.send(b"250 2.0.0 over tls\r\n")
        p.expect(b"QUIT")
        p.send(b"221 bye\r\n")

    srv = raw_server(script)
    r = run_probe(tmp_path, srv.host, srv.port, ["a@remote.test"],
                  opts=["-T", "verify", "-C", certs["ca"], "-S", "localhost"])
    assert srv.errors == [], srv.errors
    assert r.connect["status"] == "ok" and r.connect["tls"] == "1", r
    # PIPELINING came only from the injected plaintext: must not be seen
    assert "PIPELINING" not in r.connect["ext"]
    assert r.rcpts[1]["a@remote.test"]["outcome"] == "delivered"
    assert r.rcpts[1]["a@remote.test"]["text"] == "over tls"
    assert "event=starttls-injection" in r.stderr


def test_starttls_handshake_failure_reported(raw_server, tmp_path):
    def script(p):
        p.greet(["STARTTLS"])
        p.expect(b"STARTTLS")
        p.send(b"220 go ahead\r\n")
        p.send(b"this is not TLS at all\r\n" * 4)
        p.wait_eof()

    srv = raw_server(script)
    r = run_probe(tmp_path, srv.host, srv.port, ["a@remote.test"],
                  opts=["-T", "may", "-t", "5000"])
    assert r.connect["status"] == "tls", r
    assert r.connect["tls_failed"] == "1"
    assert "event=tls-failed" in r.stderr
    assert not any(c.upper().startswith(b"MAIL") for c in srv.commands)


def test_421_while_pipelined_defers_all(raw_server, tmp_path):
    def script(p):
        p.greet(["PIPELINING"])
        for _ in range(4):
            p.readline()
        p.send(b"250 ok\r\n421 4.3.2 shutting down\r\n")
        p.wait_eof()

    srv = raw_server(script)
    r = run_probe(tmp_path, srv.host, srv.port,
                  ["a@remote.test", "b@remote.test"], opts=["-K"])
    for a in ("a@remote.test", "b@remote.test"):
        res = r.rcpts[1][a]
        assert (res["outcome"], res["code"], res["enh"]) == \
            ("deferred", 421, "4.3.2"), r
    assert r.done[1]["reusable"] == "0"


def test_greeting_554_refused(raw_server, tmp_path):
    def script(p):
        p.send(b"554 5.7.1 no service for you\r\n")
        p.wait_eof()

    srv = raw_server(script)
    r = run_probe(tmp_path, srv.host, srv.port, ["a@remote.test"])
    assert r.connect["status"] == "refused", r
    assert (r.connect["code"], r.connect["enh"]) == ("554", "5.7.1")
    assert r.connect["text"] == "no service for you"


def test_ehlo_refused_helo_fallback(raw_server, tmp_path):
    def script(p):
        p.send(b"220 old.test\r\n")
        p.expect(b"EHLO petrel.test")
        p.send(b"502 5.5.1 what\r\n")
        p.expect(b"HELO petrel.test")
        p.send(b"250 old.test\r\n")
        p.expect(b"MAIL FROM:<sender@petrel.test>")   # no SIZE/BODY params
        p.send(b"250 ok\r\n")
        p.expect(b"RCPT TO:<a@remote.test>")
        p.send(b"250 ok\r\n")
        p.expect(b"DATA")
        p.send(b"354 go\r\n")
        p.server.datas.append(p.read_data())
        p.send(b"250 ok\r\n")
        p.expect(b"QUIT")
        p.send(b"221 bye\r\n")

    srv = raw_server(script)
    r = run_probe(tmp_path, srv.host, srv.port, ["a@remote.test"])
    assert r.connect["status"] == "ok" and r.connect["ext"] == "-", r
    assert r.rcpts[1]["a@remote.test"]["outcome"] == "delivered"
    assert b"MAIL FROM:<sender@petrel.test>" in srv.commands
