"""test_suppression - the suppression list, bounce categories and RFC 8058
one-click unsubscribe (issue 7): a hard bounce lists the recipient, a later
message to it ends "suppressed" without an attempt or a DSN; every failure
records its category (hard, soft, policy, mailbox_full, dns, tls,
expired); petrelctl suppression list|add|del and domain set; GET/PUT/DELETE
/suppressions[/ADDRESS] with ACS authentication and tenant isolation; the
List-Unsubscribe header fields (signed by DKIM), POST /u/TOKEN suppressing
the recipient, GET never doing so, forged tokens refused.

Delivery set-up as in test_delivery.py (a real unbound, aiosmtpd sinks on
127.0.0.2/.3 sharing one port); requests signed as in test_http_api.py.
"""

import base64
import email
import http.client
import re
import time
import urllib.parse
from email.policy import default as default_policy

import dkim
import pytest

import petrel_fixtures as pf
from test_delivery import HOSTS, Env, dsn_of, fresh
from test_http_api import Api, assert_acs_error, connection_string


class HttpEnv(Env):
    """test_delivery's Env with listen_https and listen_http and an API
    key for the tenant (acme)"""

    def __init__(self, petrel_factory, unbound_factory, records, conf=None,
                 sender_mx=None):
        self.https_port = pf.free_port()
        self.http_port = pf.free_port()
        c = {"listen_https": "127.0.0.1:%d" % self.https_port,
             "listen_http": "127.0.0.1:%d" % self.http_port}
        c.update(conf or {})
        super().__init__(petrel_factory, unbound_factory, records, conf=c,
                         sender_mx=sender_mx)
        pf.wait_for(lambda: pf._port_open("127.0.0.1", self.https_port),
                    what="https listener")
        r = self.p.ctl("apikey", "add", self.t["tenant"], "app")
        _, _, self.key = connection_string(r.stdout)
        self.api = Api(self.https_port, self.key, self.p.certs)

    def suppressed(self, tenant=None):
        return {e["address"]: e for e in self.p.ctl_json(
            "suppression", "list", tenant or self.t["tenant"])}


DEST = [("dest.test", "MX", "10 mx.dest.test."),
        ("mx.dest.test", "A", HOSTS[1])]


def rcpt_replies(table, seen):
    """a Sink reply function: the reply of the first table key found in
    the address (None: accept), counting RCPTs per address in seen"""
    def reply(addr):
        seen[addr] = seen.get(addr, 0) + 1
        for k, v in table.items():
            if k in addr:
                return v
        return None
    return reply


def rcpt_of(shown, addr):
    for r in shown["recipients"]:
        if r["address"] == addr:
            return r
    raise AssertionError("no recipient %s in %r" % (addr, shown))


# ------------------------------------------------------------ hard bounce

