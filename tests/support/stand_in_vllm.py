"""A stand-in for vLLM's OpenAI-compatible server, for job-level tests that need its process shape, not its model:
started through a fake interpreter exactly as cotune starts vLLM, in a session of its own, with a worker process
that leaves the group (as a real engine's can); it serves /health, /v1/models, completions, the runtime LoRA
routes and the weight-reload routes (server.adapter_serving = merged). `install(folder)` writes it and returns
the fake interpreter for `server.vllm_python`; the server writes its pid and its worker's to $STAND_IN_PIDS."""

import sys
from pathlib import Path

SERVER = '''
import json, os, subprocess, sys
from http.server import BaseHTTPRequestHandler, HTTPServer

worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
with open(os.environ["STAND_IN_PIDS"], "w") as f:
    f.write(f"{os.getpid()} {worker.pid}")
adapters = set()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, body, status=200):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/health":
            return self.reply({})
        models = [{"id": "base", "parent": None, "max_model_len": 256}]
        self.reply({"data": models + [{"id": a, "parent": "base", "max_model_len": 256} for a in sorted(adapters)]})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path == "/v1/load_lora_adapter":
            adapters.add(body["lora_name"])
            return self.reply({"message": "loaded"})
        if self.path == "/v1/unload_lora_adapter":
            adapters.discard(body["lora_name"])
            return self.reply({"message": "unloaded"})
        if self.path == "/collective_rpc":  # server.adapter_serving = merged: the weight reload
            return self.reply({"results": [None]})
        if self.path.startswith("/reset_prefix_cache"):
            return self.reply({"success": True})
        prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
        count = len(prompts) * body.get("n", 1)
        choices = [{"index": i, "text": f" a film sample {i}"} for i in range(count)]
        self.reply({"choices": choices, "usage": {"completion_tokens": 3 * count}})


HTTPServer(("127.0.0.1", int(sys.argv[sys.argv.index("--port") + 1])), Handler).serve_forever()
'''


def install(folder: Path) -> Path:
    """The fake interpreter (a shell script running the stand-in with this Python) for server.vllm_python."""
    script, python = folder / "stand_in_vllm.py", folder / "python"
    script.write_text(SERVER)
    python.write_text(f'#!/bin/sh\nexec {sys.executable} {script} "$@"\n')
    python.chmod(0o755)
    return python
