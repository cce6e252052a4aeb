"""petrel_fixtures - harness for Petrel's integration tests.

Plain module (no pytest import needed): a Petrel daemon in a work directory,
a real Unbound serving test records on 127.0.0.1, an aiosmtpd sink standing
in for remote MX hosts, test certificates and a raw SMTP dialog helper.
See /work/notes/fixtures.md (API contract) and tests/integration/conftest.py.

Everything listens on 127.0.0.0/8 only.
"""

import atexit
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

REPO_DIR = Path(__file__).resolve().parents[2]


def build_dir():
    """build_dir - where petreld and petrelctl were built"""
    return Path(os.environ.get("PETREL_BUILD_DIR") or (REPO_DIR / "build"))


def petreld_path():
    return str(build_dir() / "petreld")


def petrelctl_path():
    return str(build_dir() / "petrelctl")


# Processes still running at interpreter exit are killed (a crashed test
# must not leave daemons holding ports).
_live_procs = set()
_live_lock = threading.Lock()


def _track(proc):
    with _live_lock:
        _live_procs.add(proc)


def _untrack(proc):
    with _live_lock:
        _live_procs.discard(proc)


@atexit.register
def _kill_leftovers():
    with _live_lock:
        procs = list(_live_procs)
    for p in procs:
        if p.poll() is None:
            try:
                p.kill()
                p.wait(5)
            except Exception:
                pass


# ---------------------------------------------------------------- helpers

def free_port(host="127.0.0.1"):
    """free_port - a TCP port that is free on host right now (UDP too for DNS)"""
    for _ in range(50):
        s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET,
                          socket.SOCK_STREAM)
        try:
            s.bind((host, 0))
            port = s.getsockname()[1]
        finally:
            s.close()
        u = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET,
                          socket.SOCK_DGRAM)
        try:
            u.bind((host, port))
        except OSError:
            continue
        finally:
            u.close()
        return port
    raise RuntimeError("no free port on %s" % host)


def common_port(hosts):
    """common_port - a TCP port free on every address of hosts (the first
    picks it, the others must be able to bind it too)"""
    for _ in range(50):
        port = free_port(hosts[0])
        ok = True
        for h in hosts[1:]:
            s = socket.socket()
            try:
                s.bind((h, port))
            except OSError:
                ok = False
            finally:
                s.close()
        if ok:
            return port
    raise RuntimeError("no common free port")


def wait_for(predicate, timeout=10, interval=0.05, what="condition"):
    """wait_for - poll predicate until it returns a true value (returned),
    else AssertionError after timeout seconds"""
    deadline = time.monotonic() + timeout
    while True:
        v = predicate()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %ss waiting for %s"
                                 % (timeout, what))
        time.sleep(interval)


def _run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, **kw)
    if r.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(cmd), r.returncode,
                                                   r.stderr.strip()))
    return r


def make_certs(dirpath):
    """make_certs - a test CA and a server certificate for CN localhost
    (SAN DNS:localhost, IP:127.0.0.1, IP:::1), made with the openssl CLI.
    Returns dict(ca=, cert=, key=) of paths (str)."""
    d = Path(dirpath)
    d.mkdir(parents=True, exist_ok=True)
    ca_key, ca = d / "ca.key", d / "ca.pem"
    key, csr, cert = d / "server.key", d / "server.csr", d / "server.pem"
    ext = d / "server.ext"
    _run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
          "-keyout", str(ca_key), "-out", str(ca), "-days", "30",
          "-subj", "/CN=Petrel Test CA",
          "-addext", "basicConstraints=critical,CA:TRUE",
          "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
    _run(["openssl", "req", "-newkey", "rsa:2048", "-nodes",
          "-keyout", str(key), "-out", str(csr), "-subj", "/CN=localhost"])
    ext.write_text("basicConstraints=CA:FALSE\n"
                   "keyUsage=critical,digitalSignature,keyEncipherment\n"
                   "extendedKeyUsage=serverAuth\n"
                   "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\n")
    _run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca),
          "-CAkey", str(ca_key), "-CAcreateserial", "-out", str(cert),
          "-days", "30", "-extfile", str(ext)])
    # readable after petreld drops privileges (test keys only)
    for p in (ca, cert, key):
        os.chmod(p, 0o644)
    return dict(ca=str(ca), cert=str(cert), key=str(key))


