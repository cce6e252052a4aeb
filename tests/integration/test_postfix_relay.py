"""test_postfix_relay - a real Postfix uses Petrel as its relayhost.

Issue 4: "A Postfix host configured with `relayhost = [127.0.0.1]:PORT`
delivers through Petrel's relay listener unchanged."

Each test runs a private Postfix instance (Debian's postfix package) with
its own config_directory, queue_directory, data_directory and maillog_file
in a short-named directory inside the session's tmp root (linked from the
test's work directory as "postfix"; unix-socket paths are limited to 108
bytes). It listens on 127.0.0.1:<free port> only (never port 25), has no
local domains (mydestination empty) and relays everything to its
relayhost. A system-wide Postfix, if any, is neither used nor touched:
every postfix command gets -c CONFDIR, and the instance's processes are
found (and, at teardown, ended by pid) by the MAIL_CONFIG=CONFDIR in their
environment.

Tests:
- test_postfix_instance_relays_to_sink: the Postfix half alone, relaying
  to an aiosmtpd sink (proves the instance set-up).
- test_postfix_relays_through_petrel: the requirement, with
  relayhost = [127.0.0.1]:<relay port> and a relay network. The message
  leaves Postfix with status=sent and Petrel's "250 2.0.0 Ok: queued as
  ID" (over opportunistic STARTTLS); `petrelctl message show ID --json`
  has the envelope, header From and Message-ID Postfix saw, and the bytes
  Petrel stored (read with mdb_dump) are the original message with only
  Received: fields in front. A message without Message-ID keeps the one
  Postfix added.
- test_postfix_sasl_submission_through_petrel: the other set-up of
  doc/relay-postfix.md: relayhost on the submission port, verified TLS,
  SASL AUTH as a tenant user.
- test_postfix_bounces_on_petrel_policy_reject[envelope|header]: a sender
  (MAIL FROM, or header From) outside the tenant's domains is refused by
  Petrel with 550 5.7.1, which Postfix logs as status=bounced; Petrel
  queued nothing of it.

Run (as root): PETREL_BUILD_DIR=<build dir> /usr/bin/python3 -m pytest -q
tests/integration/test_postfix_relay.py
"""

import os
import re
import shutil
import signal
import smtplib
import subprocess
import tempfile
import time
from email import message_from_bytes
from email.policy import default as default_policy
from pathlib import Path

import pytest

import petrel_fixtures as pf

POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"
MDB_DUMP = shutil.which("mdb_dump")

pytestmark = pytest.mark.skipif(
    not os.path.exists(POSTFIX) or os.geteuid() != 0,
    reason="needs Debian's postfix package and root")

# Services a relay-only instance needs; everything else in Debian's
# master.cf (pipe transports for maildrop, uucp, ...) is dropped.
_SERVICES = {"smtp", "pickup", "cleanup", "qmgr", "tlsmgr", "rewrite",
             "bounce", "defer", "trace", "verify", "flush", "proxymap",
             "proxywrite", "relay", "showq", "error", "retry", "discard",
             "local", "virtual", "lmtp", "anvil", "scache", "postlog"}


def _master_cf(src, smtpd_port):
    """_master_cf - Debian's master.cf with the smtpd moved to
    127.0.0.1:smtpd_port, chroot off everywhere (the private queue
    directory has no chroot files) and only the services above"""
    out = []
    keep = False
    have_postlog = False
    for line in Path(src).read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line[0].isspace():          # -o continuation of the entry above
            if keep:
                out.append(line)
            continue
        f = line.split()
        keep = len(f) >= 8 and f[0] in _SERVICES
        if not keep:
            continue
        if f[0] == "smtp" and f[1] == "inet":
            f[0] = "127.0.0.1:%d" % smtpd_port
        if f[0] == "postlog":
            have_postlog = True
        f[4] = "n"                      # chroot
        out.append("%-10s %-10s %-3s %-3s %-3s %-7s %-3s %s"
                   % tuple(f[:7] + [" ".join(f[7:])]))
    if not have_postlog:
        out.append("postlog    unix-dgram n   -   n   -       1   postlogd")
    return "\n".join(out) + "\n"