def test_hard_bounce_suppresses_then_no_attempt_no_dsn(
        petrel_factory, unbound_factory, sink_factory):
    e = HttpEnv(petrel_factory, unbound_factory, DEST, sender_mx=HOSTS[2])
    seen = {}
    remote = fresh(sink_factory, HOSTS[1], e.port, reply=rcpt_replies(
        {"bad": "550 5.1.1 no such user here"}, seen))
    back = fresh(sink_factory, HOSTS[2], e.port)

    # the bounce: category hard, the address listed with its reason
    qid = e.send(["bad@dest.test"], "first")
    shown = e.wait_status(qid, ["bounced"])
    lr = shown["recipients"][0]["last_reply"]
    assert (lr["code"], lr["enhanced"], lr["category"]) == (550, "5.1.1",
                                                            "hard"), lr
    dsn = back.wait_for(1, timeout=20)[0]
    _, st, _ = dsn_of(dsn)
    assert "Final-Recipient: rfc822; bad@dest.test" in st
    e.p.wait_log(r"qid=%s .*rcpt=bad@dest\.test status=bounced .*"
                 r"category=hard" % qid)
    sup = e.suppressed()
    assert set(sup) == {"bad@dest.test"}, sup
    ent = sup["bad@dest.test"]
    assert ent["source"] == "bounce" and ent["category"] == "hard", ent
    assert ent["qid"] == qid
    assert "550 5.1.1 no such user here" in ent["reason"], ent
    assert isinstance(ent["created"], int)
    text = e.p.ctl("suppression", "list", e.t["tenant"]).stdout
    assert "bad@dest.test" in text and "bounce" in text and "hard" in text
    assert seen == {"bad@dest.test": 1}

    # a second message: the listed address is not tried, the other is
    qid2 = e.send(["Bad@Dest.test", "good@dest.test"], "second")
    shown = e.wait_status(qid2, ["suppressed", "delivered"])
    r = shown["recipients"][0]
    assert r["attempts"] == 0, r
    assert "suppression list" in r["last_reply"]["text"], r
    assert "no such user here" in r["last_reply"]["text"], r
    assert r["last_reply"]["category"] == "hard", r
    assert r["next_attempt"] == 0
    got = remote.wait_for(1, timeout=20)
    assert got[0]["rcpt_tos"] == ["good@dest.test"]
    assert seen == {"bad@dest.test": 1, "good@dest.test": 1}, seen
    e.p.wait_log(r"qid=%s .*rcpt=Bad@Dest\.test status=suppressed" % qid2)
    out = e.p.ctl("message", "show", qid2).stdout
    assert re.search(r"Bad@Dest\.test\s+suppressed .*category=hard", out), out

    # HTTP: the operation of a message to the listed address fails,
    # naming it; still no attempt and no DSN
    st_, h, d = e.api.send({"senderAddress": e.sender,
                            "content": {"subject": "third",
                                        "plainText": "hi\n"},
                            "recipients": {"to": [{"address":
                                                   "bad@dest.test"}]}},
                           op="op-suppressed")
    assert st_ == 202, d
    res = e.api.wait_status("op-suppressed", "Failed")
    assert res["error"]["code"] == "EmailDroppedAllRecipientsSuppressed", res
    assert "bad@dest.test" in res["error"]["message"], res
    assert "suppressed" in res["error"]["message"], res
    assert [x["status"] for x in res["recipients"]] == ["suppressed"]
    assert seen["bad@dest.test"] == 1, seen
    # one of two suppressed: failed, but not "all recipients suppressed"
    st_, h, d = e.api.send({"senderAddress": e.sender,
                            "content": {"subject": "fourth",
                                        "plainText": "hi\n"},
                            "recipients": {"to": [
                                {"address": "bad@dest.test"},
                                {"address": "good@dest.test"}]}},
                           op="op-partial")
    assert st_ == 202, d
    res = e.api.wait_status("op-partial", "Failed")
    assert res["error"]["code"] == "DeliveryFailed", res
    assert res["error"]["message"].startswith("1 of 2 recipients"), res
    assert [x["status"] for x in res["recipients"]] == ["suppressed",
                                                        "delivered"]
    assert seen["bad@dest.test"] == 1, seen

    # exactly one DSN: for the first bounce only
    time.sleep(1.5)
    assert len(back.messages) == 1, [m["data"][:300] for m in back.messages]
    assert not re.search(r"qid=%s event=dsn" % qid2, e.p.log())
    assert len(re.findall(r"event=dsn status=queued", e.p.log())) == 1

    # listed again after del? no: del makes it deliverable
    e.p.ctl("suppression", "del", e.t["tenant"], "bad@dest.test")
    assert e.suppressed() == {}


# ------------------------------------------------------------ categories

