"""test_http_api - the ACS-compatible HTTP API (issue 7): access keys
(petrelctl apikey), HMAC-SHA256 and Bearer authentication, POST
/emails:send, GET /emails/operations/{id}, idempotent Operation-Id,
ACS error shapes, limits and malformed input, and the official
@azure/communication-email SDK end to end.

Requests are signed by hand (http.client over HTTPS with the test CA), as
ACS specifies: HMAC-SHA256 over "VERB\\nPATH?QUERY\\nDATE;HOST;HASH" keyed
with the base64-decoded access key. Delivery goes to an aiosmtpd sink on
127.0.0.2 through a real unbound answering the MX records.
"""

import base64
import email
import email.utils
import hashlib
import hmac
import http.client
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import time
import uuid
from email.policy import default as default_policy
from pathlib import Path

import pytest

import petrel_fixtures as pf
from conftest import check_sanitizer_log

API = "2023-03-31"
HERE = Path(__file__).resolve().parent
SINK_HOST = "127.0.0.2"


def b64(data):
    return base64.b64encode(data).decode()


class Api:
    """Api - one HTTP API endpoint of a petreld, with a key"""

    def __init__(self, port, key, certs=None, tls=True, host="localhost"):
        self.port = port
        self.key = key
        self.certs = certs
        self.tls = tls
        self.host = host

    def conn(self):
        if self.tls:
            return http.client.HTTPSConnection(
                self.host, self.port, timeout=30,
                context=pf.client_context(self.certs))
        return http.client.HTTPConnection(self.host, self.port, timeout=30)

    def sign(self, method, pathq, body, key=None, date=None, host=None,
             content_hash=None):
        """sign - the ACS HMAC headers for one request"""
        key = key if key is not None else self.key
        date = date or email.utils.formatdate(usegmt=True)
        host = host or "%s:%d" % (self.host, self.port)
        h = content_hash or b64(hashlib.sha256(body).digest())
        sts = "%s\n%s\n%s;%s;%s" % (method, pathq, date, host, h)
        sig = b64(hmac.new(base64.b64decode(key), sts.encode(),
                           hashlib.sha256).digest())
        return {"x-ms-date": date, "x-ms-content-sha256": h,
                "Authorization": "HMAC-SHA256 SignedHeaders=x-ms-date;host;"
                                 "x-ms-content-sha256&Signature=" + sig}

    def request(self, method, pathq, body=b"", auth="hmac", headers=None,
                **signkw):
        """request - returns (status, headers with lower-case names, parsed
        JSON body or raw bytes)"""
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        elif isinstance(body, str):
            body = body.encode()
        hdrs = {"Content-Type": "application/json"}
        if auth == "hmac":
            hdrs.update(self.sign(method, pathq, body, **signkw))
        elif auth == "bearer":
            hdrs["Authorization"] = "Bearer " + (signkw.get("key") or self.key)
        hdrs.update(headers or {})
        c = self.conn()
        try:
            c.request(method, pathq, body=body, headers=hdrs)
            r = c.getresponse()
            raw = r.read()
            rh = {k.lower(): v for k, v in r.getheaders()}
        finally:
            c.close()
        try:
            data = json.loads(raw) if raw else None
        except ValueError:
            data = raw
        return r.status, rh, data

    def send(self, message, op=None, **kw):
        headers = dict(kw.pop("headers", {}) or {})
        if op:
            headers["Operation-Id"] = op
        return self.request("POST", "/emails:send?api-version=" + API,
                            message, headers=headers, **kw)

    def status(self, op, **kw):
        return self.request("GET", "/emails/operations/%s?api-version=%s"
                            % (op, API), **kw)

    def wait_status(self, op, want, timeout=20):
        """wait_status - poll until the operation's status is want"""
        last = {}

        def done():
            st, _, d = self.status(op)
            last["v"] = (st, d)
            return st == 200 and d["status"] == want and d
        try:
            return pf.wait_for(done, timeout=timeout, interval=0.2,
                               what="operation %s %s" % (op, want))
        except AssertionError:
            raise AssertionError("operation %s: wanted %s, last %r"
                                 % (op, want, last.get("v")))


def assert_acs_error(status, headers, data, want_status, want_code,
                     target=None, msg_re=None):
    assert status == want_status, (status, data)
    assert isinstance(data, dict) and set(data) == {"error"}, data
    err = data["error"]
    assert err["code"] == want_code, err
    assert headers.get("x-ms-error-code") == want_code, headers
    assert isinstance(err.get("message"), str) and err["message"], err
    assert headers.get("x-ms-request-id"), headers
    if target is not None:
        assert err.get("target") == target, err
    if msg_re is not None:
        assert re.search(msg_re, err["message"]), err


def connection_string(ctl_stdout):
    lines = [l for l in ctl_stdout.splitlines() if l.startswith("endpoint=")]
    assert len(lines) == 1, ctl_stdout
    m = re.fullmatch(r"endpoint=(https?://[^;]+/);accesskey=([A-Za-z0-9+/=]+)",
                     lines[0])
    assert m, lines[0]
    return lines[0], m.group(1), m.group(2)


