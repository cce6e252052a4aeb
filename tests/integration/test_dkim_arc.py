"""test_dkim_arc - DKIM signing (src/dkim.c), ARC sealing (src/arc.c) and
this hop's authentication results (src/authres.c), driven through
tests/unit/sign_probe against a real unbound serving the published
records, and checked with two independent verifiers: Debian's python3-dkim
(dkimpy) and the npm mailauth 4.13 library (installed on first use into
tests/integration/mailauth-npm by tests/integration/setup-mailauth.sh).

Keys: the domain record that petrelctl generates (RSA-2048 + Ed25519 in
the LMDB store, read by sign_probe), an ARC key for Petrel's hop, and the
keys of a previous hop (dkimpy signs and seals with them).
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import petrel_fixtures as pf  # noqa: E402

dkim = pytest.importorskip("dkim")
dns_message = pytest.importorskip("dns.message")

HERE = Path(__file__).resolve().parent
SANITIZER_MARKS = ("AddressSanitizer", "runtime error", "LeakSanitizer")

DOMAIN = "example.test"
ARC_DOMAIN = "petrel.test"
ARC_SEL = "arc1"
HOP_DOMAIN = "hop1.test"
HOP_SEL = "s1"
CLIENT_IP = "192.0.2.10"   # the address SPF is evaluated for (data only:
                           # libspf2 passes any loopback client)
MAIL_FROM = "bounce@example.test"


def probe_path():
    return str(pf.build_dir() / "tests" / "unit" / "sign_probe")


def probe(*args, check=True, input=None):
    """probe - run sign_probe; returns CompletedProcess (bytes)"""
    r = subprocess.run([probe_path()] + [str(a) for a in args],
                       capture_output=True, timeout=120, input=input,
                       env=dict(os.environ, ASAN_OPTIONS="detect_leaks=1"))
    err = r.stderr.decode("utf-8", "replace")
    for mark in SANITIZER_MARKS:
        assert mark not in err, "sanitizer report from sign_probe:\n" + err
    if check and r.returncode != 0:
        raise AssertionError("sign_probe %s exited %d: %s"
                             % (" ".join(map(str, args)), r.returncode, err))
    return r


def openssl_rsa(path):
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                    "rsa_keygen_bits:2048", "-out", str(path)],
                   check=True, capture_output=True)
    pub = subprocess.run(["openssl", "pkey", "-in", str(path), "-pubout",
                          "-outform", "DER"], check=True,
                         capture_output=True).stdout
    import base64
    return base64.b64encode(pub).decode()


class Env:
    """Env - store with example.test, unbound with every record"""

    def __init__(self, root):
        self.root = Path(root)
        self.petrel = pf.Petrel(self.root / "petrel", start=False)
        self.petrel.ctl("tenant", "add", "t")
        self.petrel.ctl("domain", "add", "t", DOMAIN)
        show = self.petrel.ctl_json("domain", "show", DOMAIN)
        self.keys = show["keys"]
        records = [(r["name"], "TXT", r["value"]) for r in show["records"]]
        self.arc_key = self.root / "arc.pem"
        arc_pub = openssl_rsa(self.arc_key)
        self.hop_key = self.root / "hop.pem"
        hop_pub = openssl_rsa(self.hop_key)
        records += [
            ("petrel.test", "A", CLIENT_IP),
            ("%s._domainkey.%s" % (ARC_SEL, ARC_DOMAIN), "TXT",
             "v=DKIM1; k=rsa; p=" + arc_pub),
            ("%s._domainkey.%s" % (HOP_SEL, HOP_DOMAIN), "TXT",
             "v=DKIM1; k=rsa; p=" + hop_pub),
            (HOP_DOMAIN, "TXT", "v=spf1 ip4:127.0.0.9 -all"),
        ]
        self.records = records
        self.unbound = pf.Unbound(self.root / "unbound", records)
        self.resolver = self.unbound.addr
        self.data_dir = str(self.petrel.data_dir)

    def dnsfunc(self, name, timeout=5):
        """dnsfunc - dkimpy's key lookup through the Unbound fixture"""
        return self.unbound.txt(name, timeout)

    def write(self, name, data):
        p = self.root / name
        p.write_bytes(data)
        return p

    def sign(self, msg):
        p = self.write("in.eml", msg)
        return probe("sign", self.data_dir, DOMAIN, p).stdout

    def seal(self, msg, authres="spf=pass smtp.mailfrom=example.test"):
        p = self.write("seal.eml", msg)
        r = probe("seal", self.resolver, ARC_DOMAIN, ARC_SEL, self.arc_key,
                  "petrel.test", authres, p)
        return r.stdout, r.stderr.decode().strip()

    def relay(self, msg, ip=CLIENT_IP, helo="petrel.test",
              mail_from=MAIL_FROM):
        p = self.write("relay.eml", msg)
        r = probe("relay", self.resolver, ip, helo, mail_from, self.data_dir,
                  DOMAIN, ARC_DOMAIN, ARC_SEL, self.arc_key, "petrel.test", p)
        return r.stdout, r.stderr.decode().strip()

    def validate(self, msg):
        p = self.write("validate.eml", msg)
        return probe("validate", self.resolver, p).stdout.decode().strip()

    def hop_seal(self, msg):
        """hop_seal - a previous hop: DKIM-sign as hop1.test, then ARC-seal
        (i=1) with dkimpy"""
        key = self.hop_key.read_bytes()
        sig = dkim.sign(msg, HOP_SEL.encode(), HOP_DOMAIN.encode(), key,
                        include_headers=[b"from", b"to", b"subject",
                                         b"date", b"message-id"])
        # dkimpy builds the AAR from this hop's Authentication-Results
        msg = (b"Authentication-Results: hop1.test; spf=pass "
               b"smtp.mailfrom=example.test\r\n") + sig + msg
        arc = dkim.arc_sign(msg, HOP_SEL.encode(), HOP_DOMAIN.encode(), key,
                            b"hop1.test", include_headers=[
                                b"from", b"to", b"subject", b"date",
                                b"message-id"])
        return b"".join(arc) + msg

    def stop(self):
        self.unbound.stop()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    if not os.access(probe_path(), os.X_OK):
        pytest.skip("no sign_probe at %s (make check builds it)"
                    % probe_path())
    e = Env(tmp_path_factory.mktemp("dkimarc"))
    yield e
    e.stop()


