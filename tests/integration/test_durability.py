"""test_durability - nothing acknowledged is lost when petreld is killed.

Eight concurrent SMTP clients relay through port 25 from a registered
network; every "250 2.0.0 Ok: queued as QUEUEID" is recorded. petreld gets
SIGKILL while the clients are still sending, is started again, and every
recorded queue id must be in the store with its recipients (queue.c commits
a message in one LMDB transaction before the 250 is sent).
"""

import concurrent.futures
import re
import smtplib
import threading
import time

import petrel_fixtures as pf

CLIENTS = 8
LOAD_SECONDS = 2.0
FINAL_STATUSES = {"queued", "deferred", "delivered", "bounced", "suppressed"}
QUEUED_RE = re.compile(r"^2\.0\.0 Ok: queued as [0-9A-Z]{14}$")


class Client(threading.Thread):
    """Client - one SMTP connection sending messages until stopped or cut"""

    def __init__(self, n, port, domain, acked, lock, stop):
        super().__init__(daemon=True)
        self.n, self.port, self.domain = n, port, domain
        self.acked, self.lock, self.stop = acked, lock, stop
        self.sent = 0
        self.error = None      # unexpected failure while petreld was up
        self.cut = False       # connection lost (the kill)

    def message(self, i, rcpts):
        d = self.domain
        return ("From: App <app@%s>\r\n"
                "To: %s\r\n"
                "Subject: durability %d.%d\r\n"
                "Message-ID: <dur.%d.%d@%s>\r\n"
                "\r\n"
                "client %d message %d\r\n"
                "%s" % (d, ", ".join(rcpts), self.n, i, self.n, i, d,
                        self.n, i, ("x" * 76 + "\r\n") * (1 + i % 40)))

    def run(self):
        try:
            s = smtplib.SMTP("127.0.0.1", self.port, timeout=20)
            s.ehlo("client%d.test" % self.n)
            i = 0
            while not self.stop.is_set():
                rcpts = ["c%d.m%d.r%d@dest.test" % (self.n, i, k)
                         for k in range(1 + i % 3)]
                code, resp = s.mail("app@%s" % self.domain)
                if code != 250:
                    raise AssertionError("MAIL FROM: %d %r" % (code, resp))
                for r in rcpts:
                    code, resp = s.rcpt(r)
                    if code != 250:
                        raise AssertionError("RCPT %s: %d %r" % (r, code, resp))
                code, resp = s.data(self.message(i, rcpts).encode())
                text = resp.decode(errors="replace")
                if code != 250:
                    raise AssertionError("DATA: %d %r" % (code, text))
                if not QUEUED_RE.match(text):
                    raise AssertionError("250 without a queue id: %r" % text)
                qid = text.split()[-1]
                with self.lock:
                    if qid in self.acked:
                        raise AssertionError("queue id %s given twice" % qid)
                    self.acked[qid] = (rcpts, time.monotonic())
                i += 1
                self.sent = i
        except (smtplib.SMTPServerDisconnected, ConnectionError, OSError,
                smtplib.SMTPResponseException) as e:
            if self.stop.is_set() or self.killed.is_set():
                self.cut = True
            else:
                self.error = e
        except AssertionError as e:
            if self.killed.is_set():
                self.cut = True
            else:
                self.error = e


def test_kill9_keeps_every_acknowledged_message(petrel_factory):
    p = petrel_factory({
        # deliveries (if any run) must not leave 127.0.0.0/8: a resolver
        # nobody listens on
        "resolver": "127.0.0.1:%d" % pf.free_port(),
        "log_level": "info",
    })
    t = p.setup_tenant()
    p.ctl("network", "add", t["tenant"], "127.0.0.0/8")

    acked, lock = {}, threading.Lock()
    stop, killed = threading.Event(), threading.Event()
    clients = []
    for n in range(CLIENTS):
        c = Client(n, p.ports["relay"], t["domain"], acked, lock, stop)
        c.killed = killed
        clients.append(c)
    for c in clients:
        c.start()

    # load for a while, but make sure messages are flowing before the kill
    pf.wait_for(lambda: len(acked) >= 20, timeout=30,
                what="20 acknowledged messages")
    time.sleep(max(0.0, LOAD_SECONDS - 0.5))
    errors = [c.error for c in clients if c.error]
    assert not errors, "client failures before the kill: %r" % errors
    with lock:
        n_before = len(acked)
    # mid-load: acknowledgements are still arriving right now
    pf.wait_for(lambda: len(acked) > n_before + CLIENTS, timeout=10,
                what="acks still arriving before the kill")
    killed.set()
    p.kill9()
    kill_time = time.monotonic()
    stop.set()
    for c in clients:
        c.join(30)
        assert not c.is_alive(), "client %d hung after the kill" % c.n
    errors = [c.error for c in clients if c.error]
    assert not errors, "client failures: %r" % errors
    assert any(c.cut for c in clients), "no client was cut off by the kill"
    recent = [qid for qid, (_, ts) in acked.items() if ts > kill_time - 0.5]
    assert recent, "no acknowledgement in the last 0.5 s before the kill"

    p.start()

    # list first, then show: a recipient never goes back to queued, so a
    # message shown as pending must already be in the earlier list
    listing = p.ctl_json("queue", "list")
    assert isinstance(listing, list)
    for m in listing:
        for k in ("id", "tenant", "mail_from", "nrcpts", "size",
                  "received_at", "age", "next_attempt"):
            assert k in m, "queue list entry without %s: %r" % (k, m)
    listed = {m["id"] for m in listing}

    def check(item):
        qid, (rcpts, _) = item
        m = p.ctl_json("message", "show", qid)
        assert m["id"] == qid
        assert m["tenant"] == t["tenant"]
        assert m["mail_from"] == "app@%s" % t["domain"]
        assert m["header_from"] == "app@%s" % t["domain"]
        assert m["size"] > 0
        assert isinstance(m["received_at"], int)
        got = [r["address"] for r in m["recipients"]]
        assert got == rcpts, "%s: recipients %r != %r" % (qid, got, rcpts)
        for r in m["recipients"]:
            assert r["status"] in FINAL_STATUSES, r
            for k in ("attempts", "last_reply", "updated_at"):
                assert k in r, "%s: recipient without %s" % (qid, k)
        if any(r["status"] in ("queued", "deferred") for r in m["recipients"]):
            assert qid in listed, "%s pending but not in queue list" % qid
        return qid

    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        done = list(ex.map(check, sorted(acked.items())))
    assert len(done) == len(acked)
    print("%d messages acknowledged before the kill, all present after "
          "restart" % len(acked))