class Env:
    """a petreld with HTTPS and HTTP listeners, tenants acme and other,
    an access key each, a sink for example.test"""

    def __init__(self, workdir, certs, conf=None):
        self.sink = pf.Sink(host=SINK_HOST)
        self.ub = pf.Unbound(workdir / "unbound", [
            ("example.test", "MX", "10 mx.example.test."),
            ("mx.example.test", "A", SINK_HOST)])
        self.https_port = pf.free_port()
        self.http_port = pf.free_port()
        c = {"listen_https": "127.0.0.1:%d" % self.https_port,
             "listen_http": "127.0.0.1:%d" % self.http_port,
             "resolver": self.ub.addr, "smtp_remote_port": self.sink.port,
             "retry_schedule": "1s, 2s", "smtp_connect_timeout": "5s"}
        c.update(conf or {})
        self.p = pf.Petrel(workdir / "petrel", conf=c, certs=certs,
                           start=False)
        self.t = self.p.setup_tenant("acme", user=None)
        self.t2 = self.p.setup_tenant("other", user=None)
        self.p.start()
        pf.wait_for(lambda: pf._port_open("127.0.0.1", self.https_port),
                    what="https listener")
        r = self.p.ctl("apikey", "add", "acme", "app1")
        self.cs, self.endpoint, self.key = connection_string(r.stdout)
        r = self.p.ctl("apikey", "add", "other")
        _, _, self.key2 = connection_string(r.stdout)
        self.api = Api(self.https_port, self.key, certs)
        self.api2 = Api(self.https_port, self.key2, certs)
        self.sender = "app@" + self.t["domain"]

    def message(self, subject="hello", to="bob@example.test", **extra):
        m = {"senderAddress": self.sender,
             "content": {"subject": subject, "plainText": "hi there\n"},
             "recipients": {"to": [{"address": to}]}}
        m.update(extra)
        return m

    def stop(self):
        errors = []
        try:
            self.p.stop()
        except AssertionError as e:
            errors.append(str(e))
        self.sink.stop()
        self.ub.stop()
        check_sanitizer_log(self.p)
        if errors:
            pytest.fail("; ".join(errors), pytrace=False)


@pytest.fixture(scope="module")
def env(_petrel_tmp_root, certs):
    d = _petrel_tmp_root / "http_api_env"
    d.mkdir()
    e = Env(d, certs)
    yield e
    e.stop()


def submits(p, op):
    """submits - log lines of messages queued for operation op"""
    return re.findall(r"event=submit .* op=%s qid=" % re.escape(op), p.log())


# ------------------------------------------------------------------ keys

def test_apikey_commands(env):
    p = env.p
    r = p.ctl("apikey", "add", "acme", "temp")
    line, endpoint, key = connection_string(r.stdout)
    assert endpoint == "https://127.0.0.1:%d/" % env.https_port
    assert len(base64.b64decode(key)) == 32
    # the key is shown once: list shows names only
    r = p.ctl("apikey", "list", "acme")
    assert "temp" in r.stdout and "app1" in r.stdout
    assert key not in r.stdout and env.key not in r.stdout
    lst = p.ctl_json("apikey", "list", "acme")
    assert {k["name"] for k in lst} == {"app1", "temp"}
    assert all(set(k) == {"name", "tenant", "created"} for k in lst), lst
    assert [k["name"] for k in p.ctl_json("apikey", "list", "other")] \
        and "app1" not in json.dumps(p.ctl_json("apikey", "list", "other"))
    # duplicates and unknown tenants are refused
    r = p.ctl("apikey", "add", "acme", "temp", check=False)
    assert r.returncode == 1 and "already exists" in r.stderr
    r = p.ctl("apikey", "add", "nosuch", check=False)
    assert r.returncode == 1 and "unknown tenant" in r.stderr
    r = p.ctl("apikey", "add", "acme", "Bad Name", check=False)
    assert r.returncode == 1 and "invalid api key name" in r.stderr
    # the new key works, then del revokes it at once
    api = Api(env.https_port, key, env.api.certs)
    st, _, d = api.status("nosuch-op")
    assert st == 404, d
    p.ctl("apikey", "del", "acme", "temp")
    st, h, d = api.status("nosuch-op")
    assert_acs_error(st, h, d, 401, "Denied")
    r = p.ctl("apikey", "del", "acme", "temp", check=False)
    assert r.returncode == 1 and "no api key" in r.stderr
    # keys never reach the log; the store is private
    log = p.log()
    for k in (key, env.key, env.key2):
        assert k not in log
        assert base64.b64decode(k).hex() not in log
    for f in ("data.mdb", "lock.mdb"):
        mode = stat.S_IMODE(os.stat(p.data_dir / f).st_mode)
        assert mode & 0o077 == 0, (f, oct(mode))
    assert stat.S_IMODE(os.stat(p.data_dir).st_mode) & 0o077 == 0


def test_apikey_endpoint_config(workdir, certs):
    p = pf.Petrel(workdir / "p", conf={"apikey_endpoint":
                                       "https://mail.example.test:8443"},
                  certs=certs, start=False)
    p.ctl("tenant", "add", "acme")
    r = p.ctl("apikey", "add", "acme")
    line, endpoint, key = connection_string(r.stdout)
    assert endpoint == "https://mail.example.test:8443/"
    assert re.search(r"api key key-[a-z0-9]{6} added", r.stdout), r.stdout