def client_context(certs=None):
    """client_context - SSL context trusting the test CA (or nothing checked
    when certs is None)"""
    if certs:
        ctx = ssl.create_default_context(cafile=certs["ca"])
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _port_open(host, port, timeout=0.5):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _tail(path, n=40):
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(lines[-n:])


# ---------------------------------------------------------------- Petrel

_LISTENERS = ("submission", "submissions", "relay")


class Petrel:
    """Petrel - one petreld in workdir, with its petrel.conf"""

    # petreld's "ready" log line (after privdrop, before the event loop)
    READY_RE = r"event=start (?!status=error)"

    def __init__(self, workdir, conf=None, certs=None, start=True, user=None,
                 start_timeout=20):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.workdir, 0o755)
        self.conf_path = self.workdir / "petrel.conf"
        self.data_dir = self.workdir / "data"
        self.log_path = self.workdir / "petreld.log"
        self.certs = certs
        self.proc = None
        self.start_timeout = start_timeout
        self.ports = {k: free_port() for k in _LISTENERS}
        c = {
            "hostname": "petrel.test",
            "data_dir": str(self.data_dir),
            "listen_submission": "127.0.0.1:%d" % self.ports["submission"],
            "listen_submissions": "127.0.0.1:%d" % self.ports["submissions"],
            "listen_relay": "127.0.0.1:%d" % self.ports["relay"],
            "log_level": "debug",
            "managed_zone": "petrel.test",
            # no DNS query leaves the host: by default the resolver is a
            # loopback port nothing listens on, so delivery defers and
            # queued mail stays queued; tests of delivery set their own
            "resolver": "127.0.0.1:%d" % free_port(),
        }
        if certs:
            c["tls_cert"] = certs["cert"]
            c["tls_key"] = certs["key"]
        if user:
            c["user"] = user
        for k, v in (conf or {}).items():
            if v is None:
                c.pop(k, None)
            else:
                c[k] = v
        self.conf = c
        # listeners a test overrode: track the port when it is a plain
        # 127.0.0.1:PORT, otherwise do not wait for it
        for k in _LISTENERS:
            v = str(c.get("listen_" + k, "")).strip()
            m = re.fullmatch(r"127\.0\.0\.1:(\d+)", v)
            if m:
                self.ports[k] = int(m.group(1))
            else:
                self.ports.pop(k, None)
        v = str(c.get("listen_http", "")).strip()
        m = re.fullmatch(r"127\.0\.0\.1:(\d+)", v)
        if m:
            self.ports["http"] = int(m.group(1))
        self.write_conf()
        if start:
            self.start()

    def write_conf(self):
        """write_conf - (re)write petrel.conf from self.conf"""
        lines = ["# written by tests/integration/petrel_fixtures.py"]
        for k, v in self.conf.items():
            if isinstance(v, (list, tuple)):
                v = ", ".join(str(x) for x in v)
            lines.append("%s = %s" % (k, v))
        self.conf_path.write_text("\n".join(lines) + "\n")
        os.chmod(self.conf_path, 0o644)

    # -- process control

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self):
        """start - run petreld -d, wait until every listener accepts"""
        if self.running():
            raise RuntimeError("petreld already running")
        if not os.access(petreld_path(), os.X_OK):
            raise RuntimeError("no petreld at %s (build it, or set "
                               "PETREL_BUILD_DIR)" % petreld_path())
        mark = self.log_mark()
        logf = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                [petreld_path(), "-d", "-c", str(self.conf_path)],
                stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                cwd=str(self.workdir), start_new_session=True)
        finally:
            logf.close()
        _track(self.proc)
        deadline = time.monotonic() + self.start_timeout
        pending = dict(self.ports)
        while pending:
            if self.proc.poll() is not None:
                rc = self.proc.returncode
                _untrack(self.proc)
                raise RuntimeError("petreld exited (%s) during start-up; log "
                                   "tail:\n%s" % (rc, _tail(self.log_path)))
            for k, port in list(pending.items()):
                if _port_open("127.0.0.1", port):
                    del pending[k]
            if pending and time.monotonic() > deadline:
                raise RuntimeError("petreld listeners %s not accepting after "
                                   "%ss; log tail:\n%s" % (
                                       sorted(pending), self.start_timeout,
                                       _tail(self.log_path)))
            if pending:
                time.sleep(0.05)
        # listening sockets accept before the event loop runs: wait for the
        # start-up line too (signals and sessions are handled from then on)
        rx = re.compile(self.READY_RE, re.M)
        while not rx.search(self.log(), mark):
            if self.proc.poll() is not None:
                _untrack(self.proc)
                raise RuntimeError("petreld exited (%s) during start-up; log "
                                   "tail:\n%s" % (self.proc.returncode,
                                                  _tail(self.log_path)))
            if time.monotonic() > deadline:
                raise RuntimeError("petreld: no /%s/ in the log after %ss; "
                                   "log tail:\n%s" % (self.READY_RE,
                                                      self.start_timeout,
                                                      _tail(self.log_path)))
            time.sleep(0.02)
        return self

    def stop(self, timeout=10):
        """stop - SIGTERM, wait; returns the exit code (None if never run).
        Raises AssertionError (after a SIGKILL) when it does not exit."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                _untrack(self.proc)
                raise AssertionError("petreld did not exit %ss after SIGTERM"
                                     % timeout)
        _untrack(self.proc)
        return self.proc.returncode

    def kill9(self):
        """kill9 - SIGKILL (crash simulation), wait"""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self.proc is not None:
            _untrack(self.proc)

    def restart(self):
        self.stop()
        return self.start()

    def reload(self):
        """reload - SIGHUP"""
        if not self.running():
            raise RuntimeError("petreld not running")
        self.proc.send_signal(signal.SIGHUP)

    # -- log

    def log(self):
        """log - everything petreld wrote to stderr so far (all runs)"""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_mark(self):
        """log_mark - current log length, for wait_log(..., since=mark)"""
        return len(self.log())

    def wait_log(self, regex, timeout=10, since=0):
        """wait_log - wait until regex (re.M) matches the log from offset
        since; returns the match"""
        rx = re.compile(regex, re.M)
        return wait_for(lambda: rx.search(self.log(), since), timeout=timeout,
                        what="log line /%s/ in %s" % (regex, self.log_path))

    # -- admin tool

    def ctl(self, *args, input=None, check=True, timeout=60):
        """ctl - run petrelctl -c conf args (text mode)"""
        cmd = [petrelctl_path(), "-c", str(self.conf_path)] + [str(a) for a in args]
        r = subprocess.run(cmd, input=input, capture_output=True, text=True,
                           timeout=timeout, cwd=str(self.workdir))
        if check and r.returncode != 0:
            raise AssertionError("petrelctl %s exited %d\nstdout: %s\nstderr: %s"
                                 % (" ".join(map(str, args)), r.returncode,
                                    r.stdout.strip(), r.stderr.strip()))
        return r

    def ctl_json(self, *args):
        """ctl_json - parsed JSON of petrelctl args --json"""
        r = self.ctl(*(list(args) + ["--json"]))
        try:
            return json.loads(r.stdout)
        except ValueError as e:
            raise AssertionError("petrelctl %s --json: bad JSON (%s): %r"
                                 % (" ".join(map(str, args)), e, r.stdout[:500]))

    def setup_tenant(self, tenant="acme", user="app", password="s3cret-pass",
                     managed=True):
        """setup_tenant - tenant add, user add (password on stdin),
        domain add-managed; returns dict(tenant, user, password, domain)"""
        self.ctl("tenant", "add", tenant)
        if user:
            self.ctl("user", "add", tenant, user, input=password + "\n")
        domain = None
        if managed:
            r = self.ctl("domain", "add-managed", tenant)
            zone = self.conf.get("managed_zone", "petrel.test").rstrip(".")
            m = re.search(r"(?<![\w.-])([A-Za-z0-9][A-Za-z0-9-]*\.%s)\.?(?![\w-])"
                          % re.escape(zone), r.stdout)
            if not m:
                raise AssertionError("domain add-managed: no <id>.%s in "
                                     "output: %r" % (zone, r.stdout))
            domain = m.group(1).lower()
        return dict(tenant=tenant, user=user, password=password, domain=domain)


# ---------------------------------------------------------------- Unbound

# names whose default local zone (built into unbound) is more specific than
# their top-level label
_ARPA_SUFFIXES = ("in-addr.arpa.", "ip6.arpa.")


def _fqdn(name):
    return name if name.endswith(".") else name + "."


def _txt_value(value):
    """_txt_value - quote a TXT value unless already quoted, in 255-byte
    strings"""
    v = value.strip()
    if v.startswith('"'):
        return v
    chunks = [v[i:i + 255] for i in range(0, len(v), 255)] or [""]
    return " ".join('"%s"' % c.replace("\\", "\\\\").replace('"', '\\"')
                    for c in chunks)


class Unbound:
    """Unbound - a real unbound on 127.0.0.1:<free port> answering records
    [(name, type, value[, ttl]), ...] from local-data; every other name
    gets NXDOMAIN from a static root zone (no query leaves the host)"""

    PROBE = "petrel-fixture-probe.invalid."

    def __init__(self, workdir, records=(), zones=(), port=None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.conf_path = self.workdir / "unbound.conf"
        self.log_path = self.workdir / "unbound.log"
        self.port = port or free_port()
        self.addr = "127.0.0.1:%d" % self.port
        self.extra_zones = list(zones)
        self.proc = None
        self.records = list(records)
        self._write_conf()
        self._start()

    def _zones(self):
        zones = {"invalid."}
        for z in self.extra_zones:
            zones.add(_fqdn(z).lower())
        for rec in self.records:
            name = _fqdn(rec[0]).lower()
            if any(name.endswith(s) for s in _ARPA_SUFFIXES):
                zones.add(name)
            else:
                labels = name.rstrip(".").split(".")
                zones.add(labels[-1] + ".")
        return sorted(zones)

    def _write_conf(self):
        L = ["server:",
             "  interface: 127.0.0.1",
             "  port: %d" % self.port,
             "  do-ip6: no",
             "  do-not-query-localhost: no",
             '  username: ""',
             '  chroot: ""',
             '  directory: "%s"' % self.workdir,
             '  pidfile: "%s"' % (self.workdir / "unbound.pid"),
             "  use-syslog: no",
             '  logfile: ""',
             "  verbosity: 1",
             "  do-daemonize: no",
             "  num-threads: 1",
             "  so-reuseport: no",
             "  access-control: 127.0.0.0/8 allow",
             '  module-config: "iterator"',
             "  cache-max-ttl: 0",
             "  cache-max-negative-ttl: 0",
             '  local-zone: "." static']
        for z in self._zones():
            L.append('  local-zone: "%s" static' % z)
        for rec in self.records:
            name, rtype, value = rec[0], rec[1].upper(), rec[2]
            ttl = rec[3] if len(rec) > 3 else 60
            if rtype == "TXT":
                value = _txt_value(value)
            if "'" in value:
                raise ValueError("single quote in record value: %r" % (value,))
            L.append("  local-data: '%s %d IN %s %s'" % (_fqdn(name), ttl,
                                                         rtype, value))
        L += ["remote-control:", "  control-enable: no"]
        self.conf_path.write_text("\n".join(L) + "\n")

    def _answering(self):
        import dns.message
        import dns.query
        q = dns.message.make_query(self.PROBE, "A")
        try:
            dns.query.udp(q, "127.0.0.1", port=self.port, timeout=0.2)
            return True
        except Exception:
            return False

    def _start(self):
        logf = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                ["unbound", "-d", "-c", str(self.conf_path)],
                stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                cwd=str(self.workdir), start_new_session=True)
        finally:
            logf.close()
        _track(self.proc)
        deadline = time.monotonic() + 15
        while not self._answering():
            if self.proc.poll() is not None:
                _untrack(self.proc)
                raise RuntimeError("unbound exited (%s); log tail:\n%s"
                                   % (self.proc.returncode, _tail(self.log_path)))
            if time.monotonic() > deadline:
                raise RuntimeError("unbound not answering on %s; log tail:\n%s"
                                   % (self.addr, _tail(self.log_path)))
            time.sleep(0.05)

    def txt(self, name, timeout=5):
        """txt - the first TXT record of name as bytes (its strings joined),
        None when there is none: dkimpy's dnsfunc against this server"""
        import dns.message
        import dns.query
        import dns.rdatatype
        if isinstance(name, bytes):
            name = name.decode()
        q = dns.message.make_query(name, "TXT")
        a = dns.query.udp(q, "127.0.0.1", port=self.port, timeout=timeout)
        for rrset in a.answer:
            if rrset.rdtype == dns.rdatatype.TXT:
                for rd in rrset:
                    return b"".join(rd.strings)
        return None

    def set_records(self, records, zones=None):
        """set_records - replace the records (restart on the same port)"""
        self.records = list(records)
        if zones is not None:
            self.extra_zones = list(zones)
        self.stop()
        self._write_conf()
        self._start()

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc is not None:
            _untrack(self.proc)


