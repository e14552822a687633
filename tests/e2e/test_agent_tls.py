"""HTTPS on the server's listener (`--tls-cert/--tls-key`), agents over HTTPS (`--server-ca`),
and join tokens bound to a node (`TOKEN node=NODE-ID`).

The CA and the server's certificate are made here with openssl. The control-plane tests run
anywhere; the agent's needs root and a network namespace with no route out (hosts on a
bridge, as in test_agent.py)."""

import os
import ssl
import subprocess
import urllib.request

import pytest

import images as img
from conftest import BIN, Estiba, isolated, unique, wait_until
from hosts import Host, agent_api, connected, nodes, private_ip, underlay, wait_task

BRIDGE = "br-tls"
SERVER_IP = "10.78.0.1"
TOKEN = "tls-join-token"
BOUND = "tls-bound-token"
NET = {"awsvpcConfiguration": {"subnets": ["subnet-12345678"]}}


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA, and a server certificate it signed for 127.0.0.1, SERVER_IP and localhost; plus
    a client context trusting the CA, installed for urllib (the harness' health checks and
    registry pushes) while the module runs."""
    d = tmp_path_factory.mktemp("pki")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=estiba test CA", cwd=d)
    openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=estiba server", cwd=d)
    (d / "ext.cnf").write_text(f"subjectAltName=IP:127.0.0.1,IP:{SERVER_IP},DNS:localhost\n"
                               "extendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf", cwd=d)
    ctx = ssl.create_default_context(cafile=str(d / "ca.pem"))
    urllib.request.install_opener(urllib.request.build_opener(urllib.request.HTTPSHandler(context=ctx)))
    yield {"ca": str(d / "ca.pem"), "cert": str(d / "server.pem"), "key": str(d / "server.key"),
           "ca_key": str(d / "ca.key"), "dir": str(d), "ctx": ctx}
    urllib.request.install_opener(None)


class TlsEstiba(Estiba):
    """A server on HTTPS: clients trust the test CA."""

    def __init__(self, data_dir, pki, extra_args=(), host="127.0.0.1", **kw):
        super().__init__(data_dir, ["--tls-cert", pki["cert"], "--tls-key", pki["key"], *extra_args], host=host, **kw)
        self.endpoint = f"https://{host}:{self.port}"
        self.ca = pki["ca"]

    def client(self, service="ecs", region="us-east-1", access_key="test"):
        import boto3
        import botocore.config
        return boto3.client(service, endpoint_url=self.endpoint, region_name=region, aws_access_key_id=access_key,
                            aws_secret_access_key="test", verify=self.ca,
                            config=botocore.config.Config(retries={"max_attempts": 1}))

    def aws(self, *args, ca_bundle=True, **kw):
        return super().aws(*(("--ca-bundle", self.ca) if ca_bundle else ()), *args, **kw)


def write_tokens(path):
    with open(path, "w") as f:
        f.write(f"# agents of the tests\n{TOKEN}\n{BOUND} node=tls-a\n")


@pytest.fixture(scope="module")
def local_server(pki, tmp_path_factory):
    """An HTTPS server on loopback that runs nothing."""
    d = str(tmp_path_factory.mktemp("tls-server"))
    tokens = os.path.join(d, "join-tokens")
    write_tokens(tokens)
    e = TlsEstiba(d, pki, ["--join-tokens", tokens]).start()
    yield e
    e.stop()


def test_the_aws_cli_and_boto3_speak_https_with_the_ca(local_server):
    name = unique("tls")
    out = local_server.aws("ecs", "create-cluster", "--cluster-name", name)
    assert out["cluster"]["clusterName"] == name
    assert local_server.client().describe_clusters(clusters=[name])["clusters"][0]["status"] == "ACTIVE"
    # Without the CA the CLI refuses the certificate.
    p = local_server.aws("ecs", "list-clusters", ca_bundle=False, check=False)
    assert p.returncode != 0 and "certificate" in p.stderr.lower(), p.stderr
    # Plain HTTP on the HTTPS port gets no answer.
    with pytest.raises(Exception):
        urllib.request.urlopen(f"http://127.0.0.1:{local_server.port}/health", timeout=5).read()
    # ALPN: the listener offers HTTP/1.1.
    import socket
    ctx = ssl.create_default_context(cafile=local_server.ca)
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    with socket.create_connection(("127.0.0.1", local_server.port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            assert s.selected_alpn_protocol() == "http/1.1"


def test_estiba_exec_trusts_aws_ca_bundle(local_server):
    """`estiba exec` over HTTPS trusts the bundle AWS_CA_BUNDLE names, as the AWS CLI does (its
    data channel is then wss:// with the same trust); without it the certificate is refused."""
    def call(bundle):
        env = dict(os.environ, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test")
        env.pop("AWS_CA_BUNDLE", None)
        if bundle:
            env["AWS_CA_BUNDLE"] = local_server.ca
        return subprocess.run([BIN, "exec", "--endpoint-url", local_server.endpoint, "nope", "0" * 32, "--", "sh"],
                              capture_output=True, timeout=30, env=env)
    p = call(True)
    assert p.returncode == 254 and b"(ClusterNotFoundException)" in p.stderr, p.stderr
    p = call(False)
    assert p.returncode != 0 and b"ClusterNotFoundException" not in p.stderr, p.stderr
    assert b"certificate" in p.stderr.lower() or b"ssl" in p.stderr.lower() or b"tls" in p.stderr.lower(), p.stderr


def test_bad_certificate_files_stop_the_server_with_a_clear_error(pki, tmp_path):
    def start(cert, key):
        p = subprocess.run([BIN, "server", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path), "--local-node", "off",
                            "--tls-cert", cert, "--tls-key", key], capture_output=True, text=True, timeout=30)
        assert p.returncode != 0
        return p.stderr
    missing = str(tmp_path / "nope.pem")
    err = start(missing, pki["key"])
    assert "nope.pem" in err and "No such file" in err, err
    err = start(pki["key"], pki["key"])
    assert "no PEM certificate" in err, err
    # The CA's key is not the certificate's.
    err = start(pki["cert"], pki["ca_key"])
    assert "do not make a server identity" in err, err
    p = subprocess.run([BIN, "server", "--tls-cert", pki["cert"]], capture_output=True, text=True, timeout=30)
    assert p.returncode != 0 and "--tls-key" in p.stderr, p.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="estiba agent runs as root")
