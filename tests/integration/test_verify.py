"""test_verify - sender domain verification through DNS (issue 6).

A real unbound serves the records; petrelctl domain verify and petreld's
periodic re-verification look them up through the configured `resolver`.
What is published is exactly what `petrelctl domain show --json` lists.
"""

import re
import smtplib
import time

import pytest

import petrel_fixtures as pf

DOMAIN = "example.test"


def show(p, domain=DOMAIN):
    return p.ctl_json("domain", "show", domain)


def records_of(p, domain=DOMAIN):
    """records_of - the (name, TXT, value) triples domain show lists"""
    return [(r["name"], "TXT", r["value"]) for r in show(p, domain)["records"]]


def by_purpose(p, purpose, domain=DOMAIN):
    return [r for r in show(p, domain)["records"] if r["purpose"] == purpose]


def new_petrel(workdir, unbound, name="p", started=False, factory=None,
               **extra):
    conf = {"resolver": unbound.addr, "smtp_bind_address": "127.0.0.1"}
    conf.update(extra)
    if started:
        p = factory(conf=conf)
    else:
        p = pf.Petrel(workdir / name, conf=conf, start=False)
    p.ctl("tenant", "add", "acme")
    p.ctl("domain", "add", "acme", DOMAIN)
    return p


def verify(p, domain=DOMAIN):
    return p.ctl("domain", "verify", domain, check=False)


def mail_from(p, sender):
    """mail_from - (code, text) of MAIL FROM on the relay port"""
    s = smtplib.SMTP("127.0.0.1", p.ports["relay"], timeout=10)
    try:
        s.ehlo("client.test")
        code, msg = s.mail(sender)
        return code, msg.decode()
    finally:
        try:
            s.quit()
        except smtplib.SMTPException:
            pass


def test_verified_only_with_every_record(workdir, unbound_factory):
    u = unbound_factory([("other.test", "TXT", "x")])
    p = new_petrel(workdir, u)
    assert show(p)["status"] == "pending"
    r = verify(p)
    assert r.returncode == 1, r.stdout
    assert show(p)["status"] == "pending"

    u.set_records(records_of(p))
    r = verify(p)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = [l for l in r.stdout.splitlines()
             if re.match(r"(ownership|spf|dkim|dmarc)\s", l)]
    assert len(lines) == len(show(p)["records"]) == 5
    assert all(re.search(r"\sOK$", l) for l in lines), r.stdout
    assert re.search(r"^domain example\.test: verified$", r.stdout, re.M)
    v = show(p)
    assert v["status"] == "verified"
    assert v["checked_at"] > 0
    assert {x["status"] for x in v["records"]} == {"verified"}


def _wrong(purpose, rec):
    """_wrong - a wrong value for one record"""
    if purpose == "ownership":
        return "petrel-verification=notthetoken"
    if purpose == "spf":
        return "v=spf1 ip4:192.0.2.1 -all"
    if purpose == "dkim":
        # same tags, another key's p=
        return re.sub(r"p=[A-Za-z0-9+/=]{8}", "p=AAAAAAAA", rec["value"], 1)
    if purpose == "dmarc":
        return "v=DMARC1; p=bogus"
    raise AssertionError(purpose)


