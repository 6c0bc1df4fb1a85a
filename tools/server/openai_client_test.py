#!/usr/bin/env python3
"""End-to-end check of `anvil serve` with the official `openai` Python client (pip install openai).

Starts `anvil serve` on a free port with tests/golden/llama3_gqa plus the tiny tokenizer and chat
template of tests/server/data/chat_model (copied into a temp folder), then checks through the
client: completions with token-id prompts against the golden greedy tokens, streaming
completions, chat (whole and streamed) against HF transformers' expected text, stop strings,
n > 1, logprobs, /v1/models, and that client errors raise the SDK's typed exceptions.

  python3 tools/server/openai_client_test.py --anvil build/bin/anvil

Exits non-zero on the first failure; runs in a few seconds on the CPU backend.
"""
import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

import openai

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GOLDEN = os.path.join(ROOT, "tests", "golden", "llama3_gqa")
CHAT = os.path.join(ROOT, "tests", "server", "data", "chat_model")
API_KEY = "test-key"
MODEL = "tiny"

ARGS = None
SERVER = {}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server():
    tmp = tempfile.mkdtemp(prefix="anvil_openai_test_")
    for f in ("config.json", "generation_config.json", "model.safetensors"):
        shutil.copy(os.path.join(GOLDEN, f), tmp)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(CHAT, f), tmp)
    port = free_port()
    env = dict(os.environ, ANVIL_CACHE=os.path.join(tmp, "cache"))
    proc = subprocess.Popen([ARGS.anvil, "serve", "--model", tmp, "--backend", "cpu", "--port", str(port),
                             "--api-key", API_KEY, "--served-model-name", MODEL],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("anvil serve exited:\n" + proc.stdout.read().decode(errors="replace"))
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                if r.status == 200:
                    break
        except Exception:
            time.sleep(0.1)
    else:
        proc.kill()
        raise RuntimeError("anvil serve did not become healthy in 60 s")
    SERVER.update(proc=proc, port=port, tmp=tmp)


def stop_server():
    proc = SERVER.get("proc")
    if proc is not None:
        proc.send_signal(2)  # SIGINT: graceful stop
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        shutil.rmtree(SERVER["tmp"], ignore_errors=True)
        if proc.returncode != 0:
            raise RuntimeError(f"anvil serve exited with {proc.returncode}")


def load(path):
    with open(path) as f:
        return json.load(f)


class OpenAIClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.client = openai.OpenAI(base_url=f"http://127.0.0.1:{SERVER['port']}/v1", api_key=API_KEY, max_retries=0)
        cls.golden = load(os.path.join(GOLDEN, "golden.json"))
        cls.expected = load(os.path.join(CHAT, "expected.json"))

    def test_models(self):
        models = self.client.models.list()
        self.assertEqual([m.id for m in models.data], [MODEL])

    def test_completion_token_ids_match_golden(self):
        for prompt, greedy in zip(self.golden["prompts"], self.golden["greedy"]):
            r = self.client.completions.create(model=MODEL, prompt=prompt, max_tokens=32, temperature=0,
                                               extra_body={"ignore_eos": True, "return_token_ids": True})
            choice = r.choices[0]
            self.assertEqual(choice.model_extra["token_ids"], greedy)
            self.assertEqual(choice.finish_reason, "length")
            self.assertEqual(r.usage.prompt_tokens, len(prompt))
            self.assertEqual(r.usage.completion_tokens, 32)

    def test_completion_stream(self):
        prompt, greedy = self.golden["prompts"][1], self.golden["greedy"][1]
        stream = self.client.completions.create(model=MODEL, prompt=prompt, max_tokens=10, temperature=0, stream=True,
                                                stream_options={"include_usage": True},
                                                extra_body={"ignore_eos": True, "return_token_ids": True})
        ids, reasons, usage = [], [], None
        for chunk in stream:
            if chunk.usage is not None:
                usage = chunk.usage
            for c in chunk.choices:
                ids += c.model_extra["token_ids"]
                if c.finish_reason:
                    reasons.append(c.finish_reason)
        self.assertEqual(ids, greedy[:10])
        self.assertEqual(reasons, ["length"])
        self.assertEqual(usage.completion_tokens, 10)

    def test_chat(self):
        e = self.expected
        r = self.client.chat.completions.create(model=MODEL, messages=e["messages"], max_tokens=e["max_tokens"],
                                                temperature=0, extra_body={"ignore_eos": True})
        self.assertEqual(r.choices[0].message.role, "assistant")
        self.assertEqual(r.choices[0].message.content, e["greedy_text"])
        self.assertEqual(r.usage.prompt_tokens, len(e["prompt_ids"]))

    def test_chat_stream_and_stop(self):
        e = self.expected
        stream = self.client.chat.completions.create(model=MODEL, messages=e["messages"], max_tokens=e["max_tokens"],
                                                     temperature=0, stream=True, extra_body={"ignore_eos": True})
        text, roles, reasons = "", [], []
        for chunk in stream:
            d = chunk.choices[0].delta
            if d.role:
                roles.append(d.role)
            text += d.content or ""
            if chunk.choices[0].finish_reason:
                reasons.append(chunk.choices[0].finish_reason)
        self.assertEqual(roles, ["assistant"])
        self.assertEqual(text, e["greedy_text"])
        self.assertEqual(reasons, ["length"])
        r = self.client.chat.completions.create(model=MODEL, messages=e["messages"], max_tokens=e["max_tokens"],
                                                temperature=0, stop=[e["stop"]], extra_body={"ignore_eos": True})
        self.assertEqual(r.choices[0].message.content, e["stop_text"])
        self.assertEqual(r.choices[0].finish_reason, "stop")

    def test_n_and_logprobs(self):
        r = self.client.completions.create(model=MODEL, prompt=self.golden["prompts"][0], max_tokens=4, n=3,
                                           temperature=0.8, seed=5, logprobs=2)
        self.assertEqual(sorted(c.index for c in r.choices), [0, 1, 2])
        for c in r.choices:
            self.assertEqual(len(c.logprobs.tokens), 4)
            self.assertTrue(all(len(t) == 2 for t in c.logprobs.top_logprobs))
        r = self.client.chat.completions.create(model=MODEL, messages=self.expected["messages"], max_tokens=3,
                                                logprobs=True, top_logprobs=2)
        self.assertEqual(len(r.choices[0].logprobs.content), 3)

    def test_errors(self):
        with self.assertRaises(openai.BadRequestError) as cm:
            self.client.completions.create(model=MODEL, prompt=[1, 2], max_tokens=4, temperature=5)
        self.assertEqual(cm.exception.body["param"], "temperature")
        with self.assertRaises(openai.NotFoundError):
            self.client.completions.create(model="gpt-4o", prompt=[1], max_tokens=1)
        with self.assertRaises(openai.BadRequestError) as cm:
            self.client.completions.create(model=MODEL, prompt=[5] * 200, max_tokens=1)
        self.assertEqual(cm.exception.code, "context_length_exceeded")
        bad = openai.OpenAI(base_url=self.client.base_url, api_key="wrong", max_retries=0)
        with self.assertRaises(openai.AuthenticationError):
            bad.models.list()


def main():
    global ARGS
    p = argparse.ArgumentParser()
    p.add_argument("--anvil", default=os.path.join(ROOT, "build", "bin", "anvil"), help="path of the anvil binary")
    ARGS, rest = p.parse_known_args()
    start_server()
    try:
        result = unittest.main(argv=[sys.argv[0]] + rest, exit=False, verbosity=2).result
    finally:
        stop_server()
    sys.exit(0 if result.wasSuccessful() else 1)


if __name__ == "__main__":
    main()
