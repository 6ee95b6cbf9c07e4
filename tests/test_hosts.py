"""The separate hosts the multi-host tests run on (tests/hosts.py) really are separate:
a process on one reaches this host's servers only over its link, not this host's
loopback, does not see the paths hidden from it, and loses the link when unplugged."""

import http.server
import os
import sys
import threading

import pytest
from clusters import Cluster
from conftest import wait_until
from hosts import Network, can_make_hosts

pytestmark = pytest.mark.skipif(
    not can_make_hosts() and not os.environ.get("CI"),
    reason="network namespaces need root; the multi-host tests then use plain processes")

FETCH = ("import sys, urllib.request\n"
         "try:\n"
         "    print(urllib.request.urlopen(sys.argv[1], timeout=2).read().decode())\n"
         "except OSError as exc:\n"
         "    print('unreachable', type(exc).__name__)\n")


@pytest.fixture
def network():
    net = Network()
    yield net
    net.close()


def serve(address):
    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"hello")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer((address, 0), Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def fetch(host, url):
    return host.run([sys.executable, "-c", FETCH, url], capture_output=True, text=True,
                    timeout=30).stdout.strip()


def test_a_host_reaches_this_one_only_over_its_link(network, tmp_path):
    secret = tmp_path / "host1-data"
    secret.mkdir()
    (secret / "queue.db").write_text("not for other hosts")
    host = network.host("worker", hidden=(secret,))
    on_link = serve(host.gateway)
    on_loopback = serve("127.0.0.1")
    try:
        assert fetch(host, f"http://{host.gateway}:{on_link.server_port}/") == "hello"
        assert fetch(host, f"http://127.0.0.1:{on_loopback.server_port}/").startswith(
            "unreachable")
        listing = host.run(["ls", "-A", str(secret)], capture_output=True, text=True)
        assert listing.returncode == 0 and listing.stdout == ""
        assert (secret / "queue.db").exists()  # hidden there, not gone here

        host.disconnect()
        assert fetch(host, f"http://{host.gateway}:{on_link.server_port}/").startswith(
            "unreachable")
        host.reconnect()
        # The link comes back within moments (carrier, then neighbour discovery).
        wait_until(lambda: fetch(host, f"http://{host.gateway}:{on_link.server_port}/")
                   == "hello", timeout=30, message="the link to come back")
    finally:
        for server in (on_link, on_loopback):
            server.shutdown()
            server.server_close()


def test_postgresql_listens_on_the_hosts_links(network):
    host = network.host("worker")
    cluster = Cluster(listen=f"127.0.0.1,{host.gateway}")
    try:
        url = cluster.url.replace("127.0.0.1", host.gateway)
        probe = ("import sys, psycopg\n"
                 "print(psycopg.connect(sys.argv[1]).execute('select 42').fetchone()[0])")
        answer = host.run([sys.executable, "-c", probe, url], capture_output=True,
                          text=True, timeout=30)
        assert answer.stdout.strip() == "42", answer.stderr
    finally:
        cluster.close()
