"""The follower of the agent's output files: bounded lines, any bytes, nothing lost."""

import json

from runner.agent_output import MAX_LINE_BYTES, Follower, LineSplitter


def _split(data: bytes, cap: int = MAX_LINE_BYTES, chunk: int = 4096) -> list[str]:
    s = LineSplitter(cap)
    out = []
    for i in range(0, len(data), chunk):
        out += s.feed(data[i:i + chunk])
    return out + s.flush()


def test_lines_come_out_whole_and_in_order_across_chunk_boundaries():
    data = b"".join(f"line {i}\n".encode() for i in range(1000)) + b"last without newline"
    assert _split(data, chunk=7) == [f"line {i}" for i in range(1000)] + ["last without newline"]


def test_nul_and_invalid_utf8_never_raise_and_nul_is_dropped():
    lines = _split(b"a\x00b\n\xff\xfe\xed\xa0\x80ok\r\n")
    assert lines[0] == "ab"
    assert lines[1].endswith("ok") and "\ufffd" in lines[1]


def test_a_line_over_the_cap_keeps_head_and_tail_with_a_note():
    cap = 1000
    lines = _split(b"H" * 5000 + b"T" * 5000 + b"\nnext\n", cap=cap, chunk=333)
    assert len(lines) == 2 and lines[1] == "next"
    cut = lines[0]
    assert cut.startswith("H") and cut.endswith("T") and len(cut) < cap + 100
    kept = cut.count("H") + cut.count("T")
    assert f"[runner: {10000 - kept} bytes cut from this line]" in cut


def test_a_huge_json_result_stays_parsable_json_with_a_shorter_string():
    event = {"type": "result", "subtype": "success", "result": "é\\\"x" * 300_000,
             "session_id": "s-1", "usage": {"output_tokens": 7}}
    raw = json.dumps(event, ensure_ascii=False).encode()
    for chunk in (4096, 65536, 1 << 20):
        (line,) = _split(raw + b"\n", chunk=chunk)
        parsed = json.loads(line)
        assert parsed["session_id"] == "s-1" and parsed["usage"] == {"output_tokens": 7}
        assert "bytes cut from this line" in parsed["result"]
        assert len(line.encode()) <= MAX_LINE_BYTES + 100


def test_the_follower_reads_a_growing_file_and_drains_the_rest(tmp_path):
    path = tmp_path / "out"
    with open(path, "wb") as w:
        f = Follower(path, "stdout")
        w.write(b"one\ntw")
        w.flush()
        assert f.read() == ["one"]
        w.write(b"o\nthree")
        w.flush()
    assert list(f.drain()) == ["two", "three"]


def test_an_agent_printing_nul_bad_utf8_and_a_huge_line_ends_normally(queue, runner_env, tmp_path):
    from tests.conftest import fake, run_one_job

    job = queue.enqueue(prompt="p", config=fake(
        raw_stdout=["61006200", "fffeeda080", "7b2274797065223a2278227d"],
        big_line=3 * MAX_LINE_BYTES, stdout=["a plain line"]))
    proc = run_one_job(runner_env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    row = queue.get(job["id"])
    assert row["status"] == "succeeded", row["error"]
    log_text = (tmp_path / "logs" / "jobs" / f"{job['id']}.log").read_bytes()
    assert b"\x00" not in log_text
    assert b"bytes cut from this line" in log_text
    assert b"a plain line" in log_text and b"fake" in log_text[log_text.index(b"bytes cut"):]
    assert len(log_text) < 2 * MAX_LINE_BYTES + 100_000