# ------------------------------------------------------------------ send

def test_send_hmac_202_idempotent_and_delivered(env):
    api, p = env.api, env.p
    msg = env.message("idempotent")
    st, h, d = api.send(msg, op="op-idem-1")
    assert st == 202, d
    assert d == {"id": "op-idem-1", "status": "Running"}
    assert h["operation-location"] == (
        "https://localhost:%d/emails/operations/op-idem-1?api-version=%s"
        % (env.https_port, API))
    assert int(h["retry-after"]) > 0
    assert re.fullmatch(r"[0-9a-f-]{36}", h["x-ms-request-id"])
    # the same Operation-Id again (even with another body): the first
    # result, nothing queued
    st2, h2, d2 = api.send(env.message("second body"), op="op-idem-1")
    assert st2 == 202 and d2 == d
    assert h2["operation-location"] == h["operation-location"]
    assert h2["x-ms-request-id"] != h["x-ms-request-id"]
    res = api.wait_status("op-idem-1", "Succeeded")
    assert res["id"] == "op-idem-1" and res["error"] is None
    # operation ids compare in any case, as GUIDs do
    st4, _, d4 = api.status("OP-IDEM-1")
    assert st4 == 200 and d4["status"] == "Succeeded", d4
    assert d4["recipients"] == res["recipients"]
    assert [r["address"] for r in res["recipients"]] == ["bob@example.test"]
    assert res["recipients"][0]["status"] == "delivered"
    st3, _, d3 = api.send(msg, op="op-idem-1")
    assert st3 == 202 and d3 == d
    assert len(submits(p, "op-idem-1")) == 1
    assert len(re.findall(r"op=op-idem-1 qid=\w+ repeat=yes", p.log())) == 2
    got = [m for m in env.sink.messages
           if b"Subject: idempotent" in m["data"]]
    assert len(got) == 1
    assert not [m for m in env.sink.messages
                if b"Subject: second body" in m["data"]]
    parsed = email.message_from_bytes(got[0]["data"], policy=default_policy)
    assert parsed["From"].addresses[0].addr_spec == env.sender
    assert got[0]["mail_from"] == env.sender
    assert "with HTTPS" in parsed["Received"]


def test_operation_location_port_and_client_request_id(env):
    """a client that signs and sends a Host without the port (the Java
    SDK does) gets an Operation-Location naming the port; the SDKs' own
    request id comes back when they ask for it"""
    api = env.api
    crid = str(uuid.uuid4())
    st, h, d = api.send(env.message("bare host"), op="op-bare-host",
                        host="localhost",
                        headers={"Host": "localhost",
                                 "x-ms-client-request-id": crid,
                                 "x-ms-return-client-request-id": "true"})
    assert st == 202, d
    assert h["operation-location"] == (
        "https://localhost:%d/emails/operations/op-bare-host?api-version=%s"
        % (env.https_port, API)), h
    assert h["x-ms-client-request-id"] == crid
    # not asked for: not sent
    st, h, d = api.status("op-bare-host",
                          headers={"x-ms-client-request-id": crid})
    assert st == 200 and "x-ms-client-request-id" not in h, h


def test_send_without_operation_id_gets_uuid(env):
    st, h, d = env.api.send(env.message("uuid"))
    assert st == 202, d
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}"
                        r"-[0-9a-f]{12}", d["id"]), d
    assert h["operation-location"].endswith(
        "/emails/operations/%s?api-version=%s" % (d["id"], API))
    env.api.wait_status(d["id"], "Succeeded")


def test_bearer_auth_and_plain_http(env):
    st, h, d = env.api.send(env.message("bearer"), auth="bearer",
                            op="op-bearer")
    assert st == 202, d
    plain = Api(env.http_port, env.key, tls=False)
    st, h, d = plain.send(env.message("plain"), auth="bearer", op="op-plain")
    assert st == 202, d
    assert h["operation-location"].startswith(
        "http://localhost:%d/emails/operations/op-plain" % env.http_port)
    # behind a TLS-terminating proxy
    st, h, d = plain.send(env.message("proxied"), auth="bearer",
                          op="op-proxied",
                          headers={"X-Forwarded-Proto": "https"})
    assert st == 202 and h["operation-location"].startswith("https://")
    st, _, d = plain.status("op-plain")     # HMAC over plain HTTP too
    assert st == 200 and d["id"] == "op-plain"
    st, h, d = env.api.status("op-bearer", auth="bearer",
                              key=b64(os.urandom(32)))
    assert_acs_error(st, h, d, 401, "Denied")


def test_unknown_api_version_accepted(env):
    st, h, d = env.api.request("POST", "/emails:send?api-version=2099-12-31",
                               env.message("apiver"),
                               headers={"Operation-Id": "op-apiver"})
    assert st == 202, d
    assert h["operation-location"].endswith("op-apiver?api-version=2099-12-31")


def test_failed_status_names_recipient(env):
    # nosuch.test has no MX or address: a hard failure
    st, _, d = env.api.send(env.message("fails", to="x@nosuch.test"),
                            op="op-fail")
    assert st == 202, d
    res = env.api.wait_status("op-fail", "Failed")
    assert res["error"]["code"] and "x@nosuch.test" in res["error"]["message"]
    assert res["recipients"][0]["status"] == "bounced"