@pytest.mark.parametrize("purpose", ["ownership", "spf", "dkim", "dmarc"])
@pytest.mark.parametrize("how", ["missing", "wrong"])
def test_each_record_missing_or_wrong(workdir, unbound_factory, purpose, how):
    u = unbound_factory([("other.test", "TXT", "x")])
    p = new_petrel(workdir, u)
    recs = show(p)["records"]
    target = [r for r in recs if r["purpose"] == purpose][0]
    published = []
    for r in recs:
        if r is target:
            if how == "wrong":
                published.append((r["name"], "TXT", _wrong(purpose, r)))
        else:
            published.append((r["name"], "TXT", r["value"]))
    u.set_records(published)

    r = verify(p)
    assert r.returncode == 1, r.stdout
    word = "MISSING" if how == "missing" else "WRONG"
    line = re.search(r"^%s\s+%s\s+%s\b.*$" % (purpose, re.escape(target["name"]),
                                             word), r.stdout, re.M)
    assert line, r.stdout
    if how == "wrong":
        # says what it expected and what it found
        assert "expected" in line.group(0) and "found" in line.group(0)
        if purpose == "spf":
            assert "libspf2: fail for 127.0.0.1" in line.group(0)
    # every other record checks out
    others = [l for l in r.stdout.splitlines()
              if re.match(r"(ownership|spf|dkim|dmarc)\s", l)
              and l != line.group(0)]
    assert len(others) == 4 and all(l.endswith("  OK") for l in others), \
        r.stdout
    assert re.search(r"^domain example\.test: pending \(not verified: .*%s"
                     % purpose, r.stdout, re.M), r.stdout
    v = show(p)
    assert v["status"] == "pending"
    st = {x["name"] + "|" + x["value"]: x["status"] for x in v["records"]}
    assert st[target["name"] + "|" + target["value"]] == "failed"
    assert sorted(st.values()).count("verified") == 4


@pytest.mark.parametrize("tag,why", [
    ("s=other", "s= does not allow email"),
    ("h=sha1", "h= does not allow sha256"),
    ("s=email:*", None), ("h=sha1:sha256", None)])
def test_dkim_key_service_and_hash_tags(workdir, unbound_factory, tag, why):
    """a key record limited to another service or hash does not verify
    Petrel's email sha256 signatures (RFC 6376 3.6.1)"""
    u = unbound_factory([("other.test", "TXT", "x")])
    p = new_petrel(workdir, u)
    recs = show(p)["records"]
    target = [r for r in recs if r["purpose"] == "dkim"][0]
    published = []
    for r in recs:
        v = r["value"]
        if r is target:
            v = v.replace("; p=", "; %s; p=" % tag, 1)
            assert tag in v, v
        published.append((r["name"], "TXT", v))
    u.set_records(published)
    r = verify(p)
    line = re.search(r"^dkim\s+%s\s+\S+.*$" % re.escape(target["name"]),
                     r.stdout, re.M)
    assert line, r.stdout
    if why is None:
        assert r.returncode == 0 and line.group(0).endswith("OK"), r.stdout
    else:
        assert r.returncode == 1, r.stdout
        assert "WRONG" in line.group(0) and why in line.group(0), r.stdout


def test_spf_evaluated_not_compared(workdir, unbound_factory):
    """a different record that still lets smtp_bind_address pass is fine;
    one that only mentions it in an unrelated way is not"""
    u = unbound_factory([("other.test", "TXT", "x")])
    p = new_petrel(workdir, u)
    base = [r for r in records_of(p) if r[0] != DOMAIN]
    u.set_records(base + [(DOMAIN, "TXT", "v=spf1 ip4:127.0.0.0/8 ~all")])
    r = verify(p)
    assert r.returncode == 0, r.stdout
    assert re.search(r"^spf\s+example\.test\s+OK$", r.stdout, re.M)

    # an include that does not list the address: libspf2 says fail (no
    # free pass for the loopback address)
    u.set_records(base + [(DOMAIN, "TXT", "v=spf1 include:spf.other.test -all"),
                          ("spf.other.test", "TXT", "v=spf1 ip4:192.0.2.0/24 -all")])
    r = verify(p)
    assert r.returncode == 1, r.stdout
    assert re.search(r"^spf\s+example\.test\s+WRONG: .*libspf2: fail", r.stdout,
                     re.M), r.stdout
    assert show(p)["status"] == "failed"      # it was verified before

    # ... and one that does: pass through the include
    u.set_records(base + [(DOMAIN, "TXT", "v=spf1 include:spf.other.test -all"),
                          ("spf.other.test", "TXT", "v=spf1 ip4:127.0.0.1 -all")])
    r = verify(p)
    assert r.returncode == 0, r.stdout
    assert show(p)["status"] == "verified"

    # two SPF records are a permerror at receivers
    u.set_records(base + [(DOMAIN, "TXT", "v=spf1 ip4:127.0.0.1 -all"),
                          (DOMAIN, "TXT", "v=spf1 -all")])
    r = verify(p)
    assert r.returncode == 1
    assert re.search(r"^spf\s+example\.test\s+WRONG: expected one SPF record",
                     r.stdout, re.M), r.stdout


