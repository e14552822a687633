"""The web console on a server that verifies requests (`--credentials`): it asks for an access
key, checks it with STS GetCallerIdentity, signs every call with Signature Version 4 in the
browser, and acts in the key's account only. Each result is checked again through boto3 with
the same keys. The browser's SHA-256 and HMAC (written by hand, see console/js/sigv4.js) are
checked against Python's hashlib.
"""

import hashlib
import hmac

import pytest
from playwright.sync_api import expect

from conftest import unique
from test_auth import A, B, client, srv  # noqa: F401 (the server with a credentials file)
from test_console import Console, browser, pytestmark  # noqa: F401 (fixtures, skip mark)


@pytest.fixture
def console(browser, srv):  # noqa: F811
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    c = Console(context.new_page(), srv.endpoint)
    yield c
    context.close()
    assert c.errors == []


def sign_in(console, key_id, secret):
    console.field("Access key ID").fill(key_id)
    console.field("Secret access key").fill(secret)
    console.button("Sign in").click()


def test_the_browsers_sha256_and_hmac_match_hashlib(console):
    console.p.goto(f"{console.endpoint}/")
    console.at("sign-in")
    cases = ["", "abc", "a" * 55, "a" * 56, "a" * 63, "a" * 64, "a" * 65, "é€😀" * 50, "x" * 5000]
    got = console.p.evaluate(
        """async (cases) => {
            const m = await import("/_estiba/console/js/sigv4.js");
            return cases.map((s, i) => [m.hex(m.sha256(s)), m.hex(m.hmac("k".repeat(i * 20), s))]);
        }""",
        cases,
    )
    want = [
        [hashlib.sha256(s.encode()).hexdigest(), hmac.new(("k" * (i * 20)).encode(), s.encode(), hashlib.sha256).hexdigest()]
        for i, s in enumerate(cases)
    ]
    assert got == want


def test_sign_in_act_in_the_keys_account_and_sign_out(console, srv):  # noqa: F811
    console.p.goto(f"{console.endpoint}/#/clusters")
    console.at("sign-in")
    assert not console.button("Sign out").is_visible()

    # A wrong secret is refused by the server and nothing is kept.
    sign_in(console, "AKIAALICE0000000001", "not-the-secret")
    console.wait_banner("Could not sign in", "SignatureDoesNotMatch")
    assert console.p.evaluate("() => sessionStorage.length") == 0
    assert console.p.evaluate("() => document.body.dataset.route") == "sign-in"

    sign_in(console, "AKIAALICE0000000001", "alice/secret+key")
    console.at("/clusters")
    expect(console.p.locator("#account")).to_have_text(A)

    # A cluster created from the form lands in alice's account and no other.
    name = unique("signed")
    console.link("Create cluster").click()
    console.at("/clusters/create")
    console.field("Cluster name").fill(name)
    console.submit("Create", route=f"/clusters/{name}")
    assert client(srv, "ecs", "alice").describe_clusters(clusters=[name])["clusters"][0]["status"] == "ACTIVE"
    assert client(srv, "ecs", "bob").describe_clusters(clusters=[name])["clusters"] == []

    # Signing out forgets the key; bob then sees his account only.
    console.button("Sign out").click()
    console.at("sign-in")
    assert console.p.evaluate("() => sessionStorage.length") == 0
    sign_in(console, "AKIABOB00000000001", "bob-secret")
    # Back at the page signed out of, which bob's account does not have.
    console.at(f"/clusters/{name}")
    expect(console.p.locator("#account")).to_have_text(B)
    console.wait_banner("ClusterNotFoundException")
    console.open("/clusters")
    names = [r[0] for r in console.table("Clusters")]
    assert name not in names
    client(srv, "ecs", "alice").delete_cluster(cluster=name)


def test_a_read_only_key_reads_but_its_writes_are_refused(console, srv):  # noqa: F811
    console.p.goto(f"{console.endpoint}/#/clusters/create")
    console.at("sign-in")
    sign_in(console, "AKIAREADER00000001", "reader-secret")
    console.at("/clusters/create")
    name = unique("ro")
    console.field("Cluster name").fill(name)
    console.button("Create").click()
    console.wait_banner("AccessDeniedException", "ecs:CreateCluster")
    assert client(srv, "ecs", "alice").describe_clusters(clusters=[name])["clusters"] == []


def test_a_key_removed_from_the_file_is_asked_for_again(console, srv):  # noqa: F811
    # The kept key stops working (here: a key the server never had, as after a rotation):
    # the next page load shows the refusal and the sign-in form.
    console.p.goto(f"{console.endpoint}/")
    console.at("sign-in")
    console.p.evaluate(
        """() => sessionStorage.setItem("estiba.credentials", JSON.stringify(
            {accessKeyId: "AKIAGONE0000000001", secretAccessKey: "x", account: "333333333333"}))"""
    )
    console.p.goto(f"{console.endpoint}/#/task-definitions")
    console.at("sign-in")
    console.wait_banner("Sign in again", "UnrecognizedClientException")
    assert console.p.evaluate("() => sessionStorage.length") == 0