# ------------------------------------------------------------------ auth

def test_auth_failures(env):
    api, body = env.api, json.dumps(env.message("denied")).encode()
    path = "/emails:send?api-version=" + API
    # bad signature: signed with another key
    st, h, d = api.request("POST", path, body, key=b64(os.urandom(32)))
    assert_acs_error(st, h, d, 401, "Denied")
    # signed for another path
    hdrs = api.sign("POST", "/emails:send?api-version=1999-01-01", body)
    st, h, d = api.request("POST", path, body, auth=None, headers=hdrs)
    assert_acs_error(st, h, d, 401, "Denied")
    # signed for another host
    st, h, d = api.request("POST", path, body, host="evil.test:443")
    assert_acs_error(st, h, d, 401, "Denied")
    # stale date (20 minutes), and one from the future
    old = email.utils.formatdate(time.time() - 1200, usegmt=True)
    st, h, d = api.request("POST", path, body, date=old)
    assert_acs_error(st, h, d, 401, "Denied", msg_re="15 minutes")
    new = email.utils.formatdate(time.time() + 1200, usegmt=True)
    st, h, d = api.request("POST", path, body, date=new)
    assert_acs_error(st, h, d, 401, "Denied", msg_re="15 minutes")
    # 14 minutes old is fine
    good = json.dumps(env.message("accepted")).encode()
    ok = email.utils.formatdate(time.time() - 840, usegmt=True)
    st, h, d = api.request("POST", path, good, date=ok,
                           headers={"Operation-Id": "op-14min"})
    assert st == 202, d
    # body hash mismatch: the signature covers the claimed hash, the body
    # differs
    claimed = b64(hashlib.sha256(b"something else").digest())
    st, h, d = api.request("POST", path, body, content_hash=claimed)
    assert_acs_error(st, h, d, 401, "Denied", msg_re="x-ms-content-sha256")
    # no Authorization at all, unknown scheme, malformed HMAC header
    st, h, d = api.request("POST", path, body, auth=None)
    assert_acs_error(st, h, d, 401, "Denied")
    st, h, d = api.request("POST", path, body, auth=None,
                           headers={"Authorization": "Basic Zm9vOmJhcg=="})
    assert_acs_error(st, h, d, 401, "Denied")
    hdrs = api.sign("POST", path, body)
    hdrs["Authorization"] = "HMAC-SHA256 SignedHeaders=host&Signature=abc"
    st, h, d = api.request("POST", path, body, auth=None, headers=hdrs)
    assert_acs_error(st, h, d, 401, "Denied")
    hdrs = api.sign("POST", path, body)
    hdrs["x-ms-date"] = "yesterday"
    st, h, d = api.request("POST", path, body, auth=None, headers=hdrs)
    assert_acs_error(st, h, d, 401, "Denied")
    # "Date" instead of x-ms-date, as ACS accepts
    date = email.utils.formatdate(usegmt=True)
    hdrs = api.sign("POST", path, good, date=date)
    hdrs["Authorization"] = hdrs["Authorization"].replace("x-ms-date;",
                                                          "date;")
    del hdrs["x-ms-date"]
    hdrs["Date"] = date
    st, h, d = api.request("POST", path, good, auth=None,
                           headers=dict(hdrs, **{"Operation-Id": "op-date"}))
    assert st == 202, d
    # x-ms-date signed, but only Date sent: ACS takes Date's value
    hdrs = api.sign("POST", path, good, date=date)
    del hdrs["x-ms-date"]
    hdrs["Date"] = date
    st, h, d = api.request("POST", path, good, auth=None,
                           headers=dict(hdrs, **{"Operation-Id": "op-date2"}))
    assert st == 202, d
    # a signature of the wrong length
    hdrs = api.sign("POST", path, good)
    hdrs["Authorization"] += "AAAA" * 20
    st, h, d = api.request("POST", path, good, auth=None, headers=hdrs)
    assert_acs_error(st, h, d, 401, "Denied")
    # nothing of the denied requests was queued
    assert "Subject: denied" not in "".join(
        m["data"].decode("latin-1") for m in env.sink.messages)


def test_deleted_tenant_key_denied(env):
    p = env.p
    t = p.setup_tenant("gone", user=None)
    _, _, key = connection_string(p.ctl("apikey", "add", "gone").stdout)
    api = Api(env.https_port, key, env.api.certs)
    assert api.status("x")[0] == 404
    msg = dict(env.message(subject="gone"),
               senderAddress="app@" + t["domain"])
    assert api.send(msg, op="gone-op")[0] == 202
    api.wait_status("gone-op", "Succeeded")
    st, _, d = api.request("GET", "/events?since=0")
    assert st == 200 and d["events"], d
    p.ctl("suppression", "add", "gone", "old@example.test")
    p.ctl("webhook", "add", "gone", "http://127.0.0.1:9/old")
    p.ctl("tenant", "del", "gone")
    st, h, d = api.status("x")
    assert_acs_error(st, h, d, 401, "Denied")
    time.sleep(1.1)     # a new tenant of the same name, a later second
    p.ctl("tenant", "add", "gone")
    st, h, d = api.status("x")
    assert_acs_error(st, h, d, 401, "Denied")
    # ... which inherits nothing of the old one: no keys, suppressions,
    # webhooks, operations or events
    assert p.ctl_json("apikey", "list", "gone") == []
    assert p.ctl_json("suppression", "list", "gone") == []
    assert p.ctl_json("webhook", "list", "gone") == []
    _, _, key = connection_string(p.ctl("apikey", "add", "gone").stdout)
    api = Api(env.https_port, key, env.api.certs)
    assert api.status("gone-op")[0] == 404
    st, _, d = api.request("GET", "/events?since=0")
    assert st == 200 and d["events"] == [], d


