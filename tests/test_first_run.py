"""The first ten minutes: the root page, the dev admin, the README's commands."""

from qrq.appdb.db import app_db
from qrq.appdb.models import User
from qrq.cli import main
from qrq.demo import create_user


def test_root_points_to_the_dashboard_and_the_api_docs(client):
    page = client.get("/")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert 'href="/admin"' in html and 'href="/api/openapi.json"' in html
    links = client.get("/", headers={"Accept": "application/json"}).get_json()
    assert links["dashboard"] == "/admin" and links["api_docs"] == "/api/openapi.json"
    assert client.get(links["api_docs"]).status_code == 200


def test_the_demo_user_of_dev_is_an_admin_even_when_init_made_it_first(runner):
    assert runner.invoke(main, ["init", "--demo"]).exit_code == 0
    with app_db.connection_context():
        assert not User.get(User.name == "demo").is_admin  # qrq init --demo: a plain user
        assert create_user("demo", admin=True) is None  # what qrq dev does
        assert User.get(User.name == "demo").is_admin
        token = create_user("dev-admin", admin=True)
        assert User.from_token(token).is_admin