def message(subject="Hello", body=None, frm="Alice <alice@example.test>"):
    body = body or ("Hi Bob,\r\n\r\nThis  is   a test\t \r\nwith trailing "
                    "space   \r\n\r\n\r\n")
    return ("From: %s\r\n"
            "To: Bob <bob@receiver.test>\r\n"
            "Cc: carol@receiver.test\r\n"
            "Subject: %s\r\n"
            "Date: Mon, 01 Jan 2024 10:00:00 +0000\r\n"
            "Message-ID: <%s@example.test>\r\n"
            "MIME-Version: 1.0\r\n"
            "Content-Type: text/plain;\r\n charset=utf-8\r\n"
            "X-Not-Signed: whatever\r\n"
            "\r\n%s" % (frm, subject, abs(hash(subject)), body)).encode()


def header_fields(msg, name):
    """header_fields - unfolded values of every field called name"""
    head = msg.split(b"\r\n\r\n", 1)[0].decode()
    out = []
    for m in re.finditer(r"^%s:([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)" % re.escape(name), head,
                         re.M | re.I):
        out.append(re.sub(r"\r\n[ \t]", " ", m.group(1)).strip())
    return out


def tags(value):
    return {k.strip(): re.sub(r"\s+", "", v) for k, v in
            (t.split("=", 1) for t in value.split(";") if "=" in t)}


def verify_each(env, msg):
    """verify_each - dkimpy's verdict on each DKIM-Signature by index"""
    out = []
    for i in range(len(header_fields(msg, "DKIM-Signature"))):
        try:
            out.append(dkim.DKIM(msg).verify(idx=i, dnsfunc=env.dnsfunc))
        except dkim.DKIMException:
            out.append(False)
    return out


# ------------------------------------------------------------ DKIM

