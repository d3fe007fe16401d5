"""`evorank llm-server`, as far as it can be checked without a model: the server's command line, one clear line
for what is missing (the model file, llama.cpp's server), and the whole path (URL printed, "ready" once the server
answers, Ctrl-C stops both) with a stand-in for llama.cpp's server."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from evorank.evolve.cli.main import main

FAKE_SERVER = textwrap.dedent('''
    import http.server, json, sys
    args = sys.argv[1:]
    port, alias = int(args[args.index("--port") + 1]), args[args.index("--model_alias") + 1]

    class Models(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({"data": [{"id": alias}]}).encode()
            self.send_response(200 if self.path == "/v1/models" else 404)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    try:
        http.server.HTTPServer(("127.0.0.1", port), Models).serve_forever()
    except KeyboardInterrupt:
        pass
''')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fake_python(tmp_path: Path, installed: bool) -> Path:
    """A stand-in for the Python that runs llama.cpp's server: it imports llama_cpp.server (or fails to), and
    `-m llama_cpp.server ARGS` serves /v1/models with FAKE_SERVER."""
    (tmp_path / "fake_server.py").write_text(FAKE_SERVER)
    exe = tmp_path / "python"
    exe.write_text(f'#!/bin/sh\nif [ "$1" = -c ]; then exit {0 if installed else 1}; fi\nshift 2\n'
                   f'exec {sys.executable} {tmp_path / "fake_server.py"} "$@"\n')
    exe.chmod(0o755)
    return exe


def test_the_server_command_line(tmp_path, capsys):
    from evorank.evolve.cli.llm_server import base_url, server_command

    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    cmd = server_command(model, python="py", port=8100, ctx=8192, batch_threads=2)
    assert cmd == ["py", "-m", "llama_cpp.server", "--model", str(model), "--model_alias", "local", "--host",
                   "127.0.0.1", "--port", "8100", "--n_ctx", "8192", "--n_threads", "1", "--n_threads_batch", "2",
                   "--n_batch", "512"]
    assert base_url("127.0.0.1", 8100) == "http://127.0.0.1:8100/v1" and base_url("::1", 1) == "http://[::1]:1/v1"
    assert main(["llm-server", "--model", str(model), "--port", "8100", "--print-command"]) == 0
    printed = capsys.readouterr().out
    assert f"-m llama_cpp.server --model {model} --model_alias local --host 127.0.0.1 --port 8100" in printed


def test_what_is_missing_is_one_line(tmp_path, capsys):
    assert main(["llm-server", "--model", str(tmp_path / "none.gguf")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no model file" in err[0] and "none.gguf" in err[0]
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    python = fake_python(tmp_path, installed=False)
    assert main(["llm-server", "--model", str(model), "--python", str(python), "--port", str(free_port())]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'llama-cpp-python[server]'" in err[0] and str(python) in err[0]


def test_serves_says_ready_and_stops_on_ctrl_c(tmp_path):
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "evorank", "llm-server", "--model", str(model), "--python",
                             str(fake_python(tmp_path, installed=True)), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    url = f"http://127.0.0.1:{port}/v1"
    lines = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("ready:"):
            break
    try:
        assert lines and lines[-1].strip() == f"ready: {url}", "".join(lines) + proc.stderr.read()
        assert f"evorank run --llm local --base-url {url}" in "".join(lines)
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the terminal's whole foreground group
        proc.wait(timeout=60)
    assert proc.returncode == 130
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