# ------------------------------------------------------------------ errors

def test_malformed_json_and_wrong_types(env):
    api = env.api
    st, h, d = api.send(b'{"senderAddress": "a@b", ', op="op-bad1")
    assert_acs_error(st, h, d, 400, "BadRequest", msg_re="(?i)json")
    st, h, d = api.send(b"[1, 2]", op="op-bad2")
    assert_acs_error(st, h, d, 400, "BadRequest")
    st, h, d = api.send(b"", op="op-bad3")
    assert_acs_error(st, h, d, 400, "BadRequest")
    m = env.message("types")
    m["senderAddress"] = 5
    st, h, d = api.send(m, op="op-bad4")
    assert_acs_error(st, h, d, 400, "BadRequest", target="senderAddress")
    m = env.message("types")
    m["recipients"]["to"][0]["address"] = ["x"]
    st, h, d = api.send(m, op="op-bad5")
    assert_acs_error(st, h, d, 400, "BadRequest",
                     target="recipients.to[0].address")
    m = env.message("types")
    m["content"] = "text"
    st, h, d = api.send(m, op="op-bad6")
    assert_acs_error(st, h, d, 400, "BadRequest", target="content")
    m = env.message("types")
    m["headers"] = {"From": "boss@example.test"}
    st, h, d = api.send(m, op="op-bad7")
    assert_acs_error(st, h, d, 400, "BadRequest")
    assert d["error"]["target"].startswith("headers")
    # duplicate keys are refused rather than guessed at
    st, h, d = api.send(b'{"senderAddress": "%s", "senderAddress": "x@y"}'
                        % env.sender.encode(), op="op-bad8")
    assert_acs_error(st, h, d, 400, "BadRequest")
    # a bad Operation-Id
    st, h, d = api.send(env.message("badop"), op="has space")
    assert_acs_error(st, h, d, 400, "BadRequest", target="Operation-Id")
    st, h, d = api.send(env.message("badop"), op="x" * 65)
    assert_acs_error(st, h, d, 400, "BadRequest", target="Operation-Id")
    # none of them queued anything, and a refused Operation-Id may be
    # used again once the request is right
    for i in range(1, 9):
        assert not submits(env.p, "op-bad%d" % i)
    st, _, d = api.send(env.message("now right"), op="op-bad4")
    assert st == 202, d


def test_foreign_sender_domain_403(env):
    api = env.api
    for sender, reason in (("app@unknown.example", "unknown domain"),
                           ("app@" + env.t2["domain"],
                            "domain belongs to another tenant")):
        m = env.message("foreign")
        m["senderAddress"] = sender
        st, h, d = api.send(m, op="op-foreign")
        assert st == 403, d
        assert d["error"]["target"] == "senderAddress"
        assert h["x-ms-error-code"] == d["error"]["code"]
        assert reason in d["error"]["message"], d
        assert "not allowed" in d["error"]["message"]
    assert not submits(env.p, "op-foreign")


def test_other_tenants_operation_404(env):
    st, _, d = env.api.send(env.message("mine"), op="op-shared")
    assert st == 202, d
    env.api.wait_status("op-shared", "Succeeded")
    st, h, d = env.api2.status("op-shared")
    assert_acs_error(st, h, d, 404, "NotFound")
    st, h, d = env.api.status("op-never-sent")
    assert_acs_error(st, h, d, 404, "NotFound")
    # operation ids are per tenant: the other tenant's own op-shared is
    # a new operation, queued
    m = env.message("theirs")
    m["senderAddress"] = "news@" + env.t2["domain"]
    st, _, d = env.api2.send(m, op="op-shared")
    assert st == 202, d
    pf.wait_for(lambda: len(submits(env.p, "op-shared")) == 2,
                what="second tenant's submit")


def test_unknown_route_and_method(env):
    st, h, d = env.api.request("GET", "/nope", auth=None)
    assert_acs_error(st, h, d, 404, "NotFound")
    st, h, d = env.api.request("GET", "/emails:send?api-version=" + API)
    assert_acs_error(st, h, d, 405, "MethodNotAllowed")
    assert h.get("allow") == "POST"


# ------------------------------------------------------------------ limits

def raw_exchange(port, certs, data, tls=True, timeout=10):
    """raw_exchange - send bytes, return what comes back until EOF"""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    if tls:
        s = pf.client_context(certs).wrap_socket(s, server_hostname="localhost")
    out = b""
    try:
        try:
            s.sendall(data)
        except OSError:
            pass        # the server may close before reading it all
        while True:
            try:
                b = s.recv(65536)
            except OSError:
                break
            if not b:
                break
            out += b
            if b"\r\n\r\n" in out and (b"Content-Length: 0" in out
                                       or out.rstrip().endswith(b"}")):
                break
    finally:
        s.close()
    return out