def test_dkim_both_signatures_verify_with_dkimpy(env):
    msg = message()
    out = env.sign(msg)
    assert out.endswith(msg), "the original message follows the signatures"
    sigs = header_fields(out, "DKIM-Signature")
    assert len(sigs) == 2
    t = [tags(s) for s in sigs]
    assert sorted(x["a"] for x in t) == ["ed25519-sha256", "rsa-sha256"]
    sels = {k["alg"]: k["selector"] for k in env.keys}
    for x in t:
        assert x["d"] == DOMAIN and x["c"] == "relaxed/relaxed"
        assert x["s"] == sels[x["a"]]
        h = [n.lower() for n in x["h"].split(":")]
        # present headers signed, From oversigned, unsigned ones left out
        assert h.count("from") == 2
        for n in ("to", "cc", "subject", "date", "message-id",
                  "mime-version", "content-type"):
            assert n in h
        assert "x-not-signed" not in h and "reply-to" not in h
    assert verify_each(env, out) == [True, True]
    # the whole message through dkimpy's default (first signature)
    assert dkim.verify(out, dnsfunc=env.dnsfunc)


def test_dkim_tampering_breaks_both_signatures(env):
    out = env.sign(message(subject="Original"))
    bad = out.replace(b"Subject: Original", b"Subject: Changed")
    assert verify_each(env, bad) == [False, False]
    bad = out.replace(b"This  is", b"That  is")
    assert verify_each(env, bad) == [False, False]
    # an unsigned header may change; relaxed canonicalisation absorbs
    # whitespace changes in signed ones
    ok = out.replace(b"X-Not-Signed: whatever", b"X-Not-Signed: other")
    ok = ok.replace(b"Subject: Original", b"Subject:   Original")
    assert verify_each(env, ok) == [True, True]


def test_dkim_adding_a_second_from_breaks_oversigned_signatures(env):
    out = env.sign(message(subject="Oversign"))
    head, body = out.split(b"\r\n\r\n", 1)
    forged = head + b"\r\nFrom: mallory@evil.test\r\n\r\n" + body
    assert verify_each(env, forged) == [False, False]


def test_dkim_upstream_signatures_are_kept(env):
    upstream = env.hop_seal(message(subject="Upstream"))
    out = env.sign(upstream)
    assert out.endswith(upstream)
    sigs = header_fields(out, "DKIM-Signature")
    assert len(sigs) == 3      # ours two, then the upstream one
    assert tags(sigs[2])["d"] == HOP_DOMAIN
    assert verify_each(env, out) == [True, True, True]


def test_dkim_rejects_unusable_messages(env):
    r = probe("sign", env.data_dir, DOMAIN,
              env.write("nofrom.eml", b"To: x@y.test\r\n\r\nbody\r\n"),
              check=False)
    assert r.returncode == 1 and b"From" in r.stderr
    r = probe("sign", env.data_dir, DOMAIN,
              env.write("bare.eml", b"From: a@example.test\nTo: b\n\nx\n"),
              check=False)
    assert r.returncode == 1 and b"bare CR or LF" in r.stderr


# ------------------------------------------------------------ ARC

def test_arc_first_hop_cv_none_verifies_with_dkimpy(env):
    signed = env.sign(message(subject="ARC one"))
    out, cv = env.seal(signed, "spf=pass smtp.mailfrom=example.test; "
                       "dkim=pass header.d=example.test")
    assert cv == "cv=none"
    head = out.split(b"\r\n\r\n", 1)[0].decode()
    names = [ln.split(":", 1)[0] for ln in head.split("\r\n")
             if ln and ln[0] not in " \t"]
    assert names[:5] == ["ARC-Seal", "ARC-Message-Signature",
                         "ARC-Authentication-Results", "DKIM-Signature",
                         "DKIM-Signature"]
    aar = header_fields(out, "ARC-Authentication-Results")[0]
    assert aar.startswith("i=1; petrel.test;") and "spf=pass" in aar
    ams = tags(header_fields(out, "ARC-Message-Signature")[0])
    assert "v" not in ams and ams["i"] == "1"
    assert ams["h"].lower().count("dkim-signature") == 2
    seal = tags(header_fields(out, "ARC-Seal")[0])
    assert seal["cv"] == "none" and seal["i"] == "1" and "h" not in seal
    cv, results, why = dkim.arc_verify(out, dnsfunc=env.dnsfunc)
    assert cv == dkim.CV_Pass, why
    assert verify_each(env, out) == [True, True]
    assert env.validate(out) == "cv=pass n=1"


