"""Issue 13, item 5: the webhook. A loopback receiver that is down, then up: the delivery is
signed, retried from the outbox, arrives once with its idempotency id, and `runner show`
lists it."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg
import pytest

from runner import webhook
from tests.conftest import fake, run_one_job
from tests.test_cli import runner

SECRET = "whsec-loopback-test-secret-1234"


class Receiver:
    """A web app's webhook endpoint on 127.0.0.1: answers ``status`` and records what came."""

    def __init__(self) -> None:
        self.status = 503
        self.got: list[tuple[dict[str, str], bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.got.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(outer.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/runner?token=abc123456"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def _due_now(db_url: str) -> None:
    """Time passes: the retry's backoff is over."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE webhook_outbox SET next_attempt_at = now() WHERE delivered_at IS NULL")


def test_signature_and_its_check():
    body = b'{"id": "x"}'
    header = webhook.signature(SECRET, 1_800_000_000, body)
    assert header.startswith("t=1800000000,v1=")
    assert webhook.verify(SECRET, header, body, now=1_800_000_100)
    assert not webhook.verify(SECRET, header, body + b" ", now=1_800_000_100)  # tampered
    assert not webhook.verify("other-secret", header, body, now=1_800_000_100)
    assert not webhook.verify(SECRET, header, body, now=1_800_000_000 + 3600)  # a replay
    assert [webhook.retry_seconds(n) for n in (1, 2, 3, 20)] == [10, 20, 40, 3600]


def test_a_delivery_survives_the_app_being_down_and_arrives_once(receiver, queue, runner_env,
                                                                   git_repo, db_url):
    env = {**runner_env, "RUNNER_WEBHOOK_URL": receiver.url, "RUNNER_WEBHOOK_SECRET": SECRET}
    job = queue.enqueue(prompt="work", repo_url=git_repo, config=fake(stdout=["all done"]))
    proc = run_one_job(env)  # the job succeeds; the app answers 503
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert queue.get(job["id"])["status"] == "succeeded"
    assert len(receiver.got) == 1
    [first] = queue.webhook_deliveries(job["id"])
    assert first["delivered_at"] is None and first["attempts"] == 1
    assert first["last_status"] == 503 and first["last_error"].startswith("HTTP 503")
    assert "abc123456" not in proc.stdout  # the URL's token is not logged

    receiver.status = 200
    proc = run_one_job(env)  # an empty queue, but the retry is not due yet: nothing sent
    assert len(receiver.got) == 1
    _due_now(db_url)
    proc = run_one_job(env)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert len(receiver.got) == 2
    proc = run_one_job(env)  # delivered: never again
    assert len(receiver.got) == 2

    headers, body = receiver.got[-1]
    assert webhook.verify(SECRET, headers["x-runner-signature"], body)
    sent = json.loads(body)
    assert headers["x-runner-delivery"] == sent["id"] == str(first["id"])  # idempotency id
    assert receiver.got[0][0]["x-runner-delivery"] == sent["id"]  # the same on every retry
    assert headers["x-runner-event"] == sent["event"] == "job.succeeded"
    assert sent["job"]["id"] == str(job["id"]) and sent["job"]["status"] == "succeeded"
    assert sent["job"]["error"] is None and headers["x-runner-attempt"] == "2"
    [done] = queue.webhook_deliveries(job["id"])
    assert done["delivered_at"] is not None and done["last_status"] == 200

    shown = runner(env, "show", str(job["id"]))
    assert "webhook deliveries:" in shown.stdout and "job.succeeded" in shown.stdout


def test_a_question_and_a_failure_are_told_with_their_text(receiver, queue, runner_env, git_repo):
    receiver.status = 204
    env = {**runner_env, "RUNNER_WEBHOOK_URL": receiver.url, "RUNNER_WEBHOOK_SECRET": SECRET}
    asked = queue.enqueue(prompt="a", repo_url=git_repo,
                          config=fake(blocked="Which database should I use?\n- [ ] A\n- [ ] B\n"))
    run_one_job(env)
    bad = queue.enqueue(prompt="b", repo_url=git_repo, config={**fake(), "max_tokens": "lots"})
    run_one_job(env)
    sent = {json.loads(b)["job"]["id"]: json.loads(b) for _, b in receiver.got}
    question = sent[str(asked["id"])]
    assert question["event"] == "job.blocked"
    assert question["job"]["question"] == "Which database should I use?"
    assert question["job"]["options"] == ["A", "B"]
    failure = sent[str(bad["id"])]
    assert failure["event"] == "job.failed"
    assert failure["job"]["error"].startswith("config.max_tokens must be a whole number")


def test_a_webhook_without_a_secret_is_a_bad_setting(runner_env):
    proc = run_one_job(runner_env, RUNNER_WEBHOOK_URL="https://app.example/hook")
    assert proc.returncode == 1
    assert "RUNNER_WEBHOOK_SECRET: required when RUNNER_WEBHOOK_URL is set" in proc.stderr


def test_metrics_count_what_is_not_delivered_yet(receiver, queue, runner_env, git_repo, tmp_path,
                                                 db_url):
    from runner.metrics import render
    from runner.settings import load_settings

    env = {**runner_env, "RUNNER_WEBHOOK_URL": receiver.url, "RUNNER_WEBHOOK_SECRET": SECRET}
    queue.enqueue(prompt="work", repo_url=git_repo, config=fake())
    run_one_job(env)  # the app answers 503: one delivery waits
    settings = load_settings(database_url=db_url, state_dir=tmp_path / "state",
                             webhook_url=receiver.url, webhook_secret=SECRET)
    text = render(settings)
    assert "runner_webhook_pending 1\n" in text
    assert "runner_webhook_oldest_pending_seconds " in text