def test_hostile_input_does_not_crash(env):
    api = env.api
    certs = env.api.certs
    # deep nesting, invalid UTF-8, NUL, control bytes in JSON strings
    for body in (b"[" * 200000 + b"]" * 200000,
                 b'{"senderAddress": "\xff\xfe@x"}',
                 b'{"senderAddress": "a\\u0000b@x"}',
                 b'{"a": ' + b'{"a": ' * 5000 + b"1" + b"}" * 5001,
                 b"\x00\x01\x02"):
        st, h, d = api.send(body, op="op-hostile")
        assert st in (400, 413), (st, d)
        assert d["error"]["code"] in ("BadRequest", "RequestEntityTooLarge")
    # invalid UTF-8 in a header the error quotes back
    st, h, d = api.send(env.message("x"),
                        headers={"Operation-Id": "\xe9t\xe9"})
    assert st == 400
    # garbage request line, oversized headers, truncated TLS
    raw_exchange(env.https_port, certs, b"\x16\x03\x01garbage\r\n\r\n",
                 tls=False)
    out = raw_exchange(env.https_port, certs, b"GET /\x01\x02 HTTP/1.1\r\n"
                       b"Host: x\r\n\r\n")
    out = raw_exchange(env.https_port, certs, b"GET / HTTP/1.1\r\nHost: x\r\n"
                       + b"X-Long: " + b"a" * 200000 + b"\r\n\r\n")
    assert out == b"" or out.startswith(b"HTTP/1.1 4"), out[:100]
    # the daemon is still serving
    st, _, d = api.status("op-hostile")
    assert st == 404, d
    assert env.p.running()


def test_body_limit_413(workdir, certs):
    port = pf.free_port()
    p = pf.Petrel(workdir / "p", conf={"listen_https": "127.0.0.1:%d" % port,
                                       "http_max_body": "64k"}, certs=certs,
                  start=False)
    t = p.setup_tenant("acme", user=None)
    p.start()
    try:
        _, _, key = connection_string(p.ctl("apikey", "add", "acme").stdout)
        api = Api(port, key, certs)
        big = {"senderAddress": "app@" + t["domain"],
               "content": {"subject": "big", "plainText": "x" * 100000},
               "recipients": {"to": [{"address": "bob@example.test"}]}}
        st, h, d = api.send(big, op="op-big")
        assert st == 413, (st, d)
        small = dict(big, content={"subject": "small", "plainText": "x"})
        st, h, d = api.send(small, op="op-big")
        assert st == 202, d
    finally:
        p.stop()
        check_sanitizer_log(p)


def test_operation_survives_restart(workdir, certs):
    port = pf.free_port()
    p = pf.Petrel(workdir / "p", conf={"listen_https": "127.0.0.1:%d" % port,
                                       "resolver": "127.0.0.1:9"},
                  certs=certs, start=False)
    t = p.setup_tenant("acme", user=None)
    p.start()
    try:
        _, _, key = connection_string(p.ctl("apikey", "add", "acme").stdout)
        api = Api(port, key, certs)
        msg = {"senderAddress": "app@" + t["domain"],
               "content": {"subject": "durable", "plainText": "x"},
               "recipients": {"to": [{"address": "bob@example.test"}]}}
        st, _, d = api.send(msg, op="op-durable")
        assert st == 202, d
        p.kill9()
        p.start()
        st, _, d2 = api.send(msg, op="op-durable")
        assert st == 202 and d2 == d
        assert len(submits(p, "op-durable")) == 1
        st, _, d = api.status("op-durable")
        assert st == 200 and d["id"] == "op-durable", d
        assert d["recipients"][0]["address"] == "bob@example.test"
    finally:
        p.stop()
        check_sanitizer_log(p)


# ------------------------------------------------------------------ SDK

