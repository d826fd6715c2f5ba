"""The schema: Alembic owns it, it walks up and down, and it matches runner/schema.py."""

import psycopg
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from runner.migrate import downgrade, upgrade
from runner.schema import metadata


def _tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
    return {r[0] for r in rows}


def test_upgrade_downgrade_upgrade(empty_db_url):
    upgrade(empty_db_url)
    assert {"jobs", "workers", "job_events"} <= _tables(empty_db_url)
    upgrade(empty_db_url)  # applying twice is harmless
    downgrade(empty_db_url)
    assert _tables(empty_db_url) <= {"alembic_version"}
    upgrade(empty_db_url)
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO jobs (prompt) VALUES ('after the round trip')")
        assert conn.execute("SELECT count(*) FROM job_events WHERE event = 'enqueued'").fetchone()[0] == 1


def test_migrated_schema_matches_the_core_tables(db_url):
    engine = create_engine("postgresql+psycopg://", creator=lambda: psycopg.connect(db_url))
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    engine.dispose()
    assert diff == []


def test_claim_uses_the_partial_index_with_a_deep_queue(db_url):
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO jobs (prompt, priority) SELECT 'p', (g % 5) FROM generate_series(1, 20000) g")
        conn.execute("ANALYZE jobs")
        plan = "\n".join(r[0] for r in conn.execute(
            "EXPLAIN SELECT id FROM jobs WHERE status = 'queued' AND run_after <= now() "
            "AND queue = ANY(ARRAY['default']) ORDER BY priority DESC, created_at, id "
            "LIMIT 1 FOR UPDATE SKIP LOCKED").fetchall())
    assert "jobs_queued_claim_order" in plan
    assert "Sort" not in plan


def test_insert_and_status_change_notify_the_channel(db_url):
    with psycopg.connect(db_url, autocommit=True) as listener, \
            psycopg.connect(db_url, autocommit=True) as writer:
        listener.execute("LISTEN runner_jobs")
        job_id = writer.execute("INSERT INTO jobs (prompt, queue) VALUES ('x', 'q1') RETURNING id").fetchone()[0]
        writer.execute("UPDATE jobs SET priority = 5 WHERE id = %s", (job_id,))  # not a status change
        writer.execute("UPDATE jobs SET status = 'cancelled' WHERE id = %s", (job_id,))
        payloads = [n.payload for n in listener.notifies(timeout=1, stop_after=3)]
    import json
    seen = [json.loads(p) for p in payloads]
    assert seen == [{"id": str(job_id), "queue": "q1", "status": "queued", "event": "enqueued"},
                    {"id": str(job_id), "queue": "q1", "status": "cancelled", "event": "status"}]


def test_a_cancel_request_and_a_claim_change_are_announced_without_a_status_change(db_url):
    """The web app's own UPDATE of cancel_requested reaches the worker running the job
    (and a dashboard) at once; so does a claim another worker took over."""
    import json
    with psycopg.connect(db_url, autocommit=True) as listener, \
            psycopg.connect(db_url, autocommit=True) as writer:
        job_id = writer.execute("INSERT INTO jobs (prompt, status, claim_token) "
                                "VALUES ('x', 'running', gen_random_uuid()) RETURNING id").fetchone()[0]
        listener.execute("LISTEN runner_jobs")
        writer.execute("UPDATE jobs SET cancel_requested = true WHERE id = %s", (job_id,))
        writer.execute("UPDATE jobs SET cancel_requested = true WHERE id = %s", (job_id,))  # no change
        writer.execute("UPDATE jobs SET claim_token = gen_random_uuid() WHERE id = %s", (job_id,))
        seen = [json.loads(n.payload) for n in listener.notifies(timeout=1, stop_after=3)]
    assert [(s["id"], s["status"], s["event"]) for s in seen] == [
        (str(job_id), "running", "cancel_requested"), (str(job_id), "running", "claim")]