def test_failure_categories(petrel_factory, unbound_factory, sink_factory):
    recs = DEST + [("nullmx.test", "MX", "0 .")]
    e = Env(petrel_factory, unbound_factory, recs, sender_mx=HOSTS[2],
            conf={"retry_schedule": "1h"})
    seen = {}
    fresh(sink_factory, HOSTS[1], e.port, reply=rcpt_replies(
        {"soft": "451 4.3.0 try again later",
         "full": "452 4.2.2 mailbox full",
         "policy": "554 5.7.1 rejected by policy"}, seen))
    fresh(sink_factory, HOSTS[2], e.port)
    # one message each (a 452 to RCPT also means "no more recipients in
    # this transaction" to the client)
    want = {"soft@dest.test": "deferred", "full@dest.test": "deferred",
            "policy@dest.test": "bounced"}
    qids = {a: e.send([a], "category " + a) for a in want}
    cats = {}
    for a, q in qids.items():
        shown = e.wait_status(q, [want[a]])
        cats[a] = shown["recipients"][0]["last_reply"]["category"]
    qid = qids["soft@dest.test"]
    assert cats == {"soft@dest.test": "soft",
                    "full@dest.test": "mailbox_full",
                    "policy@dest.test": "policy"}, cats
    qid2 = e.send(["nobody@nullmx.test"], "nullmx")
    shown2 = e.wait_status(qid2, ["bounced"])
    lr = shown2["recipients"][0]["last_reply"]
    assert (lr["enhanced"], lr["category"]) == ("5.1.10", "dns"), lr
    # queue list: the deferred message with its category
    listed = [m for m in e.p.ctl_json("queue", "list") if m["id"] == qid]
    assert [m["status"] for m in listed] == ["deferred"], listed
    assert listed[0]["category"] == "soft", listed
    # policy, mailbox full and DNS failures say nothing lasting about the
    # address: nothing listed
    assert e.p.ctl_json("suppression", "list", e.t["tenant"]) == []
    e.p.wait_log(r"rcpt=policy@dest\.test status=bounced .*category=policy")


def test_expiry_category(petrel_factory, unbound_factory, sink_factory):
    e = Env(petrel_factory, unbound_factory, DEST, sender_mx=HOSTS[2],
            conf={"retry_schedule": "1s", "queue_lifetime": "3s"})
    fresh(sink_factory, HOSTS[1], e.port,
          reply=rcpt_replies({"late": "450 4.2.0 busy"}, {}))
    back = fresh(sink_factory, HOSTS[2], e.port)
    qid = e.send(["late@dest.test"], "expiring")
    shown = e.wait_status(qid, ["bounced"], timeout=30)
    lr = shown["recipients"][0]["last_reply"]
    assert (lr["enhanced"], lr["category"]) == ("4.4.7", "expired"), lr
    back.wait_for(1, timeout=20)
    assert e.p.ctl_json("suppression", "list", e.t["tenant"]) == []


# ------------------------------------------------------------ petrelctl