def test_arc_second_hop_continues_chain_with_cv_pass(env):
    incoming = env.hop_seal(message(subject="ARC two"))
    cv, _, why = dkim.arc_verify(incoming, dnsfunc=env.dnsfunc)
    assert cv == dkim.CV_Pass, "dkimpy's own i=1 set: " + str(why)
    assert env.validate(incoming) == "cv=pass n=1"
    out, cvline = env.relay(incoming)
    assert cvline == "cv=pass"
    seals = [tags(s) for s in header_fields(out, "ARC-Seal")]
    assert sorted((s["i"], s["cv"]) for s in seals) == [("1", "none"),
                                                       ("2", "pass")]
    assert seals[0]["i"] == "2"          # ours on top
    aar = header_fields(out, "ARC-Authentication-Results")[0]
    assert aar.startswith("i=2; petrel.test;")
    # this hop's results: the hop1 DKIM signature verified, SPF of
    # 127.0.0.1 for example.test (a:petrel.test) passes, DMARC aligned
    assert "spf=pass smtp.mailfrom=bounce@example.test" in aar
    assert "dkim=pass header.d=hop1.test header.s=s1" in aar
    assert "dmarc=pass header.from=example.test" in aar
    cv, results, why = dkim.arc_verify(out, dnsfunc=env.dnsfunc)
    assert cv == dkim.CV_Pass, why
    assert len(results) == 2
    assert env.validate(out) == "cv=pass n=2"
    assert verify_each(env, out) == [True, True, True]


def test_arc_broken_incoming_chain_gives_cv_fail(env):
    incoming = env.hop_seal(message(subject="ARC broken"))
    broken = incoming.replace(b"This  is", b"Thus  is")
    assert env.validate(broken).startswith("cv=fail n=1")
    out, cvline = env.relay(broken)
    assert cvline == "cv=fail"
    seal = tags(header_fields(out, "ARC-Seal")[0])
    assert seal["i"] == "2" and seal["cv"] == "fail"
    # dkimpy: a seal reporting cv=fail ends the chain (result None)
    cv, _, why = dkim.arc_verify(out, dnsfunc=env.dnsfunc)
    assert cv is None and "reported failure" in why, (cv, why)
    # a seal with a wrong cv= (i=1 claiming pass) also fails validation
    forged = incoming.replace(b"cv=none", b"cv=pass", 1)
    assert env.validate(forged).startswith("cv=fail")
    # the next hop does not seal a chain whose newest seal says cv=fail
    # (RFC 8617 5.1.1): still signed, no i=3
    again, line = env.relay(out)
    seals = [tags(s) for s in header_fields(again, "ARC-Seal")]
    assert sorted(s["i"] for s in seals) == ["1", "2"], (seals, line)
    assert "already failed" in line, line
    assert len(header_fields(again, "DKIM-Signature")) == \
        len(header_fields(out, "DKIM-Signature")) + 2


# ------------------------------------------------------------ authres

def test_authres_results(env):
    msg = env.sign(message(subject="authres"))
    p = env.write("ar.eml", msg)
    out = probe("authres", env.resolver, CLIENT_IP, "petrel.test",
                MAIL_FROM, p).stdout.decode().strip()
    assert out.startswith("spf=pass smtp.mailfrom=bounce@example.test; ")
    assert out.count("dkim=pass header.d=example.test") == 2
    assert out.endswith("dmarc=pass header.from=example.test")
    # another IP: SPF fails (-all), DKIM still passes, so DMARC passes
    out = probe("authres", env.resolver, "192.0.2.77", "petrel.test",
                MAIL_FROM, p).stdout.decode().strip()
    assert out.startswith("spf=fail ")
    assert out.endswith("dmarc=pass header.from=example.test")
    # unsigned, wrong IP: DMARC fails
    p = env.write("ar2.eml", message(subject="unsigned"))
    out = probe("authres", env.resolver, "192.0.2.77", "petrel.test",
                MAIL_FROM, p).stdout.decode().strip()
    assert "dkim=none" in out and out.endswith(
        "dmarc=fail header.from=example.test")
    # unknown domain: spf none
    p = env.write("ar3.eml", message(subject="x", frm="x@nowhere.test"))
    out = probe("authres", env.resolver, CLIENT_IP, "h.nowhere.test",
                "a@nowhere.test", p).stdout.decode().strip()
    assert out.startswith("spf=none ")
    assert "dmarc=none" in out