# ---------------------------------------------------------------- Sink

class _SinkHandler:
    def __init__(self, sink):
        self.sink = sink

    async def handle_RCPT(self, server, session, envelope, address,
                          rcpt_options):
        r = self.sink.reply(address) if self.sink.reply else None
        if r:
            return r
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        dr = self.sink.data_reply
        if callable(dr):
            dr = dr(envelope)
        reply = dr or "250 2.0.0 OK queued"
        msg = dict(mail_from=envelope.mail_from,
                   rcpt_tos=list(envelope.rcpt_tos),
                   data=envelope.original_content or envelope.content,
                   peer=session.peer,
                   helo=session.host_name,
                   tls=session.ssl is not None,
                   mail_options=list(envelope.mail_options),
                   reply=reply)
        with self.sink.cond:
            self.sink.attempts.append(msg)
            if reply.startswith("2"):
                self.sink.messages.append(msg)
            self.sink.cond.notify_all()
        return reply


class Sink:
    """Sink - an SMTP server standing in for a remote MX (aiosmtpd,
    threaded). .messages holds every accepted message, .attempts every DATA
    (accepted or not)."""

    def __init__(self, host="127.0.0.2", port=None, reply=None,
                 data_reply=None, certs=None):
        from aiosmtpd.controller import Controller
        self.host = host
        self.port = port or free_port(host)
        self.reply = reply
        self.data_reply = data_reply
        self.messages = []
        self.attempts = []
        self.cond = threading.Condition()
        kw = {}
        if certs:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(certs["cert"], certs["key"])
            kw["tls_context"] = ctx
        self.controller = Controller(
            _SinkHandler(self), hostname=host, port=self.port,
            server_hostname="sink.test", decode_data=False,
            data_size_limit=64 * 1024 * 1024, enable_SMTPUTF8=True, **kw)
        self.controller.start()

    def wait_for(self, n, timeout=10):
        """wait_for - wait until n messages were accepted; returns them"""
        with self.cond:
            ok = self.cond.wait_for(lambda: len(self.messages) >= n, timeout)
            if not ok:
                raise AssertionError("sink %s:%d: %d message(s) after %ss, "
                                     "wanted %d" % (self.host, self.port,
                                                    len(self.messages),
                                                    timeout, n))
            return list(self.messages)

    def stop(self):
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