def test_an_agent_with_an_unreadable_ca_file_stops_saying_why(tmp_path):
    p = subprocess.run([BIN, "agent", "--server", "https://127.0.0.1:1", "--join-token", "t", "--fargate",
                        "--server-ca", str(tmp_path / "no-ca.pem"), "--data-dir", str(tmp_path)],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode != 0 and "no-ca.pem" in p.stderr and "No such file" in p.stderr, p.stderr


def test_a_bound_token_acts_only_as_its_node(local_server):
    # The token bound to tls-a: as tls-a it passes (the body is then refused, nothing written)...
    assert agent_api(local_server, "PUT", "nodes/tls-a", BOUND, b"not json")[0] == 400
    # ...as any other node it gets 403, saying why.
    status, body = agent_api(local_server, "PUT", "nodes/tls-b", BOUND, b"{}")
    assert status == 403 and b"only as node tls-a" in body and b"tls-b" in body, body
    for path in ["nodes/tls-b/tasks", "nodes/tls-b/telemetry", "nodes/tls-b/logs/append", "nodes/tls-b/blocks"]:
        assert agent_api(local_server, "POST", path, BOUND, b"{}")[0] == 403, path
    assert agent_api(local_server, "GET", "nodes/tls-b/assignments", BOUND)[0] == 403
    # A token without a node acts as any node; an unknown one is still 401.
    assert agent_api(local_server, "PUT", "nodes/tls-b", TOKEN, b"not json")[0] == 400
    assert agent_api(local_server, "PUT", "nodes/tls-a", "nope", b"{}")[0] == 401
    nodes_now = {n["id"] for n in nodes(local_server)}
    assert "tls-b" not in nodes_now and "tls-a" not in nodes_now, nodes_now


@pytest.fixture(scope="module")
def bridge():
    with underlay(BRIDGE, f"{SERVER_IP}/24") as b:
        yield b


@pytest.fixture(scope="module")
def bridge_server(pki, bridge, tmp_path_factory):
    d = str(tmp_path_factory.mktemp("tls-bridge-server"))
    tokens = os.path.join(d, "join-tokens")
    write_tokens(tokens)
    e = TlsEstiba(d, pki, ["--join-tokens", tokens, "--node-lease", "10s"], host=SERVER_IP)
    e.extra_args += ["--registry-host", f"{SERVER_IP}:{e.port}"]
    e.start()
    e.client().create_cluster()
    yield e
    e.drain()
    e.stop()


@pytest.mark.skipif(os.geteuid() != 0, reason="running containers needs root")
@pytest.mark.skipif(not isolated(), reason="container tests run inside a network namespace with no route out (use cargo xtask test)")
def test_an_agent_over_https_runs_a_fargate_task_and_one_without_the_ca_cannot_join(pki, bridge_server, tmp_path_factory):
    server = bridge_server
    server.client("ecr").create_repository(repositoryName="busybox")
    busybox = img.busybox_image(img.Registry(server.endpoint), "busybox", "latest")
    assert busybox.startswith(f"{SERVER_IP}:{server.port}/")
    good = Host("tls-a", "10.78.0.11", str(tmp_path_factory.mktemp("tls-a")), BRIDGE)
    bad = Host("tls-c", "10.78.0.13", str(tmp_path_factory.mktemp("tls-c")), BRIDGE)
    try:
        # The bound token, as its own node.
        good.start_agent(server, "--fargate", "--server-ca", pki["ca"], token=BOUND)
        try:
            node = connected(server, good, timeout=30)
        except AssertionError as e:
            raise AssertionError(f"{e}\n--- agent:\n{good.log()}\n--- server:\n{server.log()}")
        assert node["fargate"] and node["remote"] and node["address"] == good.ip, node
        ecs = server.client()
        fam = unique("tls-web")
        ecs.register_task_definition(
            family=fam, networkMode="awsvpc", requiresCompatibilities=["FARGATE"], cpu="256", memory="512",
            containerDefinitions=[{"name": "web", "image": busybox, "essential": True,
                                   "command": ["sh", "-c", "echo tls-ok > /tmp/i && exec httpd -f -p 80 -h /tmp"]}])
        arn = ecs.run_task(taskDefinition=fam, launchType="FARGATE", networkConfiguration=NET)["tasks"][0]["taskArn"]
        try:
            t = wait_task(ecs, arn, "RUNNING", timeout=90)
        except AssertionError as e:
            raise AssertionError(f"{e}\n--- agent:\n{good.log()}\n--- server:\n{server.log()}")
        assert private_ip(t), t
        out = good.run("python3", "-c", "import sys,urllib.request;print(urllib.request.urlopen(sys.argv[1],timeout=2).read().decode())",
                       f"http://{private_ip(t)}/i")
        assert out.stdout.strip() == "tls-ok", out

        # Without --server-ca the agent trusts only the system's roots: it never joins, and
        # its log says the certificate is why.
        bad.start_agent(server, "--fargate", token=TOKEN)
        wait_until(lambda: "certificate" in bad.log().lower(), timeout=20, what="the agent's certificate error")
        assert "tls-c" not in nodes(server), bad.log()
        ecs.stop_task(task=arn, reason="done")
        wait_task(ecs, arn, "STOPPED", timeout=60)
    finally:
        server.drain()
        bad.close()
        good.close()
