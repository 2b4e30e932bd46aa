"""`mtnews serve` as a user runs it: a real subprocess on a free loopback port, and one-line errors."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx

from mtnews.cli import main


def test_serve_subprocess_answers_and_stops_on_ctrl_c(served_run, small_synth):
    cmd = [sys.executable, "-m", "mtnews", "serve", "--run", str(served_run), "--data", str(small_synth),
           "--port", "0", "--log-level", "warning", "--device", "cpu"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ.copy())
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()
    try:
        url, seen, deadline = None, [], time.monotonic() + 60
        while url is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                continue
            seen.append(line)
            if m := re.search(r"serving on (http://127\.0\.0\.1:\d+)/", line):
                url = m.group(1)
        assert url, "the server did not report its address:\n" + "".join(seen)
        assert any("articles encoded" in x for x in seen)
        with httpx.Client(base_url=url, timeout=30) as c:
            deadline = time.monotonic() + 20
            while True:  # the address is printed just before uvicorn starts accepting
                try:
                    health = c.get("/healthz")
                    break
                except httpx.ConnectError:
                    assert time.monotonic() < deadline, "the server never accepted a connection"
                    time.sleep(0.1)
            assert health.json()["status"] == "ok"
            user = c.get("/v1/users", params={"limit": 1}).json()["users"][0]
            assert c.post(f"/v1/users/{user}/recommend", json={"top_k": 3}).status_code == 200
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_not_a_run_directory_is_one_line_exit_2(tmp_path, small_synth, capsys):
    assert main(["serve", "--run", str(tmp_path), "--data", str(small_synth), "--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mtnews: error: ") and "not a run directory" in err and "\n" not in err


def test_missing_split_and_bad_limits_are_user_errors(served_run, small_synth, capsys):
    assert main(["serve", "--run", str(served_run), "--data", str(small_synth / "nope"), "--port", "0"]) == 2
    assert "dataset folder not found" in capsys.readouterr().err
    assert main(["serve", "--run", str(served_run), "--data", str(small_synth), "--max-list", "0"]) == 2
    assert "--max-list must be >= 1" in capsys.readouterr().err


def test_port_in_use_is_a_user_error(served_run, small_synth, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", "--run", str(served_run), "--data", str(small_synth), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port}" in err