# ---------------------------------------------------------------- raw SMTP

def _read_reply(f):
    """_read_reply - one (possibly multi-line) SMTP reply as str ('' at EOF)"""
    out = []
    while True:
        line = f.readline(4096)
        if not line:
            break
        out.append(line.decode("utf-8", "replace"))
        if len(line) < 4 or line[3:4] != b"-":
            break
    return "".join(out)


def smtp_dialog(host, port, lines, tls=False, timeout=10, certs=None):
    """smtp_dialog - connect (implicit TLS when tls), read the greeting, then
    send each item of lines and read one reply after each. An item is str
    (CRLF appended unless it already ends in a newline), bytes (sent as
    is), or (data, n) to read n replies (0 for none) after data. After a
    "STARTTLS" item answered with 220 the connection is wrapped in TLS.
    Returns the list of replies, greeting first; stops at EOF."""
    sock = socket.create_connection((host, port), timeout=timeout)
    ctx = client_context(certs)
    if tls:
        sock = ctx.wrap_socket(sock, server_hostname="localhost")
    replies = []
    try:
        f = sock.makefile("rb")
        replies.append(_read_reply(f))
        for item in lines:
            n = 1
            if isinstance(item, tuple):
                item, n = item
            data = item
            if isinstance(data, str):
                if not data.endswith("\n"):
                    data += "\r\n"
                data = data.encode("utf-8")
            sock.sendall(data)
            for _ in range(n):
                r = _read_reply(f)
                replies.append(r)
                if not r:
                    return replies
            if (data.strip().upper() == b"STARTTLS" and replies
                    and replies[-1].startswith("220")):
                f.close()
                sock = ctx.wrap_socket(sock, server_hostname="localhost")
                f = sock.makefile("rb")
        f.close()
    finally:
        sock.close()
    return replies
