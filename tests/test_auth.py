"""The API token check: the throttle and the token's user read together, and the app
database's pooled connections checked without a round trip (issue 14, POST latency)."""

import dataclasses
import urllib.parse

import psycopg
import pytest

from qrq.appdb import throttle
from qrq.appdb.db import app_db, open_app_db
from qrq.appdb.models import User
from qrq.config import load_settings
from qrq.errors import TooManyAttempts
from qrq.queue import huey
from tests.conftest import wait_until

ME = "/api/me"


def test_a_blocked_address_is_refused_even_with_a_good_token(app, alice):
    client = app.test_client()
    for _ in range(throttle.LIMIT):
        assert client.get(ME, headers={"Authorization": "Bearer qrq_guess"}).status_code == 401
    response = client.get(ME, headers=alice[1])
    assert response.status_code == 429 and int(response.headers["Retry-After"]) >= 1
    assert response.get_json()["error"]["status"] == 429
    other = app.test_client()
    other.environ_base["REMOTE_ADDR"] = "192.0.2.7"
    assert other.get(ME, headers=alice[1]).get_json()["name"] == "alice"


def behind_proxy(app, client_address, *, spoofed=None):
    """A test client whose requests come through a reverse proxy on 127.0.0.1 that
    appends *client_address* to X-Forwarded-For (after what the client sent)."""
    client = app.test_client()
    client.environ_base.update(REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR=", ".join(
        [*([spoofed] if spoofed else []), client_address]))
    return client


def test_behind_a_trusted_proxy_each_client_is_throttled_on_its_own(settings, alice):
    from qrq.web import create_app

    app = create_app({"SETTINGS": dataclasses.replace(settings, trusted_proxies=1),
                      "TESTING": True})
    guesser = behind_proxy(app, "203.0.113.5")
    for k in range(throttle.LIMIT):  # a forged first address does not escape the count
        guesser.environ_base["HTTP_X_FORWARDED_FOR"] = f"198.51.100.{k}, 203.0.113.5"
        assert guesser.get(ME, headers={"Authorization": "Bearer qrq_guess"}).status_code \
            == 401
    assert guesser.get(ME, headers=alice[1]).status_code == 429
    assert behind_proxy(app, "203.0.113.6").get(ME, headers=alice[1]).get_json()[
        "name"] == "alice"


def test_without_trusted_proxies_forwarded_headers_are_ignored_and_it_says_so(
        app, alice, caplog, monkeypatch):
    monkeypatch.setattr("qrq.web.auth._proxy_warned", False)
    guesser = behind_proxy(app, "203.0.113.5")
    with caplog.at_level("WARNING", logger="qrq.web"):
        for _ in range(throttle.LIMIT):
            guesser.get(ME, headers={"Authorization": "Bearer qrq_guess"})
    # Every client behind the proxy shares its address: the lock-out QRQ_TRUSTED_PROXIES
    # prevents, and the log names the setting once.
    assert behind_proxy(app, "203.0.113.6").get(ME, headers=alice[1]).status_code == 429
    warnings = [r.getMessage() for r in caplog.records if "QRQ_TRUSTED_PROXIES" in
                r.getMessage()]
    assert len(warnings) == 1 and "127.0.0.1" in warnings[0]


def test_a_reset_token_stops_working_at_once(client, alice):
    assert client.get(ME, headers=alice[1]).status_code == 200
    with app_db.connection_context():
        new = User.get_by_id(alice[0].id).reset_token()
    assert client.get(ME, headers=alice[1]).status_code == 401
    assert client.get(ME, headers={"Authorization": f"Bearer {new}"}).status_code == 200


def test_token_user_reads_the_user_and_the_block_in_one_go(settings, alice):
    token = alice[1]["Authorization"].split()[1]
    with app_db.connection_context():
        user = throttle.token_user("192.0.2.1", token)
        assert (user.id, user.name, user.is_admin) == (alice[0].id, "alice", False)
        assert user.created_at == alice[0].created_at
        assert throttle.token_user("192.0.2.1", "qrq_unknown") is None
        for _ in range(throttle.LIMIT):
            throttle.record_failure("192.0.2.1", now=1000.0)
        with pytest.raises(TooManyAttempts) as refused:
            throttle.token_user("192.0.2.1", token, now=1001.0)
        assert refused.value.retry_after == throttle.BLOCK - 1
        # Once the block has passed, the good token works again.
        assert throttle.token_user("192.0.2.1", token, now=1000.0 + throttle.BLOCK + 1).id \
            == alice[0].id


@pytest.fixture
def pg_app(pg_url, tmp_path, monkeypatch):
    monkeypatch.setenv("QRQ_DATABASE_URL", pg_url)
    monkeypatch.setenv("QRQ_DATA_DIR", str(tmp_path / "data"))
    settings = load_settings()
    settings.ensure_dirs()
    huey.init(settings)
    open_app_db(settings)
    from qrq.web import create_app

    yield create_app({"SETTINGS": settings, "TESTING": True})
    huey.storage.close()
    app_db.close_all()


def test_a_pooled_connection_the_server_ended_is_replaced_not_failed(pg_app, pg_url,
                                                                     pg_server):
    # Without the ping the pool skips, this is what a PostgreSQL restart leaves behind.
    with app_db.connection_context():
        _, token = User.create_with_token("bob")
    client = pg_app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get(ME, headers=headers).status_code == 200
    name = urllib.parse.parse_qs(urllib.parse.urlsplit(pg_url).query)["application_name"][0]
    with psycopg.connect(pg_server, autocommit=True) as admin:
        ended = [row[0] for row in admin.execute(
            "select pg_terminate_backend(pid) from pg_stat_activity "
            "where application_name = %s", (name,))]
        assert ended and all(ended)
        wait_until(lambda: admin.execute("select count(*) from pg_stat_activity where "
                                         "application_name = %s", (name,)).fetchone()[0] == 0,
                   message="the ended backends to exit")
    for _ in range(3):  # every connection the pool held, each lent once
        response = client.get(ME, headers=headers)
        assert response.status_code == 200, response.get_data(as_text=True)