def test_petrelctl_suppression_and_domain_set(petrel_factory):
    p = petrel_factory(start=False)
    t = p.setup_tenant("acme", user=None)
    p.setup_tenant("other", user=None, managed=False)
    r = p.ctl("suppression", "add", "acme", "Bob@Example.TEST", "asked us")
    assert "suppressed" in r.stdout
    p.ctl("suppression", "add", "acme", "carol@example.test")
    lst = p.ctl_json("suppression", "list", "acme")
    assert [x["address"] for x in lst] == ["bob@example.test",
                                           "carol@example.test"]
    bob = lst[0]
    assert bob["reason"] == "asked us" and bob["source"] == "manual", bob
    assert "category" not in bob
    assert lst[1]["reason"]  # a default reason
    assert p.ctl_json("suppression", "list", "other") == []
    out = p.ctl("suppression", "list", "acme").stdout
    assert "bob@example.test" in out and "2 addresses" in out
    for args, msg in [(("add", "acme", "not-an-address"), "invalid address"),
                      (("add", "acme", "a b@example.test"), "invalid"),
                      (("add", "nosuch", "x@example.test"), "unknown tenant"),
                      (("list", "nosuch"), "unknown tenant"),
                      (("del", "other", "bob@example.test"),
                       "not on the suppression list")]:
        r = p.ctl("suppression", *args, check=False)
        assert r.returncode == 1 and msg in r.stderr, (args, r.stderr)
    r = p.ctl("suppression", "add", "acme", check=False)
    assert r.returncode == 2
    p.ctl("suppression", "del", "acme", "BOB@example.test")
    assert [x["address"] for x in p.ctl_json("suppression", "list",
                                             "acme")] == ["carol@example.test"]
    r = p.ctl("suppression", "del", "acme", "bob@example.test", check=False)
    assert r.returncode == 1 and "not on the suppression list" in r.stderr

    # domain set: a whitelist of keys, on|off values
    d = t["domain"]
    assert p.ctl_json("domain", "show", d).get("unsubscribe") is False
    r = p.ctl("domain", "set", d, "unsubscribe", "on")
    assert "unsubscribe on" in r.stdout
    assert p.ctl_json("domain", "show", d)["unsubscribe"] is True
    p.ctl("domain", "set", d, "unsubscribe", "off")
    assert p.ctl_json("domain", "show", d)["unsubscribe"] is False
    r = p.ctl("domain", "set", d, "tenant", "other", check=False)
    assert r.returncode == 1 and "unknown domain setting" in r.stderr
    assert p.ctl_json("domain", "show", d)["tenant"] == "acme"
    r = p.ctl("domain", "set", d, "unsubscribe", "maybe", check=False)
    assert r.returncode == 1 and "on or off" in r.stderr
    r = p.ctl("domain", "set", "nosuch.test", "unsubscribe", "on",
              check=False)
    assert r.returncode == 1 and "unknown domain" in r.stderr


# ------------------------------------------------------------ HTTP

def test_http_suppressions_auth_and_isolation(petrel_factory,
                                              unbound_factory):
    e = HttpEnv(petrel_factory, unbound_factory, DEST)
    e.p.setup_tenant("other", user=None, managed=False)
    _, _, key2 = connection_string(e.p.ctl("apikey", "add", "other").stdout)
    api, api2 = e.api, Api(e.https_port, key2, e.p.certs)
    addr = "Someone@Example.test"
    path = "/suppressions/" + urllib.parse.quote(addr, safe="")

    # authentication as for emails:send
    st, h, d = api.request("GET", "/suppressions", auth=None)
    assert_acs_error(st, h, d, 401, "Denied")
    st, h, d = api.request("PUT", path, {"reason": "x"}, key=key2[:-4] +
                           "AAA=")
    assert_acs_error(st, h, d, 401, "Denied")
    st, _, d = api.request("GET", "/suppressions")
    assert st == 200 and d == [], d

    st, _, d = api.request("PUT", path, {"reason": "asked by phone"})
    assert st == 200, d
    assert d["address"] == "someone@example.test"
    assert d["reason"] == "asked by phone" and d["source"] == "manual", d
    st, _, d = api.request("GET", path)
    assert st == 200 and d["reason"] == "asked by phone", d
    st, _, d = api.request("GET", "/suppressions", auth="bearer")
    assert st == 200 and [x["address"] for x in d] == ["someone@example.test"]
    # the same store as petrelctl
    assert "someone@example.test" in e.suppressed()
    # PUT without a body: listed with a default reason
    st, _, d = api.request("PUT", "/suppressions/x%40y.test")
    assert st == 200 and d["address"] == "x@y.test" and d["reason"], d

    # the other tenant sees nothing and cannot delete
    st, _, d = api2.request("GET", "/suppressions")
    assert st == 200 and d == [], d
    st, h, d = api2.request("GET", path)
    assert_acs_error(st, h, d, 404, "NotFound")
    st, h, d = api2.request("DELETE", path)
    assert_acs_error(st, h, d, 404, "NotFound")
    assert "someone@example.test" in e.suppressed()
    assert e.suppressed("other") == {}

    # errors
    st, h, d = api.request("PUT", path, b"{not json")
    assert_acs_error(st, h, d, 400, "BadRequest")
    st, h, d = api.request("PUT", path, {"reason": 5})
    assert_acs_error(st, h, d, 400, "BadRequest", target="reason")
    st, h, d = api.request("GET", "/suppressions/not-an-address")
    assert_acs_error(st, h, d, 400, "BadRequest", target="address")
    st, h, d = api.request("GET", "/suppressions/a%00b%40x.test")
    assert_acs_error(st, h, d, 400, "BadRequest", target="address")
    st, h, d = api.request("POST", "/suppressions", {})
    assert_acs_error(st, h, d, 405, "MethodNotAllowed")
    assert h.get("allow") == "GET"
    st, h, d = api.request("POST", path, {})
    assert_acs_error(st, h, d, 405, "MethodNotAllowed")

    # delete, then it is gone
    st, _, d = api.request("DELETE", path)
    assert st == 200 and d == {"address": "someone@example.test",
                               "deleted": True}, d
    st, h, d = api.request("GET", path)
    assert_acs_error(st, h, d, 404, "NotFound")
    st, h, d = api.request("DELETE", path)
    assert_acs_error(st, h, d, 404, "NotFound")
    assert set(e.suppressed()) == {"x@y.test"}


