"""``evorank llm-server``: serve a local GGUF model through llama.cpp's OpenAI-compatible server (the
``llama-cpp-python[server]`` package), so that a run can use a model without any hosted API (docs/local-llm.md).

The command checks what the server needs, one clear line each (the model file; ``llama_cpp.server`` importable by
the Python that runs it), prints the base URL and the ``evorank run`` line that uses it, runs the server in the
foreground and says when the model answers; Ctrl-C stops it. ``--print-command`` prints the server's command line
instead, for running it another way (a service, a container). The parser is built at every ``evorank`` start, so
the module imports nothing more at its top than argparse needs.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from evorank.evaluators.errors import EvorankError

DEFAULT_PORT = 8089
INSTALL = "pip install 'llama-cpp-python[server]'"
# A server built for this CPU may use Intel AMX tiles that some virtual machines advertise but do not enable: it
# then dies on its first request with SIGILL (invalid opcode) or SIGSEGV (a fault in ldtilecfg).
AMX_REBUILD = ("CMAKE_ARGS=\"-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_AVX512=ON -DGGML_FMA=ON -DGGML_F16C=ON "
               "-DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF\" pip install --force-reinstall "
               "--no-cache-dir --no-binary llama-cpp-python 'llama-cpp-python[server]'")
CRASH_SIGNALS = (4, 11)  # SIGILL, SIGSEGV


def base_url(host: str, port: int) -> str:
    """The OpenAI-compatible base URL of a server on ``host``:``port`` (``--base-url`` of ``evorank run``)."""
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/v1"


def server_command(model: Path, *, python: str = sys.executable, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
                   alias: str = "local", ctx: int = 4096, threads: int = 1, batch_threads: int | None = None
                   ) -> list[str]:
    """The command line that serves ``model`` under the name ``alias``. One generation thread by default: the
    evaluator needs the other cores, and a generation that competes with it for them slows down several-fold;
    the prompt is read with ``batch_threads`` (default: every core)."""
    return [python, "-m", "llama_cpp.server", "--model", str(model), "--model_alias", alias, "--host", host,
            "--port", str(port), "--n_ctx", str(ctx), "--n_threads", str(threads),
            "--n_threads_batch", str(batch_threads or os.cpu_count() or 1), "--n_batch", "512"]


def check_server_installed(python: str) -> None:
    """EvorankError, with the install command, unless ``python`` can import ``llama_cpp.server``."""
    import subprocess

    try:
        found = subprocess.run([python, "-c", "import llama_cpp.server"], capture_output=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise EvorankError(f"cannot run {python} to start the server ({e})") from None
    if found.returncode != 0:
        raise EvorankError(f"llama.cpp's server is not installed for {python}: {INSTALL} (it compiles llama.cpp, "
                           "several minutes), or pass --python PATH of an environment that has it; see "
                           "docs/local-llm.md")


def answers(url: str) -> bool:
    """Whether an OpenAI-compatible server at ``url`` lists its models."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url}/models", timeout=2) as reply:
            return reply.status == 200
    except (OSError, urllib.error.URLError, ValueError):
        return False


def cmd_llm_server(args) -> int:
    import shlex
    import subprocess
    import time

    model = Path(args.model).expanduser()
    if not model.is_file():
        raise EvorankError(f"no model file {model}: give the path of a GGUF model (--model PATH.gguf); see "
                           "docs/local-llm.md")
    python = args.python or sys.executable
    cmd = server_command(model, python=python, host=args.host, port=args.port, alias=args.alias, ctx=args.ctx,
                         threads=args.threads, batch_threads=args.batch_threads)
    url = base_url(args.host, args.port)
    if args.print_command:
        print(shlex.join(cmd))
        return 0
    if answers(url):
        raise EvorankError(f"a server already answers at {url}; use it, or choose another --port")
    check_server_installed(python)
    print(f"serving {model.name} as model '{args.alias}' at {url} (Ctrl-C stops it); a run uses it with\n"
          f"  evorank run --llm {args.alias} --base-url {url} --in-flight 1 --request-timeout 900", flush=True)
    proc = subprocess.Popen(cmd)
    try:
        deadline = time.monotonic() + args.startup_timeout
        while proc.poll() is None and time.monotonic() < deadline:
            if answers(url):
                print(f"ready: {url}", flush=True)
                break
            time.sleep(0.5)
        code = proc.wait()
    except KeyboardInterrupt:  # Ctrl-C reached the server too; give it the time to exit
        try:
            proc.wait(timeout=30)
        except (subprocess.TimeoutExpired, KeyboardInterrupt):
            proc.kill()
        return 130
    if code == 0:
        return 0
    if -code in CRASH_SIGNALS:
        raise EvorankError(f"the server died with signal {-code}; a llama.cpp built for a CPU whose AMX tiles this "
                           f"machine does not enable does that: rebuild it without them ({AMX_REBUILD}) and start "
                           "again (docs/local-llm.md)")
    raise EvorankError(f"the server exited with status {code}; its messages are above")


def add_llm_server_command(sub) -> None:
    """Register ``evorank llm-server`` on the ``evorank`` subparsers."""
    p = sub.add_parser(
        "llm-server", help="serve a local GGUF model (llama.cpp) as an OpenAI-compatible endpoint for `run`",
        description="Serve a GGUF model with llama.cpp's OpenAI-compatible server (install it once with "
        f"{INSTALL}), for `evorank run --llm local --base-url URL` on a machine without a hosted model. Prints the "
        "base URL and the run command, runs in the foreground, says when the model answers; Ctrl-C stops it.",
        epilog="examples:\n"
        "  evorank llm-server --model ~/models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf\n"
        "  evorank llm-server --model model.gguf --port 8090 --python ~/llm-venv/bin/python\n"
        "  evorank llm-server --model model.gguf --print-command     # the server's command line only\n"
        "\nsee docs/local-llm.md (what to expect from a small model, and a llama.cpp that crashes on its first "
        "request)\n",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, metavar="PATH.gguf", help="the model file (any GGUF model)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--alias", default="local", help="the model's name for `run --llm NAME` (default local)")
    p.add_argument("--ctx", type=int, default=4096, help="context length in tokens (default 4096)")
    p.add_argument("--threads", type=int, default=1,
                   help="generation threads (default 1, which leaves the other cores to the evaluator)")
    p.add_argument("--batch-threads", dest="batch_threads", type=int, help="prompt threads (default: every core)")
    p.add_argument("--python", metavar="PATH",
                   help="the Python that has llama-cpp-python installed (default: the one running evorank)")
    p.add_argument("--startup-timeout", dest="startup_timeout", type=float, default=600, metavar="SECONDS",
                   help="how long to wait for the model to answer before saying nothing more (default 600)")
    p.add_argument("--print-command", dest="print_command", action="store_true",
                   help="print the server's command line and exit")
    p.set_defaults(func=cmd_llm_server)