def npm_install():
    """npm_install - @azure/communication-email 1.1 under
    tests/integration/acs-sdk (or $PETREL_NPM_PREFIX): a prefix of its own,
    since an npm install without package.json prunes whatever else is in
    its node_modules (mailauth of test_dkim_arc.py); returns the
    node_modules directory or skips"""
    prefix = Path(os.environ.get("PETREL_NPM_PREFIX") or HERE / "acs-sdk")
    prefix.mkdir(exist_ok=True)
    nm = prefix / "node_modules"
    if (nm / "@azure" / "communication-email" / "package.json").exists():
        return nm
    if not shutil.which("npm") or not shutil.which("node"):
        pytest.skip("node/npm not installed: cannot run the Azure SDK test")
    r = subprocess.run(["npm", "install", "--no-save", "--no-audit",
                        "--no-fund", "--prefix", str(prefix),
                        "@azure/communication-email@1.1"],
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0 or not (nm / "@azure" / "communication-email").exists():
        pytest.skip("npm install @azure/communication-email@1.1 failed: %s"
                    % (r.stderr.strip()[-500:],))
    return nm


def test_azure_sdk_end_to_end(env):
    nm = npm_install()
    pdf = bytes(range(256)) * 40
    png = b"\x89PNG\r\n\x1a\n" + os.urandom(300)
    message = {
        "senderAddress": env.sender,
        "content": {"subject": "Grüße vom SDK ✓",
                    "plainText": "Hello from the Azure SDK.\nZweite Zeile: äöü\n",
                    "html": "<html><body><p>Hello <b>SDK</b></p>"
                            "<img src=\"cid:logo\"></body></html>"},
        "recipients": {"to": [{"address": "zoe@example.test",
                               "displayName": "Zoë Ünicode"}],
                       "cc": [{"address": "carl@example.test",
                               "displayName": "Carl Copy"}],
                       "bcc": [{"address": "hidden@example.test"}]},
        "replyTo": [{"address": "replies@example.test",
                     "displayName": "Reply Desk"}],
        "attachments": [{"name": "report.bin",
                         "contentType": "application/octet-stream",
                         "contentInBase64": b64(pdf)},
                        {"name": "logo.png", "contentType": "image/png",
                         "contentInBase64": b64(png), "contentId": "logo"}],
        "headers": {"X-Campaign": "sdk-test"},
    }
    before = len(env.sink.messages)
    run_env = dict(os.environ, PETREL_CONNECTION_STRING=env.cs,
                   PETREL_MESSAGE=json.dumps(message),
                   PETREL_NODE_MODULES=str(nm),
                   NODE_EXTRA_CA_CERTS=env.api.certs["ca"])
    r = subprocess.run(["node", str(HERE / "acs_sdk_test.mjs")],
                       capture_output=True, text=True, timeout=120,
                       env=run_env)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["started"] is True, out
    assert out["firstStatus"] in ("running", "succeeded"), out
    assert out["status"] == "Succeeded", out
    assert out["error"] is None, out
    msgs = env.sink.wait_for(before + 1)
    got = [m for m in msgs[before:] if "zoe@example.test" in m["rcpt_tos"]]
    assert len(got) == 1
    assert sorted(got[0]["rcpt_tos"]) == ["carl@example.test",
                                          "hidden@example.test",
                                          "zoe@example.test"]
    m = email.message_from_bytes(got[0]["data"], policy=default_policy)
    assert m["Subject"] == "Grüße vom SDK ✓"
    assert m["To"].addresses[0].display_name == "Zoë Ünicode"
    assert m["To"].addresses[0].addr_spec == "zoe@example.test"
    assert m["Cc"].addresses[0].display_name == "Carl Copy"
    assert m["Reply-To"].addresses[0].display_name == "Reply Desk"
    assert "hidden@example.test" not in got[0]["data"].decode("latin-1")
    assert m["X-Campaign"] == "sdk-test"
    # (MIME text is CRLF-canonical: compare lines)
    assert m.get_body(("plain",)).get_content().replace("\r\n", "\n") == \
        "Hello from the Azure SDK.\nZweite Zeile: äöü\n"
    assert "Hello <b>SDK</b>" in m.get_body(("html",)).get_content()
    atts = {p.get_filename(): p for p in m.iter_attachments()}
    assert atts["report.bin"].get_content() == pdf
    inline = [p for p in m.walk() if p.get("Content-ID")]
    assert len(inline) == 1 and inline[0].get_content() == png
    assert inline[0]["Content-ID"].strip("<>") == "logo"
    # every line within RFC 5322's limit
    assert max(len(l) for l in got[0]["data"].split(b"\r\n")) <= 998


# ------------------------------------------------------------------ admin

@pytest.fixture
def admin_env(workdir, certs, unbound_factory):
    ub = unbound_factory([("other.test", "A", "192.0.2.1")])
    port = pf.free_port()
    keyfile = workdir / "admin.key"
    admin_key = b64(os.urandom(24))
    keyfile.write_text(admin_key + "\n")
    os.chmod(keyfile, 0o600)
    p = pf.Petrel(workdir / "p", conf={"listen_https": "127.0.0.1:%d" % port,
                                       "admin_api_key_file": str(keyfile),
                                       "resolver": ub.addr},
                  certs=certs)
    yield p, Api(port, admin_key, certs), port
    p.stop()
    check_sanitizer_log(p)


def test_admin_api(admin_env):
    p, adm, port = admin_env

    def call(method, path, body=b""):
        return adm.request(method, path, body, auth="bearer")

    # the operator key only: a tenant's key or a wrong key is refused
    st, h, d = adm.request("GET", "/admin/tenants", auth="bearer",
                           key=b64(os.urandom(24)))
    assert_acs_error(st, h, d, 401, "Denied")
    st, h, d = adm.request("GET", "/admin/tenants", auth=None)
    assert_acs_error(st, h, d, 401, "Denied")
    # tenants
    st, _, d = call("POST", "/admin/tenants", {"name": "acme"})
    assert st == 201 and d == {"name": "acme"}, d
    st, h, d = call("POST", "/admin/tenants", {"name": "acme"})
    assert_acs_error(st, h, d, 409, "Conflict", msg_re="already exists")
    st, h, d = call("POST", "/admin/tenants", {"name": "Bad Name"})
    assert_acs_error(st, h, d, 400, "BadRequest", msg_re="^invalid tenant name")
    r = p.ctl("tenant", "add", "Bad Name", check=False)
    assert d["error"]["message"] in r.stderr     # petrelctl's very text
    st, _, d = call("GET", "/admin/tenants")
    assert st == 200 and [t["name"] for t in d] == ["acme"]
    assert [t["name"] for t in p.ctl_json("tenant", "list")] == ["acme"]
    # domains: custom (with records) and managed
    st, _, d = call("POST", "/admin/tenants/acme/domains",
                    {"domain": "Mail.Example.TEST"})
    assert st == 201, d
    assert d["domain"] == "mail.example.test" and d["status"] == "pending"
    purposes = {r["purpose"] for r in d["records"]}
    assert {"ownership", "spf", "dkim", "dmarc"} <= purposes, purposes
    assert "private" not in json.dumps(d)
    assert d == p.ctl_json("domain", "show", "mail.example.test")
    st, h, d = call("POST", "/admin/tenants/acme/domains",
                    {"domain": "mail.example.test"})
    assert_acs_error(st, h, d, 409, "Conflict")
    st, _, d = call("POST", "/admin/tenants/acme/domains", {"managed": True})
    assert st == 201 and d["kind"] == "managed" and d["status"] == "verified"
    st, h, d = call("POST", "/admin/tenants/nosuch/domains",
                    {"domain": "x.example.test"})
    assert_acs_error(st, h, d, 404, "NotFound", msg_re="unknown tenant: nosuch")
    st, _, d = call("GET", "/admin/tenants/acme/domains")
    assert st == 200 and len(d) == 2
    # verification: triggered, then read (no DNS answers: not verified)
    st, _, d = call("POST", "/admin/domains/mail.example.test/verify")
    assert st == 200 and d["domain"] == "mail.example.test", d
    assert d["status"] in ("pending", "failed")
    st, _, d = call("GET", "/admin/domains/mail.example.test")
    assert st == 200 and d["checked_at"], d
    # users
    st, _, d = call("POST", "/admin/tenants/acme/users",
                    {"user": "app", "password": "pw-123456"})
    assert st == 201, d
    assert [u["user"] for u in p.ctl_json("user", "list", "acme")] == ["app"]
    st, _, d = call("GET", "/admin/tenants/acme/users")
    assert st == 200 and [u["user"] for u in d] == ["app"]
    assert "hash" not in json.dumps(d)
    st, _, d = call("DELETE", "/admin/tenants/acme/users/app")
    assert st == 200, d
    # API keys: the connection string once, then it works
    st, _, d = call("POST", "/admin/tenants/acme/apikeys", {"name": "ci"})
    assert st == 201 and d["name"] == "ci", d
    cs, endpoint, key = connection_string(d["connection_string"])
    assert endpoint == "https://127.0.0.1:%d/" % port
    assert Api(port, key, adm.certs).status("x")[0] == 404
    st, _, d = call("GET", "/admin/tenants/acme/apikeys")
    assert st == 200 and [k["name"] for k in d] == ["ci"]
    assert key not in json.dumps(d) and key not in p.log()
    st, _, d = call("DELETE", "/admin/tenants/acme/apikeys/ci")
    assert st == 200
    assert Api(port, key, adm.certs).status("x")[0] == 401
    # relay networks
    st, h, d = call("POST", "/admin/tenants/acme/networks",
                    {"cidr": "192.0.2.7/24"})
    assert_acs_error(st, h, d, 400, "BadRequest", msg_re="host bits")
    r = p.ctl("network", "add", "acme", "192.0.2.7/24", check=False)
    assert d["error"]["message"] in r.stderr     # petrelctl's very text
    st, _, d = call("POST", "/admin/tenants/acme/networks",
                    {"cidr": "192.0.2.0/24"})
    assert st == 201 and d["cidr"] == "192.0.2.0/24", d
    st, h, d = call("POST", "/admin/tenants/acme/networks", {"cidr": "nope"})
    assert_acs_error(st, h, d, 400, "BadRequest", msg_re='invalid network "nope"')
    st, _, d = call("GET", "/admin/networks")
    assert [n["cidr"] for n in d] == ["192.0.2.0/24"]
    st, _, d = call("DELETE", "/admin/networks/192.0.2.0%2F24")
    assert st == 200 and p.ctl_json("network", "list") == []
    # unknown paths and methods
    st, h, d = call("GET", "/admin/nothing")
    assert_acs_error(st, h, d, 404, "NotFound")
    st, h, d = call("PUT", "/admin/tenants")
    assert_acs_error(st, h, d, 405, "MethodNotAllowed")
    # delete a domain and the tenant
    st, _, _ = call("DELETE", "/admin/domains/mail.example.test")
    assert st == 200
    st, h, d = call("GET", "/admin/domains/mail.example.test")
    assert_acs_error(st, h, d, 404, "NotFound", msg_re="unknown domain")
    st, _, _ = call("DELETE", "/admin/tenants/acme")
    assert st == 200 and p.ctl_json("tenant", "list") == []
    assert admin_key_not_logged(p, adm.key)


def admin_key_not_logged(p, key):
    return key not in p.log()


def test_admin_api_off_without_key_file(env):
    st, h, d = env.api.request("GET", "/admin/tenants", auth="bearer")
    assert_acs_error(st, h, d, 401, "Denied")