def test_spf_include_setting(workdir, unbound_factory):
    """with spf_include the record must hold include:<spf_include> (and the
    bind address must still pass through it)"""
    u = unbound_factory([("other.test", "TXT", "x")])
    p = new_petrel(workdir, u, spf_include="_spf.petrel.test")
    recs = records_of(p)
    spf = [r for r in recs if r[0] == DOMAIN][0]
    assert spf[2] == "v=spf1 include:_spf.petrel.test -all"
    include = ("_spf.petrel.test", "TXT", "v=spf1 ip4:127.0.0.1 -all")
    base = [r for r in recs if r[0] != DOMAIN] + [include]
    u.set_records(base + [(DOMAIN, "TXT", "v=spf1 ip4:127.0.0.1 -all")])
    r = verify(p)
    assert r.returncode == 1
    assert re.search(r"^spf\s+example\.test\s+WRONG: expected .*"
                     r"include:_spf\.petrel\.test", r.stdout, re.M), r.stdout
    u.set_records(base + [spf])
    r = verify(p)
    assert r.returncode == 0, r.stdout


def test_managed_domain_needs_no_lookup(workdir, unbound_factory):
    u = unbound_factory([("other.test", "TXT", "x")])
    p = pf.Petrel(workdir / "p", conf={"resolver": u.addr}, start=False)
    t = p.setup_tenant(user=None)
    r = p.ctl("domain", "verify", t["domain"])
    assert "managed" in r.stdout and "verified" in r.stdout
    assert show(p, t["domain"])["status"] == "verified"


def test_pending_refused_as_sender_until_verified(workdir, unbound_factory,
                                                  petrel_factory):
    u = unbound_factory([("other.test", "TXT", "x")])
    p = new_petrel(workdir, u, started=True, factory=petrel_factory,
                   verify_interval="1h")
    p.ctl("network", "add", "acme", "127.0.0.0/8")
    code, msg = mail_from(p, "app@example.test")
    assert code == 550 and msg.startswith("5.7.1"), (code, msg)
    assert "not verified" in msg

    u.set_records(records_of(p))
    assert verify(p).returncode == 0
    code, msg = mail_from(p, "app@example.test")
    assert code == 250, (code, msg)


def test_daemon_fails_domain_when_records_disappear(workdir, unbound_factory,
                                                    petrel_factory):
    u = unbound_factory([("other.test", "TXT", "x")])
    p = new_petrel(workdir, u, started=True, factory=petrel_factory,
                   verify_interval="1s", reverify_interval="2s")
    p.ctl("network", "add", "acme", "127.0.0.0/8")
    u.set_records(records_of(p))
    assert verify(p).returncode == 0
    assert mail_from(p, "app@example.test")[0] == 250
    mark = p.log_mark()

    # the DKIM records go away
    u.set_records([r for r in records_of(p) if "._domainkey." not in r[0]])
    pf.wait_for(lambda: show(p)["status"] == "failed", timeout=30,
                what="domain failed")
    m = p.wait_log(r'event=domain_status domain=example\.test old=verified '
                   r'new=failed reason="([^"]*)"', since=mark)
    assert "dkim" in m.group(1) and "MISSING" in m.group(1)
    dk = by_purpose(p, "dkim")
    assert dk and all(r["status"] == "failed" for r in dk)
    code, msg = mail_from(p, "app@example.test")
    assert code == 550 and msg.startswith("5.7.1"), (code, msg)