# ------------------------------------------------------------ mailauth

MAILAUTH_SCRIPT = r"""
const { authenticate } = require('mailauth');
const dns = require('dns');
const fs = require('fs');
const [file, server, ip, helo, sender] = process.argv.slice(2);
const r = new dns.promises.Resolver();
r.setServers([server]);
const resolver = (name, rr) => r.resolve(name, rr);
(async () => {
  const res = await authenticate(fs.readFileSync(file), {
    ip, helo, sender, mta: 'receiver.test', resolver });
  const dkim = res.dkim.results.map(x => ({
    d: x.signingDomain, s: x.selector, a: x.algo,
    result: x.status.result, comment: x.status.comment }));
  console.log(JSON.stringify({
    dkim, spf: res.spf && res.spf.status.result,
    dmarc: res.dmarc && res.dmarc.status.result,
    arc: res.arc && res.arc.status.result,
    arc_i: res.arc && res.arc.i,
    arc_comment: res.arc && res.arc.status.comment }));
})().catch(e => { console.error(e); process.exit(1); });
"""


@pytest.fixture(scope="module")
def mailauth():
    setup = HERE / "setup-mailauth.sh"
    r = subprocess.run(["sh", str(setup)], capture_output=True, text=True,
                       timeout=300)
    if r.returncode != 0:
        pytest.skip("cannot install npm mailauth 4.13: "
                    + (r.stderr.strip() or r.stdout.strip())[-500:])
    script = HERE / "mailauth-npm" / "node_modules" / "petrel-mailauth-check.js"
    script.write_text(MAILAUTH_SCRIPT)
    return script


def mailauth_check(script, env, msg, ip=CLIENT_IP, helo="petrel.test",
                   sender=MAIL_FROM):
    p = env.write("mailauth.eml", msg)
    r = subprocess.run(["node", str(script), str(p),
                        "127.0.0.1:%d" % env.unbound.port, ip, helo, sender],
                       capture_output=True, text=True, timeout=60,
                       cwd=str(HERE))
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_mailauth_first_hop(env, mailauth):
    out, _ = env.relay(message(subject="mailauth one"))
    res = mailauth_check(mailauth, env, out)
    mine = [d for d in res["dkim"] if d["d"] == DOMAIN]
    assert sorted(d["a"] for d in mine) == ["ed25519-sha256", "rsa-sha256"]
    assert all(d["result"] == "pass" for d in mine), res
    assert res["spf"] == "pass", res
    assert res["dmarc"] == "pass", res
    assert res["arc"] == "pass", res
    assert res["arc_i"] == 1


def test_mailauth_second_hop(env, mailauth):
    incoming = env.hop_seal(message(subject="mailauth two"))
    out, cv = env.relay(incoming)
    assert cv == "cv=pass"
    res = mailauth_check(mailauth, env, out)
    assert [d["result"] for d in res["dkim"]] == ["pass"] * 3, res
    assert res["spf"] == "pass" and res["dmarc"] == "pass", res
    assert res["arc"] == "pass", res
    assert res["arc_i"] == 2


def test_mailauth_broken_chain(env, mailauth):
    incoming = env.hop_seal(message(subject="mailauth broken"))
    broken = incoming.replace(b"This  is", b"Thus  is")
    out, cv = env.relay(broken)
    assert cv == "cv=fail"
    res = mailauth_check(mailauth, env, out)
    assert res["arc"] == "fail", res


# ------------------------------------------------------------ figure

def test_signing_throughput(env):
    """sign 2,000 4 KiB messages with RSA-2048 + Ed25519 (single thread);
    the figure is printed for the report (pytest -s shows it)"""
    r = probe("bench", env.data_dir, DOMAIN, 2000, 4096)
    line = r.stdout.decode().strip()
    print(line)
    m = re.search(r"([\d.]+) msg/s", line)
    assert m and float(m.group(1)) > 0