# ------------------------------------------------------------ RFC 8058

def unsub_request(port, method, path, body=b"", tls=True, certs=None):
    if tls:
        c = http.client.HTTPSConnection("localhost", port, timeout=30,
                                        context=pf.client_context(certs))
    else:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        hdrs = {}
        if method == "POST":
            hdrs["Content-Type"] = "application/x-www-form-urlencoded"
        c.request(method, path, body=body, headers=hdrs)
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def test_one_click_unsubscribe(petrel_factory, unbound_factory,
                               sink_factory):
    e = HttpEnv(petrel_factory, unbound_factory, DEST,
                conf={"unsubscribe_mailto": "unsubscribe@petrel.test"})
    remote = fresh(sink_factory, HOSTS[1], e.port)
    dom = e.t["domain"]
    e.p.ctl("domain", "set", dom, "unsubscribe", "on")
    qid = e.send(["Reader@dest.test", "other@dest.test"], "newsletter")
    e.wait_status(qid, ["delivered", "delivered"])
    got = remote.wait_for(2, timeout=20)
    copies = {m["rcpt_tos"][0]: m for m in got}
    assert set(copies) == {"Reader@dest.test", "other@dest.test"}, \
        [m["rcpt_tos"] for m in got]
    raw = copies["Reader@dest.test"]["data"]
    msg = email.message_from_bytes(raw, policy=default_policy)
    lu = msg["List-Unsubscribe"]
    if lu is None:
        pytest.skip("no List-Unsubscribe in the delivered copy: the "
                    "prepare stage does not call unsub_headers() yet")
    lu = " ".join(str(lu).split())
    m = re.fullmatch(r"<(https://127\.0\.0\.1:%d/u/([A-Za-z0-9_-]+\."
                     r"[A-Za-z0-9_-]+))>, <mailto:unsubscribe@petrel\.test"
                     r"\?subject=unsubscribe>" % e.https_port, lu)
    assert m, lu
    url, token = m.group(1), m.group(2)
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    # each recipient's copy has its own token
    other = email.message_from_bytes(copies["other@dest.test"]["data"],
                                     policy=default_policy)
    assert token not in str(other["List-Unsubscribe"])

    # covered by every DKIM signature, each verifying with the domain's
    # keys
    sigs = msg.get_all("DKIM-Signature")
    assert sigs, msg.keys()
    for sig in sigs:
        sig = " ".join(str(sig).split())
        hlist = re.search(r"\bh=([^;]+)", sig).group(1).replace(" ", "")
        hnames = [x.lower() for x in hlist.split(":")]
        assert "list-unsubscribe" in hnames and \
            "list-unsubscribe-post" in hnames, hnames
    keys = {r["name"].rstrip(".").lower(): r["value"]
            for r in e.p.ctl_json("domain", "show", dom)["records"]
            if r.get("purpose") == "dkim"}

    def dnsfunc(name, timeout=5):
        if isinstance(name, bytes):
            name = name.decode()
        v = keys.get(name.rstrip(".").lower())
        return v.encode() if v else None
    for i in range(len(sigs)):
        assert dkim.DKIM(raw).verify(idx=i, dnsfunc=dnsfunc), sigs[i]

    path = urllib.parse.urlparse(url).path
    # GET: a page with a form that POSTs; nothing suppressed
    st, h, body = unsub_request(e.https_port, "GET", path, certs=e.p.certs)
    assert st == 200, body
    assert h["content-type"].startswith("text/html")
    assert b'method="post"' in body and b"reader@dest.test" in body
    assert e.suppressed() == {}
    # forged or modified tokens: 404, nothing suppressed
    payload, mac = token.split(".")
    forged_payload = base64.urlsafe_b64encode(
        b"acme\0victim@dest.test").decode().rstrip("=")
    flipped = mac[:-2] + ("A" if mac[-2] != "A" else "B") + mac[-1]
    for bad in ["%s.%s" % (forged_payload, mac), "%s.%s" % (payload, flipped),
                payload, "x" * 2000, token + "A", "nosuchtoken.x"]:
        for method in ("POST", "GET"):
            st, _, body = unsub_request(e.https_port, method, "/u/" + bad,
                                        b"List-Unsubscribe=One-Click",
                                        certs=e.p.certs)
            assert st == 404, (bad[:40], method, st, body)
    assert e.suppressed() == {}
    # the one-click POST (RFC 8058 body), on the plain listener too
    st, h, body = unsub_request(e.http_port, "POST", path,
                                b"List-Unsubscribe=One-Click", tls=False)
    assert st == 200, body
    assert h["content-type"].startswith("text/plain")
    sup = e.suppressed()
    assert set(sup) == {"reader@dest.test"}, sup
    assert sup["reader@dest.test"]["source"] == "unsubscribe"
    e.p.wait_log(r"event=unsubscribe tenant=acme rcpt=reader@dest\.test "
                 r"status=suppressed")
    # and it is an event for the tenant's webhooks and GET /events
    e.p.wait_log(r"event=unsubscribed id=\d+ .*tenant=acme "
                 r".*rcpt=reader@dest\.test")
    # ... naming the message the link came in (the token carries its
    # queue id), as the suppression entry does
    ev = [x for x in e.p.ctl_json("log", "search", "--recipient",
                                  "reader@dest.test")
          if x["type"] == "unsubscribed"]
    assert len(ev) == 1 and ev[0]["qid"] == qid, ev
    assert ev[0]["message_id"] == e.show(qid)["message_id"], ev
    assert sup["reader@dest.test"]["qid"] == qid, sup
    # repeating it is harmless (and any body is accepted)
    st, _, _ = unsub_request(e.https_port, "POST", path, b"", certs=e.p.certs)
    assert st == 200
    # the next message to the reader is suppressed
    qid2 = e.send(["reader@dest.test"], "next issue")
    shown = e.wait_status(qid2, ["suppressed"])
    assert "unsubscribe" in shown["recipients"][0]["last_reply"]["text"]
    assert len(remote.messages) == 2

    # off again: no header fields
    e.p.ctl("domain", "set", dom, "unsubscribe", "off")
    qid3 = e.send(["other@dest.test"], "after off")
    e.wait_status(qid3, ["delivered"])
    last = remote.wait_for(3, timeout=20)[-1]
    assert b"List-Unsubscribe" not in last["data"].split(b"\r\n\r\n")[0]