class Postfix:
    """Postfix - a private Postfix instance under workdir/postfix"""

    def __init__(self, workdir, relayhost, extra=None, files=None):
        # Postfix clients connect to absolute unix-socket paths such as
        # <queue_directory>/public/postlog, limited to 108 bytes: test
        # work directory names are too long, so the instance lives in a
        # short-named directory next to them (inside the session's tmp
        # root), linked from workdir/postfix.
        workdir = Path(workdir)
        parent = workdir.parent
        if len(str(parent)) > 50:
            parent = Path("/tmp")
        self.base = Path(tempfile.mkdtemp(prefix="pf-", dir=parent))
        self.own_base = parent != workdir.parent
        try:
            (workdir / "postfix").symlink_to(self.base)
        except OSError:
            pass
        self.conf_dir = self.base / "etc"
        self.queue_dir = self.base / "spool"
        self.data_dir = self.base / "lib"
        self.log_dir = self.base / "log"
        self.maillog = self.log_dir / "maillog"
        self.port = pf.free_port()
        self.started = False
        # queue_directory itself must exist (root, 0755); postfix check
        # creates its subdirectories with the right owners
        for d in (self.base, self.conf_dir, self.log_dir, self.queue_dir):
            d.mkdir(parents=True, exist_ok=True)
            os.chmod(d, 0o755)
        main = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.queue_dir),
            "data_directory": str(self.data_dir),
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": "legacy.test",
            "mydomain": "legacy.test",
            "myorigin": "$myhostname",
            "mydestination": "",
            "mynetworks": "127.0.0.0/8",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "relayhost": relayhost,
            "smtp_tls_security_level": "may",
            "smtp_tls_loglevel": "1",
            "smtpd_tls_security_level": "none",
            "smtpd_relay_restrictions":
                "permit_mynetworks, reject_unauth_destination",
            "alias_maps": "",
            "alias_database": "",
            "local_recipient_maps": "",
            "biff": "no",
            "append_dot_mydomain": "no",
            "maillog_file": str(self.maillog),
            "maillog_file_prefixes": str(self.log_dir),
            "syslog_name": "postfix-pfrelay",
            # a refused message is bounced at once, never retried here
            "soft_bounce": "no",
            "smtp_host_lookup": "native",
        }
        main.update(extra or {})
        self.main = main
        (self.conf_dir / "main.cf").write_text(
            "# private test instance, written by test_postfix_relay.py\n"
            + "".join("%s = %s\n" % kv for kv in main.items()))
        (self.conf_dir / "master.cf").write_text(
            _master_cf("/etc/postfix/master.cf", self.port))
        for name, text in (files or {}).items():
            f = self.conf_dir / name
            f.write_text(text)
            os.chmod(f, 0o600)

    # -- commands

    def cmd(self, *args, check=True):
        """cmd - postfix -c CONFDIR args"""
        r = subprocess.run([POSTFIX, "-c", str(self.conf_dir)] + list(args),
                           capture_output=True, text=True, timeout=60,
                           env=self._env())
        if check and r.returncode != 0:
            raise AssertionError("postfix %s exited %d\n%s%s\nmaillog:\n%s"
                                 % (" ".join(args), r.returncode, r.stdout,
                                    r.stderr, self.log()[-3000:]))
        return r

    def _env(self):
        env = dict(os.environ)
        env["MAIL_CONFIG"] = str(self.conf_dir)
        return env

    def start(self):
        """start - create the queue directories, check, start, and wait
        until the smtpd accepts connections"""
        self.cmd("check")              # creates queue_directory & co
        self.started = True
        self.cmd("start")
        pf.wait_for(lambda: pf._port_open("127.0.0.1", self.port),
                    timeout=20, what="postfix smtpd on 127.0.0.1:%d"
                    % self.port)
        return self

    def master_pid(self):
        try:
            return int((self.queue_dir / "pid" / "master.pid")
                       .read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def pids(self):
        """pids - processes of this instance: everything with
        MAIL_CONFIG=<our conf dir> in its environment (the postfix command
        exports it to master, whose import_environment passes it on)"""
        want = ("MAIL_CONFIG=%s" % self.conf_dir).encode()
        found = set()
        for p in Path("/proc").iterdir():
            if not p.name.isdigit():
                continue
            try:
                env = (p / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if want in env:
                found.add(int(p.name))
        found.discard(os.getpid())
        return found

    def stop(self):
        """stop - postfix stop, then make sure no process of the instance
        is left (SIGKILL by pid for stragglers)"""
        if self.started:
            self.started = False
            self.cmd("stop", check=False)
        deadline = time.monotonic() + 10
        while self.pids() and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        pf.wait_for(lambda: not self.pids(), timeout=5,
                    what="postfix instance processes gone")
        if self.own_base and not os.environ.get("PETREL_KEEP_TMP"):
            shutil.rmtree(self.base, ignore_errors=True)

    # -- log

    def log(self):
        try:
            return self.maillog.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_log(self, regex, timeout=30):
        """wait_log - wait until regex (re.M) matches the maillog"""
        rx = re.compile(regex, re.M)
        try:
            return pf.wait_for(lambda: rx.search(self.log()), timeout=timeout,
                               interval=0.1, what="/%s/ in %s"
                               % (regex, self.maillog))
        except AssertionError as e:
            raise AssertionError("%s\nmaillog tail:\n%s"
                                 % (e, self.log()[-4000:])) from None

    def submit(self, mail_from, rcpts, data):
        """submit - send data (bytes, CRLF) to the instance's smtpd;
        returns Postfix's queue id from its 250 reply"""
        with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as c:
            c.ehlo("app.legacy.test")
            code, resp = c.mail(mail_from, ["BODY=8BITMIME"])
            assert code == 250, (code, resp)
            for r in rcpts:
                code, resp = c.rcpt(r)
                assert code == 250, (code, resp)
            code, resp = c.data(data)
            assert code == 250, (code, resp)
        m = re.search(rb"queued as ([0-9A-Za-z]+)", resp)
        assert m, resp
        return m.group(1).decode()

    def delivery(self, qid, rcpt, timeout=30):
        """delivery - wait for the first delivery attempt line of
        (qid, rcpt); returns its match (groups relay, status, reply)"""
        return self.wait_log(
            r"postfix-pfrelay/\S+\[\d+\]: %s: to=<%s>, relay=(\S+), "
            r".*status=(sent|bounced|deferred) \((.*)\)$"
            % (re.escape(qid), re.escape(rcpt)), timeout=timeout)


@pytest.fixture
def postfix_factory(workdir):
    """postfix_factory(relayhost, extra=None, files=None) -> started
    Postfix (files: name -> text written to its conf dir); stopped
    (all processes gone) at teardown, whatever happened"""
    made = []

    def make(relayhost, extra=None, files=None):
        p = Postfix(workdir, relayhost, extra, files)
        made.append(p)
        return p.start()

    yield make
    for p in made:
        p.stop()


def _message(mail_from, rcpt, subject, msgid=None):
    """_message - a message (bytes, CRLF lines) with an 8-bit line, lines
    starting with dots (dot-stuffed on both hops) and a long line"""
    hdrs = [
        "From: Legacy App <%s>" % mail_from,
        "To: <%s>" % rcpt,
        "Subject: %s" % subject,
        "Date: Thu, 27 Nov 2025 12:00:00 +0000",
    ]
    if msgid:
        hdrs.append("Message-ID: %s" % msgid)
    hdrs += ["MIME-Version: 1.0",
             "Content-Type: text/plain; charset=utf-8",
             "Content-Transfer-Encoding: 8bit"]
    body = ["Hello from the legacy host.",
            ".a line starting with a dot",
            "..two dots",
            ".",
            "caf\u00e9 na\u00efve \u2013 8-bit text",
            "x" * 900,
            "",
            "end"]
    return ("\r\n".join(hdrs) + "\r\n\r\n" + "\r\n".join(body)
            + "\r\n").encode("utf-8")


_RECEIVED_PREFIX = re.compile(rb"\A(?:Received:[^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*)+")


_SIGNATURE_PREFIX = re.compile(
    rb"(?:(?:DKIM-Signature|ARC-Seal|ARC-Message-Signature|"
    rb"ARC-Authentication-Results):[^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*)*",
    re.I)


def _strip_received(data):
    """_strip_received - (the leading Received: fields, the rest), after
    dropping the signature fields Petrel's prepare stage puts on top once
    it has signed the stored message"""
    data = data[_SIGNATURE_PREFIX.match(data).end():]
    m = _RECEIVED_PREFIX.match(data)
    if not m:
        return b"", data
    return data[:m.end()], data[m.end():]


def _mdb_unescape(s):
    """_mdb_unescape - a line of mdb_dump -p output to bytes"""
    out = bytearray()
    i = 0
    while i < len(s):
        c = s[i]
        if c == "\\":
            if s[i + 1] == "\\":
                out.append(0x5C)
                i += 2
            else:
                out.append(int(s[i + 1:i + 3], 16))
                i += 3
        else:
            out += c.encode("latin-1")
            i += 1
    return bytes(out)


def _petrel_body(petrel, qid):
    """_petrel_body - the stored message bytes of qid, read from the
    'bodies' database with mdb_dump (an LMDB reader next to petreld)"""
    r = subprocess.run([MDB_DUMP, "-p", "-s", "bodies", str(petrel.data_dir)],
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.decode("latin-1").split("\n")
    i = lines.index("HEADER=END") + 1
    while i + 1 < len(lines) and lines[i] != "DATA=END":
        k, v = lines[i], lines[i + 1]
        if _mdb_unescape(k[1:]).rstrip(b"\0") == qid.encode():
            return _mdb_unescape(v[1:])
        i += 2
    raise AssertionError("no body for %s in %s" % (qid, petrel.data_dir))


def _strip_angle(s):
    s = (s or "").strip()
    return s[1:-1] if s.startswith("<") and s.endswith(">") else s


# ------------------------------------------------------------------ tests

def test_postfix_instance_relays_to_sink(postfix_factory, sink_factory):
    """postfix instance relays to a sink: the private instance, with the
    same settings as below, delivers to its relayhost"""
    sink = sink_factory(host="127.0.0.1")
    pfx = postfix_factory("[127.0.0.1]:%d" % sink.port)
    data = _message("app@example.test", "rcpt@dest.test", "sink check",
                    "<sink-check.1@legacy.test>")
    master = pfx.master_pid()
    assert master and master in pfx.pids(), (master, pfx.pids())
    qid = pfx.submit("app@example.test", ["rcpt@dest.test"], data)
    m = pfx.delivery(qid, "rcpt@dest.test")
    assert m.group(1) == "127.0.0.1[127.0.0.1]:%d" % sink.port
    assert m.group(2) == "sent", m.group(0)
    got = sink.wait_for(1)[0]
    assert got["mail_from"] == "app@example.test"
    assert got["rcpt_tos"] == ["rcpt@dest.test"]
    assert got["helo"] == "legacy.test"
    added, rest = _strip_received(got["data"].replace(b"\r\n", b"\n")
                                  .replace(b"\n", b"\r\n"))
    assert added.count(b"Received:") == 1 and b"legacy.test" in added
    assert rest == data
    # nothing listens on 25 for this instance; it is gone after stop
    pfx.stop()
    assert not pfx.pids()
    assert not pf._port_open("127.0.0.1", pfx.port)


def test_postfix_relays_through_petrel(petrel, postfix_factory):
    t = petrel.setup_tenant()
    petrel.ctl("network", "add", t["tenant"], "127.0.0.0/8")
    relay = petrel.ports["relay"]
    pfx = postfix_factory("[127.0.0.1]:%d" % relay)

    sender = "legacy-app@%s" % t["domain"]
    rcpt = "rcpt@dest.test"
    msgid = "<postfix-relay.1@legacy.test>"
    data = _message(sender, rcpt, "relayed by postfix", msgid)
    qid = pfx.submit(sender, [rcpt], data)
    m = pfx.delivery(qid, rcpt)
    assert m.group(1) == "127.0.0.1[127.0.0.1]:%d" % relay, m.group(0)
    assert m.group(2) == "sent", m.group(0)
    pm = re.match(r"250 2\.0\.0 Ok: queued as ([0-9A-Z]+)$", m.group(3))
    assert pm, "Postfix logged %r" % m.group(3)
    pqid = pm.group(1)

    # the Message-ID Postfix saw (cleanup logs it)
    seen = pfx.wait_log(r": %s: message-id=(<[^>]*>)" % re.escape(qid))
    assert seen.group(1) == msgid

    shown = petrel.ctl_json("message", "show", pqid)
    assert shown["id"] == pqid
    assert shown["tenant"] == t["tenant"]
    assert shown["mail_from"] == sender
    assert shown["header_from"] == sender
    assert _strip_angle(shown["message_id"]) == _strip_angle(msgid)
    assert [r["address"] for r in shown["recipients"]] == [rcpt]
    assert shown["recipients"][0]["status"] in ("queued", "deferred",
                                                "delivered")
    listed = petrel.ctl_json("queue", "list")
    assert pqid in [x["id"] for x in listed] or \
        shown["recipients"][0]["status"] == "delivered"

    # Postfix used STARTTLS (smtp_tls_security_level = may) with Petrel
    pfx.wait_log(r"TLS connection established to 127\.0\.0\.1\[127\.0\.0\.1\]"
                 r":%d: TLSv1\.[23]" % relay)

    # unchanged: the stored bytes are the submitted message with only
    # Received: fields (Petrel's, then Postfix's) in front
    assert MDB_DUMP, "mdb_dump (lmdb-utils) is needed to read the body"
    stored = _petrel_body(petrel, pqid)
    added, rest = _strip_received(stored)
    assert rest == data, (rest[:600], data[:600])
    fields = re.split(rb"\r\n(?=Received:)", added)
    assert len(fields) == 2, added
    assert b"petrel.test" in fields[0] and b"TLS" in fields[0], fields[0]
    assert b"by legacy.test (Postfix)" in fields[1], fields[1]
    msg = message_from_bytes(stored, policy=default_policy)
    assert msg["Subject"] == "relayed by postfix"
    assert msg["Message-ID"] == msgid
    assert "caf\u00e9" in msg.get_content()
    # size is the message as received; signing prepends fields later
    received = stored[_SIGNATURE_PREFIX.match(stored).end():]
    assert shown["size"] == len(received), (shown["size"], len(received))

    # a second message without a Message-ID: Petrel keeps the one Postfix
    # added rather than making its own
    data2 = _message(sender, rcpt, "no message-id from the app")
    qid2 = pfx.submit(sender, [rcpt], data2)
    m2 = pfx.delivery(qid2, rcpt)
    assert m2.group(2) == "sent", m2.group(0)
    pqid2 = re.match(r"250 2\.0\.0 Ok: queued as ([0-9A-Z]+)$",
                     m2.group(3)).group(1)
    assert pqid2 != pqid
    added_id = pfx.wait_log(r": %s: message-id=(<[^>]*>)"
                            % re.escape(qid2)).group(1)
    assert added_id.endswith("@legacy.test>"), added_id
    shown2 = petrel.ctl_json("message", "show", pqid2)
    assert _strip_angle(shown2["message_id"]) == _strip_angle(added_id)
    assert shown2["header_from"] == sender
    stored2 = message_from_bytes(_petrel_body(petrel, pqid2),
                                 policy=default_policy)
    assert stored2["Message-ID"] == added_id
    assert len(stored2.get_all("Message-ID")) == 1


def test_postfix_sasl_submission_through_petrel(petrel, postfix_factory):
    """the documented alternative: relayhost on Petrel's submission port,
    STARTTLS with a verified certificate, SASL AUTH as a tenant user (no
    relay network registered)"""
    t = petrel.setup_tenant()
    sub = petrel.ports["submission"]
    nexthop = "[127.0.0.1]:%d" % sub
    extra = {
        "smtp_sasl_auth_enable": "yes",
        "smtp_sasl_password_maps": "texthash:${config_directory}/sasl_passwd",
        "smtp_sasl_security_options": "noanonymous",
        "smtp_sasl_tls_security_options": "noanonymous",
        "smtp_tls_security_level": "secure",
        "smtp_tls_CAfile": petrel.certs["ca"],
        "smtp_tls_secure_cert_match": "localhost",
    }
    pfx = postfix_factory(nexthop, extra,
                          files={"sasl_passwd": "%s %s:%s\n" % (
                              nexthop, t["user"], t["password"])})

    sender = "legacy-app@%s" % t["domain"]
    rcpt = "rcpt@dest.test"
    msgid = "<postfix-sasl.1@legacy.test>"
    data = _message(sender, rcpt, "relayed by postfix with sasl", msgid)
    qid = pfx.submit(sender, [rcpt], data)
    m = pfx.delivery(qid, rcpt)
    assert m.group(1) == "127.0.0.1[127.0.0.1]:%d" % sub, m.group(0)
    assert m.group(2) == "sent", m.group(0)
    pqid = re.match(r"250 2\.0\.0 Ok: queued as ([0-9A-Z]+)$",
                    m.group(3)).group(1)
    pfx.wait_log(r"Verified TLS connection established to "
                 r"127\.0\.0\.1\[127\.0\.0\.1\]:%d" % sub)
    assert t["password"] not in pfx.log()
    assert t["password"] not in petrel.log()

    shown = petrel.ctl_json("message", "show", pqid)
    assert shown["tenant"] == t["tenant"]
    assert shown["mail_from"] == sender
    assert _strip_angle(shown["message_id"]) == _strip_angle(msgid)
    stored = _petrel_body(petrel, pqid)
    added, rest = _strip_received(stored)
    assert rest == data, (rest[:600], data[:600])
    assert b"authenticated tenant=%s user=%s" % (
        t["tenant"].encode(), t["user"].encode()) in added, added


@pytest.mark.parametrize("which", ["envelope", "header"])
def test_postfix_bounces_on_petrel_policy_reject(petrel, postfix_factory,
                                                 which):
    """a sender (MAIL FROM, or the header From after DATA) outside the
    tenant's domains: Petrel answers 550 5.7.1, Postfix bounces"""
    t = petrel.setup_tenant()
    petrel.ctl("network", "add", t["tenant"], "127.0.0.0/8")
    relay = petrel.ports["relay"]
    pfx = postfix_factory("[127.0.0.1]:%d" % relay)

    foreign = "someone@not-the-tenants.test"
    own = "legacy-app@%s" % t["domain"]
    env_from = foreign if which == "envelope" else own
    rcpt = "rcpt@dest.test"
    data = _message(foreign, rcpt, "should bounce",
                    "<postfix-relay.bounce-%s@legacy.test>" % which)
    qid = pfx.submit(env_from, [rcpt], data)
    m = pfx.delivery(qid, rcpt)
    assert m.group(1) == "127.0.0.1[127.0.0.1]:%d" % relay, m.group(0)
    assert m.group(2) == "bounced", m.group(0)
    assert re.search(r"said: 550 5\.7\.1 .*not-the-tenants\.test", m.group(3)), \
        m.group(3)
    stage = "MAIL FROM" if which == "envelope" else "end of DATA"
    assert "(in reply to %s command)" % stage in m.group(3), m.group(3)
    # Petrel queued nothing of it (Postfix's own bounce notice, from <>,
    # is not what this test is about: look for the refused message only)
    for q in petrel.ctl_json("queue", "list"):
        shown = petrel.ctl_json("message", "show", q["id"])
        assert _strip_angle(shown["message_id"]) != \
            "postfix-relay.bounce-%s@legacy.test" % which, shown
        assert shown["header_from"] != foreign, shown