def test_daemon_verifies_pending_domain(workdir, unbound_factory,
                                        petrel_factory):
    u = unbound_factory([("other.test", "TXT", "x")])
    p = new_petrel(workdir, u, started=True, factory=petrel_factory,
                   verify_interval="1s", reverify_interval="1s")
    mark = p.log_mark()
    u.set_records(records_of(p))
    pf.wait_for(lambda: show(p)["status"] == "verified", timeout=30,
                what="domain verified by petreld")
    p.wait_log(r'event=domain_status domain=example\.test old=pending '
               r'new=verified reason="all records verified"', since=mark)
    assert {r["status"] for r in show(p)["records"]} == {"verified"}

    # a rotation is completed by petreld too, once the new records appear
    old_keys = keys_by_state(p)["active"]
    p.ctl("domain", "rotate-dkim", DOMAIN)
    new_keys = keys_by_state(p)["pending"]
    mark = p.log_mark()
    u.set_records(records_of(p))
    pf.wait_for(lambda: keys_by_state(p).get("active") == new_keys,
                timeout=30, what="new keys promoted by petreld")
    assert keys_by_state(p)["retired"] == old_keys
    p.wait_log(r"event=dkim_rotate domain=example\.test promoted=\S+ "
               r"retired=\S+", since=mark)
    assert show(p)["status"] == "verified"


def keys_by_state(p):
    out = {}
    for k in show(p)["keys"]:
        out.setdefault(k["state"], set()).add(k["selector"])
    return out


def test_rotate_dkim(workdir, unbound_factory):
    u = unbound_factory([("other.test", "TXT", "x")])
    # queued messages may carry the old keys' signatures for
    # queue_lifetime: that long their records stay listed
    p = new_petrel(workdir, u, queue_lifetime="3s")
    u.set_records(records_of(p))
    assert verify(p).returncode == 0
    old = keys_by_state(p)["active"]
    assert len(old) == 2 and "private" not in str(show(p)["keys"])

    r = p.ctl("domain", "rotate-dkim", DOMAIN)
    ks = keys_by_state(p)
    assert ks["active"] == old and len(ks["pending"]) == 2
    for sel in ks["pending"]:
        assert sel in r.stdout
        assert "%s._domainkey.%s" % (sel, DOMAIN) in r.stdout
    for sel in old:
        assert "%s._domainkey" % sel not in r.stdout
    # old and new keys are both listed for publication
    names = {x["name"] for x in by_purpose(p, "dkim")}
    assert names == {"%s._domainkey.%s" % (s, DOMAIN) for s in old | ks["pending"]}
    # a second rotation waits for the first
    assert p.ctl("domain", "rotate-dkim", DOMAIN, check=False).returncode == 1

    # new records not published yet: still verified, old keys keep signing
    r = verify(p)
    assert r.returncode == 0, r.stdout
    for sel in ks["pending"]:
        assert re.search(r"^dkim\s+%s\._domainkey\.example\.test\s+MISSING"
                         % sel, r.stdout, re.M), r.stdout
    assert keys_by_state(p) == ks
    assert show(p)["status"] == "verified"

    # publish everything domain show lists: the new keys take over
    u.set_records(records_of(p))
    r = verify(p)
    assert r.returncode == 0, r.stdout
    assert "now active" in r.stdout
    assert re.search(r"keep their records until \S+ \S+ \(queue_lifetime\)",
                     r.stdout), r.stdout
    t_promoted = time.time()
    after = keys_by_state(p)
    assert after["active"] == ks["pending"]
    assert after["retired"] == old
    assert "pending" not in after
    names = {x["name"] for x in by_purpose(p, "dkim")}
    assert names == {"%s._domainkey.%s" % (s, DOMAIN)
                     for s in old | ks["pending"]}
    assert show(p)["status"] == "verified"
    # removing the old records early does not fail the domain: only the
    # active keys count
    u.set_records([(n, t, v) for n, t, v in records_of(p)
                   if not any(n.startswith(s + ".") for s in old)])
    r = verify(p)
    assert r.returncode == 0, r.stdout
    assert show(p)["status"] == "verified"
    # once queue_lifetime has passed they are no longer listed
    time.sleep(max(0, t_promoted + 3.5 - time.time()))
    assert verify(p).returncode == 0
    names = {x["name"] for x in by_purpose(p, "dkim")}
    assert names == {"%s._domainkey.%s" % (s, DOMAIN) for s in ks["pending"]}
    assert show(p)["status"] == "verified"
